import keras
from keras_hub.models import Backbone
from keras_hub.models import ImageToImage
from keras_hub.models import Inpaint
from keras_hub.models import Task
from keras_hub.models import TextToImage

from keras_adalink.layers import AdaLink
from keras_adalink.layers import ModalityRouter
from keras_adalink.layers import TaskRouter
from keras_adalink.layers.modality_router import renamed_layout
from keras_adalink.models import AdaLinkBackbone
from keras_adalink.models.tasks import rebuild_task
from keras_adalink.quantization import quantize_frozen
from keras_adalink.quantization import rematerialize_blocks
from keras_adalink.sites import default_modalities
from keras_adalink.validation import checked_entry_points

_DIFFUSION_TASKS = (TextToImage, ImageToImage, Inpaint)


def make_adapter(
    rank,
    num_tasks=None,
    modalities=None,
    modality_lengths=None,
    unified=False,
    dtype=None,
    **layer_kwargs,
):
    """The adapter layer `adapt()` inserts, named `"adalink"`."""
    if num_tasks is not None and modalities is not None:
        raise ValueError(
            "Pass `num_tasks` or `modalities`, not both. Received: "
            f"num_tasks={num_tasks}, modalities={modalities}"
        )
    common = dict(rank=rank, dtype=dtype, name="adalink", **layer_kwargs)
    if num_tasks is not None:
        return TaskRouter(num_tasks=num_tasks, **common)
    if modalities is not None:
        return ModalityRouter(
            modalities,
            modality_lengths=modality_lengths,
            unified=unified,
            **common,
        )
    if modality_lengths is not None or unified:
        raise ValueError(
            "`modality_lengths` and `unified` need `modalities`. Received: "
            f"modality_lengths={modality_lengths}, unified={unified}"
        )
    return AdaLink(**common)


