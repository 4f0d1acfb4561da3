"""AdaLink on MiniLM with keras.distribution (jax backend).

One host with simulated CPU devices (what CI runs):

    KERAS_BACKEND=jax python examples/distributed_train.py \
        --simulate-devices 8 --mesh 2,4

The same script, unchanged, on a host with 8 GPUs or TPU cores:

    KERAS_BACKEND=jax python examples/distributed_train.py --mesh 2,4

Several hosts: start the same command on every host with
`--multi-host` (it calls `keras.distribution.initialize()`, which reads the
coordinator address, process count and id from the environment; see
docs/distribution.md). `--mesh B,M` is a (batch, model) mesh: weights are
split over M devices by `keras_adalink.get_layout_map`, the batch over B;
`--data-parallel` replicates everything instead.
"""

import argparse
import os


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--mesh", default="2,4", help="batch,model sizes")
    parser.add_argument("--data-parallel", action="store_true")
    parser.add_argument("--simulate-devices", type=int, default=0)
    parser.add_argument("--multi-host", action="store_true")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--test-examples", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--out", default="runs/distributed")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.simulate_devices:
        # Must be set before jax starts.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.simulate_devices}"
        )
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import keras
    import keras_hub
    import numpy as np

    import keras_adalink
    from keras_adalink.datasets import featurize
    from keras_adalink.heads import mean_pooled_classifier

    if keras.backend.backend() != "jax":
        raise SystemExit(
            "keras.distribution runs on the jax backend; see "
            "docs/distribution.md for tensorflow and torch."
        )
    if args.multi_host:
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    if args.data_parallel:
        distribution = keras.distribution.DataParallel(devices=devices)
        print(f"DataParallel over {len(devices)} devices")
    else:
        shape = tuple(int(n) for n in args.mesh.split(","))
        if int(np.prod(shape)) != len(devices):
            raise SystemExit(
                f"--mesh {args.mesh} needs {int(np.prod(shape))} devices; "
                f"this host has {len(devices)} (--simulate-devices N to "
                "simulate CPU devices)."
            )
        mesh = keras.distribution.DeviceMesh(shape, ["batch", "model"], devices)
        layout_map = keras_adalink.get_layout_map(
            keras_hub.models.BertBackbone, mesh
        )
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )
        print(f"ModelParallel on a {shape} (batch, model) mesh")

    path = keras_adalink.datasets.minilm_path()
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer.from_preset(path), sequence_length=48
    )
    texts, y = keras_adalink.datasets.rotten_tomatoes("train")
    test_texts, test_y = keras_adalink.datasets.rotten_tomatoes("test")
    x = featurize(preprocessor, texts[: args.train_examples])
    y = y[: args.train_examples]
    test_x = featurize(preprocessor, test_texts[: args.test_examples])
    test_y = test_y[: args.test_examples]

    # Build inside the scope: every weight is created where its layout says.
    with distribution.scope():
        backbone = keras_hub.models.BertBackbone.from_preset(path)
        model = mean_pooled_classifier(
            keras_adalink.adapt(backbone, rank=args.rank), 2
        )
        steps = args.epochs * -(-len(y) // args.batch_size)
        model.compile(
            optimizer=keras_adalink.adam_with_warmup(args.learning_rate, steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(
            x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=2
        )
        # A last partial batch must still split over the batch axis.
        keep = len(test_y) - len(test_y) % args.batch_size or len(test_y)
        _, accuracy = model.evaluate(
            {k: v[:keep] for k, v in test_x.items()},
            test_y[:keep],
            batch_size=args.batch_size,
            verbose=0,
        )
    sharded = sum(
        any(a is not None for a in v.value.sharding.spec) for v in model.weights
    )
    print(f"test accuracy {accuracy:.4f} ({keep} examples)")
    print(f"{sharded} of {len(model.weights)} weights split across devices")
    os.makedirs(args.out, exist_ok=True)
    keras_adalink.save_adapter(
        model, os.path.join(args.out, "adapter.safetensors")
    )
    print(f"adapter saved to {args.out}/adapter.safetensors")
    return accuracy


if __name__ == "__main__":
    main()
