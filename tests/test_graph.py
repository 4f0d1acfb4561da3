"""Every private Keras/KerasHub name keras_adalink relies on still exists.

A Keras or KerasHub upgrade that removes one fails here, naming it, before
anything that uses it fails in a less readable way.
"""

import importlib
import inspect

import keras
import pytest

from keras_adalink import graph


def _owner(dotted):
    """The class or module `dotted` names."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _assigned(cls, name):
    """Whether Keras/KerasHub code of `cls`'s hierarchy assigns `.name`."""
    for klass in cls.__mro__:
        if klass.__module__.startswith(("keras.", "keras_hub.")):
            if f".{name} = " in inspect.getsource(klass):
                return True
    return False


@pytest.mark.parametrize("owner,name,use", graph.PRIVATE_API)
def test_private_api_exists(owner, name, use):
    try:
        cls = _owner(owner)
    except (ImportError, AttributeError) as error:
        pytest.fail(
            f"{owner} is gone (keras_adalink uses it to {use}): {error}"
        )
    assert hasattr(cls, name) or _assigned(cls, name), (
        f"{owner}.{name} is gone in Keras {keras.__version__}; keras_adalink "
        f"uses it to {use} (keras_adalink/graph.py)"
    )


def test_replay_and_calls_on_a_functional_model():
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(inputs))
    ((tensors, args, outputs),) = graph.calls(dense)
    assert tensors[0] is inputs and args[0] is inputs
    assert graph.producer(model.outputs[0]) == (dense, 0)
    seen = []

    def call_function(layer, *a, **k):
        seen.append(layer)
        return layer(*a, **k) * 2.0

    x = keras.ops.ones((1, 3))
    out = graph.replay(model, x, call_function)
    assert seen == [dense]
    assert keras.ops.convert_to_numpy(out).tolist() == (
        keras.ops.convert_to_numpy(model(x) * 2.0).tolist()
    )


def test_unlocked_adds_a_weight_to_a_built_layer():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    with pytest.raises(ValueError):
        layer.extra = layer.add_weight(shape=(1,), name="extra")
    with graph.unlocked(layer):
        layer.extra = layer.add_weight(shape=(1,), name="extra")
    assert len(layer.weights) == 3
