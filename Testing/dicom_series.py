"""Test helpers: real DICOM image series written with pydicom (MR Image Storage, one file per slice), and an
identified copy of the shared CT series (whose UIDs were blanked when it was anonymised)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
