"""3D shifted-window transformer stages of GLIMS, written to match the reference model's weights and outputs.

The reference builds its transformer stages from MONAI's 3D Swin implementation as it was in MONAI 1.3/1.4, with
PReLU in the MLPs. Two behaviours of that implementation are baked into the published weights and reproduced here
on purpose (newer MONAI releases changed the first one):

* patch merging concatenates the 2x2x2 sub-voxels at offsets (d, h, w) = 000, 100, 010, 001, 101, 010, 001, 111:
  two offsets repeat and two never appear;
* when a window is smaller than 7^3 (stages at 6^3 and 3^3), the relative position bias is read from the top-left
  n x n corner of the 7^3 index table instead of the true offsets.

Layouts: stage inputs/outputs are channel-first (B, C, D, H, W); blocks work channel-last (B, D, H, W, C).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conv_blocks import ConvNormAct

__all__ = ["SwinStage", "SwinUpStage", "SwinBlock", "WindowAttention", "relative_position_index"]

_MASK_VALUE = -100.0


def relative_position_index(window: Sequence[int]) -> torch.Tensor:
    """Index into the relative-position bias table for every (query, key) pair of one window, shape (N, N)."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    offsets = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0)
    wd, wh, ww = window
    shifted = offsets + torch.tensor([wd - 1, wh - 1, ww - 1])
    strides = torch.tensor([(2 * wh - 1) * (2 * ww - 1), 2 * ww - 1, 1])
    return (shifted * strides).sum(-1)


