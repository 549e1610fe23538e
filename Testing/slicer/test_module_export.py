"""Exports from the scene lose nothing silently: surface files named safely from any segment name (``/``, ``:``,
unicode, duplicates), one per non-empty segment, and DICOM SEG / RT Structure Set through the engine's writer on a
volume loaded from a real DICOM series, read back with highdicom, pydicom and dciodvfy (real MRML, slicer-core)."""

from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk
import vtk

from GLIMSSegmenterLib import sceneio
from GLIMSSegmenterLib.exportnames import safeFileName, uniqueFileNames

from dicom_series import dciodvfy_errors, rtstruct_masks, seg_masks, write_mr_series

MODEL = "tiny-btcv"
USER_NAMES = ["NCR/NET", "a:b", "Œdème péritumoral", "Liver", "liver", "..", "CON"]


def test_safe_file_names_keep_letters_of_any_script_and_are_unique():
    assert safeFileName("NCR/NET") == "NCR_NET"
    assert safeFileName("a:b\\c d (x)") == "a_b_c_d_x"
    assert safeFileName("Œdème") == "Œdème"
    assert safeFileName("../..") == "segment" and safeFileName("", "x") == "x"
    assert safeFileName("CON") == "_CON" and safeFileName("nul.txt") == "_nul.txt"
    assert uniqueFileNames(["Liver", "liver", "LIVER", "a/b", "a:b"]) == ["Liver", "liver_2", "LIVER_3", "a_b", "a_b_2"]


@pytest.fixture
def ct(headless, scene, ct_files):
    return headless.load_volume(ct_files["ct"], "example CT")


@pytest.fixture
def renamed_organs(logic, ct, ct_files, tmp_path):
    """The real CT's silver organs imported as the module imports engine results, then renamed by a user: the
    first seven non-empty segments get the awkward names, the node a name with a path separator."""
    from glims.segfile import write_seg_nrrd

    path = write_seg_nrrd(sitk.ReadImage(str(ct_files["labels"])), logic.model(MODEL).labels, tmp_path / "o.seg.nrrd")
    node = sceneio.readSegmentationFile(path, ct, "organs")
    node.SetName("case 7/organs: draft")
    segmentation = node.GetSegmentation()
    present = [i for i in sceneio.segmentIds(node) if sceneio._segmentHasContent(segmentation, i)]
    assert len(present) >= len(USER_NAMES)
    for segmentId, name in zip(present, USER_NAMES):
        segmentation.GetSegment(segmentId).SetName(name)
    return node, present


def _names(node) -> list[str]:
    return [node.GetSegmentation().GetSegment(i).GetName() for i in sceneio.segmentIds(node)]


def test_stl_export_writes_one_safely_named_mesh_per_non_empty_segment(renamed_organs, tmp_path):
    node, present = renamed_organs
    names_before, nodes_before = _names(node), node.GetScene().GetNumberOfNodes()
    files = sceneio.writeSurfaceFiles(node, tmp_path / "out", "STL")
    stems = ["NCR_NET", "a_b", "Œdème_péritumoral", "Liver", "liver_2", "segment", "_CON"]
    expected = [f"case_7_organs_draft_{s}.stl" for s in stems]
    assert [p.name for p in files][: len(stems)] == expected
    assert len(files) == len(present) and sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in files)  # nothing else (no staging folder) left behind
    for path in files:
        reader = vtk.vtkSTLReader()
        reader.SetFileName(str(path))
        reader.Update()
        assert reader.GetOutput().GetNumberOfPoints() > 0, path.name
    assert _names(node) == names_before and node.GetScene().GetNumberOfNodes() == nodes_before


def test_obj_export_has_one_group_per_non_empty_segment(renamed_organs, tmp_path):
    node, present = renamed_organs
    files = sceneio.writeSurfaceFiles(node, tmp_path, "OBJ")
    assert [p.name for p in files] == ["case_7_organs_draft.obj", "case_7_organs_draft.mtl"]
    groups = [line for line in files[0].read_text().splitlines() if line.startswith("g ")]
    assert len(groups) == len(present)


