"""From a segmentation to DICOM files: the one entry point of every front end.

``DicomRequest.prepare`` runs before any work (libraries present, output paths chosen, the referenced series
readable and identified), so a request that cannot be met fails in a second with one line. ``write`` then puts the
label image on the series' grid, describes each segment and writes the SEG and/or RTSTRUCT, staged for an atomic
write.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..catalog import ModelSpec
from ..errors import OutputError
from ..imageio import Geometry, fields_overlap
from ..outputs import OutputSet
from .content import Algorithm, ExportSegment, segments_from_labels
from .source import SourceSeries, read_source_series, require_dicom_libraries

__all__ = ["DICOM_OUTPUTS", "DicomRequest", "algorithm_of", "labels_on_series", "write_dicom_objects"]

logger = logging.getLogger(__name__)

DICOM_OUTPUTS = ("dicom_seg", "dicom_rtstruct")
"""Output keys: DICOM Segmentation, RT Structure Set."""


def algorithm_of(spec: ModelSpec) -> Algorithm:
    """The algorithm identification of a catalog model."""
    return Algorithm(spec.id, spec.version, tuple(w.sha256 for w in spec.weights), f"glims {__version__}")


def labels_on_series(labels: sitk.Image, source: SourceSeries) -> np.ndarray:
    """The label image as a (slices, rows, columns) array on the series' grid.

    Labels on another grid (a reference series named separately) are resampled in physical space (nearest
    neighbour).

    Raises:
        OutputError: the label image and the series do not overlap.
    """
    if Geometry.of(labels).matches(source.geometry):
        return sitk.GetArrayFromImage(labels)
    grid = source.geometry.apply(sitk.Image(list(source.geometry.size), sitk.sitkUInt8))
    if not fields_overlap(labels, grid):
        raise OutputError(
            f"the segmentation ({Geometry.of(labels).describe()}) does not cover the DICOM series "
            f"{source.folder} ({source.geometry.describe()})"
        )
    logger.info("resampling the labels onto the grid of %s", source.describe())
    return sitk.GetArrayFromImage(sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def write_dicom_objects(
    source: SourceSeries,
    segments: Sequence[ExportSegment],
    algorithm: Algorithm,
    targets: Mapping[str, str | os.PathLike],
    pending: OutputSet | None = None,
) -> dict[str, Path]:
    """Write the DICOM outputs named in ``targets`` (keys from ``DICOM_OUTPUTS``), all or nothing.

    Args:
        source: the series the segments are on.
        segments: each with a mask of the series' (slices, rows, columns) shape; all are written, empty ones too.
        algorithm: what made them.
        targets: output key -> file.
        pending: stage the files into this set (the caller commits); None: commit here.

    Raises:
        OutputError: a mask does not fit the series, or a file cannot be built or written.
    """
    from .rtstruct import write_rtstruct
    from .seg import write_dicom_seg

    shape = (len(source.datasets), int(source.first.Rows), int(source.first.Columns))
    for segment in segments:
        if segment.mask.shape != shape:
            raise OutputError(f"segment '{segment.name}' is {segment.mask.shape} voxels, the DICOM series {shape}")
    if not segments:
        raise OutputError("no segments to write to DICOM")
    writers = {"dicom_seg": write_dicom_seg, "dicom_rtstruct": write_rtstruct}
    own = pending is None
    staging = pending if pending is not None else OutputSet()
    try:
        for key, target in targets.items():
            try:
                writers[key](source, segments, algorithm, staging.staged(target))
            except (ValueError, TypeError, AttributeError, OSError) as err:
                raise OutputError(f"cannot write {target}: {str(err).splitlines()[0][:200]}") from None
        if own:
            staging.commit()
    except BaseException:
        if own:
            staging.discard()
        raise
    return {key: Path(target) for key, target in targets.items()}


@dataclass
class DicomRequest:
    """DICOM outputs asked of a segmentation job, checked before the job starts."""

    targets: dict[str, Path]
    source: SourceSeries

    @classmethod
    def prepare(
        cls, targets: Mapping[str, str | os.PathLike | None], reference: str | os.PathLike
    ) -> DicomRequest | None:
        """Check a request (None when no DICOM output is asked for).

        Args:
            targets: output key (``DICOM_OUTPUTS``) -> file or None.
            reference: folder of the DICOM series the outputs refer to.

        Raises:
            OutputError: pydicom/highdicom missing, ``reference`` is not a folder of one identified DICOM series.
        """
        chosen = {k: Path(v) for k, v in targets.items() if v is not None}
        if not chosen:
            return None
        require_dicom_libraries()
        reference = Path(reference)
        if not reference.exists():
            raise OutputError(f"cannot write DICOM output: the DICOM series folder {reference} does not exist")
        if not reference.is_dir():
            raise OutputError(
                "cannot write DICOM output: it must refer to the DICOM series the case came from, and "
                f"{reference.name} is a file, not a DICOM series folder (give the series folder as the input, "
                "or as --dicom-reference)"
            )
        return cls(chosen, read_source_series(reference))

    def write(self, labels: sitk.Image, spec: ModelSpec, pending: OutputSet) -> dict[str, Path]:
        """Stage the outputs for the model's ``labels`` (a label image, any grid overlapping the series)."""
        segments = segments_from_labels(labels_on_series(labels, self.source), spec.labels)
        return write_dicom_objects(self.source, segments, algorithm_of(spec), self.targets, pending)
