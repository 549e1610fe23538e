"""Benchmarks of the engine on this machine: ``glims bench TARGET``.

A *target* is one benchmark: ``network`` (a single forward pass at the reference window), ``segment`` (a whole
case through ``glims.pipeline``, against the slow reference pipeline) and ``train`` (optimiser steps per second of
the default training configuration). Every measurement
runs in a fresh subprocess (``python -m glims.bench worker SPEC``) so that each model's peak resident memory
(``ru_maxrss``) is its own and no model warms the caches or the allocator for another; the parent only collects the
JSON each worker prints and builds a ``BenchReport`` (Markdown table, or JSON), with the machine context the figures
depend on (CPU, cores, torch version, threads, load average before and after).

Adding a target (e.g. ``segment``, a whole case through ``glims.pipeline``): subclass ``BenchTarget`` (name, help,
``add_arguments``, ``run``), register a worker function with ``@worker("segment")`` that measures one
configuration inside its subprocess and returns a JSON-able dict, build the target's rows from
``measure_in_subprocess`` results, and add an instance to ``TARGETS``. ``glims bench`` and its tests pick it up from
there; the helpers here (subprocess isolation, context, table formatting, ratios) are shared.

Importing this module is cheap (no torch); heavy imports happen inside the workers and ``run`` methods.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .cpu_allocator import ALLOCATORS
from .errors import ConfigError, GlimsError
from .progress import CancelToken, ProgressCallback, StagePlan

__all__ = [
    "BenchReport",
    "BenchTarget",
    "NetworkBenchmark",
    "SegmentBenchmark",
    "TrainBenchmark",
    "NETWORK_MODELS",
    "TARGETS",
    "machine_context",
    "measure_in_subprocess",
    "worker",
]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Report


@dataclass
class BenchReport:
    """The result of one benchmark run: rows of measurements plus what they depend on.

    Attributes:
        target: benchmark name (``network``...).
        title: one-line description of what was measured.
        columns: (key, header) pairs, in table order; each row is a dict keyed by these keys.
        rows: one dict per measured configuration (values: str, int, float or None for "not applicable").
        context: machine and run facts (CPU, cores, torch, threads, load average, command...).
        notes: sentences printed under the table (what the counters count, caveats).
    """

    target: str
    title: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]]
    context: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = [list(c) for c in self.columns]
        return data

    def to_markdown(self) -> str:
        """A Markdown section: title, context line, table, notes."""
        lines = [f"### {self.title}", ""]
        ctx = self.context
        facts = [f"{k}: {ctx[k]}" for k in _CONTEXT_ORDER if k in ctx]
        lines += [f"- {fact}" for fact in facts] + [""]
        lines.append("| " + " | ".join(header for _, header in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in self.columns) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


_ALLOCATOR_LABELS = {"retain": "glibc, freed memory retained", "default": "platform default"}

_CONTEXT_ORDER = (
    "command", "date", "cpu", "cores", "python", "torch", "monai", "device", "precision", "threads", "allocator",
    "input", "weights", "glims_feature_size", "omp_wait_policy",
    "load_before", "load_after",
)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 0.01:
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.2f}"
        return f"{value:.1e}"
    if isinstance(value, int):
        return f"{value:,d}"
    return str(value).replace("|", "\\|")


def machine_context(threads: int) -> dict[str, Any]:
    """Facts a CPU timing depends on: CPU model, cores, Python/torch versions, threads, load average now."""
    import torch

    ctx: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP default: spin, then sleep)"),
        "load_before": load_average(),
    }
    try:
        import monai

        ctx["monai"] = monai.__version__
    except ImportError:  # pragma: no cover - monai is a dependency
        pass
    return ctx


def bench_device(name: str, precision: str) -> dict[str, str]:
    """Check a run's ``--device`` and ``--precision`` before any work, and describe them for the report.

    Raises:
        DeviceError: the device is not available here; ConfigError: fp16 asked for on the CPU (autocast to fp16
        is for GPUs; the CPU's reduced precision is bf16).
    """
    import torch

    from .inference import resolve_device

    device = resolve_device(name)
    if device.type == "cpu" and precision == "fp16":
        raise ConfigError("--precision fp16 is for GPUs; on the CPU use bf16")
    described = str(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        described = f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
    return {"device": described, "device_name": str(device), "precision": precision}


def autocast_for(device: Any, precision: str) -> Any:
    """The autocast context of a run's precision on ``device`` (fp32: none)."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def peak_device_mib(device: Any) -> float | None:
    """Peak memory the torch allocator took on a CUDA ``device`` in MiB (None on the CPU: see peak RSS)."""
    import torch

    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1/5/15-minute load averages as text ("n/a" where the OS has none)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


# ----------------------------------------------------------------------------------------------------------------
# Subprocess workers

_WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def worker(kind: str) -> Callable:
    """Register the function that measures one ``kind`` of configuration inside a worker subprocess."""

    def register(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        _WORKERS[kind] = fn
        return fn

    return register


class BenchError(GlimsError):
    """A benchmark worker failed; the message carries its last error line."""


def measure_in_subprocess(kind: str, spec: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    """Run worker ``kind`` on ``spec`` in a fresh Python process and return the dict it printed.

    The child inherits the environment, with this package importable and the allocator setting applied by the
    worker itself. Raises ``BenchError`` with the child's last stderr line when it fails.
    """
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "glims.bench", "worker", kind, json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"benchmark worker {kind} timed out after {timeout:.0f} s") from err
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise BenchError(f"benchmark worker {kind} failed: {tail[-1] if tail else f'exit code {proc.returncode}'}")
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"benchmark worker {kind} printed no result")


def _worker_main(argv: Sequence[str]) -> int:
    if len(argv) != 3 or argv[0] != "worker" or argv[1] not in _WORKERS:
        print(f"usage: python -m glims.bench worker {{{','.join(sorted(_WORKERS))}}} SPEC_JSON", file=sys.stderr)
        return 2
    spec = json.loads(argv[2])
    if spec.get("allocator") == "retain":
        from .cpu_allocator import retain_freed_memory

        retain_freed_memory()
    result = _WORKERS[argv[1]](spec)
    print(json.dumps(result), flush=True)
    return 0


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss``; Linux reports KiB, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def config_keys(text: str, known: Sequence[str]) -> list[str]:
    """The configurations named in a ``--configs`` value (comma-separated), each one of ``known``."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys or any(k not in known for k in keys):
        raise ConfigError(f"--configs: choose from {', '.join(known)}")
    return keys


# ----------------------------------------------------------------------------------------------------------------
# Targets


class BenchTarget(ABC):
    """One benchmark: its CLI arguments and how to run it."""

    name: str = ""
    help: str = ""

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this target's options to its ``glims bench NAME`` subparser."""

    @abstractmethod
    def run(
        self, args: argparse.Namespace, *, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> BenchReport:
        """Measure and return the report (raises ``GlimsError`` subclasses on failure)."""


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
PRECISIONS = ("fp32", "bf16", "fp16")


class NetworkBenchmark(BenchTarget):
    """Forward wall time, peak memory, MACs and fast-path accuracy of GLIMS vs MONAI's SwinUNETR on this CPU."""

    name = "network"
    help = "time one forward pass of GLIMS (reference and fast paths) and MONAI's SwinUNETR at 1x4x96^3"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--models",
            default=",".join(DEFAULT_NETWORK_MODELS),
            help=f"comma-separated, from: {', '.join(NETWORK_MODELS)} (default: %(default)s)",
        )
        parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every worker (default 2)")
        parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where every model runs")
        parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                            help="autocast of every model's forward: fp32 (none, default), bf16 (on the CPU: GLIMS's "
                                 "opt-in bf16 fast path), fp16 (GPUs only)")
        parser.add_argument("--batch", type=int, default=1,
                            help="windows per forward (default 1); the report adds windows per second")
        parser.add_argument("--repeats", type=int, default=3,
                            help="timed forwards per model and round, after 1 warm-up (default 3)")
        parser.add_argument("--rounds", type=int, default=1,
                            help="worker processes per model, run in interleaved rounds; the median is over all "
                                 "their timed forwards (default 1)")
        parser.add_argument("--size", type=int, default=96, help="cubic input size (default 96, the reference)")
        parser.add_argument("--in-channels", type=int, default=4)
        parser.add_argument("--out-channels", type=int, default=3)
        parser.add_argument("--feature-size", type=int, default=24,
                            help="GLIMS feature_size (default 24, the reference; SwinUNETR stays at 48)")
        parser.add_argument("--weights", type=Path, default=None,
                            help="GLIMS checkpoint to load (default: seeded random weights, the same in every worker)")
        parser.add_argument("--allocator", choices=ALLOCATORS, default="default",
                            help="retain: every worker keeps freed memory for reuse instead of returning it to the "
                                 "OS (glibc only; applied to all models alike). Default: the platform's default, "
                                 "as a library user of either model gets")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-flops", action="store_true", help="skip the MAC counts")
        parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker before giving up")

    def run(
        self, args: argparse.Namespace, *, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> BenchReport:
        keys = [k.strip() for k in str(args.models).split(",") if k.strip()]
        unknown = [k for k in keys if k not in NETWORK_MODELS]
        if unknown or not keys:
            raise ConfigError(f"unknown model(s) {unknown or keys}; choose from {', '.join(NETWORK_MODELS)}")
        if min(args.threads, args.repeats, args.rounds, args.feature_size, args.batch) < 1:
            raise ConfigError("--threads, --repeats, --rounds, --feature-size and --batch must be at least 1")
        if args.size < 32 or args.size % 32:
            raise ConfigError(f"--size must be a multiple of 32, got {args.size}")
        if args.weights is not None and not Path(args.weights).is_file():
            raise ConfigError(f"--weights: no such file: {args.weights}")
        device = bench_device(args.device, args.precision)

        context = machine_context(args.threads)
        context.update(device)
        context["allocator"] = _ALLOCATOR_LABELS[args.allocator]
        context["input"] = f"{args.batch}x{args.in_channels}x{args.size}^3 float32, eval, torch.no_grad()"
        context["weights"] = str(args.weights) if args.weights else f"seeded random (seed {args.seed})"
        if args.feature_size != 24:
            context["glims_feature_size"] = args.feature_size
        plan = StagePlan([(k, 1.0) for k in keys], progress)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
        with tempfile.TemporaryDirectory(prefix="glims-bench-") as tmp:
            # Rounds interleave the models, so that a change of machine load over the run hits them alike.
            for round_index, key in ((r, k) for r in range(args.rounds) for k in keys):
                if cancel is not None:
                    cancel.check()
                model = NETWORK_MODELS[key]
                plan.report(key, round_index, args.rounds, f"timing {model.label} (round {round_index + 1})")
                first = round_index == 0
                spec = {
                    "model": asdict(model),
                    "threads": args.threads,
                    "device": device["device_name"],
                    "precision": args.precision,
                    "batch": args.batch,
                    "repeats": args.repeats,
                    "size": args.size,
                    "in_channels": args.in_channels,
                    "out_channels": args.out_channels,
                    "feature_size": args.feature_size,
                    "seed": args.seed,
                    "weights": str(args.weights) if args.weights else None,
                    "allocator": args.allocator,
                    "count_flops": first and not args.no_flops,
                    "save_output": str(Path(tmp) / f"{key}.pt") if first and model.family == "glims" else None,
                }
                try:
                    runs[key].append(measure_in_subprocess("network", spec, timeout=args.timeout))
                except BenchError as err:
                    logger.warning("%s", err)
                    runs[key].append({"error": str(err)})
                plan.report(key, round_index + 1, args.rounds, f"{model.label}: round {round_index + 1} done")
            results = {k: _combine_rounds(v) for k, v in runs.items()}
            accuracy = _accuracy_against_reference(results, tmp)
        context["load_after"] = load_average()
        return _network_report(keys, results, accuracy, context, args)


def _combine_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's worker results over the rounds: all timed forwards pooled, the worst peak RSS."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    combined = dict(runs[0])
    combined["times_s"] = [t for r in runs for t in r["times_s"]]
    combined["median_s"] = statistics.median(combined["times_s"])
    combined["cpu_s"] = statistics.mean(r["cpu_s"] for r in runs)
    combined["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    return combined


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
    results: dict[str, dict[str, Any]],
    accuracy: dict[str, float],
    context: dict[str, Any],
    args: argparse.Namespace,
) -> BenchReport:
    swin = results.get("swinunetr", {}).get("median_s")
    glims_ref = results.get("glims-reference", {}).get("median_s")
    on_gpu = not context["device_name"].startswith("cpu")
    rows = []
    for key in keys:
        res, model = results[key], NETWORK_MODELS[key]
        row: dict[str, Any] = {"model": model.label, "key": key}
        if "error" in res:
            row["status"] = res["error"]
            rows.append(row)
            continue
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
            windows_per_s=args.batch / median,
            peak_device_mib=res.get("peak_device_mib"),
        )
        rows.append(row)
    columns = [
        ("model", "model"),
        ("median_s", "forward, median (s)"),
        ("runs_s", "timed runs (s)"),
        ("vs_swinunetr", "× SwinUNETR"),
        ("vs_glims_reference", "× GLIMS reference"),
        ("peak_rss_mib", "peak RSS (MiB)"),
        *([("windows_per_s", "windows / s")] if args.batch > 1 or on_gpu else []),
        *([("peak_device_mib", "peak GPU memory (MiB)")] if on_gpu else []),
        ("gmac", "GMAC"),
        ("params", "parameters"),
        ("max_abs_diff", "max abs diff vs GLIMS reference"),
        ("cpu_s", "CPU s / forward"),
    ]
    if any(r.get("status", "ok") != "ok" for r in rows):
        columns.append(("status", "status"))
    notes = [
        f"Each model runs in its own process ({args.rounds} per model, in interleaved rounds): {args.threads} "
        f"threads (torch.set_num_threads), 1 warm-up forward, then {args.repeats} timed forwards; the time is the "
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
    if args.precision != "fp32":
        notes.append(f"Every model's forward ran under torch.autocast({args.precision}); the accuracy column then "
                     "includes that rounding.")
    if args.batch > 1:
        notes.append(f"Each forward takes {args.batch} windows; GMAC and parameters are per window and model.")
    if on_gpu:
        notes.append("On the GPU each timed forward ends with torch.cuda.synchronize; peak GPU memory is "
                     "torch.cuda.max_memory_allocated of the worker. The CPU fast path does not apply there: "
                     "glims-fast runs the reference path's operations.")
    where = "on the CPU" if not on_gpu else f"on {context['device']}"
    title = f"Network forward at {args.batch}x{args.in_channels}x{args.size}^3 {where}"
    return BenchReport("network", title, columns, rows, context, notes)


@worker("network")
def _network_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(spec["threads"]))
    model_spec = NetworkModel(**spec["model"])
    size, cin, cout = int(spec["size"]), int(spec["in_channels"]), int(spec["out_channels"])
    device, precision, batch = torch.device(spec["device"]), spec["precision"], int(spec["batch"])

    torch.manual_seed(int(spec["seed"]))
    if model_spec.family == "glims":
        from .network import GLIMS

        if spec.get("weights"):
            from .checkpoint import infer_architecture, load_into_model, load_state_dict

            state = load_state_dict(spec["weights"])
            net = GLIMS(**infer_architecture(state))
            load_into_model(net, state)
        else:
            net = GLIMS(in_channels=cin, out_channels=cout, feature_size=int(spec["feature_size"]), img_size=size)
        net.fast_path = model_spec.fast_path
        net.precision = model_spec.precision
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
    }
    if spec.get("save_output"):
        torch.save(output[0].float().cpu().contiguous(), spec["save_output"])
        result["output"] = spec["save_output"]
    if spec.get("count_flops"):
        result["gflop"] = _count_flops(net, cin, size) / 1e9
    return result


