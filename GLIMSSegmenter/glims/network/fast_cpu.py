"""Channels-last kernels behind the CPU inference fast path of GLIMS's convolutional stages.

The reference forward (channel-first, one PyTorch op per layer) spends most of its CPU time outside arithmetic:
oneDNN runs dilated depthwise 3D convolutions through a slow generic kernel, channel-first 1x1x1 convolutions and
norms do not vectorise over channels, and every full-resolution temporary (85 MB at 24 x 96^3) is a fresh ``mmap``
whose page faults cost as much as the work done in it. This module computes the same functions differently:

* tensors stay **channels-last** (``torch.channels_last_3d``): a (B, C, D, H, W) tensor whose memory is
  (B, D, H, W, C), so it is also a (B, N, C) matrix of N voxels; 1x1x1 convolutions become one GEMM;
* a **dilated depthwise convolution** becomes an undilated one by space-to-batch: with dilation d, the voxels of
  each phase (z mod d, y mod d) form a sub-grid that a dilation-1 kernel walks exactly as the dilated kernel walks
  the full grid, and the x phase folds into channels for free (d copies of each channel's kernel). oneDNN's fast
  depthwise kernel then runs at every dilation, on the same products and sums as the dilated convolution (the
  results were bit-identical wherever we compared them);
* **instance/group norm statistics** are computed in one sweep of cache-sized chunks (per-chunk cascade sums,
  chunk-centred squares, chunks combined in float64), as accurate as the reference kernels, and the normalisation,
  affine and PReLU are applied in place on contiguous memory (``addcmul`` then ``leaky_relu_``, which is PReLU for
  one slope);
* a **convolution followed by a per-channel norm** (every Conv-IN-PReLU, and the depthwise convolutions before
  their per-channel GroupNorm) runs without its bias: the norm subtracts the per-channel mean, which cancels a
  per-channel constant exactly;
* the **concatenations** (three DACB branches, DMSU [upsampled, skip]) are never built: the following 1x1x1
  convolution is split into column blocks of its weight, one accumulating GEMM per part;
* large scratch buffers live in a ``Workspace`` owned by the model and are reused by every block and every call,
  so steady-state inference touches no fresh memory for them.

Everything here is inference only (no autograd) and CPU only; ``fast_path_applies`` says when a module may use it.
Layouts: "rows" means the (B, N, C) view of a channels-last tensor (N = D*H*W, in memory order).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "CHANNELS_LAST",
    "Workspace",
    "active_workspace",
    "use_workspace",
    "fast_path_applies",
    "to_channels_last",
    "empty_channels_last",
    "rows",
    "channel_moments",
    "normalize_",
    "depthwise_conv",
    "channels_last_weight",
    "prelu_slope",
]

CHANNELS_LAST = torch.channels_last_3d
_FAST_DTYPES = (torch.float32, torch.bfloat16)
# Elements per statistics chunk: 2^22 float32 = 16 MiB, mostly cache-resident between the chunk's passes while
# keeping the number of ops low: each is a parallel region, and on a busy machine every parallel region can wait
# a scheduler time slice for its second thread.
_CHUNK_ELEMENTS = 1 << 22


class Workspace:
    """Named scratch tensors reused across blocks and calls (grown on demand, never shrunk until ``clear``).

    A buffer is identified by a name; asking for a different shape or dtype under the same name replaces it.
    Buffers are uninitialised memory. One workspace must not be used by two threads at once. A buffer made under
    ``torch.inference_mode()`` is an inference tensor, which may not be written outside that mode: it is then
    replaced by an ordinary one.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` (contiguous), kept for the next request under ``name``."""
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device or _stale(buf):
            buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[name] = buf
        return buf[:numel].view(tuple(shape))

    def ones(self, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A cached vector of ones of at least ``length`` (sliced to it)."""
        key = f"ones.{dtype}"
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < length or buf.device != device or _stale(buf):
            buf = torch.ones(length, dtype=dtype, device=device)
            self._buffers[key] = buf
        return buf[:length]

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())

    def clear(self) -> None:
        self._buffers.clear()


def _stale(buf: torch.Tensor) -> bool:
    """An inference tensor cannot be written outside inference mode."""
    return buf.is_inference() and not torch.is_inference_mode_enabled()


_local = threading.local()


def active_workspace() -> Workspace:
    """The workspace of the innermost ``use_workspace`` block on this thread, or a throw-away one."""
    ws = getattr(_local, "workspace", None)
    return ws if ws is not None else Workspace()


class use_workspace:  # noqa: N801 - a context manager that reads like a function
    """Within the block, fast-path kernels on this thread take their scratch buffers from ``workspace``."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._saved: Workspace | None = None

    def __enter__(self) -> Workspace:
        self._saved = getattr(_local, "workspace", None)
        _local.workspace = self.workspace
        return self.workspace

    def __exit__(self, *exc: object) -> None:
        _local.workspace = self._saved


def fast_path_applies(enabled: bool, x: torch.Tensor) -> bool:
    """Whether a module with its fast path ``enabled`` may run it on ``x``: CPU, no autograd, fp32 or bf16."""
    return enabled and x.device.type == "cpu" and not torch.is_grad_enabled() and x.dtype in _FAST_DTYPES


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, D, H, W) with channels-last memory (no copy when it already is)."""
    return x.contiguous(memory_format=CHANNELS_LAST)


def empty_channels_last(like: torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """An uninitialised channels-last tensor shaped like ``like`` (B, C, D, H, W), optionally with other channels."""
    shape = (like.shape[0], like.shape[1] if channels is None else channels, *like.shape[2:])
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=CHANNELS_LAST)


def rows(x: torch.Tensor) -> torch.Tensor:
    """The (B, N, C) view of a channels-last (B, C, D, H, W) tensor; raises if the memory is not channels-last."""
    b, c = x.shape[:2]
    return x.permute(0, 2, 3, 4, 1).view(b, -1, c)


def prelu_slope(prelu: torch.nn.PReLU) -> float:
    """The slope of a single-parameter PReLU as a Python float (PReLU with one slope == leaky ReLU)."""
    if prelu.weight.numel() != 1:
        raise ValueError("the fast path needs single-slope PReLUs")
    return float(prelu.weight.detach().reshape(()))


def channel_moments(x3: torch.Tensor, workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance over N of a (B, N, C) tensor, per sample and channel.

    One sweep over cache-sized chunks: each chunk's column sums (PyTorch's cascade summation, accurate where a plain
    GEMV accumulation is not) and its sum of squares about its own mean, combined in float64 (Chan, Golub and
    LeVeque's pairwise update). ``x3`` may be any strided view whose last dimension is contiguous.

    Returns:
        (mean, var), each float32 of shape (B, 1, C).
    """
    ws = workspace if workspace is not None else active_workspace()
    b, n, c = x3.shape
    per_chunk = max(64, min(n, _CHUNK_ELEMENTS // max(c, 1)))
    starts = range(0, n, per_chunk)
    tmp = ws.get("moments.centred", (per_chunk, c), torch.float32, x3.device)
    sums = torch.empty(b, len(starts), c, dtype=torch.float32, device=x3.device)
    squares = torch.empty_like(sums)
    convert = x3.dtype != torch.float32
    for i in range(b):
        for j, start in enumerate(starts):
            chunk = x3[i, start : start + per_chunk]
            k = chunk.shape[0]
            t = tmp[:k]
            if convert:
                t.copy_(chunk)
                chunk = t
            torch.sum(chunk, 0, out=sums[i, j])
            torch.sub(chunk, sums[i, j], alpha=1.0 / k, out=t)
            t.mul_(t)
            torch.sum(t, 0, out=squares[i, j])
    counts = torch.tensor([min(per_chunk, n - s) for s in starts], dtype=torch.float64, device=x3.device)
    sums64 = sums.double()
    mean = sums64.sum(1) / n
    chunk_means = sums64 / counts[:, None]
    m2 = squares.double().sum(1) + (counts[:, None] * (chunk_means - mean[:, None]) ** 2).sum(1)
    return mean.float()[:, None], (m2 / n).float()[:, None]


def normalize_(
    source: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    slope: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``prelu(((source - mean) / sqrt(var + eps)) * weight + bias)``, written to ``out`` (default: in place).

    Computed as ``source * scale + shift`` (the form PyTorch's own norm kernels use) in one pass, then the PReLU
    with a single slope as an in-place leaky ReLU.

    Args:
        source: any view whose last dimension is the channel axis C and whose first is the sample axis B.
        mean, var: (B, 1, C) float32 statistics (``channel_moments``).
        eps: added to the variance.
        weight, bias: optional per-channel affine (C,).
        slope: PReLU slope; None for no activation.
        out: destination view of ``source``'s shape (may alias ``source``); default ``source``.
    """
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.detach().float()
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.detach().float()
    expand = (source.shape[0],) + (1,) * (source.dim() - 2) + (source.shape[-1],)
    dtype = source.dtype
    dst = source if out is None else out
    torch.addcmul(shift.to(dtype).reshape(expand), source, scale.to(dtype).reshape(expand), out=dst)
    if slope is not None:
        F.leaky_relu_(dst, slope)
    return dst


def channels_last_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A convolution weight in ``dtype`` and channels-last memory, so that oneDNN keeps channels-last outputs."""
    return weight.detach().to(dtype).contiguous(memory_format=CHANNELS_LAST)


def depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, dilation: int, workspace: Workspace | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise 3x3x3 convolution without bias, zero padding = dilation, of a channels-last (B, C, D, H, W) tensor.

    Returns:
        (rows, natural): ``rows`` is a contiguous (B, N, C) tensor of the result in some voxel order (statistics and
        element-wise work happen there); ``natural`` a view of the same memory in the natural voxel order, of shape
        (B, D, H, W, C), or (B, D/d, d, H/d, d, W, C) after space-to-batch: ``dest.view(natural.shape)`` of a
        contiguous (B, D, H, W, C) ``dest`` matches it element for element.
    """
    b, c, d_, h, w = x.shape
    weight = weight.detach().to(x.dtype)
    k = dilation
    if k == 1 or d_ % k or h % k or w % k:
        # Dilation 1 (oneDNN's fast depthwise kernel), or sizes the phases do not divide (small test
        # configurations: oneDNN's generic dilated kernel, same result).
        out = to_channels_last(F.conv3d(x, weight, None, padding=k, dilation=k, groups=c))
        return rows(out), out.permute(0, 2, 3, 4, 1)
    n0, n1, n2 = d_ // k, h // k, w // k
    # Gather the (z mod k, y mod k) phases into the batch axis; the x phase is folded into the channels.
    ws = workspace if workspace is not None else active_workspace()
    packed = ws.get("depthwise.phases", (b, k, k, n0, n1, w * c), x.dtype, x.device)
    packed.copy_(x.permute(0, 2, 3, 4, 1).reshape(b, n0, k, n1, k, w * c).permute(0, 2, 4, 1, 3, 5))
    grid = packed.view(b * k * k, n0, n1, n2, k * c).permute(0, 4, 1, 2, 3)
    out = to_channels_last(F.conv3d(grid, weight.repeat(k, 1, 1, 1, 1), None, padding=1, groups=k * c))
    flat = out.permute(0, 2, 3, 4, 1).reshape(b, k, k, n0, n1, w, c)
    natural = flat.permute(0, 3, 1, 4, 2, 5, 6)  # (B, n0, kz, n1, ky, W, C)
    return flat.view(b, -1, c), natural
