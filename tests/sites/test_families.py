"""Every KerasHub text/LM family found by the generic insertion rule.

One tiny model per family (tests/fixtures/families.py), all three backends. Each
test builds its model once and checks several things on it, so the suite
pays one build (and, for LMs, one generate() compile) per family.
"""

import re
import warnings

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from keras_adalink import sites
from keras_adalink.distribution import layout_source
from keras_adalink.sites import default_insertion
from keras_adalink.sites import find_insertion_sites
from keras_adalink.sites.layouts import PARTIAL
from tests.fixtures.checks import check_round_trips
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import randomize_router_module
from tests.fixtures.checks import to_numpy
from tests.fixtures.families import FAMILIES
from tests.fixtures.families import GENERATE_DIFFERS
from tests.fixtures.families import GENERATE_PER_MODALITY
from tests.fixtures.families import GENERATE_UNTESTED
from tests.fixtures.families import NEW_FAMILIES
from tests.fixtures.families import NOT_FOLDABLE
from tests.fixtures.families import PROMPT
from tests.fixtures.families import VISION_TASKS
from tests.fixtures.families import VOCAB
from tests.fixtures.families import M
from tests.fixtures.families import build
from tests.fixtures.families import family_inputs as _inputs
from tests.fixtures.families import fit_setup as _fit_setup

REFUSED = {n: e.why for n, e in sites.FAMILIES.items() if e.refused}


def _flat(outputs):
    return [np.asarray(o) for o in keras.tree.flatten(to_numpy(outputs))]


def _backbone(model):
    return (
        model
        if isinstance(model, keras_hub.models.Backbone)
        else (model.backbone)
    )


@pytest.fixture(params=sorted(NEW_FAMILIES))
def family(request):
    return NEW_FAMILIES[request.param]


def test_adapts_at_both_points_identity_then_acts(family, tmp_path):
    model = family.build()
    backbone = _backbone(model)
    x = _inputs(backbone)
    # The adapted model's backbone is frozen: inference mode (SegFormer's
    # BatchNormalization would otherwise use batch statistics).
    before = _flat(backbone(x, training=False))
    # The sites found: a table holding the vocabulary, the first block.
    if family.kind == "two_tower":  # One site inside each tower.
        inner = {}
        for insertion in ("token_embedding", "block_input"):
            sites = find_insertion_sites(backbone, insertion)
            assert [s.modality for s in sites] == ["image", "text"]
            assert [s.layer for s in sites] == [
                backbone.vision_encoder,
                backbone.text_encoder,
            ]
            inner[insertion] = [s.inner.layer for s in sites]
        # The vision tower's first block either way; the text tower's
        # token table, or its first block.
        vision_block = backbone.vision_encoder.encoder_layers[0]
        assert inner["block_input"] == [
            vision_block,
            backbone.text_encoder.encoder_layers[0],
        ]
        assert inner["token_embedding"][0] is vision_block
        assert any(
            v.shape[0] == VOCAB for v in inner["token_embedding"][1].weights
        )
    elif family.kind != "vision":
        (site,) = [
            s
            for s in find_insertion_sites(backbone, "token_embedding")
            if not s.optional and s.modality not in ("audio", "video")
        ]
        assert any(v.shape[0] == VOCAB for v in site.layer.weights)
    if family.kind != "two_tower":
        site = find_insertion_sites(backbone, "block_input")[0]
        # A head over an encoder's sub-model: the site inside it.
        block = site.inner.layer if site.tower else site.layer
        if family.kind in ("vision", "video"):  # A packed stack or stage.
            assert type(block).__name__.endswith(("Encoder", "Stage"))
        else:
            assert block.name.endswith("_0"), block.name
    for insertion in ("token_embedding", "block_input"):
        if family.kind == "vision" and insertion == "token_embedding":
            with pytest.raises(ValueError, match="no single layer"):
                keras_adalink.adapt(backbone, insertion=insertion)
            assert keras_adalink.adapt(backbone).insertion == "block_input"
            continue
        adapted = keras_adalink.adapt(backbone, rank=2, insertion=insertion)
        assert adapted.insertion == insertion
        for want, have in zip(before, _flat(adapted(x))):
            np.testing.assert_allclose(have, want, atol=1e-5)
        assert [v.path for v in adapted.trainable_weights] == [
            "adalink/adalink_down",
            "adalink/adalink_up",
        ]
        assert not backbone.trainable_weights
        randomize_adapter(adapted)
        after = _flat(adapted(x))
        # Some outputs are the adapter's to move (D-FINE's anchors are not).
        assert not all(
            np.allclose(have, want, atol=1e-4)
            for want, have in zip(before, after)
        )
    if model is not backbone:  # The task: adapter trainable, backbone not.
        task = keras_adalink.adapt(model, rank=2)
        frozen = {id(v) for v in backbone.weights}
        assert not any(id(v) in frozen for v in task.trainable_weights)
        names = [v.path for v in task.trainable_weights if "adalink" in v.path]
        assert names == ["adalink/adalink_down", "adalink/adalink_up"]
    # Adapter file and `.keras` round trips (the last, block_input, model).
    fresh = keras_adalink.adapt(backbone, rank=2, insertion="block_input")
    check_round_trips(adapted, fresh, x, tmp_path)


