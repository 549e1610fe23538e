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
* **instance/group norm statistics** are accumulated over cache-sized blocks of rows (``Moments``: per-block cascade
  sums, block-centred squares, blocks combined in float64), as accurate as the reference kernels; a block is read as
  rows of several voxels (384 values) so that both threads share its column sums. The normalisation, affine and
  PReLU are applied in place block by block (``addcmul`` then ``leaky_relu_``, which is PReLU for one slope), on
  rows of several voxels where the block allows it (``wide_broadcast``: 2-4x faster than 12-value rows);
* the **DACB** works block by block: each block of a branch is normalised, activated and multiplied into the hidden
  layer, and the next norm's statistics are taken from each block while it is in cache, instead of separate sweeps
  over whole 85-170 MB tensors;
* **large depthwise convolution outputs go into a reused workspace buffer** where PyTorch allows it (oneDNN's
  in-place convolution + add into a zeroed buffer, probed once per dtype and bit-identical to ``F.conv3d``), so
  they are not fresh memory that every call page-faults in again (small ones, which the allocator reuses, are
  faster from the plain convolution);
* **small layers are processed a batch at a time**: where one sample's rows fit in a block, statistics,
  normalisation and the DACB's GEMMs run on whole samples at once (``sample_blocks``), so a forward pass of a
  batch of 32^3 windows is a few thousand operations rather than tens of thousands;
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
from collections.abc import Iterator, Sequence

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
    "Moments",
    "channel_moments",
    "column_max",
    "row_blocks",
    "sample_blocks",
    "norm_affine",
    "norm_act_block_",
    "wide_broadcast",
    "normalize_",
    "depthwise_conv",
    "grouped_conv",
    "natural_blocks",
    "channels_last_weight",
    "prelu_slope",
]

CHANNELS_LAST = torch.channels_last_3d
_FAST_DTYPES = (torch.float32, torch.bfloat16)
# Elements per statistics chunk: 2^22 float32 = 16 MiB, mostly cache-resident between the chunk's passes while
# keeping the number of ops low: each is a parallel region, and on a busy machine every parallel region can wait
# a scheduler time slice for its second thread.
_CHUNK_ELEMENTS = 1 << 22
# Columns of the statistics' view of a chunk: whole AVX-512 vectors, and enough of them to split between threads.
_WIDE_ROW = 384
# Values per block of the fused passes (normalise, activate, multiply, accumulate statistics while in cache):
# 2^21 float32 = 8 MiB, so that a block of a layer's input, its output and the statistics' scratch stay in L3
# (2^20 and 2^22 measured no better on two cores).
_BLOCK_ELEMENTS = 1 << 21


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


