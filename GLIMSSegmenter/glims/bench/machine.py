"""What a timing depends on and how it is taken: machine context, devices, autocast, peak memory, timers.

Every function imports torch only when called, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def machine_context(threads: int | str) -> dict[str, Any]:
    """Facts a CPU timing depends on: CPU model, cores, Python/torch versions, threads (a count, or a description
    such as ``auto`` or ``1, 2``), load average now."""
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
    except ImportError:  # monai is optional (glims[bench]): only the SwinUNETR comparison needs it
        pass
    return ctx


def bench_device(name: str, precision: str) -> dict[str, str]:
    """Check a run's ``--device`` and ``--precision`` before any work, and describe them for the report.

    Raises:
        DeviceError: the device is not available here; ConfigError: fp16 asked for on the CPU (autocast to fp16
        is for GPUs; the CPU's reduced precision is bf16).
    """
    import torch

    from ..inference import resolve_device

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
