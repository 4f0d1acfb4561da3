"""One walk over nested Keras models, shared by every "find X inside" lookup."""

import keras


def nested_layers(model):
    """Yields `model` and every layer inside it, breadth first, once each.

    A `.backbone` attribute (KerasHub tasks, `AdaLinkBackbone`) counts as
    nested, and is visited before the owner's other layers.
    """
    pending, seen = [model], set()
    while pending:
        layer = pending.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        inner = getattr(layer, "backbone", None)
        if isinstance(inner, keras.layers.Layer):
            pending.append(inner)
        if isinstance(layer, keras.Model):
            pending.extend(layer.layers)


def first_nested(model, predicate):
    """The first layer of `nested_layers(model)` that `predicate` accepts."""
    return next((x for x in nested_layers(model) if predicate(x)), None)
