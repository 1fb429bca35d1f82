"""RetinaFace networks: the ResNet-50 model of ``retinaface-pytorch`` and a MobileNet-0.25 variant.

The MobileNet-0.25 body is the MobileNetV1 layout of Pytorch_Retinaface (``body.stage1/2/3``);
the FPN, SSH and heads (and the forward pass) are those of ``retinaface-pytorch``
(``retinaface.net``, ``retinaface.network``), so the widely used ``mobilenet0.25_Final.pth``
loads unchanged. ``retinaface`` is imported lazily: only the detectors need it.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from fercli.errors import FerError

INSTALL_HINT = "pip install --no-deps retinaface-pytorch==0.0.8"


def _retinaface() -> tuple[Any, Any]:
    """The ``retinaface.net`` and ``retinaface.network`` modules, or a FerError saying how to install them."""
    try:
        from retinaface import net, network  # plain torch modules (never predict_single: albumentations)
    except ImportError as exc:
        raise FerError(
            f"the RetinaFace detectors need the retinaface-pytorch package ({exc}); install it with "
            f"`{INSTALL_HINT}`, or use --detector landmarks or none"
        ) from None
    return net, network


class MobileNetV1(nn.Module):
    """MobileNetV1 with width 0.25, as in Pytorch_Retinaface (stage outputs 64, 128, 256 channels)."""

    def __init__(self) -> None:
        super().__init__()
        net, _ = _retinaface()
        conv_bn, conv_dw = net.conv_bn, net.conv_dw
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky=0.1),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            conv_dw(64, 128, 2),
            conv_dw(128, 128, 1),
            conv_dw(128, 128, 1),
            conv_dw(128, 128, 1),
            conv_dw(128, 128, 1),
            conv_dw(128, 128, 1),
        )
        self.stage3 = nn.Sequential(
            conv_dw(128, 256, 2),
            conv_dw(256, 256, 1),
        )


def _mobilenet_retinaface_class() -> type:
    net, network = _retinaface()

    class RetinaFaceMobileNet(network.RetinaFace):
        """RetinaFace with a MobileNet-0.25 body; forward() is retinaface-pytorch's."""

        def __init__(self, out_channels: int = 64) -> None:
            nn.Module.__init__(self)
            from torchvision.models import _utils

            self.body = _utils.IntermediateLayerGetter(MobileNetV1(), {"stage1": 1, "stage2": 2, "stage3": 3})
            self.fpn = net.FPN([64, 128, 256], out_channels)
            self.ssh1 = net.SSH(out_channels, out_channels)
            self.ssh2 = net.SSH(out_channels, out_channels)
            self.ssh3 = net.SSH(out_channels, out_channels)
            self.ClassHead = self._make_class_head(fpn_num=3, in_channels=out_channels)
            self.BboxHead = self._make_bbox_head(fpn_num=3, in_channels=out_channels)
            self.LandmarkHead = self._make_landmark_head(fpn_num=3, in_channels=out_channels)

    return RetinaFaceMobileNet


def build_mobilenet() -> nn.Module:
    """RetinaFace MobileNet-0.25 with random weights."""
    return _mobilenet_retinaface_class()()


def build_resnet50() -> nn.Module:
    """retinaface-pytorch's RetinaFace ResNet-50 with random weights (no ImageNet download)."""
    _, network = _retinaface()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated"
        return network.RetinaFace(
            name="Resnet50", pretrained=False,
            return_layers={"layer2": 1, "layer3": 2, "layer4": 3}, in_channels=256, out_channels=256,
        )
