"""RT Structure Set objects (RTSTRUCT) built with pydicom's dataset API.

One ROI per segment; each ROI holds, per slice, the ``CLOSED_PLANAR`` contours of ``glims.dicom.contours``
(marching squares, in patient coordinates, mm) with a reference to that slice's image. A hole is a contour of its
own inside the outer one: readers that combine a slice's contours with the even-odd rule (XOR) get the mask back.
Empty segments are listed as ROIs without contours. Each ROI is marked ``AUTOMATIC`` and carries the algorithm
identification (model id, version, weights sha256) and its code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .content import Algorithm, Code, ExportSegment
from .contours import mask_contours
from .seg import SEG_MANUFACTURER
from .source import SourceSeries

if TYPE_CHECKING:  # pydicom is imported when a structure set is written
    from pydicom import Dataset
    from pydicom.dataset import FileDataset

__all__ = ["RT_STRUCTURE_SET_STORAGE", "build_rtstruct", "write_rtstruct", "slice_points_to_patient"]

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SERIES_NUMBER = 9902
EXPLICIT_VR_MAX_BYTES = 0xFFFE
_PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def slice_points_to_patient(points_cr: np.ndarray, image: Dataset) -> np.ndarray:
    """(column, row) pixel-index points of one slice -> (points, 3) patient coordinates in mm (DICOM LPS)."""
    orientation = np.array(image.ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in image.PixelSpacing)
    origin = np.array(image.ImagePositionPatient, float)
    return (
        origin
        + np.outer(points_cr[:, 0] * column_spacing, orientation[:3])
        + np.outer(points_cr[:, 1] * row_spacing, orientation[3:])
    )


def _code_item(code: Code) -> Dataset:
    from pydicom import Dataset

    item = Dataset()
    item.CodingSchemeDesignator, item.CodeValue, item.CodeMeaning = code[0], code[1], code[2][:64]
    return item


def _image_reference(image: Dataset) -> Dataset:
    from pydicom import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def _referenced_frame_of_reference(source: SourceSeries) -> Dataset:
    from pydicom import Dataset

    series = Dataset()
    series.SeriesInstanceUID = source.first.SeriesInstanceUID
    series.ContourImageSequence = [_image_reference(ds) for ds in source.datasets]
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, as the IOD asks)
    study.ReferencedSOPInstanceUID = source.first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = source.first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return frame


def _algorithm_identification(algorithm: Algorithm) -> Dataset:
    from pydicom import Dataset

    item = Dataset()
    item.AlgorithmFamilyCodeSequence = [_code_item(("DCM", "123110", "Artificial Intelligence"))]
    item.AlgorithmName = algorithm.name[:64]
    item.AlgorithmVersion = algorithm.version[:64]
    parameters = algorithm.parameters()
    if parameters:
        item.AlgorithmParameters = ";".join(f"{k}={v}" for k, v in parameters.items())
    if algorithm.software:
        item.AlgorithmSource = algorithm.software[:64]
    return item


def _roi_contours(number: int, segment: ExportSegment, source: SourceSeries) -> Dataset:
    from pydicom import Dataset

    roi = Dataset()
    roi.ReferencedROINumber = number
    roi.ROIDisplayColor = [int(c) for c in segment.color]
    items = []
    for index in np.flatnonzero(segment.mask.any(axis=(1, 2))):
        image = source.datasets[index]
        for loop in mask_contours(segment.mask[index]):
            points = slice_points_to_patient(loop, image)
            contour = Dataset()
            contour.ContourImageSequence = [_image_reference(image)]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.4f}".rstrip("0").rstrip(".") for v in points.ravel()]
            items.append(contour)
    if items:
        roi.ContourSequence = items
    return roi


def build_rtstruct(source: SourceSeries, segments: Sequence[ExportSegment], algorithm: Algorithm) -> FileDataset:
    """The RTSTRUCT ``pydicom.FileDataset`` for ``segments`` on ``source``'s slices (patient and study kept)."""
    from pydicom import Dataset, FileMetaDataset
    from pydicom.dataset import FileDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

    now = datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RT_STRUCTURE_SET_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)  # "": not read from a file
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in _PATIENT_AND_STUDY:
        if keyword in source.first:
            setattr(ds, keyword, source.first.data_element(keyword).value)
        elif keyword in _TYPE2:
            setattr(ds, keyword, "")
    ds.FrameOfReferenceUID = source.first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = source.first.get("PositionReferenceIndicator", "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = f"GLIMS {algorithm.name} structures"[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = SEG_MANUFACTURER
    ds.ManufacturerModelName = algorithm.name[:64]
    ds.SoftwareVersions = (algorithm.software or algorithm.version)[:64]
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "GLIMS"
    ds.StructureSetName = f"{algorithm.name} {algorithm.version}"[:64]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ReferencedFrameOfReferenceSequence = [_referenced_frame_of_reference(source)]
    identification = _algorithm_identification(algorithm)
    rois, contours, observations = [], [], []
    for number, segment in enumerate(segments, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = source.first.FrameOfReferenceUID
        roi.ROIName = segment.name[:64]
        roi.ROIGenerationAlgorithm = segment.algorithm_type
        if segment.algorithm_type != "MANUAL":
            roi.ROIGenerationDescription = f"{algorithm.name} {algorithm.version}"[:64]
            roi.ROIDerivationAlgorithmIdentificationSequence = [identification]
        rois.append(roi)
        contours.append(_roi_contours(number, segment, source))
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIIdentificationCodeSequence = [_code_item(segment.type)]
        anatomical = segment.category[1] == "123037004"
        observation.RTROIInterpretedType = "ORGAN" if anatomical else ""
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    return ds


def _longest_contour_bytes(ds: Dataset) -> int:
    return max(
        (
            len("\\".join(str(v) for v in contour.ContourData))
            for roi in ds.ROIContourSequence
            for contour in roi.get("ContourSequence", [])
        ),
        default=0,
    )


def write_rtstruct(
    source: SourceSeries, segments: Sequence[ExportSegment], algorithm: Algorithm, path: str | os.PathLike
) -> Path:
    """Write an RTSTRUCT file at ``path`` (the caller stages it for an atomic write).

    Explicit VR little endian; implicit VR little endian (the default transfer syntax every reader supports) when
    a contour is too long for an explicit-VR element (64 KiB of text).
    """
    from pydicom.uid import ImplicitVRLittleEndian

    ds = build_rtstruct(source, segments, algorithm)
    if _longest_contour_bytes(ds) > EXPLICIT_VR_MAX_BYTES:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
