"""``glims bench segment`` on a real case with a tiny model: the configurations run and the report is complete;
the fast path with the reference's windows (``--no-crop --placement step``) gives the reference's answer."""

from __future__ import annotations

import json

import SimpleITK as sitk

from glims.cli import main

from tiny_models import brats_case_paths, coarse_copy, register_tiny_model


def test_segment_benchmark_reports_both_pipelines(shared_data, tmp_path, capsys):
    home = tmp_path / "home"
    register_tiny_model(home, "brats", overrides={"inference": {"placement": "even"}})
    case = tmp_path / "case"
    images = coarse_copy(brats_case_paths(shared_data, "tcga_fg_6692"), case)
    silver = sitk.ReadImage(str(shared_data / "brats" / "tcga_fg_6692" / "TCGA-FG-6692_fusion_mav_silver.nii.gz"))
    label = tmp_path / "TCGA-FG-6692_fusion_mav_silver.nii.gz"  # on the coarse copy's grid, outside the case
    sitk.WriteImage(sitk.Resample(silver, sitk.ReadImage(str(images[0])), sitk.Transform(), sitk.sitkNearestNeighbor),
                    str(label))
    assert main(["bench", "--progress", "none", "segment", "--model", "tiny-brats", "--home", str(home),
                 "--case", str(case), "--threads", "1", "--label", str(label), "--label-convention", "brats2017",
                 "--configs", "default,reference,uncropped", "--sw-batch-size", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    default, reference, uncropped = report["rows"]
    assert default["config"].startswith("glims segment") and reference["config"].startswith("reference pipeline")
    assert uncropped["config"].startswith("glims segment --no-crop")
    for row in (default, reference, uncropped):
        assert all(isinstance(row[s], float) and row[s] >= 0 for s in ("load", "preprocess", "infer", "write"))
        assert row["total"] > 0 and row["rss"] > 100 and row["sw_batch_size"] == 3
    # the model's own placement by default; the reference and its uncropped twin keep MONAI's windows
    assert (default["placement"], reference["placement"], uncropped["placement"]) == ("even", "step", "step")
    assert reference["ratio"] == 1.0 and 0 < default["ratio"]
    dice = [float(v) for v in default["dice"].split("/")]
    assert len(dice) == 3 and all(0 <= d <= 1 for d in dice)
    assert "dice" not in reference
    # same windows, same weights: the fast path's rounding moves at most a few voxels across a threshold
    assert all(float(v) >= 0.99 for v in uncropped["dice"].split("/")), uncropped["dice"]
    assert report["context"]["input"] == "case (real case)"
    assert report["context"]["label"] == "TCGA-FG-6692_fusion_mav_silver.nii.gz (brats2017)"
    for row in (default, reference, uncropped):  # accuracy of each pipeline against the silver label
        scores = [float(v) for v in row["accuracy"].split("/")]
        assert len(scores) == 3 and all(0 < d <= 1 for d in scores)  # > 0: every region predicted somewhere
