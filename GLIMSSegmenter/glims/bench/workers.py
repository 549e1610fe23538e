"""Worker subprocesses: every measurement runs in a fresh ``python -m glims.bench worker KIND SPEC``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import GlimsError

__all__ = ["BenchError", "measure_in_subprocess", "worker", "worker_main"]

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
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding the glims package
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


def worker_main(argv: Sequence[str]) -> int:
    """A worker subprocess's entry point: ``worker KIND SPEC_JSON`` measures and prints one JSON line."""
    if len(argv) != 3 or argv[0] != "worker" or argv[1] not in _WORKERS:
        print(f"usage: python -m glims.bench worker {{{','.join(sorted(_WORKERS))}}} SPEC_JSON", file=sys.stderr)
        return 2
    spec = json.loads(argv[2])
    if spec.get("allocator") == "retain":
        from ..cpu_allocator import retain_freed_memory

        retain_freed_memory()
    result = _WORKERS[argv[1]](spec)
    print(json.dumps(result), flush=True)
    return 0
