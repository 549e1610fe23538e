"""Fine-tuning a catalog model on a site's corrected cases, and registering the result as a new model version.

``finetune`` starts from the base model's weights (verified by sha256), holds out validation cases (one case —
leave-one-out — when there are five or fewer, else ``val_fraction``), trains with the same recipe as
``glims.training`` (deep-supervised Dice + CE, AdamW, cosine schedule with warm-up, augmentation), validates the
starting weights first (the "before" Dice) and after every epoch, and registers the kept weights in the user
catalog as ``NAME@<next version>``: the best validation checkpoint (with early stopping) when several cases are
held out, the end of the schedule when one is (see ``keep``). By default a share of the training windows comes
from cases of the base model's own domain (its catalog replay recipe, ``glims.training.replay``), so that
fine-tuning on a few cases does not make it forget what they do not show. The base model and the built-in catalog
are never written to. The run lives in ``<home>/finetune/<NAME>-<version>/``; ``resume=True`` continues
an interrupted run from its last completed epoch. Every write is atomic, so a kill at any moment leaves the
catalog valid. The options are one ``FinetuneOptions``, checked when it is made; the name is checked before any
work, and a run holds the inter-process lock of its name from start to end (``glims.locks``): a second run of the
same name is refused at once.

Under ``torchrun`` every rank trains (``glims.training.distributed``); rank 0 alone picks the run folder, writes
and registers, and the other ranks receive the registered model from it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from ..casestore import list_cases
from ..catalog import Catalog, ModelSpec, load_catalog
from ..errors import CheckpointError, ConfigError, GlimsError, InputError
from ..fileio import atomic_write, sha256_file, write_json
from ..jsonfiles import read_json
from ..locks import catalog_lock, finetune_name_lock
from ..paths import check_name, home_folder, make_owned_dir, remove_owned
from ..progress import CancelToken, ProgressCallback
from ..registry import add_user_entry, check_user_model_id, next_version
from ..runfolders import REGISTERED_FILE, has_state, interrupted_runs, run_folder, runs_folder
from . import distributed
from .data import InputMatcher, discover_cases
from .labels import REGIONS
from .replay import replay_cases
from .trainer import TrainConfig, TrainResult, train

__all__ = ["FinetuneOptions", "FinetuneResult", "finetune", "split_for_finetuning"]

REPLAY_FILE = "replay.json"
FEW_CASES = 5
Keep = Literal["auto", "best", "last"]
"""Which weights a run registers (``FinetuneOptions.keep``)."""
KEEP_CHOICES: tuple[Keep, ...] = get_args(Keep)


@dataclass(frozen=True)
class FinetuneOptions:
    """How ``finetune`` trains: every setting but the base model, the new name and the folder. Checked when made
    (the training configuration's own rules, and fine-tuning's): an invalid option is a ``ConfigError`` before any
    work.

    Raises:
        ConfigError: the first invalid option.
    """

    epochs: int | None = None
    """Epoch budget (with ``minutes``, at least one; none needed to ``resume``)."""
    minutes: float | None = None
    """Wall-time budget."""
    cases: Sequence[str | os.PathLike] | None = None
    """Case folders (or folders of them); None: the training-set store (``glims cases``)."""
    val_fraction: float = 0.2
    """Share of cases held out when there are more than five (else one)."""
    lr: float = 3e-4
    """Peak learning rate (lower than training from scratch)."""
    warmup_steps: int = 40
    """Linear learning-rate warm-up (``TrainConfig.warmup_steps``); without it the first steps of a fresh optimiser
    made the base model worse on every validation case we tried."""
    trainable: str = "all"
    """Which parameters are updated (``TrainConfig.trainable``)."""
    ema_decay: float = 0.0
    """Validate and register a moving average of the weights (``TrainConfig.ema_decay``; 0: off)."""
    precision: str = "auto"
    """Forward-pass precision (``TrainConfig.precision``)."""
    patience: int | None = 8
    """Early stopping after this many validations without improvement (None: never); only when the best
    checkpoint is kept."""
    keep: Keep = "auto"
    """``best`` (best validation Dice), ``last`` (the end of the schedule) or ``auto``: ``last`` when a single case is
    held out for validation — one case is too noisy a judge to pick among checkpoints (docs/FINETUNING.md) — else
    ``best``."""
    replay: Sequence[str | os.PathLike] | str | None = "auto"
    """Labelled cases of the base model's own domain (e.g. its training data) mixed into the training windows, so
    that what the site's few cases do not show is not forgotten; never validated on. ``"auto"``: the cases of the
    base model's replay recipe (``glims.training.replay``; generated once into the user folder), or none when it has
    no recipe; None or ``[]``: no replay."""
    replay_fraction: float = 0.3
    """Share of the training windows drawn from ``replay`` cases."""
    steps_per_epoch: int = 20
    """Optimiser steps between validations (with a handful of cases, one pass over them would be one or two steps:
    too few to measure progress, so an "epoch" here is a fixed number of steps)."""
    device: str = "auto"
    threads: int | None = None
    seed: int = 25
    resume: bool = False
    """Continue the latest interrupted run of the name."""

    def __post_init__(self) -> None:
        if self.keep not in KEEP_CHOICES:
            raise ConfigError(f"keep must be {', '.join(KEEP_CHOICES[:-1])} or {KEEP_CHOICES[-1]}, not {self.keep!r}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(
                f"patience must be at least 1 validation (or None: never stop early), not {self.patience}"
            )
        if self.replay and not 0 < self.replay_fraction < 1:
            raise ConfigError(f"replay fraction must be between 0 and 1, not {self.replay_fraction}")
        self.train_config(out_dir="", cases=(), val_fraction=self.val_fraction)  # the training rules

    def train_config(self, **run: Any) -> TrainConfig:
        """The training configuration of these options, with ``run``'s settings (its folder, cases, ...)."""
        resuming_unchanged = self.resume and not self.epochs and not self.minutes  # the run's own budget
        settings = {
            "lr": self.lr,
            "min_lr": self.lr * 0.05,
            "warmup_steps": self.warmup_steps,
            "trainable": self.trainable,
            "ema_decay": self.ema_decay,
            "precision": self.precision,
            "steps_per_epoch": self.steps_per_epoch,
            "threads": self.threads,
            **({"epochs": 1} if resuming_unchanged else {"epochs": self.epochs, "minutes": self.minutes}),
        }
        return TrainConfig(**{**settings, **run})


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
        raise InputError(
            f"fine-tuning needs at least 2 corrected cases (one is held out for validation); found {len(case_dirs)}"
        )
    order = np.random.default_rng(seed).permutation(len(case_dirs))
    n_val = 1 if len(case_dirs) <= FEW_CASES else max(1, round(len(case_dirs) * val_fraction))
    val = sorted(case_dirs[i] for i in order[:n_val])
    return [c for c in case_dirs if c not in val], val


