"""compose(): separately trained adapters served by one multi-task model."""

import os

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from keras_adalink.heads import mean_pooled_classifier
from keras_adalink.models import find_adalink_backbone
from tests.fixtures.checks import to_numpy
from tests.fixtures.composed import check_equal as _check_equal
from tests.fixtures.composed import task_model as _task_model
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import backbone_inputs


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    return BACKBONES["bert"]()


@pytest.mark.parametrize("seed", range(3))
def test_composed_equals_each_single_model(backbone, seed):
    # A random set of adapters: 1-4 tasks, ranks 1-4, head widths 1-5.
    rng = np.random.default_rng(seed)
    specs = [
        (int(rng.integers(1, 5)), int(rng.integers(1, 6)))
        for _ in range(rng.integers(1, 5))
    ]
    singles = [
        _task_model(backbone, rank, width, seed + k)
        for k, (rank, width) in enumerate(specs)
    ]
    multi = keras_adalink.compose(
        {f"task{k}": m for k, m in enumerate(singles)}
    )
    router = find_adalink_backbone(multi).adapter
    assert router.task_names == [f"task{k}" for k in range(len(specs))]
    assert router.rank == max(r for r, _ in specs)
    x = backbone_inputs(backbone, batch=8, seed=seed)
    task_id = np.random.default_rng(seed).integers(0, len(specs), size=8)
    _check_equal(multi, singles, x, task_id.astype("int32"))


@pytest.fixture(scope="module")
def three(backbone):
    return [
        _task_model(backbone, rank, width, seed)
        for seed, (rank, width) in enumerate([(4, 2), (2, 5), (1, 1)])
    ]


def test_from_files_equals_from_models(backbone, three, tmp_path):
    paths = []
    for name, model in zip(["sentiment", "topic", "score"], three):
        os.makedirs(tmp_path / name)
        paths.append(tmp_path / name / "adapter.safetensors")
        keras_adalink.save_adapter(model, paths[-1])
    base = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=2), 3)
    multi = keras_adalink.compose(paths, base=base)
    router = find_adalink_backbone(multi).adapter
    assert router.task_names == ["sentiment", "topic", "score"]
    ids = keras_adalink.task_ids(multi, ["score", "sentiment"])
    np.testing.assert_array_equal(ids, [2, 0])
    x = backbone_inputs(backbone, batch=6)
    _check_equal(multi, three, x, np.array([2, 0, 1, 1, 0, 2], "int32"))
    with pytest.raises(ValueError, match="needs `base`"):
        keras_adalink.compose(paths)


def test_add_and_remove_tasks_leave_others_untouched(backbone, three):
    multi = keras_adalink.compose({"a": three[0], "b": three[1]})
    x = backbone_inputs(backbone, batch=4)
    ids = np.array([0, 1, 0, 1], "int32")
    before = to_numpy(multi.predict({**x, "task_id": ids}, verbose=0))
    grown = keras_adalink.compose([multi, ("c", three[2])])
    router = find_adalink_backbone(grown).adapter
    assert router.task_names == ["a", "b", "c"]
    after = to_numpy(grown.predict({**x, "task_id": ids}, verbose=0))
    np.testing.assert_allclose(after["outputs"][:, :5], before["outputs"])
    _check_equal(grown, three, x, np.array([2, 1, 0, 2], "int32"))
    shrunk = keras_adalink.compose([grown], drop=["a"])
    assert find_adalink_backbone(shrunk).adapter.task_names == [
        "b",
        "c",
    ]
    _check_equal(shrunk, three[1:], x, np.array([0, 1, 1, 0], "int32"))
    # The composed source is itself unchanged.
    again = to_numpy(multi.predict({**x, "task_id": ids}, verbose=0))
    np.testing.assert_array_equal(again["outputs"], before["outputs"])


