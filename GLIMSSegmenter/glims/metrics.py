"""Segmentation metrics with BraTS conventions: Dice and HD95 per tumour region (TC, WT, ET).

Regions are unions of label values, which depend on the label convention of each label map:

* ``brats2023`` (BraTS 2023 and later, and ``glims`` outputs): 1 NCR, 2 ED, 3 ET;
  TC = {1, 3}, WT = {1, 2, 3}, ET = {3}.
* ``brats2017`` (BraTS 2017 to 2021): 1 NCR/NET, 2 ED, 4 ET; TC = {1, 4}, WT = {1, 2, 4}, ET = {4}.
* ``brats2013`` (BraTS 2013 to 2015): 1 necrosis, 2 oedema, 3 non-enhancing tumour, 4 enhancing;
  TC = {1, 3, 4}, WT = {1, 2, 3, 4}, ET = {4}.

A prediction and its reference may use different conventions (e.g. a BraTS 2020 algorithm's output against a
BraTS 2023 label): each map is turned into regions with its own convention first.

Empty regions follow the BraTS rules: both empty gives Dice 1 and HD95 0; only one empty gives Dice 0 and HD95
``BRATS_HD95_PENALTY`` (373.13 mm, the diagonal of a 240 x 240 x 155 mm BraTS volume).

HD95 is the larger of the two directed 95th percentiles (numpy's linear interpolation) of the distances from the
surface voxels of one mask to the nearest surface voxel of the other, in millimetres with the voxel spacing. A
surface voxel is a foreground voxel with a background 6-neighbour (outside the array counts as background).
Distances come from an exact Euclidean distance transform computed here (no scipy), restricted to the bounding
box of both surfaces, where all the nearest points lie.

Arrays are ``(z, y, x)`` and spacings ``(z, y, x)`` in mm (SimpleITK's ``GetSpacing()`` is ``(x, y, z)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError, InputError

__all__ = [
    "REGIONS",
    "BRATS_HD95_PENALTY",
    "LabelConvention",
    "CONVENTIONS",
    "get_convention",
    "label_values",
    "check_labels",
    "region_masks",
    "dice",
    "surface_mask",
    "squared_distance_map",
    "bounding_box",
    "hd95",
    "RegionScore",
    "score_regions",
]

REGIONS = ("TC", "WT", "ET")
"""Tumour core, whole tumour, enhancing tumour."""

BRATS_HD95_PENALTY = 373.13
"""HD95 (mm) when exactly one of prediction and reference is empty: sqrt(240² + 240² + 155²), as in BraTS."""


@dataclass(frozen=True)
class LabelConvention:
    """Which label values a label map may hold and which of them make each region."""

    name: str
    labels: tuple[int, ...]
    regions: Mapping[str, tuple[int, ...]]
    description: str


CONVENTIONS: dict[str, LabelConvention] = {
    "brats2023": LabelConvention(
        "brats2023",
        (0, 1, 2, 3),
        {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)},
        "BraTS 2023+: 1 necrotic/non-enhancing core, 2 oedema, 3 enhancing tumour",
    ),
    "brats2017": LabelConvention(
        "brats2017",
        (0, 1, 2, 4),
        {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)},
        "BraTS 2017-2021: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing tumour",
    ),
    "brats2013": LabelConvention(
        "brats2013",
        (0, 1, 2, 3, 4),
        {"TC": (1, 3, 4), "WT": (1, 2, 3, 4), "ET": (4,)},
        "BraTS 2013-2015: 1 necrosis, 2 oedema, 3 non-enhancing tumour, 4 enhancing tumour",
    ),
}

_ALIASES = {
    "brats2024": "brats2023",
    "et3": "brats2023",
    "glims": "brats2023",
    "brats2018": "brats2017",
    "brats2019": "brats2017",
    "brats2020": "brats2017",
    "brats2021": "brats2017",
    "et4": "brats2017",
    "brats2014": "brats2013",
    "brats2015": "brats2013",
}


def get_convention(name: str | LabelConvention) -> LabelConvention:
    """The convention called ``name`` (``brats2023``, ``brats2017``, ``brats2013`` or a year/alias of one)."""
    if isinstance(name, LabelConvention):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    if key not in CONVENTIONS:
        known = ", ".join(sorted({*CONVENTIONS, *_ALIASES}))
        raise ConfigError(f"unknown label convention {name!r}; known: {known}")
    return CONVENTIONS[key]


def label_values(label: np.ndarray) -> list[int]:
    """The distinct values of an integer-valued label map (floats holding integers are accepted)."""
    array = np.asarray(label)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError("the label map holds NaN or infinite values")
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise InputError("the label map holds non-integer values; it looks like an image or probabilities")
        array = rounded.astype(np.int64)
    elif array.dtype.kind == "b":
        array = array.astype(np.uint8)
    elif array.dtype.kind not in "iu":
        raise InputError(f"the label map has unsupported type {array.dtype}")
    if array.size == 0:
        return []
    low, high = int(array.min()), int(array.max())
    if low >= 0 and high < 1 << 16:
        counts = np.bincount(array.ravel(), minlength=high + 1)
        return [int(v) for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(array)]


def check_labels(label: np.ndarray, convention: str | LabelConvention, what: str = "label map") -> None:
    """Raise ``InputError`` if ``label`` holds values outside the convention's label set."""
    conv = get_convention(convention)
    unexpected = sorted(set(label_values(label)) - set(conv.labels))
    if unexpected:
        raise InputError(
            f"{what} holds label values {unexpected} that the {conv.name} convention does not have "
            f"({conv.description}); choose the right convention"
        )


