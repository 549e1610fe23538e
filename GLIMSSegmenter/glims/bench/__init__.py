"""Benchmarks of the engine on this machine: ``glims bench TARGET``.

A *target* is one benchmark: ``network`` (a single forward pass at the reference window), ``segment`` (a whole
case through ``glims.pipeline``, against the slow reference pipeline), ``settings`` (inference settings against
the catalog default on real cases: time and agreement) and ``train`` (optimiser steps per second of
the default training configuration). Every measurement runs in a fresh subprocess (``python -m glims.bench worker
SPEC``) so that each model's peak resident memory (``ru_maxrss``) is its own and no model warms the caches or the
allocator for another; the parent only collects the JSON each worker prints and builds a ``BenchReport`` (Markdown
table, or JSON), with the machine context the figures depend on (CPU, cores, torch version, threads, load average
before and after).

The package: ``report`` (``BenchReport``), ``machine`` (context, devices, timers, peak memory), ``workers`` (the
subprocesses), ``target`` (``BenchTarget``) and one module per target (``network``, ``segment``, ``settings``,
``train``, ``warm``).

Adding a target: a module with a frozen spec dataclass (the run's settings, whose defaults are the command line's),
a ``BenchTarget`` subclass (name, help, ``spec_type``, ``add_arguments`` declaring the spec's fields as options
through ``add_spec_options``, ``run(spec)``; ``spec_from_args`` only where an option's name or form differs from
its field), a worker function registered with ``@worker("NAME")`` that measures one configuration inside its
subprocess and returns a JSON-able dict, and an instance in ``TARGETS`` below. ``glims bench`` and its tests pick
it up from there.

Importing this package is cheap (no torch); heavy imports happen inside the workers and ``run`` methods.
"""

from __future__ import annotations

from typing import Any

from .machine import load_average, machine_context
from .network import NETWORK_MODELS, NetworkBenchmark, NetworkModel, NetworkSpec, combine_rounds
from .report import BenchReport
from .segment import SEGMENT_CONFIGS, SegmentBenchmark, SegmentSpec
from .settings import SettingsBenchmark, SettingsSpec
from .target import BenchTarget
from .train import TRAIN_CONFIGS, TrainBenchmark, TrainSpec
from .warm import WarmSpec, WarmWorkerBenchmark
from .workers import BenchError, measure_in_subprocess, worker

__all__ = [
    "BenchReport",
    "BenchTarget",
    "NetworkBenchmark",
    "SegmentBenchmark",
    "SettingsBenchmark",
    "SettingsSpec",
    "TrainBenchmark",
    "WarmWorkerBenchmark",
    "WarmSpec",
    "NETWORK_MODELS",
    "TARGETS",
    "machine_context",
    "measure_in_subprocess",
    "worker",
    "BenchError",
    "NetworkModel",
    "NetworkSpec",
    "SegmentSpec",
    "TrainSpec",
    "SEGMENT_CONFIGS",
    "TRAIN_CONFIGS",
    "combine_rounds",
    "load_average",
]

TARGETS: dict[str, BenchTarget[Any]] = {
    t.name: t
    for t in (NetworkBenchmark(), SegmentBenchmark(), SettingsBenchmark(), TrainBenchmark(), WarmWorkerBenchmark())
}
"""Targets of ``glims bench``, by name (the order of ``glims bench --help``)."""
