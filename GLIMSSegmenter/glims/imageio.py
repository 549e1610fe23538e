"""Reading, checking, re-gridding and writing images (SimpleITK; the one module that reads and writes image files).

Arrays are numpy (z, y, x) as SimpleITK gives them; geometry stays in ITK's (x, y, z) physical convention (LPS).
Inputs on different grids are brought onto the reference grid by resampling in physical space, never by resizing
arrays. Writes are atomic.

Nothing is read silently wrong: files are scanned first (``glims.filescan``: truncation, and for NIfTI NaN/Inf and
sheared axes, which ITK would hide), and every image read is refused when its voxel spacing lies outside
``PLAUSIBLE_SPACING_MM``, its axes are not perpendicular, or its values do not fit the float32 the models compute in.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError, OutputError
from .fileio import current_umask
from .filescan import is_sheared, scan_image_file, sheared_message

__all__ = [
    "Geometry",
    "read_image",
    "read_label_image",
    "check_volume",
    "check_geometry",
    "check_input_path",
    "PLAUSIBLE_SPACING_MM",
    "resample_to",
    "reorient",
    "physical_bounds",
    "fields_overlap",
    "write_image",
    "check_image_target",
    "ensure_writable",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
PLAUSIBLE_SPACING_MM = (0.05, 20.0)
"""Voxel sizes (mm) accepted on every axis. Clinical MRI and CT lie well inside (0.2 mm in-plane to 10 mm slices);
a spacing outside is a header written in other units (0.001: metres; 1000: micrometres) or a damaged header, and
would make every volume, distance and resampling wrong."""


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of an image in ITK's physical (LPS) convention."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def matches(self, other: Geometry, tolerance: float = 1e-4) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=tolerance)
            and np.allclose(self.origin, other.origin, atol=tolerance * 100)
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )

    def apply(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def describe(self) -> str:
        return f"{'x'.join(map(str, self.size))} voxels of {'x'.join(f'{s:g}' for s in self.spacing)} mm"


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder}: a folder, but no DICOM series found in it")
    if len(series) > 1:
        raise InputError(f"{folder}: {len(series)} DICOM series found; give the folder of one series")
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    return reader.Execute()


def check_input_path(path: str | os.PathLike, label: str) -> Path:
    """Check that an input path leads to something; returns it.

    Raises:
        InputError: not found, a symbolic link loop, a link to nothing, or not accessible.
    """
    path = Path(path)
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(
                f"{label}: {path} is a symbolic link loop (it leads back to itself through links)"
            ) from None
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            if path.is_symlink():
                raise InputError(
                    f"{label}: {path} is a symbolic link to nothing ({os.readlink(path)} does not exist)"
                ) from None
            raise InputError(f"{label}: file not found: {path}") from None
        raise InputError(f"{label}: cannot read {path}: {err.strerror or err}") from None
    return path


def _read_checked_file(path: str | os.PathLike, label: str) -> tuple[Path, sitk.Image]:
    """Read an image file or DICOM folder with ITK after the checks ITK does not make."""
    path = check_input_path(path, label)
    if path.is_file():
        scan_image_file(path, label)
    try:
        image = _read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()
        detail = next((line for line in reason if "ERROR" in line or "rror" in line), reason[-1] if reason else "")
        raise InputError(f"{label}: cannot read {path.name} as an image ({detail.strip()[:200]})") from None
    return path, image


def read_image(path: str | os.PathLike, name: str | None = None) -> sitk.Image:
    """Read a 3D scalar image (NIfTI, NRRD, MHA, or a DICOM series folder) as float32 and check it.

    Raises:
        InputError: missing, unreadable, truncated or corrupt file; not 3D; several components; NaN/Inf; values
            beyond float32; constant; implausible spacing; axes not perpendicular.
    """
    path = Path(path)
    path, image = _read_checked_file(path, name or path.name)
    check_volume(image, name or path.name)
    return sitk.Cast(image, sitk.sitkFloat32)


def read_label_image(path: str | os.PathLike, name: str | None = None) -> sitk.Image:
    """Read a label map (kept in its own pixel type) with the file and geometry checks of ``read_image``.

    Raises:
        InputError: missing, unreadable, truncated or corrupt file; not a single-channel 3D image; NaN/Inf;
            implausible spacing; axes not perpendicular.
    """
    path = Path(path)
    label = name or f"label map {path.name}"
    path, image = _read_checked_file(path, label)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{label}: a label map must be a single-channel 3D image ({image.GetDimension()}D, "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel)"
        )
    check_geometry(image, label)
    _refuse_non_finite(sitk.GetArrayViewFromImage(image), label)
    return image


def _refuse_non_finite(array: np.ndarray, label: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{label}: {int((~np.isfinite(array)).sum())} voxels are NaN or infinite")


def check_geometry(image: sitk.Image, label: str) -> None:
    """Refuse a voxel grid no scan has: spacing outside ``PLAUSIBLE_SPACING_MM``, axes not perpendicular.

    Raises:
        InputError: with the spacing or the angles, and the likely cause.
    """
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    low, high = PLAUSIBLE_SPACING_MM
    if not np.all(np.isfinite(spacing)) or np.any(spacing < low) or np.any(spacing > high):
        shown = "x".join(f"{s:g}" for s in spacing)
        if np.all(np.isfinite(spacing)) and np.all(spacing > 0) and spacing.max() < low:
            cause = "was it written in metres (or another unit) instead of millimetres?"
        elif np.all(np.isfinite(spacing)) and spacing.min() > high:
            cause = "was it written in micrometres instead of millimetres?"
        else:
            cause = "the file's header is wrong or damaged"
        raise InputError(
            f"{label}: voxel spacing {shown} mm is implausible for a scan (expected {low:g} to {high:g} mm on every "
            f"axis): {cause}"
        )
    columns = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if is_sheared(columns):
        raise InputError(sheared_message(label, columns))


def check_volume(image: sitk.Image, label: str) -> None:
    """Refuse images a 3D segmentation cannot use, with the reason.

    Raises:
        InputError: see ``read_image``.
    """
    dim = image.GetDimension()
    if dim != 3:
        raise InputError(f"{label}: a {dim}D image; a 3D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{label}: {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image); "
            "a single-channel 3D volume is needed"
        )
    if min(image.GetSize()) < 2:
        raise InputError(f"{label}: a single slice ({'x'.join(map(str, image.GetSize()))}); a 3D volume is needed")
    check_geometry(image, label)
    array = sitk.GetArrayViewFromImage(image)
    _refuse_non_finite(array, label)
    if array.dtype.itemsize > 4 and array.dtype.kind == "f":
        largest = float(np.abs(array).max())
        if largest > float(np.finfo(np.float32).max):
            raise InputError(
                f"{label}: values up to {largest:.3g} exceed the float32 range (about 3.4e38) the models compute in"
            )
    if array.min() == array.max():
        raise InputError(f"{label}: the image is constant ({float(array.flat[0]):g} everywhere): empty or blank")


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical bounding box (min, max corners, mm) of the image's voxel centres, half a voxel out."""
    size = np.array(image.GetSize())
    corners = np.array(np.meshgrid(*[(-0.5, s - 0.5) for s in size], indexing="ij")).reshape(3, -1).T
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    return points.min(0), points.max(0)


