"""The teachers: torchvision's ResNets, built untrained with a ``num_classes`` head.

Nothing is changed from torchvision's definition, so its ImageNet weights load by name (the
classifier ``fc`` excepted when the class count differs).
"""

from __future__ import annotations

import torchvision
from torch import nn


def resnet(num_classes: int, depth: int) -> nn.Module:
    """torchvision's ResNet-``depth`` (18, 34, 50, ...) with random weights and ``num_classes`` outputs."""
    return getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