MOE = sorted(
    n
    for n in NEW_FAMILIES
    if "Moe" in n or n in ("MixtralBackbone", "GptOssBackbone")
)


@pytest.mark.parametrize("name", MOE)
def test_only_the_adapter_and_head_train(name):
    """One fit step on the mixture-of-experts families: routers and experts
    are bit-identical afterwards (every other family: the trainable-weight
    check of the test above, which is what any optimizer reads)."""
    model = NEW_FAMILIES[name].build()
    adapted = keras_adalink.adapt(model, rank=2)
    randomize_adapter(adapted)  # So W_down gets a gradient too.
    trained, x, y = _fit_setup(adapted)
    frozen = _backbone(adapted).backbone.weights
    assert not any(v.trainable for v in frozen)
    before = [np.array(v.numpy()) for v in frozen]
    adapter = [np.array(v.numpy()) for v in _backbone(adapted).adapter.weights]
    trained.fit(x, y, epochs=1, batch_size=2, verbose=0)
    for value, v in zip(before, frozen):
        np.testing.assert_array_equal(value, v.numpy(), v.path)
    for value, v in zip(adapter, _backbone(adapted).adapter.weights):
        assert not np.array_equal(value, v.numpy()), v.path


def _prompt(lm, batch):
    x = _inputs(lm, batch=batch)
    prefix = "decoder_" if isinstance(lm, keras_hub.models.Seq2SeqLM) else ""
    x[f"{prefix}token_ids"][:, PROMPT:] = 0
    x[f"{prefix}padding_mask"][:, PROMPT:] = 0
    return x, f"{prefix}token_ids", f"{prefix}padding_mask"


GENERATING = sorted(
    n
    for n, f in NEW_FAMILIES.items()
    if f.kind in ("decoder", "seq2seq") and n not in GENERATE_UNTESTED
)


@pytest.mark.parametrize("name", GENERATING)
def test_mixed_task_generate_follows_teacher_forcing(name):
    """Greedy generate() (cached decoding, direct layer calls) picks, at every
    step and for every row's own task, the argmax of the training path."""
    if name in GENERATE_DIFFERS:
        pytest.skip(
            GENERATE_DIFFERS[name] + "; see test_generate_equals_folded"
        )
    lm = keras_adalink.adapt(
        NEW_FAMILIES[name].build(), rank=2, num_tasks=2, dropout=0.0
    )
    randomize_adapter(lm, scale=1.0)
    lm.compile(sampler="greedy")
    prompt, ids, mask = _prompt(lm, batch=3)
    task_id = np.array([1, 0, 1], "int32")
    out = lm.generate({**prompt, "task_id": task_id}, stop_token_ids=None)
    tokens = np.asarray(out[ids])
    full = {**prompt, ids: tokens, mask: np.ones_like(tokens)}
    logits = to_numpy(lm({**full, "task_id": task_id}))
    np.testing.assert_array_equal(
        tokens[:, PROMPT:], np.argmax(logits[:, PROMPT - 1 : -1], -1)
    )
    # The tasks differ: the same rows under the other task decode otherwise.
    other = to_numpy(lm({**full, "task_id": 1 - task_id}))
    assert not np.array_equal(
        np.argmax(other[:, PROMPT - 1 : -1], -1), tokens[:, PROMPT:]
    )


