"""Fine-tuning on real corrected cases: a new version is registered, the base is untouched, kills are survivable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glims.casestore import add_case
from glims.catalog import load_catalog
from glims.errors import ConfigError, InputError
from glims.fileio import sha256_file
from glims.training.finetune import FinetuneOptions, split_for_finetuning
from glims.progress import parse_protocol_line

from tiny_models import brats_case_paths, coarse_copy, register_tiny_model

REPO = Path(__file__).resolve().parents[2]
KEYS = ("flair", "t1ce", "t1", "t2")
SILVER = {  # case -> (silver label file, relabelling into BraTS 2023 values)
    "tcga_fg_6692": ("TCGA-FG-6692_fusion_simple_silver.nii.gz", {4: 3}),
    "tcga_du_7294": ("TCGA-DU-7294_fusion_simple_silver.nii.gz", {4: 3}),
    "brats_gli_00001": ("BraTS-GLI-00001-000-seg_BraTS23_1_pred_silver.nii.gz", {}),
}


@pytest.fixture(scope="module")
def home(shared_data, tmp_path_factory) -> Path:
    """A user folder with a tiny base model and the three real cases (3 mm copies, silver labels) in the store."""
    home = tmp_path_factory.mktemp("home")
    register_tiny_model(home, "brats", model_id="base")
    for case, (label_name, relabel) in SILVER.items():
        folder = tmp_path_factory.mktemp(case)
        images = coarse_copy(brats_case_paths(shared_data, case), folder)
        label = sitk.Resample(sitk.ReadImage(str(shared_data / "brats" / case / label_name)),
                              sitk.ReadImage(str(images[0])), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        sitk.WriteImage(label, str(folder / "label.nii.gz"))
        add_case("brats", dict(zip(KEYS, images)), folder / "label.nii.gz", case_id=case, home=home,
                 label_map=relabel, provenance={"draft_model": "base@1.0.0"})
    return home


def glims(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "GLIMSSegmenter"), "GLIMS_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "glims", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_leave_one_out_when_few_cases():
    dirs = [Path(f"c{i}") for i in range(4)]
    train, val = split_for_finetuning(dirs, 0.2, seed=1)
    assert len(val) == 1 and sorted(train + val) == dirs
    train, val = split_for_finetuning([Path(f"c{i}") for i in range(10)], 0.2, seed=1)
    assert len(val) == 2
    with pytest.raises(InputError, match="at least 2 corrected cases"):
        split_for_finetuning(dirs[:1], 0.2, seed=1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"keep": "first"}, "keep must be auto, best or last, not 'first'"),
        ({"patience": 0}, "patience must be at least 1 validation (or None: never stop early), not 0"),
        ({"replay_fraction": 1.0}, "replay fraction must be between 0 and 1, not 1.0"),
        ({"lr": -1.0}, "the learning rate must be a positive number, not -1.0"),  # a training rule
        ({"warmup_steps": -2}, "warmup_steps must be at least 0, not -2"),
        ({"epochs": None}, "give a budget: --epochs N and/or --minutes M"),
    ],
)
def test_invalid_finetune_options_are_refused_when_made(settings, message):
    with pytest.raises(ConfigError) as err:
        FinetuneOptions(**{"epochs": 1, **settings})
    assert str(err.value) == message


def test_finetune_options_make_the_training_configuration():
    options = FinetuneOptions(epochs=3, lr=1e-4, trainable="early", replay=None, replay_fraction=5.0)
    config = options.train_config(out_dir="run", cases=("a",), seed=7)
    assert (config.epochs, config.lr, config.min_lr, config.trainable, config.seed) == (3, 1e-4, 5e-6, "early", 7)
    assert config.warmup_steps == 40 and config.steps_per_epoch == 20  # fine-tuning's own defaults
    # resuming without a new budget keeps the run's own (the options need none)
    assert FinetuneOptions(resume=True).train_config(out_dir="", cases=()).epochs == 1


def test_finetune_registers_a_new_version_and_leaves_the_base_untouched(home):
    base = load_catalog(home).get("base")
    base_sha = sha256_file(base.weights[0].path)
    proc = glims(home, "finetune", "-m", "base", "--name", "site-a", "--epochs", "2", "--steps-per-epoch", "2",
                 "--progress", "json", "--threads", "1")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    events = [parse_protocol_line(line) for line in stdout.splitlines()]
    assert all(e is not None for e in events), stdout
    assert events[-1]["type"] == "result" and events[-1]["outputs"]["model"] == "site-a@1.0.0"
    fractions = [e["fraction"] for e in events if e["type"] == "progress"]
    assert fractions == sorted(fractions)
    epochs_done = [e for e in events if e["type"] == "progress" and "done:" in e["message"]]
    assert [e["data"]["epoch"] for e in epochs_done] == [1, 2] and all("loss" in e["data"] for e in epochs_done)

    catalog = load_catalog(home)
    tuned = catalog.get("site-a")
    assert tuned.version == "1.0.0" and not tuned.builtin
    assert tuned.provenance["base_model"] == "base@1.0.0" and len(tuned.provenance["validation_cases"]) == 1
    assert set(tuned.provenance["validation_dice_before"]) == {"TC", "WT", "ET", "mean"}
    # One validation case: the weights at the end of the schedule are registered, whatever that case says.
    assert tuned.provenance["kept"] == "last" and tuned.provenance["kept_epoch"] == 2
    after = tuned.provenance["validation_dice_after"]
    assert {r: after[r] for r in ("TC", "WT", "ET")} == epochs_done[-1]["data"]["val_dice"]
    assert sha256_file(tuned.weights[0].path) == tuned.weights[0].sha256
    assert sha256_file(base.weights[0].path) == base_sha == base.weights[0].sha256
    assert catalog.get("base").version == "1.0.0"


def test_replay_cases_are_mixed_into_training_but_neither_validated_nor_counted_as_site_cases(home, tmp_path):
    from glims.training.finetune import finetune
    from glims.synth import generate_case, write_case

    replay_root = tmp_path / "replay"
    write_case(generate_case(7, (40, 40, 40), 4.0), replay_root, "REPLAY-7")
    options = FinetuneOptions(epochs=1, steps_per_epoch=2, replay=[replay_root], replay_fraction=0.5, device="cpu",
                              threads=1)
    result = finetune("base", "site-r", options, home=home)
    provenance = result.model.provenance
    assert provenance["replay_cases"] == ["REPLAY-7"] and "REPLAY-7" not in provenance["train_cases"]
    assert len(provenance["train_cases"]) == 2 and "REPLAY-7" not in provenance["validation_cases"]
    config = json.loads((result.run_dir / "config.json").read_text())
    # two site cases of weight 1, one replay case weighted to draw half of the windows
    assert config["case_weights"] == [1.0, 1.0, 2.0] and config["cases"][-1].endswith("REPLAY-7")
    # validated with the thresholds the base model segments with
    assert config["val_thresholds"] == load_catalog(home).get("base").output.thresholds
    with pytest.raises(ConfigError, match="between 0 and 1"):
        finetune("base", "site-r", FinetuneOptions(epochs=1, replay=[replay_root], replay_fraction=1.0), home=home)
    stored = Path(config["cases"][0])
    with pytest.raises(ConfigError, match="must not be fine-tuning cases"):
        finetune("base", "site-r", FinetuneOptions(epochs=1, replay=[stored], device="cpu"), home=home)


REPLAY_RECIPE = {"replay": {"synth": {"n": 2, "seed": 3, "shape": [40, 40, 32], "spacing": 4.0}}}


def test_the_base_models_replay_recipe_is_generated_once_and_replayed_by_default(home):
    from glims.training.finetune import finetune
    from glims.training.replay import replay_cases

    register_tiny_model(home, "brats", model_id="base-replay", seed=1, overrides={"finetuning": REPLAY_RECIPE})
    one_epoch = FinetuneOptions(epochs=1, steps_per_epoch=2, device="cpu", threads=1)
    result = finetune("base-replay", "site-auto", one_epoch, home=home)
    provenance = result.model.provenance
    assert provenance["replay_cases"] == ["GLIMS-REPLAY-3-0000", "GLIMS-REPLAY-3-0001"]
    assert len(provenance["train_cases"]) == 2
    assert result.model.finetuning == REPLAY_RECIPE  # a fine-tuned model replays the same domain in turn
    replayed = json.loads((result.run_dir / "replay.json").read_text())["cases"]
    assert all((Path(c) / f"{Path(c).name}_seg.nii.gz").is_file() for c in replayed)
    # generated once: asking again returns the same folders without writing them anew
    stamps = {c: (Path(c) / f"{Path(c).name}_t1ce.nii.gz").stat().st_mtime_ns for c in replayed}
    again = replay_cases(load_catalog(home).get("base-replay"), home)
    assert {str(c): (c / f"{c.name}_t1ce.nii.gz").stat().st_mtime_ns for c in again} == stamps
    # explicitly without replay
    plain = finetune("base-replay", "site-auto", replace(one_epoch, replay=[]), home=home)
    assert plain.model.provenance["replay_cases"] == [] and not (plain.run_dir / "replay.json").exists()


def test_a_cancelled_replay_generation_leaves_nothing_behind(tmp_path):
    from glims.errors import Cancelled
    from glims.progress import CancelToken
    from glims.paths import mark_owned
    from glims.training.replay import _digest, replay_cases, replay_recipe
    from glims.synth import synth_params

    register_tiny_model(tmp_path, "brats", model_id="base-replay", overrides={"finetuning": REPLAY_RECIPE})
    spec = load_catalog(tmp_path).get("base-replay")
    token = CancelToken()
    with pytest.raises(Cancelled):
        replay_cases(spec, tmp_path, progress=lambda event: token.cancel(), cancel=token)  # after the first case
    assert [p.name for p in (tmp_path / "replay").iterdir()] == [".glims-owned"]  # glims's marker only
    # a generation killed outright leaves a partial folder: the next one deletes it once it is an hour old
    digest = _digest(replay_recipe(spec), synth_params(1))
    abandoned, recent = (tmp_path / "replay" / f".{digest}.partial-{pid}" for pid in (1234567, 1234568))
    for folder in (abandoned, recent):
        (folder / "cases").mkdir(parents=True)
        mark_owned(folder)  # as glims marks the folders it creates
    two_hours_ago = time.time() - 7200
    for path in (abandoned, abandoned / "cases"):
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert [c.name for c in replay_cases(spec, tmp_path)] == ["GLIMS-REPLAY-3-0000", "GLIMS-REPLAY-3-0001"]
    assert not abandoned.exists() and recent.exists()  # another generation may still be writing that one


def test_a_replay_recipe_names_its_generator_version(tmp_path):
    from glims.training.replay import replay_cases
    from glims.synth import dataset_case_seed, generate_case, synth_params

    synth = REPLAY_RECIPE["replay"]["synth"]
    for model_id, version in (("unversioned", None), ("v1", 1), ("v2", 2), ("v9", 9)):
        recipe = {"replay": {"synth": {**synth, "n": 1, **({"generator": version} if version else {})}}}
        register_tiny_model(tmp_path, "brats", model_id=model_id, overrides={"finetuning": recipe})
    catalog = load_catalog(tmp_path)
    unversioned, v1, v2 = (replay_cases(catalog.get(m), tmp_path)[0] for m in ("unversioned", "v1", "v2"))
    # a recipe written before versions existed means version 1, and keeps the folder it had then
    assert unversioned == v1 and v2.parent != v1.parent
    shape_zyx = tuple(reversed(synth["shape"]))
    for folder, version in ((v1, 1), (v2, 2)):
        seed = dataset_case_seed(synth["seed"], 0)
        expected = generate_case(seed, shape_zyx, synth["spacing"], synth_params(version))
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{folder.name}_flair.nii.gz")))
        assert np.array_equal(written, expected.images["flair"])
    with pytest.raises(ConfigError, match="generator version 9"):
        replay_cases(catalog.get("v9"), tmp_path)
    assert sorted(p.name for p in (tmp_path / "replay").iterdir() if p.name.startswith(".")) == [".glims-owned"]


def test_a_killed_run_leaves_the_catalog_valid_and_resume_finishes_it(home):
    before = json.loads((home / "models" / "catalog.json").read_text())
    proc = glims(home, "finetune", "-m", "base", "--name", "site-b", "--epochs", "3", "--steps-per-epoch", "2",
                 "--progress", "json", "--threads", "1")
    for line in proc.stdout:
        event = parse_protocol_line(line)
        if event and event["type"] == "progress" and "epoch 1 done" in event["message"]:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    catalog = load_catalog(home)  # still valid
    assert "site-b" not in catalog.ids()
    assert json.loads((home / "models" / "catalog.json").read_text()) == before

    resumed = glims(home, "finetune", "-m", "base", "--name", "site-b", "--epochs", "3", "--resume",
                    "--progress", "json", "--threads", "1")
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    epochs = [parse_protocol_line(line)["data"]["epoch"] for line in stdout.splitlines()
              if "done:" in line and parse_protocol_line(line)]
    assert epochs and epochs[0] >= 2 and epochs[-1] == 3  # continued, did not start over
    assert load_catalog(home).get("site-b").version == "1.0.0"


def test_resume_without_an_interrupted_run_is_a_clear_error(home, capsys):
    from glims.cli import main

    assert main(["finetune", "-m", "base", "--name", "never-ran", "--epochs", "1", "--resume",
                 "--home", str(home), "--progress", "none"]) == 2
    assert "no interrupted fine-tuning run of 'never-ran'" in capsys.readouterr().err
