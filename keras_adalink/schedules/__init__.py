from keras_adalink.schedules.warmup_rsqrt_decay import WarmupRsqrtDecay

__all__ = ["WarmupRsqrtDecay"]