def _swinunetr(in_channels: int, out_channels: int):
    try:
        import einops  # noqa: F401  (MONAI's SwinUNETR needs it and imports it lazily)
        from monai.networks.nets import SwinUNETR
    except ImportError as err:
        raise BenchError(f"MONAI's SwinUNETR is unavailable here ({err.name} is not installed)") from err
    try:
        return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=48)
    except TypeError:  # MONAI < 1.5 also wants img_size
        return SwinUNETR(img_size=96, in_channels=in_channels, out_channels=out_channels, feature_size=48)


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


# Targets of ``glims bench``, by name (the order of ``glims bench --help``).
# ----------------------------------------------------------------------------------------------------------------
# Target "segment": a whole case through glims.pipeline, ours against the reference pipeline.
#
# Each configuration runs in its own worker process (peak RSS of each is its own) on the same case and model:
# "default" is what `glims segment` does (foreground crop, the CPU fast path, the catalog's overlap); "reference"
# is the slow baseline of issue 7 (overlap 0.5, fp32, no cropping, the network's reference path); "uncropped" is
# `glims segment --no-crop`: the fast path with the reference's windows, which separates what the fast path changes
# (nothing beyond float rounding) from what the crop's window placement changes. Per-stage wall times, peak RSS,
# the time ratio and each configuration's agreement with the reference (Dice per BraTS region) are reported.
# The case is a BraTS case folder (--case) or a synthetic 240x240x155 case; the model a catalog model (--model) or
# a seeded random full-size GLIMS (timings only: with random weights the Dice column means nothing).