def test_names_survive_keras_file_and_adapter_file(backbone, three, tmp_path):
    multi = keras_adalink.compose({"a": three[0], "b": three[1]})
    x = {
        **backbone_inputs(backbone, batch=4),
        "task_id": np.array([1, 0, 1, 0]),
    }
    expected = to_numpy(multi.predict(x, verbose=0))
    multi.save(tmp_path / "multi.keras")
    loaded = keras.saving.load_model(tmp_path / "multi.keras")
    router = find_adalink_backbone(loaded).adapter
    assert router.task_names == ["a", "b"]
    assert loaded.get_layer("head").widths == [2, 5]
    np.testing.assert_allclose(
        to_numpy(loaded.predict(x, verbose=0))["outputs"],
        expected["outputs"],
        atol=1e-6,
    )
    keras_adalink.save_adapter(multi, tmp_path / "multi.safetensors")
    base = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=2), 2)
    reloaded = keras_adalink.compose(
        [tmp_path / "multi.safetensors"], base=base
    )
    np.testing.assert_allclose(
        to_numpy(reloaded.predict(x, verbose=0))["outputs"],
        expected["outputs"],
        atol=1e-6,
    )
    # load_adapter into a skeleton with other names is refused.
    other = keras_adalink.compose({"b": three[0], "a": three[1]})
    with pytest.raises(ValueError, match="task_names"):
        keras_adalink.load_adapter(other, tmp_path / "multi.safetensors")


