"""A frozen backbone with soft tokens before its first block: the
prompt-tuning baseline (`keras_adalink.baselines.prompt_tuning`)."""

import keras
from keras_hub.models import Backbone

from keras_adalink import graph
from keras_adalink.models.ada_link_backbone import deserialize_layers


@keras.saving.register_keras_serializable(package="keras_adalink")
class PromptTuningBackbone(Backbone):
    """A frozen encoder with soft tokens in front of its first block.

    Replays the backbone's graph (as `AdaLinkBackbone` does) with the
    `SoftPrompt` tokens inserted before the first transformer block, the
    padding mask extended to cover them, and the tokens removed again after
    the last block, so outputs have the input's length and heads built for
    the backbone work unchanged. Tested on the BERT family (blocks called as
    `block(x, padding_mask=...)`).

    Args:
        backbone: a KerasHub encoder backbone; it is frozen in place.
        prompt: a `SoftPrompt` layer.

    Example:
    >>> prompted = PromptTuningBackbone(backbone, SoftPrompt(16))
    >>> prompted(inputs)["sequence_output"].shape  # same as backbone(inputs)
    (2, 8, 16)
    """

    def __init__(self, backbone, prompt, **kwargs):
        blocks = list(getattr(backbone, "transformer_layers", []))
        if not blocks:
            raise ValueError(
                f"{type(backbone).__name__} has no `transformer_layers`; "
                "prompt tuning needs the blocks to insert tokens before."
            )
        backbone.trainable = False
        first, last = blocks[0], blocks[-1]
        block_ids = {id(block) for block in blocks}

        def call_function(layer, *args, **kwargs):
            if id(layer) not in block_ids:
                return layer(*args, **kwargs)
            if "padding_mask" not in kwargs:
                raise ValueError(
                    f"{type(backbone).__name__}'s blocks take no "
                    "`padding_mask` keyword; prompt tuning supports the "
                    "BERT family."
                )
            x, *rest = args
            if layer is first:
                x = prompt(x)
            kwargs["padding_mask"] = prompt.extend_mask(kwargs["padding_mask"])
            y = layer(x, *rest, **kwargs)
            return prompt.remove(y) if layer is last else y

        inputs = keras.tree.map_structure(
            lambda t: keras.Input(
                shape=t.shape[1:], dtype=t.dtype, name=t.name
            ),
            backbone.input,
        )
        outputs = graph.replay(backbone, inputs, call_function)
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.prompt = prompt

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.layers.serialize(self.backbone),
            "prompt": keras.layers.serialize(self.prompt),
        }

    @classmethod
    def from_config(cls, config):
        return super().from_config(
            deserialize_layers(config, ("backbone", "prompt"))
        )
