"""The engine's input files of the scene's volumes, kept between Segment clicks, on real MRML with a real warm
worker: a second click on unchanged volumes reuses the files (and the worker its prepared case); a volume whose
voxels changed is written again; the files go when the worker is released or the scene is closed, and nothing
else does."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_worker import write_case

from GLIMSSegmenterLib.job import JobState
from GLIMSSegmenterLib.warmworker import WarmWorker

MODEL = "tiny-brats"
CASE_HIT = "case cache hit: the inputs were read and prepared earlier in this worker"
CASE_MISS = "case cache miss: reading and preparing the inputs"


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> list[Path]:
    return write_case(tmp_path_factory.mktemp("inputfiles_case"))


@pytest.fixture
def warm_logic(logic, tmp_path):
    """The logic with a worker of its own and its temporary files under ``tmp_path``."""
    from GLIMSSegmenterLib.inputfiles import InputFileCache

    logic.warmWorker = WarmWorker()
    logic.inputFiles = InputFileCache(str(tmp_path))
    yield logic
    logic.releaseWorker()


def _run(logic, volumes):
    logs: list[str] = []
    job = logic.startSegmentation(MODEL, volumes, device="cpu", onLog=logs.append)
    assert job.wait() is JobState.SUCCEEDED, job.errorMessage
    return job, logs


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_unchanged_volumes_reuse_their_files_and_a_modified_volume_is_written_again(warm_logic, scene, headless,
                                                                                   case):
    import slicer

    volumes = [headless.load_volume(path) for path in case]
    first, logs1 = _run(warm_logic, volumes)
    folder = warm_logic.inputFiles.folder
    written = _files(folder)
    assert sorted(written) == ["flair-1.nrrd", "t1-3.nrrd", "t1ce-2.nrrd", "t2-4.nrrd"]
    assert first.timings["write inputs"] > 0 and first.timings["import"] > 0
    assert CASE_MISS in logs1

    second, logs2 = _run(warm_logic, volumes)
    assert _files(folder) == written  # the same files, not rewritten
    assert CASE_HIT in logs2 and "input flair  <- volume 'case_flair'" in logs2
    counts = [[(s["name"], s["voxels"]) for s in job.summary["segments"]] for job in (first, second)]
    assert counts[0] == counts[1]

    voxels = slicer.util.arrayFromVolume(volumes[0])
    before = voxels.copy()
    voxels[voxels > 0] += 50.0  # a brighter FLAIR
    slicer.util.arrayFromVolumeModified(volumes[0])
    third, logs3 = _run(warm_logic, volumes)
    now = _files(folder)
    assert sorted(now) == ["flair-5.nrrd", "t1-3.nrrd", "t1ce-2.nrrd", "t2-4.nrrd"]  # the old FLAIR file is gone
    assert all(now[name] == written[name] for name in ("t1-3.nrrd", "t1ce-2.nrrd", "t2-4.nrrd"))
    assert CASE_MISS in logs3
    on_disk = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "flair-5.nrrd")))
    assert np.array_equal(on_disk, np.where(before > 0, before + np.float32(50), before)) and (before > 0).any()


def test_the_files_go_when_the_scene_is_closed_or_the_worker_released_and_nothing_else_does(
        warm_logic, scene, headless, case, tmp_path):
    volumes = [headless.load_volume(path) for path in case]
    _run(warm_logic, volumes)
    folder = warm_logic.inputFiles.folder
    assert folder.parent == tmp_path and folder.name.startswith("GLIMSSegmenter-inputs-")
    headless.scene.Clear(False)
    assert not folder.exists() and warm_logic.inputFiles.folder is None

    volumes = [headless.load_volume(path) for path in case]
    _run(warm_logic, volumes)
    folder = warm_logic.inputFiles.folder
    assert len(list(folder.iterdir())) == 4
    warm_logic.releaseWorker()
    assert not folder.exists() and not warm_logic.warmWorker.running
    assert list(tmp_path.iterdir()) == []
    assert all(path.is_file() for path in case)  # the user's files stay

    warm_logic.keepTemporaryFiles = True  # debugging: the inputs are written into the job's own folder, kept
    job, _ = _run(warm_logic, volumes)
    assert warm_logic.inputFiles.folder is None
    assert {"flair.nrrd", "t1ce.nrrd", "t1.nrrd", "t2.nrrd"} <= {p.name for p in job.workFolder.iterdir()}
    shutil.rmtree(job.workFolder)
