"""``glims evaluate``: case matching by file name, CSV and summary, BraTS empty-region rules, and agreement with the
published figures of the real shared cases (algorithm outputs against their fusion)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glims.cli import main
from glims.errors import ConfigError, InputError
from glims.evaluate import evaluate_folders, find_cases, find_label_files, summarize
from glims.metrics import BRATS_HD95_PENALTY
from glims.synth import generate_dataset

from tiny_models import register_tiny_model

ALGORITHMS = ("hnfnetv1-20", "isen-20", "sanet0-20", "scan-20", "yixinmpl-20")
REAL = {"TCGA-FG-6692": "tcga_fg_6692", "TCGA-DU-7294": "tcga_du_7294"}


def write_label(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Distance transforms and the tiny network run far faster on one thread when the 2 cores are shared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def algorithm_folders(shared_data, tmp_path_factory) -> dict[str, Path]:
    """One prediction folder per BraTS 2020 algorithm holding <case id>.nii.gz links to its outputs."""
    root = tmp_path_factory.mktemp("algorithms")
    for algorithm in ALGORITHMS:
        for case_id, folder in REAL.items():
            link = root / algorithm / f"{case_id}.nii.gz"
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(shared_data / "brats" / folder / "algo_segs" / f"{algorithm}.nii.gz", link)
    return {a: root / a for a in ALGORITHMS}


def test_each_algorithm_against_the_fusion_matches_the_published_dice(shared_data, algorithm_folders, tmp_path):
    wt_fg, wt_du = [], []
    for algorithm, folder in algorithm_folders.items():
        out = tmp_path / f"{algorithm}.csv"
        code = main(["evaluate", "--pred", str(folder), "--ref", str(shared_data / "brats"),
                     "--ref-pattern", "*/{id}_fusion_simple_silver.nii.gz", "--labels", "brats2017",
                     "-o", str(out), "--progress", "none"])
        assert code == 0
        rows = read_csv(out)
        assert set(rows) == set(REAL)
        wt_fg.append(float(rows["TCGA-FG-6692"]["dice_WT"]))
        wt_du.append(float(rows["TCGA-DU-7294"]["dice_WT"]))
        # TCGA-DU-7294's fusion has no enhancing tumour: an algorithm that predicts none scores ET Dice 1 and
        # HD95 0, one that predicts some scores 0 and the penalty (SOURCE.txt: 2 of 5 predict a few hundred)
        du = rows["TCGA-DU-7294"]
        assert int(du["ref_voxels_ET"]) == 0
        if int(du["pred_voxels_ET"]) == 0:
            assert (float(du["dice_ET"]), float(du["hd95_ET"])) == (1.0, 0.0)
        else:
            assert 100 < int(du["pred_voxels_ET"]) < 1000
            assert (float(du["dice_ET"]), float(du["hd95_ET"])) == (0.0, BRATS_HD95_PENALTY)
        assert int(rows["TCGA-FG-6692"]["ref_voxels_ET"]) == 6840  # SOURCE.txt: 4 enhancing (6,840)
    # SOURCE.txt: per-algorithm WT Dice against the fusion 0.91-0.98 (FG-6692) and 0.975-0.989 (DU-7294)
    assert all(0.91 <= round(d, 2) <= 0.98 for d in wt_fg), wt_fg
    assert all(0.975 <= round(d, 3) <= 0.989 for d in wt_du), wt_du
    assert max(wt_fg) - min(wt_fg) > 0.05  # the algorithms are told apart


def test_et3_and_et4_algorithms_on_the_brats_2023_case(shared_data):
    folder = shared_data / "brats" / "brats_gli_00001"
    results = evaluate_folders(
        folder, folder, pred_pattern="{id}-seg_isen20_pred_silver.nii.gz",
        ref_pattern="{id}-seg_BraTS23_1_pred_silver.nii.gz", pred_convention="brats2017",
        ref_convention="brats2023",
    )
    assert [r.case_id for r in results] == ["BraTS-GLI-00001-000"]
    scores = results[0].scores
    assert scores["ET"].ref_voxels == 23327  # SOURCE.txt: 3 ET 23,327
    assert scores["WT"].ref_voxels == 17878 + 88029 + 23327
    assert all(scores[r].dice > 0.9 for r in ("TC", "WT", "ET"))  # two strong algorithms agree
    with pytest.raises(InputError, match=r"\[4\]"):  # ET=4 map read as BraTS 2023
        evaluate_folders(folder, folder, pred_pattern="{id}-seg_isen20_pred_silver.nii.gz",
                         ref_pattern="{id}-seg_BraTS23_1_pred_silver.nii.gz")


def test_expert_brats_2015_label_against_itself(shared_data, tmp_path):
    source = shared_data / "brats" / "brats2015_deepmedic_pat0001_2mod" / "OTMultiClass.nii.gz"
    os.symlink(source, tmp_path / "pat0001.nii.gz")  # float32 labels 0-4 in the 2013/2015 convention
    results = evaluate_folders(tmp_path, tmp_path, pred_convention="brats2013", ref_convention="brats2013")
    scores = results[0].scores
    assert all(scores[r].dice == 1.0 and scores[r].hd95 == 0.0 for r in ("TC", "WT", "ET"))
    # SOURCE.txt counts: 1 necrosis 26,371; 2 oedema 53,050; 3 non-enhancing 818; 4 enhancing 31,485
    assert scores["ET"].ref_voxels == 31485
    assert scores["TC"].ref_voxels == 26371 + 818 + 31485
    assert scores["WT"].ref_voxels == 26371 + 53050 + 818 + 31485


def test_cli_on_a_hand_made_pair_writes_exact_scores_and_a_summary(tmp_path, capsys):
    ref = np.zeros((10, 12, 12), dtype=np.uint8)
    ref[2:6, 2:8, 2:8] = 2  # whole tumour 4 x 6 x 6 = 144
    ref[3:5, 4:6, 4:6] = 3  # ET 2 x 2 x 2 = 8
    pred = np.zeros_like(ref)
    pred[2:6, 2:8, 4:8] = 2  # 4 x 6 x 4 = 96 voxels, all inside the reference
    pred[3:5, 4:6, 4:6] = 3
    spacing_xyz = (0.5, 0.5, 2.0)  # x, y in 0.5 mm; slices 2 mm apart
    write_label(ref, tmp_path / "ref" / "CASE-1" / "CASE-1_seg.nii.gz", spacing_xyz)
    write_label(pred, tmp_path / "pred" / "CASE-1.nii.gz", spacing_xyz)
    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "-o", str(out),
                 "--progress", "none"]) == 0
    row = read_csv(out)["CASE-1"]
    assert float(row["dice_WT"]) == pytest.approx(2 * 96 / (96 + 144), abs=1e-6)
    assert float(row["dice_ET"]) == 1.0 and float(row["dice_TC"]) == 1.0
    assert float(row["hd95_ET"]) == 0.0
    # the reference's faces x = 2 and x = 3 (2 of its 6 columns) are 2 and 1 columns of 0.5 mm from the
    # prediction's face x = 4: of its 112 surface voxels, 24 are 1.0 mm away, which sets the 95th percentile
    assert float(row["hd95_WT"]) == pytest.approx(1.0)
    assert (int(row["ref_voxels_WT"]), int(row["pred_voxels_WT"])) == (144, 96)
    printed = capsys.readouterr().out
    assert "Dice mean" in printed and "WT" in printed and "1 cases" in printed


def test_missing_predictions_error_empty_or_skip(tmp_path):
    label = np.zeros((6, 6, 6), dtype=np.uint8)
    label[2:4, 2:4, 2:4] = 2
    for case_id in ("A", "B"):
        write_label(label, tmp_path / "ref" / f"{case_id}_seg.nii.gz")
    write_label(label, tmp_path / "pred" / "A_seg.nii.gz")
    write_label(label, tmp_path / "pred" / "Z_seg.nii.gz")  # no reference: ignored
    with pytest.raises(InputError, match="1 of 2 reference cases have no prediction"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    skipped = evaluate_folders(tmp_path / "pred", tmp_path / "ref", missing="skip")
    assert [r.case_id for r in skipped] == ["A"]
    scored = {r.case_id: r for r in evaluate_folders(tmp_path / "pred", tmp_path / "ref", missing="empty")}
    assert scored["B"].scores["WT"].dice == 0.0 and scored["B"].scores["WT"].hd95 == BRATS_HD95_PENALTY
    assert scored["B"].scores["ET"].dice == 1.0  # empty in both
    summary = summarize(list(scored.values()))
    assert summary["dice"]["WT"] == {"mean": 0.5, "median": 0.5, "std": 0.5, "min": 0.0, "max": 1.0, "n": 2}
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "-o", str(tmp_path / "x.csv"), "--progress", "none"]) == InputError.exit_code
    assert not (tmp_path / "x.csv").exists()


def test_prediction_on_another_grid_is_refused(tmp_path):
    label = np.zeros((6, 6, 6), dtype=np.uint8)
    write_label(label, tmp_path / "ref" / "A_seg.nii.gz")
    write_label(label, tmp_path / "pred" / "A_seg.nii.gz", spacing=(1.0, 1.0, 2.0))
    with pytest.raises(InputError, match="not on the grid"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")


def test_case_ids_from_file_names(tmp_path):
    names = [
        "BraTS2021_00001/BraTS2021_00001_seg.nii.gz", "BraTS2021_00001/BraTS2021_00001_flair.nii.gz",
        "BraTS-GLI-00002-000/BraTS-GLI-00002-000-seg.nii.gz", "BraTS-GLI-00002-000/BraTS-GLI-00002-000-t2f.nii.gz",
        "C3.seg.nrrd", "C4/seg.nii.gz", "C5_label.nii", ".C6_seg.nii.gz.tmp.nii.gz", "notes.txt",
    ]
    for name in names:
        (tmp_path / "ref" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ref" / name).touch()
    assert sorted(find_label_files(tmp_path / "ref")) == [
        "BraTS-GLI-00002-000", "BraTS2021_00001", "C3", "C4", "C5"]
    for name in ("P1.nii.gz", "P2.nrrd", "P2_t1ce.nii.gz"):  # no segmentation-named file: plain names count
        (tmp_path / "pred" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pred" / name).touch()
    assert sorted(find_label_files(tmp_path / "pred")) == ["P1", "P2"]
    (tmp_path / "linked").mkdir()  # a dataset assembled from links to case folders (one links back to itself)
    (tmp_path / "linked" / "C4").symlink_to(tmp_path / "ref" / "C4", target_is_directory=True)
    (tmp_path / "linked" / "loop").symlink_to(tmp_path / "linked", target_is_directory=True)
    assert sorted(find_label_files(tmp_path / "linked")) == ["C4"]
    (tmp_path / "ref" / "C3_seg.nii.gz").touch()
    with pytest.raises(InputError, match="two label files for case 'C3'"):
        find_label_files(tmp_path / "ref")
    with pytest.raises(ConfigError):
        find_label_files(tmp_path / "ref", pattern="no_placeholder.nii.gz")
    with pytest.raises(InputError, match="not a folder"):
        find_label_files(tmp_path / "absent")


def test_cli_refuses_mixed_or_incomplete_sources(tmp_path):
    assert main(["evaluate", "--pred", str(tmp_path), "--progress", "none"]) == ConfigError.exit_code
    assert main(["evaluate", "--pred", str(tmp_path), "--ref", str(tmp_path), "-m", "x", "--cases", str(tmp_path),
                 "--progress", "none"]) == ConfigError.exit_code
    assert main(["evaluate", "--progress", "none"]) == ConfigError.exit_code


def test_evaluate_with_a_model_segments_then_scores_synthetic_cases(tmp_path):
    home = tmp_path / "home"
    register_tiny_model(home, "brats")
    cases = tmp_path / "cases"
    generate_dataset(cases, 2, seed=1, shape=(40, 40, 40), spacing=3.0)
    found = find_cases(cases)
    assert [len(c.images) for c in found] == [4, 4] and all(c.label.name.endswith("_seg.nii.gz") for c in found)
    out = tmp_path / "model.csv"
    assert main(["evaluate", "-m", "tiny-brats", "--cases", str(cases), "--home", str(home), "-o", str(out),
                 "--device", "cpu", "--progress", "none"]) == 0
    rows = read_csv(out)
    assert sorted(rows) == ["GLIMS-SYN-1-0000", "GLIMS-SYN-1-0001"]
    for case_id, row in rows.items():
        prediction = tmp_path / "model_predictions" / f"{case_id}.nii.gz"
        assert row["prediction"] == str(prediction) and prediction.is_file()
        reference = sitk.GetArrayFromImage(sitk.ReadImage(row["reference"]))
        assert int(row["ref_voxels_WT"]) == int((reference > 0).sum())
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction)))
        assert int(row["pred_voxels_WT"]) == int((predicted > 0).sum())
        assert all(0.0 <= float(row[f"dice_{r}"]) <= 1.0 for r in ("TC", "WT", "ET"))


def test_evaluate_with_a_model_segments_with_the_settings_given_as_glims_segment_does(tmp_path):
    home = tmp_path / "home"
    register_tiny_model(home, "brats")
    cases = tmp_path / "cases"
    generate_dataset(cases, 1, seed=3, shape=(40, 40, 40), spacing=3.0)
    (case,) = find_cases(cases)
    settings = ["--tta", "--overlap", "0.25", "--device", "cpu", "--threshold", "WT=0.45"]
    assert main(["evaluate", "-m", "tiny-brats", "--cases", str(cases), "--home", str(home), "-o",
                 str(tmp_path / "flipped.csv"), "--progress", "none", *settings]) == 0
    assert main(["evaluate", "-m", "tiny-brats", "--cases", str(cases), "--home", str(home), "-o",
                 str(tmp_path / "plain.csv"), "--progress", "none", "--device", "cpu"]) == 0
    inputs = [arg for image in case.images for arg in ("-i", str(image))]
    assert main(["segment", "-m", "tiny-brats", "--home", str(home), *inputs, "-o", str(tmp_path / "s.seg.nrrd"),
                 "--labelmap", str(tmp_path / "s.nii.gz"), "--no-report", "--progress", "none", *settings]) == 0

    def labels(path: Path) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

    flipped = labels(tmp_path / "flipped_predictions" / f"{case.case_id}.nii.gz")
    assert np.array_equal(flipped, labels(tmp_path / "s.nii.gz"))
    assert not np.array_equal(flipped, labels(tmp_path / "plain_predictions" / f"{case.case_id}.nii.gz"))


def test_segmentation_settings_are_refused_without_a_model_and_unknown_ones_by_name(tmp_path):
    from glims.evaluate import segment_cases

    for setting in (["--tta"], ["--threshold", "ET=0.5"]):
        assert main(["evaluate", "--pred", str(tmp_path), "--ref", str(tmp_path), *setting,
                     "--progress", "none"]) == ConfigError.exit_code
    home = tmp_path / "home"
    register_tiny_model(home, "brats")
    with pytest.raises(ConfigError, match="unknown inference settings \\['windows'\\]"):
        segment_cases("tiny-brats", [], tmp_path / "out", inference={"windows": 3}, home=home)
    with pytest.raises(ConfigError, match="unknown channel"):
        segment_cases("tiny-brats", [], tmp_path / "out", thresholds={"NCR": 0.5}, home=home)
    assert not (tmp_path / "out").exists()
