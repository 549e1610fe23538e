"""From input files to the network's input array, and the way back to the reference grid.

Steps (each driven by the model's catalog entry):

1. read every input and check it (``imageio.read_image``);
2. bring all inputs onto the reference (first) input's grid in physical space, refusing inputs whose field of view
   does not overlap the reference's;
3. reorient (axis permutation/flip only) to the model's orientation (LPS) and, if the model has a target spacing,
   resample to it: this is the *processing grid*;
4. stack channels into a float32 array (C, X, Y, Z) — voxel (i, j, k) order as nibabel/MONAI load NIfTI, which is
   how the reference model saw its training data — and normalise intensities;
5. crop to the foreground bounding box, plus ``crop_margin`` voxels (default 8). The BraTS preset uses no margin:
   its background is exactly zero after normalisation, so the windows' zero padding at the crop's edge shows the
   network the same zeros the uncropped image holds, and a tight box needs fewer windows (a 1 mm BraTS brain:
   18 windows of 96^3 at overlap 0.5 instead of 27).

``CasePreparation`` keeps what is needed to put an output computed on the cropped processing grid back onto the
reference grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .catalog_sections import CROP_MARGIN, IntensitySpec, PreprocessingSpec
from .errors import InputError
from .imageio import Geometry, fields_overlap, read_image, reorient, resample_to

__all__ = [
    "CasePreparation",
    "prepare_images",
    "prepare_case",
    "to_processing_grid",
    "normalize_intensity",
    "foreground_box",
    "to_xyz",
    "from_xyz",
]


def to_xyz(image: sitk.Image) -> np.ndarray:
    """SimpleITK image -> numpy array indexed (x, y, z)."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def from_xyz(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    """numpy (x, y, z) array -> SimpleITK image with ``like``'s geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    return Geometry.of(like).apply(image)


@dataclass
class CasePreparation:
    """A case on the processing grid, cropped, plus the way back."""

    array: np.ndarray
    """(C, X, Y, Z) float32 network input (cropped, normalised)."""
    reference: sitk.Image
    """The reference input as read (its grid is the output grid)."""
    processing: sitk.Image
    """A single-channel image on the full (uncropped) processing grid, for its geometry."""
    box: tuple[slice, slice, slice]
    """Where ``array`` sits inside the processing grid (x, y, z)."""
    foreground: np.ndarray
    """Boolean (X, Y, Z) mask of the processing grid's foreground (e.g. brain), uncropped."""

    def uncrop(self, channels: np.ndarray, fill: Sequence[float] | float = 0.0) -> np.ndarray:
        """(K, x, y, z) on the crop -> (K, X, Y, Z) on the full processing grid, ``fill`` outside (per channel)."""
        size = self.processing.GetSize()
        full = np.empty((channels.shape[0], *size), dtype=channels.dtype)
        fills = np.broadcast_to(np.asarray(fill, dtype=channels.dtype), (channels.shape[0],))
        full[:] = fills[:, None, None, None]
        every_channel = (slice(None), *self.box)  # (a name of its own: mypy misreads a[(x, *y)] as a[x, *y])
        full[every_channel] = channels
        return full

    def to_reference(
        self, channels: np.ndarray, interpolator: int, fill: Sequence[float] | float = 0.0
    ) -> list[sitk.Image]:
        """Channels on the full processing grid -> images on the reference grid (one per channel)."""
        fills = np.broadcast_to(np.asarray(fill, dtype=np.float64), (channels.shape[0],))
        out = []
        for channel, value in zip(channels, fills, strict=False):
            image = from_xyz(channel, self.processing)
            out.append(resample_to(image, self.reference, interpolator, float(value)))
        return out


def prepare_images(
    paths: Sequence[str | Path], names: Sequence[str], orientation: str | None, spacing: Sequence[float] | None
) -> tuple[list[sitk.Image], sitk.Image]:
    """Read inputs, align them to the first one, reorient and optionally resample.

    Returns:
        (channel images on the processing grid, reference image as read).

    Raises:
        InputError: unreadable/unsuitable input, or fields of view that do not overlap.
    """
    images = [read_image(p, n) for p, n in zip(paths, names, strict=False)]
    reference = images[0]
    aligned = [reference]
    for image, name in zip(images[1:], names[1:], strict=False):
        if not fields_overlap(image, reference):
            raise InputError(
                f"{name}: its field of view does not overlap the reference input {names[0]} "
                f"({Geometry.of(image).describe()} vs {Geometry.of(reference).describe()}); "
                "are these images of the same patient and study?"
            )
        aligned.append(resample_to(image, reference))
    return [to_processing_grid(image, orientation, spacing) for image in aligned], reference


