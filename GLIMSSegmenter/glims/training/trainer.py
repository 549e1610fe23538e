"""A seeded, resumable GLIMS trainer: the authors' recipe scaled to the hardware at hand.

One *epoch* is ``steps_per_epoch`` optimiser steps (default: one pass over the training cases at the batch size),
each on a batch of random windows (``data.sample_patch``) augmented by ``augment.augment_patch``. The loss is the
deep-supervised Dice + cross-entropy of ``loss``; the optimiser AdamW (lr 1e-3, weight decay 1e-5 by default)
with a cosine learning rate that falls from ``lr`` to ``min_lr`` over the planned steps. With a ``minutes``
budget and no ``epochs``, the number of epochs is planned after each epoch from the mean epoch duration so far
and the time left (the machine's load may change), so the schedule ends when the budget does. After each epoch
(every ``val_every``) the model is validated exactly as ``glims segment`` runs it (``glims.inference.predict_logits``
sliding windows on the whole prepared case, the preset's sigmoid thresholds or ``val_thresholds``), and Dice per
region is logged.

Reproducibility: the random draws of epoch ``e`` come from generators seeded by ``(seed, e)`` (numpy for data and
augmentation, torch for initialisation), so a run resumed at an epoch boundary continues exactly as an
uninterrupted run would (on the same hardware and thread count). Cancelling (token or SIGINT/SIGTERM in the CLI)
stops between steps; the last completed epoch stays resumable.

Outputs in ``out_dir``: ``best.safetensors``/``.json`` (the kept weights: best validation mean Dice, or the last
with ``keep="last"``; our checkpoint format, with the training summary in the JSON), ``state.pt`` +
``last-eNNNN.*`` (resume), ``log.jsonl``, ``log.csv``, ``curves.png``, ``config.json`` and ``split.json``.

Options for starting from trained weights: ``trainable`` (update only some layers), ``ema_decay`` (validate and
keep a moving average of the weights), ``keep`` and ``precision`` (bf16 autocast).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..catalog import load_presets
from ..catalog_sections import OutputSpec, PreprocessingSpec
from ..checkpoint import load_checkpoint, load_into_model, save_checkpoint
from ..errors import ConfigError
from ..fileio import write_json
from ..inference import InferenceOptions, predict_logits, resolve_device
from ..jsonfiles import read_json
from ..metrics import dice
from ..network import GLIMS, build
from ..postprocessing import activate
from ..progress import CancelToken, ProgressCallback, StagePlan
from . import distributed
from .augment import AugmentConfig, augment_patch
from .averaging import WeightAverage
from .data import CaseFiles, InputMatcher, LoadedCase, discover_cases, load_case, sample_patch, split_cases
from .history import write_history
from .labels import REGIONS
from .loss import deep_supervision_loss
from .state import STATE_FILE, load_state, save_state
from .trainable import TRAINABLE, select_trainable

__all__ = [
    "TrainConfig",
    "TrainResult",
    "RunState",
    "train",
    "cosine_lr",
    "optimizer_step",
    "training_precision",
    "training_preprocessing",
    "build_model",
    "draw_batch",
    "sampling_weights",
    "torch_seed",
]

logger = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
"""Forward-pass precisions of training (fp16 would need loss scaling; bf16 has float32's range and does not)."""

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "feature_size": 12,
    "img_size": [32, 32, 32],
    "depths": [2, 2, 2, 2],
    "num_heads": [3, 6, 12, 24],
    "window": 7,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``; a resumed run reuses the saved one)."""

    out_dir: str
    cases: tuple[str, ...]
    """Case folders or folders of case folders (see ``data.discover_cases``)."""
    val_cases: tuple[str, ...] = ()
    """Explicit validation cases; when given, ``val_fraction`` is not used."""
    case_weights: tuple[float, ...] = ()
    """Sampling weight of the training cases found under each entry of ``cases`` (one per entry; empty: every case
    equally likely). A window's case is drawn with probability proportional to its entry's weight, e.g. to show
    two real cases as often as twenty synthetic ones."""
    preset: str = "brats"
    architecture: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    spacing: tuple[float, float, float] | None = None
    """Processing voxel size in mm (overrides the preset's; the model's catalog entry must say the same)."""
    label_convention: str = "auto"
    epochs: int | None = None
    minutes: float | None = None
    steps_per_epoch: int | None = None
    batch_size: int = 2
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 0
    """Linear learning-rate warm-up over the first steps (0: none). Fine-tuning needs it: a fresh AdamW moves every
    weight by about ``lr`` in each of its first steps whatever the gradient's size, which wrecks trained weights."""
    weight_decay: float = 1e-5
    trainable: str = "all"
    """Which parameters are updated (``trainable.TRAINABLE``): ``all``, or ``early`` (the intensity-reading layers
    and the normalisations, to adapt a trained model to a new site)."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights with this decay per step (0: off) and validate, keep
    and save the average instead of the raw weights. A handful of cases gives noisy gradients; the average
    follows the trend of the last ~1 / (1 - decay) steps, not the last batch."""
    precision: str = "auto"
    """Forward-pass precision: ``fp32``, ``bf16`` autocast, or ``auto`` (bf16 on a GPU that supports it, else fp32:
    on a 2-core AMD EPYC (Zen 4) CPU bf16 autocast made training slower, docs/BENCHMARKS.md). Weights, optimiser
    and loss stay float32."""
    ce: str = "bce"
    tumour_fraction: float = 0.5
    augment: bool = True
    val_fraction: float = 0.2
    val_every: int = 1
    val_overlap: float = 0.25
    val_thresholds: Mapping[str, float] | None = None
    """Sigmoid thresholds of the validation Dice, per channel (None: the preset's). Fine-tuning passes its base
    model's, so that the Dice it logs is what ``glims segment`` with that model would threshold."""
    early_stop_patience: int | None = None
    """Stop after this many validations without a better mean Dice (None: never)."""
    keep: str = "best"
    """Which weights become ``best.safetensors``: ``best`` (the best validation mean Dice) or ``last`` (those at the
    end of the schedule, validated and logged like the others; no early stopping). A single validation case is
    too noisy a judge to pick among checkpoints: fine-tuning on a few cases keeps the last."""
    init_weights: str | None = None
    """Start from these weights (any format ``glims.checkpoint`` reads); their architecture wins."""
    validate_initial: bool = False
    """Validate the starting weights before training (history row of epoch 0; fine-tuning's "before" Dice). The
    initial weights then count as a candidate for ``best``."""
    seed: int = 25
    device: str = "auto"
    threads: int | None = None
    save_dtype: str = "fp32"
    """Dtype of ``best.safetensors``: ``fp32`` or ``fp16``."""

    def __post_init__(self) -> None:
        if self.epochs is None and self.minutes is None:
            raise ConfigError("give a budget: --epochs N and/or --minutes M")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, not {self.epochs}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ConfigError(f"minutes must be a positive number, not {self.minutes}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"the learning rate must be a positive number, not {self.lr}")
        if not (math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr):
            raise ConfigError(f"the final learning rate must be between 0 and the learning rate, not {self.min_lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight decay must be a non-negative number, not {self.weight_decay}")
        if self.val_every < 1:
            raise ConfigError(f"validate every N epochs needs N of at least 1, not {self.val_every}")
        if not 0 <= self.val_overlap < 1:
            raise ConfigError(f"val_overlap must be in [0, 1), not {self.val_overlap}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, not {self.threads}")
        if self.spacing is not None and not all(math.isfinite(v) and v > 0 for v in self.spacing):
            raise ConfigError(f"spacing must be positive millimetres, not {self.spacing}")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            raise ConfigError(f"early-stopping patience must be at least 1 validation, not {self.early_stop_patience}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), not {self.val_fraction}")
        if self.keep not in ("best", "last"):
            raise ConfigError(f"keep must be best or last, not {self.keep!r}")
        if self.keep == "last" and self.early_stop_patience is not None:
            raise ConfigError("keep=last runs the schedule to its end: it cannot be combined with early stopping")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"trainable must be one of {', '.join(TRAINABLE)}, not {self.trainable!r}")
        if self.precision not in ("auto", *AUTOCAST_DTYPES):
            raise ConfigError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), not {self.ema_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be at least 0, not {self.warmup_steps}")
        if self.batch_size < 1 or (self.steps_per_epoch is not None and self.steps_per_epoch < 1):
            raise ConfigError("batch size and steps per epoch must be at least 1")
        if self.save_dtype not in ("fp32", "fp16"):
            raise ConfigError(f"save_dtype must be fp32 or fp16, not {self.save_dtype!r}")
        if not 0 <= self.tumour_fraction <= 1:
            raise ConfigError(f"tumour_fraction must be in [0, 1], not {self.tumour_fraction}")
        if self.case_weights and len(self.case_weights) != len(self.cases):
            raise ConfigError(
                f"give one case weight per --cases entry ({len(self.cases)}), not {len(self.case_weights)}"
            )
        if any(not (w >= 0 and math.isfinite(w)) for w in self.case_weights) or (
            self.case_weights and not any(self.case_weights)
        ):
            raise ConfigError("case weights must be finite, non-negative and not all zero")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["architecture"] = dict(self.architecture)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        for key in ("cases", "val_cases", "case_weights"):
            values[key] = tuple(values.get(key, ()))
        if values.get("spacing") is not None:
            values["spacing"] = tuple(values["spacing"])
        return cls(**values)


@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Path | None
    best_metric: float | None
    best_epoch: int | None
    epochs_done: int
    steps_done: int
    elapsed_s: float
    history: list[dict[str, Any]]
    stopped_because: str


def cosine_lr(step: int, total_steps: int | None, lr: float, min_lr: float, warmup_steps: int = 0) -> float:
    """Cosine annealing from ``lr`` (step 0) to ``min_lr`` (step ``total_steps``); ``lr`` while the plan is unknown.

    With ``warmup_steps`` the rate of step ``s < warmup_steps`` is further scaled by ``(s + 1) / warmup_steps``.
    """
    ramp = (step + 1) / warmup_steps if step < warmup_steps else 1.0
    if not total_steps:
        return lr * ramp
    progress = min(1.0, step / total_steps)
    return (min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))) * ramp


