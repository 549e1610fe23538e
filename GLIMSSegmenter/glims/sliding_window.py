"""Sliding-window inference over a whole (cropped) case: windows blended as MONAI's ``sliding_window_inference``
blends them, placed as it places them or spread evenly, without importing MONAI.

Window starts per axis (``placement``), both from one edge of the image to the other:

* ``step`` (MONAI's): every ``int(window * (1 - overlap))`` voxels (at least 1), the last window moved back to end
  at the image's edge. Where the image is a little longer than a whole number of steps, that last window lies a
  voxel or two from the one before it: on a brain cropped to 65 voxels, 4 windows of 32 where 3 nearly cover it.
* ``even``: windows spread evenly between the two edges (starts rounded to whole voxels), as many as make their
  spacing nearest to ``window * (1 - overlap)`` (of two equally near, the fewer). The overlap is then a target:
  asked for 0.5, an axis with three windows or more gets 0.4-0.67 between neighbours, one with two windows at
  least 0.33 (more where the image is barely longer than a window), and no third window sits a voxel or two from
  another: 3 windows on that brain, at 0, 17 and 33.

Windows are visited in C order of their start corners (first axis slowest). An image smaller than the window is
zero-padded to it (half before, the rest after) and the result cropped back. Each window's output is weighted by
an importance map (``gaussian``: a separable Gaussian of sigma 0.125 x window size per axis, its smallest value
raised to at least 1e-3; ``constant``: ones) and added to the output; the sum is divided by the summed weights. The
arithmetic is the same as MONAI's, in the same order, so with ``step`` placement the logits agree with its result
to float rounding (``Testing/engine/test_sliding_window.py`` compares them).

What differs is the bookkeeping: the importance map and the weight sum are computed once per call, window batches
are gathered into one reused buffer, and the weighted outputs are added in place, which matters where a forward
pass is short (a small model's 32^3 windows: 36-80 per brain case, 8 per forward). With several *streams* (one forward
function each, e.g. copies of one model), batches run concurrently on that many threads, and their outputs are
still added in window order, so the result does not depend on the number of streams. A stream takes the next
batch as soon as it is free, up to ``STREAM_LOOKAHEAD`` batches per stream ahead of the oldest unfinished one: a
stream slowed by another program on its core holds the others back only at the end.
"""

from __future__ import annotations

import collections
import itertools
import math
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .catalog_sections import PLACEMENTS, Placement

__all__ = ["window_starts", "window_corners", "importance_map", "sliding_window_logits", "SIGMA_SCALE"]

SIGMA_SCALE = 0.125
"""Standard deviation of the Gaussian importance map, as a fraction of the window size (MONAI's default)."""

_MIN_WEIGHT = 1e-3

STREAM_LOOKAHEAD = 4
"""Window batches per stream that may be in flight (gathered, running or done but not yet added) at once."""


def window_starts(size: int, window: int, overlap: float, placement: Placement = "step") -> list[int]:
    """Start offsets of the windows along one axis of ``size`` voxels (``size`` at least ``window``), placed as
    ``placement`` says (module docstring)."""
    if size <= window:
        return [0]
    excess = size - window
    if placement == "even":
        target = window * (1 - overlap)
        fewer = max(1, math.floor(excess / target))
        gaps = min((fewer, fewer + 1), key=lambda g: abs(excess / g - target))  # min keeps the first of a tie
        return [(2 * i * excess + gaps) // (2 * gaps) for i in range(gaps + 1)]  # i * excess / gaps, rounded
    if placement != "step":
        raise ValueError(f"placement must be {' or '.join(PLACEMENTS)}, got {placement!r}")
    interval = max(1, int(window * (1 - overlap)))
    count = math.ceil(excess / interval) + 1
    return [min(i * interval, excess) for i in range(count)]


def window_corners(
    shape: Sequence[int], roi: Sequence[int], overlap: float, placement: Placement = "step"
) -> list[tuple[int, ...]]:
    """Start corners of every window on an image of spatial ``shape`` (after padding to ``roi``), in visiting order."""
    axes = [window_starts(max(s, r), r, overlap, placement) for s, r in zip(shape, roi, strict=True)]
    return list(itertools.product(*axes))


def importance_map(roi: Sequence[int], blend: str) -> torch.Tensor:
    """The per-voxel weight (float32, shape ``roi``) of a window's output: ``gaussian`` or ``constant``."""
    if blend == "constant":
        return torch.ones(tuple(roi), dtype=torch.float32)
    if blend != "gaussian":
        raise ValueError(f"blend must be gaussian or constant, got {blend!r}")
    weights: torch.Tensor | None = None
    for axis, size in enumerate(roi):
        sigma = size * SIGMA_SCALE
        x = torch.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=torch.float32)
        profile = torch.exp(x**2 / (-2 * sigma**2))
        weights = profile if weights is None else weights.unsqueeze(-1) * profile[(None,) * axis]
    assert weights is not None
    floor = max(float(weights.min()), _MIN_WEIGHT)
    return weights.clamp_(min=floor)


Forward = Callable[[torch.Tensor], torch.Tensor]