SEGMENT_STAGES = ("load", "preprocess", "infer", "postprocess", "write")
SEGMENT_CONFIGS = {
    "default": {"label": "glims segment (default: crop, fast path)", "crop": None, "fast_path": True, "overlap": None},
    "reference": {"label": "reference pipeline (overlap 0.5, fp32, no crop, reference path)", "crop": False,
                  "fast_path": False, "overlap": 0.5},
    "uncropped": {"label": "glims segment --no-crop (fast path, the reference's windows)", "crop": False,
                  "fast_path": True, "overlap": None},
}


@worker("segment")
def _segment_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from .inference import InferenceOptions
    from .pipeline import resolve_model, segment_files

    torch.set_num_threads(int(spec["threads"]))
    model = resolve_model(spec["model"], spec["home"])
    defaults = InferenceOptions(**model.inference)
    options = InferenceOptions(
        device=spec["device"], overlap=defaults.overlap if spec["overlap"] is None else float(spec["overlap"]),
        blend=defaults.blend, sw_batch_size=spec["sw_batch_size"] or defaults.sw_batch_size,
        precision=spec["precision"], fast_path=bool(spec["fast_path"]),
    )
    result = segment_files(model, spec["inputs"], None, labelmap=spec["labelmap"], options=options,
                           crop=spec["crop"], home=spec["home"])
    return {"timings_s": result.report["timings_s"], "peak_rss_mib": peak_rss_mib(), "model": model.ref,
            "overlap": options.overlap, "precision": options.precision, "sw_batch_size": options.sw_batch_size,
            "peak_device_mib": peak_device_mib(torch.device(spec["device"]))}