def training_preprocessing(config: TrainConfig) -> tuple[dict, PreprocessingSpec]:
    """The preset of ``config`` and its preprocessing (with ``config.spacing`` when set); sigmoid presets only."""
    presets = load_presets()
    if config.preset not in presets:
        raise ConfigError(f"unknown preset {config.preset!r}; choose from {', '.join(presets)}")
    preset = presets[config.preset]
    if preset["output"].get("activation") != "sigmoid" or not preset.get("regions"):
        raise ConfigError(f"training is implemented for sigmoid region models (brats); not for {config.preset}")
    preprocessing = dict(preset["preprocessing"])
    if config.spacing is not None:
        preprocessing["spacing"] = list(config.spacing)
    return preset, PreprocessingSpec.from_dict(preprocessing)


def build_model(config: TrainConfig, in_channels: int, out_channels: int) -> tuple[GLIMS, dict]:
    """The network to train (``config.init_weights`` loaded, or ``config.architecture`` freshly initialised from
    torch's current seed) and its architecture as saved in checkpoints."""
    if config.init_weights:
        loaded = load_checkpoint(config.init_weights)
        architecture = dict(loaded.metadata.get("architecture") or {})
        if not architecture:
            from ..checkpoint import infer_architecture

            architecture = infer_architecture(loaded.state_dict)
        net = build(architecture)
        load_into_model(net, loaded.state_dict)
    else:
        arch = {"in_channels": in_channels, "out_channels": out_channels, **config.architecture}
        try:
            net = build(arch)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"invalid architecture: {err}") from None
    if net.config.in_channels != in_channels or net.config.out_channels != out_channels:
        raise ConfigError(
            f"the network takes {net.config.in_channels} inputs and gives {net.config.out_channels} "
            f"outputs; the preset needs {in_channels} and {out_channels}"
        )
    return net, {"name": "GLIMS", **net.config.to_dict()}


