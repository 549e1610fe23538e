"""The module's exports never overwrite a file the scene was loaded from (real MRML, generated volume)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from glims.errors import OutputError
from GLIMSSegmenterLib import sceneio

MODEL = "tiny-brats"


@pytest.fixture
def loaded(headless, scene, logic, tmp_path):
    """A volume loaded from a file and a segmentation of it (from a .seg.nrrd written by the engine's writer)."""
    from glims.segfile import write_seg_nrrd

    array = np.zeros((20, 24, 28), np.float32)
    array[5:15, 6:18, 7:21] = 300.0
    image = sitk.GetImageFromArray(array)
    volume_path = tmp_path / "flair.nii.gz"
    sitk.WriteImage(image, str(volume_path))
    volume = headless.load_volume(volume_path, "flair")
    labels = sitk.GetImageFromArray((array > 0).astype(np.uint8) * 2)
    labels.CopyInformation(image)
    seg_path = write_seg_nrrd(labels, logic.model(MODEL).labels, tmp_path / "engine.seg.nrrd")
    return volume_path, sceneio.readSegmentationFile(seg_path, volume, "tumour")


def test_an_export_onto_a_loaded_input_is_refused_and_the_input_is_unchanged(logic, loaded, tmp_path):
    volume_path, segmentation = loaded
    original = volume_path.read_bytes()
    link = tmp_path / "link.nii.gz"
    link.symlink_to(volume_path)
    for destination in (volume_path, tmp_path / "sub" / ".." / "flair.nii.gz", link):
        (tmp_path / "sub").mkdir(exist_ok=True)
        for fileFormat in ("nifti", "seg.nrrd"):
            with pytest.raises(OutputError, match="would overwrite the input"):
                logic.export(segmentation, fileFormat, destination)
    assert volume_path.read_bytes() == original
    [written] = logic.export(segmentation, "nifti", tmp_path / "tumour.nii.gz")  # elsewhere it is written
    assert written.is_file() and volume_path.read_bytes() == original
