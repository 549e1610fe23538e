"""The training set and fine-tuning from the module logic, on real MRML with the real engine process: three real
BraTS cases (3 mm copies, silver labels as the "corrections") are added from segmentation nodes, bad ones are
refused with one readable line, a tiny model is fine-tuned with a live plot, stopped mid-run, and switched to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psutil
import pytest
import SimpleITK as sitk

from glims.catalog import load_catalog
from glims.errors import ConfigError, InputError
from glims.fileio import sha256_file

from GLIMSSegmenterLib import sceneio, trainingset
from GLIMSSegmenterLib.job import JobBusyError, JobState
from GLIMSSegmenterLib.parameters import SegmentationParameters

MODEL = "tiny-brats"
SILVER = {  # case -> (silver label file, relabelling into the model's (BraTS 2023) values)
    "brats_gli_00001": ("BraTS-GLI-00001-000-seg_BraTS23_1_pred_silver.nii.gz", {}),
    "tcga_fg_6692": ("TCGA-FG-6692_fusion_simple_silver.nii.gz", {4: 3}),
    "tcga_du_7294": ("TCGA-DU-7294_fusion_simple_silver.nii.gz", {4: 3}),
}


@pytest.fixture(scope="module")
def coarse_cases(shared_data, tmp_path_factory) -> dict[str, dict]:
    """Per real case: its 3 mm input files (model input order) and its silver labels on that grid, (k, j, i)."""
    from tiny_models import brats_case_paths, coarse_copy

    cases = {}
    for case, (label_name, relabel) in SILVER.items():
        images = coarse_copy(brats_case_paths(shared_data, case), tmp_path_factory.mktemp(case))
        reference = sitk.ReadImage(str(images[0]))
        silver = sitk.Resample(sitk.ReadImage(str(shared_data / "brats" / case / label_name)), reference,
                               sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        labels = sitk.GetArrayFromImage(silver).astype(np.uint8)
        for old, new in relabel.items():
            labels[labels == old] = new
        cases[case] = {"images": images, "labels": labels}
    return cases


@pytest.fixture(scope="module")
def tuning(headless, home):
    from GLIMSSegmenterLib.finetuning import FineTuningLogic
    from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic

    return FineTuningLogic(GLIMSSegmenterLogic(glimsHome=home))


def _load(headless, files) -> list:
    return [headless.load_volume(path) for path in files]


def _paint(segmentation_node, segment_id, mask, reference) -> None:
    import slicer

    slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentation_node, segment_id, reference)


def _node_count(scene) -> int:
    return scene.GetNumberOfNodes()


@pytest.fixture(scope="module")
def stored(headless, tuning, coarse_cases):
    """The three real cases added to the training set the three ways a segmentation reaches it.

    * ``brats_gli_00001``: segmented by the tiny model through the module, then corrected (every segment repainted
      with the silver labels, the edema segment renamed ``edema``), added with no arguments;
    * ``tcga_fg_6692``: the silver labels imported as the module imports engine results (segments carry the
      model's label values), added for the model with the volumes passed explicitly;
    * ``tcga_du_7294``: segments made by hand in Slicer, known only by name (``NCR``, ``Peritumoral edema``) or by
      terminology (the enhancing tumour's codes under another name).
    """
    from glims.segfile import write_seg_nrrd

    headless.clear()
    logic = tuning.segmenter
    spec = logic.model(MODEL)
    result = {}

    volumes = _load(headless, coarse_cases["brats_gli_00001"]["images"])
    draft = logic.segment(MODEL, volumes, device="cpu", overlap=0.0)
    labels = coarse_cases["brats_gli_00001"]["labels"]
    segmentation = draft.GetSegmentation()
    for label in spec.labels:
        _paint(draft, segmentation.GetSegmentIdBySegmentName(label.name), labels == label.value, volumes[0])
    segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Peritumoral edema (ED)")).SetName("edema")
    nodes_before = _node_count(headless.scene)
    result["brats_gli_00001"] = {"case": tuning.addToTrainingSet(draft), "volumes": volumes, "node": draft,
                                 "added_nodes": _node_count(headless.scene) - nodes_before}

    volumes = _load(headless, coarse_cases["tcga_fg_6692"]["images"])
    labels = sitk.GetImageFromArray(coarse_cases["tcga_fg_6692"]["labels"])
    labels.CopyInformation(sitk.ReadImage(str(coarse_cases["tcga_fg_6692"]["images"][0])))
    path = write_seg_nrrd(labels, spec.labels, Path(coarse_cases["tcga_fg_6692"]["images"][0]).parent / "s.seg.nrrd")
    imported = sceneio.readSegmentationFile(path, volumes[0], "imported silver")
    inputs = {inp.key: volume for inp, volume in zip(spec.inputs, volumes)}
    result["tcga_fg_6692"] = {"case": tuning.addToTrainingSet(imported, MODEL, inputs), "volumes": volumes}

    volumes = _load(headless, coarse_cases["tcga_du_7294"]["images"])
    labels = coarse_cases["tcga_du_7294"]["labels"]
    hand = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "hand-made")
    hand.CreateDefaultDisplayNodes()
    hand.SetReferenceImageGeometryParameterFromVolumeNode(volumes[0])
    for name, value in (("NCR", 1), ("Peritumoral edema", 2), ("my enhancing part", 3)):
        segment_id = hand.GetSegmentation().AddEmptySegment("", name, (0.5, 0.5, 0.5))
        if value == 3:
            hand.GetSegmentation().GetSegment(segment_id).SetTerminology(spec.labels[2].slicer_terminology)
        _paint(hand, segment_id, labels == value, volumes[0])
    inputs = {inp.key: volume for inp, volume in zip(spec.inputs, volumes)}
    result["tcga_du_7294"] = {"case": tuning.addToTrainingSet(hand, MODEL, inputs), "volumes": volumes}
    yield result
    headless.clear()


def test_a_corrected_segmentation_made_by_the_module_is_stored_with_its_provenance(stored, coarse_cases):
    entry = stored["brats_gli_00001"]
    case = entry["case"]
    assert trainingset.draftModel(entry["node"]) == "tiny-brats@1.0.0"
    assert case.case_id.startswith("BraTS-GLI-00001-000-t2f-") and case.preset == "brats"
    provenance = json.loads((case.folder / "case.json").read_text())
    assert provenance["draft_model"] == "tiny-brats@1.0.0" and provenance["labels_of"] == "tiny-brats@1.0.0"
    assert provenance["sources"] == {"flair": "BraTS-GLI-00001-000-t2f", "t1ce": "BraTS-GLI-00001-000-t1c",
                                     "t1": "BraTS-GLI-00001-000-t1n", "t2": "BraTS-GLI-00001-000-t2w"}
    assert provenance["segmentation"] == entry["node"].GetName() and provenance["added"]
    assert provenance["segments"] == {"Necrotic tumour core (NCR)": 1, "edema": 2, "Enhancing tumour (ET)": 3}
    # the label map is the corrected segmentation with the model's values, on the reference (FLAIR) grid
    stored_label = sitk.ReadImage(str(case.label))
    reference = sitk.ReadImage(str(coarse_cases["brats_gli_00001"]["images"][0]))
    assert stored_label.GetSize() == reference.GetSize()
    assert stored_label.GetOrigin() == pytest.approx(reference.GetOrigin(), abs=1e-4)
    assert stored_label.GetSpacing() == pytest.approx(reference.GetSpacing())
    assert np.array_equal(sitk.GetArrayFromImage(stored_label), coarse_cases["brats_gli_00001"]["labels"])
    for key, source in zip(("flair", "t1ce", "t1", "t2"), coarse_cases["brats_gli_00001"]["images"]):
        assert np.allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(case.inputs[key]))),
                           sitk.GetArrayFromImage(sitk.ReadImage(str(source))))
    assert entry["added_nodes"] == 0  # the temporary label map and its display/colour nodes are gone


def test_segments_are_matched_by_stored_value_name_or_terminology(stored, coarse_cases):
    for case in ("tcga_fg_6692", "tcga_du_7294"):
        stored_case = stored[case]["case"]
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(stored_case.label)))
        assert np.array_equal(labels, coarse_cases[case]["labels"]), case
        assert stored_case.provenance["draft_model"] is None
    assert stored["tcga_du_7294"]["case"].provenance["segments"] == {"NCR": 1, "Peritumoral edema": 2,
                                                                     "my enhancing part": 3}


def test_the_training_set_lists_the_cases(stored, tuning):
    ids = [case.case_id for case in tuning.trainingCases()]
    assert sorted(ids) == sorted(entry["case"].case_id for entry in stored.values())
    assert [c.case_id for c in tuning.trainingCases("btcv")] == []
    assert tuning.fineTuneProblem(MODEL) == ""


def _bad_segmentation(headless, reference, segments):
    """A segmentation on ``reference`` with (name, mask, recorded label value or None) segments."""
    node = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "bad")
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    for name, mask, value in segments:
        segment_id = node.GetSegmentation().AddEmptySegment("", name, (1.0, 0.0, 0.0))
        if value is not None:
            node.GetSegmentation().GetSegment(segment_id).SetTag(sceneio.LABEL_VALUE_TAG, str(value))
        _paint(node, segment_id, mask, reference)
    return node


def test_bad_cases_are_refused_with_one_readable_line(stored, tuning, headless, brats_full_files):
    volumes = stored["tcga_fg_6692"]["volumes"]
    inputs = dict(zip(("flair", "t1ce", "t1", "t2"), volumes))
    import slicer

    tumour = np.zeros(slicer.util.arrayFromVolume(volumes[0]).shape, bool)
    tumour[20:30, 30:40, 30:40] = True
    before = sorted(p.name for p in (tuning.glimsHome / "cases").iterdir())
    unknown = _bad_segmentation(headless, volumes[0], [("Necrotic tumour core (NCR)", tumour, 1),
                                                       ("Tumour", tumour, None), ("Liver", tumour, 6)])
    full_t1 = headless.load_volume(brats_full_files[2], "full resolution T1")
    empty = _bad_segmentation(headless, volumes[0], [("ED", np.zeros_like(tumour), None)])
    nodes_before = _node_count(headless.scene)
    problems = {
        "segments 'Tumour', 'Liver' are not a label of tiny-brats@1.0.0 (Necrotic tumour core (NCR), Peritumoral "
        "edema (ED), Enhancing tumour (ET)): rename them to one of these or delete them": (unknown, inputs),
        "select a volume for T2": (empty, {k: v for k, v in inputs.items() if k != "t2"}),
        "t1 is not on the reference (flair) grid": (empty, {**inputs, "t1": full_t1}),
        "the label map is empty: nothing to learn from": (empty, inputs),
    }
    for problem, (node, volumes_given) in problems.items():
        with pytest.raises(InputError) as caught:
            tuning.addToTrainingSet(node, MODEL, volumes_given)
        message = str(caught.value)
        assert message.startswith(f"'{node.GetName()}' cannot be added to the training set: {problem}"), message
        assert "\n" not in message and "/tmp" not in message and ".nrrd" not in message, message
    with pytest.raises(InputError, match="choose the model it is for"):
        tuning.addToTrainingSet(empty)  # not made by the module, and no model given
    assert sorted(p.name for p in (tuning.glimsHome / "cases").iterdir()) == before  # nothing half-written
    assert _node_count(headless.scene) == nodes_before


def test_a_case_can_be_removed(stored, tuning):
    hand = stored["tcga_du_7294"]
    extra = tuning.addToTrainingSet(_hand_made_segmentation(stored), MODEL,
                                    dict(zip(("flair", "t1ce", "t1", "t2"), hand["volumes"])), caseId="to-remove")
    assert "to-remove" in [c.case_id for c in tuning.trainingCases()]
    tuning.removeTrainingCase(extra.case_id)
    assert "to-remove" not in [c.case_id for c in tuning.trainingCases()] and not extra.folder.exists()
    with pytest.raises(InputError, match="no case 'to-remove'"):
        tuning.removeTrainingCase("to-remove")


def _hand_made_segmentation(stored):
    node = stored["tcga_du_7294"]["volumes"][0].GetScene().GetFirstNodeByName("hand-made")
    assert node is not None
    return node


@pytest.fixture(scope="module")
def finetuned(stored, tuning, home):
    """A 2-epoch fine-tuning of the tiny model on the three stored cases, through the background runner."""
    base = load_catalog(home).get(MODEL)
    base_sha = sha256_file(base.weights[0].path)
    events, logs, finished = [], [], []
    job = tuning.startFineTuning(MODEL, "tiny-brats-site", epochs=2, device="cpu", threads=1,
                                 onProgress=events.append, onLog=logs.append, onFinished=finished.append)
    state = job.wait()
    return {"job": job, "state": state, "events": events, "logs": logs, "finished": finished, "base": base,
            "base_sha": base_sha}


def test_fine_tuning_plots_each_epoch_and_registers_the_new_model(finetuned, tuning, home):
    job = finetuned["job"]
    assert finetuned["state"] is JobState.SUCCEEDED, job.errorMessage
    assert finetuned["finished"] == [job] and not tuning.segmenter.jobs.busy
    assert job.modelRef == "tiny-brats-site@1.0.0" and job.baseModel == "tiny-brats@1.0.0"
    fractions = [event.fraction for event in finetuned["events"]]
    assert fractions == sorted(fractions) and {"load", "train"} <= {e.stage for e in finetuned["events"]}

    rows = job.plot.rows()
    assert [row["epoch"] for row in rows] == [0, 1, 2]  # the starting weights, then one row per epoch
    assert rows[0]["training loss"] is None and all(row["training loss"] > 0 for row in rows[1:])
    for row in rows:
        assert all(0.0 <= row[f"Dice {r}"] <= 1.0 for r in ("TC", "WT", "ET"))
    assert set(job.before) == set(job.after) == {"TC", "WT", "ET", "mean"}
    assert job.before["mean"] == pytest.approx(rows[0]["Dice mean"], abs=1e-3)
    # One case held out for validation: the weights at the end of the schedule are registered.
    assert job.after["mean"] == pytest.approx(rows[-1]["Dice mean"], abs=1e-3)
    assert job.validationCases == 1

    chart = job.plot.chartNode
    assert chart.GetNumberOfPlotSeriesNodes() == 5
    for index in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(index)
        assert series.GetTableNode() is job.plot.tableNode and series.GetXColumnName() == "epoch"

    catalog = load_catalog(home)
    tuned = catalog.get("tiny-brats-site")
    assert tuned.ref == job.modelRef == job.result.ref and not tuned.builtin
    assert tuned.provenance["base_model"] == "tiny-brats@1.0.0"
    assert sha256_file(finetuned["base"].weights[0].path) == finetuned["base_sha"] == finetuned["base"].weights[0].sha256
    assert not job.workFolder.exists()


def test_the_panel_can_switch_to_the_new_model(finetuned, tuning, headless):
    parameter_node = tuning.segmenter.getParameterNode()
    params = SegmentationParameters(modelId=MODEL, device="cpu")
    flair = headless.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "a FLAIR")
    params.inputVolumes = [flair, None, None, None]
    params.writeToParameterNode(parameter_node)
    assert tuning.useModel(parameter_node, finetuned["job"].modelRef) == "tiny-brats-site"
    switched = SegmentationParameters.fromParameterNode(parameter_node)
    assert switched.modelId == "tiny-brats-site" and switched.inputVolumes[0] is flair and switched.device == "cpu"
    assert tuning.segmenter.model(switched.modelId).ref == "tiny-brats-site@1.0.0"


def test_an_older_version_is_selected_by_its_full_reference(headless, tmp_path):
    from tiny_models import register_tiny_model

    from GLIMSSegmenterLib.finetuning import FineTuningLogic
    from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic

    register_tiny_model(tmp_path, "brats", model_id="site")
    register_tiny_model(tmp_path, "brats", model_id="site", seed=1)
    tuning = FineTuningLogic(GLIMSSegmenterLogic(glimsHome=tmp_path))
    parameter_node = tuning.segmenter.getParameterNode()
    assert tuning.useModel(parameter_node, "site@1.0.0") == "site@1.0.0"
    assert tuning.useModel(parameter_node, "site@1.1.0") == "site"
    assert parameter_node.GetParameter("modelId") == "site"
    assert tuning.defaultModelName("site") == "site"  # your own model: its next version


@pytest.fixture(scope="module")
def stopped(finetuned, tuning, home, stored):
    """A fine-tuning stopped during its second epoch (after the first was saved), with what was seen meanwhile: the
    engine's process tree, the refusals of other jobs, the catalog before, and the refusal of a fresh start."""
    catalog_before = (home / "models" / "catalog.json").read_bytes()
    tree: list[psutil.Process] = []
    refused: list[str] = []

    def on_progress(event):
        if event.stage == "train" and event.data.get("epoch") == 1 and "eta_s" in event.data and not tree:
            root = psutil.Process(job.process.pid)
            tree.extend([root, *root.children(recursive=True)])
            for start in (lambda: tuning.segmenter.startSegmentation(MODEL, stored["tcga_fg_6692"]["volumes"]),
                          lambda: tuning.startFineTuning(MODEL, "another", epochs=1)):
                try:
                    start()
                except JobBusyError as err:
                    refused.append(str(err))
            job.cancel()

    job = tuning.startFineTuning(MODEL, "tiny-brats-stopped", epochs=20, device="cpu", threads=1,
                                 onProgress=on_progress)
    state = job.wait()
    catalog_after = (home / "models" / "catalog.json").read_bytes()  # before any later test registers a model
    ids_after = load_catalog(home).ids()
    interrupted = [p.name for p in tuning.interruptedRuns("tiny-brats-stopped")]
    try:
        tuning.startFineTuning(MODEL, "tiny-brats-stopped", epochs=1)
        restart_refusal = ""
    except ConfigError as err:
        restart_refusal = str(err)
    return {"job": job, "state": state, "tree": tree, "refused": refused, "catalog_before": catalog_before,
            "catalog_after": catalog_after, "ids_after": ids_after, "interrupted": interrupted,
            "restart_refusal": restart_refusal}


def test_stop_mid_run_kills_the_engine_and_registers_nothing(stopped):
    job, tree = stopped["job"], stopped["tree"]
    assert stopped["state"] is JobState.CANCELLED
    assert stopped["refused"] == [
        "fine-tuning is running: wait for it to finish or stop it before starting a segmentation",
        "fine-tuning is running: wait for it to finish or stop it before starting fine-tuning"]
    assert tree and not [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert job.modelRef == "" and [row["epoch"] for row in job.plot.rows()][:2] == [0, 1]
    assert stopped["catalog_after"] == stopped["catalog_before"]
    assert "tiny-brats-stopped" not in stopped["ids_after"]  # still a valid catalog, without a new model

    # the stopped run can be continued or discarded, not silently overwritten
    assert stopped["interrupted"] == ["tiny-brats-stopped-1.0.0"]
    assert stopped["restart_refusal"].startswith("a stopped fine-tuning of 'tiny-brats-stopped' exists")


def test_a_stopped_run_is_continued_where_it_stopped(stopped, tuning):
    job = tuning.startFineTuning(MODEL, "tiny-brats-stopped", epochs=2, device="cpu", threads=1, resume=True)
    assert job.wait() is JobState.SUCCEEDED, job.errorMessage
    assert job.modelRef == "tiny-brats-stopped@1.0.0"
    assert [row["epoch"] for row in job.plot.rows()] == [2]  # epoch 1 was done before the stop
    assert set(job.before) == {"TC", "WT", "ET", "mean"} and tuning.interruptedRuns("tiny-brats-stopped") == []


def test_a_stopped_run_can_be_discarded(tuning, home):
    from glims.paths import make_owned_dir

    run = make_owned_dir(home / "finetune" / "never-finished-1.0.0", home)  # as the engine creates run folders
    (run / "state.pt").write_bytes(b"")  # how the engine marks a run stopped after an epoch
    assert tuning.interruptedRuns("never-finished") == [run]
    tuning.discardInterruptedRuns("never-finished")
    assert tuning.interruptedRuns("never-finished") == [] and not run.exists()


def test_fine_tuning_is_refused_before_anything_starts(logic, headless):
    from GLIMSSegmenterLib.finetuning import FineTuningLogic

    charts_before = headless.scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode")
    tuning = FineTuningLogic(logic)  # the session's user folder: tiny models, an empty training set
    with pytest.raises(InputError, match="at least 2 brats cases in the training set .* it has 0"):
        tuning.startFineTuning(MODEL, "site", epochs=1)
    with pytest.raises(InputError, match="supports the brain-tumour"):
        tuning.startFineTuning("tiny-btcv", "site", epochs=1)
    with pytest.raises(ConfigError, match="budget"):
        tuning.startFineTuning(MODEL, "site")
    with pytest.raises(ConfigError, match="invalid model name 'my site'"):
        tuning.startFineTuning(MODEL, "my site", minutes=1)
    assert tuning.defaultModelName(MODEL) == "tiny-brats"  # a model the user added: a new version of it
    assert not logic.jobs.busy and headless.scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == charts_before
