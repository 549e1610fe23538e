"""Segment through the module logic on real MRML with the warm engine worker (a real ``glims worker`` process):
the second run reuses the worker and its loaded model and matches a one-shot run; cancel keeps the worker; a
killed worker is reported once and replaced; idle workers exit; the setting turns the worker off."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from GLIMSSegmenterLib.job import JobState
from GLIMSSegmenterLib.process import EngineProcess
from GLIMSSegmenterLib.warmworker import WarmWorker, WorkerJobProcess

from test_worker import write_case

MODEL = "tiny-brats"
WAIT_S = 300  # a guard against a hung process, not a speed requirement


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> list[Path]:
    return write_case(tmp_path_factory.mktemp("warm_case"))


@pytest.fixture(scope="module")
def big_case(tmp_path_factory) -> list[Path]:
    return write_case(tmp_path_factory.mktemp("warm_big_case"), shape=(48, 56, 52), seed=1)


@pytest.fixture
def warm_logic(logic):
    """The logic with a worker of its own (so a test's kill or idle timeout touches no other test)."""
    logic.warmWorker = WarmWorker()
    yield logic
    logic.releaseWorker()


def _segmentation_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]


def _run(logic, volumes, **options):
    logs, finished = [], []
    job = logic.startSegmentation(MODEL, volumes, device="cpu", onLog=logs.append, onFinished=finished.append,
                                  **options)
    state = job.wait()
    return job, state, logs, finished


def test_two_segments_share_one_worker_and_its_model_and_match_a_one_shot_run(warm_logic, scene, headless, case):
    volumes = [headless.load_volume(path) for path in case]
    first, state1, logs1, finished1 = _run(warm_logic, volumes)
    pid = warm_logic.warmWorker.pid
    second, state2, logs2, _ = _run(warm_logic, volumes)
    assert (state1, state2) == (JobState.SUCCEEDED, JobState.SUCCEEDED), first.errorMessage or second.errorMessage
    assert finished1 == [first]
    assert isinstance(first.process, WorkerJobProcess) and first.process.pid == second.process.pid == pid
    assert warm_logic.warmWorker.running
    assert first.process.modelCache == {"hits": 0, "misses": 1}
    assert second.process.modelCache == {"hits": 1, "misses": 0}
    assert "model cache hit: tiny-brats@1.0.0 (loaded earlier in this worker)" in logs2
    assert "input flair  <- volume 'case_flair'" in logs2  # engine lines name the user's volumes, as before
    assert len(_segmentation_nodes(scene)) == 2 and not first.workFolder.exists()

    warm_logic.useWarmWorker = False
    one_shot, state3, _, _ = _run(warm_logic, volumes)
    assert state3 is JobState.SUCCEEDED and type(one_shot.process) is EngineProcess
    counts = [[(s["name"], s["voxels"]) for s in job.summary["segments"]] for job in (first, second, one_shot)]
    assert counts[0] == counts[1] == counts[2] and sum(v for _, v in counts[0]) > 0


def test_cancel_stops_the_job_but_keeps_the_warm_worker(warm_logic, scene, headless, case, big_case):
    volumes = [headless.load_volume(path) for path in big_case]
    nodes_before = scene.GetNumberOfNodes()

    def on_progress(event):
        if event.stage == "infer":
            job.cancel()

    job = warm_logic.startSegmentation(MODEL, volumes, device="cpu", overlap=0.9, wholeImage=True,
                                       onProgress=on_progress)
    pid = job.process.pid
    assert job.wait() is JobState.CANCELLED
    assert scene.GetNumberOfNodes() == nodes_before and _segmentation_nodes(scene) == []
    assert job.segmentationNode is None and not job.workFolder.exists()
    assert warm_logic.warmWorker.pid == pid  # still alive, still warm

    small = [headless.load_volume(path) for path in case]
    following, state, _, _ = _run(warm_logic, small)
    assert state is JobState.SUCCEEDED and following.process.pid == pid
    assert following.process.modelCache == {"hits": 1, "misses": 0}


def test_a_job_that_does_not_stop_when_cancelled_is_ended_with_its_worker(warm_logic, scene, headless, case,
                                                                           big_case):
    import psutil

    volumes = [headless.load_volume(path) for path in big_case]
    frozen: list[int] = []

    def on_progress(event):
        if event.stage == "infer" and not frozen:
            frozen.append(job.process.pid)
            os.kill(job.process.pid, signal.SIGSTOP)  # a worker that cannot answer the cancel request
            job.process.terminateGracePeriod = 1
            job.cancel()

    job = warm_logic.startSegmentation(MODEL, volumes, device="cpu", overlap=0.9, wholeImage=True,
                                       onProgress=on_progress)
    assert job.wait() is JobState.CANCELLED and frozen
    assert _segmentation_nodes(scene) == [] and not job.workFolder.exists()
    assert not psutil.pid_exists(frozen[0]) or psutil.Process(frozen[0]).status() == psutil.STATUS_ZOMBIE

    following, state, _, _ = _run(warm_logic, [headless.load_volume(path) for path in case])
    assert state is JobState.SUCCEEDED and following.process.pid != frozen[0]


def test_a_killed_worker_fails_the_running_job_with_one_line_and_a_fresh_worker_runs_the_next(
        warm_logic, scene, headless, case, big_case):
    volumes = [headless.load_volume(path) for path in big_case]

    def on_progress(event):
        if event.stage == "infer" and job.process.pid is not None and not killed:
            killed.append(job.process.pid)
            os.kill(job.process.pid, signal.SIGKILL)

    killed: list[int] = []
    job = warm_logic.startSegmentation(MODEL, volumes, device="cpu", overlap=0.9, wholeImage=True,
                                       onProgress=on_progress)
    assert job.wait() is JobState.FAILED
    assert job.errorMessage == ("the GLIMS engine worker stopped unexpectedly (killed by signal 9); the next run "
                                "starts a fresh worker")
    assert _segmentation_nodes(scene) == [] and not job.workFolder.exists()

    following, state, _, _ = _run(warm_logic, [headless.load_volume(path) for path in case])
    assert state is JobState.SUCCEEDED, following.errorMessage
    assert following.process.pid not in (None, *killed)
    assert following.process.modelCache == {"hits": 0, "misses": 1}  # a fresh worker loads the model again


