"""Sample cases for the Sample Data module: the synthetic case made offline by the real ``glims synth`` in the
engine's process, the real TCGA case only where the shared data is, and their registration (guarded: the
slicer-core wheel has no Sample Data module)."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import SimpleITK as sitk

from GLIMSSegmenterLib import sampledata

SMALL = {"shape": (64, 64, 48), "spacing": 2.0}  # a small synthetic brain, so the engine makes it in seconds


def _sample_data_standin(registered: list) -> types.ModuleType:
    """What the Sample Data module offers other modules (its registration call; the data-source list it keeps).

    Slicer's own module needs the application; this one records the sources the way it stores them."""
    module = types.ModuleType("SampleData")

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                           nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                           loadFileTypes=None, loadFiles=None, loadFileProperties=None,
                                           checksums=None):
            lengths = {len(uris), len(fileNames), len(nodeNames), len(loadFileTypes)}
            assert len(lengths) == 1, "Sample Data refuses sources whose lists differ in length"
            registered.append(types.SimpleNamespace(
                category=category, sampleName=sampleName, uris=uris, fileNames=fileNames, nodeNames=nodeNames,
                customDownloader=customDownloader, thumbnailFileName=thumbnailFileName))

    module.SampleDataLogic = SampleDataLogic
    return module


def test_without_a_sample_data_module_nothing_is_registered(tmp_path):
    if importlib.util.find_spec("SampleData") is not None:
        pytest.skip("a Sample Data module is importable here")
    assert sampledata.registerSampleData(sampledata.sampleCases(tmp_path, dataRoot=tmp_path), print) is False


def test_the_synthetic_case_is_made_offline_once_and_loads_as_the_models_four_inputs(scene, logic, tmp_path):
    case = sampledata.syntheticCase(tmp_path, **SMALL)
    assert not any(path.exists() for path in case.files)
    assert sampledata.prepareSampleCase(case) is case
    folder = case.files[0].parent
    assert folder.parent == sampledata.sampleFolder(tmp_path)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no staging folder left behind
    images = [sitk.ReadImage(str(path)) for path in case.files]
    for image in images:
        assert image.GetSize() == (64, 64, 48) and image.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    flair = sitk.GetArrayFromImage(images[0])
    assert flair.max() > flair.min()  # a brain, not an empty volume
    stamps = [path.stat().st_mtime_ns for path in case.files]
    sampledata.prepareSampleCase(case)  # already there: left as it is
    assert [path.stat().st_mtime_ns for path in case.files] == stamps

    nodes = sampledata.loadSampleCase(case)
    assert [node.GetName() for node in nodes] == [f"GLIMS-SAMPLE-2024-0000_{s}" for s in ("flair", "t1ce", "t1", "t2")]
    spec = logic.model("tiny-brats")
    matched = logic.matchInputVolumes(spec.ref)
    assert [matched[inp.key] for inp in spec.inputs] == nodes  # every input filled from the names


def test_a_missing_case_file_adds_nothing_to_the_scene(headless, scene, tmp_path):
    case = sampledata.SampleCase(name="broken", files=(tmp_path / "a_flair.nii.gz",))
    before = scene.GetNumberOfNodes()
    with pytest.raises(sampledata.SampleDataError, match="missing"):
        sampledata.prepareSampleCase(case)
    with pytest.raises(sampledata.SampleDataError, match="could not load"):
        sampledata.loadSampleCase(case)
    assert scene.GetNumberOfNodes() == before


def test_the_real_case_is_offered_only_where_the_shared_data_is(shared_data, tmp_path):
    real = sampledata.realCase(shared_data)
    assert real is not None and all(path.is_file() for path in real.files)
    assert real.nodeNames == ("TCGA-FG-6692_fla_sri24_bet", "TCGA-FG-6692_t1c_sri24_bet",
                              "TCGA-FG-6692_t1_sri24_bet", "TCGA-FG-6692_t2_sri24_bet")
    assert sampledata.realCase(tmp_path) is None
    assert [c.name for c in sampledata.sampleCases(tmp_path, dataRoot=tmp_path)] == ["GLIMS synthetic brain tumour"]
    assert sampledata.sharedDataRoot({"GLIMS_SHARED_DATA": str(shared_data)}) == shared_data


def test_registration_offers_the_cases_and_a_click_loads_them(headless, scene, monkeypatch, tmp_path, shared_data):
    registered, loaded = [], []
    monkeypatch.setitem(sys.modules, "SampleData", _sample_data_standin(registered))
    cases = [sampledata.syntheticCase(tmp_path, **SMALL), sampledata.realCase(shared_data)]

    def load(case):
        loaded.append(sampledata.loadSampleCase(sampledata.prepareSampleCase(case)))

    assert sampledata.registerSampleData(cases, load) is True
    assert [(s.category, s.sampleName) for s in registered] == [
        ("GLIMS Segmenter", "GLIMS synthetic brain tumour"), ("GLIMS Segmenter", "TCGA-FG-6692 brain tumour (TCIA)")]
    for source, case in zip(registered, cases):
        assert source.nodeNames == list(case.nodeNames) and source.fileNames == [p.name for p in case.files]
        assert all(uri.startswith("file://") for uri in source.uris)  # nothing to download
        assert sampledata.THUMBNAIL.is_file() and source.thumbnailFileName == str(sampledata.THUMBNAIL)
    for source in registered:  # what Sample Data does when its button is clicked
        source.customDownloader(source)
    assert [[node.GetName() for node in nodes] for nodes in loaded] == [list(case.nodeNames) for case in cases]
    assert all(node.GetScene() is scene and node.GetImageData() is not None for nodes in loaded for node in nodes)
