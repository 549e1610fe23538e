"""Every row of docs/ERRORS.md: bad input gives one clear line on stderr, the documented exit code, and no output."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glims.cli import main


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> list[Path]:
    """Four small co-registered generated volumes named like a BraTS 2021 case."""
    folder = tmp_path_factory.mktemp("case")
    rng = np.random.default_rng(0)
    paths = []
    for name in ("flair", "t1ce", "t1", "t2"):
        array = np.zeros((40, 40, 40), np.float32)
        array[8:32, 8:32, 8:32] = rng.uniform(100, 500, (24, 24, 24))
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 1.0))
        paths.append(folder / f"case_{name}.nii.gz")
        sitk.WriteImage(image, str(paths[-1]))
    return paths


def write(tmp_path: Path, name: str, array: np.ndarray, **geometry) -> Path:
    image = sitk.GetImageFromArray(array, isVector=geometry.pop("vector", False))
    for key, value in geometry.items():
        getattr(image, f"Set{key}")(value)
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


def run_segment(home: Path, inputs: list[Path], out: Path, *extra: str, model: str = "tiny-brats") -> int:
    args = ["segment", "-m", model, "--home", str(home), "-o", str(out), "--progress", "none", *extra]
    for path in inputs:
        args += ["-i", str(path)]
    return main(args)


def assert_one_line_error(capsys, code: int, expected_code: int, *fragments: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code
    assert len(err) == 1 and err[0].startswith("glims: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    return err[0]


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    yield folder
    assert list(folder.iterdir()) == [], "a failed job left files behind"


def test_missing_modality(home, case, out_dir, capsys):
    code = run_segment(home, case[:3], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "needs 4 inputs", "got 3", "missing: T2")


def test_extra_modality(home, case, out_dir, capsys):
    code = run_segment(home, [*case, case[0]], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "takes 4 inputs", "extra input")


def test_input_file_not_found(home, case, out_dir, capsys):
    code = run_segment(home, [*case[:3], out_dir.parent / "nowhere_t2.nii.gz"], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "file not found")


def test_corrupt_file(home, case, out_dir, tmp_path, capsys):
    bad = tmp_path / "broken_t2.nii.gz"
    bad.write_bytes(case[3].read_bytes()[:300])
    code = run_segment(home, [*case[:3], bad], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "T2", "cannot read broken_t2.nii.gz", "truncated or corrupt")
    garbage = tmp_path / "garbage_t2.nrrd"
    garbage.write_bytes(b"NRRD0004\nthis is not a header\n")
    code = run_segment(home, [*case[:3], garbage], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "cannot read garbage_t2.nrrd as an image")


def test_2d_image(home, case, out_dir, tmp_path, capsys):
    flat = write(tmp_path, "slice_t2.nrrd", np.ones((40, 40), np.float32))
    code = run_segment(home, [*case[:3], flat], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "a 2D image; a 3D volume is needed")


def test_single_slice_volume(home, case, out_dir, tmp_path, capsys):
    thin = write(tmp_path, "thin_t2.nii.gz", np.arange(1600, dtype=np.float32).reshape(1, 40, 40))
    code = run_segment(home, [*case[:3], thin], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "a single slice")


def test_4d_image(home, case, out_dir, tmp_path, capsys):
    series = write(tmp_path, "series_t2.nii.gz", np.random.default_rng(1).random((3, 10, 10, 10), np.float32))
    code = run_segment(home, [*case[:3], series], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "a 4D image")


def test_colour_image(home, case, out_dir, tmp_path, capsys):
    rgb = write(tmp_path, "rgb_t2.nrrd", np.ones((10, 10, 10, 3), np.uint8), vector=True)
    code = run_segment(home, [*case[:3], rgb], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "3 components per voxel")


def test_constant_image(home, case, out_dir, tmp_path, capsys):
    blank = write(tmp_path, "blank_t2.nii.gz", np.zeros((40, 40, 40), np.float32))
    code = run_segment(home, [*case[:3], blank], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "constant", "empty or blank")


def test_nan_and_inf_voxels(home, case, out_dir, tmp_path, capsys):
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(case[3])))
    array[5, 5, 5], array[6, 6, 6] = np.nan, np.inf
    bad = write(tmp_path, "nan_t2.nrrd", array)  # NRRD keeps NaN; ITK's NIfTI reader turns NaN into 0
    code = run_segment(home, [*case[:3], bad], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "2 voxels are NaN or infinite")


def test_fields_of_view_that_do_not_overlap(home, case, out_dir, tmp_path, capsys):
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(case[3])))
    far = write(tmp_path, "far_t2.nii.gz", array, Origin=(500.0, 0.0, 0.0))
    code = run_segment(home, [*case[:3], far], out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 3, "does not overlap the reference input")


def test_unknown_model(home, case, out_dir, capsys):
    code = run_segment(home, case, out_dir / "s.seg.nrrd", model="no-such-model")
    assert_one_line_error(capsys, code, 2, "unknown model 'no-such-model'", "tiny-brats")


def test_weights_whose_sha256_does_not_match(home, case, out_dir, tmp_path, capsys):
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    weights = next((copy / "models").glob("tiny-brats-*.safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[-10] ^= 0x55
    weights.write_bytes(bytes(blob))
    code = run_segment(copy, case, out_dir / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 4, "does not match the expected")


def test_output_path_not_writable(home, case, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = run_segment(home, case, blocker / "s.seg.nrrd")
    assert_one_line_error(capsys, code, 6, "cannot write")
    assert blocker.read_text() == "not a folder"


def test_invalid_option(home, case, out_dir, capsys):
    code = run_segment(home, case, out_dir / "s.seg.nrrd", "--overlap", "1.5")
    assert_one_line_error(capsys, code, 2, "overlap must be in [0, 1)")


def test_threshold_the_model_would_ignore(home, case, out_dir, capsys):
    code = run_segment(home, case, out_dir / "s.seg.nrrd", "--threshold", "EDEMA=0.5")
    assert_one_line_error(capsys, code, 2, "threshold for unknown channel(s) ['EDEMA']", "['TC', 'WT', 'ET']")
    code = run_segment(home, case, out_dir / "s.seg.nrrd", "--threshold", "ET=1")
    assert_one_line_error(capsys, code, 2, "threshold of ET must lie strictly between 0 and 1, got 1.0")


def test_not_a_glims_checkpoint_is_refused_by_models_add(home, tmp_path, capsys):
    import torch

    torch.save({"state_dict": {"conv.weight": torch.zeros(3)}}, tmp_path / "other.pt")
    code = main(["models", "--home", str(home), "add", str(tmp_path / "other.pt"), "--id", "x", "--preset", "brats"])
    assert_one_line_error(capsys, code, 4, "not a GLIMS checkpoint")
    assert "x" not in [line.split("@")[0] for line in (home / "models" / "catalog.json").read_text().split('"id": "')[1:]]