@pytest.mark.parametrize("name", sorted(GENERATE_PER_MODALITY))
def test_audio_to_text_generate_follows_teacher_forcing(name):
    """With the default audio and text modules, both nonzero: greedy
    generate() (the encoder and the cached decoder called from the task's
    own code) picks the training path's argmax at every step."""
    task = getattr(keras_hub.models, GENERATE_PER_MODALITY[name])
    lm = task(backbone=NEW_FAMILIES[name].build(), preprocessor=None)
    lm = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    assert lm.backbone.adapter.modalities == ["audio", "text"]
    randomize_adapter(lm, scale=1.0)
    lm.compile(sampler="greedy")
    prompt, ids, mask = _prompt(lm, batch=2)
    tokens = np.asarray(lm.generate(prompt, stop_token_ids=None)[ids])
    logits = to_numpy(lm({**prompt, ids: tokens, mask: np.ones_like(tokens)}))
    np.testing.assert_array_equal(
        tokens[:, PROMPT:], np.argmax(logits[:, PROMPT - 1 : -1], -1)
    )


@pytest.mark.parametrize("name", sorted(GENERATE_DIFFERS))
def test_generate_equals_folded(name):
    """generate() of the adapted model equals generate() of the unadapted
    architecture with the adapter folded into its table, row by row."""
    lm = keras_adalink.adapt(NEW_FAMILIES[name].build(), rank=2, dropout=0.0)
    randomize_adapter(lm, scale=1.0)
    folded = keras_adalink.fold(lm)
    prompt, ids, _ = _prompt(lm, batch=3)
    outputs = []
    for model in (lm, folded):
        model.compile(sampler="greedy")
        outputs.append(
            np.asarray(model.generate(prompt, stop_token_ids=None)[ids])
        )
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_fold_where_foldable(family):
    """Folding into the table equals the adapted model (tied LM heads are
    untied); where the site is not a plain table, fold refuses and says why."""
    model = family.build()
    adapted = keras_adalink.adapt(model, rank=2, dropout=0.0)
    randomize_adapter(adapted, scale=0.3)
    x = _inputs(adapted)
    if family.backbone in NOT_FOLDABLE:
        with pytest.raises(ValueError, match="token lookup|vocabulary table"):
            keras_adalink.fold(adapted)
        return
    folded = keras_adalink.fold(adapted)
    assert type(folded) is type(model)
    assert not any("adalink" in v.path for v in folded.weights)
    for want, have in zip(_flat(adapted(x)), _flat(folded(x))):
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4)


