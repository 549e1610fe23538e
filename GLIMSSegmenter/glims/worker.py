"""``glims worker``: one long-lived engine process that runs ``glims`` commands on request, one at a time, and keeps
torch, the imported modules and the loaded models warm between them (the Slicer module's warm worker), and the
last prepared case (``glims.casecache``: a second request on the same unchanged input files skips reading and
preprocessing them).

A request is parsed by the ``glims`` command line's own parser and run by the command's own ``run`` function, so it
validates, writes (all-or-nothing) and reports exactly as the one-shot command ``glims COMMAND ... --progress
json`` does; only loading differs: networks come from a ``glims.modelcache.ModelCache``, the prepared inputs
from a ``glims.casecache.CaseCache``.

Protocol (JSON lines, protocol v1 of ``glims.progress``). Requests, one object per stdin line:

* ``{"v": 1, "type": "request", "id": ID, "command": "segment", "args": [...], "cwd": FOLDER}``: run
  ``glims segment ARGS`` (``cwd`` optional: relative paths are taken from there);
* ``{"v": 1, "type": "cancel", "id": ID}``: cancel that job (without ``id``: the running one). The job stops at its
  next check between units of work (stages, window batches) with the ``Cancelled`` error and writes nothing; the
  worker, its imports and its cached models stay;
* ``{"v": 1, "type": "shutdown"}``: cancel the running job, if any, and exit.

Answers, one object per stdout line: ``ready`` (``pid``, ``glims_version``, ``commands``, ``idle_timeout_s``) once
the heavy modules are imported; per job ``started``, then the command's ``progress``/``log``/``result``/``error``
lines, then ``done`` (``exit_code`` as the one-shot command's; ``model_cache`` and ``case_cache``: the hits and
misses of this job's lookups in each), every
one of them with the request's ``id``; an ``error`` (no ``done``) for a line that is not a request; ``exit``
(``reason``: ``idle``, ``shutdown``, ``input closed``) when the worker leaves. A request that cannot run (unknown
command, bad arguments, another job running) gets one ``error`` line and its ``done``; the worker stays up.

The worker exits after ``idle_timeout`` seconds without a request (its memory goes back to the system), on
``shutdown``, and when its standard input closes (the front end exited). SIGINT and SIGTERM during a job cancel
that job, as they do for the one-shot command. Anything a library prints goes to stderr: stdout carries only the
protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import queue
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from . import __version__
from .casecache import CaseCache, use_case_cache
from .cli import UsageError, UserInterface, build_parser
from .errors import Cancelled, GlimsError, InternalError, RequestError
from .modelcache import ModelCache, use_model_cache
from .progress import PROTOCOL_VERSION, CancelToken, JsonLinesReporter
from .workercache import CacheStats

__all__ = ["Worker", "WORKER_COMMANDS", "DEFAULT_IDLE_TIMEOUT_S", "protocol_stream"]

WORKER_COMMANDS = ("segment",)
"""Commands a worker runs (each keeps its own options; see ``glims COMMAND --help``)."""

DEFAULT_IDLE_TIMEOUT_S = 600.0
"""A worker with nothing to do for this long exits."""

WARM_IMPORTS = ("glims.pipeline",)
"""Imported before ``ready``, so that the first job does not pay for them either."""


@dataclass
class _Job:
    id: str | int
    """The request's id, as the client sent it (echoed on every line of the job)."""
    cancel: CancelToken


class _LineStream:
    """A text stream whose ``write`` calls from several threads never interleave (one line per call here)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            written = self._stream.write(text)
            self._stream.flush()
        return written

    def flush(self) -> None:
        """Each write is flushed already."""


def protocol_stream() -> TextIO:
    """The process's stdout for protocol lines only; file descriptor 1 (``print``, C libraries) goes to stderr."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return protocol


