"""Multimodal evidence: modality-specific AdaLink on a small VLM.

The paper's multimodal claims in miniature (its Tables 1, 3 and 4): with a
frozen pretrained vision-language model, how close does AdaLink come to full
fine-tuning, does it beat prompt tuning, and do separate image and text
modules beat one unified module of the same size?

Base model (PaLI layout, built from KerasHub parts): a ViT tower (32x32
images, 8x8 patches -> 16 image tokens, 4 blocks of width 128, trained from
scratch) and a linear projection to 384, concatenated with MiniLM's text
embeddings; the pretrained MiniLM blocks encode [image tokens; text tokens];
masked mean pooling; an answer head. AdaLink sits on the concatenated
sequence before the first MiniLM block, as a `ModalityRouter` with layout
`[16, None]` (image module on the 16 image tokens, text module on the rest).

Protocol (every stage appends JSON lines to `results/multimodal_runs.jsonl`):

    KERAS_BACKEND=jax .venv/bin/python benchmarks/multimodal.py --stage pretrain
        # Pre-trains the whole base model (~30 min on 2 cores) on a mixture
        # of Fashion-MNIST (question "what is this?", answer = class name)
        # and easy-vqa's OPEN questions (what shape / what colour). Cached
        # as a weights file (not committed) that the other stages reuse.
    ... --stage tune      # 3 peak learning rates per method, seed 0,
                          # picked on validation accuracy
    ... --stage main      # every method x 3 seeds at its tuned rate
    ... --stage ablation  # modality AdaLink at ranks 1, 16, 64 (3 seeds)
    ... --stage report    # results/multimodal.{json,md} + multimodal.png

Downstream task: easy-vqa's YES/NO questions (is there a red shape? does
the image contain a circle? is no triangle present?), question types never
seen in pre-training, with a fresh 2-way head for every method. Training:
`--train-examples` yes/no questions from train images 0-3499; validation:
1,000 from train images 3500-3999; test: every yes/no question of the test
split (7,136; 1,000 unseen images). Adam + WarmupRsqrtDecay (10% warmup),
batch 32, `--epochs` epochs.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
from runlog import RunLog  # noqa: E402

import keras_adalink  # noqa: E402
from keras_adalink import baselines  # noqa: E402
from keras_adalink import datasets  # noqa: E402
from keras_adalink import image_datasets  # noqa: E402

RESULTS = os.environ.get(
    "MULTIMODAL_RESULTS", os.path.join(os.path.dirname(__file__), "results")
)
RUNS = os.environ.get(
    "MULTIMODAL_RUNS", os.path.join(RESULTS, "multimodal_runs.jsonl")
)
LOG = RunLog(RUNS)
CACHE = os.environ.get(
    "MULTIMODAL_CACHE",
    os.path.join(sys.prefix, "share", "keras_adalink", "vlm_base.npz"),
)
IMAGE_SIZE = 32
PATCH = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
TEXT_LENGTH = 16
BATCH = 32
VIT = dict(num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=256)
SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
PRETRAIN_ANSWERS = image_datasets.FASHION_MNIST_CLASSES + SHAPES + COLORS
FASHION_QUESTIONS = (
    "what is this?",
    "what is shown in the image?",
    "what clothing item is this?",
    "what is in the picture?",
)
ADALINK_LRS = (3e-3, 1e-2, 3e-2)
# name -> (kind, options, learning-rate grid): the same budget per method.
METHODS = {
    "head only": ("head", {}, (3e-3, 1e-2, 3e-2)),
    "full fine-tuning": ("full", {}, (3e-5, 1e-4, 3e-4)),
    "LoRA q,v r4": ("lora", {"rank": 4}, (3e-4, 1e-3, 3e-3)),
    "prompt tuning P16": ("prompt", {"num_tokens": 16}, ADALINK_LRS),
    "AdaLink modality r4": ("modality", {"rank": 4}, ADALINK_LRS),
    "AdaLink unified r8": ("unified", {"rank": 8}, ADALINK_LRS),
}
ABLATION_RANKS = (1, 16, 64)
SEEDS = (0, 1, 2)


class Parts:
    """The base model's layers: ViT tower, image projection, MiniLM."""

    def __init__(self, bert_config):
        self.vit = keras_hub.models.ViTBackbone(
            image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
            patch_size=PATCH,
            use_class_token=False,
            name="vit",
            **VIT,
        )
        self.bert = keras_hub.models.BertBackbone.from_config(bert_config)
        self.projection = keras.layers.Dense(
            bert_config["hidden_dim"], name="image_projection"
        )
        self.projection.build((None, None, VIT["hidden_dim"]))

    def groups(self):
        return {"vit": self.vit, "proj": self.projection, "bert": self.bert}

    def save(self, path):
        arrays = {
            f"{name}_{i:04d}": np.asarray(w)
            for name, layer in self.groups().items()
            for i, w in enumerate(layer.get_weights())
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        np.savez(path, **arrays)

    def load(self, path):
        with np.load(path) as arrays:
            for name, layer in self.groups().items():
                keys = sorted(k for k in arrays if k.startswith(name + "_"))
                layer.set_weights([arrays[k] for k in keys])


def build_model(parts, num_outputs, adapter=None, prompt=None):
    """`[ViT tokens; text embeddings] -> adapter -> MiniLM blocks -> head`."""
    images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    bert = parts.bert
    image_tokens = parts.projection(parts.vit(images))
    tokens = bert.token_embedding(token_ids)
    text = bert.embeddings_add(
        (
            tokens,
            bert.position_embedding(tokens),
            bert.segment_embedding(keras.ops.zeros_like(token_ids)),
        )
    )
    text = bert.embeddings_dropout(bert.embeddings_layer_norm(text))
    x = keras.ops.concatenate([image_tokens, text], axis=1)
    image_mask = keras.ops.repeat(
        keras.ops.ones_like(padding_mask[:, :1]), IMAGE_TOKENS, axis=1
    )
    mask = keras.ops.concatenate([image_mask, padding_mask], axis=1)
    if adapter is not None:
        x = adapter(x)
    block_mask = mask
    if prompt is not None:
        x = prompt(x)
        block_mask = prompt.extend_mask(mask)
    for block in bert.transformer_layers:
        x = block(x, padding_mask=block_mask)
    if prompt is not None:
        x = prompt.remove(x)
    pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(
        x, mask=keras.ops.cast(mask, "bool")
    )
    outputs = keras.layers.Dense(num_outputs, name="head")(pooled)
    return keras.Model(
        {
            "images": images,
            "token_ids": token_ids,
            "padding_mask": padding_mask,
        },
        outputs,
    )


class Text:
    """MiniLM's tokenizer at the benchmark's text length."""

    def __init__(self):
        path = datasets.minilm_path()
        self.preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
            keras_hub.models.BertTokenizer.from_preset(path),
            sequence_length=TEXT_LENGTH,
        )
        self.bert_config = keras_hub.models.BertBackbone.from_preset(
            path
        ).get_config()
        self.path = path

    def features(self, images, questions):
        x = datasets.featurize(self.preprocessor, list(questions))
        return {
            "images": images,
            "token_ids": x["token_ids"].astype("int32"),
            "padding_mask": x["padding_mask"].astype("int32"),
        }


