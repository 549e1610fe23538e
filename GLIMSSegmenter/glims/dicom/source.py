"""The DICOM series a DICOM output refers to: its instances, read with pydicom, in slice order, and their grid.

The series is read independently of the engine's image reader (SimpleITK): the datasets are sorted along the slice
normal and their grid is rebuilt from ImagePositionPatient, ImageOrientationPatient and PixelSpacing, so the writers
can check that the label image is on exactly that grid.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError
from ..imageio import Geometry

__all__ = ["SourceSeries", "require_dicom_libraries", "read_source_series"]

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
"""What an output needs from every source image to refer to it and to share its patient space."""
INSTALL_HINT = "pip install 'glims[dicom]' (pydicom and highdicom)"


def require_dicom_libraries() -> None:
    """Raise OutputError, with the install command, unless pydicom and highdicom can be imported."""
    missing = []
    for name in ("pydicom", "highdicom"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise OutputError(f"DICOM output needs {' and '.join(missing)}, which is not installed: {INSTALL_HINT}")


@dataclass(frozen=True)
class SourceSeries:
    """One single-frame image series, sorted along the slice normal (the order of the label image's k axis)."""

    folder: Path
    datasets: tuple[Any, ...]
    """``pydicom.Dataset`` per slice (headers, without the pixel data)."""
    geometry: Geometry
    """The grid in ITK's LPS convention: x along the rows (DICOM row direction), y down the columns, z the normal."""

    @property
    def first(self) -> Any:
        return self.datasets[0]

    def describe(self) -> str:
        return f"{self.first.get('Modality', '?')} series {self.first.SeriesInstanceUID} ({len(self.datasets)} slices)"


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_source_series(location: str | os.PathLike | Sequence[str | os.PathLike]) -> SourceSeries:
    """Read one DICOM image series: a folder holding it, or its files (as a DICOM database lists them).

    Raises:
        OutputError: not a folder, no DICOM images in it, several series, unidentified images, multi-frame or
            non-parallel slices, irregular slice spacing.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(location, (str, os.PathLike)):
        folder = Path(location)
        why = f"cannot write DICOM output referring to {folder}"
        if not folder.is_dir():
            raise OutputError(
                f"{why}: not a folder of DICOM files (DICOM output needs the DICOM series the case came from)"
            )
        paths = _dicom_files(folder)
    else:
        paths = [Path(p) for p in location]
        folder = paths[0].parent if paths else Path(".")
        why = f"cannot write DICOM output referring to the {len(paths)} files in {folder}"
    datasets = []
    for path in paths:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)  # the outputs need the headers only
        except (InvalidDicomError, OSError):
            continue
        if "Rows" in dataset and "ImagePositionPatient" in dataset:
            datasets.append(dataset)
    if not datasets:
        raise OutputError(f"{why}: no DICOM images with a position in it")
    series = {ds.SeriesInstanceUID for ds in datasets}
    if len(series) > 1:
        raise OutputError(f"{why}: {len(series)} DICOM series in one folder; give the folder of one series")
    for keyword in REQUIRED_UIDS:
        if any(not str(ds.get(keyword, "") or "").strip() for ds in datasets):
            raise OutputError(
                f"{why}: its images have no {keyword} (anonymised with the UIDs removed?); a DICOM "
                "object can only refer to identified images"
            )
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise OutputError(f"{why}: multi-frame images are not supported; give a series of single-frame slices")
    return SourceSeries(folder, *_sorted_with_geometry(datasets, why))


def _sorted_with_geometry(datasets: list, why: str) -> tuple[tuple, Geometry]:
    orientation = np.array(datasets[0].ImageOrientationPatient, float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    for ds in datasets:
        if not np.allclose(np.array(ds.ImageOrientationPatient, float), orientation, atol=1e-4):
            raise OutputError(f"{why}: the slices are not parallel (ImageOrientationPatient differs)")
    datasets = sorted(datasets, key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, float))))
    positions = np.array([ds.ImagePositionPatient for ds in datasets], float)
    steps = np.diff(positions @ normal)
    if len(datasets) < 2 or steps.min() <= 1e-3:
        raise OutputError(f"{why}: the series needs at least two slices at distinct positions")
    if np.ptp(steps) > 1e-3 * max(1.0, steps.mean()) * 10:
        raise OutputError(f"{why}: the slice spacing is irregular ({steps.min():g} to {steps.max():g} mm)")
    row_spacing, column_spacing = (float(v) for v in datasets[0].PixelSpacing)
    x, y, z = (float(v) for v in positions[0])
    geometry = Geometry(
        size=(int(datasets[0].Columns), int(datasets[0].Rows), len(datasets)),
        spacing=(column_spacing, row_spacing, float(steps.mean())),
        origin=(x, y, z),
        direction=tuple(float(v) for v in np.column_stack([row_dir, col_dir, normal]).ravel()),
    )
    return tuple(datasets), geometry
