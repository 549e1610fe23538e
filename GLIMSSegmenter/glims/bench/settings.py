"""Target ``settings``: inference settings against the model's catalog default, on real cases, in one run.

For each case, one worker process loads the model once and segments the case through ``glims.pipeline`` (nothing
written) with the catalog's inference settings (the *default*) and with every *variant* (the default with some
``InferenceOptions`` fields changed, e.g. ``overlap=0.25`` or ``precision=bf16,sw_batch_size=8``), in interleaved
rounds (default, variant 1, variant 2, ..., then again), after one untimed warm-up segmentation. It reports per
case and setting the median infer and preprocess times over the rounds and the Dice per BraTS region (TC/WT/ET) of
the setting's label map against the default's: whether a faster setting gives the same answers.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..progress import CancelToken, ProgressCallback, StagePlan
from .machine import load_average, machine_context
from .report import ALLOCATOR_LABELS, BenchReport
from .segment import case_images
from .target import BenchTarget, add_spec_options, spec_from_namespace
from .workers import BenchError, measure_in_subprocess, worker

__all__ = ["SettingsBenchmark", "SettingsSpec", "parse_variant"]

_VARIANT_FIELDS = {
    "overlap": float,
    "blend": str,
    "placement": str,
    "sw_batch_size": int,
    "precision": str,
    "tta": bool,
    "streams": int,
}
"""``InferenceOptions`` fields a variant may change, and how their text becomes a value."""

_REGIONS = ("TC", "WT", "ET")


def parse_variant(text: str) -> dict[str, Any]:
    """``"overlap=0.25,precision=bf16"`` -> ``{"overlap": 0.25, "precision": "bf16"}``.

    Raises:
        ConfigError: an unknown field or a value of the wrong kind.
    """
    changes: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.partition("=")
        name = name.strip().replace("-", "_")
        if name not in _VARIANT_FIELDS or not value.strip():
            raise ConfigError(f"--variant {text!r}: use FIELD=VALUE pairs with FIELD from {', '.join(_VARIANT_FIELDS)}")
        kind = _VARIANT_FIELDS[name]
        try:
            changes[name] = value.strip().lower() in ("1", "true", "yes") if kind is bool else kind(value.strip())
        except ValueError:
            raise ConfigError(f"--variant {text!r}: {name} needs a {kind.__name__}, got {value.strip()!r}") from None
    if not changes:
        raise ConfigError("--variant: empty (use FIELD=VALUE pairs, e.g. overlap=0.25)")
    return changes


def _label(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) if changes else "catalog default"


@worker("settings")
def _settings_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import SimpleITK as sitk
    import torch

    from ..inference import InferenceOptions
    from ..metrics import score_regions
    from ..pipeline import resolve_model, segment_files

    torch.set_num_threads(int(spec["threads"]))
    model = resolve_model(spec["model"], spec["home"])
    default = InferenceOptions.from_spec(model.inference, streams=int(spec["threads"]))
    settings = [{}] + list(spec["variants"])
    options = [dataclasses.replace(default, device="cpu", **changes) for changes in settings]

    def run(opts: InferenceOptions) -> tuple[np.ndarray, dict[str, Any], float]:
        """The setting's label map, its segmentation report and the job's CPU seconds."""
        cpu = time.process_time()
        result = segment_files(model, spec["inputs"], None, options=opts, home=spec["home"])
        return sitk.GetArrayFromImage(result.labels), result.report, time.process_time() - cpu

    run(options[0])  # warm-up: first-call costs are not what the settings differ in
    times: list[dict[str, list[float]]] = [{"infer": [], "preprocess": [], "cpu": []} for _ in settings]
    labels: list[Any] = [None] * len(settings)
    windows: list[int] = [0] * len(settings)
    for _ in range(int(spec["rounds"])):
        for index, opts in enumerate(options):
            array, report, cpu = run(opts)
            labels[index], windows[index] = array, report["options"]["windows"]
            times[index]["infer"].append(report["timings_s"]["infer"])
            times[index]["preprocess"].append(report["timings_s"]["preprocess"])
            times[index]["cpu"].append(cpu)
    spacing = tuple(sitk.ReadImage(spec["inputs"][0]).GetSpacing())[::-1]
    rows = []
    for index, changes in enumerate(settings):
        scores = score_regions(labels[index], labels[0], spacing, ref_convention="brats2023")
        rows.append(
            {
                "setting": _label(changes),
                "options": dataclasses.asdict(options[index]),
                "windows": windows[index],
                "infer_runs": times[index]["infer"],
                "preprocess_runs": times[index]["preprocess"],
                "job_cpu_runs": times[index]["cpu"],
                "dice": {region: scores[region].dice for region in _REGIONS},
                "identical": bool(np.array_equal(labels[index], labels[0])),
            }
        )
    return {"model": model.ref, "rows": rows}


@dataclass(frozen=True)
class SettingsSpec:
    """What a ``settings`` run measures (the defaults are ``glims bench settings``'s)."""

    cases: tuple[Path, ...] = ()
    """BraTS case folders (at least one)."""
    variants: tuple[str, ...] = ("overlap=0.25",)
    """Each a comma-separated list of FIELD=VALUE changes to the catalog's inference settings."""
    model: str | None = None
    """Catalog model; None: the default brats model (the bundled one)."""
    home: Path | None = None
    rounds: int = 3
    threads: int = 2
    allocator: str = "retain"
    timeout: float = 3600


class SettingsBenchmark(BenchTarget[SettingsSpec]):
    """Infer time and agreement of inference settings with the catalog default, per real case."""

    name = "settings"
    help = "time inference settings (overlap, batch, precision) against the model's default and score their agreement"
    spec_type = SettingsSpec

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        d = SettingsSpec
        parser.add_argument(
            "--case", type=Path, action="append", help="BraTS case folder (repeat for several; at least one)"
        )
        parser.add_argument(
            "--variant",
            action="append",
            help="changes to the catalog's inference settings, e.g. overlap=0.25 or precision=bf16,sw_batch_size=8 "
            f"(repeat for several; fields: {', '.join(_VARIANT_FIELDS)}; default {d.variants[0]})",
        )
        add_spec_options(
            parser,
            d,
            {
                "model": "catalog model (default: the default brats model)",
                "home": "glims user folder holding --model",
                "rounds": "timed runs of every setting, interleaved",
                "threads": None,
                "allocator": None,
                "timeout": "seconds per case",
            },
        )

    def spec_from_args(self, args: argparse.Namespace) -> SettingsSpec:
        return spec_from_namespace(
            SettingsSpec,
            args,
            cases=tuple(args.case or ()),
            variants=tuple(args.variant) if args.variant else SettingsSpec.variants,
        )

    def run(
        self, spec: SettingsSpec, *, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> BenchReport:
        if not spec.cases:
            raise ConfigError("--case: give at least one BraTS case folder")
        if spec.rounds < 1:
            raise ConfigError("--rounds must be at least 1")
        variants = [parse_variant(v) for v in spec.variants]
        from ..catalog import load_catalog
        from ..pipeline import assign_inputs

        catalog = load_catalog(spec.home)
        resolved = catalog.get(spec.model) if spec.model else catalog.default("brats")
        model = resolved.ref
        context = machine_context(spec.threads)
        context["allocator"] = ALLOCATOR_LABELS[spec.allocator]
        context["weights"] = resolved.ref
        context["input"] = ", ".join(f"{c.name} (real case)" for c in spec.cases)
        plan = StagePlan([(c.name, 1.0) for c in spec.cases], progress)
        rows: list[dict[str, Any]] = []
        for case in spec.cases:
            if cancel is not None:
                cancel.check()
            plan.report(case.name, 0, 1, f"segmenting {case.name} with {len(variants) + 1} settings")
            inputs = [str(p) for _, p in assign_inputs(resolved, case_images(case))]
            job = {
                "model": model,
                "home": str(spec.home) if spec.home else None,
                "inputs": inputs,
                "variants": variants,
                "rounds": spec.rounds,
                "threads": spec.threads,
                "allocator": spec.allocator,
            }
            try:
                result = measure_in_subprocess("settings", job, timeout=spec.timeout)
            except BenchError as err:
                rows.append({"case": case.name, "setting": "all", "infer": str(err)})
                continue
            rows += [_row(case.name, r) for r in result["rows"]]
            plan.report(case.name, 1, 1, f"{case.name} done")
        context["load_after"] = load_average()
        columns = [
            ("case", "case"),
            ("setting", "setting"),
            ("windows", "windows"),
            ("infer", "infer s (median)"),
            ("infer_runs", "infer runs (s)"),
            ("cpu", "job CPU s (median)"),
            ("preprocess", "preprocess s (median)"),
            ("ratio", "infer × default"),
            ("dice", "Dice vs default (TC/WT/ET)"),
        ]
        _add_ratios(rows)
        notes = [
            "One worker process per case: the model loaded once, one untimed warm-up segmentation with the default "
            f"settings, then {spec.rounds} round(s) of every setting in turn; times are medians over the rounds.",
            "Each run is a whole glims.pipeline segmentation (nothing written); infer is its inference stage, job "
            "CPU the process's CPU time (all threads) for the whole segmentation.",
            "Dice vs default compares each setting's label map with the default's of the same case (agreement, not "
            "accuracy); 'identical' means the label maps are equal voxel for voxel.",
        ]
        return BenchReport("settings", "Inference settings against the catalog default", columns, rows, context, notes)


def _row(case: str, measured: dict[str, Any]) -> dict[str, Any]:
    dice = measured["dice"]
    text = "identical" if measured["identical"] else "/".join(f"{dice[r]:.4f}" for r in _REGIONS)
    return {
        "case": case,
        "setting": measured["setting"],
        "windows": measured["windows"],
        "infer": round(statistics.median(measured["infer_runs"]), 3),
        "infer_runs": " / ".join(f"{t:.2f}" for t in measured["infer_runs"]),
        "cpu": round(statistics.median(measured["job_cpu_runs"]), 2),
        "preprocess": round(statistics.median(measured["preprocess_runs"]), 3),
        "dice": text,
        "dice_regions": dice,
        "options": measured["options"],
    }


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    base: dict[str, float] = {}
    for row in rows:
        if isinstance(row.get("infer"), float) and row["setting"] == "catalog default":
            base[row["case"]] = row["infer"]
    for row in rows:
        if isinstance(row.get("infer"), float) and base.get(row["case"]):
            row["ratio"] = round(row["infer"] / base[row["case"]], 3)
