from keras_adalink.layers.ada_link import AdaLink
from keras_adalink.layers.modality_router import ModalityRouter
from keras_adalink.layers.task_heads import TaskHeads
from keras_adalink.layers.task_router import TaskRouter

__all__ = ["AdaLink", "ModalityRouter", "TaskHeads", "TaskRouter"]
