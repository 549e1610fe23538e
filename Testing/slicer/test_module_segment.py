"""The module logic on real MRML, running the real engine (``python -m glims segment``) in a background process
with a tiny random GLIMS on the real BraTS case: progress, the segmentation node, exports, cancel, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import vtk

from GLIMSSegmenterLib import sceneio
from GLIMSSegmenterLib.exportnames import safeFileName, uniqueFileNames
from GLIMSSegmenterLib.job import JobState
from GLIMSSegmenterLib.parameters import SegmentationParameters

MODEL = "tiny-brats"


def _segment_names(node) -> list[str]:
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def _ijk_to_ras(volume) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _terminology_entry(headless, serialized: str):
    import slicer

    entry = slicer.vtkSlicerTerminologyEntry()
    assert headless.terminologies.DeserializeTerminologyEntry(serialized, entry)
    return entry


def _type_in_terminology(headless, entry) -> bool:
    """Whether the entry's category contains its type in the loaded terminology (a real Slicer term list)."""
    import slicer

    logic = headless.terminologies
    context = entry.GetTerminologyContextName()
    category = entry.GetCategoryObject()
    wanted = (entry.GetTypeObject().GetCodingSchemeDesignator(), entry.GetTypeObject().GetCodeValue())
    found = slicer.vtkSlicerTerminologyType()
    for index in range(logic.GetNumberOfTypesInTerminologyCategory(context, category)):
        logic.GetNthTypeInTerminologyCategory(context, category, index, found)
        if (found.GetCodingSchemeDesignator(), found.GetCodeValue()) == wanted:
            return True
    return False


def _region_in_anatomic_context(headless, entry) -> bool:
    """Whether the entry's anatomic region is one of the loaded anatomic context's regions (Slicer's list)."""
    import slicer

    logic = headless.terminologies
    context = entry.GetAnatomicContextName()
    wanted = (entry.GetAnatomicRegionObject().GetCodingSchemeDesignator(),
              entry.GetAnatomicRegionObject().GetCodeValue())
    found = slicer.vtkSlicerTerminologyType()
    for index in range(logic.GetNumberOfRegionsInAnatomicContext(context)):
        logic.GetNthRegionInAnatomicContext(context, index, found)
        if (found.GetCodingSchemeDesignator(), found.GetCodeValue()) == wanted:
            return True
    return False


def _segmentation_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]


@pytest.fixture(scope="module")
def run(headless, glims_home, brats_coarse_files, tmp_path_factory):
    """One real segmentation, started from the parameter node as the panel does, kept files for comparison."""
    from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic

    headless.clear()
    logic = GLIMSSegmenterLogic(glimsHome=glims_home)
    logic.keepTemporaryFiles = True
    volumes = [headless.load_volume(path) for path in brats_coarse_files]
    params = SegmentationParameters(modelId=MODEL, device="cpu", overlap=0.0)
    matched = logic.matchInputVolumes(MODEL)
    params.inputVolumes = [matched.get(inp.key) for inp in logic.model(MODEL).inputs]
    params.writeToParameterNode(logic.getParameterNode())
    events, logs, finished = [], [], []
    previousOutput = vtk.vtkOutputWindow.GetInstance()
    vtkOutput = vtk.vtkStringOutputWindow()  # what VTK and MRML report during the run (errors, warnings)
    vtk.vtkOutputWindow.SetInstance(vtkOutput)
    try:
        job = logic.segmentFromParameterNode(logic.getParameterNode(), onProgress=events.append, onLog=logs.append,
                                             onFinished=finished.append)
        state = job.wait()
    finally:
        vtk.vtkOutputWindow.SetInstance(previousOutput)
    yield {"logic": logic, "volumes": volumes, "matched": matched, "job": job, "state": state, "events": events,
           "logs": logs, "finished": finished, "scene": headless.scene, "vtkOutput": vtkOutput.GetOutput()}
    headless.clear()


def test_volumes_are_assigned_to_inputs_by_their_real_file_names(run):
    names = {key: node.GetName() for key, node in run["matched"].items()}
    assert names == {"flair": "BraTS-GLI-00001-000-t2f", "t1ce": "BraTS-GLI-00001-000-t1c",
                     "t1": "BraTS-GLI-00001-000-t1n", "t2": "BraTS-GLI-00001-000-t2w"}


