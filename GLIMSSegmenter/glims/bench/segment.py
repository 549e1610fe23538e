"""Target ``segment``: a whole case through ``glims.pipeline``, ours against the reference pipeline.

Each configuration runs in its own worker process (peak RSS of each is its own) on the same case and model:
"default" is what `glims segment` does (foreground crop, the CPU fast path, the catalog's overlap and window
placement); "reference" is the slow baseline of issue 7 (overlap 0.5 with MONAI's step placement, fp32, no
cropping, the network's reference path); "uncropped" is `glims segment --no-crop --placement step`: the fast path
with the reference's windows, which separates what the fast path changes (nothing beyond float rounding) from what
the crop and the model's own window placement change. Per-stage wall times, peak RSS,
the time ratio and each configuration's agreement with the reference (Dice per BraTS region) are reported.
The case is a BraTS case folder (--case) or a synthetic 240x240x155 case; the model a catalog model (--model) or
a seeded random full-size GLIMS (timings only: with random weights the Dice column means nothing).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from ..catalog_sections import Placement
from ..errors import ConfigError
from ..progress import CancelToken, ProgressCallback, StagePlan
from .machine import bench_device, load_average, machine_context, peak_device_mib, peak_rss_mib
from .report import ALLOCATOR_LABELS, BenchReport
from .target import BenchTarget, add_spec_options, config_keys
from .workers import BenchError, measure_in_subprocess, worker

__all__ = ["SEGMENT_CONFIGS", "SEGMENT_STAGES", "SegmentBenchmark", "SegmentSpec", "random_full_size_model"]

SEGMENT_STAGES = ("load", "preprocess", "infer", "postprocess", "write")


class SegmentConfig(TypedDict):
    """One configuration ``glims bench segment`` times: how its worker runs ``segment_files``."""

    label: str
    crop: bool | None
    """None: the model's default."""
    fast_path: bool
    overlap: float | None
    """None: the model's default."""
    placement: Placement | None
    """None: the model's default."""


SEGMENT_CONFIGS: dict[str, SegmentConfig] = {
    "default": {
        "label": "glims segment (default: crop, fast path)",
        "crop": None,
        "fast_path": True,
        "overlap": None,
        "placement": None,
    },
    "reference": {
        "label": "reference pipeline (overlap 0.5, step placement, fp32, no crop, reference path)",
        "crop": False,
        "fast_path": False,
        "overlap": 0.5,
        "placement": "step",
    },
    "uncropped": {
        "label": "glims segment --no-crop --placement step (fast path, the reference's windows)",
        "crop": False,
        "fast_path": True,
        "overlap": None,
        "placement": "step",
    },
}


@worker("segment")
def _segment_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from ..inference import InferenceOptions
    from ..pipeline import resolve_model, segment_files

    torch.set_num_threads(int(spec["threads"]))
    model = resolve_model(spec["model"], spec["home"])
    options = InferenceOptions.from_spec(
        model.inference,
        device=spec["device"],
        overlap=spec["overlap"],
        placement=spec["placement"],
        sw_batch_size=spec["sw_batch_size"] or None,
        precision=spec["precision"],
        fast_path=bool(spec["fast_path"]),
        streams=int(spec["threads"]),
    )
    result = segment_files(
        model, spec["inputs"], None, labelmap=spec["labelmap"], options=options, crop=spec["crop"], home=spec["home"]
    )
    return {
        "timings_s": result.report["timings_s"],
        "peak_rss_mib": peak_rss_mib(),
        "model": model.ref,
        "overlap": options.overlap,
        "placement": options.placement,
        "precision": options.precision,
        "sw_batch_size": options.sw_batch_size,
        "peak_device_mib": peak_device_mib(torch.device(spec["device"])),
    }


