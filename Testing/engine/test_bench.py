"""``glims bench``: report format, isolation in worker processes, and a real (tiny) network benchmark run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from glims import bench
from glims.bench import network as network_bench
from glims.bench import segment as segment_bench
from glims.cli import main
from glims.errors import ConfigError

TINY_RUN = ["--size", "32", "--feature-size", "6", "--repeats", "1", "--threads", "1"]


def test_importing_the_benchmark_module_does_not_import_torch():
    code = "import sys, glims.bench, glims.commands.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_report_renders_markdown_and_json():
    report = bench.BenchReport(
        target="network",
        title="A title",
        columns=[("model", "model"), ("median_s", "median (s)"), ("gmac", "GMAC"), ("params", "parameters")],
        rows=[
            {"model": "a|b", "median_s": 2.345, "gmac": 56.98, "params": 47163349},
            {"model": "c", "median_s": None, "gmac": 0.004, "params": 3},
        ],
        context={"cpu": "Some CPU", "threads": 2, "not shown": 1},
        notes=["A note."],
    )
    text = report.to_markdown()
    lines = text.splitlines()
    assert lines[0] == "### A title"
    assert "- cpu: Some CPU" in lines and "- threads: 2" in lines and not any("not shown" in x for x in lines)
    assert "| model | median (s) | GMAC | parameters |" in lines
    assert "| a\\|b | 2.35 | 56.98 | 47,163,349 |" in lines
    assert "| c | – | 4.0e-03 | 3 |" in lines
    assert lines[-1] == "- A note."
    data = json.loads(json.dumps(report.to_json()))
    assert data["rows"][0]["params"] == 47163349 and data["columns"][0] == ["model", "model"]


def test_network_benchmark_times_both_glims_paths_in_worker_processes(tmp_path, capsys):
    out_file = tmp_path / "report.json"
    argv = ["bench", "--progress", "none", "network", *TINY_RUN, "--models", "glims-reference,glims-fast"]
    assert main([*argv, "--json", "--output", str(out_file)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out_file.read_text()) == report
    assert report["target"] == "network" and report["context"]["threads"] == 1
    assert report["context"]["glims_feature_size"] == 6
    rows = {r["key"]: r for r in report["rows"]}
    assert set(rows) == {"glims-reference", "glims-fast"}
    for row in rows.values():
        assert row["status"] == "ok" and row["median_s"] > 0 and row["peak_rss_mib"] > 50
        assert row["params"] == rows["glims-reference"]["params"]
        assert row["gmac"] == pytest.approx(rows["glims-reference"]["gmac"]) and row["gmac"] > 0
        assert row["vs_swinunetr"] is None
    assert rows["glims-reference"]["vs_glims_reference"] == 1
    assert rows["glims-fast"]["max_abs_diff"] < 1e-3
    assert rows["glims-reference"]["max_abs_diff"] is None


def test_train_benchmark_runs_every_configuration_on_the_same_trajectory(capsys):
    argv = ["bench", "--progress", "none", "train", "--configs", "default,channels-last,bf16", "--steps", "1",
            "--warmup", "1", "--threads", "1", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == "train"
    rows = {r["config"]: r for r in report["rows"]}
    base, layout, bf16 = (rows[bench.TRAIN_CONFIGS[k]["label"]] for k in ("default", "channels-last", "bf16"))
    for row in (base, layout, bf16):
        assert row["steps_per_s"] > 0 and row["rss"] > 50
        assert 0.1 < row["loss"] < 10
    assert base["speedup"] == 1 and layout["speedup"] > 0 and bf16["speedup"] > 0
    # Same weights and batch: the first step's loss is the same function's value in either layout; bf16 autocast
    # rounds the forward pass (about 3 significant digits), so it agrees to about 1e-2, not to float32 rounding.
    assert layout["diff"] < 1e-4
    assert 0 < bf16["diff"] < 5e-2
    assert main(["bench", "--progress", "none", "train", "--configs", "fastest"]) == 2


def test_bad_requests_are_clear_errors(capsys, monkeypatch):
    assert main(["bench", "--progress", "none", "network", "--models", "glims-fast,resnet"]) == 2
    assert "unknown model(s) ['resnet']" in capsys.readouterr().err
    assert main(["bench", "--progress", "none", "network", "--size", "40"]) == 2
    assert main(["bench", "--progress", "none", "network", "--weights", "/nonexistent.pt"]) == 2
    capsys.readouterr()
    # checked before the work starts: no model is built and no case made or segmented for a request that must fail
    prepared = []
    monkeypatch.setattr(segment_bench, "random_full_size_model", lambda *a: prepared.append(a))
    assert main(["bench", "--progress", "none", "segment", "--label", "/nonexistent-seg.nii.gz"]) == 2
    assert "--label: no such file" in capsys.readouterr().err
    assert prepared == []


def test_a_failing_worker_raises_with_its_last_error_line():
    with pytest.raises(bench.BenchError, match="benchmark worker network failed: .*KeyError"):
        bench.measure_in_subprocess("network", {"threads": 1})


def test_rounds_pool_the_timed_forwards_and_keep_the_worst_memory():
    runs = [
        {"times_s": [3.0, 1.0], "median_s": 2.0, "cpu_s": 4.0, "peak_rss_mib": 900.0, "params": 7, "output": "a.pt"},
        {"times_s": [2.0, 9.0, 8.0], "median_s": 8.0, "cpu_s": 6.0, "peak_rss_mib": 950.0, "params": 7},
    ]
    combined = bench.combine_rounds(runs)
    assert combined["times_s"] == [3.0, 1.0, 2.0, 9.0, 8.0] and combined["median_s"] == 3.0
    assert combined["cpu_s"] == 5.0 and combined["peak_rss_mib"] == 950.0 and combined["output"] == "a.pt"
    assert bench.combine_rounds([runs[0], {"error": "worker failed"}]) == {"error": "worker failed"}


def test_the_command_line_makes_idle_openmp_threads_sleep_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    main(["bench", "--progress", "none", "network", "--models", "nope"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    main(["bench", "--progress", "none", "network", "--models", "nope"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_network_benchmark_batches_windows_under_autocast(capsys):
    argv = ["bench", "--progress", "none", "network", *TINY_RUN, "--models", "glims-reference,glims-fast",
            "--precision", "bf16", "--batch", "2", "--no-flops", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["context"]["precision"] == "bf16" and report["context"]["device"] == "cpu"
    assert report["context"]["input"].startswith("2x4x32^3")
    assert report["title"] == "Network forward at 2x4x32^3 on the CPU"
    assert ["windows_per_s", "windows / s"] in report["columns"]
    assert not any(key == "peak_device_mib" for key, _ in report["columns"])  # no GPU column on the CPU
    for row in report["rows"]:
        assert row["status"] == "ok" and row["windows_per_s"] == pytest.approx(2 / row["median_s"])
        assert row["peak_device_mib"] is None
    # both paths ran under bf16 autocast, each rounding differently: unlike fp32 runs (< 1e-3, the test above),
    # their logits no longer agree to float32 rounding
    fast = next(r for r in report["rows"] if r["key"] == "glims-fast")
    assert 1e-3 < fast["max_abs_diff"] < float("inf")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_devices_and_precisions_this_machine_cannot_run_are_refused_before_any_work(capsys, monkeypatch):
    started = []
    for module in (network_bench, segment_bench):
        monkeypatch.setattr(module, "measure_in_subprocess", lambda *a, **k: started.append(a))
    monkeypatch.setattr(segment_bench, "random_full_size_model", lambda *a: started.append(a))
    for target in ("network", "segment"):
        assert main(["bench", "--progress", "none", target, "--device", "cuda"]) == 5
        assert "no CUDA device" in capsys.readouterr().err
        assert main(["bench", "--progress", "none", target, "--precision", "fp16"]) == 2
        assert "--precision fp16 is for GPUs" in capsys.readouterr().err
    assert main(["bench", "--progress", "none", "network", "--batch", "0"]) == 2
    assert main(["bench", "--progress", "none", "segment", "--sw-batch-size", "0"]) == 2
    assert started == []


def test_each_target_runs_from_a_typed_spec_whose_defaults_are_the_command_line_defaults():
    import argparse

    specs = {"network": bench.NetworkSpec, "segment": bench.SegmentSpec, "train": bench.TrainSpec,
             "warm": bench.WarmSpec, "settings": bench.SettingsSpec}
    assert set(specs) == set(bench.TARGETS)
    for name, spec_type in specs.items():
        parser = argparse.ArgumentParser()
        bench.TARGETS[name].add_arguments(parser)
        assert bench.TARGETS[name].spec_from_args(parser.parse_args([])) == spec_type()
    with pytest.raises(ConfigError, match="--configs: choose from default, channels-last, bf16"):
        bench.TARGETS["train"].run(bench.TrainSpec(configs=("fastest",)))
    with pytest.raises(ConfigError, match="--case: give at least one"):
        bench.TARGETS["settings"].run(bench.SettingsSpec())


def test_network_benchmark_under_a_competing_load_rows_per_load_and_threads_chosen_per_worker(capsys):
    argv = ["bench", "--progress", "none", "network", "--size", "32", "--feature-size", "6", "--repeats", "1",
            "--threads", "auto", "--load", "0,1", "--models", "glims-reference,glims-fast", "--no-flops", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["context"]["threads"].startswith("auto")
    assert "1 busy process (python -c 'while True: pass') pinned to CPU" in report["context"]["competing_load"]
    rows = [(r["load"], r["key"]) for r in report["rows"]]
    assert rows == [(0, "glims-reference"), (0, "glims-fast"), (1, "glims-reference"), (1, "glims-fast")]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for row in report["rows"]:
        assert row["status"] == "ok" and row["median_s"] > 0
        assert all(1 <= int(t) <= cores for t in row["threads"].split(", "))
        if row["key"] == "glims-reference":
            assert row["vs_glims_reference"] == 1  # each load's rows compare with that load's reference
    assert {row["threads_setting"] for row in report["rows"]} == {"auto"}
    assert ["load", "busy processes beside it"] in report["columns"]
    assert ["threads", "threads used"] in report["columns"]


def test_spec_options_parse_into_the_types_of_their_spec_fields():
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser()
    bench.TARGETS["segment"].add_arguments(parser)
    argv = ["--case", "c", "-m", "m", "--home", "h", "--configs", "default, uncropped", "--sw-batch-size", "4",
            "--label", "l.nii", "--threads", "3", "--timeout", "7"]
    spec = bench.TARGETS["segment"].spec_from_args(parser.parse_args(argv))
    assert spec == bench.SegmentSpec(case=Path("c"), model="m", home=Path("h"), configs=("default", "uncropped"),
                                     sw_batch_size=4, label=Path("l.nii"), threads=3, timeout=7.0)
    assert isinstance(spec.timeout, float) and isinstance(spec.sw_batch_size, int)
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp64"])


def test_thread_counts_and_loads_are_lists_measured_in_turn():
    import argparse

    parser = argparse.ArgumentParser()
    bench.TARGETS["network"].add_arguments(parser)
    spec = bench.TARGETS["network"].spec_from_args(parser.parse_args(["--threads", "1, auto,2", "--load", "0,1"]))
    assert spec.threads == (1, None, 2) and spec.loads == (0, 1)


def test_busy_processes_spin_on_their_cpus_and_are_gone_afterwards():
    from glims.bench.load import busy_processes, describe_load, load_cpus

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count()))
    assert load_cpus(len(cpus) + 1) == [*reversed(cpus), cpus[-1]]
    assert describe_load(0) == "none"
    with busy_processes(2) as pids:
        assert len(pids) == 2
        if hasattr(os, "sched_getaffinity"):
            assert [os.sched_getaffinity(p) for p in pids] == [{c} for c in load_cpus(2)]
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def test_bad_loads_and_thread_counts_are_refused(capsys):
    assert main(["bench", "--progress", "none", "network", "--load", "one"]) == 2
    assert main(["bench", "--progress", "none", "network", "--load", "-1"]) == 2
    assert main(["bench", "--progress", "none", "network", "--threads", "many"]) == 2
    assert main(["bench", "--progress", "none", "network", "--threads", "0,1"]) == 2
