"""Convolutional building blocks of GLIMS: the dilated depthwise encoder/decoder stages and the skip gates.

Every submodule name here mirrors the authors' state_dict (see ``shared/spec/glims_state_dict_keys.txt``) so that
their checkpoints load with ``strict=True``. Tensors are (B, C, D, H, W).

Each block has two forwards with the same weights and the same function: the reference one (channel-first, op for
op as the authors' model) and a CPU inference fast path (channels-last kernels of ``fast_cpu``) that the block
takes when its ``fast`` attribute is true (the default), autograd is off, and the input is a float32 or bfloat16
CPU tensor. Fast-path outputs are channels-last in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .fast_cpu import (
    Moments,
    Workspace,
    active_workspace,
    channel_moments,
    channels_last_weight,
    column_max,
    depthwise_conv,
    empty_channels_last,
    fast_path_applies,
    natural_blocks,
    norm_act_block_,
    norm_affine,
    normalize_,
    prelu_slope,
    rows,
    sample_blocks,
    to_channels_last,
    wide_broadcast,
)

__all__ = ["ConvNormAct", "DepthwiseUnit", "DACB", "DMSF", "DMSU", "CSAB", "OutputHead"]

_INSTANCE_NORM_EPS = 1e-5


def _broadcast_shape(block: torch.Tensor) -> tuple[int, ...]:
    """The shape (B', 1, ..., 1, C) in which a (B', C) row of per-sample values broadcasts against ``block``."""
    return (block.shape[0], *([1] * (block.dim() - 2)), block.shape[-1])


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
        self.fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path_applies(self.fast, x):
            return self._forward_fast(x)
        return self.adn(self.conv(x))

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        # The bias is left out: the InstanceNorm that follows removes any per-channel constant.
        x = to_channels_last(x)
        conv = self.conv
        if conv.kernel_size == (1, 1, 1):
            y = empty_channels_last(x, conv.out_channels)
            torch.mm(
                rows(x).reshape(-1, conv.in_channels), self.matrix(x.dtype).t(), out=rows(y).view(-1, conv.out_channels)
            )
        elif isinstance(conv, nn.ConvTranspose3d):
            weight = channels_last_weight(conv.weight, x.dtype)
            padding = conv.padding
            assert not isinstance(padding, str), "transposed convolutions take numeric padding only"
            y = F.conv_transpose3d(x, weight, None, stride=conv.stride, padding=padding)
        else:
            y = F.conv3d(x, channels_last_weight(conv.weight, x.dtype), None, stride=conv.stride, padding=conv.padding)
        y = to_channels_last(y)
        self.norm_act_(rows(y))
        return y

    def matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight of a 1x1x1 convolution as a (C_out, C_in) matrix in ``dtype``."""
        conv = self.conv
        return conv.weight.detach().to(dtype).view(conv.out_channels, conv.in_channels)

    def norm_act_(self, x3: torch.Tensor) -> torch.Tensor:
        """In place on (B, N, C) rows of the convolution output: parameter-free InstanceNorm, then the PReLU."""
        mean, var = channel_moments(x3, active_workspace())
        return normalize_(x3, mean, var, _INSTANCE_NORM_EPS, slope=prelu_slope(self.adn.A))


