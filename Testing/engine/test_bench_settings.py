"""``glims bench settings`` on a real case with a tiny model: every setting is timed and scored against the default,
and the default scores as identical to itself."""

from __future__ import annotations

import json

import pytest

from glims.bench.settings import parse_variant
from glims.cli import main
from glims.errors import ConfigError

from tiny_models import brats_case_paths, coarse_copy, register_tiny_model


def test_settings_benchmark_scores_variants_against_the_default(shared_data, tmp_path, capsys):
    home = tmp_path / "home"
    register_tiny_model(home, "brats")
    case = tmp_path / "tcga_fg_6692"
    coarse_copy(brats_case_paths(shared_data, "tcga_fg_6692"), case, spacing=4.0)
    assert main(["bench", "--progress", "none", "settings", "--model", "tiny-brats", "--home", str(home),
                 "--case", str(case), "--variant", "overlap=0.25", "--variant", "sw_batch_size=2",
                 "--variant", "placement=even", "--rounds", "1", "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    default, overlap, batch, even = report["rows"]
    assert [r["setting"] for r in report["rows"]] == ["catalog default", "overlap=0.25", "sw_batch_size=2",
                                                      "placement=even"]
    assert all(r["case"] == "tcga_fg_6692" for r in report["rows"])
    assert default["dice"] == "identical" and default["ratio"] == 1.0
    assert overlap["options"]["overlap"] == 0.25 and batch["options"]["sw_batch_size"] == 2
    # the batch size changes no window and no weight: the same label map
    assert batch["dice"] == "identical"
    # windows per pass, from each setting's own report: two along each axis of this coarse brain whatever the setting
    assert [r["windows"] for r in report["rows"]] == [8, 8, 8, 8]
    assert even["options"]["placement"] == "even"
    assert all(0 <= d <= 1 for d in overlap["dice_regions"].values())
    for row in report["rows"]:
        assert row["infer"] > 0 and row["preprocess"] > 0 and row["cpu"] > 0
    assert report["context"]["weights"].startswith("tiny-brats@")


def test_variants_are_checked():
    assert parse_variant("overlap=0.25, precision=bf16") == {"overlap": 0.25, "precision": "bf16"}
    assert parse_variant("sw-batch-size=8,tta=true") == {"sw_batch_size": 8, "tta": True}
    for bad in ("overlap", "speed=2", "overlap=fast", ""):
        with pytest.raises(ConfigError):
            parse_variant(bad)
