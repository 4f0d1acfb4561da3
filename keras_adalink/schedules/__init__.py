from keras_adalink.schedules.warmup_rsqrt_decay import WarmupRsqrtDecay
from keras_adalink.schedules.warmup_rsqrt_decay import adam_with_warmup

__all__ = ["WarmupRsqrtDecay", "adam_with_warmup"]
