"""The original U-Net (Ronneberger et al. 2015) and the U-Net decoder shared with the ResNets.

Blocks are the common padded variant: every 3x3 convolution keeps the size and is followed by
batch norm and ReLU, so the output has the input's size for any H, W (odd sizes are handled
by padding the up-sampled map to its skip). With ``width=64`` the channels are the published
64-128-256-512-1024 and the network has about 31 M parameters.

Registry entry (``SPECS``): ``unet``, any band set (default the 13 L1C bands), normalised by
``[mean - 2 std, mean + 2 std]`` of the field guide's L2A statistics (true-colour R, G, B and
B10 map ``[0, 1]``; training may replace these with statistics of its own scenes), trained from
scratch with the published learning rate and batch size; no pretrained weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sandwatch.bands import L1C_BANDS
from sandwatch.models.base import SegmentationModel
from sandwatch.models.spec import ModelSpec, channelwise_normalization


class DoubleConv(nn.Sequential):
    """(3x3 conv, BN, ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Transposed conv 2x2 stride 2, concatenate the skip, then :class:`DoubleConv`."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dy or dx:  # odd input sizes: pad (or crop) the up-sampled map to the skip
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        if torch.is_grad_enabled() and x.requires_grad and not skip.requires_grad:
            return self._forward_frozen_skip(x, skip)
        return self.conv(torch.cat([skip, x], dim=1))

    def _forward_frozen_skip(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The same block when the skip needs no gradient (frozen encoder, cached features).

        A convolution of ``cat([skip, x])`` equals the sum of convolutions of ``skip`` and
        ``x`` with the two halves of its weight. Split this way, backward computes no gradient
        for the skip's channels, which the concatenated form does and then throws away: with
        a frozen ResNet50 that is most of the first convolution's backward pass. Same
        parameters, same state dict; equal to the concatenated form up to float rounding.
        """
        conv = self.conv[0]
        cs = skip.shape[1]
        w = conv.weight
        y = F.conv2d(skip, w[:, :cs], None, conv.stride, conv.padding) + \
            F.conv2d(x, w[:, cs:], None, conv.stride, conv.padding)
        for layer in list(self.conv)[1:]:
            y = layer(y)
        return y


class UNetDecoder(nn.Module):
    """U-Net decoder over a list of features, finest first, deepest last.

    ``skip_channels`` are the channels of the features (``len = levels + 1``, the last one is
    the bottleneck); ``decoder_channels[i]`` is the output of the up block that lands on level
    ``i`` (default: that level's skip channels, the classic U-Net). A 1x1 head gives one
    logit channel; the result is resized bilinearly to the input size when the finest feature
    is not at full resolution.
    """

    def __init__(self, skip_channels: Sequence[int], decoder_channels: Sequence[int] | None = None):
        super().__init__()
        skip_channels = list(skip_channels)
        levels = len(skip_channels) - 1
        decoder_channels = list(decoder_channels) if decoder_channels else skip_channels[:levels]
        if len(decoder_channels) != levels:
            raise ValueError(f"decoder_channels needs {levels} values, got {len(decoder_channels)}")
        blocks = []
        in_ch = skip_channels[-1]
        for level in reversed(range(levels)):
            blocks.append(UpBlock(in_ch, skip_channels[level], decoder_channels[level]))
            in_ch = decoder_channels[level]
        self.ups = nn.ModuleList(blocks)
        self.head = nn.Conv2d(in_ch, 1, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor], input_size: Sequence[int]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.ups, reversed(features[:-1])):
            x = block(x, skip)
        x = self.head(x)
        if tuple(x.shape[-2:]) != tuple(input_size):
            x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False)
        return x


class UNetEncoder(nn.Module):
    """Contracting path. Output: ``[x1, x2, x3, x4, x5]`` at strides 1, 2, 4, 8, 16 with
    ``width x (1, 2, 4, 8, 16)`` channels (x5 is the bottleneck)."""

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        w = [width * 2**i for i in range(5)]
        self.channels = w
        self.inc = DoubleConv(in_channels, w[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(w[i], w[i + 1])) for i in range(4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.inc(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return feats


class UNet(SegmentationModel):
    """Original U-Net. ``width`` = channels of the first level (64 published; 8 or 16 for CPU demos).

    ``encoder(x)`` returns the five feature maps of :class:`UNetEncoder`.
    """

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError("UNet needs in_channels >= 1 and width >= 1")
        self.encoder = UNetEncoder(in_channels, width)
        self.decoder = UNetDecoder(self.encoder.channels)

    def decoder_forward(self, features, input_size):
        return self.decoder(features, input_size)


def build_unet(n_bands: int, width: int = 64) -> UNet:
    return UNet(n_bands, width=int(width))


SPECS = (
    ModelSpec("unet", "original U-Net (64-128-256-512-1024), trained from scratch; any band set",
              L1C_BANDS, channelwise_normalization, build_unet, {"width": 64}, paper="Ronneberger et al. 2015"),
)
