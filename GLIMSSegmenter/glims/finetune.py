"""Fine-tuning a catalog model on a site's corrected cases, and registering the result as a new model version.

``finetune`` starts from the base model's weights (verified by sha256), holds out validation cases (one case —
leave-one-out — when there are five or fewer, else ``val_fraction``), trains with the same recipe as
``glims.training`` (deep-supervised Dice + CE, AdamW, cosine schedule with warm-up, augmentation), validates the
starting weights first (the "before" Dice) and after every epoch, and registers the kept weights in the user
catalog as ``NAME@<next version>``: the best validation checkpoint (with early stopping) when several cases are
held out, the end of the schedule when one is (see ``keep``). By default a share of the training windows comes
from cases of the base model's own domain (its catalog replay recipe, ``glims.replay``), so that fine-tuning on a
few cases does not make it forget what they do not show. The base model and the built-in catalog are never
written to. The run lives in ``<home>/finetune/<NAME>-<version>/``; ``resume=True`` continues
an interrupted run from its last completed epoch. Every write is atomic, so a kill at any moment leaves the
catalog valid.

Under ``torchrun`` every rank trains (``glims.training.distributed``); rank 0 alone picks the run folder, writes
and registers, and the other ranks receive the registered model from it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .casestore import list_cases
from .catalog import ModelSpec, add_user_entry, load_catalog, next_version, user_catalog_path, user_home
from .checkpoint import atomic_write, sha256_file, write_json
from .errors import CheckpointError, ConfigError, InputError
from .progress import CancelToken, ProgressCallback
from .replay import replay_cases
from .training import distributed
from .training.data import InputMatcher, discover_cases
from .training.labels import REGIONS
from .training.trainer import TrainConfig, TrainResult, train

__all__ = ["FinetuneResult", "finetune", "split_for_finetuning"]

REGISTERED_FILE = "registered.json"
REPLAY_FILE = "replay.json"
FEW_CASES = 5


@dataclass
class FinetuneResult:
    model: ModelSpec
    """The new user model version."""
    run_dir: Path
    before: dict[str, float]
    """Validation Dice per region (and ``mean``) of the base model."""
    after: dict[str, float]
    """Validation Dice of the registered (best) checkpoint."""
    training: TrainResult


def split_for_finetuning(case_dirs: Sequence[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, validation) folders: leave one case out when there are few, else a seeded ``val_fraction`` split.

    Raises:
        InputError: fewer than two cases.
    """
    if len(case_dirs) < 2:
        raise InputError(f"fine-tuning needs at least 2 corrected cases (one is held out for validation); "
                         f"found {len(case_dirs)}")
    order = np.random.default_rng(seed).permutation(len(case_dirs))
    n_val = 1 if len(case_dirs) <= FEW_CASES else max(1, round(len(case_dirs) * val_fraction))
    val = sorted(case_dirs[i] for i in order[:n_val])
    return [c for c in case_dirs if c not in val], val


def _case_dirs(spec: ModelSpec, cases: Sequence[str | os.PathLike] | None, home) -> tuple[list[Path], str]:
    if cases is None:
        stored = list_cases(home, spec.preset)
        return [c.folder for c in stored], "brats2023"
    matcher = InputMatcher(spec.inputs, spec.match_priority)
    found = discover_cases(list(cases), matcher)
    return [Path(c.images[0]).parent for c in found], "auto"


def _replay_cases(spec: ModelSpec, train_dirs: Sequence[Path], replay: Sequence[str | os.PathLike] | None,
                  fraction: float) -> tuple[list[Path], tuple[float, ...]]:
    """Replay case folders, and the sampling weights of the training then replay folders that give the replay
    ``fraction`` of the windows (none without replay)."""
    if not replay:
        return [], ()
    if not 0 < fraction < 1:
        raise ConfigError(f"replay fraction must be between 0 and 1, not {fraction}")
    replay_dirs, _ = _case_dirs(spec, replay, None)
    overlap = {d.resolve() for d in replay_dirs} & {d.resolve() for d in train_dirs}
    if overlap:
        raise ConfigError(f"replay cases must not be fine-tuning cases: {', '.join(sorted(p.name for p in overlap))}")
    weight = fraction / (1.0 - fraction) * len(train_dirs) / len(replay_dirs)
    return replay_dirs, (1.0,) * len(train_dirs) + (weight,) * len(replay_dirs)


