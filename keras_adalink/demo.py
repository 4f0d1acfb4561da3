"""AdaLink fine-tune + serve demo on the frozen pretrained MiniLM.

Trains AdaLink (and, side by side, a head-only linear probe) on Rotten
Tomatoes with the library's fixed split, prints test accuracy and trainable
parameter counts, saves the adapter, reloads it into a freshly built model
and checks that predictions are identical. `make demo` and
`keras-adalink demo` run it.
"""

import argparse
import os
import tempfile
import time

import keras
import keras_hub
import numpy as np

import keras_adalink
from keras_adalink.datasets import featurize
from keras_adalink.heads import mean_pooled_classifier
from keras_adalink.quiet import progress


def add_arguments(parser):
    parser.add_argument(
        "--train-examples", type=int, default=4000, help="training examples"
    )
    parser.add_argument(
        "--test-examples", type=int, default=None, help="test examples (all)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="passes")
    parser.add_argument("--rank", type=int, default=4, help="AdaLink rank")
    # Peak rates picked on the validation split (benchmarks/insertion_sweep).
    parser.add_argument(
        "--learning-rate", type=float, default=1e-2, help="AdaLink peak rate"
    )
    parser.add_argument(
        "--probe-learning-rate",
        type=float,
        default=3e-2,
        help="head-only probe's peak rate",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch")
    parser.add_argument(
        "--sequence-length", type=int, default=48, help="tokens a text"
    )
    parser.add_argument(
        "--insertion", default="token_embedding", help="where AdaLink goes"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def train(model, x, y, learning_rate, args):
    steps = args.epochs * -(-len(y) // args.batch_size)
    model.compile(
        optimizer=keras_adalink.adam_with_warmup(learning_rate, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=progress()
    )
    return time.perf_counter() - start


def count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    run(add_arguments(parser).parse_args(argv))


def run(args):
    keras.utils.set_random_seed(args.seed)
    path = keras_adalink.datasets.minilm_path()
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer.from_preset(path),
        sequence_length=args.sequence_length,
    )
    texts, labels = keras_adalink.datasets.rotten_tomatoes("train")
    texts, labels = texts[: args.train_examples], labels[: args.train_examples]
    test_texts, test_labels = keras_adalink.datasets.rotten_tomatoes("test")
    test_texts = test_texts[: args.test_examples]
    test_labels = test_labels[: args.test_examples]
    x = featurize(preprocessor, texts)
    x_test = featurize(preprocessor, test_texts)
    print(
        f"Rotten Tomatoes: {len(labels)} train / {len(test_labels)} test "
        f"examples; frozen all-MiniLM-L6-v2; backend {keras.backend.backend()}"
    )

    # Baseline: frozen backbone, only the mean-pooled linear head trains.
    backbone.trainable = False
    probe = mean_pooled_classifier(backbone, 2, name="head_only")
    probe_seconds = train(probe, x, labels, args.probe_learning_rate, args)

    # AdaLink: same frozen backbone, same head, plus the adapter.
    adapted = keras_adalink.adapt(
        backbone, rank=args.rank, insertion=args.insertion
    )
    model = mean_pooled_classifier(adapted, 2, name="adalink")
    seconds = train(model, x, labels, args.learning_rate, args)

    print(f"\n{'method':<28}{'trainable':>11}{'test acc':>10}{'train s':>9}")
    rows = [
        ("head only (linear probe)", probe, probe_seconds),
        (f"AdaLink rank {args.rank} + head", model, seconds),
    ]
    for name, m, secs in rows:
        predicted = np.argmax(m.predict(x_test, verbose=0), -1)
        accuracy = np.mean(predicted == test_labels)
        print(
            f"{name:<28}{count(m.trainable_weights):>11,}"
            f"{accuracy:>10.4f}{secs:>9.1f}"
        )
    frozen, added = count(backbone.weights), count(adapted.adapter.weights)
    print(
        f"backbone parameters (frozen): {frozen:,}; AdaLink adds "
        f"{added:,} ({100 * added / frozen:.3f}% of the backbone)"
    )

    # Serve: save only adapter + head, rebuild from scratch, reload, compare.
    with tempfile.TemporaryDirectory() as tmp:
        file = os.path.join(tmp, "sentiment.safetensors")
        keras_adalink.save_adapter(model, file)
        print(f"\nsaved adapter + head: {os.path.getsize(file):,} bytes")
        fresh = mean_pooled_classifier(
            keras_adalink.adapt(
                backbone, rank=args.rank, insertion=args.insertion
            ),
            2,
            name="reloaded",
        )
        keras_adalink.load_adapter(fresh, file)
    before = model.predict(x_test, verbose=0)
    after = fresh.predict(x_test, verbose=0)
    same = np.array_equal(before, after)
    print(
        f"reloaded into a fresh model: predictions identical = {same} "
        f"(max |diff| {np.abs(before - after).max():.2e})"
    )
    if not same:
        raise SystemExit("Reloaded adapter gave different predictions.")
