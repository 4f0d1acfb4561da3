"""Sites inside a functional sub-model that the backbone calls as one layer.

Stable Diffusion 3's backbone calls its diffusion transformer (`diffuser`,
an `MMDiT`, itself a functional model) as one node of its graph, and its
tasks call it again, directly, once per denoising step
(`backbone.denoise_step`). The text-context and latent-patch sites are
layers of that inner graph. The adapted graph replays such a sub-model
inline, through the same call function, so its sites are met like any
other; direct callers get an `AdaptedModel`, which replays it the same way
with the sites' direct calls.
"""

import inspect

import keras

from keras_adalink import graph


def site_holders(backbone, sites):
    """`{id: sub-model}`: functional sub-models of `backbone`'s graph that
    hold a site's layer among their own layers."""
    wanted = {id(site.layer) for site in sites}
    return {
        id(layer): layer
        for layer in backbone.layers
        if isinstance(layer, keras.Model)
        and id(layer) not in wanted
        and any(id(inner) in wanted for inner in layer.layers)
    }


def _fed(model, inputs):
    # As a Keras model call does, a `[batch]` tensor feeds a `[batch, 1]`
    # input (SD3's `timestep`).
    return keras.tree.map_structure(
        lambda x, spec: (
            keras.ops.expand_dims(x, -1)
            if len(x.shape) == len(spec.shape) - 1
            else x
        ),
        inputs,
        model.input,
    )


def expanding(call_function, holders):
    """`call_function`, replaying the sub-models in `holders` inline
    (their `training` flag dropped: the frozen model runs in inference)."""

    def call(layer, *args, **kwargs):
        if id(layer) in holders:
            return graph.replay(layer, _fed(layer, args[0]), call)
        return call_function(layer, *args, **kwargs)

    return call


class AdaptedModel:
    """A sub-model with the sites inside it applied, for direct callers.

    `StableDiffusion3Backbone.denoise_step` (what `generate()` runs per
    step) calls `self.diffuser(inputs, training=False)`; on the adapted
    backbone `diffuser` is this object, which replays the sub-model's graph
    with each site's adapter, as the adapted graph does. Everything else is
    read from the wrapped model; its layers at sites (BLIP-2's
    `language_model.embeddings_layer`, which its task's cached decoding
    calls) as their `AdaptedCall`.
    """

    def __init__(self, model, adapted_calls):
        self.layer = model
        by_layer = {id(c.layer): c for c in adapted_calls}
        self.adapted_layers = by_layer

        def call(layer, *args, **kwargs):
            adapted = by_layer.get(id(layer))
            return (adapted or layer)(*args, **kwargs)

        self._call = call

    def __call__(self, inputs, training=None):
        return graph.replay(self.layer, _fed(self.layer, inputs), self._call)

    def __getattr__(self, name):
        if name in ("layer", "adapted_layers"):
            raise AttributeError(name)
        value = getattr(self.layer, name)
        return self.adapted_layers.get(id(value), value)


def bind_task_calls(adapted, backbone, names):
    """Gives `adapted` the backbone methods and properties its tasks call.

    Methods (`denoise_step`) are the backbone class's own functions bound
    to `adapted`, so the layers they read (`self.diffuser`) are the adapted
    model's; properties (`latent_shape`) are read off the backbone once.
    """
    for name in names:
        value = inspect.getattr_static(type(backbone), name)
        if inspect.isfunction(value):
            object.__setattr__(adapted, name, value.__get__(adapted))
        else:
            object.__setattr__(adapted, name, getattr(backbone, name))
