"""Error breakdown (glims.error_breakdown) on generated label maps whose answers are known by construction, the grid
ceiling of a thin shell, ``glims evaluate --breakdown`` end to end, the UPenn-GBM case's file names and ceiling, and
a real case stored on the processing grid (glims.training.data.store_case_on_grid) training as its original files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glims.catalog import load_catalog
from glims.catalog_sections import OutputSpec, PreprocessingSpec
from glims.cli import main
from glims.error_breakdown import (
    ERROR_KINDS,
    RegionErrors,
    grid_ceiling,
    grid_round_trip,
    label_errors,
    region_errors,
)
from glims.errors import ConfigError, InputError, OutputError
from glims.evaluate import find_cases
from glims.metrics import dice
from glims.pipeline import assign_inputs
from glims.synth import generate_dataset

from tiny_models import register_tiny_model

BRATS_OUTPUT = OutputSpec.from_dict(
    {
        "activation": "sigmoid",
        "channels": ["TC", "WT", "ET"],
        "paint": [{"channel": "WT", "label": 2}, {"channel": "TC", "label": 1}, {"channel": "ET", "label": 3}],
    }
)
TWO_MM = PreprocessingSpec.from_dict({"orientation": "LPS", "spacing": [2, 2, 2]})


def ball(shape, centre, radius) -> np.ndarray:
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


def test_shifted_sphere_is_boundary_error_only():
    reference = ball((40, 40, 40), (20, 20, 20), 8)
    prediction = np.roll(reference, 1, axis=2)
    errors = region_errors(prediction, reference)
    assert errors.fp == errors.fp_boundary > 0
    assert errors.fn == errors.fn_boundary == errors.fp  # a shift moves as many voxels in as out
    assert errors.fp_far == errors.fp_detached == errors.fn_far == errors.fn_missed == 0
    assert errors.tp == int((prediction & reference).sum())
    assert errors.dice == pytest.approx(dice(prediction, reference))


def test_extra_blob_is_detached_false_positive():
    reference = ball((40, 40, 40), (20, 20, 12), 6)
    blob = np.zeros_like(reference)
    blob[30:33, 30:33, 30:33] = True
    errors = region_errors(reference | blob, reference)
    assert errors == RegionErrors(tp=int(reference.sum()), fp_boundary=0, fp_far=0, fp_detached=27,
                                  fn_boundary=0, fn_far=0, fn_missed=0)


def test_missing_blob_is_missed_false_negative():
    lesion = ball((40, 40, 40), (20, 20, 12), 6)
    satellite = ball((40, 40, 40), (20, 20, 30), 3)
    errors = region_errors(lesion, lesion | satellite)
    assert errors.fn_missed == int(satellite.sum())
    assert errors.fn_boundary == errors.fn_far == errors.fp == 0


def test_attached_outgrowth_splits_at_the_boundary_distance_in_mm():
    reference = np.zeros((30, 30, 40), dtype=bool)
    reference[10:20, 10:20, 10:20] = True
    prediction = reference.copy()
    prediction[15, 15, 20:30] = True  # a bar of 10 voxels leaving the cube along x, at 1..10 voxels from it
    assert region_errors(prediction, reference, boundary_mm=2.0) == RegionErrors(
        tp=1000, fp_boundary=2, fp_far=8, fp_detached=0, fn_boundary=0, fn_far=0, fn_missed=0
    )
    # x voxels of 2 mm: only the first voxel of the bar lies within 2 mm
    coarse = region_errors(prediction, reference, spacing=(1.0, 1.0, 2.0), boundary_mm=2.0)
    assert (coarse.fp_boundary, coarse.fp_far) == (1, 9)


def test_hole_far_from_the_prediction_surface_is_far_false_negative():
    reference = ball((40, 40, 40), (20, 20, 20), 12)
    hole = ball((40, 40, 40), (20, 20, 20), 5)
    prediction = reference & ~hole
    errors = region_errors(prediction, reference, boundary_mm=2.0)
    # brute force: the distance of every hole voxel to the nearest predicted voxel
    holes, kept = np.argwhere(hole).astype(float), np.argwhere(prediction).astype(float)
    nearest = np.sqrt(((holes[:, None, :] - kept[None, :, :]) ** 2).sum(-1).min(axis=1))
    assert errors.fn_boundary == int((nearest <= 2.0).sum())
    assert errors.fn_far == int((nearest > 2.0).sum()) > 0
    assert errors.fn_missed == errors.fp == 0


def test_shares_add_up_to_the_dice_lost():
    reference = ball((40, 40, 40), (20, 20, 15), 7)
    prediction = np.roll(reference, 2, axis=1)
    prediction[2:5, 2:5, 30:36] = True
    errors = region_errors(prediction, reference)
    assert sum(errors.dice_lost(k) for k in ERROR_KINDS) == pytest.approx(1.0 - errors.dice)
    assert region_errors(np.zeros_like(reference), np.zeros_like(reference)).dice == 1.0
    with pytest.raises(ConfigError):
        errors.dice_lost("fp_everything")


def test_label_errors_use_each_side_convention_and_refuse_bad_input():
    reference = np.zeros((20, 20, 20), dtype=np.uint8)
    reference[5:15, 5:15, 5:15] = 2
    reference[8:12, 8:12, 8:12] = 4  # BraTS 2017: ET = 4
    prediction = np.where(reference == 4, 3, reference).astype(np.uint8)  # the same in BraTS 2023 labels
    errors = label_errors(prediction, reference, pred_convention="brats2023", ref_convention="brats2017")
    assert all(e.fp == e.fn == 0 for e in errors.values())
    assert errors["ET"].tp == 64 and errors["WT"].tp == 1000
    with pytest.raises(InputError, match="prediction"):
        label_errors(reference, reference, pred_convention="brats2023", ref_convention="brats2017")
    with pytest.raises(InputError, match="shape"):
        region_errors(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool))
    with pytest.raises(ConfigError):
        region_errors(prediction > 0, reference > 0, boundary_mm=-1.0)


def shell_case() -> sitk.Image:
    """A 1 mm label map: oedema ball (r 20), a one-voxel enhancing shell (r 10-11), necrosis inside."""
    shape = (64, 64, 64)
    radius = np.sqrt(sum((axis - 32.0) ** 2 for axis in np.indices(shape)))
    label = np.zeros(shape, dtype=np.uint8)
    label[radius <= 20] = 2
    label[radius <= 11] = 3
    label[radius <= 10] = 1
    return sitk.GetImageFromArray(label)


def test_two_millimetre_round_trip_loses_the_thin_rim_not_the_bulk():
    label = shell_case()
    ceiling = grid_ceiling(label, "brats2023", TWO_MM, BRATS_OUTPUT)
    assert ceiling["ET"] < 0.8  # a one-voxel rim cannot be drawn on a 2 mm grid
    assert ceiling["WT"] > 0.95 and ceiling["TC"] > 0.9
    trip = grid_round_trip(label, "brats2023", TWO_MM, BRATS_OUTPUT)
    assert trip.shape == sitk.GetArrayFromImage(label).shape
    assert set(np.unique(trip)) <= {0, 1, 2, 3}


def test_label_stored_on_the_processing_grid_gives_the_same_training_targets():
    from glims.training.data import label_on_processing_grid, region_masks_on_grid

    label = shell_case()
    label.SetOrigin((3.0, -7.0, 11.0))
    on_grid = label_on_processing_grid(label, "brats2023", TWO_MM, BRATS_OUTPUT)
    assert on_grid.GetSpacing() == (2.0, 2.0, 2.0)
    direct, _ = region_masks_on_grid(label, on_grid, "brats2023", "direct")
    stored, _ = region_masks_on_grid(on_grid, on_grid, "brats2023", "stored")
    assert np.array_equal(direct, stored) and direct[2].any()


def test_round_trip_on_the_label_grid_is_exact():
    label = shell_case()
    label.SetSpacing((1.0, 1.0, 1.0))
    same = grid_ceiling(label, "auto", PreprocessingSpec.from_dict({"orientation": "LPS"}), BRATS_OUTPUT)
    assert same == {"TC": 1.0, "WT": 1.0, "ET": 1.0}
    with pytest.raises(ConfigError, match="sigmoid"):
        grid_ceiling(label, "brats2023", PreprocessingSpec(), OutputSpec(activation="softmax", channels=("a",)))


def write_label(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))


def test_evaluate_breakdown_from_files(tmp_path, capsys):
    reference = np.zeros((24, 40, 40), dtype=np.uint8)
    reference[ball(reference.shape, (12, 20, 14), 6)] = 2
    prediction = reference.copy()
    prediction[2:4, 34:37, 34:37] = 2  # a detached island of 18 voxels
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    write_label(reference, tmp_path / "ref" / "case1_seg.nii.gz")
    write_label(prediction, tmp_path / "pred" / "case1.nii.gz")
    out = tmp_path / "scores.csv"
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "-o", str(out),
                 "--breakdown", "--progress", "none"])
    assert code == 0
    row = next(csv.DictReader(out.open()))
    assert int(row["fp_detached_WT"]) == 18
    assert int(row["tp_WT"]) == int(row["ref_voxels_WT"])
    assert row["ceiling_WT"] == ""  # no model, no processing grid
    assert "FP det" in capsys.readouterr().out
    for wrong in (["--boundary-mm", "3"], ["--breakdown", "--boundary-mm", "-1"]):
        assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "-o",
                     str(tmp_path / "other.csv"), "--progress", "none", *wrong]) == ConfigError.exit_code
    assert not (tmp_path / "other.csv").exists()


def test_upenn_case_files_are_found_and_assigned(shared_data):
    folder = shared_data / "brats" / "upenn_gbm_00003"
    (case,) = find_cases(folder)
    assert case.label.name == "UPENN-GBM-00003_11_segm.nii.gz"
    spec = load_catalog().get("glims-brats-synth")
    roles = {key: path.name for key, path in assign_inputs(spec, case.images)}
    assert roles == {"flair": "UPENN-GBM-00003_11_FLAIR.nii.gz", "t1ce": "UPENN-GBM-00003_11_T1GD.nii.gz",
                     "t1": "UPENN-GBM-00003_11_T1.nii.gz", "t2": "UPENN-GBM-00003_11_T2.nii.gz"}


def test_upenn_expert_label_ceiling_at_two_millimetres(shared_data):
    label = sitk.ReadImage(str(shared_data / "brats" / "upenn_gbm_00003" / "UPENN-GBM-00003_11_segm.nii.gz"))
    spec = load_catalog().get("glims-brats-synth")
    ceiling = grid_ceiling(label, "brats2017", spec.preprocessing, spec.output)
    assert 0.9 < ceiling["WT"] < 1.0 and 0.9 < ceiling["TC"] < 1.0
    assert ceiling["ET"] < 0.85  # the thin enhancing rim of this glioblastoma


@pytest.fixture
def one_torch_thread():
    """The tiny network runs faster on one thread when the 2 cores are shared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_with_a_model_breaks_down_and_segments_as_glims_segment_does(tmp_path):
    home = tmp_path / "home"
    spec = register_tiny_model(home, "brats", overrides={"preprocessing": {"spacing": [6.0, 6.0, 6.0]}})
    cases = tmp_path / "cases"
    generate_dataset(cases, 1, seed=2, shape=(40, 40, 40), spacing=3.0)
    (case,) = find_cases(cases)
    out = tmp_path / "scores.csv"
    settings = ["--no-crop", "--no-postprocess", "--device", "cpu"]
    assert main(["evaluate", "-m", "tiny-brats", "--cases", str(cases), "--home", str(home), "-o", str(out),
                 "--breakdown", "--boundary-mm", "6", "--progress", "none", *settings]) == 0
    row = next(csv.DictReader(out.open()))
    expected = grid_ceiling(sitk.ReadImage(str(case.label)), "brats2023", spec.preprocessing, spec.output)
    for region in ("TC", "WT", "ET"):
        assert float(row[f"ceiling_{region}"]) == pytest.approx(expected[region], abs=1e-6)
        counted = int(row[f"tp_{region}"]) + sum(int(row[f"{k}_{region}"]) for k in ERROR_KINDS if k.startswith("fp"))
        assert counted == int(row[f"pred_voxels_{region}"])
    assert expected["WT"] < 1.0  # 3 mm labels through a 6 mm grid
    inputs = [arg for image in case.images for arg in ("-i", str(image))]
    assert main(["segment", "-m", "tiny-brats", "--home", str(home), *inputs, "-o", str(tmp_path / "s.seg.nrrd"),
                 "--labelmap", str(tmp_path / "s.nii.gz"), "--no-report", "--progress", "none", *settings]) == 0
    predicted = tmp_path / "scores_predictions" / f"{case.case_id}.nii.gz"
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(predicted))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "s.nii.gz"))))


def test_a_real_case_stored_on_the_grid_trains_exactly_as_its_original_files(shared_data, tmp_path):
    from glims.training.data import InputMatcher, discover_cases, load_case, store_case_on_grid

    spec = load_catalog().get("glims-brats-synth")
    matcher = InputMatcher(spec.inputs, spec.match_priority)
    (original,) = discover_cases([shared_data / "brats" / "tcga_du_7294"], matcher)
    folder = store_case_on_grid(original, spec.preprocessing, spec.output, tmp_path, [i.key for i in spec.inputs])
    (stored,) = discover_cases([folder], matcher)
    assert stored.label_quality == original.label_quality == "silver"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 0.3 * sum(
        p.stat().st_size for p in (*original.images, original.label))
    before = load_case(original, spec.preprocessing, spec.roi_size)
    after = load_case(stored, spec.preprocessing, spec.roi_size)
    assert np.array_equal(before.image, after.image)
    assert np.array_equal(before.target, after.target) and before.target[1].any()
    with pytest.raises(OutputError):
        store_case_on_grid(original, spec.preprocessing, spec.output, tmp_path, [i.key for i in spec.inputs])
