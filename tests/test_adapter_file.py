import json
import os

import keras
import numpy as np
import pytest

import keras_adalink
from keras_adalink.adapter_file import FORMAT
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import backbone_inputs


def _classifier(backbone, rank=2, num_tasks=None, insertion="token_embedding"):
    adapted = keras_adalink.adapt(
        backbone, rank=rank, num_tasks=num_tasks, insertion=insertion
    )
    inputs = adapted.input
    outputs = adapted(inputs)
    if isinstance(outputs, dict):
        outputs = outputs["sequence_output"]
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(outputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(pooled))


def _trained(backbone, **kwargs):
    model = _classifier(backbone, **kwargs)
    randomize_adapter(model)
    head = model.get_layer("head")
    head.kernel.assign(np.full(head.kernel.shape, 0.3, "float32"))
    return model


def _snapshot(model):
    return [np.array(v.numpy()) for v in model.weights]


@pytest.mark.parametrize("num_tasks", [None, 3])
def test_round_trip_into_fresh_model(tmp_path, num_tasks):
    backbone = BACKBONES["bert"]()
    model = _trained(backbone, num_tasks=num_tasks)
    path = tmp_path / "a.safetensors"
    keras_adalink.save_adapter(model, path)
    fresh = _classifier(backbone, num_tasks=num_tasks)
    keras_adalink.load_adapter(fresh, path)
    x = backbone_inputs(model, num_tasks=num_tasks)
    np.testing.assert_array_equal(to_numpy(fresh(x)), to_numpy(model(x)))


def test_file_holds_only_adapter_and_head(tmp_path):
    backbone = BACKBONES["bert"]()
    model = _trained(backbone)
    path = tmp_path / "a.safetensors"
    keras_adalink.save_adapter(model, path)
    record, tensors = keras_adalink.adapter_file.read_adapter(path)
    assert sorted(tensors) == [
        "adalink/adalink_down",
        "adalink/adalink_up",
        "head/bias",
        "head/kernel",
    ]
    assert record["adapter"]["class"] == "AdaLink"
    assert record["adapter"]["config"]["rank"] == 2
    assert record["adapter"]["insertion"] == "token_embedding"
    assert record["backbone"]["class"] == "BertBackbone"
    assert os.path.getsize(path) < 5000


def test_pretrained_size_adapter_file_is_small(tmp_path):
    """Rank 4 at width 384 (MiniLM) stays in kilobytes."""
    backbone = keras_hub_bert(hidden_dim=384)
    model = _classifier(backbone, rank=4)
    keras_adalink.save_adapter(model, tmp_path / "a.safetensors")
    size = os.path.getsize(tmp_path / "a.safetensors")
    assert size < 20_000, size


def keras_hub_bert(**overrides):
    import keras_hub

    config = dict(
        vocabulary_size=50,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=12,
    )
    config.update(overrides)
    return keras_hub.models.BertBackbone(**config)


def _expect_refusal(model, path, match):
    before = _snapshot(model)
    with pytest.raises(ValueError, match=match):
        keras_adalink.load_adapter(model, path)
    for value, variable in zip(before, model.weights):
        np.testing.assert_array_equal(value, variable.numpy(), variable.path)


@pytest.fixture
def saved(tmp_path):
    backbone = BACKBONES["bert"]()
    model = _trained(backbone)
    path = tmp_path / "a.safetensors"
    keras_adalink.save_adapter(model, path)
    return backbone, path


def test_refuses_other_rank(saved):
    backbone, path = saved
    _expect_refusal(
        _classifier(backbone, rank=4),
        path,
        "adapter.config.rank: file has 2, model has 4",
    )


def test_refuses_other_insertion(saved):
    backbone, path = saved
    _expect_refusal(
        _classifier(backbone, insertion="block_input"),
        path,
        "adapter.insertion: file has 'token_embedding'",
    )


def test_refuses_other_router(saved):
    backbone, path = saved
    _expect_refusal(_classifier(backbone, num_tasks=2), path, "adapter.class")


