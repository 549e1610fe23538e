"""Segmenting real cases end to end with a tiny random network: geometry, labels, files, orientation, protocol."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from glims.cli import main
from glims.pipeline import assign_inputs, segment_files
from glims.progress import parse_protocol_line

from tiny_models import brats_case_paths, coarse_copy, register_tiny_ct

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(home) -> Path:
    """The module's user folder (``tiny-brats``) with ``tiny-btcv`` added."""
    register_tiny_ct(home)
    return home


@pytest.fixture(scope="module")
def fg6692(shared_data, tmp_path_factory) -> list[Path]:
    return coarse_copy(brats_case_paths(shared_data, "tcga_fg_6692"), tmp_path_factory.mktemp("fg6692"))


def geometry(image: sitk.Image) -> tuple[float, ...]:
    """Size, spacing, origin and direction as one flat tuple (for approximate comparison)."""
    return (*image.GetSize(), *image.GetSpacing(), *image.GetOrigin(), *image.GetDirection())


@pytest.fixture(scope="module")
def segmented(home, fg6692, tmp_path_factory):
    """TCGA-FG-6692 (3 mm) segmented once with every output; shared by the tests that read it."""
    out_dir = tmp_path_factory.mktemp("segmented")
    result = segment_files("tiny-brats", fg6692, out_dir / "case.seg.nrrd", labelmap=out_dir / "case.nii.gz",
                           report=out_dir / "case.json", probabilities=out_dir / "probs.nrrd", home=home)
    return result, out_dir


def test_output_is_on_the_reference_grid_with_model_labels_and_a_readable_slicer_file(segmented, fg6692):
    result, tmp_path = segmented
    out = tmp_path / "case.seg.nrrd"
    reference = sitk.ReadImage(str(fg6692[0]))
    labelmap = sitk.ReadImage(str(tmp_path / "case.nii.gz"))
    assert geometry(labelmap) == pytest.approx(geometry(reference))
    values = set(np.unique(sitk.GetArrayFromImage(labelmap)).tolist())
    assert values <= {0, 1, 2, 3} and len(values) > 1
    # nothing outside the brain (where every modality is zero)
    outside = np.all([sitk.GetArrayFromImage(sitk.ReadImage(str(p))) == 0 for p in fg6692], axis=0)
    assert outside.any() and not sitk.GetArrayFromImage(labelmap)[outside].any()

    seg = slicerio.read_segmentation(str(out))
    names = [s["name"] for s in seg["segments"]]
    assert names == ["Necrotic tumour core (NCR)", "Peritumoral edema (ED)", "Enhancing tumour (ET)"]
    assert seg["segments"][2]["terminology"]["type"] == ["SCT", "108369006", "Neoplasm"]
    assert seg["segments"][1]["color"] == pytest.approx([90 / 255, 200 / 255, 90 / 255], abs=1e-5)
    assert [s["labelValue"] for s in seg["segments"]] == [1, 2, 3]
    voxels_ijk = seg["voxels"]
    assert np.array_equal(voxels_ijk, sitk.GetArrayFromImage(labelmap).transpose(2, 1, 0))
    assert np.allclose(seg["ijkToLPS"][:3, 3], reference.GetOrigin())

    probs = sitk.ReadImage(str(tmp_path / "probs.nrrd"))
    assert probs.GetNumberOfComponentsPerPixel() == 3 and geometry(probs) == pytest.approx(geometry(reference))
    values = sitk.GetArrayFromImage(probs)
    assert values.min() >= 0 and values.max() <= 1 and values.max() > 0.5

    report = json.loads((tmp_path / "case.json").read_text())
    assert report["model"]["id"] == "tiny-brats" and report["device"] == "cpu"
    voxel_ml = np.prod(reference.GetSpacing()) / 1000
    counts = np.bincount(sitk.GetArrayFromImage(labelmap).ravel(), minlength=4)
    for entry in report["segments"]:
        assert entry["voxels"] == counts[entry["value"]]
        assert entry["volume_ml"] == pytest.approx(counts[entry["value"]] * voxel_ml, abs=1e-3)
    assert set(report["timings_s"]) >= {"load", "preprocess", "infer", "postprocess", "write", "total"}
    assert result.outputs["segmentation"] == out


def _flip_xy(image: sitk.Image) -> sitk.Image:
    """The same physical image stored with RAS-like axes (x and y reversed)."""
    array = sitk.GetArrayFromImage(image)[:, ::-1, ::-1]
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(image.GetSpacing())
    size = image.GetSize()
    out.SetOrigin(image.TransformIndexToPhysicalPoint((size[0] - 1, size[1] - 1, 0)))
    d = np.array(image.GetDirection()).reshape(3, 3) @ np.diag([-1, -1, 1])
    out.SetDirection(d.ravel().tolist())
    return out


def _permute_xz(image: sitk.Image) -> sitk.Image:
    """The same physical image with the first and third voxel axes swapped."""
    out = sitk.GetImageFromArray(np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0)))
    sp = image.GetSpacing()
    out.SetSpacing((sp[2], sp[1], sp[0]))
    out.SetOrigin(image.GetOrigin())
    d = np.array(image.GetDirection()).reshape(3, 3)[:, [2, 1, 0]]
    out.SetDirection(d.ravel().tolist())
    return out


