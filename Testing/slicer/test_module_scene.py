"""Scene import and export on real MRML with the real abdominal CT and its 13-organ label map (no network run):
label values survive edits, exports are exact, the parameter node and results survive a .mrb round trip."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from glims.catalog import DEFAULT_OVERLAP
from GLIMSSegmenterLib import sceneio
from GLIMSSegmenterLib.parameters import INPUT_SLOTS, PARAMETER_TYPES, SegmentationParameters

MODEL = "tiny-btcv"


@pytest.fixture
def ct(headless, scene, ct_files):
    return headless.load_volume(ct_files["ct"], "example CT")


@pytest.fixture
def organs(logic, ct, ct_files, tmp_path):
    """The silver BTCV labels written by the engine's writer, imported as the module imports engine results."""
    from glims.segfile import write_seg_nrrd

    path = write_seg_nrrd(sitk.ReadImage(str(ct_files["labels"])), logic.model(MODEL).labels, tmp_path / "o.seg.nrrd")
    return sceneio.readSegmentationFile(path, ct, "organs")


def _silver(ct_files) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(ct_files["labels"])))


def test_imported_segments_carry_the_catalog_label_values_and_standard_terms(logic, organs):
    spec = logic.model(MODEL)
    segmentation = organs.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(13)] == [label.name for label in spec.labels]
    liver = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Liver"))
    assert sceneio.modelLabelValue(liver) == 6
    assert liver.GetTerminology().split("~")[2] == "SCT^10200004^Liver"


def test_labelmap_export_equals_the_source_labels_even_after_edits(logic, organs, ct, ct_files, tmp_path):
    [path] = logic.export(organs, "nifti", tmp_path / "organs.nii.gz")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), _silver(ct_files))

    # the user deletes the spleen (value 1) and paints a new region: values of the others do not shift
    segmentation = organs.GetSegmentation()
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("Spleen"))
    import slicer

    marker = np.zeros(slicer.util.arrayFromVolume(ct).shape, np.uint8)
    marker[2:4, 5:9, 5:9] = 1
    new_id = segmentation.AddEmptySegment("", "my marker", (0.1, 0.2, 0.3))
    slicer.util.updateSegmentBinaryLabelmapFromArray(marker, organs, new_id, ct)
    [path] = logic.export(organs, "nifti", tmp_path / "edited.nii.gz")
    exported = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    expected = _silver(ct_files).copy()
    expected[expected == 1] = 0
    expected[marker > 0] = 14  # the next free value after the model's 13 labels
    assert np.array_equal(exported, expected)
    assert organs.GetScene().GetNumberOfNodesByClass("vtkMRMLColorTableNode") == \
        ct.GetScene().GetNumberOfNodesByClass("vtkMRMLColorTableNode")  # temporary export nodes are gone


def test_seg_nrrd_export_reads_back_with_slicerio(logic, organs, ct_files, tmp_path):
    [path] = logic.export(organs, "seg.nrrd", tmp_path / "organs.seg.nrrd")
    segmentation = slicerio.read_segmentation(str(path))
    by_name = {s["name"]: s for s in segmentation["segments"]}
    assert by_name["Right kidney"]["terminology"]["type"] == ["SCT", "64033007", "Kidney"]
    assert by_name["Right kidney"]["terminology"]["typeModifier"] == ["SCT", "24028007", "Right"]
    assert by_name["Spleen"]["color"] == pytest.approx([157 / 255, 108 / 255, 162 / 255], abs=1e-5)
    labels = np.zeros_like(segmentation["voxels"])
    for segment in segmentation["segments"]:
        labels[segmentation["voxels"] == segment["labelValue"]] = int(segment["name"] == "Liver")
    assert np.array_equal(labels.transpose(2, 1, 0), (_silver(ct_files) == 6).astype(labels.dtype))


def test_result_goes_into_the_study_of_its_reference_volume(headless, ct, tmp_path, logic, ct_files):
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(headless.scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "CT abdomen")
    volume_item = sh.GetItemByDataNode(ct) or sh.CreateItem(study, ct)
    sh.SetItemParent(volume_item, study)
    from glims.segfile import write_seg_nrrd

    path = write_seg_nrrd(sitk.ReadImage(str(ct_files["labels"])), logic.model(MODEL).labels, tmp_path / "s.seg.nrrd")
    node = sceneio.readSegmentationFile(path, ct, "organs")
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study


def test_an_unreadable_result_adds_nothing_to_the_scene(scene, ct, tmp_path):
    broken = tmp_path / "broken.seg.nrrd"
    broken.write_bytes(b"NRRD0004\nnot really\n")
    before = scene.GetNumberOfNodes()
    with pytest.raises(OSError, match="broken.seg.nrrd"):
        sceneio.readSegmentationFile(broken, ct, "x")
    with pytest.raises(OSError, match="missing.seg.nrrd"):
        sceneio.readSegmentationFile(tmp_path / "missing.seg.nrrd", ct, "x")
    assert scene.GetNumberOfNodes() == before


def test_dicom_seg_export_explains_why_it_is_not_possible(logic, organs, ct, tmp_path):
    assert "not loaded from DICOM" in sceneio.dicomExportProblem(organs, ct)
    ct.SetAttribute("DICOM.instanceUIDs", "1.2.3.4 1.2.3.5")  # a DICOM volume whose files are gone
    assert "no longer in the DICOM database" in sceneio.dicomExportProblem(organs, ct)
    with pytest.raises(OSError, match="DICOM export is not possible"):
        logic.export(organs, "dicom", tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="export format"):
        logic.export(organs, "png", tmp_path)