def case_images(folder: Path) -> list[str]:
    """The image files of a case folder, label maps and algorithm outputs left out."""
    import re

    if not folder.is_dir():
        raise ConfigError(f"--case: no such folder: {folder}")
    labels = re.compile(r"seg|label|silver|fusion|pred|truth|(^|[-_.])gt([-_.]|$)", re.IGNORECASE)
    suffixes = (".nii.gz", ".nii", ".nrrd", ".mha")
    return [
        str(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name.lower().endswith(suffixes) and not labels.search(p.name)
    ]


def synthetic_case(folder: Path, seed: int) -> list[Path]:
    from ..synth import MODALITIES, generate_case, write_case

    files = write_case(generate_case(seed, shape=(155, 240, 240)), folder, f"GLIMS-SYN-BENCH-{seed}")
    return [files[m] for m in MODALITIES]


def random_full_size_model(home: Path, seed: int) -> str:
    """Register a full-size GLIMS with seeded random weights in ``home`` (timings only) and return its reference."""
    import torch

    from ..checkpoint import save_checkpoint
    from ..network import GLIMS
    from ..registry import register_model

    torch.manual_seed(seed)
    net = GLIMS()
    meta = save_checkpoint(home / "random-full", net.state_dict(), {"name": "GLIMS", **net.config.to_dict()})
    return register_model(meta, "glims-random-full", "brats", home=home, license_text="random weights").ref


@dataclass(frozen=True)
class SegmentSpec:
    """What a ``segment`` run measures (the defaults are ``glims bench segment``'s)."""

    case: Path | None = None
    """BraTS case folder; None: a synthetic 240x240x155 case."""
    model: str | None = None
    """Catalog model; None: a seeded random full-size GLIMS."""
    home: Path | None = None
    configs: tuple[str, ...] = ("default", "reference")
    precision: str = "fp32"
    device: str = "cpu"
    sw_batch_size: int | None = None
    label: Path | None = None
    label_convention: str = "brats2023"
    threads: int = 2
    allocator: str = "retain"
    seed: int = 0
    timeout: float = 7200


class SegmentBenchmark(BenchTarget[SegmentSpec]):
    """Whole-case wall time per stage and peak memory: default pipeline vs the reference pipeline."""

    name = "segment"
    help = "time a whole case through glims segment, against the slow reference pipeline (overlap 0.5, no crop)"
    spec_type = SegmentSpec

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_spec_options(
            parser,
            SegmentSpec,
            {
                "case": "BraTS case folder (default: a synthetic 240x240x155 case)",
                "model": "catalog model (default: seeded random full-size GLIMS)",
                "home": "glims user folder holding --model",
                "configs": "comma-separated from: default, reference, uncropped (--no-crop)",
                "precision": "of the default config (fp16: GPUs only)",
                "device": "cpu (default), cuda or cuda:N: where every config runs",
                "sw_batch_size": "windows per forward in every config (default: the model's catalog setting)",
                "label": "reference label of --case: also score every configuration against it (accuracy)",
                "label_convention": "of --label: brats2023 (ET=3), brats2017 (ET=4) or brats2013",
                "threads": None,
                "allocator": "of every worker; default retain, what the glims command line does",
                "seed": None,
                "timeout": "seconds per worker",
            },
        )

    def run(
        self, spec: SegmentSpec, *, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> BenchReport:
        keys = config_keys(spec.configs, SEGMENT_CONFIGS)
        if spec.label and not spec.label.is_file():
            raise ConfigError(f"--label: no such file: {spec.label}")
        if spec.sw_batch_size is not None and spec.sw_batch_size < 1:
            raise ConfigError("--sw-batch-size must be at least 1")
        device = bench_device(spec.device, spec.precision)
        context = machine_context(spec.threads)
        context.update(device)
        context["allocator"] = ALLOCATOR_LABELS[spec.allocator]
        plan = StagePlan([("prepare", 1.0)] + [(k, 10.0) for k in keys], progress)
        with tempfile.TemporaryDirectory(prefix="glims-bench-segment-") as tmp:
            tmp_path = Path(tmp)
            home = spec.home if spec.home else tmp_path / "home"
            plan.report("prepare", 0, 1, "preparing the case and the model")
            model, inputs = _prepare(spec, home, tmp_path, context)
            results: dict[str, dict[str, Any]] = {}
            for key in keys:
                if cancel is not None:
                    cancel.check()
                config = SEGMENT_CONFIGS[key]
                plan.report(key, 0, 1, f"running {config['label']}")
                job = {
                    "model": model,
                    "home": str(home),
                    "inputs": inputs,
                    "threads": spec.threads,
                    "overlap": config["overlap"],
                    "placement": config["placement"],
                    "crop": config["crop"],
                    "fast_path": config["fast_path"],
                    "precision": spec.precision if key == "default" else "fp32",
                    "allocator": spec.allocator,
                    "device": device["device_name"],
                    "sw_batch_size": spec.sw_batch_size,
                    "labelmap": str(tmp_path / f"{key}.nii.gz"),
                }
                try:
                    results[key] = measure_in_subprocess("segment", job, timeout=spec.timeout)
                except BenchError as err:
                    results[key] = {"error": str(err)}
                plan.report(key, 1, 1, f"{config['label']} done")
            labels = {k: _read_label(tmp_path / f"{k}.nii.gz") for k in keys if "error" not in results[k]}
            agreement = {}
            if "reference" in labels:
                agreement = _dice_against({k: v for k, v in labels.items() if k != "reference"}, labels["reference"])
            accuracy = {}
            if spec.label:
                accuracy = _dice_against(labels, _read_label(spec.label), spec.label_convention)
        if spec.label:
            context["label"] = f"{spec.label.name} ({spec.label_convention})"
        context["load_after"] = load_average()
        return _segment_report(keys, results, agreement, context, accuracy)


def _prepare(spec: SegmentSpec, home: Path, tmp_path: Path, context: dict[str, Any]) -> tuple[str, list[str]]:
    """The model to run (``spec.model`` or a seeded random one registered in ``home``) and the case's image files
    in the model's channel order; notes both in ``context``."""
    from ..pipeline import assign_inputs, resolve_model

    model = spec.model or random_full_size_model(home, spec.seed)
    resolved = resolve_model(model, home)
    if spec.case:
        inputs = case_images(spec.case)
        context["input"] = f"{spec.case.name} (real case)"
    else:
        inputs = [str(p) for p in synthetic_case(tmp_path / "case", spec.seed)]
        context["input"] = "synthetic BraTS-like case, 240x240x155, 1 mm"
    inputs = [str(p) for _, p in assign_inputs(resolved, inputs)]
    context["weights"] = model if spec.model else f"seeded random full-size GLIMS (seed {spec.seed})"
    return model, inputs


def _read_label(path: Path) -> tuple[Any, tuple[float, ...]]:
    """A label map as an array (z, y, x) and its spacing in the same order."""
    import SimpleITK as sitk

    from ..imageio import read_label_image

    image = read_label_image(path)
    return sitk.GetArrayFromImage(image), image.GetSpacing()[::-1]


def _dice_against(
    labels: dict[str, tuple[Any, tuple[float, ...]]],
    reference: tuple[Any, tuple[float, ...]],
    convention: str = "brats2023",
) -> dict[str, dict[str, float]]:
    """Dice per BraTS region of each configuration's label map against ``reference`` (the reference pipeline's
    segmentation: agreement; or a label of the case, in ``convention``: accuracy)."""
    from ..metrics import score_regions

    ref_array, spacing = reference
    return {
        key: {
            region: score.dice
            for region, score in score_regions(array, ref_array, spacing, ref_convention=convention).items()
        }
        for key, (array, _) in labels.items()
    }


def _segment_report(
    keys: list[str],
    results: dict[str, dict[str, Any]],
    agreement: dict[str, dict[str, float]],
    context: dict[str, Any],
    accuracy: dict[str, dict[str, float]] | None = None,
) -> BenchReport:
    columns = (
        [("config", "configuration")]
        + [(s, f"{s} s") for s in SEGMENT_STAGES]
        + [
            ("total", "total s"),
            ("ratio", "time vs reference"),
            ("rss", "peak RSS MiB"),
            ("dice", "Dice vs reference (TC/WT/ET)"),
        ]
    )
    if accuracy:
        columns.append(("accuracy", "Dice vs label (TC/WT/ET)"))
    if any(r.get("peak_device_mib") is not None for r in results.values()):
        columns.insert(columns.index(("rss", "peak RSS MiB")) + 1, ("gpu_mib", "peak GPU MiB"))
    reference_total = results.get("reference", {}).get("timings_s", {}).get("total")
    rows = []
    for key in keys:
        result = results[key]
        label = SEGMENT_CONFIGS[key]["label"]
        if result.get("precision", "fp32") != "fp32":
            label = f"{label}, {result['precision']}"
        row: dict[str, Any] = {"config": label}
        if "error" in result:
            row["total"] = result["error"]
            rows.append(row)
            continue
        timings = result["timings_s"]
        row.update({s: timings.get(s) for s in SEGMENT_STAGES})
        row["total"] = timings["total"]
        row["ratio"] = round(timings["total"] / reference_total, 3) if reference_total else None
        row["rss"] = round(result["peak_rss_mib"])
        row["sw_batch_size"] = result["sw_batch_size"]  # in the JSON rows; the Markdown shows the columns only
        row["placement"] = result["placement"]
        if result.get("peak_device_mib") is not None:
            row["gpu_mib"] = round(result["peak_device_mib"])
        if key in agreement:
            row["dice"] = "/".join(f"{agreement[key][r]:.4f}" for r in ("TC", "WT", "ET"))
        if accuracy and key in accuracy:
            row["accuracy"] = "/".join(f"{accuracy[key][r]:.4f}" for r in ("TC", "WT", "ET"))
        rows.append(row)
    notes = [
        "Each configuration runs in its own worker process; peak RSS includes Python, torch and the weights.",
        "Dice vs reference compares a configuration's segmentation with the reference pipeline's on the same "
        "case (agreement, not accuracy); with random weights it is not meaningful.",
    ]
    if accuracy:
        notes.append(
            "Dice vs label scores each configuration against the case's reference label (accuracy): the "
            "default pipeline places its windows differently, and this says whether either answer is worse."
        )
    return BenchReport(
        "segment", "Whole case through glims segment vs the reference pipeline", columns, rows, context, notes
    )
