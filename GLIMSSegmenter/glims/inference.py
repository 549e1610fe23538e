"""Running GLIMS models on a prepared case: device choice, weights loading, sliding windows, flips, ensembles.

``predict_logits`` averages raw logits over test-time flips and over the models of an ensemble (as the authors
average their fold models), with sliding-window inference at the model's window size (``glims.sliding_window``:
windows placed and blended as MONAI's). Progress counts window batches; cancellation is checked before every batch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .catalog import ModelSpec
from .catalog_sections import BLENDS, INFERENCE_PRECISIONS, PLACEMENTS, Blend, InferenceSpec, Placement, Precision
from .checkpoint import load_checkpoint, load_into_model
from .cpu_threads import available_cores
from .errors import CheckpointError, ConfigError, DeviceError
from .modelcache import active_model_cache
from .network import GLIMS, build
from .progress import CancelToken
from .sliding_window import sliding_window_logits, window_corners

__all__ = [
    "resolve_device",
    "load_models",
    "predict_logits",
    "count_windows",
    "window_streams",
    "InferenceOptions",
    "FLIP_SETS",
]

logger = logging.getLogger(__name__)

# Test-time augmentation: which spatial axes (of C, X, Y, Z arrays: 2, 3, 4) are flipped in each pass.
FLIP_SETS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))
_MODEL_DEFAULTS = InferenceSpec()
"""The settings of a model whose catalog entry gives none."""


@dataclass(frozen=True)
class InferenceOptions:
    """How to run the windows. A model's own settings come from its catalog entry (``from_spec``)."""

    device: str = "auto"
    """``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    overlap: float = _MODEL_DEFAULTS.overlap
    """Fraction of a window shared with its neighbour (0 <= overlap < 1)."""
    blend: Blend = _MODEL_DEFAULTS.blend
    """``gaussian`` (centre-weighted) or ``constant`` blending of overlapping windows."""
    placement: Placement = _MODEL_DEFAULTS.placement
    """``step`` (every window x (1 - overlap) voxels, MONAI's) or ``even`` (spread evenly, spacing nearest to
    that): ``glims.sliding_window``."""
    sw_batch_size: int = _MODEL_DEFAULTS.sw_batch_size
    """Windows per forward pass. One is fastest for 96^3 windows on the CPU (a batch of two costs 6% more per
    window: larger working set); GPUs and small windows gain from more (set per model in the catalog)."""
    precision: Precision = "fp32"
    """``fp32``, ``bf16`` or ``fp16`` (the latter two through autocast)."""
    tta: bool = False
    """Average over mirrored copies (flips of each axis)."""
    fast_path: bool = True
    """Let the network use its CPU fast path (same function, float32 rounding); False: the reference path."""
    streams: int | None = None
    """Window batches run at once where windows are small (``window_streams``); None: one per core this process
    may use."""

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.blend not in BLENDS:
            raise ConfigError(f"blend must be {' or '.join(BLENDS)}, got {self.blend!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement must be {' or '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.precision not in INFERENCE_PRECISIONS:
            raise ConfigError(
                f"precision must be {', '.join(INFERENCE_PRECISIONS[:-1])} or "
                f"{INFERENCE_PRECISIONS[-1]}, got {self.precision!r}"
            )
        if self.sw_batch_size < 1:
            raise ConfigError("sw_batch_size must be at least 1")
        if self.streams is not None and self.streams < 1:
            raise ConfigError(f"streams must be at least 1, got {self.streams}")

    @classmethod
    def from_spec(cls, section: InferenceSpec, **settings: Any) -> InferenceOptions:
        """A model's catalog settings (``overlap``, ``blend``, ``placement``, ``sw_batch_size``), with ``settings``
        (any field) given or overriding them; a setting given as None is not given (the model's value, else the
        default)."""
        own = {
            "overlap": section.overlap,
            "blend": section.blend,
            "placement": section.placement,
            "sw_batch_size": section.sw_batch_size,
        }
        return cls(**{**own, **{key: value for key, value in settings.items() if value is not None}})


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a user's choice.

    Raises:
        DeviceError: a GPU was asked for and is not available.
    """
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "gpu":
        name = "cuda"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "a CUDA GPU was requested but none is available (torch sees no CUDA device); use --device cpu"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():  # type: ignore[redundant-expr]  # torch types index as int; it is None for plain "cuda"
        raise DeviceError(f"cuda:{device.index} requested but only {torch.cuda.device_count()} GPU(s) present")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("Apple MPS was requested but is not available; use --device cpu")
    return device


