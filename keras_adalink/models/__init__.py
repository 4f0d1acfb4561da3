from keras_adalink.models.ada_link_backbone import AdaLinkBackbone

__all__ = ["AdaLinkBackbone"]
