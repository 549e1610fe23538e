"""The warm engine worker: one ``glims worker`` process kept between Segment clicks (Qt-free, MRML-free).

A one-shot engine process imports torch and SimpleITK and loads the model on every click. The worker does
that once and then runs one segmentation per request (``glims.worker`` defines the protocol). For the job and the
panel nothing changes: :class:`WorkerJobProcess` is an :class:`~GLIMSSegmenterLib.process.EngineProcess` (same
``start``/``poll``/``cancel``/``wait``, callbacks and outcome), backed by the shared worker instead of a process
of its own.

Behaviour:

* **One worker, one job at a time.** :func:`sharedWarmWorker` is the process-wide worker; a request for another
  interpreter or environment (e.g. another user folder) replaces it. While it runs a job (:attr:`WarmWorker.busy`),
  the logic runs another caller's segmentation in a process of its own.
* **Cancel** asks the worker to stop the job: it stops at its next check between units of work (stages, window
  batches), writes nothing and stays warm. If no answer comes within ``terminateGracePeriod`` seconds the worker's
  whole process tree is killed; the job ends as cancelled and the next Segment starts a fresh worker.
* **A crash** (killed, segfault, an error outside a job) ends the running job as failed with one line that says so;
  the next Segment starts a fresh worker. A worker that left because it was idle just before it read a request is
  replaced and the request sent again, silently.
* **Memory** is released when the worker exits: after ``idleTimeout`` seconds without a request (default 10
  minutes), on :meth:`WarmWorker.shutdown` (the module calls it when it closes), and when Slicer exits (the worker
  sees its input close).
* **No answer**: a worker that cannot read its requests (an interpreter launcher that does not pass its input on)
  either sees its input closed at once or never acknowledges a request (within ``answerTimeout`` seconds of being
  ready, ``startTimeout`` of being started). The job then fails with a message saying so, the worker is killed and
  :attr:`WarmWorker.unresponsive` is set: the logic runs later jobs as one-shot processes.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from glims.progress import PROTOCOL_VERSION, parse_protocol_line

from .engine import engineCommand
from .process import (
    CANCELLED_EXIT_CODE,
    EngineProcess,
    ProcessOutcome,
    ProcessState,
    popenEngine,
    startLineReaders,
    terminateProcessTree,
)

__all__ = ["WarmWorker", "WorkerProcess", "WorkerJobProcess", "sharedWarmWorker", "DEFAULT_IDLE_TIMEOUT"]

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 600.0
"""Seconds without a request after which the worker exits and its memory is released."""


def _describeExit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerProcess:
    """The ``glims worker`` process: its pipes, and two threads putting its lines on :attr:`lines`.

    Lines are ``(stream, text)`` with ``stream`` ``"stdout"`` or ``"stderr"``; ``text`` None marks the end of a
    stream. Nothing here interprets them (see :class:`WorkerJobProcess`).
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.command = [str(c) for c in command]
        self.env = dict(env) if env is not None else None
        self.lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.leaving = False
        """It said it exits (``exit`` line) or was told to; it takes no more requests."""
        self.ready = False
        """It said ``ready`` (its libraries are imported and it reads requests)."""
        self._openStreams = 0
        self._popen: subprocess.Popen | None = None
        self._writeLock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        logger.info("starting the engine worker: %s", subprocess.list2cmdline(self.command))
        self._popen = popenEngine(self.command, self.env, stdin=subprocess.PIPE)
        self._openStreams += startLineReaders(self._popen, self.lines, "glims-worker")

    def streamClosed(self) -> None:
        """Count one end-of-stream marker taken from :attr:`lines`."""
        self._openStreams -= 1

    @property
    def ended(self) -> bool:
        """Both streams have ended (their markers taken) and the process has exited."""
        return self._openStreams <= 0 and self._popen is not None and self._popen.poll() is not None

    def send(self, message: Mapping[str, Any]) -> bool:
        """Write one protocol line to the worker; False if its input is closed."""
        line = json.dumps({"v": PROTOCOL_VERSION, **message}) + "\n"
        with self._writeLock:
            try:
                self._popen.stdin.write(line)
                self._popen.stdin.flush()
                return True
            except (OSError, ValueError, AttributeError):
                return False

    def stop(self, wait: float = 5.0) -> None:
        """Ask the worker to exit (cancelling a job), close its input; kill its tree if still there after ``wait``."""
        if self._popen is None:
            return
        self.leaving = True
        if self.alive:
            self.send({"type": "shutdown"})
        try:
            self._popen.stdin.close()
        except OSError:
            pass
        try:
            self._popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            logger.warning("the engine worker did not exit within %.0f s; killing it", wait)
            self.kill()
            self._popen.wait(timeout=wait)

    def kill(self) -> None:
        """Kill the worker's whole process tree at once."""
        self.leaving = True
        if self._popen is not None:
            terminateProcessTree(self._popen.pid, kill=True)

    def discardPendingLines(self) -> None:
        """Drop what the worker wrote between jobs (kept in the log), noting an ``exit`` line."""
        while True:
            try:
                stream, line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self.streamClosed()
                continue
            message = parse_protocol_line(line) if stream == "stdout" else None
            if message is not None and message.get("type") == "exit":
                self.leaving = True
            if message is not None and message.get("type") == "ready":
                self.ready = True
            logger.debug("engine worker (between jobs): %s", line)


