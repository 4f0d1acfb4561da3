"""KerasHub tasks around another backbone."""

import keras
import numpy as np


def _head_weights(task, backbone):
    backbone_ids = {id(v) for v in backbone.weights}
    return [v for v in task.weights if id(v) not in backbone_ids]


def rebuild_task(task, backbone):
    """A task of `task`'s class around `backbone`: same preprocessor, head
    weights copied (values, not buffers: on jax a shared buffer would be
    deleted when the other model's training donates it)."""
    config = task.get_config()
    config["backbone"] = backbone
    config["preprocessor"] = task.preprocessor
    new_task = type(task).from_config(config)
    old_head = _head_weights(task, task.backbone)
    new_head = _head_weights(new_task, backbone)
    shapes = [tuple(v.shape) for v in old_head]
    if shapes != [tuple(v.shape) for v in new_head]:
        raise ValueError(
            f"Could not carry the head of {type(task).__name__} over to the "
            "rebuilt task: its weights do not match after rebuilding."
        )
    for old, new in zip(old_head, new_head):
        new.assign(np.array(keras.ops.convert_to_numpy(old)))
    # The rebuilt task carries its class's default `compile()`; a custom
    # compile of the original is not carried over (call `compile` again).
    return new_task