def _validate(
    net: GLIMS, cases: Sequence[LoadedCase], preset: Mapping, config: TrainConfig, cancel: CancelToken | None
) -> dict[str, Any]:
    output = OutputSpec.from_dict(preset["output"])
    channels = list(output.channels)
    thresholds = {**output.thresholds, **(config.val_thresholds or {})}
    options = InferenceOptions(device=config.device, overlap=config.val_overlap, sw_batch_size=2)
    per_region: dict[str, list[float]] = {r: [] for r in REGIONS}
    per_case = {}
    net.eval()
    for case in cases:
        logits, _ = predict_logits([net], case.image, net.img_size, options, cancel=cancel)
        probs = activate(logits, "sigmoid")
        scores = {}
        for region in REGIONS:
            index = channels.index(region)
            predicted = probs[index] > float(thresholds.get(region, 0.5))
            scores[region] = dice(predicted, case.target[REGIONS.index(region)].astype(bool))
            per_region[region].append(scores[region])
        per_case[case.case_id] = {k: round(v, 4) for k, v in scores.items()}
    net.train()
    means = {region: float(np.mean(values)) for region, values in per_region.items()}
    return {"dice": means, "mean": float(np.mean(list(means.values()))), "cases": per_case}


def draw_batch(
    cases: Sequence[LoadedCase],
    size: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
    config: TrainConfig,
    weights: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of augmented random windows from ``cases`` (drawn with ``weights``, uniformly when None)."""
    images, targets = [], []
    augment = AugmentConfig() if config.augment else AugmentConfig.none()
    for _ in range(batch_size):
        index = rng.integers(len(cases)) if weights is None else rng.choice(len(cases), p=weights)
        case = cases[int(index)]
        image, target = sample_patch(case, size, rng, config.tumour_fraction)
        image, target = augment_patch(image, target, rng, augment)
        images.append(image)
        targets.append(target)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets))


def training_precision(requested: str, device: torch.device) -> str:
    """The forward-pass precision ``requested`` means on ``device`` (see ``TrainConfig.precision``)."""
    if requested != "auto":
        return requested
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    ce: str = "bce",
    precision: str = "fp32",
) -> torch.Tensor:
    """One training step: deep-supervised loss of ``model`` on the batch, backward, optimiser update.

    ``precision`` ``bf16`` runs the forward pass under autocast on the batch's device (the weights, the
    optimiser and the loss stay float32; bf16 needs no loss scaling). Returns the loss (detached).
    """
    dtype = AUTOCAST_DTYPES[precision]
    with torch.autocast(device_type=images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        outputs = model(images)
    if dtype is not None:
        outputs = outputs.float() if isinstance(outputs, torch.Tensor) else [o.float() for o in outputs]
    loss = deep_supervision_loss(outputs, targets, ce)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def sampling_weights(config: TrainConfig, train_files: Sequence[CaseFiles]) -> np.ndarray | None:
    """Probability of drawing each training case (None: uniform), from the weights of the ``cases`` entries.

    A case belongs to the entry that is its folder or its folder's parent (``discover_cases`` finds no others).
    """
    if not config.case_weights:
        return None
    weight_of = {
        Path(root).resolve(): float(weight) for root, weight in zip(config.cases, config.case_weights, strict=False)
    }

    def weight(case: CaseFiles) -> float:
        folder = case.images[0].parent.resolve()
        return weight_of[folder] if folder in weight_of else weight_of[folder.parent]

    weights = np.array([weight(c) for c in train_files], dtype=np.float64)
    if not weights.sum():
        raise ConfigError("every training case has weight 0 (the weighted ones all went to validation)")
    return weights / weights.sum()


def torch_seed(seed: int, epoch: int, purpose: int = 1) -> int:
    """Torch seed for an epoch's draws (purpose 1) or for the initial weights (purpose 0)."""
    return int(np.random.SeedSequence([seed, epoch, purpose]).generate_state(1, dtype=np.uint32)[0])