class WarmWorker:
    """Keeps one worker process for the jobs of this application (see the module docstring).

    Args:
        idleTimeout: seconds without a request before the worker exits (0: never).
        cacheSize: models the worker keeps loaded.
        answerTimeout: seconds a ready worker may take to acknowledge a request.
        startTimeout: seconds a new worker may take to become ready (imports) and acknowledge the request.
    """

    def __init__(
        self,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        cacheSize: int = 2,
        answerTimeout: float = 30.0,
        startTimeout: float = 300.0,
    ) -> None:
        self.idleTimeout = idleTimeout
        self.cacheSize = cacheSize
        self.answerTimeout = answerTimeout
        self.startTimeout = startTimeout
        self.unresponsive = False
        """The worker once failed to read a request: run jobs as one-shot processes instead."""
        self.process: WorkerProcess | None = None
        self.activeJob: WorkerJobProcess | None = None
        """The job sent to the worker last."""
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """A job sent to the worker has not finished yet."""
        return self.activeJob is not None and not self.activeJob.finished

    @property
    def running(self) -> bool:
        """A worker process is alive (it may be idle)."""
        return self.process is not None and self.process.alive

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running else None

    def workerCommand(self, python: str | None = None) -> list[str]:
        return engineCommand(
            ["worker", "--idle-timeout", f"{self.idleTimeout:g}", "--cache-size", str(self.cacheSize)], python
        )

    def acquire(self, python: str | None, env: Mapping[str, str] | None) -> WorkerProcess:
        """The live worker for this interpreter and environment, or a freshly started one."""
        command = self.workerCommand(python)
        with self._lock:
            current = self.process
            if current is not None:
                current.discardPendingLines()
                same = current.command == command and current.env == (dict(env) if env is not None else None)
                if same and current.alive and not current.leaving:
                    return current
                current.stop(wait=2.0)
            fresh = WorkerProcess(command, env)
            fresh.start()
            self.process = fresh
            return fresh

    def request(self, arguments: Sequence[str], python: str | None = None, **processOptions) -> WorkerJobProcess:
        """A job for the worker: ``arguments`` as for ``python -m glims`` (``["segment", ...]``); not yet started.
        ``processOptions``: those of :class:`EngineProcess` (``env``, ``cwd``, ``onProgress``, ...)."""
        return WorkerJobProcess(self, arguments, python=python, **processOptions)

    def shutdown(self, wait: float = 5.0) -> None:
        """Stop the worker now (its memory is released); a running job ends as cancelled. The next job starts one."""
        with self._lock:
            current, self.process = self.process, None
        if current is not None:
            current.stop(wait=wait)


_shared: WarmWorker | None = None


def sharedWarmWorker() -> WarmWorker:
    """The worker of this application, shared by every logic object (one worker process at most); its idle
    timeout in seconds comes from ``GLIMS_WORKER_IDLE_TIMEOUT`` when set."""
    global _shared
    if _shared is None:
        idle = os.environ.get("GLIMS_WORKER_IDLE_TIMEOUT", "").strip()
        _shared = WarmWorker(idleTimeout=float(idle) if idle else DEFAULT_IDLE_TIMEOUT)
    return _shared


