"""``glims worker`` as a real process: segment requests over JSON lines give the one-shot command's label maps, the
second one reuses the loaded model, cancel stops only the job, bad requests get one error, idle workers exit."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glims.cli import main
from glims.progress import parse_protocol_line

from tiny_models import register_tiny_model

REPO = Path(__file__).resolve().parents[2]
MODALITIES = ("flair", "t1ce", "t1", "t2")
WAIT_S = 300  # a guard against a hung worker, not a speed requirement


def write_case(folder: Path, shape=(40, 48, 44), seed: int = 0) -> list[Path]:
    """Four small MR-like volumes (3 mm) with a bright textured block: a generated BraTS-shaped case."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, name in enumerate(MODALITIES):
        array = np.zeros(shape, np.float32)
        z, y, x = (s // 5 for s in shape)
        array[z:-z, y:-y, x:-x] = rng.random((shape[0] - 2 * z, shape[1] - 2 * y, shape[2] - 2 * x)) * 100 + 40 * index
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((3.0, 3.0, 3.0))
        path = folder / f"case_{name}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths


class WorkerClient:
    """A ``glims worker`` process with its protocol lines on a queue."""

    def __init__(self, home: Path, *options: str) -> None:
        env = dict(os.environ, GLIMS_HOME=str(home), PYTHONPATH=str(REPO / "GLIMSSegmenter"))
        self.process = subprocess.Popen([sys.executable, "-m", "glims", "worker", *options], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[dict | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            message = parse_protocol_line(line)
            assert message is not None, f"stdout carries only protocol lines, got {line!r}"
            self.lines.put(message)
        self.lines.put(None)

    def send(self, **message) -> None:
        self.process.stdin.write(json.dumps({"v": 1, **message}) + "\n")
        self.process.stdin.flush()

    def request(self, request_id: str, args: list[str]) -> None:
        self.send(type="request", id=request_id, command="segment", args=args)

    def next(self) -> dict | None:
        return self.lines.get(timeout=WAIT_S)

    def until(self, predicate) -> list[dict]:
        """Messages up to and including the first one ``predicate`` accepts."""
        seen = []
        while True:
            message = self.next()
            assert message is not None, f"the worker ended early: {''.join(self.stderr)[-2000:]}"
            seen.append(message)
            if predicate(message):
                return seen

    def job(self, request_id: str, args: list[str]) -> list[dict]:
        self.request(request_id, args)
        return self.until(lambda m: m["type"] == "done" and m.get("id") == request_id)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("glims_home")
    register_tiny_model(home, "brats")
    return home


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> list[Path]:
    return write_case(tmp_path_factory.mktemp("case"))


@pytest.fixture
def worker(home):
    client = WorkerClient(home)
    ready = client.next()
    assert ready["type"] == "ready" and ready["commands"] == ["segment"] and ready["pid"] == client.process.pid
    yield client
    client.close()


def segment_args(case: list[Path], out: Path, *extra: str) -> list[str]:
    args = ["-m", "tiny-brats", "--device", "cpu", "-o", str(out / "seg.seg.nrrd"), "--labelmap",
            str(out / "labels.nii.gz")]
    for path in case:
        args += ["-i", str(path)]
    return args + list(extra)


def labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_two_requests_give_the_one_shot_label_maps_and_the_second_reuses_the_loaded_model(worker, home, case,
                                                                                             tmp_path):
    one_shot = tmp_path / "cli"
    one_shot.mkdir()
    assert main(["segment", *segment_args(case, one_shot), "--home", str(home), "--progress", "none"]) == 0
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()

    events = {"a": worker.job("a", segment_args(case, first)), "b": worker.job("b", segment_args(case, second))}

    for request_id, messages in events.items():
        assert all(m.get("id") == request_id for m in messages)
        assert messages[0]["type"] == "started" and messages[-1]["exit_code"] == 0
        assert [m["type"] for m in messages].count("result") == 1
        assert not [m for m in messages if m["type"] == "error"]
    assert events["a"][-1]["model_cache"] == {"hits": 0, "misses": 1}
    assert events["b"][-1]["model_cache"] == {"hits": 1, "misses": 0}
    assert events["a"][-1]["case_cache"] == {"hits": 0, "misses": 1}
    assert events["b"][-1]["case_cache"] == {"hits": 1, "misses": 0}
    logs = {rid: [m["message"] for m in messages if m["type"] == "log"] for rid, messages in events.items()}
    assert "model cache miss: loading tiny-brats@1.0.0" in logs["a"]
    assert "model cache hit: tiny-brats@1.0.0 (loaded earlier in this worker)" in logs["b"]
    assert "case cache miss: reading and preparing the inputs" in logs["a"]
    assert "case cache hit: the inputs were read and prepared earlier in this worker" in logs["b"]
    reference = labels(one_shot / "labels.nii.gz")
    assert len(np.unique(reference)) > 1
    for folder in (first, second):
        assert np.array_equal(labels(folder / "labels.nii.gz"), reference)
        assert sorted(p.name for p in folder.iterdir()) == ["labels.nii.gz", "seg.json", "seg.seg.nrrd"]
    result = next(m for m in events["b"] if m["type"] == "result")
    assert result["outputs"]["labelmap"] == str(second / "labels.nii.gz")


def test_cancel_stops_only_the_job_leaves_no_output_and_the_worker_serves_the_next_one(worker, home, tmp_path):
    big = write_case(tmp_path / "big", shape=(48, 56, 52), seed=1)
    cancelled, after = tmp_path / "cancelled", tmp_path / "after"
    cancelled.mkdir(), after.mkdir()
    # --no-crop and overlap 0.9: hundreds of 32^3 windows, so the job is surely mid-inference when cancelled
    worker.request("slow", segment_args(big, cancelled, "--no-crop", "--overlap", "0.9"))
    before = worker.until(lambda m: m["type"] == "progress" and m["stage"] == "infer" and m["done"] >= 1)
    worker.request("meanwhile", segment_args(big, after))  # one job at a time: refused, not queued
    worker.send(type="cancel", id="slow")
    rest = worker.until(lambda m: m["type"] == "done" and m.get("id") == "slow")

    refused = [m for m in rest if m.get("id") == "meanwhile"]
    assert [m["type"] for m in refused] == ["error", "done"]
    assert refused[0]["message"] == "request 'slow' is running: send one request at a time"
    errors = [m for m in rest if m["type"] == "error" and m.get("id") == "slow"]
    assert [(e["error"], e["message"], e["exit_code"]) for e in errors] == [("Cancelled", "cancelled by request", 130)]
    assert rest[-1]["exit_code"] == 130
    infer = [m for m in before + rest if m["type"] == "progress" and m["stage"] == "infer" and m["id"] == "slow"]
    assert infer and infer[-1]["done"] < infer[-1]["total"]
    assert list(cancelled.iterdir()) == []  # not even a temporary file

    following = worker.job("next", segment_args(big, after))
    assert following[-1]["exit_code"] == 0 and following[-1]["model_cache"] == {"hits": 1, "misses": 0}
    assert (after / "labels.nii.gz").is_file() and worker.process.poll() is None


def test_bad_requests_get_one_error_each_and_the_worker_stays_up(worker, case, tmp_path):
    worker.process.stdin.write("not json\n")
    worker.process.stdin.flush()
    assert worker.until(lambda m: True) == [{"v": 1, "type": "error", "error": "RequestError",
                                             "message": "not a protocol v1 object: not json", "exit_code": 2}]
    unknown = worker.job("u", [])
    worker.send(type="request", id="t2", command="train", args=[])
    train = worker.until(lambda m: m["type"] == "done" and m.get("id") == "t2")
    missing_output = worker.job("o", ["-m", "tiny-brats", "-i", str(case[0])])
    missing_file = worker.job("f", segment_args([*case[:3], tmp_path / "nowhere_t2.nii.gz"], tmp_path))

    def errors(messages):
        return [(m["error"], m["message"], m["exit_code"]) for m in messages if m["type"] == "error"]

    assert errors(unknown) == [("RequestError", "glims segment: the following arguments are required: "
                                "-i/--input, -o/--output", 2)]
    assert errors([m for m in train if m.get("id") == "t2"]) == [
        ("RequestError", "this worker runs segment, not 'train'", 2)]
    assert errors(missing_output) == [("RequestError", "glims segment: the following arguments are required: "
                                       "-o/--output", 2)]
    [(kind, message, code)] = errors(missing_file)
    assert (kind, code) == ("InputError", 3) and "nowhere_t2.nii.gz" in message and "not found" in message
    assert missing_file[-1]["exit_code"] == 3 and list(tmp_path.iterdir()) == []
    good = worker.job("g", segment_args(case, tmp_path))
    assert good[-1]["exit_code"] == 0 and worker.process.poll() is None


def test_an_idle_worker_exits_and_a_shutdown_request_ends_a_busy_one(home, case, tmp_path):
    idle = WorkerClient(home, "--idle-timeout", "1")
    try:
        assert [m["type"] for m in idle.until(lambda m: m["type"] == "exit")] == ["ready", "exit"]
        assert idle.process.wait(timeout=WAIT_S) == 0
    finally:
        idle.close()
    assert idle.next() is None

    busy = WorkerClient(home)
    try:
        busy.request("s", segment_args(case, tmp_path, "--no-crop", "--overlap", "0.9"))
        busy.until(lambda m: m["type"] == "progress" and m["stage"] == "infer")
        busy.send(type="shutdown")
        rest = busy.until(lambda m: m["type"] == "exit")
        assert rest[-1] == {"v": 1, "type": "exit", "reason": "shutdown"}
        assert [m["exit_code"] for m in rest if m["type"] == "done"] == [130]
        assert busy.process.wait(timeout=WAIT_S) == 0 and list(tmp_path.iterdir()) == []
    finally:
        busy.close()
