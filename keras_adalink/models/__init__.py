from keras_adalink.models.ada_link_backbone import AdaLinkBackbone
from keras_adalink.models.ada_link_backbone import find_adalink_backbone

__all__ = ["AdaLinkBackbone", "find_adalink_backbone"]