class WorkerJobProcess(EngineProcess):
    """One request to the warm worker, with the interface of :class:`EngineProcess` (``command`` holds the glims
    arguments; :attr:`pid` is the worker's)."""

    def __init__(
        self, worker: WarmWorker, arguments: Sequence[str], python: str | None = None, **processOptions
    ) -> None:
        """``processOptions``: those of :class:`EngineProcess` (``env``, ``cwd``, ``onProgress``, ``onLog``,
        ``terminateGracePeriod``)."""
        super().__init__(arguments, **processOptions)
        self.worker = worker
        self.python = python
        self.requestId = uuid.uuid4().hex
        self.modelCache: dict[str, int] = {}
        """From the worker's ``done`` line: this job's model cache ``hits`` and ``misses``."""
        self._process: WorkerProcess | None = None
        self._acknowledged = False
        self._doneCode: int | None = None
        self._exitReason: str | None = None
        self._readyAt: float | None = None
        self._resent = False
        self._sentAt = 0.0
        self._crash = ""
        self._lastStderr = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Send the request (starting a worker when none is alive)."""
        if self.state is not ProcessState.NOT_STARTED:
            raise RuntimeError("a WorkerJobProcess can be started only once")
        self._send()
        self.state = ProcessState.RUNNING

    def _send(self) -> None:
        self._process = self.worker.acquire(self.python, self.env)
        self.worker.activeJob = self
        self._exitReason = None
        self._readyAt = None
        self._sentAt = time.monotonic()
        arguments = list(self.command)
        message = {"type": "request", "id": self.requestId, "command": arguments[0], "args": arguments[1:]}
        if self.cwd:
            message["cwd"] = self.cwd
        self._process.send(message)  # a closed input shows up as the worker's end in poll()

    def poll(self) -> bool:
        if self.state is ProcessState.NOT_STARTED or self.finished:
            return self.finished
        process = self._process
        while self._doneCode is None:
            try:
                stream, line = process.lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                process.streamClosed()
            else:
                self._route(stream, line)
        if self._doneCode is not None:
            self._finish(self._doneCode)
            return True
        now = time.monotonic()
        if self.state is ProcessState.CANCELLING and not self._killed:
            if now - (self._terminateSentAt or now) > self.terminateGracePeriod:
                logger.warning(
                    "the engine worker did not stop the job within %.0f s; killing it", self.terminateGracePeriod
                )
                process.kill()
                self._killed = True
        elif not self._acknowledged and not self._killed and self._exitReason is None:
            since = self._readyAt or (self._sentAt if process.ready else None)
            limit = self.worker.answerTimeout if since is not None else self.worker.startTimeout
            if now - (since or self._sentAt) > limit:
                self._giveUpOnWorker(f"did not answer within {limit:.0f} s")
                process.kill()
                self._killed = True
        if process.ended:
            if not self._acknowledged and self._exitReason == "input closed" and not self._crash:
                self._giveUpOnWorker("could not read its requests (its input was closed when it started)")
            elif (
                not self._acknowledged
                and self._exitReason == "idle"
                and not self._resent
                and self.state is ProcessState.RUNNING
            ):
                self._resent = True  # it left (idle) before it read the request: a fresh worker takes it
                self._send()
                return False
            if not self._crash:
                self._crash = (
                    f"the GLIMS engine worker stopped unexpectedly ({_describeExit(process.returncode)})"
                    f"{self._lastError()}; the next run starts a fresh worker"
                )
            self._endWithoutAnswer(process.returncode)
        return self.finished

    def _endWithoutAnswer(self, exitCode: int | None) -> None:
        """The worker ended before this job's ``done``: cancelled if that was asked for, else failed (its exit code
        may be 0: the worker itself ended normally)."""
        if self.state is ProcessState.CANCELLING:
            self._finish(CANCELLED_EXIT_CODE if exitCode is None else exitCode)
            return
        self.outcome = ProcessOutcome(
            ProcessState.FAILED, exitCode, self._crash, dict(self._outputs), dict(self._summary)
        )
        self.state = ProcessState.FAILED
        logger.info("engine worker job failed: %s", self._crash)

    def _giveUpOnWorker(self, what: str) -> None:
        self._crash = (
            f"the GLIMS engine worker {what}; it was stopped, and from now on each run starts the engine "
            "in a process of its own: run it again"
        )
        self.worker.unresponsive = True

    def _lastError(self) -> str:
        """The worker's last stderr line after an exit with an error code (e.g. an exception's), else nothing."""
        code = self._process.returncode
        return f": {self._lastStderr}" if self._lastStderr and code is not None and code > 0 else ""

    def _route(self, stream: str, line: str) -> None:
        message = parse_protocol_line(line) if stream == "stdout" else None
        if message is None:
            if line.strip():
                if stream == "stderr":
                    self._lastStderr = line.strip()
                self._log(line)
            return
        kind, requestId = message["type"], message.get("id")
        if requestId is None:
            if kind == "exit":
                self._exitReason = str(message.get("reason", ""))
                self._process.leaving = True
            elif kind == "ready":
                self._readyAt = time.monotonic()
                self._process.ready = True
            elif kind == "error":
                self._log(f"engine worker: {message.get('message', '')}")
            return
        if requestId != self.requestId:
            return  # a line of an earlier request
        if kind == "started":
            self._acknowledged = True
        elif kind == "done":
            self._acknowledged = True
            self.modelCache = dict(message.get("model_cache") or {})
            self._doneCode = int(message.get("exit_code", 1))
        else:
            self._handleLine(stream, line)

    def cancel(self) -> None:
        """Ask the worker to stop this job; killed with its tree if it has not stopped after the grace period."""
        if self.state is not ProcessState.RUNNING:
            return
        self.state = ProcessState.CANCELLING
        self._terminateSentAt = time.monotonic()
        if not self._process.send({"type": "cancel", "id": self.requestId}):
            self._process.kill()
            self._killed = True
