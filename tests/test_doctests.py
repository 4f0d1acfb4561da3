"""Every public docstring example runs, and prints what it says it prints.

The examples share a few tiny objects, named as the docstrings name them
(`backbone`, `classifier`, `model`, `multi`, ...): a 2-layer BERT on
the real MiniLM vocabulary and preprocessor, a tiny Gemma LM, a tiny CLIP.
They run in a temporary folder that holds the files they read. The logic
is the library's, not the backend's: run once, on jax (the README's
backend).
"""

import doctest
import json
import os

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from keras_adalink import image_datasets
from tests.fixtures.docs import PUBLIC


def _copy(backbone):
    """A fresh backbone with `backbone`'s weights (the same checkpoint)."""
    copy = type(backbone).from_config(backbone.get_config())
    copy.set_weights(backbone.get_weights())
    return copy


def _namespace(folder):
    from keras_adalink.datasets import minilm_path

    keras.utils.set_random_seed(0)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        minilm_path(), sequence_length=8
    )
    vocabulary = preprocessor.tokenizer.vocabulary_size()

    def tiny_bert():
        return keras_hub.models.BertBackbone(
            vocabulary_size=vocabulary,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=8,
        )

    backbone = tiny_bert()
    classifier = keras_hub.models.BertTextClassifier(
        tiny_bert(), num_classes=2, preprocessor=preprocessor
    )
    # A second task on the same frozen checkpoint (compose needs one).
    news = keras_hub.models.BertTextClassifier(
        _copy(classifier.backbone), num_classes=3, preprocessor=preprocessor
    )
    features = preprocessor(["a witty film", "a mess", "rain today"])
    gemma_lm = keras_hub.models.GemmaCausalLM(
        keras_hub.models.GemmaBackbone(
            vocabulary_size=50,
            num_layers=1,
            num_query_heads=2,
            num_key_value_heads=1,
            hidden_dim=16,
            intermediate_dim=32,
            head_dim=8,
        ),
        preprocessor=None,
    )
    from tests.fixtures.families import build

    clip = build("CLIPBackbone")
    image_shape = clip.input["images"].shape[1:]
    model = keras_adalink.adapt(classifier, rank=4)
    keras_adalink.save_adapter(
        keras_adalink.adapt(backbone, rank=4), "sentiment.safetensors"
    )
    with open("reviews.csv", "w") as f:
        f.write("review,stars\na witty film,5\na mess,1\n")
    with open("reviews.jsonl", "w") as f:
        for text, label in (("a witty film", "pos"), ("a mess", "neg")):
            f.write(json.dumps({"text": text, "label": label}) + "\n")
    sst = keras_adalink.adapt(classifier, rank=4)
    news = keras_adalink.adapt(news, rank=4)
    return {
        "keras": keras,
        "keras_hub": keras_hub,
        "np": np,
        "keras_adalink": keras_adalink,
        "preprocessor": preprocessor,
        "backbone": backbone,
        "inputs": preprocessor(["a witty film", "a mess"]),
        "classifier": classifier,
        "model": model,
        "sst": sst,
        "news": news,
        "multi": keras_adalink.compose({"sentiment": sst, "topic": news}),
        "features": features,
        "gemma_lm": gemma_lm,
        "ids": np.array([[1, 5, 7, 0, 0, 0], [1, 9, 0, 0, 0, 0]], "int32"),
        "mask": np.array([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], bool),
        "adapted_clip": keras_adalink.adapt(clip, rank=2),
        "images": np.random.default_rng(0).uniform(size=(2, *image_shape)),
    }


# Examples that read data installed outside Python, skipped without it.
_NEEDS = {
    "keras_adalink.image_datasets.fashion_mnist": (
        image_datasets.FASHION_MNIST_DIR,
        "the Debian package dataset-fashion-mnist",
    ),
}


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("doctests")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        yield _namespace(folder), folder
    finally:
        os.chdir(cwd)


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="docstring examples are backend-independent: run once, on jax",
)
@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_docstring_example_runs(name, namespace):
    needs = _NEEDS.get(name)
    if needs and not os.path.isdir(needs[0]):
        pytest.skip(f"needs {needs[1]} ({needs[0]})")
    shared, folder = namespace
    # Examples adapt, freeze or LoRA-wrap `backbone` in place: each gets its
    # own copy (the same checkpoint as the adapter file's).
    shared = {**shared, "backbone": _copy(shared["backbone"])}
    obj = PUBLIC[name]
    module = __import__(obj.__module__, fromlist=["_"])
    (test,) = [
        t
        for t in doctest.DocTestFinder(recurse=False).find(
            obj, name, module=module, globs={**vars(module), **shared}
        )
        if t.examples
    ]
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        runner = doctest.DocTestRunner(
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
        output = []
        runner.run(test, out=output.append)
    finally:
        os.chdir(cwd)
    assert runner.failures == 0, "".join(output)