def _case_dirs(
    spec: ModelSpec, cases: Sequence[str | os.PathLike] | None, home: str | os.PathLike | None
) -> tuple[list[Path], str]:
    if cases is None:
        stored = list_cases(home, spec.preset)
        return [c.folder for c in stored], "brats2023"
    matcher = InputMatcher(spec.inputs, spec.match_priority)
    found = discover_cases(cases, matcher)
    return [Path(c.images[0]).parent for c in found], "auto"


def _replay_cases(
    spec: ModelSpec,
    train_dirs: Sequence[Path],
    replay: Sequence[str | os.PathLike] | str | None,
    fraction: float,
    home: str | os.PathLike | None,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
) -> tuple[list[Path], tuple[float, ...]]:
    """Replay case folders (``"auto"``: those of the base model's recipe, generated by rank 0), and the sampling
    weights of the training then replay folders that give the replay ``fraction`` of the windows (none without
    replay)."""
    if isinstance(replay, str) and replay == "auto":
        replay = distributed.from_main(
            replay_cases(spec, home, progress=progress, cancel=cancel) if distributed.is_main_process() else None
        )
    elif isinstance(replay, (str, os.PathLike)):
        replay = [replay]
    if not replay:
        return [], ()
    replay_dirs, _ = _case_dirs(spec, replay, None)
    overlap = {d.resolve() for d in replay_dirs} & {d.resolve() for d in train_dirs}
    if overlap:
        raise ConfigError(f"replay cases must not be fine-tuning cases: {', '.join(sorted(p.name for p in overlap))}")
    weight = fraction / (1.0 - fraction) * len(train_dirs) / len(replay_dirs)
    return replay_dirs, (1.0,) * len(train_dirs) + (weight,) * len(replay_dirs)