def test_threshold_overrides_move_the_region_boundary_and_are_checked_first(home, fg6692, tmp_path):
    from glims.errors import ConfigError

    def whole_tumour_voxels(threshold: float) -> int:
        result = segment_files("tiny-brats", fg6692, None, thresholds={"WT": threshold}, postprocess=False, home=home)
        return int((sitk.GetArrayFromImage(result.labels) > 0).sum())

    low, middle, high = (whole_tumour_voxels(t) for t in (0.3, 0.5, 0.7))
    assert low >= middle >= high and low > high
    with pytest.raises(ConfigError, match="sigmoid outputs"):  # a softmax model has no thresholds to move
        segment_files("tiny-btcv", [tmp_path / "never_read.nii.gz"], None, thresholds={"ET": 0.5}, home=home)


@pytest.mark.parametrize("transform", [_flip_xy, _permute_xz], ids=["LPS-to-RAS", "permuted-axes"])
def test_reoriented_copy_gives_the_same_segmentation_in_physical_space(home, fg6692, segmented, tmp_path, transform):
    base = segmented[0].labels
    copies = []
    for path in fg6692:
        target = tmp_path / path.name
        sitk.WriteImage(transform(sitk.ReadImage(str(path))), str(target))
        copies.append(target)
    moved = segment_files("tiny-brats", copies, None, home=home).labels
    assert geometry(moved) == pytest.approx(geometry(sitk.ReadImage(str(copies[0]))))
    back = sitk.Resample(moved, base, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(base))


def test_brats_2023_names_are_matched_whatever_the_order(shared_data, home):
    spec = __import__("glims.catalog", fromlist=["load_catalog"]).load_catalog(home).get("tiny-brats")
    paths = brats_case_paths(shared_data, "brats_gli_00001")
    shuffled = [paths[2], paths[0], paths[3], paths[1]]
    assigned = dict(assign_inputs(spec, shuffled))
    assert {k: p.name for k, p in assigned.items()} == {
        "flair": "BraTS-GLI-00001-000-t2f.nii.gz", "t1ce": "BraTS-GLI-00001-000-t1c.nii.gz",
        "t1": "BraTS-GLI-00001-000-t1n.nii.gz", "t2": "BraTS-GLI-00001-000-t2w.nii.gz",
    }
    tcga = brats_case_paths(shared_data, "tcga_fg_6692")
    assert [p.name for _, p in assign_inputs(spec, tcga[::-1])] == [p.name for p in tcga]


@pytest.mark.parametrize("source", ["nifti", "dicom"])
def test_ct_nifti_and_dicom_series_segment_onto_their_own_grid(shared_data, home, tmp_path, source):
    path = (shared_data / "ct/totalseg_example_ct/example_ct_sm.nii.gz" if source == "nifti"
            else shared_data / "ct/totalseg_example_ct_dicom/dicom")
    result = segment_files("tiny-btcv", [path], tmp_path / "ct.seg.nrrd", home=home)
    if source == "nifti":
        reference = sitk.ReadImage(str(path))
    else:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        reference = reader.Execute()
    assert geometry(result.labels) == pytest.approx(geometry(reference))
    assert set(np.unique(sitk.GetArrayFromImage(result.labels)).tolist()) <= set(range(14))
    seg = slicerio.read_segmentation(str(tmp_path / "ct.seg.nrrd"))
    assert len(seg["segments"]) == 13 and seg["segments"][5]["name"] == "Liver"
    assert seg["segments"][1]["terminology"]["typeModifier"] == ["SCT", "24028007", "Right"]


def _cli(home: Path, inputs: list[Path], out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "GLIMSSegmenter"), "GLIMS_HOME": str(home)}
    args = [sys.executable, "-m", "glims", "segment", "-m", "tiny-brats", "-o", str(out), "--progress", "json", *extra]
    for path in inputs:
        args += ["-i", str(path)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_json_progress_stream_is_well_formed_and_ends_with_the_result(home, fg6692, tmp_path):
    proc = _cli(home, fg6692, tmp_path / "p.seg.nrrd", "--labelmap", str(tmp_path / "p.nii.gz"))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    events = [parse_protocol_line(line) for line in stdout.splitlines()]
    assert all(e is not None for e in events), stdout
    progress = [e for e in events if e["type"] == "progress"]
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {e["stage"] for e in progress} == {"load", "preprocess", "infer", "postprocess", "write"}
    infer = [e for e in progress if e["stage"] == "infer"]
    assert infer[-1]["done"] == infer[-1]["total"] == len(infer)
    assert events[-1]["type"] == "result"
    assert Path(events[-1]["outputs"]["segmentation"]).is_file() and Path(events[-1]["outputs"]["labelmap"]).is_file()


def test_sigterm_cancels_cleanly_and_leaves_no_output(shared_data, home, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    full = brats_case_paths(shared_data, "tcga_fg_6692")  # full resolution: many windows, time to cancel
    proc = _cli(home, full, out_dir / "c.seg.nrrd", "--labelmap", str(out_dir / "c.nii.gz"), "--overlap", "0.7")
    for line in proc.stdout:
        event = parse_protocol_line(line)
        if event and event["type"] == "progress" and event["stage"] == "infer":
            proc.send_signal(signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    errors = [parse_protocol_line(line) for line in stdout.splitlines()]
    assert errors[-1]["type"] == "error" and errors[-1]["error"] == "Cancelled"
    assert "SIGTERM" in errors[-1]["message"]
    assert list(out_dir.iterdir()) == []


def test_cli_models_lists_the_user_models(home, capsys):
    assert main(["models", "--home", str(home), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert {m["id"] for m in listed} >= {"tiny-brats", "tiny-btcv"}
    tiny = next(m for m in listed if m["id"] == "tiny-brats")
    assert [i["key"] for i in tiny["inputs"]] == ["flair", "t1ce", "t1", "t2"]
    assert tiny["labels"][0]["slicer_terminology"].startswith("Segmentation category and type - DICOM master list~")