def build_network(architecture: dict) -> GLIMS:
    """``glims.network.build`` with a bad architecture reported as a ``CheckpointError`` naming the catalog entry."""
    try:
        return build(architecture)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"invalid architecture in the catalog entry: {err}") from None


def load_models(spec: ModelSpec) -> list[GLIMS]:
    """One network per weights file of the entry, weights verified by sha256 and loaded strictly, in eval mode.

    A process that installed a ``glims.modelcache`` cache (the worker) gets the networks it loaded before.

    Raises:
        CheckpointError: missing/corrupt file, checksum mismatch, or weights that do not fit the architecture.
    """
    cache = active_model_cache()
    return cache.models(spec, _load_models) if cache is not None else _load_models(spec)


def _load_models(spec: ModelSpec) -> list[GLIMS]:
    models = []
    for weights in spec.weights:
        if not weights.path.is_file():
            raise CheckpointError(f"weights of model {spec.ref} not found: {weights.path}")
        loaded = load_checkpoint(weights.path, expected_sha256=weights.sha256)
        net = build_network(dict(spec.architecture))
        load_into_model(net, loaded.state_dict)
        models.append(net.eval())
    return models


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float, placement: Placement = "step") -> int:
    """Windows the sliding-window inference (``glims.sliding_window``) visits on an image of ``shape`` (spatial)
    at ``roi``."""
    return len(window_corners(shape, roi, overlap, placement))


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


STREAM_MAX_WINDOW_VOXELS = 48**3
"""Windows up to this size run as concurrent streams on the CPU (see ``window_streams``)."""


def window_streams(roi_size: Sequence[int], device: torch.device, options: InferenceOptions) -> int:
    """How many window batches run at once: on the CPU fast path with small windows, ``options.streams``, by
    default one per core this process may use (``glims.cpu_threads.available_cores``).

    A forward pass of a 32^3 window is made of many small operations that two threads share poorly (on a 2-core
    CPU, the bundled model: 0.080 s of wall time per window with 2 threads, 0.093 s of CPU time), so each stream
    runs its own batches on its own replica of the network (``GLIMS.replica``) with one intra-op thread instead
    (two streams: 0.050 s per window, bit-identical logits). The streams never wait for each other: the next batch
    goes to whichever stream is free (``glims.sliding_window``), so a stream on a core that another program keeps
    busy slows only itself, and one stream per core is right whatever the load; the load probe's thread count
    (``glims.cpu_threads``) applies to the operations of large windows. Large windows (the full-size network's
    96^3) keep intra-op threads: their operations are large enough to share, and their workspaces are large.
    """
    if device.type != "cpu" or not options.fast_path or math.prod(roi_size) > STREAM_MAX_WINDOW_VOXELS:
        return 1
    return options.streams if options.streams is not None else available_cores()


