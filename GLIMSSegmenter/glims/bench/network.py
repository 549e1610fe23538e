"""Target ``network``: one forward pass of GLIMS (reference and fast paths) and MONAI's SwinUNETR.

Forward wall time, peak memory, MACs and the fast path's accuracy against the reference path, each model in its
own worker process, in interleaved rounds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..progress import CancelToken, ProgressCallback, StagePlan
from .load import busy_processes, describe_load
from .machine import (
    autocast_for,
    bench_device,
    load_average,
    machine_context,
    peak_device_mib,
    peak_rss_mib,
    time_calls,
)
from .report import ALLOCATOR_LABELS, BenchReport
from .target import BenchTarget, add_spec_options, spec_from_namespace, split_keys
from .workers import BenchError, measure_in_subprocess, worker

if TYPE_CHECKING:  # torch is imported inside the workers, not when the command line is parsed
    import torch

__all__ = ["NETWORK_MODELS", "NetworkBenchmark", "NetworkModel", "NetworkSpec", "combine_rounds"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkModel:
    """A network configuration the ``network`` target can time."""

    key: str
    label: str
    family: str  # "glims" or "swinunetr"
    fast_path: bool = False
    precision: str = "float32"


NETWORK_MODELS: dict[str, NetworkModel] = {
    m.key: m
    for m in (
        NetworkModel("glims-reference", "GLIMS, reference path (fp32)", "glims", fast_path=False),
        NetworkModel("glims-fast", "GLIMS, CPU fast path (fp32, default)", "glims", fast_path=True),
        NetworkModel("glims-fast-bf16", "GLIMS, CPU fast path (bf16, opt-in)", "glims", True, "bfloat16"),
        NetworkModel("swinunetr", "MONAI SwinUNETR (feature_size 48)", "swinunetr"),
    )
}
DEFAULT_NETWORK_MODELS = ("glims-reference", "glims-fast", "swinunetr")


@dataclass(frozen=True)
class NetworkSpec:
    """What a ``network`` run measures (the defaults are ``glims bench network``'s)."""

    models: tuple[str, ...] = DEFAULT_NETWORK_MODELS
    # torch threads of every worker, one phase per value; None: each worker chooses, as glims segment does
    threads: tuple[int | None, ...] = (2,)
    loads: tuple[int, ...] = (0,)  # busy processes beside the timed runs (glims.bench.load), one phase per value
    device: str = "cpu"
    precision: str = "fp32"
    batch: int = 1
    repeats: int = 3
    rounds: int = 1
    size: int = 96
    in_channels: int = 4
    out_channels: int = 3
    feature_size: int = 24
    weights: Path | None = None
    allocator: str = "default"
    seed: int = 0
    count_flops: bool = True
    timeout: float = 1800


class NetworkBenchmark(BenchTarget[NetworkSpec]):
    """Forward wall time, peak memory, MACs and fast-path accuracy of GLIMS vs MONAI's SwinUNETR on this CPU."""

    name = "network"
    help = "time one forward pass of GLIMS (reference and fast paths) and MONAI's SwinUNETR at 1x4x96^3"
    spec_type = NetworkSpec

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        d = NetworkSpec
        add_spec_options(
            parser, d, {"models": f"comma-separated, from: {', '.join(NETWORK_MODELS)} (default: %(default)s)"}
        )
        parser.add_argument(
            "--threads",
            default=",".join(_threads_label(t) for t in d.threads),
            help="torch.set_num_threads in every worker, or auto: each GLIMS worker chooses from the CPU time it "
            "can get, as glims segment does, and SwinUNETR keeps torch's default of one per core, as MONAI does; "
            "a comma-separated list (e.g. 1,2) measures each in turn within every round (default %(default)s)",
        )
        parser.add_argument(
            "--load",
            default=",".join(str(n) for n in d.loads),
            help="busy processes (python -c 'while True: pass', each pinned to one CPU from the last) running "
            "beside every timed worker; a comma-separated list (e.g. 0,1) measures each load in turn within "
            "every round (default %(default)s)",
        )
        add_spec_options(
            parser,
            d,
            {
                "device": "cpu (default), cuda or cuda:N: where every model runs",
                "precision": "autocast of every model's forward: fp32 (none, default), bf16 (on the CPU: GLIMS's "
                "opt-in bf16 fast path), fp16 (GPUs only)",
                "batch": "windows per forward (default %(default)s); the report adds windows per second",
                "repeats": "timed forwards per model and round, after 1 warm-up (default %(default)s)",
                "rounds": "worker processes per model, run in interleaved rounds; the median is over all "
                "their timed forwards (default %(default)s)",
                "size": "cubic input size (default %(default)s, the reference)",
                "in_channels": None,
                "out_channels": None,
                "feature_size": "GLIMS feature_size (default %(default)s, the reference; SwinUNETR stays at 48)",
                "weights": "GLIMS checkpoint to load (default: seeded random weights, the same in every worker)",
                "allocator": "retain: every worker keeps freed memory for reuse instead of returning it to the "
                "OS (glibc only; applied to all models alike). Default: the platform's default, "
                "as a library user of either model gets",
                "seed": None,
            },
        )
        parser.add_argument("--no-flops", action="store_true", help="skip the MAC counts")
        add_spec_options(parser, d, {"timeout": "seconds per worker before giving up"})

    def spec_from_args(self, args: argparse.Namespace) -> NetworkSpec:
        return spec_from_namespace(
            NetworkSpec,
            args,
            threads=_threads_values(args.threads),
            loads=_load_values(args.load),
            count_flops=not args.no_flops,
        )

    def run(
        self, spec: NetworkSpec, *, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> BenchReport:
        keys = list(spec.models)
        unknown = [k for k in keys if k not in NETWORK_MODELS]
        if unknown or not keys:
            raise ConfigError(f"unknown model(s) {unknown or keys}; choose from {', '.join(NETWORK_MODELS)}")
        counts = [t for t in spec.threads if t is not None]
        if not spec.threads or min(*counts, spec.repeats, spec.rounds, spec.feature_size, spec.batch) < 1:
            raise ConfigError("--threads, --repeats, --rounds, --feature-size and --batch must be at least 1")
        if not spec.loads or min(spec.loads) < 0:
            raise ConfigError("--load takes counts of busy processes, 0 or more")
        if spec.size < 32 or spec.size % 32:
            raise ConfigError(f"--size must be a multiple of 32, got {spec.size}")
        if spec.weights is not None and not Path(spec.weights).is_file():
            raise ConfigError(f"--weights: no such file: {spec.weights}")
        device = bench_device(spec.device, spec.precision)

        single = spec.threads[0] if len(spec.threads) == 1 and spec.threads[0] is not None else None
        context = machine_context(single or ", ".join(_threads_label(t) for t in spec.threads))
        if spec.loads != (0,):
            context["competing_load"] = "; ".join(describe_load(n) for n in spec.loads)
        context.update(device)
        context["allocator"] = ALLOCATOR_LABELS[spec.allocator]
        context["input"] = f"{spec.batch}x{spec.in_channels}x{spec.size}^3 float32, eval, torch.no_grad()"
        context["weights"] = str(spec.weights) if spec.weights else f"seeded random (seed {spec.seed})"
        if spec.feature_size != 24:
            context["glims_feature_size"] = spec.feature_size
        plan = StagePlan([(k, 1.0) for k in keys], progress)
        phases = [(n, t) for n in spec.loads for t in spec.threads]
        runs: dict[tuple[int, int | None, str], list[dict[str, Any]]] = {(*p, k): [] for p in phases for k in keys}
        # Rounds interleave the phases (load, threads) and, within each phase, the models, so that a change of
        # machine load over the run hits them alike.
        schedule = [(r, n, t, k) for r in range(spec.rounds) for n, t in phases for k in keys]
        with tempfile.TemporaryDirectory(prefix="glims-bench-") as tmp:
            for round_index, load, threads, key in schedule:
                if cancel is not None:
                    cancel.check()
                model = NETWORK_MODELS[key]
                plan.report(key, round_index, spec.rounds, f"timing {model.label} (round {round_index + 1})")
                first = round_index == 0 and (load, threads) == phases[0]
                job = {
                    "model": asdict(model),
                    "threads": threads,
                    "device": device["device_name"],
                    "precision": spec.precision,
                    "batch": spec.batch,
                    "repeats": spec.repeats,
                    "size": spec.size,
                    "in_channels": spec.in_channels,
                    "out_channels": spec.out_channels,
                    "feature_size": spec.feature_size,
                    "seed": spec.seed,
                    "weights": str(spec.weights) if spec.weights else None,
                    "allocator": spec.allocator,
                    "count_flops": first and spec.count_flops,
                    "save_output": str(Path(tmp) / f"{key}.pt") if first and model.family == "glims" else None,
                }
                try:
                    with busy_processes(load):
                        runs[load, threads, key].append(measure_in_subprocess("network", job, timeout=spec.timeout))
                except BenchError as err:
                    logger.warning("%s", err)
                    runs[load, threads, key].append({"error": str(err)})
                plan.report(key, round_index + 1, spec.rounds, f"{model.label}: round {round_index + 1} done")
            results = {p: {k: combine_rounds(runs[p[0], p[1], k]) for k in keys} for p in phases}
            accuracy = _accuracy_against_reference(results[phases[0]], tmp)
        context["load_after"] = load_average()
        return _network_report(keys, results, accuracy, context, spec)


def combine_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's worker results over the rounds: all timed forwards pooled, the worst peak RSS."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    combined = dict(runs[0])
    combined["times_s"] = [t for r in runs for t in r["times_s"]]
    combined["median_s"] = statistics.median(combined["times_s"])
    combined["cpu_s"] = statistics.mean(r["cpu_s"] for r in runs)
    combined["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    combined["threads"] = sorted({r["threads"] for r in runs if "threads" in r})
    return combined


def _threads_values(text: str) -> tuple[int | None, ...]:
    """``--threads``: comma-separated counts, or ``auto`` (None)."""
    try:
        return tuple(None if k.lower() == "auto" else int(k) for k in split_keys(text))
    except ValueError:
        raise ConfigError(f"--threads takes comma-separated thread counts or auto, got {text!r}") from None


def _threads_label(threads: int | None) -> str:
    return "auto" if threads is None else str(threads)


def _load_values(text: str) -> tuple[int, ...]:
    """``--load``: comma-separated counts of busy processes."""
    try:
        return tuple(int(k) for k in split_keys(text))
    except ValueError:
        raise ConfigError(f"--load takes comma-separated counts of busy processes, got {text!r}") from None


def _accuracy_against_reference(results: dict[str, dict[str, Any]], folder: str) -> dict[str, float]:
    import torch

    ref = results.get("glims-reference", {})
    if "output" not in ref:
        return {}
    reference = torch.load(ref["output"], weights_only=True)
    diffs = {}
    for key, res in results.items():
        if key != "glims-reference" and "output" in res:
            diffs[key] = float((torch.load(res["output"], weights_only=True) - reference).abs().max())
    return diffs


def _network_report(
    keys: list[str],
    results: dict[tuple[int, int | None], dict[str, dict[str, Any]]],
    accuracy: dict[str, float],
    context: dict[str, Any],
    spec: NetworkSpec,
) -> BenchReport:
    """The ``network`` report: one row per model (and load), the columns that apply here, and the notes.

    ``results`` maps each phase (busy processes, threads setting) to each model's combined result; ratios compare
    models of the same phase.
    """
    on_gpu = not context["device_name"].startswith("cpu")
    rows = [
        _network_row(key, results[n, t], accuracy, spec) | {"load": n, "threads_setting": _threads_label(t)}
        for (n, t) in results
        for key in keys
    ]
    several_threads = len(spec.threads) > 1 or None in spec.threads
    columns = [
        ("model", "model"),
        *([("load", "busy processes beside it")] if spec.loads != (0,) else []),
        *([("threads_setting", "--threads"), ("threads", "threads used")] if several_threads else []),
        ("median_s", "forward, median (s)"),
        ("runs_s", "timed runs (s)"),
        ("vs_swinunetr", "× SwinUNETR"),
        ("vs_glims_reference", "× GLIMS reference"),
        ("peak_rss_mib", "peak RSS (MiB)"),
        *([("windows_per_s", "windows / s")] if spec.batch > 1 or on_gpu else []),
        *([("peak_device_mib", "peak GPU memory (MiB)")] if on_gpu else []),
        ("gmac", "GMAC"),
        ("params", "parameters"),
        ("max_abs_diff", "max abs diff vs GLIMS reference"),
        ("cpu_s", "CPU s / forward"),
    ]
    if any(r.get("status", "ok") != "ok" for r in rows):
        columns.append(("status", "status"))
    where = "on the CPU" if not on_gpu else f"on {context['device']}"
    title = f"Network forward at {spec.batch}x{spec.in_channels}x{spec.size}^3 {where}"
    return BenchReport("network", title, columns, rows, context, _network_notes(spec, on_gpu))


def _network_row(
    key: str, results: dict[str, dict[str, Any]], accuracy: dict[str, float], spec: NetworkSpec
) -> dict[str, Any]:
    """One model's row: its times, memory and counts, and its ratios to SwinUNETR and to the GLIMS reference."""
    swin = results.get("swinunetr", {}).get("median_s")
    glims_ref = results.get("glims-reference", {}).get("median_s")
    res, model = results[key], NETWORK_MODELS[key]
    row: dict[str, Any] = {"model": model.label, "key": key}
    if "error" in res:
        row["status"] = res["error"]
        return row
    median = res["median_s"]
    row.update(
        status="ok",
        median_s=median,
        runs_s=" / ".join(f"{t:.2f}" for t in res["times_s"]),
        vs_swinunetr=median / swin if swin else None,
        vs_glims_reference=median / glims_ref if glims_ref and model.family == "glims" else None,
        peak_rss_mib=res["peak_rss_mib"],
        params=res["params"],
        gmac=res.get("gflop", 0) / 2 if res.get("gflop") else None,
        max_abs_diff=accuracy.get(key),
        cpu_s=res.get("cpu_s"),
        windows_per_s=spec.batch / median,
        peak_device_mib=res.get("peak_device_mib"),
        threads=", ".join(str(t) for t in res.get("threads", [])) or None,
    )
    return row


def _network_notes(spec: NetworkSpec, on_gpu: bool) -> list[str]:
    """What the ``network`` columns measure, and the caveats of this run's precision, batch and device."""
    labels = ", ".join(_threads_label(t) for t in spec.threads)
    threads = f"{labels} threads{' in turn' if len(spec.threads) > 1 else ''} (torch.set_num_threads)"
    if None in spec.threads:
        threads = (
            f"threads {labels}{' in turn' if len(spec.threads) > 1 else ''} (auto: GLIMS with the threads "
            "glims.cpu_threads chooses at the worker's start, as glims segment; SwinUNETR with torch's default of "
            "one thread per core, as MONAI)"
        )
    notes = [
        f"Each model runs in its own process ({spec.rounds} per model, in interleaved rounds): {threads}, "
        f"1 warm-up forward, then {spec.repeats} timed forwards; the time is the "
        "median of all timed forwards; peak RSS is the process's ru_maxrss (interpreter, torch, weights and "
        "activations).",
        "GMAC = FLOPs / 2 from torch.utils.flop_counter.FlopCounterMode, which counts FLOPs of convolutions and "
        "matrix products only (not norms, activations, softmax or element-wise work); counted on the network "
        "definition (the fast path does the same convolutions and products).",
        "CPU s / forward: process CPU time (all threads) per forward, warm-up included; about threads x wall time "
        "when the cores were ours.",
        "Accuracy: maximum absolute difference of the logits from the GLIMS reference path on the same weights and "
        "input.",
        "Ratios compare models measured in the same run; the machine may be shared, so compare ratios rather than "
        "absolute times across runs.",
    ]
    if spec.loads != (0,):
        notes.append(
            "Busy processes: each runs python -c 'while True: pass', pinned with os.sched_setaffinity to one CPU "
            "(the last CPU first); they start before a worker and are killed after it, so every model of a load "
            "phase meets the same load. Ratios compare models under the same load."
        )
    if spec.precision != "fp32":
        notes.append(
            f"Every model's forward ran under torch.autocast({spec.precision}); the accuracy column then "
            "includes that rounding."
        )
    if spec.batch > 1:
        notes.append(f"Each forward takes {spec.batch} windows; GMAC and parameters are per window and model.")
    if on_gpu:
        notes.append(
            "On the GPU each timed forward ends with torch.cuda.synchronize; peak GPU memory is "
            "torch.cuda.max_memory_allocated of the worker. The CPU fast path does not apply there: "
            "glims-fast runs the reference path's operations."
        )
    return notes


@worker("network")
def _network_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    model_spec = NetworkModel(**spec["model"])
    threads = _worker_threads(spec["threads"], model_spec)
    size, cin, cout = int(spec["size"]), int(spec["in_channels"]), int(spec["out_channels"])
    device, precision, batch = torch.device(spec["device"]), spec["precision"], int(spec["batch"])

    torch.manual_seed(int(spec["seed"]))
    net: torch.nn.Module
    if model_spec.family == "glims":
        from ..network import GLIMS, build

        if spec.get("weights"):
            from ..checkpoint import infer_architecture, load_into_model, load_state_dict

            state = load_state_dict(spec["weights"])
            glims = build(infer_architecture(state))
            load_into_model(glims, state)
        else:
            glims = GLIMS(in_channels=cin, out_channels=cout, feature_size=int(spec["feature_size"]), img_size=size)
        glims.fast_path = model_spec.fast_path
        glims.precision = model_spec.precision
        net = glims
    else:
        net = _swinunetr(cin, cout)
    net.eval().to(device)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    torch.manual_seed(int(spec["seed"]) + 1)
    x = torch.randn(batch, cin, size, size, size).to(device)  # drawn on the CPU: the same input on any device
    output: list[torch.Tensor] = []

    def forward() -> None:
        with torch.no_grad(), autocast_for(device, precision):
            output[:] = [net(x)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    cpu_start = time.process_time()
    times = time_calls(forward, int(spec["repeats"]), warmup=1)
    cpu_s = (time.process_time() - cpu_start) / (int(spec["repeats"]) + 1)
    result: dict[str, Any] = {
        "times_s": times,
        "median_s": statistics.median(times),
        "cpu_s": cpu_s,
        "peak_rss_mib": peak_rss_mib(),
        "peak_device_mib": peak_device_mib(device),
        "params": params,
        "threads": threads,
    }
    if spec.get("save_output"):
        torch.save(output[0].float().cpu().contiguous(), spec["save_output"])
        result["output"] = spec["save_output"]
    if spec.get("count_flops"):
        result["gflop"] = _count_flops(net, cin, size) / 1e9
    return result


def _worker_threads(requested: int | None, model: NetworkModel) -> int:
    """Set and return a worker's torch threads: ``requested``, else GLIMS's choice (``glims.cpu_threads``) for GLIMS
    and torch's own default (one per core) for SwinUNETR, as each model's users get them."""
    import torch

    if requested is None and model.family != "glims":
        return torch.get_num_threads()
    from ..cpu_threads import apply_threads

    return apply_threads(None if requested is None else int(requested)).threads


def _swinunetr(in_channels: int, out_channels: int) -> torch.nn.Module:
    try:
        import einops  # noqa: F401  (MONAI's SwinUNETR needs it and imports it lazily)
        from monai.networks.nets import SwinUNETR
    except ImportError as err:
        raise BenchError(
            f"MONAI's SwinUNETR is unavailable here ({err.name} is not installed; pip install 'glims[bench]')"
        ) from err
    try:
        return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=48)
    except TypeError:  # MONAI < 1.5 also wants img_size (the installed MONAI's signature has none)
        return SwinUNETR(  # type: ignore[call-arg]
            img_size=96, in_channels=in_channels, out_channels=out_channels, feature_size=48
        )


def _count_flops(net: Any, in_channels: int, size: int) -> float:
    """FLOPs of one forward counted by FlopCounterMode with the model moved to meta tensors (no arithmetic)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = net.to("meta")
    x = torch.empty(1, in_channels, size, size, size, device="meta")
    # Not under no_grad: the counter's module tracker needs autograd nodes.
    with FlopCounterMode(display=False) as counter:
        net(x)
    return float(counter.get_total_flops())
