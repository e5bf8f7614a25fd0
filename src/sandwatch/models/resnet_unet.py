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

Registry entries (``SPECS``): ``ssl4eo-resnet18`` and ``ssl4eo-resnet50``, 13 L1C bands by
default (any band set builds), reflectance clipped to [0, 1] (SSL4EO-S12: DN / 10000), encoder
frozen by default when pretrained weights are loaded, published learning rate and batch size.
Weight layouts they read:

* ``ssl4eo-moco``: the original SSL4EO-S12 MoCo checkpoint (``B13_rn50_moco_0099.pth``),
  ``ckpt["state_dict"]`` with keys ``module.encoder_q.<torchvision key>``;
  ``module.encoder_q.fc.*`` (projection head), ``module.encoder_k.*`` (momentum encoder) and
  ``queue*`` are set aside;
* ``timm``: a torchgeo / timm / torchvision plain ResNet state dict (``conv1.weight``,
  ``bn1.*``, ``layer1.0.conv1.weight`` ...); ``fc.*`` is set aside.

The depth follows from the blocks of ``layer3`` (2: ResNet18, 6: ResNet50, with bottlenecks),
the bands from the channels of ``conv1`` (13: L1C, 12: L2A, 3: B04 B03 B02 as torchgeo's RGB
weights).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial

import torch
import torchvision
from torch import nn

from sandwatch.bands import L1C_BANDS, L2A_BANDS
from sandwatch.models.base import SegmentationModel
from sandwatch.models.spec import (
    FileFacts,
    ModelSpec,
    WeightLayout,
    is_tensor_dict,
    native_range,
)
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


def build_resnet_unet(depth: str, n_bands: int, decoder_channels: Sequence[int] | None = None) -> ResNetUNet:
    return ResNetUNet(depth, n_bands, decoder_channels=list(decoder_channels) if decoder_channels else None)


#: band names of a ResNet file by its input channel count (torchgeo RGB weights are B04 B03 B02)
_FILE_BANDS = {13: L1C_BANDS, 12: L2A_BANDS, 3: ("B04", "B03", "B02")}
#: (bottleneck blocks, blocks in layer3) -> registry name
_DEPTHS = {(False, 2): "ssl4eo-resnet18", (True, 6): "ssl4eo-resnet50"}
MOCO_QUERY = "module.encoder_q."    #: key prefix of the query encoder in an SSL4EO-S12 MoCo file
MOCO_KEY = "module.encoder_k."      #: ... and of its momentum (key) encoder


def moco_file(arch: str, epoch: int, state_dict: dict[str, torch.Tensor]) -> dict:
    """An SSL4EO-S12 MoCo file (the ``ssl4eo-moco`` layout below) around ``state_dict`` (keys
    already prefixed): ``{"epoch", "arch": "resnet18"/"resnet50", "state_dict"}``; ``arch`` a
    registry name (``ssl4eo-resnet18``) or the bare depth."""
    return {"epoch": int(epoch), "arch": arch.removeprefix("ssl4eo-"), "state_dict": state_dict}


def resnet_facts(sd: dict[str, torch.Tensor]) -> FileFacts:
    """Architecture and bands a ResNet state dict implies."""
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"layer3\.(\d+)\.", k))}
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in sd)
    conv1 = sd.get("conv1.weight")
    n = int(conv1.shape[1]) if conv1 is not None and conv1.ndim == 4 else None
    return FileFacts(_DEPTHS.get((bottleneck, len(blocks))), n, _FILE_BANDS.get(n) if n else None)


MOCO = WeightLayout(
    "ssl4eo-moco", "original SSL4EO-S12 MoCo checkpoint (state_dict, module.encoder_q.*)",
    recognise=lambda obj: is_tensor_dict(obj.get("state_dict")) and any(k.startswith(MOCO_QUERY) for k in obj["state_dict"]),
    tensors=lambda obj: obj["state_dict"],
    ignore=rf"^({re.escape(MOCO_QUERY)}fc\.|{re.escape(MOCO_KEY)}|(module\.)?queue)", strip=MOCO_QUERY,
    facts=resnet_facts, info=lambda obj: {k: obj[k] for k in ("epoch", "arch") if k in obj})
TIMM = WeightLayout(
    "timm", "torchgeo/timm plain ResNet state dict",
    recognise=lambda obj: is_tensor_dict(obj) and "conv1.weight" in obj,
    tensors=lambda obj: obj, ignore=r"^fc\.", facts=resnet_facts)

SPECS = tuple(
    ModelSpec(f"ssl4eo-{depth}", f"SSL4EO-S12 MoCo {label} encoder (13 L1C bands) + U-Net decoder",
              L1C_BANDS, native_range, partial(build_resnet_unet, depth), {"decoder_channels": None},
              freeze_encoder=True, layouts=(MOCO, TIMM), paper="Wang et al. 2023")
    for depth, label in (("resnet18", "ResNet18"), ("resnet50", "ResNet50"))
)