def region_masks(label: np.ndarray, convention: str | LabelConvention = "brats2023") -> dict[str, np.ndarray]:
    """Boolean masks of TC, WT and ET of a label map (same shape), by the given convention."""
    conv = get_convention(convention)
    array = np.asarray(label)
    return {region: np.isin(array, conv.regions[region]) for region in REGIONS}


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient 2|P∩R| / (|P| + |R|) of two boolean masks; 1.0 when both are empty."""
    pred, ref = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if pred.shape != ref.shape:
        raise InputError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one background 6-neighbour (the array's outside counts as background)."""
    inside = np.asarray(mask, dtype=bool)
    padded = np.pad(inside, 1, constant_values=False)
    interior = inside.copy()
    for axis in range(inside.ndim):
        for step in (-1, 1):
            shifted = np.roll(padded, step, axis=axis)
            interior &= shifted[tuple(slice(1, -1) for _ in range(inside.ndim))]
    return inside & ~interior


def _first_pass(features: np.ndarray, axis: int, spacing: float) -> np.ndarray:
    """Squared distance (mm²) along one axis to the nearest feature voxel on the same line; inf where none."""
    n = features.shape[axis]
    shape = [1] * features.ndim
    shape[axis] = n
    index = np.arange(n, dtype=np.int64).reshape(shape)
    far = np.int64(1 << 40)
    left = np.maximum.accumulate(np.where(features, index, -far), axis=axis)
    right = np.flip(np.minimum.accumulate(np.flip(np.where(features, index, far), axis), axis=axis), axis)
    steps = np.minimum(index - left, right - index).astype(np.float32)
    out = (steps * np.float32(spacing)) ** 2
    out[steps >= far // 2] = np.inf
    return out


def _envelope_pass(squared: torch.Tensor, axis: int, spacing: float, chunk_elements: int = 1 << 24) -> torch.Tensor:
    """One separable pass of the exact EDT: ``out[p] = min_q squared[q] + ((p - q) * spacing)²`` along ``axis``.

    Brute force over q (n² per line), vectorised in chunks of lines; lines without any finite value are skipped.
    """
    moved = squared.movedim(axis, -1)
    n = moved.shape[-1]
    lines = moved.reshape(-1, n)
    out = torch.full_like(lines, float("inf"))
    active = torch.nonzero(torch.isfinite(lines).any(dim=1)).flatten()
    positions = torch.arange(n, dtype=lines.dtype)
    cost = ((positions[:, None] - positions[None, :]) * spacing) ** 2  # [p, q]
    per_chunk = max(1, chunk_elements // (n * n))
    for start in range(0, active.numel(), per_chunk):
        rows = active[start : start + per_chunk]
        out[rows] = (lines[rows][:, None, :] + cost[None]).amin(dim=-1)
    return out.reshape(moved.shape).movedim(-1, axis)


def squared_distance_map(features: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Exact squared Euclidean distance (mm²) from every voxel to the nearest ``True`` voxel of ``features``.

    Separable (one exact pass per axis), inf everywhere when there is no feature. Costs about
    ``N * (n_1 + n_2)`` for N voxels, with the two shortest axes done by brute force, so crop first.

    Args:
        features: boolean array, any number of dimensions.
        spacing: voxel size per axis in mm.
    """
    feats = np.asarray(features, dtype=bool)
    if len(spacing) != feats.ndim:
        raise ConfigError(f"spacing {tuple(spacing)} does not match a {feats.ndim}-D array")
    if not feats.any():
        return np.full(feats.shape, np.inf)
    order = sorted(range(feats.ndim), key=lambda a: -feats.shape[a])  # longest axis by the linear pass
    squared = torch.from_numpy(_first_pass(feats, order[0], float(spacing[order[0]])))
    for axis in order[1:]:
        squared = _envelope_pass(squared, axis, float(spacing[axis]))
    return squared.numpy()


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every true voxel of a non-empty ``mask``."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        slices.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(slices)


def hd95(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    empty_penalty: float = BRATS_HD95_PENALTY,
) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between the surfaces of two boolean masks.

    Args:
        prediction, reference: boolean masks of the same shape.
        spacing: voxel size per axis in mm, in array order.
        empty_penalty: the value when exactly one mask is empty (0.0 when both are).

    Returns:
        max(P95 of distances pred-surface -> ref-surface, P95 of ref-surface -> pred-surface).
    """
    pred, ref = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if pred.shape != ref.shape:
        raise InputError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0
    if not has_pred or not has_ref:
        return float(empty_penalty)
    # Work in the bounding box of both masks plus one voxel of background, which holds both surfaces.
    box = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in bounding_box(pred | ref))
    pred_surface, ref_surface = surface_mask(pred[box]), surface_mask(ref[box])
    box = bounding_box(pred_surface | ref_surface)
    pred_surface, ref_surface = pred_surface[box], ref_surface[box]
    to_ref = np.sqrt(squared_distance_map(ref_surface, spacing)[pred_surface])
    to_pred = np.sqrt(squared_distance_map(pred_surface, spacing)[ref_surface])
    return float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))