def clamp_window(size: Sequence[int], window: int, shift: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Window and shift per axis: an axis no larger than the window gets the whole axis and no shift."""
    win = tuple(s if s <= window else window for s in size)
    sft = tuple(0 if s <= window else shift for s in size)
    return win, sft


def partition_windows(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(B, D, H, W, C) with sizes divisible by ``window`` -> (B * nW, prod(window), C)."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, c)


def merge_windows(windows: torch.Tensor, window: Sequence[int], b: int, d: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``partition_windows``: (B * nW, prod(window), C) -> (B, D, H, W, C)."""
    wd, wh, ww = window
    x = windows.view(b, d // wd, h // wh, w // ww, wd, wh, ww, -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


def shifted_window_mask(padded: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> torch.Tensor:
    """Additive attention mask (nW, N, N) keeping tokens of different regions of a rolled volume apart."""
    regions = torch.zeros((1, *padded, 1))
    label = 0
    bands = [(slice(0, -w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift, strict=False)]
    for sd in bands[0]:
        for sh in bands[1]:
            for sw in bands[2]:
                regions[:, sd, sh, sw, :] = label
                label += 1
    ids = partition_windows(regions, window).squeeze(-1)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.where(diff != 0, torch.tensor(_MASK_VALUE), torch.tensor(0.0))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative-position bias (window 7 nominal)."""

    relative_position_index: torch.Tensor
    """Registered buffer: for each pair of voxels in a window, its row in the bias table."""

    def __init__(self, dim: int, num_heads: int, window: int = 7) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 3, num_heads))
        self.register_buffer("relative_position_index", relative_position_index((window,) * 3), persistent=True)
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        # Reference behaviour: for windows smaller than 7^3 the bias comes from the index table's top-left corner.
        index = self.relative_position_index[:n, :n].reshape(-1)
        bias = self.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask.to(attn.dtype)[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1).to(v.dtype)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class _Mlp(nn.Module):
    """Linear -> PReLU (one slope) -> Linear; names match the reference (linear1, fn, linear2)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.fn = nn.PReLU(num_parameters=1, init=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.fn(self.linear1(x)))


class SwinBlock(nn.Module):
    """Pre-norm transformer block: x + WindowAttention(LN(x)), then x + MLP(LN(x)); channel-last input."""

    def __init__(self, dim: int, num_heads: int, window: int = 7, shift: int = 0, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def _attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, d, h, w, c = x.shape
        win, sft = clamp_window((d, h, w), self.window, self.shift)
        x = self.norm1(x)
        pads = [(wi - s % wi) % wi for s, wi in zip((d, h, w), win, strict=False)]
        # Zero padding at the far end, after the norm: padded tokens take part in attention as in the reference.
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        _, dp, hp, wp, _ = x.shape
        shifted = any(s > 0 for s in sft)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in sft), dims=(1, 2, 3))
        out = self.attn(partition_windows(x, win), mask if shifted else None)
        x = merge_windows(out, win, b, dp, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=sft, dims=(1, 2, 3))
        return x[:, :d, :h, :w, :]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self._attend(x, mask)
        return x + self.mlp(self.norm2(x))


class _SwinLayer(nn.Module):
    """A learned absolute position embedding followed by alternating unshifted/shifted blocks."""

    def __init__(self, dim: int, depth: int, num_heads: int, tokens: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.position_embeddings = nn.Parameter(torch.zeros(1, dim, tokens))
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window=window, shift=0 if i % 2 == 0 else window // 2) for i in range(depth)
        )
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)

    def add_position(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        if d * h * w != self.position_embeddings.shape[-1]:
            raise ValueError(
                f"transformer stage expects {self.position_embeddings.shape[-1]} tokens, got {d}x{h}x{w}; "
                "the network input size must equal its img_size"
            )
        return (x.flatten(2) + self.position_embeddings).view(b, c, d, h, w)

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Channel-last in and out."""
        _, d, h, w, _ = x.shape
        win, sft = clamp_window((d, h, w), self.window, self.window // 2)
        mask = None
        if any(s > 0 for s in sft):
            padded = [-(-s // wi) * wi for s, wi in zip((d, h, w), win, strict=False)]
            mask = shifted_window_mask(padded, win, sft).to(x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x


class PatchMerging(nn.Module):
    """2x downsampling of channel-last tokens: 8 sub-voxel slices (reference order, see module doc), LN, Linear."""

    # (d, h, w) offsets in the reference's concatenation order; 010 and 001 appear twice, 011 and 110 never.
    OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(8 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        parts = [x[:, od::2, oh::2, ow::2, :] for od, oh, ow in self.OFFSETS]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class PatchExpanding(nn.Module):
    """2x upsampling of channel-last tokens: Linear C -> 4C (= 8 sub-voxels x C/2), rearranged, then LN(C/2).

    The 8 sub-voxels of each token are laid out (p1, p2, p3) with p1 the H offset, p2 the W offset, p3 the D offset.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.expand = nn.Linear(dim, 4 * dim, bias=False)
        self.norm_layer = nn.LayerNorm(dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        x = self.expand(x).view(b, d, h, w, 2, 2, 2, c // 2)
        x = x.permute(0, 1, 6, 2, 4, 3, 5, 7).reshape(b, 2 * d, 2 * h, 2 * w, c // 2)
        return self.norm_layer(x)


def _channel_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free LayerNorm over the channels of a channel-last tensor."""
    return F.layer_norm(x, [x.shape[-1]])


class _EncoderLayer(_SwinLayer):
    def __init__(self, dim: int, depth: int, num_heads: int, tokens: int, window: int, downsample: bool) -> None:
        super().__init__(dim, depth, num_heads, tokens, window)
        self.downsample = PatchMerging(dim) if downsample else None


class SwinStage(nn.Module):
    """Transformer stage on a channel-first grid (reference ``SwinTranSingleScale``).

    Adds the position embedding, runs the blocks, and returns the result LayerNorm-ed over channels (no affine).
    With ``downsample`` it returns ``(merged, skip)``: the patch-merged grid (2C, half size) and the full-size output,
    both normalised.

    Args:
        dim: channels C.
        depth: number of blocks (alternately unshifted and shifted).
        num_heads: attention heads.
        grid: spatial size (D, H, W) of the input; sizes the position embedding.
        window: nominal attention window. Defaults to 7.
        downsample: also return a patch-merged output. Defaults to False.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, grid: Sequence[int], window: int = 7, downsample: bool = False
    ) -> None:
        super().__init__()
        tokens = int(torch.tensor(list(grid)).prod())
        self.layer = _EncoderLayer(dim, depth, num_heads, tokens, window, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.layer.add_position(x).permute(0, 2, 3, 4, 1)
        x = self.layer.run_blocks(x)
        skip = _channel_layer_norm(x).permute(0, 4, 1, 2, 3)
        if self.layer.downsample is None:
            return skip
        merged = _channel_layer_norm(self.layer.downsample(x)).permute(0, 4, 1, 2, 3)
        return merged, skip


class _DecoderLayer(_SwinLayer):
    def __init__(self, dim: int, depth: int, num_heads: int, tokens: int, window: int) -> None:
        super().__init__(dim, depth, num_heads, tokens, window)
        self.upsample = PatchExpanding(2 * dim)
        self.conv1x1 = ConvNormAct(2 * dim, dim, kernel_size=1)


class SwinUpStage(nn.Module):
    """Upsampling transformer stage (reference ``SwinTranSingleScaleUp``, used once as ``t4_post``).

    Patch-expands the (B, 2C, n, n, n) input to (B, C, 2n, 2n, 2n), adds the position embedding, concatenates the skip
    [expanded, skip], fuses with a 1x1x1 conv-norm-PReLU to C channels and runs the blocks. Unlike ``SwinStage`` the
    output is **not** LayerNorm-ed (reference behaviour).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, grid: Sequence[int], window: int = 7) -> None:
        super().__init__()
        tokens = int(torch.tensor(list(grid)).prod())
        self.layer = _DecoderLayer(dim, depth, num_heads, tokens, window)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.layer.upsample(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        x = self.layer.add_position(x)
        x = self.layer.conv1x1(torch.cat([x, skip], dim=1))
        x = self.layer.run_blocks(x.permute(0, 2, 3, 4, 1))
        return x.permute(0, 4, 1, 2, 3).contiguous()