def test_surface_export_of_nothing_is_an_error(logic, ct, scene, tmp_path):
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    empty.GetSegmentation().AddEmptySegment("nothing")
    with pytest.raises(OSError, match="no non-empty segment"):
        logic.export(empty, "stl", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_dicom_export_of_a_volume_not_loaded_from_dicom_says_why(logic, renamed_organs, tmp_path):
    node, _ = renamed_organs
    for fileFormat in ("dicom", "rtstruct"):
        with pytest.raises(OSError, match="was not loaded from DICOM"):
            logic.export(node, fileFormat, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


# ---- DICOM from the scene ---------------------------------------------------------------------------------------

@pytest.fixture
def dicom_volume(headless, scene, tmp_path):
    """A generated oblique MR series loaded as Slicer's DICOM loader does (archetype + file list + instance UIDs)."""
    import pydicom

    rng = np.random.default_rng(7)
    image = sitk.GetImageFromArray(rng.normal(300, 40, (6, 18, 22)).astype(np.float32))
    image.SetSpacing((1.1, 0.9, 2.0))
    image.SetOrigin((5.0, -12.0, 40.0))
    image.SetDirection(sitk.VersorTransform((0.1, 1.0, 0.3), 0.3).GetMatrix())
    files = write_mr_series(image, tmp_path / "series", seed="slicer-export", patient="Slicer^Export")
    names = vtk.vtkStringArray()
    for path in files:
        names.InsertNextValue(str(path))
    volume = headless.volumes.AddArchetypeVolume(str(files[0]), "MR FLAIR", 0, names)
    assert volume is not None
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(pydicom.dcmread(p).SOPInstanceUID for p in files))
    return volume, image, files


def test_dicom_seg_and_rtstruct_from_the_scene(logic, dicom_volume, tmp_path):
    """Model segments (one renamed ``NCR/NET``) are AUTOMATIC with the model's identification, a segment painted
    by hand is MANUAL; every voxel, code and reference reads back with readers that are not ours."""
    from glims.dicom.source import read_source_series
    from glims.segfile import write_seg_nrrd

    volume, image, files = dicom_volume
    labels = np.zeros((6, 18, 22), np.uint8)
    labels[1:5, 3:12, 4:15] = 1
    labels[2:4, 6:9, 7:11] = 3  # inside 1: a hole in it
    labels[0, 0, 0] = labels[0, 1, 1] = 2
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    spec = logic.model("tiny-brats")
    path = write_seg_nrrd(label_image, spec.labels, tmp_path / "draft.seg.nrrd")
    node = sceneio.readSegmentationFile(path, volume, "draft", algorithmName=spec.ref)
    from GLIMSSegmenterLib import trainingset

    trainingset.recordDraft(node, spec, {"flair": volume})
    segmentation = node.GetSegmentation()
    first = sceneio.segmentIds(node)[0]
    tag = vtk.reference("")  # what Slicer's own DICOM exporters read: the model's segments are not MANUAL
    assert segmentation.GetSegment(first).GetTag(sceneio.ALGORITHM_TYPE_TAG, tag) and str(tag) == "AUTOMATIC"
    segmentation.GetSegment(first).SetName("NCR/NET")
    painted = segmentation.AddEmptySegment("painted", "painted", (0.2, 0.4, 0.8))
    assert painted

    seg_file = logic.export(node, "dicom", tmp_path / logic.defaultExportName(node, "dicom"))[0]
    rt_file = logic.export(node, "rtstruct", tmp_path / logic.defaultExportName(node, "rtstruct"))[0]
    assert (seg_file.name, rt_file.name) == ("draft_seg.dcm", "draft_rtstruct.dcm")

    source = read_source_series(files[0].parent)
    seg, pixels = seg_masks(seg_file, source)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["NCR/NET", *[label.name for label in spec.labels[1:]],
                                                             "painted"]
    assert [s.SegmentAlgorithmType for s in seg.SegmentSequence] == ["AUTOMATIC"] * 3 + ["MANUAL"]
    identification = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (identification.AlgorithmName, identification.AlgorithmVersion) == (spec.id, spec.version)
    assert spec.weights[0].sha256 in identification.AlgorithmParameters
    assert seg.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert seg.PatientName == "Slicer^Export" and seg.StudyInstanceUID == source.first.StudyInstanceUID
    for number, label in enumerate(spec.labels):
        np.testing.assert_array_equal(pixels[..., number], labels == label.value, err_msg=label.name)
    assert not pixels[..., 3].any()
    assert dciodvfy_errors(seg_file) == []

    filled = rtstruct_masks(rt_file, source)
    assert list(filled) == ["NCR/NET", *[label.name for label in spec.labels[1:]], "painted"]
    for name, label in zip(filled, spec.labels):
        np.testing.assert_array_equal(filled[name], labels == label.value, err_msg=name)
    assert dciodvfy_errors(rt_file) == []
