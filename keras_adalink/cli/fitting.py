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


def schedule(rows, args, placement):
    """`(steps an epoch, steps in all, epochs)` for `rows` examples.

    On a mesh every step is a full global batch (the data axis splits it
    evenly): the last partial batch of an epoch is left out.
    """
    if placement.distribution is None:
        per_epoch = -(-rows // args.batch_size)
    else:
        per_epoch = rows // args.batch_size
        if not per_epoch:
            raise CliError(
                f"--batch-size {args.batch_size} is larger than the "
                f"{rows} training rows"
            )
    steps = args.epochs * per_epoch
    if args.max_steps:
        steps = min(steps, args.max_steps)
    return per_epoch, steps, -(-steps // per_epoch)


def local_rows(order, batch_size, placement):
    """This process's rows of each global batch of `order`, in step order
    (all of `order` on one process)."""
    if placement.count == 1:
        return order
    return np.concatenate(
        [
            order[slice(*placement.local(start, start + batch_size))]
            for start in range(0, len(order) - batch_size + 1, batch_size)
        ]
    )


def shard(data, args, placement):
    """This process's rows of `data = (x, y[, sample_weight])`, whole
    per-process batches: every process feeds its part of each global
    batch (all of `data` on one process)."""
    if placement.count == 1:
        return data
    x, y, *weights = data
    rows = local_rows(np.arange(len(y)), args.batch_size, placement)
    return (
        _rows(x, rows),
        y[rows],
        *[w if w is None else w[rows] for w in weights],
    )


def evaluate(model, data, args, placement):
    """`model.evaluate` metrics over `data = (x, y, sample_weight)`, every
    process feeding its own rows; the same numbers on every process."""
    x, y, weights = shard(data, args, placement)
    return model.evaluate(
        x,
        y,
        sample_weight=weights,
        batch_size=args.batch_size // placement.count,
        verbose=0,
        return_dict=True,
    )


def fit_epochs(
    model, data, *, plan, args, expected, placement, validation=None
):
    """Trains `model` on `data = (x, y, sample_weight or None)` for `plan =
    schedule(...)`, the steps its optimizer's rate schedule was made for.

    Returns the per-epoch history (a dict of lists, validation included),
    continuing the checkpoint's when `args.resume` finds one. Only the
    process that `placement.writes` writes the checkpoint and logs.
    """
    x, y, weights = data
    per_epoch, steps, epochs = plan
    model.optimizer.build(model.trainable_variables)
    history, start = {}, 0
    meta = (
        restore_checkpoint(model, args.out, expected) if args.resume else None
    )
    if meta is not None:
        history, start = meta["history"], meta["epochs_done"]
    callbacks = []
    if placement.writes:
        logs = os.path.join(args.out, "logs")
        callbacks.append(keras.callbacks.TensorBoard(logs))
    for epoch in range(start, epochs):
        done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if done >= steps:
            break
        order = np.random.default_rng([args.seed, epoch]).permutation(len(y))
        if placement.distribution is not None:  # Whole global batches.
            order = order[: per_epoch * args.batch_size]
        order = local_rows(order, args.batch_size, placement)
        result = model.fit(
            _rows(x, order),
            y[order],
            sample_weight=None if weights is None else weights[order],
            batch_size=args.batch_size // placement.count,
            initial_epoch=epoch,
            epochs=epochs,
            shuffle=False,
            validation_data=validation and shard(validation, args, placement),
            validation_batch_size=args.batch_size // placement.count,
            callbacks=callbacks + [StopAfter(steps, done)],
            verbose=progress(),
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        meta = {"expected": expected, "epochs_done": epoch + 1}
        if placement.writes:
            save_checkpoint(model, args.out, {**meta, "history": history})
    return history