def _load_cases(
    files: Sequence[CaseFiles],
    preprocessing: PreprocessingSpec,
    roi: Sequence[int],
    titles: Sequence[str],
    plan: StagePlan,
    offset: int,
    total: int,
    cancel: CancelToken | None,
) -> list[LoadedCase]:
    loaded = []
    for index, case in enumerate(files):
        if cancel is not None:
            cancel.check()
        loaded.append(load_case(case, preprocessing, roi, titles))
        plan.report("load", offset + index + 1, total, f"loaded {case.case_id}")
    return loaded


@dataclass
class RunState:
    """Where a training run stands after an epoch: its counters, schedule horizon, best result and history.

    ``state.pt`` holds these values (with the optimiser, the weight average and the random-number state) under the
    keys it always had, so runs saved by earlier versions resume unchanged.
    """

    epoch: int = 0
    step: int = 0
    planned_epochs: int | None = None
    """Epochs the learning-rate schedule spans (None while a time budget has not planned them yet)."""
    best_metric: float | None = None
    best_epoch: int | None = None
    stale: int = 0
    """Validations since the best one (for early stopping)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before_s: float = 0.0
    """Training time of the run's earlier sessions (a resumed run continues the count)."""

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any], config: TrainConfig) -> RunState:
        """The state of a loaded ``state.pt``; a fixed number of ``config.epochs`` replaces the saved horizon."""
        planned = saved.get("planned_epochs") or config.epochs
        if config.epochs and not config.minutes:
            planned = config.epochs
        return cls(
            epoch=int(saved["epoch"]),
            step=int(saved["step"]),
            planned_epochs=planned,
            best_metric=saved.get("best_metric"),
            best_epoch=saved.get("best_epoch"),
            stale=int(saved.get("stale", 0)),
            history=list(saved["history"]),
            elapsed_before_s=float(saved.get("elapsed_s", 0.0)),
        )