def _run_dir(home: str | os.PathLike | None, name: str, version: str, resume: bool) -> Path:
    root = runs_folder(home, create=True)
    if resume:
        runs = interrupted_runs(name, home)
        if not runs:
            raise ConfigError(f"no interrupted fine-tuning run of {name!r} to resume in {root}")
        return runs[-1]
    run = run_folder(name, version, home)
    if run.exists() and not has_state(run):
        remove_owned(run, home)  # killed before its first epoch ended: nothing to resume
    if run.exists():
        raise ConfigError(f"{run} holds an interrupted run of {name!r}: continue it with --resume")
    return make_owned_dir(run, home)


@contextlib.contextmanager
def _discarded_if_it_never_started(run_dir: Path, home: str | os.PathLike | None, resume: bool) -> Iterator[None]:
    """Within the block, a failure before the first epoch was saved removes the new run folder (rank 0): there is
    nothing in it to resume."""
    try:
        yield
    except BaseException:
        if not resume and distributed.is_main_process() and not has_state(run_dir):
            with contextlib.suppress(OSError, GlimsError):
                remove_owned(run_dir, home)
        raise


def _dice_row(row: Mapping[str, Any]) -> dict[str, float]:
    return {**{r: row[f"val_dice_{r}"] for r in REGIONS}, "mean": row["val_dice_mean"]}


