"""AdaLink: non-intrusive, input-centric adaptation of frozen transformers."""

import os as _os

# An explicit opt-in, read once here because it must act before the imports
# below load TensorFlow: the console script (keras_adalink_launcher.py), the
# demo and the notebooks set it to start without TensorFlow's native logs
# (keras_adalink/quiet.py). Unset, importing keras_adalink does nothing but
# import.
if _os.environ.get("KERAS_ADALINK_QUIET_START"):
    from keras_adalink.quiet import quiet_start as _quiet_start

    _quiet_start()

from keras_adalink import baselines
from keras_adalink import datasets
from keras_adalink import distribution
from keras_adalink import heads
from keras_adalink.adapt import adapt
from keras_adalink.adapt import reattach
from keras_adalink.adapter_file import load_adapter
from keras_adalink.adapter_file import save_adapter
from keras_adalink.compose import compose
from keras_adalink.compose import task_ids
from keras_adalink.distribution import get_layout_map
from keras_adalink.export import export_saved_model
from keras_adalink.export import tower_models
from keras_adalink.export_peft import export_peft
from keras_adalink.fold import fold
from keras_adalink.layers import AdaLink
from keras_adalink.layers import ModalityRouter
from keras_adalink.layers import TaskHeads
from keras_adalink.layers import TaskRouter
from keras_adalink.live import add_task
from keras_adalink.live import remove_task
from keras_adalink.metrics import PearsonR
from keras_adalink.models import AdaLinkBackbone
from keras_adalink.presets import from_preset
from keras_adalink.presets import save_adapter_preset
from keras_adalink.schedules import WarmupRsqrtDecay
from keras_adalink.schedules import adam_with_warmup
from keras_adalink.schedules import default_learning_rate
from keras_adalink.version import __version__

__all__ = [
    "AdaLink",
    "AdaLinkBackbone",
    "ModalityRouter",
    "PearsonR",
    "TaskHeads",
    "TaskRouter",
    "WarmupRsqrtDecay",
    "__version__",
    "adam_with_warmup",
    "adapt",
    "add_task",
    "baselines",
    "compose",
    "datasets",
    "default_learning_rate",
    "distribution",
    "export_peft",
    "export_saved_model",
    "fold",
    "from_preset",
    "get_layout_map",
    "heads",
    "load_adapter",
    "reattach",
    "remove_task",
    "save_adapter",
    "save_adapter_preset",
    "task_ids",
    "tower_models",
]