def to_processing_grid(image: sitk.Image, orientation: str | None, spacing: Sequence[float] | None) -> sitk.Image:
    """Reorient ``image`` (axis permutation/flip only) and, with a ``spacing`` (mm, x y z), resample it there
    (linear interpolation): the model's processing grid. An image already on it comes back unchanged."""
    if orientation:
        image = reorient(image, orientation)
    if spacing:
        image = _resample_spacing(image, spacing)
    return image


def _resample_spacing(image: sitk.Image, spacing: Sequence[float]) -> sitk.Image:
    old_size, old_spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    new_spacing = np.array(spacing, dtype=float)
    if np.allclose(old_spacing, new_spacing, rtol=0.02):
        return image
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    # Keep the physical centre of the first voxel's corner: origin shifts by half the change of voxel size.
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ ((new_spacing - old_spacing) / 2)
    return sitk.Resample(
        image,
        new_size.tolist(),
        sitk.Transform(),
        sitk.sitkLinear,
        origin.tolist(),
        new_spacing.tolist(),
        image.GetDirection(),
        0.0,
        image.GetPixelID(),
    )


def normalize_intensity(array: np.ndarray, rule: IntensitySpec) -> np.ndarray:
    """Normalise a (C, X, Y, Z) float32 array in place and return it.

    Rules: ``zscore_nonzero`` — per channel, (v - mean) / std over non-zero voxels, zeros stay 0; ``window`` —
    clip to [min, max] and scale to [0, 1].
    """
    if rule.kind == "zscore_nonzero":
        for channel in array:
            mask = channel != 0
            if not mask.any():
                continue
            values = channel[mask]
            mean, std = values.mean(dtype=np.float64), values.std(dtype=np.float64)
            channel[mask] = (values - mean) / (std if std > 0 else 1.0)
    else:
        assert rule.min is not None and rule.max is not None  # a window's bounds are checked when it is read
        lo, hi = rule.min, rule.max
        np.clip(array, lo, hi, out=array)
        array -= lo
        array /= hi - lo
    return array


def foreground_mask(array: np.ndarray, rule: IntensitySpec) -> np.ndarray:
    """Voxels that belong to the subject: any non-zero channel (skull-stripped MRI) or body (CT above -500 HU)."""
    subject = array > -500 if rule.kind == "window" else array != 0
    return np.asarray(subject.any(axis=0))  # (numpy's stubs type an axis reduction as "scalar or array")


def foreground_box(mask: np.ndarray, min_size: Sequence[int], margin: int = CROP_MARGIN) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` and to at least ``min_size`` (clipped to the array)."""
    shape = mask.shape
    if not mask.any():
        return tuple(slice(0, s) for s in shape)
    box = []
    for axis, size in enumerate(shape):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        lo, hi = max(0, hit[0] - margin), min(size, hit[-1] + 1 + margin)
        need = min(size, min_size[axis])
        if hi - lo < need:  # grow around the centre to the window size, staying inside the array
            lo = max(0, min((lo + hi) // 2 - need // 2, size - need))
            hi = lo + need
        box.append(slice(int(lo), int(hi)))
    return tuple(box)


def prepare_case(
    paths: Sequence[str | Path],
    names: Sequence[str],
    preprocessing: PreprocessingSpec,
    roi_size: Sequence[int],
    crop: bool | None = None,
) -> CasePreparation:
    """Everything from files to the cropped, normalised network input (see module docstring); ``crop`` None
    follows the model's ``crop_foreground``."""
    channels, reference = prepare_images(paths, names, preprocessing.orientation, preprocessing.spacing)
    raw = np.stack([to_xyz(image) for image in channels]).astype(np.float32, copy=False)
    rule = preprocessing.intensity
    mask = foreground_mask(raw, rule)
    do_crop = preprocessing.crop_foreground if crop is None else crop
    margin = preprocessing.crop_margin
    x, y, z = foreground_box(mask, roi_size, margin) if do_crop else tuple(slice(0, s) for s in mask.shape)
    box = (x, y, z)
    every_channel = (slice(None), *box)  # (a name of its own: mypy misreads a[(x, *y)] as a[x, *y])
    array = normalize_intensity(np.ascontiguousarray(raw[every_channel]), rule)
    return CasePreparation(array, reference, channels[0], box, mask)
