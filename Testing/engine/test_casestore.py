"""The training-set store: real cases go in validated and whole; bad entries are refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glims.casestore import add_case, list_cases, remove_case
from glims.cli import main
from glims.errors import InputError

from tiny_models import brats_case_paths, coarse_copy

KEYS = ("flair", "t1ce", "t1", "t2")


@pytest.fixture(scope="module")
def real_case(shared_data, tmp_path_factory):
    """TCGA-FG-6692 at 3 mm with its silver label (BraTS 2017-2021 values, ET = 4) on the same grid."""
    folder = tmp_path_factory.mktemp("fg")
    images = coarse_copy(brats_case_paths(shared_data, "tcga_fg_6692"), folder)
    silver = sitk.ReadImage(str(shared_data / "brats/tcga_fg_6692/TCGA-FG-6692_fusion_simple_silver.nii.gz"))
    label = sitk.Resample(silver, sitk.ReadImage(str(images[0])), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    sitk.WriteImage(label, str(folder / "silver.nii.gz"))
    return dict(zip(KEYS, images)), folder / "silver.nii.gz"


def test_a_real_case_is_stored_with_provenance_and_listed(real_case, tmp_path):
    inputs, label = real_case
    case = add_case("brats", inputs, label, case_id="fg6692", home=tmp_path, label_map={4: 3},
                    provenance={"draft_model": "glims-brats-synth@1.0.0"})
    assert sorted(p.name for p in case.folder.iterdir()) == [".glims-owned", "case.json", "flair.nii.gz",
                                                              "label.nii.gz", "t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz"]
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(label)))
    assert set(np.unique(stored)) <= {0, 1, 2, 3} and np.array_equal(stored == 3, original == 4)
    record = json.loads((case.folder / "case.json").read_text())
    assert record["draft_model"] == "glims-brats-synth@1.0.0" and record["preset"] == "brats"
    assert record["label_voxels"]["3"] == int((original == 4).sum())
    assert [c.case_id for c in list_cases(tmp_path)] == ["fg6692"]
    remove_case("fg6692", tmp_path)
    assert list_cases(tmp_path) == []


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda inputs, label, tmp: (dict(list(inputs.items())[:3]), label), "missing t2"),
        (lambda inputs, label, tmp: ({**inputs, "dwi": inputs["t2"]}, label), "unexpected dwi"),
        (lambda inputs, label, tmp: (inputs, tmp / "absent.nii.gz"), "label map absent.nii.gz: file not found"),
        (lambda inputs, label, tmp: (inputs, label), "label values [4] are not labels"),  # no relabel: ET=4
        (lambda inputs, label, tmp: (inputs, _shifted(label, tmp)), "not on the reference (flair) grid"),
        (lambda inputs, label, tmp: ({**inputs, "t2": _shifted(inputs["t2"], tmp)}, label), "t2 is not on the reference"),
        (lambda inputs, label, tmp: (inputs, _blank(label, tmp)), "the label map is empty"),
    ],
    ids=["missing-input", "extra-input", "missing-label", "unknown-label-values", "label-geometry",
         "input-geometry", "empty-label"],
)
def test_bad_entries_are_refused_and_nothing_is_stored(real_case, tmp_path, mutate, message):
    inputs, label = mutate(*real_case, tmp_path)
    with pytest.raises(InputError) as info:
        add_case("brats", inputs, label, case_id="bad", home=tmp_path / "home")
    assert message in str(info.value)
    assert not (tmp_path / "home" / "cases" / "bad").exists()
    assert list_cases(tmp_path / "home") == []


def _shifted(path: Path, tmp: Path) -> Path:
    image = sitk.ReadImage(str(path))
    image.SetOrigin(tuple(v + 3.0 for v in image.GetOrigin()))
    out = tmp / f"shifted_{path.name}"
    sitk.WriteImage(image, str(out))
    return out


def _blank(path: Path, tmp: Path) -> Path:
    image = sitk.ReadImage(str(path)) * 0
    out = tmp / "blank.nii.gz"
    sitk.WriteImage(image, str(out))
    return out


def test_duplicate_case_id_is_refused(real_case, tmp_path):
    inputs, label = real_case
    add_case("brats", inputs, label, case_id="dup", home=tmp_path, label_map={4: 3})
    with pytest.raises(InputError, match="already in the training set"):
        add_case("brats", inputs, label, case_id="dup", home=tmp_path, label_map={4: 3})


def test_cli_add_list_rm(real_case, tmp_path, capsys):
    inputs, label = real_case
    args = ["cases", "--home", str(tmp_path), "add", "--id", "cli-case", "-l", str(label), "--relabel", "4=3"]
    for key, path in inputs.items():
        args += ["-i", f"{key}={path}"]
    assert main(args) == 0
    assert main(["cases", "--home", str(tmp_path), "list"]) == 0
    assert "cli-case" in capsys.readouterr().out
    assert main(["cases", "--home", str(tmp_path), "rm", "cli-case"]) == 0
    assert main(["cases", "--home", str(tmp_path), "rm", "cli-case"]) == 3
    assert "no case 'cli-case'" in capsys.readouterr().err
