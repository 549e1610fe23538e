"""Where a segmentation loses its Dice: each region's errors split by kind, and the ceiling a processing grid sets.

For one region, with prediction P and reference R (boolean masks on the reference grid):

* **false positives** (P and not R) are *detached* when they belong to a connected component of P (26-connected)
  that does not touch R at all (an island, a lesion where there is none); the others are *boundary* errors when
  they lie within ``boundary_mm`` of R, else *far* (an attached outgrowth);
* **false negatives** (R and not P) are *missed* when they belong to a component of R that P does not touch at all
  (a lesion or a part of the tumour not found); the others are *boundary* errors when they lie within
  ``boundary_mm`` of P, else *far* (a deep hole, a large part of an attached structure left out).

Dice = 2 TP / (2 TP + FP + FN), so the Dice lost, 1 - Dice = (FP + FN) / (2 TP + FP + FN), splits exactly into one
share per kind: ``n_kind / (2 TP + FP + FN)``. The shares of the six kinds add up to 1 - Dice.

The **grid ceiling** is what a model working on a coarser processing grid scores if it reproduces its training
targets exactly: the reference label's regions are taken to the model's processing grid the way training targets
are made (linear interpolation of each region, at least half a voxel:
``glims.training.data.label_on_processing_grid``), painted as the model's output is painted, and put back on the
reference grid by nearest neighbour, as ``glims segment`` puts its labels back; the result is scored against the
reference itself.

Arrays are ``(z, y, x)`` and spacings ``(z, y, x)`` in mm, as in ``glims.metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .catalog_sections import OutputSpec, PreprocessingSpec
from .errors import ConfigError, InputError
from .metrics import REGIONS, LabelConvention, bounding_box, check_labels, dice, region_masks, squared_distance_map

__all__ = [
    "ERROR_KINDS",
    "DEFAULT_BOUNDARY_MM",
    "RegionErrors",
    "region_errors",
    "label_errors",
    "grid_round_trip",
    "grid_ceiling",
]

ERROR_KINDS = ("fp_boundary", "fp_far", "fp_detached", "fn_boundary", "fn_far", "fn_missed")
"""The six kinds of error voxels, in report order."""

DEFAULT_BOUNDARY_MM = 2.0
"""Errors within this distance (mm) of the other mask count as boundary errors: one voxel of a 2 mm grid."""


@dataclass(frozen=True)
class RegionErrors:
    """One region's voxel counts: true positives and the six kinds of error (see module docstring)."""

    tp: int
    fp_boundary: int
    fp_far: int
    fp_detached: int
    fn_boundary: int
    fn_far: int
    fn_missed: int

    @property
    def fp(self) -> int:
        return self.fp_boundary + self.fp_far + self.fp_detached

    @property
    def fn(self) -> int:
        return self.fn_boundary + self.fn_far + self.fn_missed

    @property
    def dice(self) -> float:
        """Dice of the region (1.0 when both masks are empty)."""
        total = 2 * self.tp + self.fp + self.fn
        return 1.0 if total == 0 else 2.0 * self.tp / total

    def dice_lost(self, kind: str) -> float:
        """The part of ``1 - dice`` due to the error voxels of ``kind`` (one of ``ERROR_KINDS``)."""
        if kind not in ERROR_KINDS:
            raise ConfigError(f"unknown error kind {kind!r}; known: {', '.join(ERROR_KINDS)}")
        total = 2 * self.tp + self.fp + self.fn
        return 0.0 if total == 0 else getattr(self, kind) / total


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a boolean mask: (ids, count), ids 0 for background."""
    image = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
    ids = sitk.GetArrayFromImage(image)
    return ids, int(ids.max()) if ids.size else 0


def _untouched_components(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` in connected components that share no voxel with ``other``."""
    ids, count = _components(mask)
    if count == 0:
        return np.zeros_like(mask)
    touching = np.zeros(count + 1, dtype=bool)
    touching[np.unique(ids[other & mask])] = True
    touching[0] = True
    return ~touching[ids]


