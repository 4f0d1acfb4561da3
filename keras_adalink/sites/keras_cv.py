"""KerasCV's CLIP: one site inside each of its subclassed towers.

`keras_cv.models.CLIP` is a functional model over two subclassed layers,
`image_encoder` (`CLIPImageEncoder`) and `text_encoder` (`CLIPTextEncoder`),
whose calls are Python, not graphs, so the graph rule cannot see inside
them. Each site here replaces the graph's call of one tower with a replay
of that tower's `call` with the adapter in it, through the tower's own
sublayers (its weights stay the frozen ones; nothing is changed on the
model). The replays mirror keras-cv 0.9.0, which the `cv` extra pins
(KerasCV is no longer developed: its models moved to KerasHub); tests check
that each replay equals its tower at init.

Sites, as for KerasHub's `CLIPBackbone`: image patches (+ class token and
positions, after the pre-norm) before the first vision block; text tokens
after the token lookup (`token_embedding`) or, with positions, before the
first text block (`block_input`).
"""

import keras
from keras import ops

from keras_adalink.sites.site import Site


def _replay(tower, inputs, body):
    """`body` as a sub-model of its own, called on `inputs`: both towers
    hold a layer named `clip_encoder`, which one graph cannot."""
    fresh = [
        keras.Input(shape=t.shape[1:], dtype=t.dtype, name=f"{tower.name}_{i}")
        for i, t in enumerate(inputs)
    ]
    model = keras.Model(fresh, body(*fresh), name=f"{tower.name}_adapted")
    return model(list(inputs))


def _image_site(tower):
    def apply(call, args, kwargs, adapter):
        def body(images):
            x = tower.pre_norm(tower.embeddings(images))
            x = tower.encoder(adapter(x))
            return tower.image_projector(tower.post_norm(x[:, 0, :]))

        return _replay(tower, [args[0]], body)

    return Site(tower, apply, "image", where="inside")


def _text_site(tower, insertion):
    def body(token_ids, mask, adapter):
        tokens = tower.token_embedding(token_ids)
        if insertion == "token_embedding":
            tokens = adapter(tokens)
        length = tower.context_length
        # Position ids derived from the inputs: a lookup of a constant would
        # be evaluated once, when the graph is built, and keep the table's
        # values of that moment (before `load_model` sets them).
        ids = ops.zeros_like(token_ids, "int32") + ops.arange(
            length, dtype="int32"
        )
        x = tokens + tower.positional_embedding(ids)
        if insertion == "block_input":
            x = adapter(x)
        causal = ops.cast(ops.triu(ops.ones((length, length))), "float32")
        padding = ops.tile(
            ops.cast(mask, "float32")[:, None, None, :], (1, 1, length, 1)
        )
        x = tower.encoder(
            x,
            causal_attention_mask=causal,
            attention_mask=(1.0 - padding) * (-1e8),
        )
        x = tower.ln_final(x)
        # The end-of-text token has the largest id: its state is the text's.
        last = ops.cast(ops.argmax(token_ids, axis=-1), "int32")[:, None, None]
        return ops.squeeze(
            tower.text_projector(ops.take_along_axis(x, last, axis=1)), 1
        )

    def apply(call, args, kwargs, adapter):
        mask = kwargs["attention_mask"] if len(args) < 2 else args[1]
        return _replay(tower, [args[0], mask], lambda t, m: body(t, m, adapter))

    return Site(tower, apply, "text", where="inside")


def clip_sites(insertion):
    """The sites of a KerasCV `CLIP` for `insertion`."""

    def sites(model):
        return [
            _image_site(model.image_encoder),
            _text_site(model.text_encoder, insertion),
        ]

    return sites