def test_the_job_succeeds_and_reports_progress_and_log_lines(run):
    job = run["job"]
    assert run["state"] is JobState.SUCCEEDED, job.errorMessage
    assert run["finished"] == [job]
    fractions = [event.fraction for event in run["events"]]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {"load", "preprocess", "infer", "write"} <= {event.stage for event in run["events"]}
    infer = [event for event in run["events"] if event.stage == "infer"]
    assert infer[-1].done == infer[-1].total > 0
    # the engine received each volume under its input's name, in the catalog order
    assert "input flair  <- volume 'BraTS-GLI-00001-000-t2f'" in run["logs"]
    assert [s["name"] for s in job.summary["segments"]] == _segment_names(job.segmentationNode)


def test_a_run_reports_no_vtk_or_mrml_error(run):
    # e.g. "vtkMRMLSegmentationNode::CreateDefaultDisplayNodes failed: Scene is invalid" when the result was read
    # into a node outside any scene
    assert run["state"] is JobState.SUCCEEDED
    assert "ERROR" not in run["vtkOutput"] and "Scene is invalid" not in run["vtkOutput"], run["vtkOutput"]


def test_segmentation_node_has_the_models_segments_with_colours_and_terminology(run, headless):
    node = run["job"].segmentationNode
    spec = run["logic"].model(MODEL)
    assert node.GetName() == f"BraTS-GLI-00001-000_{spec.id}-{spec.version}" == "BraTS-GLI-00001-000_tiny-brats-1.0.0"
    assert _segment_names(node) == [label.name for label in spec.labels]
    segmentation = node.GetSegmentation()
    for index, label in enumerate(spec.labels):
        segment = segmentation.GetNthSegment(index)
        assert segment.GetColor() == pytest.approx([c / 255 for c in label.color], abs=1e-5)
        assert segment.GetTerminology() == label.slicer_terminology
        assert sceneio.modelLabelValue(segment) == label.value
        entry = _terminology_entry(headless, segment.GetTerminology())
        assert entry.GetTypeObject().GetCodeValue() == label.terminology["type"][1]
        assert _type_in_terminology(headless, entry), f"{label.name}: type not in Slicer's DICOM master list"
        region = entry.GetAnatomicRegionObject()
        assert (region.GetCodingSchemeDesignator(), region.GetCodeValue()) == ("SCT", "12738006")
        assert _region_in_anatomic_context(headless, entry), f"{label.name}: region not in Slicer's anatomic codes"
    assert node.GetDisplayNode() is not None


def test_segmentation_geometry_and_place_match_the_reference_input(run):
    node, flair = run["job"].segmentationNode, run["matched"]["flair"]
    assert run["logic"].referenceVolume(node) is flair
    labelmap = slicer_labelmap(node, flair, run["scene"])
    assert labelmap.GetImageData().GetDimensions() == flair.GetImageData().GetDimensions()
    assert np.allclose(_ijk_to_ras(labelmap), _ijk_to_ras(flair))
    run["scene"].RemoveNode(labelmap)
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(run["scene"])
    volume_parent = sh.GetItemParent(sh.GetItemByDataNode(flair)) if sh.GetItemByDataNode(flair) else sh.GetSceneItemID()
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == volume_parent


def slicer_labelmap(node, reference, scene):
    import slicer

    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    slicer.modules.segmentations.logic().ExportAllSegmentsToLabelmapNode(
        node, labelmap, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
    return labelmap


def test_exports_read_back_equal_to_the_engines_own_output(run, tmp_path):
    logic, node, flair = run["logic"], run["job"].segmentationNode, run["matched"]["flair"]
    engine = slicerio.read_segmentation(str(run["job"].workFolder / "segmentation.seg.nrrd"))

    [seg_file] = logic.export(node, "seg.nrrd", tmp_path / logic.defaultExportName(node, "seg.nrrd"))
    assert seg_file.name == "BraTS-GLI-00001-000_tiny-brats-1.0.0.seg.nrrd"
    exported = slicerio.read_segmentation(str(seg_file))
    assert [s["name"] for s in exported["segments"]] == [s["name"] for s in engine["segments"]]
    for ours, theirs in zip(exported["segments"], engine["segments"]):
        assert ours["color"] == pytest.approx(theirs["color"], abs=1e-5)
        assert ours["terminology"] == theirs["terminology"]
        # every brain-tumour segment is in the brain, as peers' BraTS models declare it
        assert ours["terminology"]["anatomicContextName"] == "Anatomic codes - DICOM master list"
        assert ours["terminology"]["anatomicRegion"] == ["SCT", "12738006", "Brain"]
    voxels = {s["name"]: exported["voxels"] == s["labelValue"] for s in exported["segments"]}
    for segment in engine["segments"]:
        assert np.array_equal(voxels[segment["name"]], engine["voxels"] == segment["labelValue"]), segment["name"]

    [nifti] = logic.export(node, "nifti", tmp_path / "labels.nii.gz")
    labels = sitk.ReadImage(str(nifti))
    source = sitk.ReadImage(str(flair.GetStorageNode().GetFileName()))
    assert labels.GetSize() == source.GetSize()
    assert labels.GetSpacing() == pytest.approx(source.GetSpacing())
    assert labels.GetOrigin() == pytest.approx(source.GetOrigin(), abs=1e-4)
    assert labels.GetDirection() == pytest.approx(source.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(labels).transpose(2, 1, 0), engine["voxels"])


def _assert_mesh_inside(path: Path, reader, volume) -> None:
    reader.SetFileName(str(path))
    reader.Update()
    mesh = reader.GetOutput()
    assert mesh.GetNumberOfPoints() > 0 and mesh.GetNumberOfPolys() > 0
    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)
    lps = mesh.GetBounds()  # files are in LPS: x and y flipped against RAS
    ras = (-lps[1], -lps[0], -lps[3], -lps[2], lps[4], lps[5])
    for axis in range(3):
        assert bounds[2 * axis] - 3.0 <= ras[2 * axis] <= ras[2 * axis + 1] <= bounds[2 * axis + 1] + 3.0


