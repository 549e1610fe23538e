"""``glims bench warm``: time from a Segment request to its result, one-shot process against the warm worker.

Three kinds of run on the same case and model, each timed from the moment the request leaves (the click) to the
moment the result is reported, on this machine's wall clock:

* **one-shot**: ``python -m glims segment ...`` in a new process, as every click ran before the worker (imports,
  model load, the job, exit);
* **worker, first Segment**: a new ``glims worker`` started by the click (imports, model load, the job);
* **worker, Segment N**: the same worker again (libraries imported, model cached: only the job).

Each row also has the engine's own ``timings_s.total`` from its report (the job without process start-up) and
whether the model came from the worker's cache. The front end's share of a click (writing the volumes, reading the
result into the scene) is not included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError
from ..progress import CancelToken, ProgressCallback, StagePlan, parse_protocol_line
from .machine import load_average, machine_context
from .report import BenchReport
from .segment import case_images, synthetic_case
from .target import BenchTarget, add_spec_options
from .workers import BenchError

__all__ = ["WarmSpec", "WarmWorkerBenchmark"]


def _engine_environment() -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass(frozen=True)
class WarmSpec:
    """What a ``warm`` run measures (the defaults are ``glims bench warm``'s)."""

    case: Path | None = None
    """BraTS case folder; None: a synthetic 240x240x155 case."""
    model: str | None = None
    """Catalog model; None: the default brats model (the bundled one)."""
    home: Path | None = None
    device: str = "cpu"
    repeats: int = 2
    """Warm requests after the first."""
    timeout: float = 3600
    """Seconds per one-shot run."""


def _segment_arguments(args: WarmSpec, inputs: list[str], out: Path) -> list[str]:
    arguments = ["--device", args.device, "-o", str(out / "seg.seg.nrrd"), "--report", str(out / "report.json")]
    if args.model:
        arguments += ["-m", args.model]
    if args.home:
        arguments += ["--home", str(args.home)]
    for path in inputs:
        arguments += ["-i", path]
    return arguments


def _engine_total(out: Path) -> float | None:
    try:
        return float(json.loads((out / "report.json").read_text())["timings_s"]["total"])
    except (OSError, ValueError, KeyError):
        return None


def _one_shot(args: WarmSpec, inputs: list[str], out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "glims", "segment", *_segment_arguments(args, inputs, out), "--progress", "none"]
    clock = time.perf_counter()
    proc = subprocess.run(
        command, capture_output=True, text=True, env=_engine_environment(), check=False, timeout=args.timeout
    )
    wall = time.perf_counter() - clock
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip()]
        raise BenchError(f"glims segment failed: {tail[-1] if tail else proc.returncode}")
    return {"wall_s": wall, "engine_s": _engine_total(out), "cache": "n/a (new process)"}


class _WorkerSession:
    """A ``glims worker`` process driven request by request (blocking reads: one job at a time)."""

    def __init__(self, stderr_file: Any) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "glims", "worker", "--idle-timeout", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
            env=_engine_environment(),
        )
        assert self.process.stdin is not None and self.process.stdout is not None  # both are pipes
        self._requests: IO[str] = self.process.stdin
        self._answers: IO[str] = self.process.stdout

    def segment(self, request_id: str, arguments: list[str]) -> dict[str, Any]:
        clock = time.perf_counter()
        self._requests.write(
            json.dumps({"v": 1, "type": "request", "id": request_id, "command": "segment", "args": arguments}) + "\n"
        )
        self._requests.flush()
        error = ""
        for line in self._answers:
            message = parse_protocol_line(line)
            if message is None or message.get("id") != request_id:
                continue
            if message["type"] == "error":
                error = message["message"]
            if message["type"] == "done":
                if message["exit_code"] != 0:
                    raise BenchError(f"the worker's segment failed: {error or message['exit_code']}")
                cache = message.get("model_cache", {})
                return {"wall_s": time.perf_counter() - clock, "cache": "hit" if cache.get("hits") else "miss"}
        raise BenchError("the worker stopped before it answered")

    def close(self) -> None:
        self._requests.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


class WarmWorkerBenchmark(BenchTarget[WarmSpec]):
    """Click-to-result time of a Segment: one-shot process, first and later requests to one warm worker."""

    name = "warm"
    help = "time from a segment request to its result: one-shot process vs first and second request to glims worker"
    spec_type = WarmSpec

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_spec_options(
            parser,
            WarmSpec,
            {
                "case": "case folder (default: a synthetic 240x240x155 BraTS-like case)",
                "model": "catalog model (default: the default brats model, the bundled one)",
                "home": "glims user folder holding --model",
                "device": "cpu (default), cuda or mps",
                "repeats": "warm requests after the first (default %(default)s)",
                "timeout": "seconds per one-shot run",
            },
        )

    def run(
        self, args: WarmSpec, *, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> BenchReport:
        if args.repeats < 1:
            raise ConfigError("--repeats must be at least 1")
        context = machine_context(threads=int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count() or 1)
        context["device"] = args.device
        plan = StagePlan([("one-shot", 1.0), ("worker", 1.0 + args.repeats)], progress)
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="glims-bench-warm-") as tmp:
            tmp_path = Path(tmp)
            if args.case:
                inputs = case_images(args.case)
                context["input"] = f"{args.case.name} (real case)"
            else:
                inputs = [str(p) for p in synthetic_case(tmp_path / "case", 0)]
                context["input"] = "synthetic BraTS-like case, 240x240x155, 1 mm"
            context["weights"] = args.model or "the default brats model"
            plan.report("one-shot", 0, 1, "one-shot glims segment")
            out = tmp_path / "one-shot"
            out.mkdir()
            rows.append({"run": "one-shot process (glims segment)", **_one_shot(args, inputs, out)})
            plan.report("one-shot", 1, 1, "one-shot done")
            with open(tmp_path / "worker-stderr.txt", "w") as stderr_file:
                session = _WorkerSession(stderr_file)
                try:
                    for index in range(args.repeats + 1):
                        if cancel is not None:
                            cancel.check()
                        out = tmp_path / f"worker-{index}"
                        out.mkdir()
                        label = (
                            "worker, first Segment (worker started by it)"
                            if index == 0
                            else f"worker, Segment {index + 1} (warm)"
                        )
                        measured = session.segment(f"r{index}", _segment_arguments(args, inputs, out))
                        rows.append({"run": label, **measured, "engine_s": _engine_total(out)})
                        plan.report("worker", index + 1, args.repeats + 1, label)
                finally:
                    session.close()
        context["load_after"] = load_average()
        columns = [
            ("run", "run"),
            ("wall_s", "request to result (s)"),
            ("engine_s", "engine job, report total (s)"),
            ("cache", "model from cache"),
        ]
        for row in rows:
            row["wall_s"] = round(row["wall_s"], 2)
        notes = [
            "Wall time from sending the request (starting the process, for one-shot) to the result; the "
            "front end's own share of a click (writing volumes, loading the result) is not included.",
            "The engine job's total is the sum of its stages (load, preprocess, infer, postprocess, write) "
            "from its report: the rest of the wall time is process start-up and imports.",
        ]
        return BenchReport("warm", "Segment: one-shot process against the warm worker", columns, rows, context, notes)
