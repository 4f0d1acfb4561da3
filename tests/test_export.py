"""SavedModel export: served by TensorFlow alone, as TF Serving would."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy
from tests.fixtures.decoders import CAUSAL_LMS
from tests.fixtures.decoders import lm_inputs
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import backbone_inputs

pytestmark = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="SavedModel export runs on jax and tensorflow (torch: ONNX)",
)

# Runs in a process that imports only tensorflow, like a serving host.
_SERVE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, request, out = sys.argv[1:4]
    signature = tf.saved_model.load(path).signatures["serving_default"]
    body = json.load(open(request))
    # TF Serving's REST row format: {"instances": [{input: value}, ...]}.
    rows = body["instances"]
    batch = {k: tf.constant([row[k] for row in rows]) for k in rows[0]}
    result = signature(**batch)
    np.savez(out, **{k: v.numpy() for k, v in result.items()})
    assert "keras_adalink" not in sys.modules
    """
)


def _serve(tmp_path, path, x):
    instances = [
        {k: np.asarray(v)[i].tolist() for k, v in x.items()}
        for i in range(len(next(iter(x.values()))))
    ]
    (value,) = _serve_rest(tmp_path, path, instances, _SERVE).values()
    return value


def _serve_rest(tmp_path, path, instances, script_text):
    """Runs `script_text` (TensorFlow only) on a REST `instances` body."""
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"instances": instances}))
    script = tmp_path / "serve.py"
    script.write_text(script_text)
    out = tmp_path / "out.npz"
    result = subprocess.run(
        [sys.executable, str(script), str(path), str(request), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


def _multi_task_classifier():
    task = keras_hub.models.BertTextClassifier(
        BACKBONES["bert"](), num_classes=3, preprocessor=None
    )
    adapted = keras_adalink.adapt(task, rank=2, num_tasks=3)
    randomize_adapter(adapted)
    return adapted


def test_multi_task_classifier_served_by_tensorflow_alone(tmp_path):
    model = _multi_task_classifier()
    path = tmp_path / "served" / "1"
    keras_adalink.export_saved_model(model, path)
    # Dynamic batch and sequence length; one mixed-task request.
    for batch, seq in [(3, 12), (5, 7)]:
        x = backbone_inputs(model, batch=batch, seq=seq, num_tasks=3)
        expected = model.predict(x, verbose=0)
        served = _serve(tmp_path, path, x)
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    # Mixed batch equals each task's rows served alone.
    x = backbone_inputs(model, batch=4, num_tasks=3)
    mixed = _serve(tmp_path, path, x)
    for task in range(3):
        rows = {k: v for k, v in x.items()}
        rows["task_id"] = np.full(4, task, "int32")
        alone = _serve(tmp_path, path, rows)
        picked = x["task_id"] == task
        np.testing.assert_allclose(
            mixed[picked], alone[picked], rtol=1e-5, atol=1e-5
        )


def test_saved_model_cli_shows_serving_signature(tmp_path):
    model = _multi_task_classifier()
    keras_adalink.export_saved_model(model, tmp_path / "m")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [
            cli,
            "show",
            "--dir",
            str(tmp_path / "m"),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    for name in ("token_ids", "segment_ids", "padding_mask", "task_id"):
        assert f"inputs['{name}']" in shown
    assert "shape: (-1, -1)" in shown and "shape: (-1)" in shown
    assert "Method name is: tensorflow/serving/predict" in shown


def test_folded_model_exports(tmp_path):
    backbone = BACKBONES["bert"]()
    task = keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None
    )
    adapted = keras_adalink.adapt(task, rank=2)
    randomize_adapter(adapted)
    folded = keras_adalink.fold(adapted)
    keras_adalink.export_saved_model(folded, tmp_path / "f")
    x = backbone_inputs(backbone, batch=3)
    np.testing.assert_allclose(
        _serve(tmp_path, tmp_path / "f", x),
        adapted.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


def test_user_model_with_mean_pooled_head_exports(tmp_path):
    from keras_adalink.heads import mean_pooled_classifier

    backbone = BACKBONES["bert"]()
    model = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=2), 2)
    randomize_adapter(model)
    keras_adalink.export_saved_model(model, tmp_path / "m")
    x = backbone_inputs(backbone, batch=3, seq=9)
    np.testing.assert_allclose(
        _serve(tmp_path, tmp_path / "m", x),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


def test_folded_untied_gemma_exports(tmp_path):
    lm = CAUSAL_LMS["gemma"]()
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    randomize_adapter(adapted, scale=0.3)
    folded = keras_adalink.fold(adapted)
    keras_adalink.export_saved_model(folded, tmp_path / "g")
    x = lm_inputs()
    np.testing.assert_allclose(
        _serve(tmp_path, tmp_path / "g", x),
        keras.ops.convert_to_numpy(adapted(x)),
        rtol=1e-5,
        atol=1e-5,
    )


_SERVE_TEXT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    path, out = sys.argv[1:3]
    try:
        tf.saved_model.load(path).signatures["serving_default"](
            text=tf.constant(["x"]), task_id=tf.constant([0])
        )
        registered = True
    except Exception as error:  # KerasHub tokenizers are tf-text ops.
        registered = "not registered" not in str(error)
    import tensorflow_text  # noqa: F401  (registers the ops)

    loaded = tf.saved_model.load(path)
    result = loaded.signatures["serving_default"](
        text=tf.constant(["the film is a witty mess", "a film"]),
        task_id=tf.constant([1, 0]),
    )
    arrays = {k: v.numpy() for k, v in result.items()}
    np.savez(out, registered=registered, **arrays)
    assert "keras_adalink" not in sys.modules
    """
)


def test_raw_string_export_serves_text(tmp_path):
    from keras_adalink.datasets import featurize

    words = ["the", "film", "is", "a", "witty", "mess"]
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=8
    )
    model = _multi_task_classifier()
    keras_adalink.export_saved_model(
        model, tmp_path / "t", preprocessor=preprocessor
    )
    x = featurize(preprocessor, ["the film is a witty mess", "a film"])
    x = {k: v.astype("int32") for k, v in x.items()}
    x["task_id"] = np.array([1, 0], "int32")
    script = tmp_path / "serve_text.py"
    script.write_text(_SERVE_TEXT)
    out = tmp_path / "out.npz"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "t"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(out)
    # Without tensorflow-text's ops the strings signature cannot run.
    assert not served["registered"]
    np.testing.assert_allclose(
        served["output_0"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    # The token-id signature stays for clients that tokenize themselves.
    import tensorflow as tf

    signatures = tf.saved_model.load(str(tmp_path / "t")).signatures
    assert set(signatures) == {"serving_default", "serving_tokens"}
    served = signatures["serving_tokens"](
        **{k: tf.constant(v) for k, v in x.items()}
    )
    np.testing.assert_allclose(
        served["output_0"].numpy(),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


_SERVE_NAMES = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, request, out = sys.argv[1:4]
    signature = tf.saved_model.load(path).signatures["serving_default"]
    rows = json.load(open(request))["instances"]
    batch = {k: tf.constant([row[k] for row in rows]) for k in rows[0]}
    try:
        result = {k: v.numpy() for k, v in signature(**batch).items()}
    except tf.errors.InvalidArgumentError as error:
        result = {"error": np.array(str(error))}
    np.savez(out, **result)
    assert "keras_adalink" not in sys.modules
    """
)


def test_composed_model_serves_task_names(tmp_path):
    from keras_adalink.heads import mean_pooled_classifier

    backbone = BACKBONES["bert"]()
    singles = {}
    for seed, (name, width) in enumerate([("sentiment", 2), ("topic", 4)]):
        model = mean_pooled_classifier(
            keras_adalink.adapt(backbone, rank=2), width
        )
        randomize_adapter(model, seed=seed)
        singles[name] = model
    multi = keras_adalink.compose(singles)
    keras_adalink.export_saved_model(multi, tmp_path / "multi")
    x = backbone_inputs(backbone, batch=4, seq=9)
    names = ["topic", "sentiment", "sentiment", "topic"]
    instances = [
        {**{k: v[i].tolist() for k, v in x.items()}, "task": names[i]}
        for i in range(4)
    ]
    served = _serve_rest(tmp_path, tmp_path / "multi", instances, _SERVE_NAMES)
    np.testing.assert_array_equal(served["num_outputs"], [4, 2, 2, 4])
    for i, name in enumerate(names):
        one = {k: v[i : i + 1] for k, v in x.items()}
        expected = singles[name].predict(one, verbose=0)[0]
        np.testing.assert_allclose(
            served["outputs"][i, : len(expected)], expected, atol=1e-5
        )
    # An unknown name fails the whole request, naming it.
    instances[2]["task"] = "sentimnet"
    failed = _serve_rest(tmp_path, tmp_path / "multi", instances, _SERVE_NAMES)
    assert "unknown task name" in str(failed["error"])
    assert "sentimnet" in str(failed["error"])
    # Int ids stay available as their own signature.
    import tensorflow as tf

    signatures = tf.saved_model.load(str(tmp_path / "multi")).signatures
    assert set(signatures) == {"serving_default", "serving_task_id"}
    by_id = signatures["serving_task_id"](
        **{k: tf.constant(v) for k, v in x.items()},
        task_id=tf.constant([1, 0, 0, 1]),
    )
    np.testing.assert_allclose(
        by_id["outputs"].numpy(), served["outputs"], atol=1e-6
    )


@pytest.mark.parametrize("name", ["MixtralBackbone", "BartBackbone"])
def test_decoder_and_seq2seq_families_export(name, tmp_path):
    """A mixture-of-experts decoder and an encoder-decoder with a shared
    table, adapted (unfolded), serve the same logits from TensorFlow."""
    from tests.fixtures.families import EXPORT_TESTED
    from tests.fixtures.families import NEW_FAMILIES
    from tests.fixtures.families import family_inputs as _inputs

    if keras.backend.backend() == "jax" and "jax:" in EXPORT_TESTED[name]:
        pytest.skip(EXPORT_TESTED[name])

    lm = keras_adalink.adapt(NEW_FAMILIES[name].build(), rank=2, dropout=0.0)
    randomize_adapter(lm, scale=0.3)
    keras_adalink.export_saved_model(lm, tmp_path / "lm")
    x = _inputs(lm)
    np.testing.assert_allclose(
        _serve(tmp_path, tmp_path / "lm", x),
        keras.ops.convert_to_numpy(lm(x)),
        rtol=1e-4,
        atol=1e-4,
    )


_SERVE_TOWERS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, request, out = sys.argv[1:4]
    signatures = tf.saved_model.load(path).signatures
    x = {k: tf.constant(v) for k, v in json.load(open(request)).items()}
    image = signatures["serving_image"](images=x["images"])
    text = signatures["serving_text"](token_ids=x["token_ids"])
    both = signatures["serving_default"](**x)
    np.savez(out, image=list(image.values())[0].numpy(),
             text=list(text.values())[0].numpy(),
             **{k: v.numpy() for k, v in both.items()})
    assert "keras_adalink" not in sys.modules
    """
)


@pytest.mark.parametrize("name", ["CLIPBackbone", "SigLIPBackbone"])
def test_two_tower_exports_image_and_text_signatures(name, tmp_path):
    """An adapted CLIP/SigLIP serves image embeddings, text embeddings and
    the pair logits from separate signatures, as Keras computes them."""
    from tests.fixtures.families import NEW_FAMILIES
    from tests.fixtures.families import family_inputs as _inputs

    adapted = keras_adalink.adapt(NEW_FAMILIES[name].build(), rank=2)
    randomize_adapter(adapted, scale=0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras_adalink.export_saved_model(adapted, tmp_path / "m")
    # SigLIP's text tower adds its whole position table: jax2tf exports it
    # at that fixed length (and says so); CLIP's text length stays dynamic.
    fixed = name == "SigLIPBackbone" and keras.backend.backend() == "jax"
    assert fixed == any("fixed length" in str(w.message) for w in caught)
    x = _inputs(adapted, batch=3)
    if name == "CLIPBackbone":
        x["token_ids"] = x["token_ids"][:, :5]  # shorter than the maximum
    request = tmp_path / "request.json"
    request.write_text(json.dumps({k: v.tolist() for k, v in x.items()}))
    script = tmp_path / "serve.py"
    script.write_text(_SERVE_TOWERS)
    out = tmp_path / "out.npz"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "m"), str(request), out],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = dict(np.load(out))
    towers = keras_adalink.tower_models(adapted)
    want = {
        "image": towers["image"]({"images": x["images"]}),
        "text": towers["text"]({"token_ids": x["token_ids"]}),
        **adapted(x),
    }
    for key, value in want.items():
        np.testing.assert_allclose(
            served[key], keras.ops.convert_to_numpy(value), atol=1e-4
        )


def test_whisper_exports_encoder_and_decoder(tmp_path):
    """Whisper with its audio and text modules serves the encoder and
    decoder outputs Keras computes (lengths dynamic, within the limits)."""
    from tests.fixtures.families import NEW_FAMILIES

    adapted = keras_adalink.adapt(
        NEW_FAMILIES["WhisperBackbone"].build(), rank=2, dropout=0.0
    )
    randomize_adapter(adapted, scale=0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras_adalink.export_saved_model(adapted, tmp_path / "w")
    assert not any("fixed length" in str(w.message) for w in caught)
    rng = np.random.default_rng(0)
    x = {
        "encoder_features": rng.normal(size=(2, 6, 80)).astype("float32"),
        "decoder_token_ids": rng.integers(1, 40, (2, 5)).astype("int32"),
        "decoder_padding_mask": np.ones((2, 5), "int32"),
    }
    instances = [{k: v[i].tolist() for k, v in x.items()} for i in range(2)]
    served = _serve_rest(tmp_path, tmp_path / "w", instances, _SERVE)
    for key, value in to_numpy(adapted(x)).items():
        np.testing.assert_allclose(served[key], value, atol=1e-4)
