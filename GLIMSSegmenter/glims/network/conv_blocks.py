"""Convolutional building blocks of GLIMS: the dilated depthwise encoder/decoder stages and the skip gates.

Every submodule name here mirrors the authors' state_dict (see ``shared/spec/glims_state_dict_keys.txt``) so that
their checkpoints load with ``strict=True``. Layouts are channel-first: (B, C, D, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvNormAct", "DepthwiseUnit", "DACB", "DMSF", "DMSU", "CSAB", "OutputHead"]

_INSTANCE_NORM_EPS = 1e-5


class _ActOnly(nn.Module):
    """Holds the activation under the name ``A`` (the attribute layout MONAI's norm/dropout/act wrapper uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.A = nn.PReLU(num_parameters=1, init=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.instance_norm(x, eps=_INSTANCE_NORM_EPS)
        return self.A(x)


class ConvNormAct(nn.Module):
    """Convolution (or transposed convolution) with bias, then parameter-free InstanceNorm, then a 1-slope PReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: cubic kernel size.
        stride: cubic stride. Defaults to 1.
        transposed: use a transposed convolution (kernel 2 / stride 2 doubles the grid). Defaults to False.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, transposed: bool = False
    ) -> None:
        super().__init__()
        conv_cls = nn.ConvTranspose3d if transposed else nn.Conv3d
        padding = 0 if kernel_size == stride or kernel_size == 1 else (kernel_size - 1) // 2
        self.conv = conv_cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=True)
        self.adn = _ActOnly()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adn(self.conv(x))


class DepthwiseUnit(nn.Module):
    """Depthwise 3x3x3 convolution at a given dilation, per-channel GroupNorm (affine) and a 1-slope PReLU."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=True
        )
        self.norm = nn.GroupNorm(channels, channels)
        self.prelu = nn.PReLU(num_parameters=1, init=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.norm(self.conv(x)))


class DACB(nn.Module):
    """Dilated aggregation block: three depthwise branches (dilation 1, 2, 3), two 1x1x1 projections, residual.

    Output = PReLU2(InstanceNorm(x + P2(P1(cat(b1(x), b2(x), b3(x)))))). The block keeps ``channels`` channels.

    Args:
        channels: channels in and out.
        expanded: channels between the two 1x1x1 projections.
    """

    def __init__(self, channels: int, expanded: int) -> None:
        super().__init__()
        self.conv_3x3 = DepthwiseUnit(channels, dilation=1)
        self.conv_3x3_dil = DepthwiseUnit(channels, dilation=2)
        self.conv_3x3_dil2 = DepthwiseUnit(channels, dilation=3)
        self.conv_1x1 = ConvNormAct(3 * channels, expanded, kernel_size=1)
        self.conv_1x1_2 = ConvNormAct(expanded, channels, kernel_size=1)
        # Present in the authors' model and state_dict but never called by their forward.
        self.prelu = nn.PReLU(num_parameters=1, init=0.25)
        self.prelu2 = nn.PReLU(num_parameters=1, init=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = torch.cat([self.conv_3x3(x), self.conv_3x3_dil(x), self.conv_3x3_dil2(x)], dim=1)
        y = self.conv_1x1_2(self.conv_1x1(branches)) + x
        return self.prelu2(F.instance_norm(y, eps=_INSTANCE_NORM_EPS))


class _Downsample(nn.Module):
    """Holds the strided convolution under the authors' name ``conv_3x3`` (it is a 2x2x2, stride-2 convolution)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_3x3 = ConvNormAct(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_3x3(x)


class DMSF(nn.Module):
    """Encoder stage: two DACBs (their output is the skip), then a stride-2 convolution doubling the channels.

    Returns:
        (downsampled, skip): (B, 2C, D/2, H/2, W/2) and (B, C, D, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.l1 = DACB(channels, 2 * channels)
        self.l2 = DACB(channels, 2 * channels)
        self.ds = _Downsample(channels, 2 * channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.l2(self.l1(x))
        return self.ds(skip), skip


class _Upsample(nn.Module):
    """Holds the transposed convolution under the authors' name ``convT``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convT = ConvNormAct(in_channels, out_channels, kernel_size=2, stride=2, transposed=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convT(x)


class DMSU(nn.Module):
    """Decoder stage: transposed convolution (2C -> C, x2 grid), concatenation [up, skip], 1x1x1 fuse, two DACBs."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = _Upsample(in_channels, out_channels)
        self.l1 = DACB(out_channels, 2 * out_channels)
        self.l2 = DACB(out_channels, 2 * out_channels)
        self.conv1x1 = ConvNormAct(2 * out_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.conv1x1(torch.cat([self.up(x), skip], dim=1))
        return self.l2(self.l1(x))


class _ChannelGate(nn.Module):
    """Shared MLP on global average and max pooling; sigmoid of their sum gives one weight per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = channels // 2
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool3d(x, 1))
        peak = self.mlp(F.adaptive_max_pool3d(x, 1))
        return torch.sigmoid(avg + peak)[:, :, None, None, None]


class _SpatialConv(nn.Module):
    """7x7x7 conv (2 -> 1, no bias), LayerNorm over the size-1 channel axis (affine), PReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 1, 7, padding=3, bias=False)
        self.norm = nn.LayerNorm(1)
        self.prelu = nn.PReLU(num_parameters=1, init=0.25)

    def constant_gate(self) -> torch.Tensor:
        """The gate value at every voxel, a 0-d tensor.

        The authors normalise over a channel axis of size 1: each value minus its own mean is exactly 0, so the
        LayerNorm output is its bias everywhere whatever the input (for finite inputs), and the 7x7x7 convolution
        never reaches the output. Computing the constant directly gives bit-identical results without that
        convolution (about 0.7 GMAC per 96^3 window). ``literal_gate`` keeps the full computation for tests.
        """
        return torch.sigmoid(self.prelu(self.norm.bias.reshape(1))).reshape(())

    def literal_gate(self, x: torch.Tensor) -> torch.Tensor:
        """The gate computed the long way, as the authors' forward does: (B, 1, D, H, W)."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        y = self.conv(pooled).permute(0, 2, 3, 4, 1)
        y = self.prelu(self.norm(y)).permute(0, 4, 1, 2, 3)
        return torch.sigmoid(y)


class _SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()


class CSAB(nn.Module):
    """Channel and spatial attention on an encoder skip: (x * channel_gate(x)) * spatial_gate.

    The spatial gate is degenerate in the reference model (see ``_SpatialConv.constant_gate``); its parameters are
    kept so that checkpoints load unchanged.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = _ChannelGate(channels)
        self.SpatialGate = _SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.ChannelGate(x)) * self.SpatialGate.spatial.constant_gate()


class _PlainConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class OutputHead(nn.Module):
    """1x1x1 convolution to class logits, no norm, no activation (the authors' ``out1`` ... ``out4``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _PlainConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
