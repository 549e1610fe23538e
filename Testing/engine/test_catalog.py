"""The model catalog: schema validation, presets, input matching, and user models added from the authors' format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glims.catalog import load_catalog, load_presets, match_inputs
from glims.cli import main
from glims.errors import CatalogError
from glims.fileio import sha256_file
from glims.network import GLIMS
from glims.registry import register_model, remove_model

TINY = dict(feature_size=6, img_size=32, num_heads=(1, 2, 2, 4), depths=(2, 2, 2, 2))


@pytest.fixture
def authors_pt(tmp_path):
    """A checkpoint in the authors' trainer format: DataParallel prefix, numpy best_acc, optimizer state."""
    torch.manual_seed(0)
    net = GLIMS(**TINY)
    opt = torch.optim.AdamW(net.parameters())
    path = tmp_path / "model_2_new.pt"
    torch.save({"epoch": 99, "best_acc": np.float64(0.91), "optimizer": opt.state_dict(),
                "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path, net


def test_builtin_catalog_and_presets_are_valid():
    catalog = load_catalog("/nonexistent-home")
    presets = load_presets()
    assert set(presets) == {"brats", "btcv"}
    assert [i["key"] for i in presets["brats"]["inputs"]] == ["flair", "t1ce", "t1", "t2"]
    assert [lab["value"] for lab in presets["btcv"]["labels"]] == list(range(1, 14))
    for model in catalog.models:
        assert model.weights and all(w.path.is_file() for w in model.weights)


def test_authors_checkpoint_is_registered_verified_and_converted(authors_pt, tmp_path, capsys):
    path, net = authors_pt
    before = sha256_file(path)
    code = main(["models", "--home", str(tmp_path / "home"), "add", str(path), "--id", "authors-fold2",
                 "--preset", "brats", "--license", "MIT (code); weights licence not stated"])
    assert code == 0 and "registered authors-fold2@1.0.0" in capsys.readouterr().out
    assert sha256_file(path) == before  # the user's file is untouched
    spec = load_catalog(tmp_path / "home").get("authors-fold2")
    assert spec.preset == "brats" and spec.architecture["feature_size"] == 6
    assert spec.provenance["source_format"] == "authors-torch"
    assert sha256_file(spec.weights[0].path) == spec.weights[0].sha256
    # a second registration under the same id is a new version; the first stays
    register_model(path, "authors-fold2", "brats", home=tmp_path / "home")
    catalog = load_catalog(tmp_path / "home")
    assert [m.version for m in catalog.versions("authors-fold2")] == ["1.0.0", "1.1.0"]
    assert catalog.get("authors-fold2").version == "1.1.0"
    assert catalog.get("authors-fold2@1.0.0").version == "1.0.0"
    assert remove_model("authors-fold2@1.0.0", tmp_path / "home") == ["authors-fold2@1.0.0"]
    assert not spec.weights[0].path.exists()
    with pytest.raises(CatalogError, match="no version 1.0.0"):
        load_catalog(tmp_path / "home").get("authors-fold2@1.0.0")


def test_a_model_trained_on_a_coarser_grid_is_registered_with_that_grid(tmp_path):
    from glims.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = GLIMS(**TINY)
    architecture = {"name": "GLIMS", **net.config.to_dict()}
    trained = save_checkpoint(tmp_path / "best", net.state_dict(), architecture,
                              extra={"training": {"spacing": [2.0, 2.0, 2.0], "epoch": 3}})
    plain = save_checkpoint(tmp_path / "plain", net.state_dict(), architecture)
    home = tmp_path / "home"
    assert register_model(trained, "coarse", "brats", home=home).preprocessing.spacing == (2.0, 2.0, 2.0)
    # Without training metadata the preset's grid applies (BraTS: the images' own).
    assert register_model(plain, "native", "brats", home=home).preprocessing.spacing is None
    assert load_catalog(home).get("coarse").preprocessing.to_dict()["spacing"] == [2.0, 2.0, 2.0]


def test_a_brats_checkpoint_cannot_be_registered_as_ct(authors_pt, tmp_path):
    path, _ = authors_pt
    with pytest.raises(CatalogError, match="takes 4 input channels; preset btcv has 1"):
        register_model(path, "x", "btcv", home=tmp_path)
    assert not (tmp_path / "models" / "catalog.json").exists()


def test_a_broken_user_catalog_gives_a_clear_error(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "catalog.json").write_text(json.dumps({"catalog_version": 1, "models": [{"id": "x"}]}))
    with pytest.raises(CatalogError, match="invalid model catalog .* 'version' is a required property"):
        load_catalog(tmp_path)
    (tmp_path / "models" / "catalog.json").write_text("{not json")
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(tmp_path)


@pytest.mark.parametrize(
    "names, expected",
    [
        (["TCGA-FG-6692_t1_sri24_bet", "TCGA-FG-6692_t2_sri24_bet", "TCGA-FG-6692_fla_sri24_bet",
          "TCGA-FG-6692_t1c_sri24_bet"],
         {"flair": "TCGA-FG-6692_fla_sri24_bet", "t1ce": "TCGA-FG-6692_t1c_sri24_bet",
          "t1": "TCGA-FG-6692_t1_sri24_bet", "t2": "TCGA-FG-6692_t2_sri24_bet"}),
        (["BraTS2021_00000_t1ce", "BraTS2021_00000_flair", "BraTS2021_00000_t2", "BraTS2021_00000_t1"],
         {"flair": "BraTS2021_00000_flair", "t1ce": "BraTS2021_00000_t1ce", "t1": "BraTS2021_00000_t1",
          "t2": "BraTS2021_00000_t2"}),
        (["native_MRHR_T1_AX_POST_GAD_t1c", "native_T1_AX_t1"],
         {"t1ce": "native_MRHR_T1_AX_POST_GAD_t1c", "t1": "native_T1_AX_t1"}),
        (["MRHead"], {}),
    ],
)
def test_input_patterns_tell_t1_from_t1ce(names, expected):
    spec_entry = {"id": "m", "version": "1.0.0", "title": "m", "description": "", "license": "x",
                  "preset": "brats", "architecture": {"name": "GLIMS"},
                  "weights": [{"file": "w.safetensors", "sha256": "0" * 64}]}
    from pathlib import Path

    from glims.catalog import spec_from_entry

    spec = spec_from_entry(spec_entry, load_presets(), Path("."), True)
    assert match_inputs(spec, names) == expected


def test_without_jsonschema_the_builtin_catalog_loads_and_user_catalogs_are_refused(tmp_path, monkeypatch):
    """Inside Slicer before the first package install the model list must still show."""
    import sys

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # makes `import jsonschema` fail as if not installed
    builtin_ids = [m.id for m in load_catalog(tmp_path / "empty-home").models]
    assert all(m.builtin for m in load_catalog(tmp_path / "empty-home").models)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "catalog.json").write_text(json.dumps({"catalog_version": 1, "models": []}))
    with pytest.raises(CatalogError, match="'jsonschema' is needed"):
        load_catalog(tmp_path)
    assert builtin_ids == [m.id for m in load_catalog(tmp_path / "empty-home").models]