def _within(points: np.ndarray, target: np.ndarray, spacing: Sequence[float], limit_mm: float) -> np.ndarray:
    """Which ``points`` voxels lie within ``limit_mm`` of a ``target`` voxel (exact Euclidean distance in mm).

    Distances are computed in the bounding box of ``points`` grown by ``limit_mm``, which holds every target voxel
    that close.
    """
    out = np.zeros_like(points)
    if not points.any() or not target.any():
        return out
    grow = [int(np.ceil(limit_mm / float(step))) for step in spacing]
    box = tuple(slice(max(0, b.start - g), b.stop + g) for b, g in zip(bounding_box(points), grow, strict=False))
    squared = squared_distance_map(target[box], spacing)
    out[box] = points[box] & (squared <= limit_mm**2 + 1e-6)
    return out


def region_errors(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    boundary_mm: float = DEFAULT_BOUNDARY_MM,
) -> RegionErrors:
    """Split one region's errors into the six kinds of the module docstring.

    Args:
        prediction, reference: boolean masks of the same shape (z, y, x).
        spacing: voxel size per axis in mm, in array order.
        boundary_mm: how far from the other mask an error still counts as a boundary error.
    """
    pred, ref = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if pred.shape != ref.shape:
        raise InputError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    if not boundary_mm >= 0:
        raise ConfigError(f"the boundary distance must be at least 0 mm, not {boundary_mm}")
    false_pos, false_neg = pred & ~ref, ref & ~pred
    detached = _untouched_components(pred, ref) & false_pos
    missed = _untouched_components(ref, pred) & false_neg
    fp_boundary = _within(false_pos & ~detached, ref, spacing, boundary_mm)
    fn_boundary = _within(false_neg & ~missed, pred, spacing, boundary_mm)
    n_fp, n_fn = int(false_pos.sum()), int(false_neg.sum())
    n_detached, n_missed = int(detached.sum()), int(missed.sum())
    n_fp_boundary, n_fn_boundary = int(fp_boundary.sum()), int(fn_boundary.sum())
    return RegionErrors(
        tp=int((pred & ref).sum()),
        fp_boundary=n_fp_boundary,
        fp_far=n_fp - n_detached - n_fp_boundary,
        fp_detached=n_detached,
        fn_boundary=n_fn_boundary,
        fn_far=n_fn - n_missed - n_fn_boundary,
        fn_missed=n_missed,
    )


def label_errors(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    pred_convention: str | LabelConvention = "brats2023",
    ref_convention: str | LabelConvention = "brats2023",
    boundary_mm: float = DEFAULT_BOUNDARY_MM,
) -> dict[str, RegionErrors]:
    """``region_errors`` of TC, WT and ET between two label maps (z, y, x) on the same grid.

    Raises:
        InputError: label values outside a map's convention, or maps of different shapes.
    """
    pred, ref = np.asarray(prediction), np.asarray(reference)
    if pred.shape != ref.shape:
        raise InputError(f"prediction and reference differ in shape: {pred.shape} vs {ref.shape}")
    check_labels(pred, pred_convention, "the prediction")
    check_labels(ref, ref_convention, "the reference")
    pred_masks, ref_masks = region_masks(pred, pred_convention), region_masks(ref, ref_convention)
    return {r: region_errors(pred_masks[r], ref_masks[r], spacing, boundary_mm) for r in REGIONS}


def grid_round_trip(
    label: sitk.Image, convention: str, preprocessing: PreprocessingSpec, output: OutputSpec
) -> np.ndarray:
    """A reference label taken to a model's processing grid (``glims.training.data.label_on_processing_grid``) and
    back by nearest neighbour, as ``glims segment`` puts its labels back.

    Returns:
        The round-tripped label map (z, y, x) on ``label``'s grid, in the model's labels (BraTS 2023 for glims).
    """
    from .imageio import resample_to
    from .training.data import label_on_processing_grid

    on_grid = label_on_processing_grid(label, convention, preprocessing, output)
    return sitk.GetArrayFromImage(resample_to(on_grid, label, sitk.sitkNearestNeighbor))


def grid_ceiling(
    label: sitk.Image, convention: str, preprocessing: PreprocessingSpec, output: OutputSpec
) -> dict[str, float]:
    """Dice of TC, WT and ET between a reference label and its ``grid_round_trip``: what a model on that processing
    grid scores against this reference if it reproduces its training targets exactly."""
    from .training.labels import detect_convention

    reference = sitk.GetArrayFromImage(label)
    if convention == "auto":
        convention = detect_convention(reference)
    trip = grid_round_trip(label, convention, preprocessing, output)
    ref_masks, trip_masks = region_masks(reference, convention), region_masks(trip, "brats2023")
    return {r: dice(trip_masks[r], ref_masks[r]) for r in REGIONS}
