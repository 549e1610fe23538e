"""DICOM Segmentation objects (SEG) through highdicom.

Binary segmentation (one bit per voxel and segment): the engine's result is a thresholded label map, so binary
frames hold all of it; the per-channel probabilities are a separate output (``--probabilities``). Each segment is
stored as its own stack of frames, so segments may overlap (Slicer segments edited by hand can) and nothing is
merged. Empty frames are left out, as the standard allows; a segment that is empty everywhere is still described
(with no frames), so that the file lists every region the model looks for, found or not.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .content import Algorithm, Code, ExportSegment
from .source import SourceSeries

if TYPE_CHECKING:  # highdicom and pydicom are imported when a SEG is written
    from highdicom.seg import Segmentation, SegmentDescription
    from highdicom.sr import CodedConcept
    from pydicom import Dataset

__all__ = ["SEG_MANUFACTURER", "build_dicom_seg", "write_dicom_seg"]

SEG_MANUFACTURER = "GLIMS Segmenter"
SERIES_NUMBER = 9901


def _coded(code: Code) -> CodedConcept:
    from highdicom.sr import CodedConcept

    scheme, value, meaning = code
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _type_concept(segment: ExportSegment) -> tuple[CodedConcept, Dataset | None]:
    """The segmented property type, with its modifier (e.g. Kidney + Right) when there is one."""
    concept = _coded(segment.type)
    if segment.type_modifier is not None:
        from pydicom import Dataset

        modifier = Dataset()
        modifier.CodeValue, modifier.CodingSchemeDesignator, modifier.CodeMeaning = (
            segment.type_modifier[1],
            segment.type_modifier[0],
            segment.type_modifier[2],
        )
        return concept, modifier
    return concept, None


def _descriptions(segments: Sequence[ExportSegment], algorithm: Algorithm) -> list[SegmentDescription]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.DCM.ArtificialIntelligence,
        version=algorithm.version,
        source=algorithm.software or None,
        parameters=algorithm.parameters() or None,
    )
    out = []
    for number, segment in enumerate(segments, start=1):
        concept, modifier = _type_concept(segment)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.name[:64],
            segmented_property_category=_coded(segment.category),
            segmented_property_type=concept,
            algorithm_type=segment.algorithm_type,
            algorithm_identification=identification if segment.algorithm_type != "MANUAL" else None,
            anatomic_regions=[_coded(segment.region)] if segment.region else None,
            display_color=hd.color.CIELabColor.from_rgb(*(int(c) for c in segment.color)),
        )
        if modifier is not None:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
        out.append(description)
    return out


def build_dicom_seg(source: SourceSeries, segments: Sequence[ExportSegment], algorithm: Algorithm) -> Segmentation:
    """The SEG dataset (``highdicom.seg.Segmentation``) for ``segments`` on ``source``'s slices.

    Patient, study and frame of reference come from the source series; every frame refers to its source instance.
    """
    import highdicom as hd

    stack = np.stack([s.mask for s in segments], axis=-1).astype(bool)
    return hd.seg.Segmentation(
        source_images=list(source.datasets),
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(segments, algorithm),
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SEG_MANUFACTURER,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.software or algorithm.version,
        device_serial_number=algorithm.version,
        content_description=f"{algorithm.name} {algorithm.version}"[:64],
        content_label="GLIMS",
        omit_empty_frames=True,
        series_description=f"GLIMS {algorithm.name} segmentation"[:64],
    )


def write_dicom_seg(
    source: SourceSeries, segments: Sequence[ExportSegment], algorithm: Algorithm, path: str | os.PathLike
) -> Path:
    """Write a DICOM SEG file at ``path`` (the caller stages it for an atomic write)."""
    build_dicom_seg(source, segments, algorithm).save_as(path, enforce_file_format=True)
    return Path(path)