def fields_overlap(image: sitk.Image, reference: sitk.Image, min_fraction: float = 0.5) -> bool:
    """True when at least ``min_fraction`` of the reference's bounding-box volume is covered by the image's."""
    lo_a, hi_a = physical_bounds(image)
    lo_b, hi_b = physical_bounds(reference)
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None).prod()
    return bool(inter >= min_fraction * (hi_b - lo_b).prod())


def resample_to(
    image: sitk.Image, reference: sitk.Image, interpolator: int = sitk.sitkLinear, default: float = 0.0
) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid in physical space (identity transform)."""
    if Geometry.of(image).matches(Geometry.of(reference)):
        return Geometry.of(reference).apply(sitk.Image(image))
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, image.GetPixelID())


def reorient(image: sitk.Image, orientation: str = "LPS") -> sitk.Image:
    """Permute/flip axes (no interpolation) so that the image's axes point along ``orientation``."""
    return sitk.DICOMOrient(image, orientation)


def ensure_writable(path: str | os.PathLike) -> Path:
    """Check before any work that ``path`` can be created; returns it.

    Raises:
        OutputError: the folder cannot be created or written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".glims-write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    return path


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".seg.nrrd", *IMAGE_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return path.suffix


def check_image_target(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an image output whose format keeps its voxels in a second file (``.mhd``,
    ``.nhdr``): written atomically, that file would carry the temporary name the header was written under. Returns
    the path.

    Raises:
        OutputError: names the formats to use instead.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix in (".mhd", ".nhdr"):
        raise OutputError(
            f"cannot write {path}: a {suffix} header keeps its voxels in a second file; write .mha or .nrrd "
            "(header and voxels in one file)"
        )
    return path


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write atomically: a temporary file with the same extension beside ``path``, then rename.

    Raises:
        OutputError: the file cannot be written, or ``path`` is a ``.mhd``/``.nhdr`` header (its voxels would lie
            in a second file that cannot be renamed with it).
    """
    path = check_image_target(path)
    suffix = _suffix(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        sitk.WriteImage(image, tmp, compress)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise OutputError(f"cannot write {path}: {str(err).strip().splitlines()[-1][:200]}") from None
    return path