def test_refuses_other_checkpoint_same_architecture(saved):
    _, path = saved
    keras.utils.set_random_seed(123)
    _expect_refusal(
        _classifier(BACKBONES["bert"]()), path, "another checkpoint"
    )


def test_refuses_other_architecture(saved):
    _, path = saved
    _expect_refusal(
        _classifier(keras_hub_bert(num_layers=1)),
        path,
        "backbone.config.num_layers: file has 2, model has 1",
    )


def test_refuses_other_family(saved):
    _, path = saved
    _expect_refusal(
        _classifier(BACKBONES["roberta"]()),
        path,
        "backbone.class: file has 'BertBackbone'",
    )


def test_refuses_other_head(saved):
    backbone, path = saved
    adapted = keras_adalink.adapt(backbone, rank=2)
    inputs = adapted.input
    pooled = keras.layers.GlobalAveragePooling1D()(
        adapted(inputs)["sequence_output"]
    )
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(pooled))
    _expect_refusal(model, path, "variables.head/kernel")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_record"])
def test_refuses_damaged_file(saved, tmp_path, damage):
    backbone, path = saved
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    if damage == "truncate":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"\x80\x04\x95pickle payload" + data[:40])
    else:
        from safetensors.numpy import save_file

        save_file({"x": np.zeros(2, "float32")}, str(bad))
    _expect_refusal(_classifier(backbone), bad, "not a readable")


def test_missing_file(saved, tmp_path):
    backbone, _ = saved
    with pytest.raises(FileNotFoundError, match="No adapter file"):
        keras_adalink.load_adapter(_classifier(backbone), tmp_path / "no")


def test_pickle_payload_never_executed(saved, tmp_path):
    import pickle

    backbone, _ = saved
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(Payload()))
    _expect_refusal(_classifier(backbone), bad, "not a readable")
    assert not marker.exists()


def test_save_is_atomic_and_overwrites(saved, tmp_path):
    backbone, path = saved
    model = _trained(backbone)
    keras_adalink.save_adapter(model, path)
    assert [p.name for p in path.parent.iterdir() if "partial" in p.name] == []
    record = json.loads(
        __import__("safetensors").safe_open(str(path), "np").metadata()[FORMAT]
    )
    assert record["format_version"] == 1


def test_model_without_adapter_refused(tmp_path):
    with pytest.raises(ValueError, match="no keras_adalink adapter"):
        keras_adalink.save_adapter(BACKBONES["bert"](), tmp_path / "a")


def test_dropout_is_not_compared(saved):
    backbone, path = saved
    adapted = keras_adalink.adapt(backbone, rank=2, dropout=0.0)
    outputs = adapted(adapted.input)["sequence_output"]
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(outputs)
    model = keras.Model(
        adapted.input, keras.layers.Dense(2, name="head")(pooled)
    )
    keras_adalink.load_adapter(model, path)
    assert float(np.abs(model.get_layer("head").kernel.numpy()).max()) > 0


def test_file_with_the_old_layout_key_loads(tmp_path):
    """Files written by 0.1.0 name `modality_lengths` `layout`; they load
    into a model built with `modality_lengths`, and other lengths are
    still refused."""
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file

    backbone = BACKBONES["bert"]()
    options = dict(rank=2, modalities=["a", "b"], modality_lengths=[3, None])
    model = keras_adalink.adapt(backbone, **options)
    randomize_adapter(model)
    path = tmp_path / "new.safetensors"
    keras_adalink.save_adapter(model, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        record = json.loads(f.metadata()[FORMAT])
    config = record["adapter"]["config"]
    config["layout"] = config.pop("modality_lengths")
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), old, metadata={FORMAT: json.dumps(record)})
    fresh = keras_adalink.adapt(backbone, **options)
    keras_adalink.load_adapter(fresh, old)
    x = backbone_inputs(model)
    np.testing.assert_array_equal(
        to_numpy(fresh(x)["sequence_output"]),
        to_numpy(model(x)["sequence_output"]),
    )
    other = keras_adalink.adapt(
        backbone, rank=2, modalities=["a", "b"], modality_lengths=[4, None]
    )
    with pytest.raises(ValueError, match="modality_lengths"):
        keras_adalink.load_adapter(other, old)