@dataclass(frozen=True)
class RegionScore:
    """Scores of one region: Dice, HD95 (mm) and the region's size in voxels in each map."""

    dice: float
    hd95: float
    pred_voxels: int
    ref_voxels: int


def score_regions(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    pred_convention: str | LabelConvention = "brats2023",
    ref_convention: str | LabelConvention = "brats2023",
    empty_penalty: float = BRATS_HD95_PENALTY,
) -> dict[str, RegionScore]:
    """Dice and HD95 of TC, WT and ET between two label maps (z, y, x) on the same grid.

    Label values outside each map's convention raise ``InputError`` (a label 4 read as BraTS 2023, say).
    """
    pred, ref = np.asarray(prediction), np.asarray(reference)
    if pred.shape != ref.shape:
        raise InputError(f"prediction and reference differ in shape: {pred.shape} vs {ref.shape}")
    check_labels(pred, pred_convention, "the prediction")
    check_labels(ref, ref_convention, "the reference")
    pred_masks = region_masks(pred, pred_convention)
    ref_masks = region_masks(ref, ref_convention)
    scores = {}
    for region in REGIONS:
        p, r = pred_masks[region], ref_masks[region]
        scores[region] = RegionScore(
            dice=dice(p, r),
            hd95=hd95(p, r, spacing, empty_penalty),
            pred_voxels=int(p.sum()),
            ref_voxels=int(r.sum()),
        )
    return scores
