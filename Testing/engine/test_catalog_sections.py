"""The typed sections of catalog entries (``glims.catalog_sections``): what lands in each field when a catalog is
read (the preset's settings, the entry's overrides, the defaults), user catalogs written by earlier versions, what
``glims models --json`` prints, and the refusal of settings the engine cannot follow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glims.catalog import BUILTIN_CATALOG, PRESET_NAMES, RESOURCES, load_catalog, load_presets, spec_from_entry
from glims.catalog_sections import (
    BLENDS,
    CROP_MARGIN,
    DEFAULT_OVERLAP,
    PLACEMENTS,
    CleanupRule,
    HoleFilling,
    InferenceSpec,
    IntensitySpec,
    PaintStep,
)
from glims.cli import main
from glims.errors import CatalogError, ConfigError
from glims.inference import InferenceOptions

SHA = "0" * 64
BRATS_ARCH = {"name": "GLIMS", "in_channels": 4, "out_channels": 3, "feature_size": 6, "img_size": [32, 32, 32]}


def entry(model_id: str, preset: str = "brats", **sections) -> dict:
    """A user-catalog entry as earlier versions wrote it: the required fields plus the sections it overrides."""
    architecture = BRATS_ARCH if preset == "brats" else {"name": "GLIMS", "in_channels": 1, "out_channels": 14}
    return {"id": model_id, "version": "1.0.0", "title": model_id, "description": "", "license": "test",
            "preset": preset, "architecture": architecture,
            "weights": [{"file": f"{model_id}.safetensors", "sha256": SHA}], **sections}


def write_user_catalog(home: Path, models: list[dict], defaults: dict | None = None) -> None:
    folder = home / "models"
    folder.mkdir(parents=True, exist_ok=True)
    document = {"catalog_version": 1, "models": models, **({"defaults": defaults} if defaults else {})}
    (folder / "catalog.json").write_text(json.dumps(document, indent=2))


OVERRIDES = {
    "preprocessing": {"spacing": [2, 2, 2], "crop_margin": 3},
    "output": {"thresholds": {"TC": 0.4}},
    "postprocessing": {"rules": [{"label": 3, "min_voxels": 10, "max_mean_prob": 0.8, "channel": "ET", "relabel": 1}],
                       "fill_holes": None},
    "inference": {"overlap": 0.25, "blend": "constant", "sw_batch_size": 2},
}


@pytest.fixture
def user_home(tmp_path) -> Path:
    """A user catalog written by hand, as a user or an earlier version wrote it: a bare entry of each task, one
    overriding a setting of every section, and a fine-tuned model's full copy of its base's sections."""
    presets = load_presets()
    full_copy = {key: presets["brats"][key] for key in ("preprocessing", "output", "postprocessing")}
    write_user_catalog(tmp_path, [entry("bare"), entry("ct", "btcv"), entry("tuned", **OVERRIDES),
                                  entry("copied", **full_copy, inference={})], defaults={"brats": "tuned"})
    return tmp_path


def test_a_bare_entry_takes_every_setting_from_its_preset_or_the_defaults(user_home):
    spec = load_catalog(user_home).get("bare")
    assert spec.preprocessing.orientation == "LPS" and spec.preprocessing.spacing is None
    assert spec.preprocessing.intensity == IntensitySpec("zscore_nonzero")
    assert spec.preprocessing.crop_foreground is True and spec.preprocessing.crop_margin == 0
    assert spec.output.activation == "sigmoid" and spec.output.channels == ("TC", "WT", "ET")
    assert spec.output.thresholds == {"TC": 0.6, "WT": 0.5, "ET": 0.6}
    assert spec.output.paint == (PaintStep("WT", 2), PaintStep("TC", 1), PaintStep("ET", 3))
    assert spec.postprocessing.enabled is True
    assert [r.min_voxels for r in spec.postprocessing.rules] == [75, 75, 500]
    assert spec.postprocessing.rules[0] == CleanupRule(label=3, min_voxels=75, max_mean_prob=0.9, channel="ET",
                                                       relabel=1)
    assert spec.postprocessing.fill_holes == HoleFilling(label=3, fill_with=1)
    # no inference section: the engine's defaults, which are also InferenceOptions' own
    assert spec.inference == InferenceSpec() and spec.overlap == DEFAULT_OVERLAP
    assert InferenceOptions.from_spec(spec.inference) == InferenceOptions()


def test_a_ct_entry_gets_the_window_and_the_default_margin(user_home):
    spec = load_catalog(user_home).get("ct")
    assert spec.preprocessing.intensity == IntensitySpec("window", -175.0, 250.0)
    assert spec.preprocessing.spacing == (1.5, 1.5, 2.0)
    assert spec.preprocessing.crop_margin == CROP_MARGIN  # the btcv preset sets none
    assert spec.output.activation == "softmax" and spec.output.expected_out_channels(len(spec.labels)) == 14
    assert spec.postprocessing.enabled is False and spec.postprocessing.rules == ()


def test_entry_settings_override_the_preset_setting_by_setting(user_home):
    spec = load_catalog(user_home).get("tuned")
    assert spec.preprocessing.spacing == (2.0, 2.0, 2.0) and spec.preprocessing.crop_margin == 3
    assert spec.preprocessing.orientation == "LPS"  # not overridden: the preset's
    # a section's override replaces whole settings: the thresholds are the entry's, not merged per channel
    assert spec.output.thresholds == {"TC": 0.4}
    assert spec.output.channels == ("TC", "WT", "ET")
    assert spec.postprocessing.rules == (CleanupRule(3, 10, 0.8, "ET", 1),)
    assert spec.postprocessing.fill_holes is None and spec.postprocessing.enabled is True
    assert (spec.inference.overlap, spec.inference.blend, spec.inference.sw_batch_size) == (0.25, "constant", 2)
    options = InferenceOptions.from_spec(spec.inference, device="cpu", overlap=0.5)
    assert (options.device, options.overlap, options.blend, options.sw_batch_size) == ("cpu", 0.5, "constant", 2)
    assert load_catalog(user_home).default("brats").ref == "tuned@1.0.0"


def test_models_json_prints_each_section_as_the_catalog_holds_it(user_home, capsys):
    assert main(["models", "--home", str(user_home), "--json"]) == 0
    printed = {m["ref"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    presets = load_presets()
    bare, tuned, ct = printed["bare@1.0.0"], printed["tuned@1.0.0"], printed["ct@1.0.0"]
    assert list(bare) == ["id", "version", "ref", "title", "description", "license", "preset", "builtin", "default",
                          "model_card", "architecture", "weights", "inputs", "labels", "preprocessing", "output",
                          "postprocessing", "inference", "provenance", "finetuning"]
    for key in ("preprocessing", "output", "postprocessing"):
        assert bare[key] == presets["brats"][key]  # no default is added to what the catalog says
        assert tuned[key] == {**presets["brats"][key], **OVERRIDES[key]}
    assert bare["inference"] == {} and tuned["inference"] == OVERRIDES["inference"]
    assert "crop_margin" not in ct["preprocessing"]
    assert tuned["preprocessing"]["spacing"] == [2, 2, 2]  # as written (integers), although read as floats


def test_an_entry_copied_from_a_model_reads_back_the_same(user_home):
    """A fine-tuned version's entry copies its base's sections (``to_dict``): the copy means the same."""
    presets = load_presets()
    for ref in ("bare", "tuned", "ct"):
        spec = load_catalog(user_home).get(ref)
        copied = entry("copy", spec.preset, **{key: getattr(spec, key).to_dict() for key in
                                               ("preprocessing", "output", "postprocessing", "inference")})
        again = spec_from_entry(copied, presets, user_home, builtin=False)
        for key in ("preprocessing", "output", "postprocessing", "inference"):
            assert getattr(again, key) == getattr(spec, key)
            assert getattr(again, key).to_dict() == getattr(spec, key).to_dict()
    assert load_catalog(user_home).get("copied").postprocessing == load_catalog(user_home).get("bare").postprocessing


def test_the_builtin_model_reads_its_own_settings_over_its_preset():
    raw = json.loads(BUILTIN_CATALOG.read_text())["models"]
    catalog = load_catalog("/nonexistent-home")
    for written in raw:
        spec = catalog.get(written["id"])
        preset = load_presets()[written["preset"]]
        spacing = written.get("preprocessing", {}).get("spacing", preset["preprocessing"].get("spacing"))
        assert spec.preprocessing.spacing == (tuple(spacing) if spacing else None)
        thresholds = written.get("output", {}).get("thresholds", preset["output"].get("thresholds", {}))
        assert spec.output.thresholds == thresholds
        assert spec.overlap == written.get("inference", {}).get("overlap", DEFAULT_OVERLAP)
        assert spec.to_dict()["inference"] == written.get("inference", {})


@pytest.mark.parametrize(
    ("section", "settings", "message"),
    [
        ("output", {"activation": "relu"}, "output: unknown output activation 'relu'; use sigmoid or softmax"),
        ("output", {"paint": [{"channel": "NCR", "label": 1}]},
         "output: paint step names channel 'NCR', not one of ['TC', 'WT', 'ET']"),
        ("preprocessing", {"intensity": {"kind": "minmax"}}, "preprocessing: unknown intensity normalisation 'minmax'"),
        ("preprocessing", {"intensity": {"kind": "window", "min": 0}}, "window intensity normalisation needs min and"),
        ("preprocessing", {"crop_margin": "wide"}, "preprocessing: invalid setting"),
        ("postprocessing", {"rules": [{"label": 3, "channel": "ET"}]}, "postprocessing: a setting lacks 'min_voxels'"),
    ],
)
def test_a_setting_the_engine_cannot_follow_is_refused_when_the_catalog_is_read(tmp_path, section, settings,
                                                                                 message):
    write_user_catalog(tmp_path, [entry("bad", **{section: settings})])
    with pytest.raises(CatalogError) as err:
        load_catalog(tmp_path)
    assert str(err.value).startswith("model bad: ")
    assert message in str(err.value)


def test_inference_settings_are_checked_by_the_schema_alone(tmp_path):
    schema = json.loads((RESOURCES / "models.schema.json").read_text())
    model = schema["$defs"]["model"]["properties"]
    assert tuple(model["inference"]["properties"]["blend"]["enum"]) == BLENDS
    assert tuple(model["inference"]["properties"]["placement"]["enum"]) == PLACEMENTS
    assert tuple(model["preset"]["enum"]) == PRESET_NAMES
    write_user_catalog(tmp_path, [entry("bad", inference={"blend": "median"})])
    with pytest.raises(CatalogError, match="at models/0/inference/blend: 'median' is not one of"):
        load_catalog(tmp_path)
    write_user_catalog(tmp_path, [entry("bad", inference={"placement": "random"})])
    with pytest.raises(CatalogError, match="at models/0/inference/placement: 'random' is not one of"):
        load_catalog(tmp_path)
    write_user_catalog(tmp_path, [entry("even", inference={"placement": "even"})])
    spec = load_catalog(tmp_path).get("even")
    assert spec.inference.placement == "even" and InferenceOptions.from_spec(spec.inference).placement == "even"
    assert InferenceOptions.from_spec(spec.inference, placement="step").placement == "step"
    assert InferenceSpec().placement == "step"  # an entry without it: MONAI's placement
    # run options given on top of a model's settings are checked where they are made
    with pytest.raises(ConfigError, match="blend must be gaussian or constant, got 'median'"):
        InferenceOptions.from_spec(InferenceSpec(), blend="median")
