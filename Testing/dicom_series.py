"""Test helpers: real DICOM image series written with pydicom (MR Image Storage, one file per slice), an identified
copy of the shared CT series (whose UIDs were blanked when it was anonymised), and readers that are not ours for
DICOM SEG (highdicom), RT Structure Sets (pydicom + matplotlib's point-in-polygon test) and dicom3tools' validator."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_mr_series(image: sitk.Image, folder: Path, *, seed: str = "glims-test", patient: str = "GLIMS^Test",
                    description: str = "FLAIR") -> list[Path]:
    """Write ``image`` (3D, any orientation) as an MR series: slices along its third axis, int16 pixels.

    Returns:
        The files, in slice order.
    """
    from pydicom import Dataset, FileMetaDataset
    from pydicom.dataset import FileDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    array = np.rint(sitk.GetArrayFromImage(image)).clip(-32768, 32767).astype(np.int16)  # (slices, rows, columns)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    study, series, frame = (generate_uid(entropy_srcs=[seed, part]) for part in ("study", "series", "frame"))
    files = []
    for k in range(array.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[seed, "image", str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(None, Dataset(), file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime = "20260101", "120000", "20260101", "120500"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "A123", "", "1"
        ds.Modality, ds.Manufacturer, ds.SeriesDescription = "MR", "GLIMS tests", description
        ds.Laterality, ds.PatientPosition = "", "HFS"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, "GLIMS-0001", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber, ds.PositionReferenceIndicator = 3, k + 1, ""
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "IR", "SK", "", "3D"
        ds.RepetitionTime, ds.EchoTime, ds.InversionTime, ds.EchoTrainLength = 9000, 120, 2500, 1
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]  # between rows, between columns
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = array[k].tobytes()
        path = folder / f"MR.{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def identified_ct_copy(series_folder: Path, folder: Path) -> Path:
    """Copy of the shared CT series with its blanked UIDs filled in (instance and class UIDs from each file's meta
    header, new study and series UIDs), as an anonymiser that keeps UIDs would have left it."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(entropy_srcs=["ct-study"]), generate_uid(entropy_srcs=["ct-series"])
    for path in sorted(series_folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.save_as(folder / path.name)
    return folder


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines of dicom3tools' validator (warnings are allowed; see docs/DICOM.md)."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (apt package dicom3tools) is not installed")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def seg_masks(path: Path, source) -> tuple[object, np.ndarray]:
    """The SEG read by highdicom, and its (slices, rows, columns, segments) masks on the source instances."""
    import highdicom

    seg = highdicom.seg.segread(path)
    uids = [ds.SOPInstanceUID for ds in source.datasets]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, assert_missing_frames_are_empty=True)
    return seg, pixels.astype(bool)


def rtstruct_masks(path: Path, source) -> dict[str, np.ndarray]:
    """ROI name -> (slices, rows, columns) mask: each contour mapped back to its referenced slice's pixel indices
    (checked to lie in that slice's plane) and filled at the pixel centres, contours of a slice combined by XOR."""
    import pydicom
    from matplotlib.path import Path as PolygonPath

    previous = pydicom.config.use_DS_numpy
    pydicom.config.use_DS_numpy = True  # ContourData as numpy arrays: thousands of contours read in a second
    try:
        ds = pydicom.dcmread(path)
        ds.ROIContourSequence  # noqa: B018  (parse while the option is set)
        for roi in ds.ROIContourSequence:
            for contour in roi.get("ContourSequence", []):
                contour.ContourData  # noqa: B018
    finally:
        pydicom.config.use_DS_numpy = previous
    index_of = {image.SOPInstanceUID: k for k, image in enumerate(source.datasets)}
    names = {roi.ROINumber: roi.ROIName for roi in ds.StructureSetROISequence}
    shape = (len(source.datasets), int(source.first.Rows), int(source.first.Columns))
    masks = {}
    for roi in ds.ROIContourSequence:
        mask = np.zeros(shape, bool)
        for contour in roi.get("ContourSequence", []):
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            k = index_of[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            image = source.datasets[k]
            points = np.array(contour.ContourData, float).reshape(-1, 3)
            assert len(points) == contour.NumberOfContourPoints
            orientation = np.array(image.ImageOrientationPatient, float)
            offset = points - np.array(image.ImagePositionPatient, float)
            assert np.abs(offset @ np.cross(orientation[:3], orientation[3:])).max() < 1e-3  # in the slice plane
            row_spacing, column_spacing = (float(v) for v in image.PixelSpacing)
            polygon = np.column_stack([offset @ orientation[:3] / column_spacing, offset @ orientation[3:] / row_spacing])
            (c0, r0), (c1, r1) = np.floor(polygon.min(0)).astype(int), np.ceil(polygon.max(0)).astype(int) + 1
            c0, r0 = max(c0, 0), max(r0, 0)  # centres in the polygon's bounding box (the only ones it can hold)
            rows, columns = np.mgrid[r0:min(r1, shape[1]), c0:min(c1, shape[2])]
            inside = PolygonPath(polygon).contains_points(np.column_stack([columns.ravel(), rows.ravel()]))
            mask[k, rows.ravel(), columns.ravel()] ^= inside
        masks[names[roi.ReferencedROINumber]] = mask
    return masks
