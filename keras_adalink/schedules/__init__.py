from keras_adalink.schedules.warmup_rsqrt_decay import WarmupRsqrtDecay
from keras_adalink.schedules.warmup_rsqrt_decay import adam_with_warmup
from keras_adalink.schedules.warmup_rsqrt_decay import default_learning_rate

__all__ = ["WarmupRsqrtDecay", "adam_with_warmup", "default_learning_rate"]