def test_stl_export_writes_one_mesh_per_segment_inside_the_volume(run, tmp_path):
    logic, node, flair = run["logic"], run["job"].segmentationNode, run["matched"]["flair"]
    files = logic.export(node, "stl", tmp_path / "surfaces")
    present = [f"{safeFileName(node.GetName())}_{s}"
               for s in uniqueFileNames([s for s in _segment_names(node) if _voxel_count(node, s) > 0])]
    assert sorted(p.stem for p in files) == sorted(present) and all(p.suffix == ".stl" for p in files)
    for path in files:
        _assert_mesh_inside(path, vtk.vtkSTLReader(), flair)


def test_obj_export_writes_one_group_per_segment_with_materials(run, tmp_path):
    logic, node, flair = run["logic"], run["job"].segmentationNode, run["matched"]["flair"]
    files = logic.export(node, "obj", tmp_path / "surfaces")
    stem = safeFileName(node.GetName())
    assert sorted(p.name for p in files) == [f"{stem}.mtl", f"{stem}.obj"]
    obj = next(p for p in files if p.suffix == ".obj")
    groups = [line for line in obj.read_text().splitlines() if line.startswith("g ")]
    assert len(groups) == len([s for s in _segment_names(node) if _voxel_count(node, s) > 0])
    _assert_mesh_inside(obj, vtk.vtkOBJReader(), flair)


def _voxel_count(node, name) -> int:
    import slicer

    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(name)
    return int(np.count_nonzero(slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id)))


def test_an_existing_segmentation_is_replaced_only_when_asked(run, tmp_path):
    from glims.errors import OutputError

    logic, scene = run["logic"], run["scene"]
    edited = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my edits")
    edited.GetSegmentation().AddEmptySegment("", "my tumour", (1.0, 0.0, 0.0))
    with pytest.raises(OutputError, match="my edits"):
        logic.startSegmentation(MODEL, run["matched"], outputSegmentation=edited)
    assert _segment_names(edited) == ["my tumour"]
    # the import step of a confirmed replacement: the node keeps its identity, its segments are the model's
    replaced = sceneio.readSegmentationFile(run["job"].workFolder / "segmentation.seg.nrrd", run["matched"]["flair"],
                                            "ignored", outputNode=edited)
    assert replaced is edited and edited.GetName() == "my edits"
    assert _segment_names(edited) == _segment_names(run["job"].segmentationNode)


def test_whole_image_option_runs_the_reference_windows_over_the_whole_image(run):
    # The panel's "Whole image" choice reaches the engine: more windows than the default foreground box, on the
    # same inputs, and a result on the same grid.
    logic = run["logic"]
    events = []
    job = logic.startSegmentation(MODEL, run["matched"], device="cpu", overlap=0.0, wholeImage=True,
                                  onProgress=events.append)
    assert job.wait() is JobState.SUCCEEDED, job.errorMessage
    first = run["job"].segmentationNode.GetName()
    assert job.segmentationNode.GetName() == f"{first}_1"  # a new node per run, named apart from the first
    windows = [e.total for e in events if e.stage == "infer"][-1]
    cropped = [e.total for e in run["events"] if e.stage == "infer"][-1]
    assert windows > cropped
    whole = sitk.ReadImage(str(job.workFolder / "segmentation.seg.nrrd"))
    default = sitk.ReadImage(str(run["job"].workFolder / "segmentation.seg.nrrd"))
    assert whole.GetSize()[:3] == default.GetSize()[:3] and whole.GetOrigin() == default.GetOrigin()