@contextlib.contextmanager
def _intra_op_threads(count: int | None) -> Iterator[None]:
    """Within the block, torch uses ``count`` intra-op threads (None: unchanged); restored afterwards."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_replica_cache: weakref.WeakKeyDictionary[GLIMS, list[GLIMS]] = weakref.WeakKeyDictionary()


def _replicas(model: GLIMS, count: int) -> list[GLIMS]:
    """``count`` replicas of ``model`` (``GLIMS.replica``: shared weights, own workspaces) for concurrent streams.

    Kept with the model for its next prediction (a copy of the module tree takes 50-100 ms), as long as they share
    its current parameters; mode, fast path and precision are synchronised on every call.
    """
    if count < 1:
        return []
    cached = _replica_cache.get(model, [])
    params = list(model.parameters())
    kept = [r for r in cached if all(a is b for a, b in zip(r.parameters(), params, strict=True))][:count]
    with torch.inference_mode(False):
        kept += [model.replica() for _ in range(count - len(kept))]
    for replica in kept:
        replica.train(model.training)
        replica.fast_path = model.fast_path
        replica.precision = model.precision
    _replica_cache[model] = kept
    return kept


def _forward(model: GLIMS, device: torch.device, precision: str, batch: torch.Tensor) -> torch.Tensor:
    with _autocast(device, precision):
        return model(batch.to(device))


def _passes(models: Sequence[GLIMS], tta: bool) -> Iterator[tuple[GLIMS, tuple[int, ...]]]:
    for model in models:
        for flips in FLIP_SETS if tta else ((),):
            yield model, flips


def predict_logits(
    models: Sequence[GLIMS],
    image: np.ndarray,
    roi_size: Sequence[int],
    options: InferenceOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, str]:
    """Mean logits (K, X, Y, Z) float32 over models and flips, and the device actually used.

    On a CUDA out-of-memory error the whole prediction is redone on the CPU with a warning.

    Raises:
        Cancelled: ``cancel`` was set; DeviceError: the device failed for another reason.
    """
    device = resolve_device(options.device)
    try:
        return _predict_on(models, image, roi_size, options, device, progress, cancel), str(device)
    except torch.OutOfMemoryError:
        if device.type == "cpu":
            raise DeviceError("out of memory on the CPU; lower --sw-batch-size or close other programs") from None
        logger.warning("out of GPU memory on %s: running on the CPU instead (slower)", device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        cpu = torch.device("cpu")
        return _predict_on(models, image, roi_size, options, cpu, progress, cancel), "cpu (GPU out of memory)"


def _predict_on(
    models: Sequence[GLIMS],
    image: np.ndarray,
    roi_size: Sequence[int],
    options: InferenceOptions,
    device: torch.device,
    progress: Callable[[int, int], None] | None,
    cancel: CancelToken | None,
) -> np.ndarray:
    windows = count_windows(image.shape[1:], roi_size, options.overlap, options.placement)
    per_pass = math.ceil(windows / options.sw_batch_size)
    passes = list(_passes(models, options.tta))
    total, done = per_pass * len(passes), 0
    x = torch.from_numpy(np.ascontiguousarray(image))
    summed: torch.Tensor | None = None

    def check() -> None:
        if cancel is not None:
            cancel.check()

    def advance() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    streams = window_streams(roi_size, device, options)
    with torch.inference_mode(), _intra_op_threads(1 if streams > 1 else None):
        for model, flips in passes:
            model.to(device)
            model.fast_path = options.fast_path
            copies = [model, *_replicas(model, streams - 1)]
            forward = [functools.partial(_forward, twin, device, options.precision) for twin in copies]

            # Flip axes of the (C, X, Y, Z) image: FLIP_SETS name them in (B, C, X, Y, Z) terms.
            axes = tuple(a - 1 for a in flips)
            inp = torch.flip(x, axes) if axes else x
            logits = sliding_window_logits(
                inp,
                roi_size,
                forward,
                overlap=options.overlap,
                blend=options.blend,
                placement=options.placement,
                batch_size=options.sw_batch_size,
                before_batch=check,
                after_batch=advance,
            )
            logits = torch.flip(logits, axes) if axes else logits
            summed = logits if summed is None else summed.add_(logits)
            model.to("cpu")
        assert summed is not None
        if len(passes) > 1:
            summed /= len(passes)
    return summed.numpy().astype(np.float32, copy=False)
