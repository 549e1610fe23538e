"""Running, cancelling and failing jobs through the module logic with the real engine process: the scene is left
as it was, the process tree is gone, the user gets one readable line."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import SimpleITK as sitk

from GLIMSSegmenterLib.job import JobState

MODEL = "tiny-brats"


def _segmentation_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]


def _launcher(tmp_path: Path) -> str:
    """A stand-in for Slicer's PythonSlicer launcher: a shell that starts Python as a child and waits for it."""
    path = tmp_path / "PythonSlicer"
    path.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="the launcher stand-in is a POSIX shell script")
def test_cancel_kills_the_process_tree_and_leaves_the_scene_as_it_was(logic, scene, headless, brats_full_files,
                                                                     tmp_path):
    volumes = [headless.load_volume(path) for path in brats_full_files]
    logic.pythonExecutable = _launcher(tmp_path)
    logic.useWarmWorker = False  # a process per run (the warm worker's cancel: test_module_warmworker.py)
    nodes_before = scene.GetNumberOfNodes()
    tree: list[psutil.Process] = []

    def on_progress(event):
        if not tree:  # the engine is working: remember the launcher and its children, then cancel
            root = psutil.Process(job.process.pid)
            tree.extend([root, *root.children(recursive=True)])
            job.cancel()

    job = logic.startSegmentation(MODEL, volumes, device="cpu", onProgress=on_progress)
    inputs = {p.name.split("-")[0]: p for p in logic.inputFiles.folder.iterdir()}  # kept for the next click
    assert sorted(inputs) == ["flair", "t1", "t1ce", "t2"]
    written = sitk.ReadImage(str(inputs["t1ce"]))
    source = sitk.ReadImage(str(brats_full_files[1]))
    assert written.GetSize() == source.GetSize() and written.GetOrigin() == pytest.approx(source.GetOrigin())
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(source))

    assert job.wait() is JobState.CANCELLED
    assert len(tree) >= 2, "the launcher should have a Python child"
    assert not [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert scene.GetNumberOfNodes() == nodes_before
    assert _segmentation_nodes(scene) == []
    assert job.segmentationNode is None and not job.workFolder.exists()


def test_an_engine_error_reaches_the_user_as_one_line_and_adds_nothing(logic, scene, headless, brats_coarse_files):
    import slicer

    volumes = [headless.load_volume(path) for path in brats_coarse_files]
    slicer.util.arrayFromVolume(volumes[0])[:] = 0  # a blank FLAIR
    slicer.util.arrayFromVolumeModified(volumes[0])
    nodes_before = scene.GetNumberOfNodes()
    job = logic.startSegmentation(MODEL, volumes, device="cpu")
    assert job.wait() is JobState.FAILED
    assert job.errorMessage == ("FLAIR (volume 'BraTS-GLI-00001-000-t2f'): the image is constant (0 everywhere): "
                                "empty or blank")
    assert scene.GetNumberOfNodes() == nodes_before and not job.workFolder.exists()
    with pytest.raises(RuntimeError, match="constant"):
        logic.segment(MODEL, volumes, device="cpu")


def test_missing_inputs_are_named_before_anything_starts(logic, scene, headless, brats_coarse_files):
    from glims.errors import InputError

    volumes = {"flair": headless.load_volume(brats_coarse_files[0])}
    with pytest.raises(InputError, match="T1 contrast-enhanced.*T1 native.*T2"):
        logic.startSegmentation(MODEL, volumes)
    assert _segmentation_nodes(scene) == []
