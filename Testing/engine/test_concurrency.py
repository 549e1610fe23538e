"""Several glims processes on one glims home at once (real, concurrent processes): the user catalog keeps every
model added, the case store keeps one case per id, and a second fine-tuning of the same name is refused at its
start (docs/ERRORS.md, "Data safety" rows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glims.catalog import load_catalog
from glims.fileio import sha256_file
from glims.locks import finetune_name_lock

from tiny_models import register_tiny_model

REPO = Path(__file__).resolve().parents[2]
KEYS = ("flair", "t1ce", "t1", "t2")


def start(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "GLIMSSegmenter"), "GLIMS_HOME": str(home),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "glims", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def finish(processes: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    return [(p.returncode, *p.communicate(timeout=600)) for p in processes]


def test_concurrent_models_add_keeps_every_entry(tmp_path):
    source = tmp_path / "source"
    weights = register_tiny_model(source, "brats", model_id="tiny").weights[0].path
    home = tmp_path / "home"
    ids = ["site-a", "site-a", "site-b", "site-b"]
    # all four start before any finishes: each spends seconds importing torch and checking the weights
    processes = [start(home, "models", "add", str(weights), "--id", model_id, "--preset", "brats") for model_id in ids]
    outcomes = finish(processes)
    outcomes = [(p.returncode, out, err) for p, (_, out, err) in zip(processes, outcomes)]
    assert all(code == 0 for code, _, _ in outcomes), outcomes
    assert all("registered" in out for _, out, _ in outcomes)
    catalog = load_catalog(home)
    refs = sorted(m.ref for m in catalog.models if not m.builtin)
    assert refs == ["site-a@1.0.0", "site-a@1.1.0", "site-b@1.0.0", "site-b@1.1.0"]
    for spec in (m for m in catalog.models if not m.builtin):
        assert sha256_file(spec.weights[0].path) == spec.weights[0].sha256


def _case_files(folder: Path) -> tuple[list[Path], Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    images = []
    for key in KEYS:
        array = rng.uniform(100, 500, (24, 24, 24)).astype(np.float32)
        images.append(folder / f"{key}.nii.gz")
        sitk.WriteImage(sitk.GetImageFromArray(array), str(images[-1]))
    label = np.zeros((24, 24, 24), np.uint8)
    label[8:16, 8:16, 8:16] = 2
    sitk.WriteImage(sitk.GetImageFromArray(label), str(folder / "label.nii.gz"))
    return images, folder / "label.nii.gz"


def test_concurrent_cases_add_of_one_id_stores_one_case_and_refuses_the_others_in_one_line(tmp_path):
    home = tmp_path / "home"
    images, label = _case_files(tmp_path / "case")
    inputs = sum((["-i", f"{key}={path}"] for key, path in zip(KEYS, images)), [])
    processes = [start(home, "cases", "add", *inputs, "-l", str(label), "--id", "same") for _ in range(3)]
    outcomes = [(p.returncode, out, err) for p, (_, out, err) in zip(processes, finish(processes))]
    assert sorted(code for code, _, _ in outcomes) == [0, 3, 3], outcomes
    for code, _, err in outcomes:
        if code:
            assert err.strip().splitlines() == ["glims: error: a case called 'same' is already in the training set"]
    folders = sorted(p.name for p in (home / "cases").iterdir())
    assert [name for name in folders if not name.startswith(".")] == ["same"]
    assert [name for name in folders if name.startswith(".") and name != ".cases.lock"] == [".glims-owned"]


def test_a_second_finetune_of_the_same_name_is_refused_at_start(tmp_path):
    home = tmp_path / "home"
    register_tiny_model(home, "brats", model_id="base")
    with finetune_name_lock("site", home):  # this process is fine-tuning "site"
        second = start(home, "finetune", "-m", "base", "--name", "site", "--epochs", "50", "--progress", "none")
        code, out, err = (second.wait(timeout=600), *second.communicate())
        other = start(home, "finetune", "-m", "base", "--name", "other", "--epochs", "1", "--progress", "none",
                      "--cases", str(tmp_path / "no-cases"))
        other_code, _, other_err = (other.wait(timeout=600), *other.communicate())
    assert code == 2, err
    assert err.strip().splitlines() == ["glims: error: another `glims finetune --name site` is running; wait for it "
                                        "to end or choose another name"]
    runs = home / "finetune"
    assert [p.name for p in runs.iterdir() if not p.name.startswith(".")] == []  # no run folder, no training
    # other names are not blocked (this one stops at once for want of cases; its new run folder goes with it)
    assert "no-cases" in other_err and other_code == 3, other_err
    # the lock is the process's: once it ends, the name is free again
    third = start(home, "finetune", "-m", "base", "--name", "site", "--epochs", "1", "--progress", "none",
                  "--cases", str(tmp_path / "no-cases"))
    third_code, _, third_err = (third.wait(timeout=600), *third.communicate())
    assert "no-cases" in third_err and third_code == 3, third_err


def test_two_real_finetune_runs_of_one_name_the_second_refused_while_the_first_trains(tmp_path):
    import signal

    from glims.cli import main
    from glims.progress import parse_protocol_line

    home = tmp_path / "home"
    register_tiny_model(home, "brats", model_id="base")
    assert main(["synth", "--out", str(tmp_path / "cases"), "--n", "2", "--shape", "32", "32", "32"]) == 0
    first = start(home, "finetune", "-m", "base", "--name", "site", "--minutes", "30", "--steps-per-epoch", "1",
                  "--no-replay", "--cases", str(tmp_path / "cases"), "--progress", "json", "--threads", "1")
    for line in first.stdout:  # the first run is under way (it holds the name's lock from its start)
        event = parse_protocol_line(line)
        if event and event["type"] == "progress":
            break
    second = start(home, "finetune", "-m", "base", "--name", "site", "--epochs", "1", "--no-replay",
                   "--cases", str(tmp_path / "cases"), "--progress", "none")
    _, second_err = second.communicate(timeout=600)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=600)
    assert second.returncode == 2 and "another `glims finetune --name site` is running" in second_err, second_err
    assert first.returncode == 130
    assert "site" not in load_catalog(home).ids()