def _mesh(batch, model):
    devices = [f"cpu:{i}" for i in range(batch * model)]
    return keras.distribution.DeviceMesh(
        (batch, model), ["batch", "model"], devices
    )


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="layouts are backend-independent objects: checked once, on jax "
    "(distributed fit itself: tests/test_distribution.py)",
)
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_layout_map_fits_every_mesh(name):
    """Every variable gets a layout the mesh divides; at least 90% of the
    frozen backbone's bytes are split over the model axis; the adapter is
    replicated; an axis a family rule splits and a mesh cannot divide is
    split another way by the shape rule (or replicated), with a warning (or
    refused with strict=True)."""
    adapted = keras_adalink.adapt(build(name), rank=2)
    backbone_class = type(_backbone(adapted).backbone)
    has_rule = layout_source(backbone_class)[0] is not None
    for shape in ((4, 2), (2, 4), (1, 8)):
        mesh = _mesh(*shape)
        sizes = dict(zip(mesh.axis_names, mesh.shape))

        def splits(layout, variable, sizes=sizes):
            axes = () if layout is None else tuple(layout.axes)
            return [
                (dim, sizes[axis])
                for axis, dim in zip(axes, variable.shape)
                if axis is not None
            ]

        indivisible = []
        if has_rule:  # The family's rule, from the class alone.
            rules = keras_adalink.get_layout_map(backbone_class, mesh)
            indivisible = [
                v.path
                for v in adapted.weights
                if any(dim % size for dim, size in splits(rules[v.path], v))
            ]
        else:
            with pytest.raises(ValueError, match="pass the built model"):
                keras_adalink.get_layout_map(backbone_class, mesh)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fitted = keras_adalink.get_layout_map(adapted, mesh)
        warned = [w for w in caught if "split another way" in str(w.message)]
        assert bool(warned) == bool(indivisible), shape
        for path in indivisible:
            assert path in str(warned[0].message)
        for v in adapted.weights:
            layout = fitted[v.path]  # Raises if two keys match.
            if "adalink" in v.path:
                assert tuple(layout.axes) == (), v.path
            assert all(dim % size == 0 for dim, size in splits(layout, v))
        share = keras_adalink.distribution.sharded_share(adapted, fitted)
        # Or the reason it is less, shown on the coverage page.
        assert share >= 0.9 or name in PARTIAL, (shape, share)
        if indivisible:
            with pytest.raises(ValueError, match="does not divide"):
                keras_adalink.get_layout_map(adapted, mesh, strict=True)


def test_every_keras_hub_backbone_is_covered_or_refused():
    """A new KerasHub backbone class fails here, by name, until it is added
    to tests/fixtures/families.py or refused on purpose (with a reason)."""
    classes = {
        name
        for name in dir(keras_hub.models)
        if name.endswith("Backbone") and name != "Backbone"
    }
    unlisted = classes - set(FAMILIES) - set(REFUSED)
    assert not unlisted, f"neither covered nor refused: {sorted(unlisted)}"
    assert not set(FAMILIES) & set(REFUSED)
    for name in sorted(REFUSED):
        cls = getattr(keras_hub.models, name, None)
        assert cls is not None, f"REFUSED names a class KerasHub lacks: {name}"
        # The reason is given before anything is built or read.
        with pytest.raises(ValueError, match=re.escape(REFUSED[name][:30])):
            default_insertion(object.__new__(cls))


@pytest.mark.parametrize(
    "name,task",
    [
        ("ESMBackbone", "ESMProteinClassifier"),
        ("FNetBackbone", "FNetTextClassifier"),
        ("RoformerV2Backbone", "RoformerV2TextClassifier"),
        ("ESM2Backbone", "ESM2MaskedPLM"),
        ("FNetBackbone", "FNetMaskedLM"),
        ("RoformerV2Backbone", "RoformerV2MaskedLM"),
    ],
)
def test_encoder_tasks_adapt(name, task):
    """Classifier and masked-LM tasks of the new encoders: same class, head
    weights carried over, identity at init, then the adapter acts."""
    backbone = NEW_FAMILIES[name].build()
    kwargs = {} if "Masked" in task else {"num_classes": 3}
    model = getattr(keras_hub.models, task)(
        backbone=backbone, preprocessor=None, **kwargs
    )
    x = _inputs(model)
    if "Masked" in task:
        x["mask_positions"] = np.array([[1, 2], [3, 0]], "int32")
    before = _flat(model(x))
    adapted = keras_adalink.adapt(model, rank=2)
    assert type(adapted) is type(model)
    np.testing.assert_allclose(_flat(adapted(x))[0], before[0], atol=1e-5)
    randomize_adapter(adapted)
    assert not np.allclose(_flat(adapted(x))[0], before[0], atol=1e-4)