def _case_images(folder: Path) -> list[str]:
    """The image files of a case folder, label maps and algorithm outputs left out."""
    import re

    if not folder.is_dir():
        raise ConfigError(f"--case: no such folder: {folder}")
    labels = re.compile(r"seg|label|silver|fusion|pred|truth|(^|[-_.])gt([-_.]|$)", re.IGNORECASE)
    suffixes = (".nii.gz", ".nii", ".nrrd", ".mha")
    return [str(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name.lower().endswith(suffixes) and not labels.search(p.name)]


def _synthetic_case(folder: Path, seed: int) -> list[Path]:
    from .synth import MODALITIES, generate_case, write_case

    files = write_case(generate_case(seed, shape=(155, 240, 240)), folder, f"GLIMS-SYN-BENCH-{seed}")
    return [files[m] for m in MODALITIES]


def _random_full_size_model(home: Path, seed: int) -> str:
    import torch

    from .catalog import register_model
    from .checkpoint import save_checkpoint
    from .network import GLIMS

    torch.manual_seed(seed)
    net = GLIMS()
    meta = save_checkpoint(home / "random-full", net.state_dict(), {"name": "GLIMS", **net.config.to_dict()})
    return register_model(meta, "glims-random-full", "brats", home=home, license_text="random weights").ref


class SegmentBenchmark(BenchTarget):
    """Whole-case wall time per stage and peak memory: default pipeline vs the reference pipeline."""

    name = "segment"
    help = "time a whole case through glims segment, against the slow reference pipeline (overlap 0.5, no crop)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--case", type=Path, help="BraTS case folder (default: a synthetic 240x240x155 case)")
        parser.add_argument("-m", "--model", help="catalog model (default: seeded random full-size GLIMS)")
        parser.add_argument("--home", help="glims user folder holding --model")
        parser.add_argument("--configs", default="default,reference",
                            help="comma-separated from: default, reference, uncropped (--no-crop)")
        parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                            help="of the default config (fp16: GPUs only)")
        parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where every config runs")
        parser.add_argument("--sw-batch-size", type=int, default=None,
                            help="windows per forward in every config (default: the model's catalog setting)")
        parser.add_argument("--label", type=Path,
                            help="reference label of --case: also score every configuration against it (accuracy)")
        parser.add_argument("--label-convention", default="brats2023",
                            help="of --label: brats2023 (ET=3), brats2017 (ET=4) or brats2013")
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument("--allocator", choices=ALLOCATORS, default="retain",
                            help="of every worker; default retain, what the glims command line does")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--timeout", type=float, default=7200, help="seconds per worker")

    def run(self, args: argparse.Namespace, *, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> BenchReport:
        from .pipeline import assign_inputs, resolve_model

        keys = config_keys(args.configs, SEGMENT_CONFIGS)
        if args.label and not args.label.is_file():
            raise ConfigError(f"--label: no such file: {args.label}")
        if args.sw_batch_size is not None and args.sw_batch_size < 1:
            raise ConfigError("--sw-batch-size must be at least 1")
        device = bench_device(args.device, args.precision)
        context = machine_context(args.threads)
        context.update(device)
        context["allocator"] = _ALLOCATOR_LABELS[args.allocator]
        plan = StagePlan([("prepare", 1.0)] + [(k, 10.0) for k in keys], progress)
        results: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory(prefix="glims-bench-segment-") as tmp:
            tmp_path = Path(tmp)
            home = Path(args.home) if args.home else tmp_path / "home"
            plan.report("prepare", 0, 1, "preparing the case and the model")
            model = args.model or _random_full_size_model(home, args.seed)
            spec = resolve_model(model, home)
            if args.case:
                inputs = _case_images(args.case)
                context["input"] = f"{args.case.name} (real case)"
            else:
                inputs = [str(p) for p in _synthetic_case(tmp_path / "case", args.seed)]
                context["input"] = "synthetic BraTS-like case, 240x240x155, 1 mm"
            inputs = [str(p) for _, p in assign_inputs(spec, inputs)]
            context["weights"] = model if args.model else f"seeded random full-size GLIMS (seed {args.seed})"
            for key in keys:
                if cancel is not None:
                    cancel.check()
                config = SEGMENT_CONFIGS[key]
                plan.report(key, 0, 1, f"running {config['label']}")
                job = {"model": model, "home": str(home), "inputs": inputs, "threads": args.threads,
                       "overlap": config["overlap"], "crop": config["crop"], "fast_path": config["fast_path"],
                       "precision": args.precision if key == "default" else "fp32", "allocator": args.allocator,
                       "device": device["device_name"], "sw_batch_size": args.sw_batch_size,
                       "labelmap": str(tmp_path / f"{key}.nii.gz")}
                try:
                    results[key] = measure_in_subprocess("segment", job, timeout=args.timeout)
                except BenchError as err:
                    results[key] = {"error": str(err)}
                plan.report(key, 1, 1, f"{config['label']} done")
            labels = {k: _read_label(tmp_path / f"{k}.nii.gz") for k in keys if "error" not in results[k]}
            agreement = {}
            if "reference" in labels:
                agreement = _dice_against({k: v for k, v in labels.items() if k != "reference"}, labels["reference"])
            accuracy = {}
            if args.label:
                accuracy = _dice_against(labels, _read_label(args.label), args.label_convention)
        if args.label:
            context["label"] = f"{args.label.name} ({args.label_convention})"
        context["load_after"] = load_average()
        return _segment_report(keys, results, agreement, context, accuracy)


def _read_label(path: Path) -> tuple[Any, tuple[float, ...]]:
    """A label map as an array (z, y, x) and its spacing in the same order."""
    import SimpleITK as sitk

    from .imageio import read_label_image

    image = read_label_image(path)
    return sitk.GetArrayFromImage(image), image.GetSpacing()[::-1]


def _dice_against(labels: dict[str, tuple[Any, tuple[float, ...]]], reference: tuple[Any, tuple[float, ...]],
                  convention: str = "brats2023") -> dict[str, dict[str, float]]:
    """Dice per BraTS region of each configuration's label map against ``reference`` (the reference pipeline's
    segmentation: agreement; or a label of the case, in ``convention``: accuracy)."""
    from .metrics import score_regions

    ref_array, spacing = reference
    return {key: {region: score.dice for region, score in
                  score_regions(array, ref_array, spacing, ref_convention=convention).items()}
            for key, (array, _) in labels.items()}


def _segment_report(keys, results, agreement, context, accuracy=None) -> BenchReport:
    columns = [("config", "configuration")] + [(s, f"{s} s") for s in SEGMENT_STAGES] + [
        ("total", "total s"), ("ratio", "time vs reference"), ("rss", "peak RSS MiB"), ("dice", "Dice vs reference (TC/WT/ET)")]
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
        if result.get("peak_device_mib") is not None:
            row["gpu_mib"] = round(result["peak_device_mib"])
        if key in agreement:
            row["dice"] = "/".join(f"{agreement[key][r]:.4f}" for r in ("TC", "WT", "ET"))
        if accuracy and key in accuracy:
            row["accuracy"] = "/".join(f"{accuracy[key][r]:.4f}" for r in ("TC", "WT", "ET"))
        rows.append(row)
    notes = ["Each configuration runs in its own worker process; peak RSS includes Python, torch and the weights.",
             "Dice vs reference compares a configuration's segmentation with the reference pipeline's on the same "
             "case (agreement, not accuracy); with random weights it is not meaningful."]
    if accuracy:
        notes.append("Dice vs label scores each configuration against the case's reference label (accuracy): the "
                     "default pipeline places its windows differently, and this says whether either answer is worse.")
    return BenchReport("segment", "Whole case through glims segment vs the reference pipeline", columns, rows,
                       context, notes)


# ----------------------------------------------------------------------------------------------------------------
# Target "train": optimiser steps per second of the default training configuration, and of the same steps with
# the forward pass under bf16 autocast (`--precision bf16`, the default on GPUs) or with the weights and batches in
# channels-last 3D memory (oneDNN's other convolution kernels; not what `glims train` does: it was slower on two
# threads, see docs/BENCHMARKS.md). Each runs in its own worker on the same seeded weights and batches; the first
# step's loss is compared (same function, weights and batch: equal to float32 rounding, or to bf16's).

TRAIN_CONFIGS = {
    "default": {"label": "glims train (channel-first, fp32)", "channels_last": False, "precision": "fp32"},
    "channels-last": {"label": "channels-last weights and batches", "channels_last": True, "precision": "fp32"},
    "bf16": {"label": "bf16 autocast forward (glims train --precision bf16)", "channels_last": False,
             "precision": "bf16"},
}


@worker("train")
def _train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from .network import GLIMS
    from .training.trainer import DEFAULT_ARCHITECTURE, optimizer_step

    torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(int(spec["seed"]))
    arch = dict(DEFAULT_ARCHITECTURE)
    net = GLIMS(in_channels=4, out_channels=3, **arch).train()
    size = list(arch["img_size"])
    generator = torch.Generator().manual_seed(int(spec["seed"]) + 1)
    batches = [(torch.randn(int(spec["batch_size"]), 4, *size, generator=generator),
                (torch.rand(int(spec["batch_size"]), 3, *size, generator=generator) > 0.8).float())
               for _ in range(4)]
    layout = torch.channels_last_3d if spec["channels_last"] else torch.contiguous_format
    net.to(memory_format=layout)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
    losses: list[float] = []

    def step() -> None:
        images, targets = batches[len(losses) % len(batches)]
        losses.append(float(optimizer_step(net, optimizer, images.contiguous(memory_format=layout), targets,
                                           precision=spec["precision"])))

    cpu_start = time.process_time()
    times = time_calls(step, int(spec["steps"]), warmup=int(spec["warmup"]))
    return {"step_s": statistics.median(times), "steps_per_s": len(times) / sum(times),
            "cpu_s_per_step": (time.process_time() - cpu_start) / (len(times) + int(spec["warmup"])),
            "losses": losses, "peak_rss_mib": peak_rss_mib()}


class TrainBenchmark(BenchTarget):
    """Optimiser steps per second of the default training configuration, with bf16 autocast, in channels-last."""

    name = "train"
    help = ("time optimiser steps of the default training configuration (feature size 12, batches of 2 windows "
            "of 32^3): fp32 channel-first (what glims train does on the CPU), bf16 autocast, channels-last")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--configs", default="default,bf16",
                            help="comma-separated from: default, channels-last, bf16")
        parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps per configuration")
        parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
        parser.add_argument("--batch-size", type=int, default=2)
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--timeout", type=float, default=3600, help="seconds per worker")

    def run(self, args: argparse.Namespace, *, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> BenchReport:
        keys = config_keys(args.configs, TRAIN_CONFIGS)
        if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
            raise ConfigError("--steps and --batch-size must be at least 1, --warmup at least 0")
        context = machine_context(args.threads)
        context["input"] = f"{args.batch_size} windows of 4x32^3 per step (seeded random images and targets)"
        context["weights"] = f"seeded random (seed {args.seed}), feature size 12, depths 2 2 2 2"
        plan = StagePlan([(k, 1.0) for k in keys], progress)
        results: dict[str, dict[str, Any]] = {}
        for key in keys:
            if cancel is not None:
                cancel.check()
            plan.report(key, 0, 1, f"running {TRAIN_CONFIGS[key]['label']}")
            job = {"channels_last": TRAIN_CONFIGS[key]["channels_last"], "precision": TRAIN_CONFIGS[key]["precision"],
                   "threads": args.threads, "seed": args.seed,
                   "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size}
            try:
                results[key] = measure_in_subprocess("train", job, timeout=args.timeout)
            except BenchError as err:
                results[key] = {"error": str(err)}
            plan.report(key, 1, 1, "done")
        context["load_after"] = load_average()
        return _train_report(keys, results, context)


def _train_report(keys: list[str], results: dict[str, dict[str, Any]], context: dict[str, Any]) -> BenchReport:
    columns = [("config", "configuration"), ("steps_per_s", "steps/s"), ("step_s", "step, median (s)"),
               ("speedup", "× default"), ("cpu", "CPU s / step"), ("rss", "peak RSS MiB"),
               ("loss", "loss, last step"), ("diff", "first-step loss diff vs default")]
    base = results.get("default", {})
    rows = []
    for key in keys:
        result = results[key]
        row: dict[str, Any] = {"config": TRAIN_CONFIGS[key]["label"]}
        if "error" in result:
            row["steps_per_s"] = result["error"]
            rows.append(row)
            continue
        row.update({"steps_per_s": result["steps_per_s"], "step_s": result["step_s"], "cpu": result["cpu_s_per_step"],
                    "rss": round(result["peak_rss_mib"]), "loss": result["losses"][-1]})
        if "steps_per_s" in base:
            row["speedup"] = round(result["steps_per_s"] / base["steps_per_s"], 3)
            row["diff"] = abs(result["losses"][0] - base["losses"][0])
        rows.append(row)
    notes = ["Each configuration runs in its own worker process on the same seeded weights and batches: warm-up "
             "steps, then timed steps (AdamW, deep-supervised Dice + BCE, as glims train).",
             "The first (warm-up) step's loss differs between the layouts only by float32 rounding (same function, same "
             "weights and batch), with bf16 autocast by the forward pass's bf16 rounding; later losses drift apart "
             "slowly, as two runs on different thread counts do, "
             "because AdamW's normalised updates amplify rounding differences in near-zero gradients."]
    return BenchReport("train", "Training steps per second (default configuration)", columns, rows, context, notes)


TARGETS: dict[str, BenchTarget] = {
    t.name: t for t in (NetworkBenchmark(), SegmentBenchmark(), TrainBenchmark())
}

if __name__ != "__main__":  # a measuring worker (python -m glims.bench) needs no targets, and would import itself
    from .bench_warm import WarmWorkerBenchmark  # it builds on the classes above

    TARGETS[WarmWorkerBenchmark.name] = WarmWorkerBenchmark()


if __name__ == "__main__":  # pragma: no cover - the worker entry point
    sys.exit(_worker_main(sys.argv[1:]))
