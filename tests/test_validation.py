"""Router ids are checked eagerly before fit/evaluate/predict compile."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import backbone_inputs


def _multi_task_classifier():
    backbone = BACKBONES["bert"]()
    task = keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None
    )
    return keras_adalink.adapt(task, rank=2, num_tasks=3)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_task_entry_points_reject_out_of_range_task_id(method):
    task = _multi_task_classifier()
    x = {
        **backbone_inputs(task.backbone, num_tasks=3),
        "task_id": np.array([0, 3, 1]),
    }
    before = [np.array(v.numpy()) for v in task.weights]
    args = (x,) if method == "predict" else (x, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match=r"`task_id` must be \[0, 3\).*\[3\]"):
        getattr(task, method)(*args, verbose=0)
    for value, v in zip(before, task.weights):
        np.testing.assert_array_equal(value, v.numpy())


def test_float_task_id_rejected_before_fit():
    task = _multi_task_classifier()
    x = {
        **backbone_inputs(task.backbone, num_tasks=3),
        "task_id": np.array([0.0, 1.0, 1.0]),
    }
    with pytest.raises(TypeError, match="`task_id` must hold ints"):
        task.fit(x, np.array([0, 1, 0]), verbose=0)


def test_backbone_predict_checks_modality_ids():
    backbone = BACKBONES["bert"]()
    adapted = keras_adalink.adapt(backbone, rank=2, modalities=["a", "b"])
    x = backbone_inputs(backbone)
    ids = np.zeros_like(x["token_ids"])
    adapted.predict({**x, "modality_ids": ids - 1}, verbose=0)  # -1: pass
    with pytest.raises(ValueError, match=r"`modality_ids` must be < 2.*\[7\]"):
        adapted.predict({**x, "modality_ids": ids + 7}, verbose=0)


def test_valid_ids_pass_and_reattach_restores_checks(tmp_path):
    task = _multi_task_classifier()
    x = {
        **backbone_inputs(task.backbone, num_tasks=3),
        "task_id": np.array([0, 2, 1]),
    }
    task.fit(x, np.array([0, 1, 0]), verbose=0)
    task.save(str(tmp_path / "t.keras"))
    restored = keras_adalink.reattach(
        keras.saving.load_model(str(tmp_path / "t.keras"))
    )
    with pytest.raises(ValueError, match="task_id"):
        restored.predict({**x, "task_id": np.array([0, 9, 1])}, verbose=0)


def test_compiled_graph_out_of_range_id_passes_through():
    """Documented behaviour where values cannot be checked.

    `predict_on_batch` runs the compiled predict function without the eager
    entry checks. jax and tensorflow trace it, so the layer sees no values
    and an out-of-range id leaves its example unchanged; torch runs eagerly,
    so the layer's own check still raises.
    """
    backbone = BACKBONES["bert"]()
    adapted = keras_adalink.adapt(backbone, rank=2, num_tasks=2, dropout=0.0)
    rng = np.random.default_rng(0)
    for v in adapted.adapter.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    x = backbone_inputs(backbone)
    bad = {**x, "task_id": np.array([0, 5, 1], "int32")}
    if keras.backend.backend() == "torch":
        with pytest.raises(ValueError, match="task_id"):
            adapted.predict_on_batch(bad)
        return
    out = adapted.predict_on_batch(bad)["sequence_output"]
    plain = keras.ops.convert_to_numpy(backbone(x)["sequence_output"])
    np.testing.assert_allclose(out[1], plain[1], atol=1e-5)
    assert not np.allclose(out[0], plain[0], atol=1e-3)


def test_export_on_torch_says_what_to_do(tmp_path):
    if keras.backend.backend() != "torch":
        pytest.skip("torch-only message")
    adapted = keras_adalink.adapt(BACKBONES["bert"](), rank=2)
    with pytest.raises(NotImplementedError, match="onnx"):
        keras_adalink.export_saved_model(adapted, tmp_path / "m")
