"""``sceneio.loadDicomSeries``: a DICOM series read into a volume as Slicer's DICOM loader leaves it, so that
``dicomSourceFiles`` finds its files again (real MRML from slicer-core, real series written with pydicom)."""

from __future__ import annotations

import numpy as np
import pydicom
import SimpleITK as sitk

from GLIMSSegmenterLib import sceneio

from dicom_series import write_mr_series


def _image() -> sitk.Image:
    image = sitk.GetImageFromArray(np.arange(5 * 8 * 9, dtype=np.float32).reshape(5, 8, 9))
    image.SetSpacing((1.5, 1.2, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    return image


def test_a_series_loads_in_slice_order_with_its_files_and_instance_uids(headless, scene, tmp_path):
    files = write_mr_series(_image(), tmp_path / "series", seed="load")
    volume, problem = sceneio.loadDicomSeries(headless.volumes, list(reversed(files)), "3: FLAIR")
    assert problem == "" and volume.GetName() == "3: FLAIR"
    assert volume.GetImageData().GetDimensions() == (9, 8, 5)
    assert sceneio.dicomSourceFiles(volume) == [str(f) for f in files]
    assert volume.GetAttribute("DICOM.instanceUIDs").split() == [pydicom.dcmread(f).SOPInstanceUID for f in files]
    assert sceneio.dicomExportProblem(object(), volume) == ""


def test_an_anonymised_series_loads_without_dicom_identity_and_says_why(headless, scene, tmp_path):
    files = write_mr_series(_image(), tmp_path / "series", seed="anonymised")
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.SOPInstanceUID = ""
        dataset.save_as(path)
    volume, problem = sceneio.loadDicomSeries(headless.volumes, files, "anonymised")
    assert volume is not None and volume.GetImageData().GetDimensions() == (9, 8, 5)
    assert "no SOPInstanceUID" in problem
    assert "was not loaded from DICOM" in sceneio.dicomExportProblem(object(), volume)


def test_files_of_two_series_are_not_loaded(headless, scene, tmp_path):
    first = write_mr_series(_image(), tmp_path / "a", seed="first")
    second = write_mr_series(_image(), tmp_path / "b", seed="second")
    volume, problem = sceneio.loadDicomSeries(headless.volumes, first + second, "mixed")
    assert volume is None
    assert problem == "the files hold 2 DICOM series; give the files of one series"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
