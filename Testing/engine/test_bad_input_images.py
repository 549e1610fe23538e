"""Input images that ITK would read silently wrong, ambiguous or repeated inputs, and malformed weights metadata: each
is refused with one line on stderr (checked at file-descriptor level, so ITK's own prints would show), the documented
exit code, and no output (rows of docs/ERRORS.md)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from glims.cli import main

from test_bad_input import case, out_dir, run_segment  # noqa: F401  (fixtures shared with the other rows)


def one_line_error(capfd, code: int, expected_code: int, *fragments: str) -> str:
    err = capfd.readouterr().err.strip().splitlines()
    assert code == expected_code, err
    assert len(err) == 1 and err[0].startswith("glims: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    return err[0]


def t2_array(case: list[Path]) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(case[3])))


def write_sitk(path: Path, array: np.ndarray, compress: bool = True, **geometry) -> Path:
    image = sitk.GetImageFromArray(array)
    for key, value in geometry.items():
        getattr(image, f"Set{key}")(value)
    sitk.WriteImage(image, str(path), compress)
    return path


def test_truncated_nifti_or_header_declaring_more_voxels(home, case, out_dir, tmp_path, capfd):
    whole = write_sitk(tmp_path / "whole_t2.nii", t2_array(case), compress=False)
    cut = tmp_path / "cut_t2.nii"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    code = run_segment(home, [*case[:3], cut], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, "T2 (cut_t2.nii)", "is truncated", "declares 40x40x40 voxels of float32")

    header = nib.Nifti1Header.from_fileobj(open(whole, "rb"))
    header.set_data_shape((40, 40, 48))  # more voxels than the data holds, in a complete gzip stream
    blob = bytearray(whole.read_bytes())
    blob[: len(header.binaryblock)] = header.binaryblock
    (tmp_path / "tall_t2.nii.gz").write_bytes(gzip.compress(bytes(blob)))
    code = run_segment(home, [*case[:3], tmp_path / "tall_t2.nii.gz"], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, "is truncated", "declares 40x40x48 voxels", "holds 256000 bytes")


def test_nifti_holding_more_voxel_data_than_its_header_declares(home, case, out_dir, tmp_path, capfd):
    whole = write_sitk(tmp_path / "whole_t2.nii", t2_array(case), compress=False)
    longer = tmp_path / "long_t2.nii"
    longer.write_bytes(whole.read_bytes() + bytes(40 * 40 * 4))
    code = run_segment(home, [*case[:3], longer], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, "holds 6400 bytes more voxel data than its header declares")


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_truncated_nrrd_or_metaimage_raw_data(home, case, out_dir, tmp_path, capfd, suffix):
    header = write_sitk(tmp_path / f"whole_t2{suffix}", t2_array(case), compress=False)
    data = header if suffix in (".nrrd", ".mha") else next(p for p in tmp_path.iterdir() if p.suffix == ".raw")
    data.write_bytes(data.read_bytes()[:-1000])
    code = run_segment(home, [*case[:3], header], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, f"whole_t2{suffix} is truncated", "(256000 bytes)", "holds 255000 bytes")


@pytest.mark.parametrize(("spacing", "shown", "cause"), [
    (0.001, "0.001x0.001x0.001 mm", "metres"),
    (100.0, "100x100x100 mm", "micrometres"),
])
def test_implausible_spacing(home, case, out_dir, tmp_path, capfd, spacing, shown, cause):
    scaled = [write_sitk(tmp_path / p.name, sitk.GetArrayFromImage(sitk.ReadImage(str(p))),
                         Spacing=(spacing,) * 3) for p in case]
    code = run_segment(home, scaled, out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, "FLAIR (case_flair.nii.gz)", f"voxel spacing {shown} is implausible",
                   "0.05 to 20 mm", cause)


def test_values_beyond_float32(home, case, out_dir, tmp_path, capfd):
    array = t2_array(case).astype(np.float64)
    array[20, 20, 20] = 1e300
    huge = write_sitk(tmp_path / "huge_t2.nii.gz", array)
    code = run_segment(home, [*case[:3], huge], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, "T2 (huge_t2.nii.gz)", "values up to 1e+300 exceed the float32 range")


@pytest.mark.parametrize("name", ["nan_t2.nii.gz", "nan_t2.nii"])
def test_nan_and_inf_voxels_in_nifti(home, case, out_dir, tmp_path, capfd, name):
    array = t2_array(case)
    array[5, 5, 5], array[6, 6, 6], array[7, 7, 7] = np.nan, np.inf, -np.inf
    bad = write_sitk(tmp_path / name, array, compress=name.endswith(".gz"))
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(bad)))).all()  # what ITK alone would see
    code = run_segment(home, [*case[:3], bad], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, f"T2 ({name}): 3 voxels are NaN or infinite")


def test_non_orthogonal_direction(home, case, out_dir, tmp_path, capfd):
    sheared = (1.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    for name in ("shear_t2.nrrd", "shear_t2.mha"):
        bad = write_sitk(tmp_path / name, t2_array(case), Direction=sheared)
        code = run_segment(home, [*case[:3], bad], out_dir / "s.seg.nrrd")
        one_line_error(capfd, code, 3, f"T2 ({name}): its voxel axes are not perpendicular", "63.4",
                       "resample it onto an orthogonal grid")
    affine = np.eye(4)
    affine[0, 1] = 0.5  # NIfTI: ITK would straighten this sform (a rotation) with only a warning
    nib.save(nib.Nifti1Image(t2_array(case).transpose(2, 1, 0), affine), tmp_path / "shear_t2.nii.gz")
    code = run_segment(home, [*case[:3], tmp_path / "shear_t2.nii.gz"], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, "T2 (shear_t2.nii.gz): its voxel axes (NIfTI sform) are not perpendicular")


def test_two_files_claiming_one_role(home, case, out_dir, tmp_path, capfd):
    second = tmp_path / "other_flair.nii.gz"
    second.write_bytes(case[1].read_bytes())  # the T1ce image under a FLAIR name
    inputs = [case[0], second, case[2], case[3]]
    code = run_segment(home, inputs, out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, "case_flair.nii.gz and other_flair.nii.gz both look like FLAIR",
                   "-i flair=FILE -i t1ce=FILE -i t1=FILE -i t2=FILE")

    done = tmp_path / "done"
    code = run_segment(home, [case[0], f"t1ce={second}", case[2], case[3]], done / "s.seg.nrrd")
    assert code == 0, capfd.readouterr().err
    report = json.loads((done / "s.json").read_text())
    assert report["inputs"] == {"flair": str(case[0]), "t1ce": str(second), "t1": str(case[2]), "t2": str(case[3])}

    named = [f"flair={second}", case[0], case[2], case[3]]  # a role named, and another file named like that role
    code = run_segment(home, named, out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, "case_flair.nii.gz looks like FLAIR by its name, but", "is given as FLAIR")
    code = run_segment(home, [f"flair={case[0]}", f"flair={second}", case[2], case[3]], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, f"input flair is named twice: {case[0]} and {second}")


def test_the_same_input_given_twice(home, case, out_dir, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(case[0].parent)
    code = run_segment(home, [case[0].name, f"./{case[0].name}", case[2], case[3]], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, "the same image is given twice: case_flair.nii.gz and ./case_flair.nii.gz",
                   "each model input needs its own image")
    link = tmp_path / "scan_b.nii.gz"
    link.symlink_to(case[1])
    code = run_segment(home, [case[0], case[1], link, case[3]], out_dir / "s.seg.nrrd")
    one_line_error(capfd, code, 3, f"the same image is given twice: {case[1]} and {link}", "under two names")


def test_symbolic_link_loop_as_input(home, case, out_dir, tmp_path, capfd):
    loop = tmp_path / "loop_t2.nii.gz"
    loop.symlink_to(tmp_path / "back_t2.nii.gz")
    (tmp_path / "back_t2.nii.gz").symlink_to(loop)
    code = run_segment(home, [*case[:3], loop], out_dir / "s.seg.nrrd")
    message = one_line_error(capfd, code, 3, "T2 (loop_t2.nii.gz)", "is a symbolic link loop")
    assert "not found" not in message


def test_synth_shape_too_small_in_the_order_given(tmp_path, capfd):
    code = main(["synth", "--out", str(tmp_path / "synth"), "--n", "1", "--shape", "0", "48", "64",
                 "--progress", "none"])
    one_line_error(capfd, code, 2, "--shape X Y Z must be at least 32 voxels on every axis, not 0 48 64")
    assert not (tmp_path / "synth").exists()


@pytest.mark.parametrize(("metadata", "fragment"), [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"architecture": "GLIMS"}', "'architecture' is not a JSON object"),
    ('{"architecture": {"in_channels": "four"}}', "architecture field 'in_channels' must be a whole number"),
    ('{"architecture": {"depth": 3}}', "unknown architecture field 'depth'"),
    ('{"architecture": {"img_size": [30, 30, 30]}}', "invalid architecture (img_size must be"),
    ('{"architecture": {"num_heads": [3, 6]}}', "invalid architecture (num_heads and depths must be 4 numbers"),
    ('{"training": {"spacing": "2mm"}}', "training 'spacing' must be three positive numbers"),
])
def test_bad_glims_metadata_in_a_safetensors_header(home, tmp_path, capfd, metadata, fragment):
    from safetensors.torch import load_file, save_file

    source = next((home / "models").glob("tiny-brats-*.safetensors"))
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(source)), str(bad), metadata={"glims": metadata})
    catalog_before = (home / "models" / "catalog.json").read_bytes()
    code = main(["models", "--home", str(home), "add", str(bad), "--id", "bad-meta", "--preset", "brats"])
    one_line_error(capfd, code, 4, "the 'glims' metadata in bad.safetensors's header", fragment)
    assert (home / "models" / "catalog.json").read_bytes() == catalog_before


def _truncated_nifti_label(case: list[Path], path: Path) -> Path:
    labels = (t2_array(case) > 300).astype(np.uint8)
    whole = write_sitk(path.with_name("whole_" + path.name), labels, compress=False)
    path.write_bytes(whole.read_bytes()[:-20000])
    whole.unlink()
    return path


def test_truncated_label_map_in_evaluate(case, tmp_path, capfd):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    write_sitk(tmp_path / "pred" / "case1.nii.gz", (t2_array(case) > 300).astype(np.uint8))
    _truncated_nifti_label(case, tmp_path / "ref" / "case1_seg.nii")
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--ref-pattern", "{id}_seg.nii", "-o", str(tmp_path / "e.csv"), "--progress", "none"])
    one_line_error(capfd, code, 3, "label file case1_seg.nii: case1_seg.nii is truncated")
    assert not (tmp_path / "e.csv").exists()


@pytest.mark.parametrize("problem", ["two_flair", "truncated_label"])
def test_training_case_with_two_images_for_one_role_or_a_truncated_label(case, tmp_path, capfd, problem):
    folder = tmp_path / "cases" / "case1"
    folder.mkdir(parents=True)
    for path in case:
        (folder / path.name).write_bytes(path.read_bytes())
    if problem == "two_flair":
        (folder / "old_flair.nii.gz").write_bytes(case[0].read_bytes())
        write_sitk(folder / "case_seg.nii.gz", (t2_array(case) > 300).astype(np.uint8))
        expected = ("case_flair.nii.gz and old_flair.nii.gz both look like FLAIR", "one image per input")
    else:
        _truncated_nifti_label(case, folder / "case_seg.nii")
        expected = ("case1: label map case_seg.nii: case_seg.nii is truncated",)
    code = main(["train", "--cases", str(tmp_path / "cases"), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--steps-per-epoch", "1", "--feature-size", "6", "--img-size", "32", "--depths", "2", "2", "2", "2",
                 "--num-heads", "1", "2", "2", "4", "--device", "cpu", "--progress", "none"])
    one_line_error(capfd, code, 3, *expected)


def test_truncated_label_map_in_cases_add(home, case, tmp_path, capfd):
    label = _truncated_nifti_label(case, tmp_path / "case_seg.nii")
    roles = ["-i", f"flair={case[0]}", "-i", f"t1ce={case[1]}", "-i", f"t1={case[2]}", "-i", f"t2={case[3]}"]
    code = main(["cases", "--home", str(home), "add", *roles, "-l", str(label), "--id", "case1"])
    one_line_error(capfd, code, 3, "label map case_seg.nii: case_seg.nii is truncated")
    assert main(["cases", "--home", str(home), "list"]) == 0 and "case1" not in capfd.readouterr().out
