"""SSL4EO-S12 ResNet18/50 encoders (torchvision ResNets with an N-band first convolution)
with the U-Net decoder of the published method.

The encoder keeps torchvision's module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``),
so a torchvision/timm ResNet state dict (what torchgeo ships) loads into ``model.encoder``
as is; the classification head (``fc``) is dropped.

``encoder(x)`` returns five feature maps, finest first:
``[relu(bn1(conv1)) stride 2, layer1 stride 4, layer2 stride 8, layer3 stride 16, layer4 stride 32]``
with channels (64, 64, 128, 256, 512) for ResNet18 and (64, 256, 512, 1024, 2048) for ResNet50.

Decoder: up blocks (transposed conv 2x2 stride 2, concatenate the skip, (3x3 conv, BN, ReLU) x 2)
from stride 32 to stride 2, a 1x1 head, bilinear resize to the input. By default each up block
has its skip's channels, which is the published decoder (ResNet18: 256, 128, 64, 64; ResNet50:
1024, 512, 256, 64); ``decoder_channels`` (finest first, 4 values) makes it lighter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from sandwatch.models.base import SegmentationModel
from sandwatch.models.unet import UNetDecoder

RESNET_SKIP_CHANNELS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
}


class ResNetEncoder(nn.Module):
    """torchvision ResNet without ``avgpool``/``fc``; returns the five skip features."""

    def __init__(self, depth: str, in_channels: int):
        super().__init__()
        if depth not in RESNET_SKIP_CHANNELS:
            raise ValueError(f"unsupported ResNet {depth!r}")
        base = getattr(torchvision.models, depth)(weights=None)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1, self.relu, self.maxpool = base.bn1, base.relu, base.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = base.layer1, base.layer2, base.layer3, base.layer4
        self.channels = RESNET_SKIP_CHANNELS[depth]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x0 = self.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x0, x1, x2, x3, x4]


class ResNetUNet(SegmentationModel):
    """ResNet encoder + U-Net decoder (see the module docstring)."""

    def __init__(self, depth: str, in_channels: int, decoder_channels: Sequence[int] | None = None):
        super().__init__()
        self.encoder = ResNetEncoder(depth, in_channels)
        self.decoder = UNetDecoder(self.encoder.channels, decoder_channels)

    def decoder_forward(self, features, input_size):
        return self.decoder(features, input_size)