def compile_model(model, lr, steps):
    model.compile(
        optimizer=keras_adalink.adam_with_warmup(lr, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


# --- pre-training ---------------------------------------------------------


def pretraining_data(text, args, split):
    rng = np.random.default_rng(1234 if split == "train" else 4321)
    images, labels = image_datasets.fashion_mnist(split, IMAGE_SIZE)
    n = args.fashion_examples if split == "train" else 2000
    pick = rng.permutation(len(labels))[:n]
    fashion_q = rng.choice(FASHION_QUESTIONS, size=n)
    vqa = image_datasets.easy_vqa(split, kind="open", image_size=IMAGE_SIZE)
    vqa_y = [PRETRAIN_ANSWERS.index(a) for a in vqa["answers"]]
    parts = {
        "fashion": (
            text.features(images[pick], fashion_q),
            labels[pick].astype("int32"),
        ),
        "vqa_open": (
            text.features(vqa["images"], vqa["questions"]),
            np.array(vqa_y, "int32"),
        ),
    }
    if split != "train":
        return parts
    x = {
        k: np.concatenate([parts["fashion"][0][k], parts["vqa_open"][0][k]])
        for k in parts["fashion"][0]
    }
    y = np.concatenate([parts["fashion"][1], parts["vqa_open"][1]])
    order = rng.permutation(len(y))
    return {k: v[order] for k, v in x.items()}, y[order]


def stage_pretrain(args):
    text = Text()
    keras.utils.set_random_seed(0)
    parts = Parts(text.bert_config)
    parts.bert.set_weights(
        keras_hub.models.BertBackbone.from_preset(text.path).get_weights()
    )
    model = build_model(parts, len(PRETRAIN_ANSWERS))
    x, y = pretraining_data(text, args, "train")
    steps = args.pretrain_epochs * -(-len(y) // BATCH)
    compile_model(model, args.pretrain_lr, steps)
    start = time.perf_counter()
    history = model.fit(
        x, y, batch_size=BATCH, epochs=args.pretrain_epochs, verbose=2
    )
    seconds = time.perf_counter() - start
    parts.save(CACHE)
    held_out = pretraining_data(text, args, "test")
    row = dict(
        stage="pretrain",
        examples=len(y),
        epochs=args.pretrain_epochs,
        learning_rate=args.pretrain_lr,
        train_seconds=seconds,
        train_accuracy=[float(a) for a in history.history["accuracy"]],
        test_accuracy={
            name: accuracy(model, *held_out[name]) for name in held_out
        },
        cache=os.path.abspath(CACHE),
        parameters={
            name: count(layer.weights) for name, layer in parts.groups().items()
        },
    )
    LOG.record("pretrain", row)


# --- downstream -----------------------------------------------------------


class Downstream:
    """easy-vqa yes/no questions: train / validation / test features."""

    def __init__(self, text, train_examples):
        train = image_datasets.easy_vqa("train", "yes_no", IMAGE_SIZE)
        test = image_datasets.easy_vqa("test", "yes_no", IMAGE_SIZE)
        rng = np.random.default_rng(1234)
        pool = np.flatnonzero(train["image_ids"] < 3500)
        val = np.flatnonzero(train["image_ids"] >= 3500)
        picks = {
            "train": rng.permutation(pool)[:train_examples],
            "validation": rng.permutation(val)[:1000],
        }
        self.splits = {}
        for name, index in picks.items():
            self.splits[name] = self._features(text, train, index)
        self.splits["test"] = self._features(
            text, test, np.arange(len(test["answers"]))
        )

    @staticmethod
    def _features(text, data, index):
        x = text.features(data["images"][index], data["questions"][index])
        y = (data["answers"][index] == "yes").astype("int32")
        return x, y


def adapted_model(parts, kind, options):
    """Freezes `parts` as `kind` needs and returns the 2-way model."""
    for layer in parts.groups().values():
        layer.trainable = kind == "full"
    adapter = prompt = None
    if kind == "lora":
        parts.bert.trainable = True
        baselines.lora(parts.bert, **options)
    elif kind == "prompt":
        prompt = baselines.SoftPrompt(options["num_tokens"], name="prompt")
    elif kind in ("modality", "unified"):
        adapter = keras_adalink.ModalityRouter(
            ["image", "text"],
            rank=options["rank"],
            modality_lengths=[IMAGE_TOKENS, None],
            unified=kind == "unified",
            name="adalink",
        )
    elif kind not in ("head", "full"):
        raise ValueError(kind)
    return build_model(parts, 2, adapter=adapter, prompt=prompt)


def train_one(text, data, args, method, kind, options, lr, seed):
    keras.utils.set_random_seed(seed)
    parts = Parts(text.bert_config)
    parts.load(CACHE)
    # The base model as served (BERT's unused [CLS] pooler left out),
    # counted before LoRA adds its factors.
    base = count(parts.vit.weights + parts.projection.weights)
    base += count(parts.bert.weights) - count(parts.bert.pooled_dense.weights)
    model = adapted_model(parts, kind, options)
    (x, y), val, test = (
        data.splits[s] for s in ("train", "validation", "test")
    )
    steps = args.epochs * -(-len(y) // BATCH)
    compile_model(model, lr, steps)
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=BATCH, epochs=args.epochs, verbose=0)
    seconds = time.perf_counter() - start
    head = count(model.get_layer("head").trainable_weights)
    trainable = count(model.trainable_weights)
    return dict(
        method=method,
        kind=kind,
        options=options,
        learning_rate=lr,
        seed=seed,
        train_examples=len(y),
        epochs=args.epochs,
        trainable=trainable,
        trainable_without_head=trainable - head,
        base_parameters=base,
        final_train_loss=float(history.history["loss"][-1]),
        validation=accuracy(model, *val),
        test=accuracy(model, *test),
        train_seconds=seconds,
    )


def run_key(method, lr, seed):
    return f"run|{method}|{lr:g}|{seed}"


def tuned_lr(method):
    lrs = METHODS[method][2]
    rows = {r["key"]: r for r in LOG.rows()}
    keys = [run_key(method, lr, 0) for lr in lrs]
    if not all(k in rows for k in keys):
        raise SystemExit(f"run --stage tune first ({method} is not tuned)")
    return max(lrs, key=lambda lr: rows[run_key(method, lr, 0)]["validation"])


def plan(stage):
    """(method, kind, options, lr, seed) of every run in `stage`."""
    if stage == "tune":
        return [
            (m, kind, opts, lr, 0)
            for m, (kind, opts, lrs) in METHODS.items()
            for lr in lrs
        ]
    if stage == "main":
        return [
            (m, kind, opts, tuned_lr(m), seed)
            for m, (kind, opts, _) in METHODS.items()
            for seed in SEEDS
        ]
    lr = tuned_lr("AdaLink modality r4")
    return [
        (f"AdaLink modality r{rank}", "modality", {"rank": rank}, lr, seed)
        for rank in ABLATION_RANKS
        for seed in SEEDS
    ]


def stage_runs(stage, args):
    if not os.path.exists(CACHE):
        raise SystemExit(f"{CACHE} missing: run --stage pretrain first")
    text = Text()
    data = Downstream(text, args.train_examples)
    done = LOG.keys()
    for method, kind, options, lr, seed in plan(stage):
        key = run_key(method, lr, seed)
        if key in done or (args.methods and method not in args.methods):
            continue
        row = train_one(text, data, args, method, kind, options, lr, seed)
        LOG.record(key, {"stage": stage, **row})


# --- report ---------------------------------------------------------------


def summarize():
    rows = LOG.rows()
    pretrain = [r for r in rows if r["key"] == "pretrain"]
    runs = {r["key"]: r for r in rows if r["key"].startswith("run|")}
    table = []
    names = list(METHODS) + [f"AdaLink modality r{r}" for r in ABLATION_RANKS]
    for method in names:
        base = method if method in METHODS else "AdaLink modality r4"
        try:
            lr = tuned_lr(base)
        except SystemExit:
            continue
        got = [runs[k] for s in SEEDS if (k := run_key(method, lr, s)) in runs]
        if not got:
            continue
        test = np.array([r["test"] for r in got]) * 100
        table.append(
            dict(
                method=method,
                trainable=got[0]["trainable"],
                trainable_without_head=got[0]["trainable_without_head"],
                base_parameters=got[0]["base_parameters"],
                learning_rate=lr,
                seeds=len(got),
                test_mean=float(test.mean()),
                test_std=float(test.std(ddof=1)) if len(got) > 1 else None,
                test_runs=[float(t) for t in test],
                train_seconds=float(np.mean([r["train_seconds"] for r in got])),
            )
        )
    return dict(
        machine=platform.platform(),
        backend=keras.backend.backend(),
        pretrain=pretrain[-1] if pretrain else None,
        table=table,
    )


COMMAND = "KERAS_BACKEND=jax .venv/bin/python benchmarks/multimodal.py --stage"


def markdown(summary):
    lines = [
        "# Multimodal evidence: AdaLink on a small frozen vision-language "
        "model",
        "",
        "Base model: ViT tower (32x32 images, 16 image tokens, trained from "
        "scratch) + projection + pretrained MiniLM blocks over [image tokens;"
        ' text tokens], pre-trained here on Fashion-MNIST ("what is '
        "this?\" -> class name) and easy-vqa's open shape/colour questions, "
        "then frozen. Downstream: easy-vqa's yes/no questions, a question "
        "type kept out of pre-training; fresh 2-way head for every method; "
        "2,000 training questions, 3 epochs, batch 32, Adam + "
        "WarmupRsqrtDecay; the learning rate of each method picked from "
        "its 3-point grid on validation (seed 0), test = all 7,136 yes/no "
        "questions on the 1,000 unseen test images, mean ± std over seeds.",
        "",
        f"Reproduce: `{COMMAND} pretrain` (then `tune`, `main`, `ablation`,"
        " `report`); every run is a line of `multimodal_runs.jsonl`.",
        "",
    ]
    pre = summary["pretrain"]
    if pre:
        acc = pre["test_accuracy"]
        lines += [
            "Base model pre-training: "
            f"{pre['examples']:,} examples x {pre['epochs']} epochs in "
            f"{pre['train_seconds'] / 60:.0f} min; held-out accuracy "
            f"Fashion-MNIST {acc['fashion'] * 100:.1f}, easy-vqa open "
            f"questions {acc['vqa_open'] * 100:.1f}.",
            "",
        ]
    lines += [
        "| method | trainable w/o head (% of base) | lr | seeds "
        "| yes/no test acc | train s/run |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["table"]:
        pct = 100 * row["trainable_without_head"] / row["base_parameters"]
        std = f" ± {row['test_std']:.1f}" if row["test_std"] is not None else ""
        lines.append(
            f"| {row['method']} | {row['trainable_without_head']:,} "
            f"({pct:.3f}%) | {row['learning_rate']:g} | {row['seeds']} "
            f"| {row['test_mean']:.1f}{std} | {row['train_seconds']:.0f} |"
        )
    lines += ["", "![Multimodal evidence](multimodal.png)"]
    return "\n".join(lines) + "\n"


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {row["method"]: row for row in summary["table"]}
    methods = [m for m in METHODS if m in rows]
    ranks = [
        (int(m.rsplit("r", 1)[1]), rows[m])
        for m in rows
        if m.startswith("AdaLink modality r")
    ]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]}
    )
    y = np.arange(len(methods))[::-1]
    left.barh(
        y,
        [rows[m]["test_mean"] for m in methods],
        xerr=[rows[m]["test_std"] or 0 for m in methods],
        color=["C2" if m.startswith("AdaLink") else "C7" for m in methods],
        capsize=3,
    )
    left.set_yticks(
        y,
        [f"{m} ({rows[m]['trainable_without_head']:,})" for m in methods],
        fontsize=8,
    )
    left.set_xlim(45, 90)
    left.set_xlabel("yes/no test accuracy (%), mean ± std over seeds")
    left.set_title("Methods (trainable params without head)", fontsize=10)
    if ranks:
        ranks.sort()
        right.errorbar(
            [r for r, _ in ranks],
            [row["test_mean"] for _, row in ranks],
            yerr=[row["test_std"] or 0 for _, row in ranks],
            marker="o",
            capsize=3,
            color="C2",
        )
        right.set_xscale("log", base=2)
        right.set_xticks([r for r, _ in ranks], [str(r) for r, _ in ranks])
        right.set_xlabel("rank of each modality module")
        right.set_ylabel("yes/no test accuracy (%)")
        right.set_title("AdaLink modality: rank ablation", fontsize=10)
        right.grid(alpha=0.3)
    fig.suptitle("Frozen ViT + MiniLM VLM, held-out easy-vqa question types")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def stage_report():
    summary = summarize()
    with open(os.path.join(RESULTS, "multimodal.json"), "w") as f:
        json.dump(summary, f, indent=1)
    table = markdown(summary)
    with open(os.path.join(RESULTS, "multimodal.md"), "w") as f:
        f.write(table)
    plot(summary, os.path.join(RESULTS, "multimodal.png"))
    print(table)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--stage",
        required=True,
        choices=["pretrain", "tune", "main", "ablation", "report"],
    )
    parser.add_argument("--fashion-examples", type=int, default=20000)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--pretrain-lr", type=float, default=3e-4)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--methods",
        type=lambda s: s.split(";"),
        default=None,
        help="semicolon-separated subset of the stage's methods",
    )
    args = parser.parse_args()
    if args.stage == "pretrain":
        stage_pretrain(args)
    elif args.stage == "report":
        stage_report()
    else:
        stage_runs(args.stage, args)


if __name__ == "__main__":
    main()