@pytest.mark.parametrize("name", sorted(VISION_TASKS))
def test_vision_tasks_predict_adapted(name):
    """Segmentation, depth and detection tasks over the adapted backbone:
    same class, predict() equal to the frozen task's at init, outputs moved
    by the adapter."""
    task, kwargs = VISION_TASKS[name]
    model = getattr(keras_hub.models, task)(
        backbone=NEW_FAMILIES[name].build(), **kwargs
    )
    x = _inputs(model)
    before = _flat(model.predict(x, verbose=0))
    adapted = keras_adalink.adapt(model, rank=2)
    assert type(adapted) is type(model)
    # The adapter and the task's head (SegFormer's) train; the backbone not.
    frozen = {id(v) for v in model.backbone.weights}
    assert not any(id(v) in frozen for v in adapted.trainable_weights)
    assert any("adalink" in v.path for v in adapted.trainable_weights)
    for want, have in zip(before, _flat(adapted.predict(x, verbose=0))):
        np.testing.assert_allclose(have, want, atol=1e-5)
    # Moved: seen in the raw outputs (D-FINE's predict() decodes boxes over
    # a confidence threshold that a random tiny model may not reach).
    raw = _flat(model(x, training=False))
    randomize_adapter(adapted)
    after = _flat(adapted(x, training=False))
    assert not all(
        np.allclose(have, want, atol=1e-4) for want, have in zip(raw, after)
    )


@pytest.mark.parametrize("name", ["SegFormerBackbone", "DFineBackbone"])
def test_task_rows_reach_encoder_sites(name):
    """A module per task inside SegFormer's encoder sub-model and before
    D-FINE's hybrid encoder: changing row 0's task moves row 0 only."""
    backbone = NEW_FAMILIES[name].build()
    multi = keras_adalink.adapt(backbone, rank=2, num_tasks=2)
    randomize_adapter(multi)
    # One image input, by its name (SegFormer's is Keras' default name).
    x = {backbone.input.name: _inputs(backbone)}
    rows = [
        _flat(multi({**x, "task_id": np.array(ids, "int32")}))
        for ids in ([0, 1], [1, 1])
    ]
    for row, want in ((0, True), (1, False)):
        moved = any(
            not np.allclose(a[row], b[row], atol=1e-5)
            for a, b in zip(*rows)
            if a.ndim and a.shape[0] == 2
        )
        assert moved == want, row


@pytest.mark.parametrize(
    "name,insertion",
    [
        ("BartBackbone", "block_input"),  # Its one table serves both stacks.
        ("T5GemmaBackbone", "token_embedding"),
        ("T5GemmaBackbone", "block_input"),
        ("T5Gemma2Backbone", "token_embedding"),
        ("T5Gemma2Backbone", "block_input"),
    ],
)
def test_seq2seq_decoder_adapted_on_request(name, insertion):
    """`modalities=["encoder", "decoder"]` adds the decoder's site: identity
    at init; the decoder module alone moves the decoder output only."""
    backbone = NEW_FAMILIES[name].build().backbone
    x = _inputs(backbone)
    before = to_numpy(backbone(x))
    adapted = keras_adalink.adapt(
        backbone, insertion=insertion, modalities=["encoder", "decoder"]
    )
    for key, value in to_numpy(adapted(x)).items():
        np.testing.assert_allclose(value, before[key], atol=1e-5)
    randomize_router_module(adapted.adapter, 1)  # The decoder's.
    after = to_numpy(adapted(x))
    np.testing.assert_allclose(
        after["encoder_sequence_output"],
        before["encoder_sequence_output"],
        atol=1e-5,
    )
    assert not np.allclose(
        after["decoder_sequence_output"],
        before["decoder_sequence_output"],
        atol=1e-4,
    )