def sliding_window_logits(
    image: torch.Tensor,
    roi: Sequence[int],
    forward: Forward | Sequence[Forward],
    *,
    overlap: float,
    blend: str,
    batch_size: int,
    placement: Placement = "step",
    before_batch: Callable[[], None] | None = None,
    after_batch: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Blended outputs of ``forward`` over the windows of ``image`` (C, X, Y, Z): (K, X, Y, Z) float32, on the CPU.

    Args:
        image: the CPU input, channels first, without a batch axis.
        roi: window size (X, Y, Z).
        forward: a batch of windows (B, C, *roi) on the CPU -> outputs (B, K, *roi) (any device; made float32 CPU);
            or one such function per stream: each runs on its own thread (never two calls of one function at
            once), in the caller's grad and inference mode.
        overlap, blend, placement: window spacing, blending and placement (see the module docstring).
        batch_size: windows per ``forward`` call (the last call may get fewer).
        before_batch, after_batch: called around every ``forward`` call (cancellation checks, progress). With
            several streams ``before_batch`` (then it must be thread-safe) runs on the stream's thread before its
            ``forward`` call, and again on the caller's before each batch's output is added; ``after_batch`` always
            runs on the caller's thread, once per batch, in window order.
    """
    roi = tuple(int(r) for r in roi)
    spatial = tuple(image.shape[1:])
    pads = [max(r - s, 0) for s, r in zip(spatial, roi, strict=True)]
    if any(pads):
        pad_arg: list[int] = []
        for diff in reversed(pads):  # F.pad takes the last axis first
            pad_arg += [diff // 2, diff - diff // 2]
        image = torch.nn.functional.pad(image, pad_arg)
    padded = tuple(image.shape[1:])
    corners = window_corners(padded, roi, overlap, placement)
    weight = importance_map(roi, blend)
    weight_sum = torch.zeros(padded, dtype=torch.float32)
    for corner in corners:
        weight_sum[_window(corner, roi)] += weight
    forwards = [forward] if callable(forward) else list(forward)
    groups = [corners[first : first + batch_size] for first in range(0, len(corners), batch_size)]
    summed: torch.Tensor | None = None

    def add(group: Sequence[tuple[int, ...]], outputs: torch.Tensor) -> None:
        nonlocal summed
        if summed is None:
            summed = torch.zeros((outputs.shape[1], *padded), dtype=torch.float32)
        outputs.mul_(weight)
        for slot, corner in enumerate(group):
            summed[_channels_window(corner, roi)] += outputs[slot]
        if after_batch is not None:
            after_batch()

    if len(forwards) == 1:
        batch = torch.empty((min(batch_size, len(corners)), image.shape[0], *roi), dtype=image.dtype)
        for group in groups:
            inputs = _gather(image, group, roi, batch[: len(group)])
            if before_batch is not None:
                before_batch()
            add(group, forwards[0](inputs).float().cpu())
    else:
        _run_streams(image, roi, groups, forwards, add, before_batch)
    assert summed is not None
    summed /= weight_sum
    if any(pads):
        unpadded = (slice(None), *(slice(p // 2, p // 2 + s) for p, s in zip(pads, spatial, strict=True)))
        summed = summed[unpadded]
    return summed


def _run_streams(
    image: torch.Tensor,
    roi: Sequence[int],
    groups: Sequence[Sequence[tuple[int, ...]]],
    forwards: Sequence[Forward],
    add: Callable[[Sequence[tuple[int, ...]], torch.Tensor], None],
    before_batch: Callable[[], None] | None,
) -> None:
    """Batches on one thread per forward function, each taken by whichever stream is free (up to
    ``STREAM_LOOKAHEAD`` batches per stream in flight), added in order."""
    idle: queue.SimpleQueue[Forward] = queue.SimpleQueue()
    for fn in forwards:
        idle.put(fn)
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(inputs: torch.Tensor) -> torch.Tensor:
        if before_batch is not None:
            before_batch()  # here, where the batch starts: a cancelled job starts no further batch
        fn = idle.get()
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return fn(inputs).float().cpu()
        finally:
            idle.put(fn)

    pending: collections.deque[tuple[Sequence[tuple[int, ...]], Future[torch.Tensor]]] = collections.deque()

    def add_finished(block: bool) -> None:
        """Add the oldest batches that have finished (with ``block``, first wait for the oldest)."""
        while pending and (block or pending[0][1].done()):
            if before_batch is not None:
                before_batch()  # a job cancelled meanwhile adds nothing more
            done, future = pending.popleft()
            add(done, future.result())
            block = False

    with ThreadPoolExecutor(len(forwards), thread_name_prefix="glims-windows") as pool:
        try:
            for group in groups:
                pending.append((group, pool.submit(run, _gather(image, group, roi, None))))
                add_finished(block=len(pending) >= STREAM_LOOKAHEAD * len(forwards))
            while pending:
                add_finished(block=True)
        finally:
            for _, future in pending:
                future.cancel()


def _gather(
    image: torch.Tensor, group: Sequence[tuple[int, ...]], roi: Sequence[int], out: torch.Tensor | None
) -> torch.Tensor:
    """The windows at ``group``'s corners of ``image`` as one batch (into ``out``, or a new tensor)."""
    if out is None:
        out = torch.empty((len(group), image.shape[0], *roi), dtype=image.dtype)
    for slot, corner in enumerate(group):
        out[slot].copy_(image[_channels_window(corner, roi)])
    return out


def _window(corner: Sequence[int], roi: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(c, c + r) for c, r in zip(corner, roi, strict=True))


def _channels_window(corner: Sequence[int], roi: Sequence[int]) -> tuple[slice, ...]:
    """The window at ``corner`` of a (C, X, Y, Z) array, every channel."""
    return (slice(None), *_window(corner, roi))
