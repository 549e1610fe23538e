"""``glims bench warm`` end to end on a small generated case and a tiny model (a smoke check of the command and its
report; the figures themselves belong in docs/BENCHMARKS.md, never in a test)."""

from __future__ import annotations

import json

from glims.cli import main

from test_worker import write_case
from tiny_models import register_tiny_model


def test_bench_warm_times_a_one_shot_run_and_two_worker_requests_with_the_cache_hit(tmp_path, monkeypatch):
    home = tmp_path / "home"
    register_tiny_model(home, "brats")
    write_case(tmp_path / "case")
    monkeypatch.setenv("GLIMS_HOME", str(home))
    report_path = tmp_path / "warm.json"
    assert main(["bench", "--progress", "none", "warm", "--case", str(tmp_path / "case"), "-m", "tiny-brats",
                 "--home", str(home), "--repeats", "1", "--json", "--output", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    rows = report["rows"]
    assert [row["run"] for row in rows] == ["one-shot process (glims segment)",
                                            "worker, first Segment (worker started by it)",
                                            "worker, Segment 2 (warm)"]
    assert [row["cache"] for row in rows] == ["n/a (new process)", "miss", "hit"]
    assert all(row["wall_s"] > 0 and row["engine_s"] > 0 for row in rows)
