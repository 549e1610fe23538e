"""The CPU thread policy: the decision from measured numbers, the real probe, and its use by the commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from glims.bench.load import busy_processes
from glims.cli import main
from glims.cpu_threads import (
    CpuShare,
    ThreadChoice,
    apply_threads,
    available_cores,
    choose_threads,
    measure_cpu_share,
    threads_for,
    threads_in_log_line,
)
from glims.errors import ConfigError

linux_only = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the probe reads Linux's /proc/stat")


@pytest.mark.parametrize(
    ("cores", "busy", "expected"),
    [
        (2, 0.0, 2),  # idle: one thread per core
        (2, 0.3, 2),  # a little background work (a browser tab) keeps both
        (2, 0.6, 1),  # more than half a core taken: the second thread would wait for time slices
        (2, 1.0, 1),  # one busy process beside us on two cores
        (2, 1.5, 1),  # half a core left: still a free core
        (2, 1.6, 2),  # no core free: every thread time-shares, and two get more slices than one
        (2, 2.0, 2),
        (2, 5.0, 2),
        (4, 1.0, 3),
        (4, 1.4, 3),
        (4, 1.6, 2),
        (4, 3.4, 1),
        (4, 3.9, 4),
        (16, 0.2, 16),
        (1, 0.0, 1),
        (2, -0.2, 2),  # a negative reading (rounding of the counters) counts as idle
    ],
)
def test_one_thread_per_free_core(cores, busy, expected):
    assert threads_for(cores, busy) == expected


def test_no_cores_is_refused():
    with pytest.raises(ValueError, match="cores"):
        threads_for(0, 0.0)


def test_the_description_says_why():
    assert ThreadChoice(1, 2, "measured", 1.04).describe() == "1 thread of 2 cores (1.0 cores busy with other work)"
    assert ThreadChoice(4, 2, "requested").describe() == "4 threads of 2 cores (requested)"
    assert ThreadChoice(2, 2, "default").describe() == "2 threads of 2 cores (CPU load not measurable here)"


def test_the_log_line_reads_back_in_the_benchmarks_way():
    """The benchmarks find a job's thread count in the log lines a front end shows (prefixed or not)."""
    for choice in (ThreadChoice(1, 2, "measured", 1.04), ThreadChoice(12, 16, "requested"),
                   ThreadChoice(2, 2, "streams")):
        assert threads_in_log_line(choice.log_line()) == choice.threads
        assert threads_in_log_line(f"12:00:01 INFO {choice.log_line()}") == choice.threads
    assert threads_in_log_line("model cache hit: glims-brats-synth@1.4.0") is None


def test_a_job_of_window_streams_takes_one_thread_per_core_without_the_probe(monkeypatch):
    import glims.cpu_threads as cpu_threads

    def no_probe(window_s):
        raise AssertionError("the probe ran")

    monkeypatch.setattr(cpu_threads, "measure_cpu_share", no_probe)
    choice = choose_threads(measure=False)
    assert (choice.threads, choice.reason) == (available_cores(), "streams")
    assert choice.describe().endswith("(small windows: one window stream per core)")
    assert choose_threads(2, measure=False).reason == "requested"


def test_available_cores_are_those_of_the_affinity_set():
    cores = available_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert cores <= len(os.sched_getaffinity(0))


@linux_only
def test_the_real_probe_gives_a_valid_count():
    share = measure_cpu_share()
    assert isinstance(share, CpuShare)
    assert share.cores == available_cores()
    assert 0.0 <= share.busy_elsewhere <= len(os.sched_getaffinity(0)) + 0.5
    assert share.window_s >= 0.09
    choice = choose_threads()
    assert choice.reason == "measured"
    assert 1 <= choice.threads <= choice.cores


@linux_only
def test_a_busy_process_on_one_of_our_cores_is_seen():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    with busy_processes(1):  # one spinning Python loop pinned to our last CPU, running when this returns
        share = measure_cpu_share(window_s=0.3)
    assert share is not None
    # The spinner never sleeps, so its CPU is busy the whole window (with it or with whatever it shares the CPU with).
    assert share.busy_elsewhere >= 0.8


def test_a_requested_count_wins_and_reaches_torch():
    before = torch.get_num_threads()
    try:
        choice = apply_threads(1)
        assert (choice.threads, choice.reason) == (1, "requested")
        assert torch.get_num_threads() == 1
        choice = apply_threads(None)
        assert choice.reason in ("measured", "default")
        assert torch.get_num_threads() == choice.threads
    finally:
        torch.set_num_threads(before)


def test_fewer_than_one_thread_is_refused():
    with pytest.raises(ConfigError, match="--threads must be at least 1"):
        apply_threads(0)


def test_segment_refuses_zero_threads_with_one_line(tmp_path, capsys):
    image = tmp_path / "t1.nii.gz"
    image.write_bytes(b"")  # never read: the thread count is checked first
    code = main(["segment", "-i", str(image), "-o", str(tmp_path / "out.seg.nrrd"), "--threads", "0",
                 "--home", str(tmp_path / "home"), "--progress", "none"])
    assert code == ConfigError.exit_code
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out.seg.nrrd").exists()


def test_evaluate_from_files_refuses_threads(tmp_path, capsys):
    code = main(["evaluate", "--pred", str(tmp_path), "--ref", str(tmp_path), "--threads", "1",
                 "--out", str(tmp_path / "scores.csv")])
    assert code == ConfigError.exit_code
    assert "--threads" in capsys.readouterr().err


@pytest.fixture
def torch_threads_restored():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_segment_runs_with_the_chosen_threads_and_says_so(home, tmp_path, capsys, torch_threads_restored):
    from test_worker import write_case

    inputs = [arg for path in write_case(tmp_path / "case") for arg in ("-i", str(path))]
    out = tmp_path / "out"
    common = ["segment", "-m", "tiny-brats", "--device", "cpu", *inputs, "--home", str(home), "--progress", "json"]
    torch.set_num_threads(available_cores())
    assert main([*common, "-o", str(out / "a.seg.nrrd"), "--threads", "1"]) == 0
    logs = [line for line in capsys.readouterr().out.splitlines() if '"CPU threads: ' in line]
    assert len(logs) == 1 and f"CPU threads: 1 thread of {available_cores()} cores (requested)" in logs[0]
    assert torch.get_num_threads() == 1

    assert main([*common, "-o", str(out / "b.seg.nrrd")]) == 0
    logs = [line for line in capsys.readouterr().out.splitlines() if '"CPU threads: ' in line]
    if available_cores() > 1:  # tiny-brats's 32^3 windows: one stream per core, no probe
        assert len(logs) == 1 and "(small windows: one window stream per core)" in logs[0]
        assert torch.get_num_threads() == available_cores()
    else:
        assert len(logs) == 1 and ("busy with other work" in logs[0] or "not measurable" in logs[0])
    assert (out / "a.seg.nrrd").is_file() and (out / "b.seg.nrrd").is_file()
