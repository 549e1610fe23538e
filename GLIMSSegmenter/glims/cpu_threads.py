"""How many CPU threads torch should use for a job, from the CPU time this process can actually get now.

torch's default is one thread per core. On a computer where other programs keep cores busy, every parallel region
of the forward waits for its slowest thread, and a thread that shares its core with a busy program is the slowest
by a scheduler time slice: the GLIMS fast path with two threads beside one busy process on two cores took 3.2x its
idle time, where one thread took about its one-thread time. So before a job the engine looks at what the cores
it may run on did over a short window (``measure_cpu_share``: Linux's per-CPU counters in ``/proc/stat`` over
0.1 s, the CPUs of ``os.sched_getaffinity``, the cgroup's CPU quota) and gives torch one thread per core that was
free (``threads_for``). Where other work leaves no core free, every thread time-shares a core anyway and each gets
its slices like any other program's thread, so the job then takes one thread per core again: on two cores under a
load average of about 8, two threads ran the fast path's forward in half the time of one. A thread count the user
sets explicitly always wins (``choose_threads(requested)``).

Where the counters are unavailable (macOS, Windows) the choice is torch's default of one thread per core, as before.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PROBE_WINDOW_S",
    "CpuShare",
    "ThreadChoice",
    "available_cores",
    "measure_cpu_share",
    "threads_for",
    "choose_threads",
    "apply_threads",
    "threads_in_log_line",
]

logger = logging.getLogger(__name__)

PROBE_WINDOW_S = 0.1
"""Length of the look at the CPU counters before a job (10 clock ticks per core at Linux's 100 Hz)."""

_FREE_ROUNDING = 0.5
"""A core counts as free when at least this much of it was idle: 1.6 free cores give 2 threads, 1.4 give 1."""

_PROC_STAT = Path("/proc/stat")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


@dataclass(frozen=True)
class CpuShare:
    """What the cores this process may use did during a probe window.

    Attributes:
        cores: CPUs this process may run on (its affinity set, capped by a cgroup CPU quota).
        busy_elsewhere: cores' worth of CPU time that other processes used on those CPUs during the window
            (0.0 = all idle, 1.0 = one core's worth busy), this process's own CPU time taken out.
        window_s: the window's wall length in seconds.
    """

    cores: int
    busy_elsewhere: float
    window_s: float


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a job runs with and why.

    Attributes:
        threads: what ``torch.set_num_threads`` gets.
        cores: CPUs the process may run on.
        reason: ``"requested"`` (the user's ``--threads``), ``"measured"`` (the probe), ``"streams"`` (not
            measured: the job runs one single-thread window stream per core, ``glims.inference.window_streams``) or
            ``"default"`` (no probe here: one thread per core).
        busy_elsewhere: the probe's busy cores, where it ran.
    """

    threads: int
    cores: int
    reason: str
    busy_elsewhere: float | None = None

    def describe(self) -> str:
        """One line for logs and reports, e.g. "1 thread of 2 cores (1.0 cores busy with other work)"."""
        text = f"{self.threads} thread{'s' if self.threads != 1 else ''} of {self.cores} cores"
        if self.reason == "requested":
            return text + " (requested)"
        if self.reason == "streams":
            return text + " (small windows: one window stream per core)"
        if self.busy_elsewhere is not None:
            return text + f" ({self.busy_elsewhere:.1f} cores busy with other work)"
        return text + " (CPU load not measurable here)"

    def log_line(self) -> str:
        """The line a job logs about its threads (``threads_in_log_line`` reads it back)."""
        return f"CPU threads: {self.describe()}"


def available_cores() -> int:
    """CPUs this process may run on: its affinity set where the OS has one, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota_cores()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def _cgroup_quota_cores() -> int | None:
    """Whole cores a cgroup v2 ``cpu.max`` quota allows (rounded up), or None where there is no quota."""
    try:
        fields = _CGROUP_CPU_MAX.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        return max(1, math.ceil(int(fields[0]) / int(fields[1])))
    except (ValueError, ZeroDivisionError):
        return None


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks summed over ``cpus`` from ``/proc/stat``; None where it cannot be read."""
    try:
        lines = _PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    seen = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal (guest time is already in user)
        values = [int(v) for v in rest.split()[:8]]
        if len(values) < 8:
            return None
        idle = values[3] + values[4]
        busy += sum(values) - idle
        total += sum(values)
        seen += 1
    return (busy, total) if seen else None


def measure_cpu_share(window_s: float = PROBE_WINDOW_S) -> CpuShare | None:
    """Look at the CPU counters of this process's CPUs for ``window_s`` seconds (the process sleeps meanwhile).

    Returns None where the OS has no per-CPU counters (anything but Linux) or the window saw no clock tick.
    """
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    before = _cpu_ticks(cpus)
    if before is None:
        return None
    own_before, wall_before = time.process_time(), time.perf_counter()
    time.sleep(window_s)
    after = _cpu_ticks(cpus)
    own = time.process_time() - own_before
    wall = time.perf_counter() - wall_before
    if after is None or after[1] <= before[1]:
        return None
    busy_fraction = (after[0] - before[0]) / (after[1] - before[1])  # of all the CPUs' time in the window
    busy_cores = busy_fraction * len(cpus) - own / wall
    return CpuShare(cores=available_cores(), busy_elsewhere=max(0.0, busy_cores), window_s=wall)


def threads_for(cores: int, busy_elsewhere: float) -> int:
    """Threads for a job on ``cores`` CPUs of which other work keeps ``busy_elsewhere`` cores' worth busy.

    Where some core is free (at least half of it idle), one thread per free core: a thread on a core that another
    program keeps busy gets a time slice now and then, and every parallel region waits for it, while threads on
    free cores never wait. Where no core is free, one thread per core: every thread then waits for its slices
    alike, and more threads get more of them.
    """
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    free = max(0.0, cores - max(0.0, busy_elsewhere))
    if free < _FREE_ROUNDING:
        return cores
    return max(1, min(cores, math.floor(free + _FREE_ROUNDING)))


def choose_threads(
    requested: int | None = None, window_s: float = PROBE_WINDOW_S, measure: bool = True
) -> ThreadChoice:
    """The thread count for a job: ``requested`` where given, else one per core the probe found free; with
    ``measure`` False (a job of window streams, which never wait for each other) one per core, without the probe's
    wait."""
    cores = available_cores()
    if requested is not None:
        return ThreadChoice(threads=requested, cores=cores, reason="requested")
    if not measure:
        return ThreadChoice(threads=cores, cores=cores, reason="streams")
    share = measure_cpu_share(window_s)
    if share is None:
        return ThreadChoice(threads=cores, cores=cores, reason="default")
    return ThreadChoice(
        threads=threads_for(share.cores, share.busy_elsewhere),
        cores=share.cores,
        reason="measured",
        busy_elsewhere=share.busy_elsewhere,
    )


def apply_threads(requested: int | None = None, measure: bool = True) -> ThreadChoice:
    """Choose the job's thread count (``choose_threads``) and give it to torch; call once per job, before it.

    Raises:
        ConfigError: ``requested`` is below 1.
    """
    import torch

    from .errors import ConfigError

    if requested is not None and requested < 1:
        raise ConfigError(f"--threads must be at least 1, got {requested}")
    choice = choose_threads(requested, measure=measure)
    torch.set_num_threads(choice.threads)
    logger.info("%s", choice.log_line())
    return choice


_LOG_LINE = re.compile(r"CPU threads: (\d+) threads? of")


def threads_in_log_line(line: str) -> int | None:
    """The thread count of a job's ``ThreadChoice.log_line`` found in ``line`` (a log line as any front end shows
    it), or None."""
    found = _LOG_LINE.search(line)
    return int(found.group(1)) if found else None