def finetune(
    base: str,
    name: str,
    options: FinetuneOptions,
    *,
    home: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> FinetuneResult:
    """Fine-tune ``base`` on corrected cases and register the kept weights as ``name``'s next version.

    Args:
        base: catalog reference of the starting model.
        name: id of the new model (a new id, or an existing user model's id to add a version).
        options: how to train (``FinetuneOptions``: budget, cases, replay, ...).
        home: the glims home (its catalog, training-set store and run folders).

    Raises:
        CatalogError, ConfigError, InputError, CheckpointError, DeviceError, Cancelled.
    """
    check_name(name, "model name")
    catalog = load_catalog(home)
    spec = catalog.get(base)
    if spec.output.activation != "sigmoid":
        raise ConfigError(f"fine-tuning supports the BraTS (sigmoid TC/WT/ET) models; {spec.ref} is {spec.preset}")
    check_user_model_id(name, catalog)
    weights = spec.weights[0]
    if not weights.path.is_file() or sha256_file(weights.path) != weights.sha256:
        raise CheckpointError(f"weights of {spec.ref} are missing or fail their sha256 check: {weights.path}")
    main = distributed.is_main_process()
    with finetune_name_lock(name, home) if main else contextlib.nullcontext():
        return _finetune_locked(spec, catalog, name, options, home, progress, cancel)


def _finetune_locked(
    spec: ModelSpec,
    catalog: Catalog,
    name: str,
    options: FinetuneOptions,
    home: str | os.PathLike | None,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
) -> FinetuneResult:
    """``finetune`` once the name's lock is held (by rank 0)."""
    weights = spec.weights[0]
    version = next_version(catalog, name)
    resume = options.resume
    run_dir = distributed.from_main(_run_dir(home, name, version, resume) if distributed.is_main_process() else None)
    assert run_dir is not None  # rank 0 made it: every rank has its path
    with _discarded_if_it_never_started(run_dir, home, resume):
        if resume:
            config = TrainConfig.from_dict(
                read_json(run_dir / "config.json", "fine-tuning run configuration", ConfigError)
            )
            config = TrainConfig.from_dict(
                {
                    **config.to_dict(),
                    "epochs": options.epochs or config.epochs,
                    "minutes": options.minutes,
                    "device": options.device,
                    "threads": options.threads,
                }
            )
        else:
            case_dirs, convention = _case_dirs(spec, options.cases, home)
            train_dirs, val_dirs = split_for_finetuning(case_dirs, options.val_fraction, options.seed)
            keep = options.keep
            if keep == "auto":
                keep = "last" if len(val_dirs) == 1 else "best"
            replay_dirs, case_weights = _replay_cases(
                spec, train_dirs, options.replay, options.replay_fraction, home, progress, cancel
            )
            if replay_dirs and distributed.is_main_process():
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json(
                    run_dir / REPLAY_FILE,
                    {"cases": [str(d) for d in replay_dirs], "fraction": options.replay_fraction},
                )
            config = options.train_config(
                out_dir=str(run_dir),
                cases=tuple(map(str, [*train_dirs, *replay_dirs])),
                case_weights=case_weights,
                val_cases=tuple(map(str, val_dirs)),
                val_thresholds=dict(spec.output.thresholds) or None,
                preset=spec.preset,
                architecture={k: v for k, v in spec.architecture.items() if k != "name"},
                spacing=spec.preprocessing.spacing,
                label_convention=convention,
                early_stop_patience=options.patience if keep == "best" else None,
                keep=keep,
                init_weights=str(weights.path),
                validate_initial=True,
                seed=options.seed,
                device=options.device,
            )
        result = train(config, resume=resume, progress=progress, cancel=cancel)
    rows = [r for r in result.history if "val_dice_mean" in r]
    before = _dice_row(next(r for r in rows if r["epoch"] == 0))
    after = _dice_row(next(r for r in rows if r["epoch"] == result.best_epoch))
    model = None
    if distributed.is_main_process():
        model = _register(spec, name, run_dir, result, before, after, config.keep, home)
        write_json(run_dir / REGISTERED_FILE, {"model": model.ref, "before": before, "after": after})
    model = distributed.from_main(model)
    assert model is not None  # rank 0 registered it: every rank has its entry
    return FinetuneResult(model, run_dir, before, after, result)


def _register(
    spec: ModelSpec,
    name: str,
    run_dir: Path,
    result: TrainResult,
    before: Mapping[str, float],
    after: Mapping[str, float],
    kept: str,
    home: str | os.PathLike | None,
) -> ModelSpec:
    """Store the kept weights and add ``name``'s next version (taken under the catalog lock: a model added under
    the same id meanwhile makes this one the version after it)."""
    with catalog_lock(home):
        version = next_version(load_catalog(home), name)
        target = home_folder("models", home, create=True) / f"{name}-{version}.safetensors"
        with open(run_dir / "best.safetensors", "rb") as source, atomic_write(target) as handle:
            shutil.copyfileobj(source, handle)
        return add_user_entry(_entry(spec, name, version, target, run_dir, result, before, after, kept), home)


def _entry(
    spec: ModelSpec,
    name: str,
    version: str,
    target: Path,
    run_dir: Path,
    result: TrainResult,
    before: Mapping[str, float],
    after: Mapping[str, float],
    kept: str,
) -> dict[str, Any]:
    """The user-catalog entry of a fine-tuned model."""
    split = read_json(run_dir / "split.json", "fine-tuning run split", ConfigError)
    replay_file = run_dir / REPLAY_FILE
    replayed = (
        {Path(c).name for c in read_json(replay_file, "fine-tuning replay record", ConfigError)["cases"]}
        if replay_file.is_file()
        else set()
    )
    site_cases = [c["id"] for c in split["train"] if c["id"] not in replayed]
    return {
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
        "inputs": [i.to_dict() for i in spec.inputs],
        "labels": [label.to_dict() for label in spec.labels],
        "preprocessing": spec.preprocessing.to_dict(),
        "output": spec.output.to_dict(),
        "postprocessing": spec.postprocessing.to_dict(),
        "inference": spec.inference.to_dict(),
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
