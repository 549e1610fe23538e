"""Target ``train``: optimiser steps per second of the default training configuration.

Also the same steps with the forward pass under bf16 autocast (`--precision bf16`, the default on GPUs) or with the
weights and batches in channels-last 3D memory (oneDNN's other convolution kernels; not what `glims train` does: it
was slower on two threads, see docs/BENCHMARKS.md). Each runs in its own worker on the same seeded weights and
batches; the first step's loss is compared (same function, weights and batch: equal to float32 rounding, or to
bf16's).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any, TypedDict

from ..errors import ConfigError
from ..progress import CancelToken, ProgressCallback, StagePlan
from .machine import load_average, machine_context, peak_rss_mib, time_calls
from .report import BenchReport
from .target import BenchTarget, add_spec_options, config_keys
from .workers import BenchError, measure_in_subprocess, worker

__all__ = ["TRAIN_CONFIGS", "TrainBenchmark", "TrainSpec"]


class TrainConfig(TypedDict):
    """One configuration ``glims bench train`` times."""

    label: str
    channels_last: bool
    precision: str


TRAIN_CONFIGS: dict[str, TrainConfig] = {
    "default": {"label": "glims train (channel-first, fp32)", "channels_last": False, "precision": "fp32"},
    "channels-last": {"label": "channels-last weights and batches", "channels_last": True, "precision": "fp32"},
    "bf16": {
        "label": "bf16 autocast forward (glims train --precision bf16)",
        "channels_last": False,
        "precision": "bf16",
    },
}


@worker("train")
def _train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from ..network import GLIMS
    from ..training.trainer import DEFAULT_ARCHITECTURE, optimizer_step

    torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(int(spec["seed"]))
    arch = dict(DEFAULT_ARCHITECTURE)
    net = GLIMS(in_channels=4, out_channels=3, **arch).train()
    size = list(arch["img_size"])
    generator = torch.Generator().manual_seed(int(spec["seed"]) + 1)
    batches = [
        (
            torch.randn(int(spec["batch_size"]), 4, *size, generator=generator),
            (torch.rand(int(spec["batch_size"]), 3, *size, generator=generator) > 0.8).float(),
        )
        for _ in range(4)
    ]
    layout = torch.channels_last_3d if spec["channels_last"] else torch.contiguous_format
    net.to(memory_format=layout)  # type: ignore[call-overload]  # accepted at run time; the overloads omit it
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
    losses: list[float] = []

    def step() -> None:
        images, targets = batches[len(losses) % len(batches)]
        losses.append(
            float(
                optimizer_step(
                    net, optimizer, images.contiguous(memory_format=layout), targets, precision=spec["precision"]
                )
            )
        )

    cpu_start = time.process_time()
    times = time_calls(step, int(spec["steps"]), warmup=int(spec["warmup"]))
    return {
        "step_s": statistics.median(times),
        "steps_per_s": len(times) / sum(times),
        "cpu_s_per_step": (time.process_time() - cpu_start) / (len(times) + int(spec["warmup"])),
        "losses": losses,
        "peak_rss_mib": peak_rss_mib(),
    }


@dataclass(frozen=True)
class TrainSpec:
    """What a ``train`` run measures (the defaults are ``glims bench train``'s)."""

    configs: tuple[str, ...] = ("default", "bf16")
    steps: int = 20
    warmup: int = 3
    batch_size: int = 2
    threads: int = 2
    seed: int = 0
    timeout: float = 3600


class TrainBenchmark(BenchTarget[TrainSpec]):
    """Optimiser steps per second of the default training configuration, with bf16 autocast, in channels-last."""

    name = "train"
    help = (
        "time optimiser steps of the default training configuration (feature size 12, batches of 2 windows "
        "of 32^3): fp32 channel-first (what glims train does on the CPU), bf16 autocast, channels-last"
    )
    spec_type = TrainSpec

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_spec_options(
            parser,
            TrainSpec,
            {
                "configs": f"comma-separated from: {', '.join(TRAIN_CONFIGS)}",
                "steps": "timed optimiser steps per configuration",
                "warmup": "untimed steps first",
                "batch_size": None,
                "threads": None,
                "seed": None,
                "timeout": "seconds per worker",
            },
        )

    def run(
        self, spec: TrainSpec, *, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> BenchReport:
        keys = config_keys(spec.configs, TRAIN_CONFIGS)
        if spec.steps < 1 or spec.warmup < 0 or spec.batch_size < 1:
            raise ConfigError("--steps and --batch-size must be at least 1, --warmup at least 0")
        context = machine_context(spec.threads)
        context["input"] = f"{spec.batch_size} windows of 4x32^3 per step (seeded random images and targets)"
        context["weights"] = f"seeded random (seed {spec.seed}), feature size 12, depths 2 2 2 2"
        plan = StagePlan([(k, 1.0) for k in keys], progress)
        results: dict[str, dict[str, Any]] = {}
        for key in keys:
            if cancel is not None:
                cancel.check()
            plan.report(key, 0, 1, f"running {TRAIN_CONFIGS[key]['label']}")
            job = {
                "channels_last": TRAIN_CONFIGS[key]["channels_last"],
                "precision": TRAIN_CONFIGS[key]["precision"],
                "threads": spec.threads,
                "seed": spec.seed,
                "steps": spec.steps,
                "warmup": spec.warmup,
                "batch_size": spec.batch_size,
            }
            try:
                results[key] = measure_in_subprocess("train", job, timeout=spec.timeout)
            except BenchError as err:
                results[key] = {"error": str(err)}
            plan.report(key, 1, 1, "done")
        context["load_after"] = load_average()
        return _train_report(keys, results, context)


def _train_report(keys: list[str], results: dict[str, dict[str, Any]], context: dict[str, Any]) -> BenchReport:
    columns = [
        ("config", "configuration"),
        ("steps_per_s", "steps/s"),
        ("step_s", "step, median (s)"),
        ("speedup", "× default"),
        ("cpu", "CPU s / step"),
        ("rss", "peak RSS MiB"),
        ("loss", "loss, last step"),
        ("diff", "first-step loss diff vs default"),
    ]
    base = results.get("default", {})
    rows = []
    for key in keys:
        result = results[key]
        row: dict[str, Any] = {"config": TRAIN_CONFIGS[key]["label"]}
        if "error" in result:
            row["steps_per_s"] = result["error"]
            rows.append(row)
            continue
        row.update(
            {
                "steps_per_s": result["steps_per_s"],
                "step_s": result["step_s"],
                "cpu": result["cpu_s_per_step"],
                "rss": round(result["peak_rss_mib"]),
                "loss": result["losses"][-1],
            }
        )
        if "steps_per_s" in base:
            row["speedup"] = round(result["steps_per_s"] / base["steps_per_s"], 3)
            row["diff"] = abs(result["losses"][0] - base["losses"][0])
        rows.append(row)
    notes = [
        "Each configuration runs in its own worker process on the same seeded weights and batches: warm-up "
        "steps, then timed steps (AdamW, deep-supervised Dice + BCE, as glims train).",
        "The first (warm-up) step's loss differs between the layouts only by float32 rounding (same function, "
        "same weights and batch), with bf16 autocast by the forward pass's bf16 rounding; later losses drift "
        "apart slowly, as two runs on different thread counts do, "
        "because AdamW's normalised updates amplify rounding differences in near-zero gradients.",
    ]
    return BenchReport("train", "Training steps per second (default configuration)", columns, rows, context, notes)