def test_text_path_only_while_towers_are_unmapped():
    """A family found by the rule but built with a vision or audio encoder
    (a later KerasHub's, here a stand-in) is refused, not adapted text-only
    in silence."""
    backbone = NEW_FAMILIES["Phi3Backbone"].build().backbone
    object.__setattr__(backbone, "vision_encoder", keras.layers.Dense(2))
    with pytest.raises(ValueError, match="text-only: .* vision_encoder"):
        keras_adalink.adapt(backbone)


def _gemma4_with_image_and_audio():
    """A tiny Gemma4 with both encoders, and one row of inputs: 4 image
    tokens at 2-5, 4 audio tokens at 7-10, text around them."""
    vision = M.Gemma4VisionEncoder(
        image_size=16,
        patch_size=4,
        pool_size=2,
        num_layers=1,
        num_heads=2,
        head_dim=4,
        num_key_value_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        output_dim=8,
    )
    audio = M.Gemma4AudioEncoder(
        input_feat_size=16,
        hidden_size=8,
        num_heads=2,
        num_layers=1,
        chunk_size=2,
        context_left=2,
        context_right=0,
        sscp_conv_channels=(4, 4),
        output_proj_dims=8,
        output_dim=8,
    )
    backbone = M.Gemma4Backbone(
        vocabulary_size=VOCAB,
        image_size=16,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=8,
        intermediate_dim=16,
        head_dim=4,
        sliding_window_size=16,
        vision_encoder=vision,
        audio_encoder=audio,
        num_audio_tokens_per_clip=4,
    )
    rng = np.random.default_rng(0)
    length = 16
    ids = np.array([[2, 5, *[9] * 4, 3, *[10] * 4, 7, 8, 0, 0, 0]], "int32")
    image_mask, audio_mask = np.zeros((2, 1, length), "int32")
    image_mask[0, 2:6], audio_mask[0, 7:11] = 1, 1
    grid_y, grid_x = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    x = {
        "token_ids": ids,
        "padding_mask": (np.arange(length) < 13).astype("int32")[None],
        "position_ids": np.arange(length, dtype="int32")[None],
        "pixel_values": rng.uniform(size=(1, 1, 16, 48)).astype("float32"),
        "pixel_position_ids": np.stack([grid_x.ravel(), grid_y.ravel()], -1)[
            None, None
        ].astype("int32"),
        "vision_indices": np.array([[2, 3, 4, 5]], "int32"),
        "vision_mask": image_mask,
        "audio_mel": rng.uniform(size=(1, 1, 16, 16)).astype("float32"),
        "audio_mel_mask": np.ones((1, 1, 16), "int32"),
        "audio_indices": np.array([[7, 8, 9, 10]], "int32"),
        "audio_mask": audio_mask,
    }
    return backbone, {k: x[k] for k in backbone.input}


def test_gemma4_image_audio_and_text_modules():
    """Gemma4 with both encoders: three modules by default; at init the
    model is unchanged; each module alone moves exactly the hidden states
    of its own tokens (image 2-5, audio 7-10, text the rest) at the first
    block, seen here through the causal stack's first position it
    reaches."""
    backbone, x = _gemma4_with_image_and_audio()
    before = to_numpy(backbone(x))
    adapted = keras_adalink.adapt(backbone, rank=2, dropout=0.0)
    router = adapted.adapter
    assert router.modalities == ["image", "audio", "text"]
    np.testing.assert_allclose(to_numpy(adapted(x)), before, atol=1e-5)
    first_moved = {}
    for index, modality in enumerate(router.modalities):
        randomize_router_module(router, index, seed=index)
        after = to_numpy(adapted(x))
        moved = ~np.isclose(after, before, atol=1e-4).all(-1)[0]
        first_moved[modality] = int(np.argmax(moved)) if moved.any() else None
    # Causal attention: a module first changes the first of its tokens.
    assert first_moved == {"image": 2, "audio": 7, "text": 0}
    # A module per task works at the 4-D image and audio sites too.
    multi = keras_adalink.adapt(backbone, rank=2, num_tasks=2)
    np.testing.assert_allclose(
        to_numpy(multi({**x, "task_id": np.array([1])})), before, atol=1e-5
    )