@dataclass
class _Session:
    """What one call of ``train`` works with: the run's configuration, cases, network and optimiser."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    preset: Mapping[str, Any]
    train_files: list[CaseFiles]
    val_files: list[CaseFiles]
    train_cases: list[LoadedCase]
    val_cases: list[LoadedCase]
    sampling: np.ndarray | None
    net: GLIMS
    architecture: dict[str, Any]
    optimizer: torch.optim.Optimizer
    precision: str
    steps_per_epoch: int
    plan: StagePlan
    average: WeightAverage[GLIMS] | None = None

    @property
    def roi(self) -> list[int]:
        return list(self.net.img_size)

    @property
    def judged(self) -> GLIMS:
        """The weights validated and kept: the moving average when there is one, else the trained network."""
        return self.average.model if self.average is not None else self.net

    def split(self) -> dict[str, list[str]]:
        return {"train": [c.case_id for c in self.train_files], "validation": [c.case_id for c in self.val_files]}


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Train (or resume training) a GLIMS model; see the module docstring.

    Args:
        config: the run's configuration; with ``resume`` the configuration saved in ``config.out_dir`` is used
            (the budgets ``epochs``/``minutes``, ``device``, ``threads`` and ``val_every`` of ``config`` replace
            the saved ones: none of them changes the training trajectory).
        resume: continue from ``out_dir/state.pt``.
        progress: receives ``load`` and ``train`` stage events; training events carry ``data`` with ``epoch``,
            ``step``, ``loss``, ``lr`` and, after validation, ``val_dice`` per region and ``eta_s``.
        cancel: checked between steps and between validation windows.

    Raises:
        ConfigError, InputError, CheckpointError, DeviceError, Cancelled.
    """
    run_dir = Path(config.out_dir)
    saved: dict[str, Any] | None = None  # with the weights below: the state of the run resumed
    resumed_weights: dict[str, torch.Tensor] = {}
    if resume:
        saved, resumed_weights = load_state(run_dir)
        config = _resumed_config(config, run_dir)
    elif (run_dir / STATE_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a training run; use --resume or another --out folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    session = _open_session(config, run_dir, saved, progress, cancel)
    if saved is not None:
        run = _restore(session, saved, resumed_weights)
    else:
        run = RunState(planned_epochs=config.epochs)
    session.average = _weight_average(session.net, config, saved)
    if saved is None:
        _start_new_run(session, run, cancel)
    return _train_epochs(session, run, cancel)


def _resumed_config(config: TrainConfig, run_dir: Path) -> TrainConfig:
    """The configuration saved in ``run_dir``, with the settings of ``config`` that may change on resuming."""
    saved = TrainConfig.from_dict(read_json(run_dir / "config.json", "training run configuration", ConfigError))
    return replace(
        saved,
        epochs=config.epochs or saved.epochs,
        minutes=config.minutes,
        device=config.device,
        threads=config.threads,
        val_every=config.val_every,
        out_dir=str(run_dir),
    )


def _open_session(
    config: TrainConfig,
    run_dir: Path,
    saved: Mapping[str, Any] | None,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
) -> _Session:
    """Find and split the cases, build the network (seeded), load the cases and make the optimiser."""
    device = distributed.local_device(resolve_device(config.device))
    preset, preprocessing = training_preprocessing(config)
    matcher = InputMatcher.from_preset(preset)
    titles = [i.title.split(" (")[0] for i in matcher.inputs]

    all_cases = discover_cases(config.cases, matcher, config.label_convention)
    if config.val_cases:
        train_files = all_cases
        val_files = discover_cases(config.val_cases, matcher, config.label_convention)
    else:
        train_files, val_files = split_cases(all_cases, config.val_fraction, config.seed)
    if saved is not None and saved.get("split", {}).get("train") != [c.case_id for c in train_files]:
        raise ConfigError("the cases found now differ from those of the interrupted run; cannot resume exactly")
    sampling = sampling_weights(config, train_files)

    torch.manual_seed(torch_seed(config.seed, 0, purpose=0))
    net, architecture = build_model(config, len(matcher.inputs), len(preset["output"]["channels"]))
    roi = list(net.img_size)
    plan = StagePlan([("load", 1.0), ("train", 20.0)], progress if distributed.is_main_process() else None)
    total_load = len(train_files) + len(val_files)
    train_cases = _load_cases(train_files, preprocessing, roi, titles, plan, 0, total_load, cancel)
    same = [c.case_id for c in val_files] == [c.case_id for c in train_files]
    val_cases = (
        train_cases
        if same
        else _load_cases(val_files, preprocessing, roi, titles, plan, len(train_files), total_load, cancel)
    )
    if same:
        logger.warning("only one case: validating on the training case (a smoke run, not a measurement)")

    net.to(device)
    precision = training_precision(config.precision, device)
    optimizer = torch.optim.AdamW(
        select_trainable(net, config.trainable), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = config.steps_per_epoch or max(1, math.ceil(len(train_cases) / config.batch_size))
    return _Session(
        config,
        run_dir,
        device,
        preset,
        list(train_files),
        list(val_files),
        train_cases,
        val_cases,
        sampling,
        net,
        architecture,
        optimizer,
        precision,
        steps_per_epoch,
        plan,
    )


def _restore(session: _Session, saved: Mapping[str, Any], weights: Mapping[str, torch.Tensor]) -> RunState:
    """Put the network, the optimiser and torch's random-number state back where ``saved`` left them."""
    load_into_model(session.net, weights)
    session.optimizer.load_state_dict(saved["optimizer"])
    run = RunState.from_saved(saved, session.config)
    torch.set_rng_state(saved["torch_rng"])
    logger.info("resuming %s at epoch %d (step %d)", session.run_dir, run.epoch, run.step)
    return run


def _weight_average(net: GLIMS, config: TrainConfig, saved: Mapping[str, Any] | None) -> WeightAverage[GLIMS] | None:
    """The moving average of the weights (``config.ema_decay``), restored from ``saved`` when resuming."""
    if not config.ema_decay:
        return None
    average = WeightAverage(net, config.ema_decay, updates=int(saved["ema_updates"]) if saved is not None else 0)
    if saved is not None:
        average.load_state_dict(saved["ema"])
    return average


def _start_new_run(session: _Session, run: RunState, cancel: CancelToken | None) -> None:
    """Write ``config.json`` and ``split.json``; with ``validate_initial``, validate and keep the starting weights."""
    config = session.config
    if distributed.is_main_process():
        write_json(session.run_dir / "config.json", {**config.to_dict(), "glims_version": __version__})
        write_json(
            session.run_dir / "split.json",
            {
                "train": [c.to_dict() for c in session.train_files],
                "validation": [c.to_dict() for c in session.val_files],
            },
        )

        if config.validate_initial:
            result = _validate(session.judged, session.val_cases, session.preset, config, cancel)
            row = {
                "epoch": 0,
                "step": 0,
                **{f"val_dice_{r}": round(v, 4) for r, v in result["dice"].items()},
                "val_dice_mean": round(result["mean"], 4),
                "val_cases": result["cases"],
            }
            run.history.append(row)
            run.best_metric, run.best_epoch = result["mean"], 0
            _save_best(session, {**row, "train_loss": None})
            session.plan.report(
                "train",
                0,
                (run.planned_epochs or 1) * session.steps_per_epoch,
                f"starting weights: val Dice {row['val_dice_mean']:.3f}",
                epoch=0,
                step=0,
                val_dice={r: row[f"val_dice_{r}"] for r in REGIONS},
            )
    # other ranks take rank 0's starting validation (distributed runs only)
    run.history, run.best_metric, run.best_epoch = distributed.from_main((run.history, run.best_metric, run.best_epoch))


def _train_epochs(session: _Session, run: RunState, cancel: CancelToken | None) -> TrainResult:
    """Epochs until the planned number, the time budget or early stopping; validated and saved after each."""
    config = session.config
    budget_s = config.minutes * 60.0 if config.minutes else None
    session_epochs = 0
    started = time.perf_counter()
    stopped = "epochs"
    model = distributed.wrap_model(session.net, session.device)  # trains; `net` is validated and saved
    session.net.train()
    while True:
        if run.planned_epochs is not None and run.epoch >= run.planned_epochs:
            stopped = "epochs"
            break
        epoch_start = time.perf_counter()
        losses, lr, out_of_time = _train_one_epoch(session, run, model, budget_s, started, cancel)
        run.epoch += 1
        train_s = time.perf_counter() - epoch_start
        row: dict[str, Any] = {
            "epoch": run.epoch,
            "step": run.step,
            "train_loss": round(float(np.mean(losses)), 5),
            "lr": lr,
            "steps": len(losses),
            "train_s": round(train_s, 1),
            "steps_per_s": round(len(losses) / train_s, 4),
        }
        if budget_s is not None and config.epochs is None:
            session_epochs += 1
            used = time.perf_counter() - started
            run.planned_epochs = distributed.from_main(
                run.epoch + int(max(0.0, budget_s - used) // (used / session_epochs))
            )
            logger.info("budget of %.1f min: planning %d epochs", config.minutes, run.planned_epochs)
        last = out_of_time or (run.planned_epochs is not None and run.epoch >= run.planned_epochs)
        if run.epoch % config.val_every == 0 or last:
            row = _validate_epoch(session, run, row, cancel)
        epoch_s = time.perf_counter() - epoch_start
        row["epoch_s"] = round(epoch_s, 1)
        row["elapsed_s"] = round(run.elapsed_before_s + time.perf_counter() - started, 1)
        run.history.append(row)
        if distributed.is_main_process():
            save_state(session.run_dir, session.net, session.architecture, _saved_state(session, run, row))
            write_history(session.run_dir, run.history)
        _report_epoch(session, run, row, epoch_s)
        if out_of_time:
            stopped = "time budget"
            break
        if config.early_stop_patience is not None and run.stale >= config.early_stop_patience:
            stopped = "early stopping"
            break
    distributed.barrier()
    best = session.run_dir / "best.json"
    return TrainResult(
        session.run_dir,
        best if best.is_file() else None,
        run.best_metric,
        run.best_epoch,
        run.epoch,
        run.step,
        run.elapsed_before_s + time.perf_counter() - started,
        run.history,
        stopped,
    )


def _train_one_epoch(
    session: _Session,
    run: RunState,
    model: torch.nn.Module,
    budget_s: float | None,
    started: float,
    cancel: CancelToken | None,
) -> tuple[list[float], float, bool]:
    """The optimiser steps of epoch ``run.epoch`` on its own seeded draws.

    Returns:
        The loss of each step (averaged over ranks), the last learning rate, and whether the time budget ran out.
    """
    config, optimizer, plan, steps_per_epoch = session.config, session.optimizer, session.plan, session.steps_per_epoch
    epoch = run.epoch
    rng = np.random.default_rng(distributed.stream_key(config.seed, epoch))
    torch.manual_seed(torch_seed(config.seed, epoch))
    losses: list[float] = []
    lr = config.lr
    for index in range(steps_per_epoch):
        if cancel is not None:
            cancel.check()
        total_steps = run.planned_epochs * steps_per_epoch if run.planned_epochs else None
        lr = cosine_lr(run.step, total_steps, config.lr, config.min_lr, config.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, targets = draw_batch(session.train_cases, session.roi, config.batch_size, rng, config, session.sampling)
        loss = optimizer_step(
            model, optimizer, images.to(session.device), targets.to(session.device), config.ce, session.precision
        )
        if session.average is not None:
            session.average.update(session.net)
        run.step += 1
        losses.append(distributed.mean_across_ranks(float(loss)))
        plan.report(
            "train",
            run.step,
            total_steps or (epoch + 1) * steps_per_epoch,
            f"epoch {epoch + 1} step {index + 1}/{steps_per_epoch} loss {losses[-1]:.4f}",
            epoch=epoch + 1,
            step=run.step,
            loss=round(losses[-1], 5),
            lr=lr,
        )
        if budget_s is not None and distributed.any_rank(time.perf_counter() - started > budget_s):
            return losses, lr, True
    return losses, lr, False


def _validate_epoch(
    session: _Session, run: RunState, row: dict[str, Any], cancel: CancelToken | None
) -> dict[str, Any]:
    """Validate after an epoch (rank 0), keep the weights when they are the best, and share the result."""
    if distributed.is_main_process():
        val_start = time.perf_counter()
        result = _validate(session.judged, session.val_cases, session.preset, session.config, cancel)
        row.update({f"val_dice_{r}": round(v, 4) for r, v in result["dice"].items()})
        row["val_dice_mean"] = round(result["mean"], 4)
        row["val_cases"] = result["cases"]
        row["val_s"] = round(time.perf_counter() - val_start, 1)
        if run.best_metric is None or result["mean"] > run.best_metric or session.config.keep == "last":
            run.best_metric, run.best_epoch, run.stale = result["mean"], run.epoch, 0
            _save_best(session, row)
        else:
            run.stale += 1
    row, run.best_metric, run.best_epoch, run.stale = distributed.from_main(
        (row, run.best_metric, run.best_epoch, run.stale)
    )
    return row


def _saved_state(session: _Session, run: RunState, row: Mapping[str, Any]) -> dict[str, Any]:
    """What ``state.pt`` holds after an epoch (the keys earlier versions wrote and read)."""
    config, average = session.config, session.average
    return {
        "epoch": run.epoch,
        "step": run.step,
        "planned_epochs": run.planned_epochs,
        "optimizer": session.optimizer.state_dict(),
        "scheduler": {
            "kind": "cosine",
            "base_lr": config.lr,
            "min_lr": config.min_lr,
            "total_steps": (run.planned_epochs or 0) * session.steps_per_epoch,
        },
        "best_metric": run.best_metric,
        "best_epoch": run.best_epoch,
        "stale": run.stale,
        "history": run.history,
        "torch_rng": torch.get_rng_state(),
        "elapsed_s": row["elapsed_s"],
        "split": session.split(),
        **({"ema": average.state_dict(), "ema_updates": average.updates} if average is not None else {}),
    }


def _report_epoch(session: _Session, run: RunState, row: Mapping[str, Any], epoch_s: float) -> None:
    """The end-of-epoch progress event: loss, validation Dice when validated, and the time left."""
    planned = run.planned_epochs or run.epoch
    remaining = (planned - run.epoch) * epoch_s
    validated = "val_dice_mean" in row
    session.plan.report(
        "train",
        run.step,
        planned * session.steps_per_epoch,
        f"epoch {run.epoch} done: loss {row['train_loss']:.4f}"
        + (f", val Dice {row['val_dice_mean']:.3f}" if validated else ""),
        epoch=run.epoch,
        step=run.step,
        loss=row["train_loss"],
        eta_s=round(remaining, 1),
        **({"val_dice": {r: row[f"val_dice_{r}"] for r in REGIONS}} if validated else {}),
    )


def _save_best(session: _Session, row: Mapping) -> None:
    """Keep the judged weights as ``best`` with the training summary of ``row``."""
    config = session.config
    summary = {
        "training": {
            "epoch": row["epoch"],
            "step": row["step"],
            "train_loss": row["train_loss"],
            "val_dice": {r: row[f"val_dice_{r}"] for r in REGIONS},
            "val_dice_mean": row["val_dice_mean"],
            "preset": config.preset,
            "spacing": list(config.spacing) if config.spacing else None,
            "train_cases": session.split()["train"],
            "val_cases": session.split()["validation"],
            "seed": config.seed,
        },
    }
    dtype = torch.float16 if config.save_dtype == "fp16" else None
    save_checkpoint(
        session.run_dir / "best", session.judged.state_dict(), session.architecture, extra=summary, dtype=dtype
    )