class DepthwiseUnit(nn.Module):
    """Depthwise 3x3x3 convolution at a given dilation, per-channel GroupNorm (affine) and a 1-slope PReLU."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=True)
        self.norm = nn.GroupNorm(channels, channels)
        self.prelu = nn.PReLU(num_parameters=1, init=0.25)
        self.dilation = dilation
        self.fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path_applies(self.fast, x):
            return self._forward_fast(x)
        return self.prelu(self.norm(self.conv(x)))

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        x = to_channels_last(x)
        out = empty_channels_last(x)
        for _ in self.blocks_into(x, rows(out)):
            pass
        return out

    def blocks_into(self, x: torch.Tensor, dest: torch.Tensor) -> Iterator[tuple[slice, int, int]]:
        """Fast path on channels-last ``x``, written block by block into ``dest`` (contiguous (B, N, C) rows).

        Yields ``(samples, start, stop)`` as soon as ``dest[samples, start:stop]`` holds the unit's output, so that
        a caller can use each block while it is in cache.
        """
        # No bias: the per-channel GroupNorm that follows removes any per-channel constant.
        ws = active_workspace()
        flat, natural = depthwise_conv(x, self.conv.weight, self.dilation, ws)
        norm = self.norm
        scale, shift = norm_affine(*channel_moments(flat, ws), norm.eps, norm.weight, norm.bias, flat.dtype)
        slope = prelu_slope(self.prelu)
        for samples, start, stop, block in natural_blocks(natural):
            affine = scale[samples].view(_broadcast_shape(block)), shift[samples].view(_broadcast_shape(block))
            norm_act_block_(block, dest[samples, start:stop].view(block.shape), *affine, slope)
            yield samples, start, stop


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
        self.fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path_applies(self.fast, x):
            return self._forward_fast(x)
        branches = torch.cat([self.conv_3x3(x), self.conv_3x3_dil(x), self.conv_3x3_dil2(x)], dim=1)
        y = self.conv_1x1_2(self.conv_1x1(branches)) + x
        return self.prelu2(F.instance_norm(y, eps=_INSTANCE_NORM_EPS))

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        # Same function as the reference forward, computed in blocks of rows so that each block is normalised,
        # activated, multiplied and its statistics taken while it is in cache. Conv biases before InstanceNorm
        # are left out (the norm cancels them).
        x = to_channels_last(x)
        ws = active_workspace()
        b, c = x.shape[:2]
        n = x[0, 0].numel()
        hidden, hidden_moments = self._hidden_fast(x, ws)
        scale, shift = norm_affine(*hidden_moments.result(), _INSTANCE_NORM_EPS, dtype=x.dtype)
        slope = prelu_slope(self.conv_1x1.adn.A)
        second = self.conv_1x1_2.matrix(x.dtype).t()
        out = empty_channels_last(x)
        y = rows(out)
        y_moments = Moments(b, c, ws)
        blocks = sample_blocks(b, n, hidden.shape[2])
        for samples, start, stop in blocks:  # whole samples of small layers at once, else one sample's rows
            h = hidden[samples, start:stop]
            norm_act_block_(h, h, scale[samples, None], shift[samples, None], slope)
            torch.mm(h.view(-1, h.shape[2]), second, out=y[samples, start:stop].view(-1, c))
            y_moments.add(samples, y[samples, start:stop])
        scale, shift = norm_affine(*y_moments.result(), _INSTANCE_NORM_EPS, dtype=x.dtype)
        slope = prelu_slope(self.conv_1x1_2.adn.A)
        residual = rows(x)
        sum_moments = Moments(b, c, ws)
        for samples, start, stop in blocks:
            block = y[samples, start:stop]
            norm_act_block_(block, block, scale[samples, None], shift[samples, None], slope)
            block.add_(residual[samples, start:stop])
            sum_moments.add(samples, block)
        normalize_(y, *sum_moments.result(), _INSTANCE_NORM_EPS, slope=prelu_slope(self.prelu2))
        return out

    def _hidden_fast(self, x: torch.Tensor, ws: Workspace) -> tuple[torch.Tensor, Moments]:
        """The first projection of the concatenated branches, before its norm: (B, N, E) rows, and their moments.

        The 3C -> E convolution is the sum of three C -> E GEMMs (the weight's column blocks), one per branch, so
        the concatenation never exists; each branch is normalised and activated block by block on its way in.
        """
        b, c = x.shape[:2]
        n = x[0, 0].numel()
        first = self.conv_1x1.matrix(x.dtype)
        e = first.shape[0]
        hidden = ws.get("dacb.hidden", (b, n, e), x.dtype, x.device)
        branch = ws.get("dacb.branch", (b, n, c), x.dtype, x.device)
        moments = Moments(b, e, ws)
        units = (self.conv_3x3, self.conv_3x3_dil, self.conv_3x3_dil2)
        for k, unit in enumerate(units):
            part = first[:, k * c : (k + 1) * c].t()
            for samples, start, stop in unit.blocks_into(x, branch):
                block, h = branch[samples, start:stop], hidden[samples, start:stop]  # (B', k, C), (B', k, E)
                if k == 0:
                    torch.mm(block.view(-1, c), part, out=h.view(-1, e))
                else:
                    h.view(-1, e).addmm_(block.view(-1, c), part)
                if k == len(units) - 1:
                    moments.add(samples, h)
        return hidden, moments


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
        self.fast = True

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if fast_path_applies(self.fast, x):
            x = self._fuse_fast(self.up(x), skip)
        else:
            x = self.conv1x1(torch.cat([self.up(x), skip], dim=1))
        return self.l2(self.l1(x))

    def _fuse_fast(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # conv1x1(cat([up, skip])) without the concatenation: the weight's two column blocks, two GEMMs (no bias:
        # the InstanceNorm that follows cancels it).
        up, skip = to_channels_last(up), to_channels_last(skip.to(up.dtype))
        weight = self.conv1x1.matrix(up.dtype)
        n_up, n_skip = up.shape[1], skip.shape[1]
        out = empty_channels_last(up, weight.shape[0])
        y = rows(out).view(-1, weight.shape[0])
        torch.mm(rows(up).view(-1, n_up), weight[:, :n_up].t(), out=y)
        y.addmm_(rows(skip).view(-1, n_skip), weight[:, n_up:].t())
        self.conv1x1.norm_act_(rows(out))
        return out


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
        self.fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path_applies(self.fast, x):
            return self._forward_fast(x)
        return (x * self.ChannelGate(x)) * self.SpatialGate.spatial.constant_gate()

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        x = to_channels_last(x)
        x3 = rows(x)
        b, n, c = x3.shape
        ones = active_workspace().ones(n, x.dtype, x.device)
        avg = torch.stack([torch.mv(x3[i].t(), ones) for i in range(b)]).float() / n
        peak = column_max(x3).float()
        mlp = self.ChannelGate.mlp
        gate = torch.sigmoid(mlp(avg) + mlp(peak)).to(x.dtype)[:, None, :]
        out = empty_channels_last(x)
        y = rows(out)
        wide = wide_broadcast(x3, y, gate)
        if wide is not None:
            torch.mul(wide[0], wide[2], out=wide[1])
        else:
            torch.mul(x3, gate, out=y)
        y.mul_(self.SpatialGate.spatial.constant_gate().to(x.dtype))
        return out


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
        self.fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path_applies(self.fast, x):
            x = to_channels_last(x)
            conv = self.conv.conv
            out = empty_channels_last(x, conv.out_channels)
            weight = conv.weight.detach().to(x.dtype).view(conv.out_channels, conv.in_channels)
            bias = conv.bias
            assert bias is not None, "the output head's convolution is built with a bias"
            torch.addmm(
                bias.detach().to(x.dtype),
                rows(x).reshape(-1, conv.in_channels),
                weight.t(),
                out=rows(out).view(-1, conv.out_channels),
            )
            return out
        return self.conv(x)