def adapt(
    model: Backbone | Task,
    rank: int = 4,
    insertion: str | None = None,
    num_tasks: int | None = None,
    modalities: list[str] | None = None,
    modality_lengths: list[int | None] | None = None,
    unified: bool = False,
    activation=None,
    dropout: float = 0.1,
    scale: float = 1.0,
    train_head: bool = True,
    quantize=None,
    remat: bool = False,
    layout: list[int | None] | None = None,
) -> Backbone | Task:
    """Adds AdaLink to a KerasHub backbone or task; freezes the backbone.

    Returns a model used exactly like `model`: a backbone becomes an
    `AdaLinkBackbone` with the same inputs and outputs; a task becomes a task
    of the same class around that backbone, with the same preprocessor and a
    copy of the task's head weights. The backbone's weights are shared, not
    copied, and frozen; at init the adapted model's outputs equal `model`'s.

    Args:
        model: a KerasHub `Backbone` or `Task` (docs/coverage.md lists
            every family), or a KerasCV backbone (`ViTDetBackbone`,
            `VideoSwinBackbone`, `MiTBackbone`; `pip install
            "keras-adalink[cv]"`).
        rank: int. AdaLink bottleneck width.
        insertion: `"token_embedding"` (after the token lookup; foldable into
            the vocabulary table) or `"block_input"` (input of the first
            transformer block). Defaults to `None`: `"token_embedding"`
            where the family has one (text models), else `"block_input"`.
        num_tasks: int. One module per task (`TaskRouter`) and an int
            `task_id` model input of shape `[batch]`.
        modalities: list of str. One module per modality (`ModalityRouter`)
            and an int `modality_ids` input `[batch, sequence]` unless
            `modality_lengths` is given. Defaults to `None`: for a model
            with sites of several modalities (PaliGemma, Gemma3 with
            images, CLIP, SigLIP, MetaCLIP 2: `["image", "text"]`; Whisper,
            Moonshine: `["audio", "text"]`; VideoPrism with text:
            `["video", "text"]`; PARSeq: `["image", "text"]`), one module
            per site modality, as in the paper;
            otherwise a single `AdaLink`.
        modality_lengths: list of int (the last may be `None`, "the
            rest"). Where each modality's tokens sit, when it is the same
            for every example: `[256, None]` means the first 256 positions
            are `modalities[0]`, the rest `modalities[1]`; then no
            `modality_ids` input is added. Defaults to `None`.
        unified: one module shared by all modalities (the paper's ablation;
            what `adapt` did on PaliGemma and Gemma3 with images by default
            before the per-modality default).
        activation: between the projections. Defaults to identity.
        dropout: dropout on the adapter branch. Defaults to `0.1`.
        scale: multiplier on the adapter branch. Defaults to `1.0`.
        train_head: for tasks, whether the task head trains with the adapter.
        quantize: quantizes the frozen backbone's weights in place first,
            with Keras' `quantize()`: `"int8"`, `"int4"`, `"float8"`, or a
            `keras.quantizers.QuantizationConfig` (`GPTQConfig` and
            `AWQConfig` carry their calibration data). The adapter (and
            head) stay in float and train; the quantized weights do not
            change. A backbone quantized already adapts as it is (leave this
            `None`). Defaults to `None`. docs/big_models.md.
        remat: bool. The frozen blocks recompute their activations in the
            backward pass (`keras.remat`) instead of keeping them: memory
            of one block's activations instead of all of them, for about
            one more forward pass of time. Set on the backbone's blocks in
            place; they then run without their own dropout (recomputation
            must repeat the same forward pass). Defaults to `False`.
        layout: deprecated name of `modality_lengths` (accepted with a
            `DeprecationWarning` for one release; "layout" means device
            sharding only, as in `get_layout_map`).

    Example:
    >>> adapted = keras_adalink.adapt(classifier, rank=4)
    >>> history = adapted.fit(["great film", "dull"], [1, 0], verbose=0)
    """
    if isinstance(model, AdaLinkBackbone) or isinstance(
        getattr(model, "backbone", None), AdaLinkBackbone
    ):
        raise ValueError(
            "This model is already adapted by keras_adalink. Adapt the "
            "original model, or load another adapter into this one."
        )
    is_backbone = _is_backbone(model)
    if not (is_backbone or isinstance(model, Task)):
        raise ValueError(
            "`adapt` takes a keras_hub Backbone or Task, or a KerasCV "
            f"backbone. Received: {type(model).__name__}"
        )
    modality_lengths = renamed_layout(modality_lengths, layout)
    backbone = model if is_backbone else model.backbone
    dtype = backbone.dtype_policy
    if quantize is not None:
        quantize_frozen(backbone, quantize)
    if remat:
        rematerialize_blocks(backbone)
    if modalities is None and num_tasks is None:
        # A multimodal model gets the paper's one module per modality.
        modalities = default_modalities(backbone, insertion)
    adapter = make_adapter(
        rank,
        num_tasks=num_tasks,
        modalities=modalities,
        modality_lengths=modality_lengths,
        unified=unified,
        activation=activation,
        dropout=dropout,
        scale=scale,
        dtype=dtype,
    )
    adapted = AdaLinkBackbone(backbone, adapter, insertion=insertion)
    if is_backbone:
        return adapted
    return reattach(_rebuild_task(model, adapted, train_head))


def _is_backbone(model):
    """A KerasHub backbone, or a functional KerasCV one (`ViTDetBackbone`,
    `VideoSwinBackbone`, `MiTBackbone`; its `CLIP` too, to be refused with
    the reason)."""
    if isinstance(model, Backbone):
        return True
    return type(model).__module__.startswith("keras_cv.") and isinstance(
        model, keras.Model
    )


