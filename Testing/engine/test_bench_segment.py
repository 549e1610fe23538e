"""``glims bench segment`` on a real case with a tiny model: both configurations run and the report is complete."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from glims.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import brats_case_paths, coarse_copy, register_tiny_model  # noqa: E402


def test_segment_benchmark_reports_both_pipelines(shared_data, tmp_path, capsys):
    home = tmp_path / "home"
    register_tiny_model(home, "brats")
    case = tmp_path / "case"
    coarse_copy(brats_case_paths(shared_data, "tcga_fg_6692"), case)
    assert main(["bench", "--progress", "none", "segment", "--model", "tiny-brats", "--home", str(home),
                 "--case", str(case), "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    default, reference = report["rows"]
    assert default["config"].startswith("glims segment") and reference["config"].startswith("reference pipeline")
    for row in (default, reference):
        assert all(isinstance(row[s], float) and row[s] >= 0 for s in ("load", "preprocess", "infer", "write"))
        assert row["total"] > 0 and row["rss"] > 100
    assert reference["ratio"] == 1.0 and 0 < default["ratio"]
    dice = [float(v) for v in default["dice"].split("/")]
    assert len(dice) == 3 and all(0 <= d <= 1 for d in dice)
    assert report["context"]["input"] == "case (real case)"
