"""Direct tests of ``glims.imageio`` on small generated volumes: round trips through every written format keep voxels
and geometry, label maps keep their integer type, ``Geometry`` compares grids within its tolerances, DICOM series
folders are read, re-gridding works in physical space, and writes are atomic with one-line errors. Bad files given
to the command line are in ``test_bad_input_images.py`` and ``test_bad_input.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from glims.errors import InputError, OutputError
from glims.imageio import (
    Geometry,
    check_geometry,
    check_image_target,
    check_input_path,
    check_volume,
    ensure_writable,
    fields_overlap,
    physical_bounds,
    read_image,
    read_label_image,
    reorient,
    resample_to,
    write_image,
)
from glims.outputs import remove_stale_partials

from dicom_series import write_mr_series

# a rotation of 30 degrees about z (columns are the axes' directions), so that direction is not the identity
_C, _S = np.cos(np.pi / 6), np.sin(np.pi / 6)
ROTATED = (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0)


def _volume(shape=(4, 5, 6), dtype=np.float32, spacing=(0.8, 1.25, 2.5), origin=(-10.5, 3.25, 40.0), direction=ROTATED):
    """A (z, y, x) volume of distinct values with a non-trivial grid."""
    array = (np.arange(np.prod(shape)).reshape(shape) % 251).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


# ---- round trips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_a_volume_round_trips_with_its_voxels_and_geometry(tmp_path, suffix):
    image = _volume()
    path = write_image(image, tmp_path / f"t1{suffix}")
    assert path == tmp_path / f"t1{suffix}"
    assert os.listdir(tmp_path) == [path.name]  # no temporary left beside it
    back = read_image(path)
    assert back.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    _assert_same_grid(back, image)
    assert Geometry.of(back).matches(Geometry.of(image))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16])
def test_a_label_map_keeps_its_integer_type_and_values(tmp_path, suffix, dtype):
    labels = np.zeros((4, 5, 6), dtype=dtype)
    labels[1:3, 1:4, 2:5] = 2
    labels[2, 2, 3] = 3
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.0, 1.0, 1.5))
    back = read_label_image(write_image(image, tmp_path / f"seg{suffix}"))
    assert back.GetPixelID() == image.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)


def test_read_image_converts_integer_scans_to_float32(tmp_path):
    image = _volume(dtype=np.int16)
    back = read_image(write_image(image, tmp_path / "ct.nrrd"))
    assert back.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image).astype(np.float32))


def test_a_write_replaces_an_existing_file_and_keeps_the_umask_mode(tmp_path):
    target = tmp_path / "t1.nii.gz"
    target.write_bytes(b"old")
    write_image(_volume(), target)
    assert sitk.GetArrayFromImage(read_image(target)).max() > 0
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# ---- write errors --------------------------------------------------------------------------------------------


def test_a_format_itk_cannot_write_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(OutputError, match=r"^cannot write .*t1\.xyz: ") as err:
        write_image(_volume(), tmp_path / "t1.xyz")
    assert "\n" not in str(err.value)
    assert os.listdir(tmp_path) == []


def test_a_write_into_a_missing_folder_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match=r"^cannot write .*missing/t1\.nii\.gz: "):
        write_image(_volume(), tmp_path / "missing" / "t1.nii.gz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_a_header_with_a_separate_data_file_is_refused_as_an_output(tmp_path, suffix):
    # the data file would be named after the temporary name (and, staged by glims, be taken for an abandoned
    # temporary and deleted by the next run): .mha and .nrrd keep header and voxels in one file
    with pytest.raises(OutputError, match=rf"^cannot write .*t1\{suffix}: .* one file"):
        write_image(_volume(), tmp_path / f"t1{suffix}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["seg.mhd", "SEG.MHD", "seg.nhdr"])
def test_check_image_target_refuses_detached_headers_before_any_work(tmp_path, name):
    with pytest.raises(OutputError, match="keeps its voxels in a second file; write .mha or .nrrd"):
        check_image_target(tmp_path / "new" / name)
    for fine in ("seg.mha", "seg.nrrd", "seg.seg.nrrd", "seg.nii.gz", "seg.nii"):
        assert check_image_target(tmp_path / fine) == tmp_path / fine
    assert os.listdir(tmp_path) == []


def test_segment_refuses_a_detached_label_map_before_reading_anything(tmp_path):
    from glims.pipeline import segment_files

    # the inputs do not even exist and the model is unknown: the output format is refused first
    with pytest.raises(OutputError, match="seg.mhd: a .mhd header keeps its voxels in a second file"):
        segment_files(
            "no-such-model", [tmp_path / "t1.nii.gz"], labelmap=tmp_path / "out" / "seg.mhd", home=tmp_path / "home"
        )
    assert os.listdir(tmp_path) == []


def test_a_staged_label_map_survives_the_next_runs_cleanup(tmp_path):
    """A label map written as glims writes its outputs (staged, then committed by another process, which ends)
    is not touched by the clean-up of abandoned temporary files that the next run makes in the same folder."""
    script = (
        "import sys, numpy as np, SimpleITK as sitk\n"
        "from glims.imageio import write_image\n"
        "from glims.outputs import OutputSet\n"
        "with OutputSet() as pending:\n"
        "    write_image(sitk.GetImageFromArray(np.eye(4, dtype=np.uint8)[None].repeat(3, 0)),"
        " pending.staged(sys.argv[1]))\n"
        "    pending.commit()\n"
    )
    target = tmp_path / "seg.nrrd"
    subprocess.run([sys.executable, "-c", script, str(target)], check=True, env=os.environ)
    assert remove_stale_partials(tmp_path) == []
    assert os.listdir(tmp_path) == ["seg.nrrd"]
    assert sitk.GetArrayFromImage(read_label_image(target)).sum() == 12


# ---- ensure_writable -----------------------------------------------------------------------------------------


def test_ensure_writable_creates_the_folder_and_leaves_no_probe(tmp_path):
    target = tmp_path / "a" / "b" / "seg.nii.gz"
    assert ensure_writable(target) == target
    assert (tmp_path / "a" / "b").is_dir()
    assert os.listdir(tmp_path / "a" / "b") == []
    assert not target.exists()


def test_ensure_writable_refuses_a_parent_that_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(OutputError, match=rf"^cannot write {re.escape(str(afile / 'x' / 'seg.nii.gz'))}: "):
        ensure_writable(afile / "x" / "seg.nii.gz")
    assert afile.read_text() == "mine"


def test_ensure_writable_refuses_a_folder_as_the_file(tmp_path):
    with pytest.raises(OutputError, match="it is a folder$"):
        ensure_writable(tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_ensure_writable_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            ensure_writable(folder / "seg.nii.gz")
    finally:
        folder.chmod(0o755)


# ---- Geometry ------------------------------------------------------------------------------------------------


def test_geometry_matches_within_its_tolerances_and_not_beyond():
    base = Geometry.of(_volume())
    assert base.matches(base)

    def changed(**kw):
        return Geometry(**{**base.__dict__, **kw})

    assert base.matches(changed(spacing=tuple(s + 5e-5 for s in base.spacing)))
    assert not base.matches(changed(spacing=tuple(s + 5e-3 for s in base.spacing)))
    assert base.matches(changed(origin=tuple(o + 5e-3 for o in base.origin)))  # origins: 100x the tolerance
    assert not base.matches(changed(origin=tuple(o + 0.05 for o in base.origin)))
    assert not base.matches(changed(direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)))
    assert not base.matches(changed(size=(6, 5, 5)))
    assert base.matches(changed(spacing=tuple(s + 5e-3 for s in base.spacing)), tolerance=1e-2)


def test_geometry_apply_and_describe():
    source = _volume()
    blank = sitk.Image(source.GetSize(), sitk.sitkUInt8)
    assert Geometry.of(source).apply(blank) is blank
    _assert_same_grid(blank, source)
    assert Geometry.of(source).describe() == "6x5x4 voxels of 0.8x1.25x2.5 mm"


# ---- checks --------------------------------------------------------------------------------------------------


def test_check_geometry_accepts_scans_and_names_the_unit_mistake():
    check_geometry(_volume(spacing=(0.05, 1.0, 20.0)), "edge")  # the limits themselves are plausible
    with pytest.raises(InputError, match="^T1: voxel spacing 0.001x0.001x0.002 mm .* metres"):
        check_geometry(_volume(spacing=(0.001, 0.001, 0.002)), "T1")
    with pytest.raises(InputError, match="micrometres"):
        check_geometry(_volume(spacing=(1000.0, 1000.0, 2000.0)), "T1")
    with pytest.raises(InputError, match="header is wrong or damaged"):
        check_geometry(_volume(spacing=(1.0, 1.0, 40.0)), "T1")


def test_check_volume_refuses_a_constant_volume_with_its_value():
    with pytest.raises(InputError, match=r"^FLAIR: the image is constant \(7 everywhere\): empty or blank$"):
        check_volume(sitk.GetImageFromArray(np.full((3, 4, 5), 7.0, dtype=np.float32)), "FLAIR")
    check_volume(_volume(), "FLAIR")


@pytest.mark.parametrize("kind", ["missing", "dangling", "loop"])
def test_check_input_path_says_what_is_wrong(tmp_path, kind):
    path = tmp_path / "t1.nii.gz"
    expected = {
        "missing": f"T1: file not found: {path}",
        "dangling": f"T1: {path} is a symbolic link to nothing ({tmp_path / 'gone'} does not exist)",
        "loop": f"T1: {path} is a symbolic link loop (it leads back to itself through links)",
    }[kind]
    if kind == "dangling":
        path.symlink_to(tmp_path / "gone")
    elif kind == "loop":
        path.symlink_to(path)
    with pytest.raises(InputError) as err:
        check_input_path(path, "T1")
    assert str(err.value) == expected


def test_a_label_map_with_several_components_is_refused(tmp_path):
    vectors = sitk.Compose([_volume(), _volume()])
    path = write_image(vectors, tmp_path / "seg.nrrd")
    with pytest.raises(InputError, match=r"^label map seg\.nrrd: a label map must be a single-channel 3D image"):
        read_label_image(path)


# ---- DICOM series --------------------------------------------------------------------------------------------


def test_a_dicom_series_folder_is_read_as_one_volume(tmp_path):
    pytest.importorskip("pydicom")
    image = _volume(dtype=np.int16)
    write_mr_series(image, tmp_path / "series")
    back = read_image(tmp_path / "series")
    assert back.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image).astype(np.float32))
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-5)


def test_a_folder_without_dicom_or_with_two_series_is_refused(tmp_path):
    pytest.importorskip("pydicom")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series found in it"):
        read_image(tmp_path / "empty")
    write_mr_series(_volume(dtype=np.int16), tmp_path / "mixed", seed="first")
    for path in write_mr_series(_volume(dtype=np.int16), tmp_path / "other", seed="second"):
        path.rename(tmp_path / "mixed" / f"b_{path.name}")
    with pytest.raises(InputError, match="2 DICOM series found; give the folder of one series"):
        read_image(tmp_path / "mixed")


# ---- re-gridding ---------------------------------------------------------------------------------------------


def test_resample_onto_the_same_grid_copies_and_onto_a_shifted_grid_moves_the_voxels():
    image = _volume(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    same = resample_to(image, image)
    assert same is not image
    np.testing.assert_array_equal(sitk.GetArrayFromImage(same), sitk.GetArrayFromImage(image))
    shifted = sitk.Image(image)
    shifted.SetOrigin((1.0, 0.0, 0.0))  # the reference grid starts one voxel further along x
    moved = resample_to(image, shifted, sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(moved)[..., :-1], sitk.GetArrayFromImage(image)[..., 1:])
    assert (sitk.GetArrayFromImage(moved)[..., -1] == 0).all()  # outside the image: the default value


def test_physical_bounds_and_overlap():
    image = _volume(shape=(2, 4, 10), spacing=(1.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3).ravel())
    low, high = physical_bounds(image)
    np.testing.assert_allclose(low, (-0.5, -1.0, -1.5))
    np.testing.assert_allclose(high, (9.5, 7.0, 4.5))
    half = sitk.Image(image)
    half.SetOrigin((5.0, 0.0, 0.0))  # overlaps exactly half the reference along x
    assert fields_overlap(half, image, min_fraction=0.5)
    assert not fields_overlap(half, image, min_fraction=0.51)
    far = sitk.Image(image)
    far.SetOrigin((100.0, 0.0, 0.0))
    assert not fields_overlap(far, image)


def test_reorient_flips_axes_without_interpolation():
    image = _volume(direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS axes
    lps = reorient(image, "LPS")
    np.testing.assert_allclose(lps.GetDirection(), np.eye(3).ravel())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(lps), sitk.GetArrayFromImage(image)[:, ::-1, ::-1])
    _, high = physical_bounds(image)
    np.testing.assert_allclose(physical_bounds(lps)[1], high, atol=1e-6)