class Moments:
    """Per-channel mean and biased variance of (B, N, C) data that arrives in blocks of rows, in any order.

    Each block's mean (its column sums, PyTorch's cascade summation, accurate where a plain GEMV accumulation is not)
    and its sum of squares about that mean are kept; ``result`` combines them in float64 (Chan, Golub and LeVeque's
    pairwise update). Feeding a block right after it is written, while it is still in cache, saves a sweep over
    memory. A contiguous block is read as rows of several voxels (``_wide_rows``) so that both threads share the
    column sums. A block may hold the same rows of several samples (``(B', k, C)``, see ``sample_blocks``): small
    layers then cost a few operations per block instead of a few per sample.

    Args:
        batch, channels: B and C.
        workspace: where the per-block scratch buffer comes from (shared by all accumulators: used only inside
            ``add``).
    """

    def __init__(self, batch: int, channels: int, workspace: Workspace | None = None) -> None:
        self.batch = batch
        self.channels = channels
        self._workspace = workspace if workspace is not None else active_workspace()
        # Per block: (samples, rows, shift (B', C), remainder or None, squares), float32; the last two
        # (B', fold * C) with the wide rows' fold of voxels.
        self._blocks: list[tuple[slice, int, torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        self._counts = [0] * batch

    def add(self, sample: int | slice, block: torch.Tensor) -> None:
        """Account for ``block``: rows (k, C) of sample ``sample``, or rows (B', k, C) of the samples ``sample``
        (a slice); its last dimension must be contiguous."""
        samples = slice(sample, sample + 1) if isinstance(sample, int) else sample
        if block.dim() == 2:
            block = block.unsqueeze(0)
        m, k, c = block.shape
        wide, group = _wide_rows(block)
        t = self._workspace.get("moments.centred", (m * k * c,), torch.float32, block.device).view(wide.shape)
        source = wide
        if block.dtype != torch.float32:
            t.copy_(source)
            wide = t
        # Centre on the block's float32 mean (its cascade sum / k), square, sum: Chan et al.'s pairwise form. Where
        # |mean| >> std (over 8 std) the rounding of that mean matters, so the centred values are also summed:
        # the mean the pairs combine is then the shift plus that small, exactly recoverable remainder.
        shift = torch.sum(torch.sum(wide, 1).view(m, group, c), 1).mul_(1.0 / k)
        repeated = shift.repeat(1, group).unsqueeze(1)
        torch.sub(wide, repeated, out=t)
        t.mul_(t)
        squares = torch.sum(t, 1)  # (B', group * C): folded to C channels in float64 in ``result``, as are remainders
        remainder = None
        if bool((shift * shift * k > 64.0 * squares.view(m, group, c).sum(1)).any()):
            t.copy_(source)  # converts, where the block is not float32
            t.sub_(repeated)
            remainder = torch.sum(t, 1)
        self._blocks.append((samples, k, shift, remainder, squares))
        for i in range(*samples.indices(self.batch)):
            self._counts[i] += k

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, var), each float32 of shape (B, 1, C), over all rows added so far for each sample."""
        if not all(self._counts):
            raise ValueError("no rows were added for a sample")
        b, c, j = self.batch, self.channels, len(self._blocks)
        if j == 1 and self._blocks[0][3] is None:  # one block of every sample, centred on its own mean: no update
            shift, squares = self._blocks[0][2], self._blocks[0][4]
            var = squares.double().view(b, -1, c).sum(1).div_(self._counts[0])
            return shift.unsqueeze(1), var.float().unsqueeze(1)
        # (J, B, C) float64 per block and sample; zero where a block does not hold the sample (it then adds nothing).
        k = torch.zeros(j, b, 1, dtype=torch.float64)
        shift = torch.zeros(j, b, c, dtype=torch.float64)
        squares = torch.zeros(j, b, c, dtype=torch.float64)
        about = torch.zeros(j, b, c, dtype=torch.float64)  # each block's sum about its shift: 0 where not measured
        for index, (samples, rows_, block_shift, remainder, block_squares) in enumerate(self._blocks):
            k[index, samples] = rows_
            m = block_shift.shape[0]
            shift[index, samples] = block_shift
            squares[index, samples] = block_squares.double().view(m, -1, c).sum(1)
            if remainder is not None:
                about[index, samples] = remainder.double().view(m, -1, c).sum(1)
        n = torch.tensor(self._counts, dtype=torch.float64)[:, None]
        mean = (k * shift + about).sum(0) / n
        offset = shift - mean
        m2 = squares.sum(0) + (2 * offset * about + k * offset**2).sum(0)
        return mean.float()[:, None], (m2 / n).float()[:, None]


def row_blocks(n: int, channels: int, elements: int = _BLOCK_ELEMENTS) -> list[tuple[int, int]]:
    """[start, stop) ranges covering N rows of ``channels`` values, about ``elements`` values per block.

    Blocks hold a multiple of 128 rows where they can, so that ``_wide_rows`` can fold them (128 is a multiple of
    the fold for every channel count from 3 up) and every block but the last starts on a whole wide row.
    """
    per_block = max(1, elements // max(channels, 1))
    if per_block > 128:
        per_block -= per_block % 128
    return [(start, min(n, start + per_block)) for start in range(0, n, per_block)]


def sample_blocks(b: int, n: int, channels: int, elements: int = _BLOCK_ELEMENTS) -> list[tuple[slice, int, int]]:
    """Blocks of B samples' N rows of ``channels`` values, as ``(samples, start, stop)``: ``x3[samples, start:stop]``.

    Where one sample's rows fit in ``elements`` values, a block is all rows of as many whole samples as fit (one
    operation then covers the batch of a small layer); otherwise it is one sample's ``row_blocks``.
    """
    per_sample = max(1, n * channels)
    if per_sample <= elements:
        group = elements // per_sample
        return [(slice(i, min(b, i + group)), 0, n) for i in range(0, b, group)]
    return [(slice(i, i + 1), start, stop) for i in range(b) for start, stop in row_blocks(n, channels, elements)]


def channel_moments(x3: torch.Tensor, workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance over N of a (B, N, C) tensor, per sample and channel (``Moments`` over its blocks).

    ``x3`` may be any strided view whose last dimension is contiguous.

    Returns:
        (mean, var), each float32 of shape (B, 1, C).
    """
    b, n, c = x3.shape
    moments = Moments(b, c, workspace)
    for samples, start, stop in sample_blocks(b, n, c, _CHUNK_ELEMENTS):
        moments.add(samples, x3[samples, start:stop])
    return moments.result()


