"""Which insertion point (and peak learning rate) should be the default?

Frozen pretrained all-MiniLM-L6-v2, Rotten Tomatoes (the library's fixed
split), mean-pooled linear head, AdaLink rank 4, Adam + WarmupRsqrtDecay
(10% warmup), batch 32, sequence length 48. Trains on the first
`--train-examples` training examples and reports validation accuracy (the
test split is left for the demo and the evidence issue). A head-only linear
probe at the same budget is the reference.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/insertion_sweep.py

Writes benchmarks/results/insertion_sweep.{json,md}.
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_adalink  # noqa: E402
from keras_adalink.datasets import featurize  # noqa: E402
from keras_adalink.heads import mean_pooled_classifier  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-examples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--learning-rates", default="3e-3,1e-2,3e-2")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="insertion_sweep")
    return parser.parse_args()


def run(model, x, y, xv, yv, lr, epochs):
    steps = epochs * -(-len(y) // 32)
    model.compile(
        optimizer=keras_adalink.adam_with_warmup(lr, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    predicted = np.argmax(model.predict(xv, verbose=0), -1)
    return float(np.mean(predicted == yv)), seconds


def main():
    args = parse_args()
    path = keras_adalink.datasets.minilm_path()
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    backbone.trainable = False
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer.from_preset(path), sequence_length=48
    )
    texts, y = keras_adalink.datasets.rotten_tomatoes("train")
    texts, y = texts[: args.train_examples], y[: args.train_examples]
    val_texts, yv = keras_adalink.datasets.rotten_tomatoes("validation")
    x, xv = featurize(preprocessor, texts), featurize(preprocessor, val_texts)

    rows = []
    variants = [("head only", None)] + [
        ("AdaLink", ins) for ins in ("token_embedding", "block_input")
    ]
    for lr in [float(v) for v in args.learning_rates.split(",")]:
        for method, insertion in variants:
            for seed in [int(s) for s in args.seeds.split(",")]:
                keras.utils.set_random_seed(seed)
                encoder = backbone
                if insertion is not None:
                    encoder = keras_adalink.adapt(
                        backbone, rank=args.rank, insertion=insertion
                    )
                model = mean_pooled_classifier(encoder, 2)
                acc, secs = run(model, x, y, xv, yv, lr, args.epochs)
                row = dict(
                    method=method,
                    insertion=insertion,
                    learning_rate=lr,
                    seed=seed,
                    val_accuracy=acc,
                    train_seconds=secs,
                )
                print(json.dumps(row), flush=True)
                rows.append(row)

    meta = dict(
        command="KERAS_BACKEND=jax .venv/bin/python "
        "benchmarks/insertion_sweep.py",
        args=vars(args),
        backend=keras.backend.backend(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        rank=args.rank,
        validation_examples=len(yv),
    )
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{args.out}.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    lines = [
        f"# Insertion point sweep (rank {args.rank}, MiniLM, Rotten "
        "Tomatoes validation)",
        "",
        f"`{meta['command']}` ({args.train_examples} train examples, "
        f"{args.epochs} epochs, seeds {args.seeds}, {meta['machine']}).",
        "",
        "| method | insertion | peak lr | val accuracy | train s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['insertion'] or '-'} | "
            f"{r['learning_rate']:g} | {r['val_accuracy']:.4f} | "
            f"{r['train_seconds']:.0f} |"
        )
    with open(os.path.join(RESULTS, f"{args.out}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