def test_an_idle_worker_exits_and_release_stops_it_at_once(logic, scene, headless, case):
    logic.warmWorker = WarmWorker(idleTimeout=1)
    volumes = [headless.load_volume(path) for path in case]
    first, state, _, _ = _run(logic, volumes)
    assert state is JobState.SUCCEEDED
    worker = logic.warmWorker.process
    deadline = time.monotonic() + WAIT_S
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker.alive and worker.returncode == 0 and not logic.warmWorker.running

    second, state, _, _ = _run(logic, volumes)  # a new worker, started by the click
    assert state is JobState.SUCCEEDED and second.process.pid != first.process.pid
    logic.releaseWorker()
    assert not logic.warmWorker.running and logic.warmWorker.pid is None


def test_a_prestarted_worker_imports_before_the_first_segment_and_runs_it(warm_logic, scene, headless, case):
    assert warm_logic.prestartWorker()
    worker = warm_logic.warmWorker.process
    assert warm_logic.warmWorker.running and not warm_logic.prestartWorker()  # one is running already
    deadline = time.monotonic() + WAIT_S
    while not worker.ready and worker.alive and time.monotonic() < deadline:
        worker.discardPendingLines()  # notes its "ready" line: its libraries are imported, before any request
        time.sleep(0.1)
    assert worker.ready

    job, state, logs, _ = _run(warm_logic, [headless.load_volume(path) for path in case])
    assert state is JobState.SUCCEEDED, job.errorMessage
    assert job.process.pid == worker.pid  # the first Segment went to the worker started ahead of it
    assert job.process.modelCache == {"hits": 0, "misses": 1}
    assert len(_segmentation_nodes(scene)) == 1


def test_no_worker_is_prestarted_when_runs_do_not_use_it(logic):
    logic.warmWorker = WarmWorker()
    logic.useWarmWorker = False
    assert not logic.prestartWorker()
    assert not logic.warmWorker.running and logic.warmWorker.process is None


def test_the_setting_turns_the_worker_off(headless, glims_home, monkeypatch):
    from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic

    assert GLIMSSegmenterLogic(glimsHome=glims_home).useWarmWorker
    monkeypatch.setenv("GLIMS_WARM_WORKER", "0")
    assert not GLIMSSegmenterLogic(glimsHome=glims_home).useWarmWorker


def _launcher(tmp_path: Path, name: str, run_python: str) -> str:
    """A stand-in for an interpreter launcher that does not pass its input on to Python (``run_python`` says how)."""
    path = tmp_path / name
    path.write_text(f'#!/bin/sh\n{run_python.format(python=sys.executable)}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="the launcher stand-ins are POSIX shell scripts")
@pytest.mark.parametrize("launcher, what", [
    ('exec "{python}" "$@" < /dev/null', "could not read its requests (its input was closed when it started)"),
    ('sleep 600 | "{python}" "$@"', "did not answer within 2 s"),
])
def test_a_worker_that_cannot_read_requests_fails_the_run_once_and_later_runs_are_one_shot(
        warm_logic, scene, headless, case, tmp_path, launcher, what):
    warm_logic.pythonExecutable = _launcher(tmp_path, "PythonLauncher", launcher)
    warm_logic.warmWorker.answerTimeout = 2
    volumes = [headless.load_volume(path) for path in case]
    job = warm_logic.startSegmentation(MODEL, volumes, device="cpu")
    assert job.wait() is JobState.FAILED
    assert job.errorMessage == (f"the GLIMS engine worker {what}; it was stopped, and from now on each run starts "
                                "the engine in a process of its own: run it again")
    assert warm_logic.warmWorker.unresponsive and _segmentation_nodes(scene) == []
    warm_logic.pythonExecutable = None
    following, state, _, _ = _run(warm_logic, volumes)
    assert state is JobState.SUCCEEDED and type(following.process) is EngineProcess


def test_a_second_caller_while_the_worker_is_busy_gets_a_process_of_its_own(warm_logic, scene, headless, glims_home,
                                                                           case, big_case):
    from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic

    other = GLIMSSegmenterLogic(glimsHome=glims_home)  # e.g. a second session of a web front end
    other.warmWorker = warm_logic.warmWorker
    paused: list[int] = []

    def pause_in_inference(event):  # the busy job cannot end while the other one runs, however fast the machine
        if event.stage == "infer" and not paused:
            paused.append(busy.process.pid)
            os.kill(busy.process.pid, signal.SIGSTOP)

    busy = warm_logic.startSegmentation(MODEL, [headless.load_volume(path) for path in big_case], device="cpu",
                                        overlap=0.9, wholeImage=True, onProgress=pause_in_inference)
    deadline = time.monotonic() + WAIT_S
    while not paused and not busy.poll() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert paused and warm_logic.warmWorker.busy
    try:
        meanwhile, state, _, _ = _run(other, [headless.load_volume(path) for path in case])
        busy.cancel()
    finally:
        os.kill(paused[0], signal.SIGCONT)
    assert state is JobState.SUCCEEDED and type(meanwhile.process) is EngineProcess
    assert busy.wait() is JobState.CANCELLED and not warm_logic.warmWorker.busy