_AUDIO_MOVES = {
    "audio": {"encoder_sequence_output", "decoder_sequence_output"},
    "text": {"decoder_sequence_output"},
}
# Which outputs each modality's module moves, alone.
MODALITY_OUTPUTS = {
    "WhisperBackbone": _AUDIO_MOVES,
    "MoonshineBackbone": _AUDIO_MOVES,
    "VideoPrismBackbone": {
        "video": {"vision_embeddings"},
        "text": {"text_embeddings"},
    },
    # The mask decoder (the task's) reads both.
    "SAMBackbone": {
        "image": {"image_embeddings"},
        "prompt": {"prompt_sparse_embeddings"},
    },
}


@pytest.mark.parametrize("name", sorted(MODALITY_OUTPUTS))
def test_one_module_per_modality(name):
    """The default is one module per modality: each module, alone, moves
    exactly the outputs its tokens reach (audio: the encoder and, through
    cross-attention, the decoder; text: the decoder only)."""
    backbone = NEW_FAMILIES[name].build()
    x = _inputs(backbone)
    before = to_numpy(backbone(x))
    adapted = keras_adalink.adapt(backbone, rank=2, dropout=0.0)
    router = adapted.adapter
    expected = MODALITY_OUTPUTS[name]
    if name == "VideoPrismBackbone":  # Its video rows are frames.
        with pytest.raises(ValueError, match="not examples"):
            keras_adalink.adapt(backbone, num_tasks=2)
    if name == "SAMBackbone":  # ViTDet's tokens 16 wide, the prompt's 8.
        with pytest.raises(ValueError, match="one width"):
            keras_adalink.adapt(backbone, num_tasks=2)
        shared = keras_adalink.adapt(backbone, rank=2, unified=True)
        assert shared.adapter.unified
    assert router.modalities == list(expected) and not router.unified
    for index, modality in enumerate(router.modalities):
        randomize_router_module(router, index, seed=index)
        after = to_numpy(adapted(x))
        moved = {
            key
            for key in before
            if not np.allclose(after[key], before[key], atol=1e-4)
        }
        assert moved == expected[modality], modality


TWO_TOWER = sorted(n for n, f in NEW_FAMILIES.items() if f.kind == "two_tower")


def _contrastive(model, batch):
    """The family's own contrastive loss and targets for matched pairs:
    SigLIP's pairwise sigmoid (`SigLIPLoss`, +1 on the diagonal, -1 off
    it), CLIP's symmetric cross-entropy (pair i is class i both ways)."""
    if "SigLIP" in type(model.backbone).__name__:
        from keras_hub.src.models.siglip.siglip_loss import SigLIPLoss

        return {"text_logits": SigLIPLoss()}, {
            "text_logits": 2 * np.eye(batch, dtype="float32") - 1
        }
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pairs = np.arange(batch)
    return (
        {"vision_logits": loss, "text_logits": loss},
        {"vision_logits": pairs, "text_logits": pairs},
    )