def test_show_in_3d_builds_and_removes_the_surfaces(logic, organs):
    logic.setShowIn3D(organs, True)
    assert organs.GetSegmentation().ContainsRepresentation("Closed surface")
    logic.setShowIn3D(organs, False)
    assert not organs.GetSegmentation().ContainsRepresentation("Closed surface")


def test_parameters_and_results_survive_an_mrb_round_trip(headless, logic, organs, ct, brats_coarse_files, tmp_path):
    volumes = [headless.load_volume(path) for path in brats_coarse_files]
    params = SegmentationParameters(modelId="tiny-brats", inputVolumes=volumes, outputSegmentation=organs,
                                    device="cpu", overlap=0.25, testTimeFlips=True, wholeImage=True)
    parameter_node = logic.getParameterNode()
    params.writeToParameterNode(parameter_node)
    assert set(PARAMETER_TYPES) <= set(parameter_node.GetParameterNames())
    expected_names = [v.GetName() for v in volumes]

    bundle = tmp_path / "scene.mrb"
    assert headless.scene.WriteToMRB(str(bundle))
    headless.clear()
    assert headless.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert headless.scene.ReadFromMRB(str(bundle))

    restored = SegmentationParameters.fromParameterNode(logic.getParameterNode())
    assert logic.getParameterNode().GetSingletonTag() == "GLIMSSegmenter"
    assert (restored.modelId, restored.device, restored.overlap, restored.testTimeFlips, restored.wholeImage) == (
        "tiny-brats", "cpu", 0.25, True, True)
    assert [v.GetName() for v in restored.inputVolumes] == expected_names
    assert restored.inputVolumes[0].GetImageData().GetDimensions() == tuple(
        sitk.ReadImage(str(brats_coarse_files[0])).GetSize())
    segmentation = restored.outputSegmentation
    assert segmentation.GetName() == "organs" and segmentation.GetSegmentation().GetNumberOfSegments() == 13
    liver = segmentation.GetSegmentation().GetSegment(segmentation.GetSegmentation().GetSegmentIdBySegmentName("Liver"))
    assert sceneio.modelLabelValue(liver) == 6 and "SCT^10200004^Liver" in liver.GetTerminology()
    reference = logic.referenceVolume(segmentation)
    assert reference is not None and reference.GetName() == "example CT"
    assert len(logic.inputsFromParameters(restored)) == INPUT_SLOTS


def test_parameters_are_validated_and_defaults_filled(logic, scene, headless):
    headless.clear()  # a fresh scene, whatever earlier tests left in the parameter node
    node = logic.getParameterNode()
    assert logic.getParameterNode() is node  # one singleton per scene
    logic.setDefaultParameters(node)
    params = SegmentationParameters.fromParameterNode(node)
    assert params.modelId in {m.id for m in logic.catalog().models}
    assert (params.device, params.testTimeFlips, params.wholeImage) == ("auto", False, False)
    assert params.overlap == logic.model(params.modelId).overlap  # the model's own, from its catalog entry
    with pytest.raises(ValueError, match="device"):
        SegmentationParameters(device="tpu").writeToParameterNode(node)
    with pytest.raises(ValueError, match="overlap"):
        SegmentationParameters(overlap=0.95).writeToParameterNode(node)


def test_the_panel_sends_no_overlap_unless_the_user_changed_it(headless, tmp_path):
    """A model's own overlap (its catalog entry's) applies from the panel; a value the user set is sent as set."""
    from tiny_models import register_tiny_model

    from GLIMSSegmenterLib.engine import segmentArguments
    from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic

    headless.clear()
    register_tiny_model(tmp_path, "brats", model_id="tiny-quarter", overrides={"inference": {"overlap": 0.25}})
    logic = GLIMSSegmenterLogic(glimsHome=tmp_path)
    node = logic.getParameterNode()
    SegmentationParameters(modelId="tiny-quarter").writeToParameterNode(node)
    logic.setDefaultParameters(node)
    params = SegmentationParameters.fromParameterNode(node)
    assert (params.modelId, params.overlap) == ("tiny-quarter", 0.25)  # the panel shows the model's own
    assert logic.chosenOptions(params) == {}  # nothing changed: the engine applies the model's own values
    assert segmentArguments("tiny-quarter@1.0.0", ["a.nrrd"], "o.seg.nrrd", **logic.chosenOptions(params))[-2:] == [
        "--progress", "json"]
    params.overlap = 0.5  # the user moved the slider (to what used to be every model's panel value)
    params.writeToParameterNode(node)
    assert logic.chosenOptions(SegmentationParameters.fromParameterNode(node)) == {"overlap": 0.5}
    node.SetParameter("overlap", "")  # a script that never set one: the model's own
    assert SegmentationParameters.fromParameterNode(node).overlap is None
    assert logic.chosenOptions(SegmentationParameters.fromParameterNode(node)) == {}
    SegmentationParameters(modelId="a-model-from-another-computer").writeToParameterNode(node)
    logic.setDefaultParameters(node)  # the panel reads a number even for a model this catalog lacks
    assert SegmentationParameters.fromParameterNode(node).overlap == DEFAULT_OVERLAP