def _wide_rows(block: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A (..., k, C) block as rows of ``fold`` voxels, (..., k / fold, fold * C), and the fold used (1 where it
    cannot be).

    ``fold`` is as many voxels as fit in ``_WIDE_ROW`` values.

    Column reductions over such rows run over whole vectors that two threads can share, where a (k, C) column
    reduction with C = 24 runs on one thread; the ``fold`` partial results per channel are then combined.
    """
    *lead, k, c = block.shape
    fold = max(1, _WIDE_ROW // max(c, 1))
    if fold > 1 and k % fold == 0 and block.is_contiguous():
        return block.view(*lead, k // fold, fold * c), fold
    return block, 1


def column_max(x3: torch.Tensor) -> torch.Tensor:
    """Maximum over N of a (B, N, C) tensor, per sample and channel: (B, C), exact."""
    b, n, c = x3.shape
    wide, group = _wide_rows(x3)
    return wide.amax(1).view(b, group, c).amax(1)


def norm_affine(
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, each (B, C) in ``dtype``, with ``norm(x) * weight + bias == x * scale + shift``.

    The form PyTorch's own norm kernels use. ``mean`` and ``var`` are (B, 1, C) float32 (``Moments``).
    """
    scale = torch.rsqrt(var[:, 0] + eps)
    if weight is not None:
        scale = scale * weight.detach().float()
    shift = -mean[:, 0] * scale
    if bias is not None:
        shift = shift + bias.detach().float()
    return scale.to(dtype), shift.to(dtype)


def norm_act_block_(
    source: torch.Tensor, out: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, slope: float | None
) -> torch.Tensor:
    """``out = prelu(source * scale + shift)`` for a block (channels last; ``out`` may be ``source``).

    ``scale`` and ``shift`` broadcast against the block: (C,) (a row of ``norm_affine``'s results) for one sample's
    (k, C) rows, (B', 1, C) for several samples' (B', k, C) rows; the PReLU has a single slope (an
    in-place leaky ReLU); None for no activation. ``out`` has ``source``'s shape and may be a strided view.
    """
    wide = wide_broadcast(source, out, scale, shift)
    if wide is not None:
        source, target, scale, shift = wide
        torch.addcmul(shift, source, scale, out=target)
    else:
        torch.addcmul(shift, source, scale, out=out)
    if slope is not None:
        F.leaky_relu_(out, slope)
    return out


def wide_broadcast(
    source: torch.Tensor, out: torch.Tensor, *per_channel: torch.Tensor
) -> tuple[torch.Tensor, ...] | None:
    """``source`` and ``out`` as wide rows (``_wide_rows``), with the per-channel values repeated to match, for an
    element-wise op that broadcasts ``per_channel`` over them; None where they cannot be viewed so.

    A broadcast over rows of C = 12 or 24 values runs one short vector per row; over rows of 384 values it runs
    whole vectors (2-4x faster on a 32^3 layer), and each element gets the same value and operation, so the result
    is the same bit for bit. ``source`` and ``out`` (which may be ``source``) must be contiguous and of the same
    shape; each of ``per_channel`` is (C,) or (B', 1, ..., 1, C) with B' = ``source.shape[0]``.

    Returns:
        ``(source, out, *per_channel)`` as (L, k / fold, fold * C) and (L, 1, fold * C) views and repeats.
    """
    c = source.shape[-1]
    fold = max(1, _WIDE_ROW // max(c, 1))
    if fold < 2 or out.shape != source.shape or not (source.is_contiguous() and out.is_contiguous()):
        return None
    lead = 1
    for values in per_channel:
        if values.dim() not in (1, source.dim()) or values.shape[-1] != c:
            return None
        if any(size != 1 for size in values.shape[1:-1]):
            return None
        if values.dim() > 1:
            if values.shape[0] != source.shape[0]:
                return None
            lead = values.shape[0]
    count = source.numel() // (lead * c)
    if count % fold:
        return None
    shape = (lead, count // fold, fold * c)
    repeated = tuple(values.reshape(-1, 1, c).expand(lead, 1, c).repeat(1, 1, fold) for values in per_channel)
    return (source.view(shape), out.view(shape), *repeated)


def normalize_(
    x3: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    slope: float | None = None,
) -> torch.Tensor:
    """In place on a (B, N, C) view: ``prelu(((x3 - mean) / sqrt(var + eps)) * weight + bias)``.

    Applied block by block, so that the activation reads each block while the affine step has it in cache.

    Args:
        x3: the (B, N, C) view to normalise; its last dimension contiguous.
        mean, var: (B, 1, C) float32 statistics (``channel_moments``).
        eps: added to the variance.
        weight, bias: optional per-channel affine (C,).
        slope: PReLU slope; None for no activation.
    """
    scale, shift = norm_affine(mean, var, eps, weight, bias, x3.dtype)
    b, n, c = x3.shape
    for samples, start, stop in sample_blocks(b, n, c):
        block = x3[samples, start:stop]
        norm_act_block_(block, block, scale[samples, None], shift[samples, None], slope)
    return x3


def channels_last_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A convolution weight in ``dtype`` and channels-last memory, so that oneDNN keeps channels-last outputs."""
    return weight.detach().to(dtype).contiguous(memory_format=CHANNELS_LAST)


def _conv_output_shape(x: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int) -> tuple[int, ...]:
    """(B, C_out, D, H, W) of a stride-1 convolution of ``x`` with ``weight``."""
    kernel = weight.shape[2:]
    spatial = [s + 2 * padding - dilation * (k - 1) for s, k in zip(x.shape[2:], kernel, strict=False)]
    return (x.shape[0], weight.shape[0], *spatial)


_into_buffer_works: dict[torch.dtype, bool] = {}

# Convolution outputs from this many values up are written into a workspace buffer (``grouped_conv``). Smaller ones
# come from the allocator's reused memory without page faults, and oneDNN's plain convolution is faster than its
# zero-then-add form on them (a 4 x 12 x 32^3 depthwise convolution on one thread: 1.2 against 1.6 ms).
_INTO_BUFFER_MIN_ELEMENTS = 1 << 22


def _conv_into_buffer_works(dtype: torch.dtype) -> bool:
    """Whether this PyTorch can write a ``dtype`` convolution into a given buffer (oneDNN's in-place "add" fusion).

    The operator (``torch.ops.mkldnn._convolution_pointwise_``) is the one PyTorch's compiler uses for
    convolution + add; it is not public API, so it is tried once per dtype on a small case against ``F.conv3d``
    and left alone if it is missing, fails or differs.
    """
    if dtype not in _into_buffer_works:
        try:
            gen = torch.Generator().manual_seed(0)
            x = to_channels_last(torch.randn(1, 4, 6, 5, 4, generator=gen).to(dtype))
            weight = torch.randn(4, 1, 3, 3, 3, generator=gen).to(dtype)
            out = torch.zeros(1, 4, 6, 5, 4, dtype=dtype).contiguous(memory_format=CHANNELS_LAST)
            got = torch.ops.mkldnn._convolution_pointwise_.binary(
                out, x, weight, None, [2, 2, 2], [1, 1, 1], [2, 2, 2], 4, "add", 1.0, None, [], None
            )
            expected = F.conv3d(x, weight, None, padding=2, dilation=2, groups=4)
            _into_buffer_works[dtype] = got.data_ptr() == out.data_ptr() and torch.equal(out, expected)
        except (AttributeError, RuntimeError):
            _into_buffer_works[dtype] = False
    return _into_buffer_works[dtype]


def grouped_conv(
    x: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int, groups: int, workspace: Workspace, name: str
) -> torch.Tensor:
    """``F.conv3d(x, weight, None, padding=padding, dilation=dilation, groups=groups)``, channels-last.

    Where PyTorch allows it and the output is large (``_INTO_BUFFER_MIN_ELEMENTS``), the result is written into the
    workspace buffer ``name`` (zeroed, then the convolution added to it: the same values, bit for bit) instead of
    fresh memory, which the first write page-faults in again on every call; the result is then only valid until
    the buffer is next used.
    """
    shape = _conv_output_shape(x, weight, padding, dilation)
    if math.prod(shape) >= _INTO_BUFFER_MIN_ELEMENTS and _conv_into_buffer_works(x.dtype):
        b, c, d, h, w = shape
        out = workspace.get(name, (b, d, h, w, c), x.dtype, x.device).permute(0, 4, 1, 2, 3)
        out.zero_()
        size = [padding] * 3
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            out, x, weight, None, size, [1, 1, 1], [dilation] * 3, groups, "add", 1.0, None, [], None
        )
    return to_channels_last(F.conv3d(x, weight, None, padding=padding, dilation=dilation, groups=groups))


def depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, dilation: int, workspace: Workspace | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise 3x3x3 convolution without bias, zero padding = dilation, of a channels-last (B, C, D, H, W) tensor.

    Returns:
        (rows, natural): ``rows`` is a contiguous (B, N, C) tensor of the result in some voxel order (statistics and
        element-wise work happen there); ``natural`` a view of the same memory in the natural voxel order, of shape
        (B, D, H, W, C), or (B, D/d, d, H/d, d, W, C) after space-to-batch: ``dest.view(natural.shape)`` of a
        contiguous (B, D, H, W, C) ``dest`` matches it element for element. Both may be views of the workspace
        buffer "depthwise.out" (``grouped_conv``), valid until the next call with the same workspace.
    """
    b, c, d_, h, w = x.shape
    weight = weight.detach().to(x.dtype)
    k = dilation
    ws = workspace if workspace is not None else active_workspace()
    if k == 1:  # oneDNN's fast depthwise kernel as it is
        out = grouped_conv(x, weight, k, k, c, ws, "depthwise.out")
        return rows(out), out.permute(0, 2, 3, 4, 1)
    if d_ % k or h % k or w % k:
        return _depthwise_padded(x, weight, k, ws)
    n0, n1 = d_ // k, h // k
    # Gather the (z mod k, y mod k) phases into the batch axis; the x phase is folded into the channels.
    packed = ws.get("depthwise.phases", (b, k, k, n0, n1, w * c), x.dtype, x.device)
    packed.copy_(x.permute(0, 2, 3, 4, 1).reshape(b, n0, k, n1, k, w * c).permute(0, 2, 4, 1, 3, 5))
    return _phase_conv(packed, weight, k, c, ws)


def _phase_conv(
    packed: torch.Tensor, weight: torch.Tensor, k: int, c: int, ws: Workspace
) -> tuple[torch.Tensor, torch.Tensor]:
    """The undilated depthwise convolution of space-to-batch phases ``packed`` (B, kz, ky, D/k, H/k, W * C).

    Returns ``depthwise_conv``'s ``(rows, natural)``, natural as (B, D/k, kz, H/k, ky, W, C).
    """
    b, _, _, n0, n1, wc = packed.shape
    w = wc // c
    grid = packed.view(b * k * k, n0, n1, w // k, k * c).permute(0, 4, 1, 2, 3)
    out = grouped_conv(grid, weight.repeat(k, 1, 1, 1, 1), 1, 1, k * c, ws, "depthwise.out")
    flat = out.permute(0, 2, 3, 4, 1).reshape(b, k, k, n0, n1, w, c)
    natural = flat.permute(0, 3, 1, 4, 2, 5, 6)  # (B, n0, kz, n1, ky, W, C)
    return flat.view(b, -1, c), natural


def _phase_pieces(n: int, k: int) -> list[tuple[slice, slice, slice]]:
    """An axis of ``n`` voxels as sub-grid positions ``a`` and phases ``p`` (voxel ``a * k + p``) at dilation ``k``:
    ``(voxels, positions, phases)`` of its whole groups of ``k`` voxels, and of the partial group at its end."""
    q, r = divmod(n, k)
    pieces = [(slice(0, q * k), slice(0, q), slice(0, k))] if q else []
    if r:
        pieces.append((slice(q * k, n), slice(q, q + 1), slice(0, r)))
    return pieces


def _as_phases(voxels: torch.Tensor, z: tuple[slice, slice, slice], y: tuple[slice, slice, slice]) -> torch.Tensor:
    """The piece (``_phase_pieces`` of z and y) of (B, D, H, W, C) ``voxels`` as (B, a_z, p_z, a_y, p_y, W, C)."""
    (zv, za, zp), (yv, ya, yp) = z, y
    return voxels[:, zv, yv].unflatten(1, (za.stop - za.start, zp.stop)).unflatten(3, (ya.stop - ya.start, yp.stop))


def _in_phases(
    phases: torch.Tensor, z: tuple[slice, slice, slice], y: tuple[slice, slice, slice], width: int
) -> torch.Tensor:
    """The same piece of a (B, n0, kz, n1, ky, W', C) phase view, cut to ``width`` voxels along x."""
    return phases[:, z[1], z[2], y[1], y[2], :width]


def _depthwise_padded(
    x: torch.Tensor, weight: torch.Tensor, k: int, ws: Workspace
) -> tuple[torch.Tensor, torch.Tensor]:
    """``depthwise_conv`` at dilation ``k`` for sizes ``k`` does not divide (every dilation-3 unit of a 32^3 window).

    oneDNN's generic dilated kernel is about 9x slower than space-to-batch there (31.6 against 3.5 ms for 4 x 12 x
    32^3 on two cores), so ``x`` is zero-padded at the far end of each axis to a multiple of ``k`` and convolved
    by space-to-batch. Exact: a real voxel's neighbour ``k`` voxels beyond the image is zero either way (an
    appended zero, or the convolution's own zero padding), so the real voxels get the same products and sums; the
    padded voxels' outputs are dropped. The padding happens in the phase layout itself: the phases are zeroed and
    each piece of ``x`` (``_phase_pieces`` of z and y; x is cut to its width) copied to its place; the real
    voxels' outputs are copied back the same way. Returns ``depthwise_conv``'s ``(rows, natural)``, natural in
    (B, D, H, W, C) order, views of the workspace buffer "depthwise.valid".
    """
    b, c, d_, h, w = x.shape
    n0, n1, wide = (-(-n // k) for n in (d_, h, w))
    packed = ws.get("depthwise.phases", (b, k, k, n0, n1, wide * k * c), x.dtype, x.device)
    packed.zero_()
    phases = packed.view(b, k, k, n0, n1, wide * k, c).permute(0, 3, 1, 4, 2, 5, 6)  # (B, n0, kz, n1, ky, W', C)
    source = x.permute(0, 2, 3, 4, 1)
    valid = ws.get("depthwise.valid", (b, d_, h, w, c), x.dtype, x.device)
    pieces = [(z, y) for z in _phase_pieces(d_, k) for y in _phase_pieces(h, k)]
    for z, y in pieces:
        _in_phases(phases, z, y, w).copy_(_as_phases(source, z, y))
    _, natural = _phase_conv(packed, weight, k, c, ws)
    for z, y in pieces:
        _as_phases(valid, z, y).copy_(_in_phases(natural, z, y, w))
    return valid.view(b, -1, c), valid


def natural_blocks(natural: torch.Tensor) -> Iterator[tuple[slice, int, int, torch.Tensor]]:
    """Blocks of ``depthwise_conv``'s ``natural`` view, as ``(samples, start, stop, block)``.

    Each block is a range of slabs along the outermost spatial axis (z, or z // dilation after space-to-batch) of
    one sample, or where a sample fits in a block, whole samples; so it covers the contiguous rows [start, stop) of
    the natural voxel order of the samples ``samples`` (a slice); ``block`` is the (strided) view of those rows in
    the phase-ordered result, to be read into ``rows[samples, start:stop].view(block.shape)``.
    """
    b, outer = natural.shape[:2]
    c = natural.shape[-1]
    per_slab = natural[0, 0].numel() // c
    step = max(1, _BLOCK_ELEMENTS // (c * per_slab))
    if step >= outer:  # whole samples per block
        group = max(1, _BLOCK_ELEMENTS // (c * per_slab * outer))
        for i in range(0, b, group):
            yield slice(i, min(b, i + group)), 0, outer * per_slab, natural[i : i + group]
        return
    for i in range(b):
        for z in range(0, outer, step):
            block = natural[i : i + 1, z : z + step]
            start = z * per_slab
            yield slice(i, i + 1), start, start + block[0].numel() // c, block
