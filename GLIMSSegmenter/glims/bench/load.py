"""A fixed, documented competing load for benchmarks: busy processes that run beside the timed work.

Each busy process is a plain Python loop (``while True: pass``) in its own interpreter, pinned with
``os.sched_setaffinity`` to one CPU of the benchmark's own set, counting from the last (the first to CPU n-1, the
second to CPU n-2, ...; more processes than CPUs wrap around). It never sleeps, so its CPU is busy for the whole
time it runs, as it would be beside a program that keeps one core busy (a build, a video call, another
segmentation). The processes start before a worker and are killed after it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BUSY_LOOP", "busy_processes", "load_cpus", "describe_load"]

BUSY_LOOP = "while True: pass"
"""What each busy process runs (Python source)."""

_START_TIMEOUT_S = 30.0
_SPINNING_CPU_S = 0.1


def load_cpus(count: int) -> list[int]:
    """The CPU each of ``count`` busy processes is pinned to: the benchmark's CPUs from the last one down."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS, Windows): CPU numbers only name the processes
        cpus = list(range(os.cpu_count() or 1))
    return [cpus[-1 - i % len(cpus)] for i in range(count)]


def describe_load(count: int) -> str:
    """One line for a report: what ``count`` busy processes are and where they run."""
    if count == 0:
        return "none"
    where = ", ".join(str(c) for c in load_cpus(count))
    plural = "es" if count != 1 else ""
    return f"{count} busy process{plural} (python -c '{BUSY_LOOP}') pinned to CPU {where}"


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[list[int]]:
    """Run ``count`` busy processes for the duration of the block; yields their process ids.

    Returns once each has started spinning (its own CPU time shows it), so that the timed work meets the load from
    its first instruction; kills and reaps them on the way out, also on errors.
    """
    procs: list[subprocess.Popen] = []
    try:
        for cpu in load_cpus(count):
            pin = f"import os\nif hasattr(os, 'sched_setaffinity'): os.sched_setaffinity(0, {{{cpu}}})\n"
            procs.append(subprocess.Popen([sys.executable, "-c", pin + BUSY_LOOP]))
        for proc in procs:
            _wait_until_spinning(proc)
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def _wait_until_spinning(proc: subprocess.Popen) -> None:
    """Until ``proc`` has used a little CPU time (Linux: its /proc stat; elsewhere a fixed wait)."""
    stat = Path(f"/proc/{proc.pid}/stat")
    if not stat.exists():
        time.sleep(0.5)
        return
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        user_ticks = int(stat.read_text().rsplit(")", 1)[1].split()[11])
        if user_ticks / ticks_per_s >= _SPINNING_CPU_S:
            return
        time.sleep(0.01)