def test_two_towers_of_different_widths(tmp_path):
    """Real CLIP towers differ in width (768 vision, 512 text): the router
    is built at the widest, each tower's module at its own width; identity
    at init, each module moves its own tower only, both round trips."""
    vision = M.CLIPVisionEncoder(
        patch_size=4,
        image_shape=(16, 16, 3),
        hidden_dim=32,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
    )
    text = M.CLIPTextEncoder(
        vocabulary_size=VOCAB,
        embedding_dim=16,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
        max_sequence_length=8,
    )
    backbone = M.CLIPBackbone(vision, text, projection_dim=8)
    rng = np.random.default_rng(0)
    x = {
        "images": rng.uniform(size=(2, 16, 16, 3)).astype("float32"),
        "token_ids": rng.integers(1, VOCAB, size=(2, 8)).astype("int32"),
    }

    def towers(model):
        models = keras_adalink.tower_models(model)
        return {
            "image": to_numpy(models["image"]({"images": x["images"]})),
            "text": to_numpy(models["text"]({"token_ids": x["token_ids"]})),
        }

    own = towers(backbone)
    adapted = keras_adalink.adapt(backbone, rank=2)
    assert adapted.adapter.adalink_down.shape == (2, 32, 2)
    for key, value in towers(adapted).items():
        np.testing.assert_allclose(value, own[key], atol=1e-5)
    for index, key in enumerate(["image", "text"]):
        randomize_router_module(adapted.adapter, index)
        got = towers(adapted)
        other = "text" if key == "image" else "image"
        assert not np.allclose(got[key], own[key], atol=1e-4)
        np.testing.assert_allclose(got[other], own[other], atol=1e-5)
    randomize_adapter(adapted)
    check_round_trips(
        adapted, keras_adalink.adapt(backbone, rank=2), x, tmp_path
    )
    with pytest.raises(ValueError, match="ModalityRouter"):
        keras_adalink.adapt(backbone, rank=2, num_tasks=2)


@pytest.mark.parametrize("name", TWO_TOWER)
def test_two_tower_modules_and_contrastive_fit(name):
    """One module per tower by default: the image module moves the image
    embeddings only, the text module the text ones; zero-shot logits are
    unchanged at init; a fit step with the family's own contrastive loss
    changes the adapter and leaves every backbone weight bit-identical."""
    backbone = NEW_FAMILIES[name].build()
    x = _inputs(backbone, batch=4)
    zero_shot = _flat(backbone(x))
    adapted = keras_adalink.adapt(backbone, rank=2)
    for want, have in zip(zero_shot, _flat(adapted(x))):
        np.testing.assert_allclose(have, want, atol=1e-5)
    router = adapted.adapter
    assert router.modalities == ["image", "text"] and not router.unified
    plain = keras_adalink.tower_models(backbone)
    towers = keras_adalink.tower_models(adapted)
    for index, modality in enumerate(router.modalities):
        randomize_router_module(router, index, seed=index)
        for side, tower in towers.items():
            side_x = {k: x[k] for k in tower.input}
            moved = not np.allclose(
                to_numpy(tower(side_x)),
                to_numpy(plain[side](side_x)),
                atol=1e-4,
            )
            assert moved == (side == modality), (modality, side)

    # Per-row tasks reach inside each tower: changing row 0's task moves
    # row 0's image embedding only.
    multi = keras_adalink.adapt(backbone, rank=2, num_tasks=2)
    randomize_adapter(multi)
    image = keras_adalink.tower_models(multi)["image"]
    rows = [
        to_numpy(image({"images": x["images"], "task_id": np.array(ids)}))
        for ids in ([0, 1, 1, 1], [1, 1, 1, 1])
    ]
    moved = ~np.isclose(rows[0], rows[1], atol=1e-5).all(-1)
    assert moved.tolist() == [True, False, False, False]

    randomize_adapter(adapted)  # So both projections get gradients.
    loss, y = _contrastive(adapted, batch=4)
    adapted.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    frozen = [np.array(v.numpy()) for v in backbone.weights]
    start = [np.array(v.numpy()) for v in router.weights]
    adapted.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for value, v in zip(frozen, backbone.weights):
        np.testing.assert_array_equal(v.numpy(), value)
    for value, v in zip(start, router.weights):
        assert not np.allclose(v.numpy(), value)


@pytest.mark.once
def test_d_fine_channels_first_is_refused():
    """D-FINE's tokens are its maps' channel vectors: on channels-first maps
    the adapter would mix positions, so that layout is refused by name."""
    from types import SimpleNamespace

    from keras_adalink.sites import encoder_heads

    backbone = object.__new__(M.DFineBackbone)
    encoder = SimpleNamespace(data_format="channels_first")
    object.__setattr__(backbone, "encoder", encoder)
    with pytest.raises(ValueError, match="data_format='channels_last'"):
        encoder_heads.detection_encoder(backbone)
