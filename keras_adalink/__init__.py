"""AdaLink: non-intrusive, input-centric adaptation of frozen transformers."""

from keras_adalink.adapt import adapt
from keras_adalink.layers import AdaLink
from keras_adalink.layers import ModalityRouter
from keras_adalink.layers import TaskRouter
from keras_adalink.models import AdaLinkBackbone
from keras_adalink.version import __version__

__all__ = [
    "AdaLink",
    "AdaLinkBackbone",
    "ModalityRouter",
    "TaskRouter",
    "__version__",
    "adapt",
]
