from keras_adalink.metrics.pearson_r import PearsonR

__all__ = ["PearsonR"]
