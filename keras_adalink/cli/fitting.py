"""The training loop of `keras-adalink train`, resumable.

One `fit` call per epoch over the rows in an order drawn from
`(seed, epoch)`, and a checkpoint in the run folder at the end of each
epoch: the trainable weights, every random-seed state (dropout), the
optimizer's state and the history so far. `train --resume` restores the
last one and runs the remaining epochs, so an interrupted run ends with the
same weights and metrics as one that never stopped (the frozen backbone
is loaded again from its preset, not saved). A killed run loses at most the
epoch in progress.
"""

import json
import os

import keras
import numpy as np

from keras_adalink.cli.runs import CliError
from keras_adalink.quiet import progress

CHECKPOINT = "checkpoint.npz"


def _state(model):
    """Everything the next step depends on besides the frozen weights."""
    seeds = [
        v for v in model.non_trainable_variables if "seed_generator" in v.path
    ]
    return list(model.trainable_variables) + seeds + model.optimizer.variables


def save_checkpoint(model, folder, meta):
    """Writes `checkpoint.npz` atomically (a kill mid-write keeps the last)."""
    arrays = {
        f"v{i}": keras.ops.convert_to_numpy(v)
        for i, v in enumerate(_state(model))
    }
    path = os.path.join(folder, CHECKPOINT)
    partial = path + ".partial.npz"
    np.savez(partial, meta=np.asarray(json.dumps(meta)), **arrays)
    os.replace(partial, path)


def restore_checkpoint(model, folder, expected):
    """Loads the checkpoint into `model`; returns its metadata.

    `expected` (the run and its training flags) must equal what the
    checkpoint was written with: resuming with other data flags would not
    continue the same run.
    """
    path = os.path.join(folder, CHECKPOINT)
    if not os.path.isfile(path):
        return None
    with np.load(path) as saved:
        meta = json.loads(str(saved["meta"]))
        changed = sorted(
            k for k in expected if meta["expected"].get(k) != expected[k]
        )
        if changed:
            raise CliError(
                f"--resume: {folder} was trained with other settings "
                f"({', '.join(changed)}); resume with the same flags or "
                "train into a new --out"
            )
        variables = _state(model)
        if len(saved.files) - 1 != len(variables):
            raise CliError(f"--resume: {path} does not match this model")
        for i, variable in enumerate(variables):
            variable.assign(saved[f"v{i}"])
    return meta


class StopAfter(keras.callbacks.Callback):
    """Ends `fit` after this epoch (so each epoch can take its own row
    order while Keras still shows "Epoch 2/3"), or once the optimizer has
    taken `steps` steps (--max-steps), mid-epoch if need be."""

    def __init__(self, steps, done):
        super().__init__()
        self.steps = steps
        self.seen = done

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def _rows(tree, order):
    return keras.tree.map_structure(lambda a: a[order], tree)


def fit_epochs(model, data, *, args, expected, validation=None):
    """Trains `model` on `data = (x, y, sample_weight or None)`.

    Returns the per-epoch history (a dict of lists, validation included),
    continuing the checkpoint's when `args.resume` finds one.
    """
    x, y, weights = data
    per_epoch = -(-len(y) // args.batch_size)
    steps = args.epochs * per_epoch
    if args.max_steps:
        steps = min(steps, args.max_steps)
    epochs = -(-steps // per_epoch)
    model.optimizer.build(model.trainable_variables)
    history, start = {}, 0
    meta = (
        restore_checkpoint(model, args.out, expected) if args.resume else None
    )
    if meta is not None:
        history, start = meta["history"], meta["epochs_done"]
    callbacks = [keras.callbacks.TensorBoard(os.path.join(args.out, "logs"))]
    for epoch in range(start, epochs):
        done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if done >= steps:
            break
        order = np.random.default_rng([args.seed, epoch]).permutation(len(y))
        result = model.fit(
            _rows(x, order),
            y[order],
            sample_weight=None if weights is None else weights[order],
            batch_size=args.batch_size,
            initial_epoch=epoch,
            epochs=epochs,
            shuffle=False,
            validation_data=validation,
            callbacks=callbacks + [StopAfter(steps, done)],
            verbose=progress(),
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        meta = {"expected": expected, "epochs_done": epoch + 1}
        save_checkpoint(model, args.out, {**meta, "history": history})
    return history