def _weights(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


@pytest.mark.parametrize(
    "make_other, match",
    [
        ("other_weights", "backbone weights"),
        (
            lambda: _task_model(
                keras_hub.models.BertBackbone(
                    vocabulary_size=50,
                    max_sequence_length=12,
                    num_layers=1,
                    num_heads=2,
                    hidden_dim=16,
                    intermediate_dim=32,
                ),
                2,
                2,
                9,
            ),
            "num_layers",
        ),
        ("block_input", "insertion"),
        ("modalities", "ModalityRouter"),
        ("duplicate", "repeated"),
        ("relu", "activation"),
    ],
)
def test_bad_compositions_refused(backbone, three, make_other, match):
    if make_other == "block_input":
        other = _task_model(backbone, 2, 2, 9, insertion="block_input")
    elif make_other == "modalities":
        other = _task_model(backbone, 2, 2, 9, modalities=["text"])
    elif make_other == "relu":
        other = _task_model(backbone, 2, 2, 9, activation="relu")
    elif make_other == "other_weights":  # Same config, another init.
        keras.utils.set_random_seed(7)
        other = _task_model(BACKBONES["bert"](), 2, 2, 9)
    elif make_other == "duplicate":
        other = three[1]
    else:
        other = make_other()
    before = _weights(three[0]), _weights(other)
    name = "a" if make_other == "duplicate" else "b"
    with pytest.raises(ValueError, match=match):
        keras_adalink.compose([("a", three[0]), (name, other)])
    for old, new in zip(before, (_weights(three[0]), _weights(other))):
        for o, n in zip(old, new):
            np.testing.assert_array_equal(o, n)


def test_jointly_trained_router_and_unnamed_models_refused(backbone, three):
    joint = mean_pooled_classifier(
        keras_adalink.adapt(backbone, rank=2, num_tasks=2), 2
    )
    with pytest.raises(ValueError, match="jointly"):
        keras_adalink.compose([joint])
    with pytest.raises(ValueError, match="needs a task name"):
        keras_adalink.compose([three[0]])
    multi = keras_adalink.compose({"a": three[0]})
    with pytest.raises(ValueError, match="carries its own task names"):
        keras_adalink.compose({"x": multi})
    with pytest.raises(ValueError, match="unknown task"):
        keras_adalink.compose([multi], drop=["zzz"])


def test_backbone_only(backbone):
    singles = []
    for seed in range(2):
        adapted = keras_adalink.adapt(backbone, rank=seed + 1)
        rng = np.random.default_rng(seed)
        for v in adapted.trainable_weights:
            v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
        singles.append(adapted)
    multi = keras_adalink.compose({"a": singles[0], "b": singles[1]})
    assert isinstance(multi, keras_adalink.AdaLinkBackbone)
    x = backbone_inputs(backbone, batch=4)
    ids = np.array([1, 0, 0, 1], "int32")
    out = to_numpy(multi({**x, "task_id": ids}))
    for k, single in enumerate(singles):
        expected = to_numpy(single(x))
        for name in out:
            np.testing.assert_allclose(
                out[name][ids == k], expected[name][ids == k], atol=1e-5
            )


def test_causal_lm_generate_routes_mixed_batch():
    vocab = 40
    lm = keras_hub.models.GemmaCausalLM(
        keras_hub.models.GemmaBackbone(
            vocabulary_size=vocab,
            num_layers=2,
            hidden_dim=16,
            head_dim=8,
            num_query_heads=2,
            num_key_value_heads=1,
            intermediate_dim=32,
        ),
        preprocessor=None,
    )
    singles = []
    for seed in range(3):
        adapted = keras_adalink.adapt(lm, rank=seed + 1)
        rng = np.random.default_rng(seed)
        for v in adapted.backbone.adapter.weights:
            v.assign(rng.normal(0, 1.0, v.shape).astype("float32"))
        singles.append(adapted)
    multi = keras_adalink.compose({f"t{k}": m for k, m in enumerate(singles)})
    assert type(multi) is type(lm)
    rng = np.random.default_rng(0)
    prompt = {
        "token_ids": np.concatenate(
            [rng.integers(1, vocab, (3, 4)), np.zeros((3, 6))], 1
        ).astype("int32"),
        "padding_mask": np.concatenate(
            [np.ones((3, 4)), np.zeros((3, 6))], 1
        ).astype("int32"),
    }
    task_id = np.array([2, 0, 1], "int32")
    mixed = to_numpy(
        multi.generate({**prompt, "task_id": task_id}, stop_token_ids=None)
    )
    for b, k in enumerate(task_id):
        one = {key: v[b : b + 1] for key, v in prompt.items()}
        alone = to_numpy(singles[k].generate(one, stop_token_ids=None))
        np.testing.assert_array_equal(
            mixed["token_ids"][b], alone["token_ids"][0]
        )
    # The adapters differ enough that tasks generate differently.
    outs = [
        to_numpy(
            multi.generate(
                {**prompt, "task_id": np.full(3, k, "int32")},
                stop_token_ids=None,
            )
        )["token_ids"]
        for k in range(3)
    ]
    assert not all(np.array_equal(outs[0], o) for o in outs[1:])


def test_task_heads_layer():
    heads = keras_adalink.TaskHeads([2, 5, 1])
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    out = heads(x, task_id=np.array([0, 1, 2]))
    assert tuple(out["outputs"].shape) == (3, 5)
    np.testing.assert_array_equal(to_numpy(out["num_outputs"]), [2, 5, 1])
    rng = np.random.default_rng(1)
    for v in heads.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    out = to_numpy(heads(x, task_id=np.array([0, 1, 2])))["outputs"]
    kernel, bias = (to_numpy(v) for v in heads.weights)
    assert tuple(kernel.shape) == (8, 4)  # no padding: 2 + 5 + 1 rows
    np.testing.assert_allclose(
        out[0, :2], x[0] @ kernel[0:2].T + bias[0:2], atol=1e-5
    )
    np.testing.assert_allclose(
        out[1], x[1] @ kernel[2:7].T + bias[2:7], atol=1e-5
    )
    np.testing.assert_allclose(out[2, 0], x[2] @ kernel[7] + bias[7], atol=1e-5)
    np.testing.assert_array_equal(out[0, 2:], 0)  # other tasks' rows masked
    np.testing.assert_array_equal(out[2, 1:], 0)
    restored = keras.layers.deserialize(keras.layers.serialize(heads))
    assert restored.widths == [2, 5, 1]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        heads(x, task_id=np.array([0, 3, 1]))
    with pytest.raises(ValueError, match="widths"):
        keras_adalink.TaskHeads([2, 0])


def test_task_names_validated():
    with pytest.raises(ValueError, match="distinct"):
        keras_adalink.TaskRouter(2, rank=1, task_names=["a", "a"])
    with pytest.raises(ValueError, match="2 non-empty strings"):
        keras_adalink.TaskRouter(2, rank=1, task_names=["a"])
    router = keras_adalink.TaskRouter(2, rank=1, task_names=["a", "b"])
    unnamed = keras_adalink.TaskRouter(2, rank=1)
    with pytest.raises(ValueError, match="no task names"):
        unnamed.task_index(["a"])
    np.testing.assert_array_equal(router.task_index(["b", "a"]), [1, 0])
    with pytest.raises(ValueError, match=r"Unknown task name\(s\) \['c'\]"):
        router.task_index(["c"])