def _run_dir(home, name: str, version: str, resume: bool) -> Path:
    root = user_home(home) / "finetune"
    if resume:
        runs = sorted((p for p in root.glob(f"{name}-*") if (p / "state.pt").is_file()
                       and not (p / REGISTERED_FILE).is_file()), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise ConfigError(f"no interrupted fine-tuning run of {name!r} to resume in {root}")
        return runs[-1]
    run = root / f"{name}-{version}"
    if run.exists() and not (run / "state.pt").is_file():
        shutil.rmtree(run)  # killed before its first epoch ended: nothing to resume
    if run.exists():
        raise ConfigError(f"{run} holds an interrupted run of {name!r}: continue it with --resume")
    return run


def _dice_row(row: Mapping[str, Any]) -> dict[str, float]:
    return {**{r: row[f"val_dice_{r}"] for r in REGIONS}, "mean": row["val_dice_mean"]}


def finetune(
    base: str,
    name: str,
    *,
    cases: Sequence[str | os.PathLike] | None = None,
    epochs: int | None = None,
    minutes: float | None = None,
    val_fraction: float = 0.2,
    lr: float = 3e-4,
    warmup_steps: int = 40,
    trainable: str = "all",
    ema_decay: float = 0.0,
    precision: str = "auto",
    patience: int | None = 8,
    keep: str = "auto",
    replay: Sequence[str | os.PathLike] | str | None = "auto",
    replay_fraction: float = 0.3,
    steps_per_epoch: int = 20,
    device: str = "auto",
    threads: int | None = None,
    seed: int = 25,
    home: str | os.PathLike | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> FinetuneResult:
    """Fine-tune ``base`` on corrected cases and register the best weights as ``name``'s next version.

    Args:
        base: catalog reference of the starting model.
        name: id of the new model (a new id, or an existing user model's id to add a version).
        cases: case folders (or folders of them); default: the training-set store (``glims cases``).
        epochs, minutes: budget (at least one).
        val_fraction: share of cases held out when there are more than five.
        lr: peak learning rate (lower than training from scratch).
        warmup_steps: linear learning-rate warm-up (see ``TrainConfig.warmup_steps``); without it the first steps
            of a fresh optimiser made the base model worse on every validation case we tried.
        trainable: which parameters are updated (``TrainConfig.trainable``).
        ema_decay: validate and register a moving average of the weights (``TrainConfig.ema_decay``; 0: off).
        precision: forward-pass precision (``TrainConfig.precision``).
        patience: early stopping after this many validations without improvement (None: never); only when the
            best checkpoint is kept.
        keep: ``best`` (best validation Dice), ``last`` (the end of the schedule) or ``auto``: ``last`` when a
            single case is held out for validation — one case is too noisy a judge to pick among checkpoints
            (docs/FINETUNING.md) — else ``best``.
        replay: labelled cases of the base model's own domain (e.g. its training data) to mix into the training
            windows, so that what the site's few cases do not show is not forgotten; never validated on.
            ``"auto"``: the cases of the base model's replay recipe (``glims.replay``; generated once into the
            user folder), or none when it has no recipe; None or ``[]``: no replay.
        replay_fraction: share of the training windows drawn from ``replay`` cases.
        steps_per_epoch: optimiser steps between validations (with a handful of cases, one pass over them would be
            one or two steps: too few to measure progress, so an "epoch" here is a fixed number of steps).
        resume: continue the latest interrupted run of ``name``.

    Raises:
        CatalogError, ConfigError, InputError, CheckpointError, DeviceError, Cancelled.
    """
    catalog = load_catalog(home)
    spec = catalog.get(base)
    if spec.output.get("activation") != "sigmoid":
        raise ConfigError(f"fine-tuning supports the BraTS (sigmoid TC/WT/ET) models; {spec.ref} is {spec.preset}")
    if name in {m.id for m in catalog.models if m.builtin}:
        raise ConfigError(f"{name} is a built-in model id; choose a new name for the fine-tuned model")
    weights = spec.weights[0]
    if not weights.path.is_file() or sha256_file(weights.path) != weights.sha256:
        raise CheckpointError(f"weights of {spec.ref} are missing or fail their sha256 check: {weights.path}")
    version = next_version(catalog, name)
    run_dir = distributed.from_main(_run_dir(home, name, version, resume) if distributed.is_main_process() else None)
    if resume:
        config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        config = TrainConfig.from_dict({**config.to_dict(), "epochs": epochs or config.epochs,
                                        "minutes": minutes, "device": device, "threads": threads})
    else:
        case_dirs, convention = _case_dirs(spec, cases, home)
        train_dirs, val_dirs = split_for_finetuning(case_dirs, val_fraction, seed)
        if keep not in ("auto", "best", "last"):
            raise ConfigError(f"keep must be auto, best or last, not {keep!r}")
        if keep == "auto":
            keep = "last" if len(val_dirs) == 1 else "best"
        if isinstance(replay, str) and replay == "auto":
            replay = distributed.from_main(
                replay_cases(spec, home, progress=progress, cancel=cancel) if distributed.is_main_process() else None)
        elif isinstance(replay, (str, os.PathLike)):
            replay = [replay]
        replay_dirs, case_weights = _replay_cases(spec, train_dirs, replay, replay_fraction)
        if replay_dirs and distributed.is_main_process():
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            write_json(Path(run_dir) / REPLAY_FILE, {"cases": [str(d) for d in replay_dirs],
                                                     "fraction": replay_fraction})
        config = TrainConfig(
            out_dir=str(run_dir), cases=tuple(map(str, [*train_dirs, *replay_dirs])), case_weights=case_weights,
            val_cases=tuple(map(str, val_dirs)),
            preset=spec.preset, architecture={k: v for k, v in spec.architecture.items() if k != "name"},
            spacing=tuple(spec.preprocessing["spacing"]) if spec.preprocessing.get("spacing") else None,
            label_convention=convention, epochs=epochs, minutes=minutes, steps_per_epoch=steps_per_epoch,
            lr=lr, min_lr=lr * 0.05, warmup_steps=warmup_steps, trainable=trainable,
            ema_decay=ema_decay, precision=precision,
            early_stop_patience=patience if keep == "best" else None, keep=keep, init_weights=str(weights.path),
            validate_initial=True, seed=seed, device=device, threads=threads,
        )
    result = train(config, resume=resume, progress=progress, cancel=cancel)
    rows = [r for r in result.history if "val_dice_mean" in r]
    before = _dice_row(next(r for r in rows if r["epoch"] == 0))
    after = _dice_row(next(r for r in rows if r["epoch"] == result.best_epoch))
    model = None
    if distributed.is_main_process():
        model = _register(spec, name, version, run_dir, result, before, after, config.keep, home)
        write_json(run_dir / REGISTERED_FILE, {"model": model.ref, "before": before, "after": after})
    model = distributed.from_main(model)
    return FinetuneResult(model, run_dir, before, after, result)


def _register(spec: ModelSpec, name: str, version: str, run_dir: Path, result: TrainResult,
              before: Mapping[str, float], after: Mapping[str, float], kept: str, home) -> ModelSpec:
    models_dir = user_catalog_path(home).parent
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f"{name}-{version}.safetensors"
    with open(run_dir / "best.safetensors", "rb") as source, atomic_write(target) as handle:
        shutil.copyfileobj(source, handle)
    split = json.loads((run_dir / "split.json").read_text())
    replay_file = run_dir / REPLAY_FILE
    replayed = {Path(c).name for c in json.loads(replay_file.read_text())["cases"]} if replay_file.is_file() else set()
    site_cases = [c["id"] for c in split["train"] if c["id"] not in replayed]
    entry = {
        "id": name,
        "version": version,
        "title": f"{spec.title} — fine-tuned ({name})",
        "description": f"{spec.ref} fine-tuned on {len(site_cases)} local corrected case(s); validation "
                       f"Dice (mean TC/WT/ET) {before['mean']:.3f} -> {after['mean']:.3f} on "
                       f"{len(split['validation'])} held-out case(s).",
        "license": f"Derived from {spec.ref} ({spec.license}); fine-tuned on local data: check your data's terms "
                   "before sharing.",
        "preset": spec.preset,
        "architecture": dict(spec.architecture),
        "weights": [{"file": target.name, "sha256": sha256_file(target)}],
        "inputs": [{"key": i.key, "title": i.title, "patterns": list(i.patterns)} for i in spec.inputs],
        "labels": [{"value": lab.value, "name": lab.name, "color": list(lab.color),
                    "terminology": {k: list(v) for k, v in lab.terminology.items()}} for lab in spec.labels],
        "preprocessing": dict(spec.preprocessing),
        "output": dict(spec.output),
        "postprocessing": dict(spec.postprocessing),
        "inference": dict(spec.inference),
        "finetuning": dict(spec.finetuning),
        "provenance": {
            "base_model": spec.ref,
            "base_sha256": spec.weights[0].sha256,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "train_cases": site_cases,
            "replay_cases": sorted(c["id"] for c in split["train"] if c["id"] in replayed),
            "validation_cases": [c["id"] for c in split["validation"]],
            "validation_dice_before": dict(before),
            "validation_dice_after": dict(after),
            "kept": kept,
            "kept_epoch": result.best_epoch,
            "epochs": result.epochs_done,
            "stopped_because": result.stopped_because,
            "run_dir": str(run_dir),
        },
    }
    return add_user_entry(entry, home)