def reattach(task: Task) -> Task:
    """Adds to an adapted task what its class cannot carry in a `.keras` file.

    1. Eager id checks: `fit`, `evaluate` and `predict` check `task_id` /
       `modality_ids` arrays before they reach compiled code (see
       `keras_adalink.validation`).
    2. For a `TaskRouter` LM, `generate()` reads `task_id` from its inputs:
       `generate_step`'s cached decoding calls backbone layers directly and
       never sees model inputs, so the task's `generate_step` is wrapped to
       route those calls by the traced `task_id` (one compiled function
       serves every mix of tasks). Diffusion tasks (`TextToImage`,
       `ImageToImage`, `Inpaint`) take `task_id` beside `prompts` the
       same way; their denoising steps call the transformer directly.
    3. For a `TaskRouter` task whose `compute_loss` calls backbone layers
       directly (`PARSeqCausalLM`'s, once per permutation), those calls
       are routed by the batch's `task_id` the same way.

    `adapt()` does this already; call it again after
    `keras.saving.load_model`. Models without routers pass through.

    Example:
    >>> lm = keras_adalink.adapt(gemma_lm, rank=8, num_tasks=3)
    >>> out = lm.generate({"token_ids": ids, "padding_mask": mask,
    ...                    "task_id": np.array([0, 2])}, stop_token_ids=None)
    >>> out["token_ids"].shape == ids.shape
    True
    """
    backbone = getattr(task, "backbone", None)
    if not isinstance(backbone, AdaLinkBackbone):
        return task
    checked_entry_points(task, backbone.adapter)
    if not isinstance(backbone.adapter, TaskRouter):
        return task
    _route_compute_loss(task, backbone)
    if not hasattr(type(task), "generate_step"):
        return task
    if isinstance(task, _DIFFUSION_TASKS):
        return _route_diffusion(task, backbone)
    step = type(task).generate_step.__get__(task)

    def generate_step(inputs, stop_token_ids=None):
        inputs = dict(inputs)
        task_id = inputs.pop("task_id", None)
        if task_id is None:
            raise ValueError(
                "This model has one adapter per task: pass `task_id` "
                "(int, shape [batch]) in the generate() inputs."
            )
        with backbone.routing(task_id):
            return step(inputs, stop_token_ids=stop_token_ids)

    task.generate_step = generate_step
    task.generate_function = None  # Rebuilt on the next generate().
    return task


def _route_compute_loss(task, backbone):
    """Routes the direct layer calls of the task's own `compute_loss` by
    the batch's `task_id` (graph calls read the input already). Arguments
    pass through as given: Keras decides from the class's signature
    whether to pass `training`."""
    loss = type(task).compute_loss.__get__(task)

    def compute_loss(*args, **kwargs):
        x = args[0] if args else kwargs.get("x")
        task_id = x.get("task_id") if isinstance(x, dict) else None
        with backbone.routing(task_id):
            return loss(*args, **kwargs)

    task.compute_loss = compute_loss


def _route_diffusion(task, backbone):
    # KerasHub's `generate()` hands `generate_function` only the prompts'
    # token ids, so `task_id` is popped from the inputs here and given to
    # the compiled function as an argument (traced, not a constant).
    task_ids = []

    def generate(inputs, *args, **kwargs):
        inputs = dict(inputs)
        task_id = inputs.pop("task_id", None)
        if task_id is None:
            raise ValueError(
                "This model has one adapter per task: pass `task_id` "
                "(int, shape [batch]) in the generate() inputs."
            )
        backbone.adapter.check_ids(keras.ops.convert_to_numpy(task_id))
        task_ids.append(keras.ops.convert_to_tensor(task_id, "int32"))
        try:
            return type(task).generate(task, inputs, *args, **kwargs)
        finally:
            task_ids.pop()

    def generate_step(*args, task_id):
        with backbone.routing(task_id):
            return type(task).generate_step(task, *args)

    def make_generate_function():
        compiled = type(task).make_generate_function(task)
        return lambda *args: compiled(*args, task_id=task_ids[-1])

    task.generate = generate
    task.generate_step = generate_step
    task.make_generate_function = make_generate_function
    task.generate_function = None  # Rebuilt on the next generate().
    return task


def _rebuild_task(task, adapted, train_head):
    new_task = rebuild_task(task, adapted)
    if not train_head:
        for layer in new_task.layers:
            if layer is not adapted:
                layer.trainable = False
    return new_task