class Worker:
    """Serves requests from a stream of lines until idle, shut down or the input ends.

    Args:
        protocol: where protocol lines go (see :func:`protocol_stream`).
        idle_timeout: seconds without a request before the worker exits; None: never.
        cache_size: models kept loaded.
        commands: the commands it runs.
    """

    def __init__(
        self,
        protocol: TextIO,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT_S,
        cache_size: int = 2,
        commands: Sequence[str] = WORKER_COMMANDS,
    ) -> None:
        self.stream = _LineStream(protocol)
        self.idle_timeout = idle_timeout
        self.cache = ModelCache(cache_size)
        self.cases = CaseCache()
        self.commands = tuple(commands)
        self.out = JsonLinesReporter(self.stream)
        self._requests: queue.Queue[dict[str, Any] | str] = queue.Queue()
        self._lock = threading.Lock()
        self._accepted: _Job | None = None  # the request queued or running (one at a time)
        self._parser: argparse.ArgumentParser | None = None

    # ---- the main thread ------------------------------------------------------------------------------------

    def serve(self, lines: Iterable[str]) -> str:
        """Read requests from ``lines`` (a thread) and run them here; returns why the worker stopped."""
        threading.Thread(target=self._read, args=(lines,), daemon=True, name="glims-worker-input").start()
        for module in WARM_IMPORTS:
            importlib.import_module(module)
        self._parser = build_parser()
        self.out.emit(
            "ready",
            pid=os.getpid(),
            glims_version=__version__,
            commands=list(self.commands),
            idle_timeout_s=self.idle_timeout,
        )
        with use_model_cache(self.cache), use_case_cache(self.cases):
            reason = self._run_requests()
        self.cache.clear()
        self.cases.clear()
        self.out.emit("exit", reason=reason)
        return reason

    def _run_requests(self) -> str:
        """Run the queued requests one by one until the worker is to stop; why it stops."""
        while True:
            try:
                item = self._requests.get(timeout=self.idle_timeout)
            except queue.Empty:
                return "idle"
            if isinstance(item, str):
                return item
            self._run(item)

    def _run(self, request: Mapping[str, Any]) -> None:
        with self._lock:
            job = self._accepted
        assert job is not None and job.id == request["id"]
        reporter = JsonLinesReporter(self.stream, tags={"id": job.id})
        ui = UserInterface("json", reporter)
        ui.cancel = job.cancel
        reporter.emit("started", command=request["command"])
        self.cache.on_lookup = self.cases.on_lookup = reporter.log
        self.cache.reset_stats()
        self.cases.reset_stats()
        try:
            code = self._execute(request, ui, reporter)
        finally:
            self.cache.on_lookup = self.cases.on_lookup = None
            with self._lock:
                self._accepted = None
        reporter.emit("done", exit_code=code, **_lookups(self.cache.reset_stats(), self.cases.reset_stats()))

    def _execute(self, request: Mapping[str, Any], ui: UserInterface, reporter: JsonLinesReporter) -> int:
        """Run one request as the command line would (``reporter``: ``ui``'s); the exit code it would have."""
        try:
            args = self._parse(request["command"], request["args"])
            with _working_directory(request.get("cwd")):
                return int(args._module.run(args, ui) or 0)
        except GlimsError as err:
            reporter.error(err, err.exit_code)
            return err.exit_code
        except KeyboardInterrupt:  # SIGINT between the command's own signal handlers
            reporter.error(Cancelled("cancelled by SIGINT"), Cancelled.exit_code)
            return Cancelled.exit_code
        except Exception as err:  # a fault in glims: its traceback on stderr, one line for the user, worker goes on
            traceback.print_exc(file=sys.stderr)
            reporter.error(InternalError.of(err, " (the traceback is in the worker's log)"), InternalError.exit_code)
            return InternalError.exit_code

    def _parse(self, command: str, arguments: Sequence[str]) -> argparse.Namespace:
        """The command line's own parsing of ``glims COMMAND ARGUMENTS --progress json``."""
        assert self._parser is not None
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
                return self._parser.parse_args([command, *arguments, "--progress", "json"])
        except UsageError as err:
            raise RequestError(f"glims {command}: {err}") from None
        except SystemExit:  # --help or --version: argparse printed and exits (usage errors raise UsageError)
            raise RequestError("--help and --version are not available in a worker request") from None

    # ---- the input thread -----------------------------------------------------------------------------------

    def _read(self, lines: Iterable[str]) -> None:
        try:
            for line in lines:
                if line.strip():
                    self._accept(line)
        finally:
            self._cancel_running(None, "cancelled: the worker's input closed")
            self._requests.put("input closed")

    def _accept(self, line: str) -> None:
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or message.get("v") != PROTOCOL_VERSION:
            self._refuse(None, f"not a protocol v{PROTOCOL_VERSION} object: {line.strip()[:120]}")
            return
        kind, job_id = message.get("type"), message.get("id")
        if kind == "cancel":
            self._cancel_running(job_id, "cancelled by request")
        elif kind == "shutdown":
            self._cancel_running(None, "cancelled: the worker is shutting down")
            self._requests.put("shutdown")
        elif kind == "request":
            self._queue_request(message)
        else:
            self._refuse(job_id, f"unknown message type {kind!r}; expected request, cancel or shutdown")

    def _queue_request(self, message: Mapping[str, Any]) -> None:
        job_id = message.get("id")
        if not isinstance(job_id, (str, int)) or isinstance(job_id, bool) or str(job_id) == "":
            self._refuse(None, "a request needs an id (a string or a number)")
            return
        command, arguments, cwd = message.get("command"), message.get("args", []), message.get("cwd")
        problem = ""
        if command not in self.commands:
            problem = f"this worker runs {', '.join(self.commands)}, not {command!r}"
        elif not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
            problem = "args must be a list of strings (the command's arguments)"
        elif cwd is not None and not isinstance(cwd, str):
            problem = "cwd must be a folder path"
        with self._lock:
            busy = self._accepted
            if not problem and busy is None:
                self._accepted = _Job(job_id, CancelToken())
        if not problem and busy is not None:
            problem = f"request {busy.id!r} is running: send one request at a time"
        if problem:
            self._refuse(job_id, problem, done=True)
            return
        self._requests.put({"id": job_id, "command": command, "args": list(arguments), "cwd": cwd})

    def _cancel_running(self, job_id: Any, reason: str) -> None:
        with self._lock:
            job = self._accepted
        if job is not None and (job_id is None or job_id == job.id):
            job.cancel.cancel(reason)

    def _refuse(self, job_id: Any, message: str, done: bool = False) -> None:
        err = RequestError(message)
        tags = {"id": job_id} if job_id is not None else {}
        reporter = JsonLinesReporter(self.stream, tags=tags)
        reporter.error(err, err.exit_code)
        if done:
            reporter.emit("done", exit_code=err.exit_code, **_lookups(CacheStats(), CacheStats()))


def _lookups(models: CacheStats, cases: CacheStats) -> dict[str, dict[str, int]]:
    """The ``done`` line's cache fields."""
    return {
        name: {"hits": stats.hits, "misses": stats.misses}
        for name, stats in (("model_cache", models), ("case_cache", cases))
    }


@contextlib.contextmanager
def _working_directory(path: str | None) -> Iterator[None]:
    if not path:
        yield
        return
    previous = os.getcwd()
    try:
        os.chdir(path)
    except OSError as err:
        raise RequestError(f"cannot run in folder {path}: {err.strerror}") from None
    try:
        yield
    finally:
        os.chdir(previous)
