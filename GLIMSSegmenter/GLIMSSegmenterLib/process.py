"""Background engine process: runs a command, reads its JSON-lines progress without blocking, cancels its tree.

The engine (``python -m glims ... --progress json``) writes one protocol-v1 object per stdout line (see
``glims.progress``); anything else on stdout or stderr is plain log text. Two reader threads put lines on a queue;
the owner calls :meth:`EngineProcess.poll` from its own thread (Slicer: a QTimer on the GUI thread) and the
callbacks run there, so no MRML or Qt call ever happens off the main thread. Nothing here imports Qt or MRML.

Cancel sends SIGTERM (TerminateProcess on Windows) to the whole process tree, because ``PythonSlicer`` is a
launcher whose child does the work; the engine then stops between units of work and removes partial outputs. If
the tree is still alive after ``terminateGracePeriod`` seconds it is killed.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glims.errors import Cancelled
from glims.progress import ProgressEvent, parse_protocol_line

__all__ = [
    "popenEngine",
    "ProcessState",
    "ProcessOutcome",
    "EngineProcess",
    "terminateProcessTree",
    "startLineReaders",
    "CANCELLED_EXIT_CODE",
]

logger = logging.getLogger(__name__)

CANCELLED_EXIT_CODE = Cancelled.exit_code
"""The engine's exit code after a clean cancel (``glims.errors.Cancelled.exit_code``)."""

_LOG_TAIL_LINES = 50


class ProcessState(enum.Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (ProcessState.SUCCEEDED, ProcessState.FAILED, ProcessState.CANCELLED)


@dataclass
class ProcessOutcome:
    """How a finished process ended."""

    state: ProcessState
    exitCode: int | None
    errorMessage: str = ""
    """One readable line for the user when ``state`` is FAILED."""
    outputs: dict[str, str] = field(default_factory=dict)
    """From the engine's ``result`` line: output name -> path."""
    summary: dict[str, Any] = field(default_factory=dict)


def terminateProcessTree(pid: int, kill: bool = False) -> list[int]:
    """Send SIGTERM (or SIGKILL with ``kill``) to a process and all its descendants.

    Returns:
        The ids of the processes that were signalled.
    """
    import psutil  # a Slicer dependency of this module, checked by GLIMSSegmenterLib.dependencies

    try:
        root = psutil.Process(pid)
        tree = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return []
    signalled = []
    for proc in tree:
        try:
            proc.kill() if kill else proc.terminate()
            signalled.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return signalled


def startLineReaders(popen: subprocess.Popen, lines: queue.Queue, threadPrefix: str = "glims") -> int:
    """Start one daemon thread per output stream of ``popen`` (stdout, stderr) that puts ``(stream name, line)``
    on ``lines``, and ``(stream name, None)`` when the stream ends. Returns the number of streams."""

    def readLines(name: str, stream: Any) -> None:
        try:
            for line in stream:
                lines.put((name, line.rstrip("\r\n")))
        finally:
            stream.close()
            lines.put((name, None))

    for name, stream in (("stdout", popen.stdout), ("stderr", popen.stderr)):
        threading.Thread(target=readLines, args=(name, stream), daemon=True, name=f"{threadPrefix}-{name}").start()
    return 2


def popenEngine(command: Sequence[str], env: Mapping[str, str] | None, *, stdin: int, cwd=None) -> subprocess.Popen:
    """Start an engine process the way every front end does: unbuffered UTF-8 text lines on pipes, in a process
    group of its own (Ctrl+C in Slicer's terminal does not reach it) and without a console window on Windows."""
    environment = dict(env if env is not None else os.environ)
    environment.setdefault("PYTHONUNBUFFERED", "1")
    environment.setdefault("PYTHONIOENCODING", "utf-8")
    return subprocess.Popen(
        list(command),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=cwd,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        start_new_session=(sys.platform != "win32"),
        creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
    )


class EngineProcess:
    """One command run in the background; feed it :meth:`poll` calls until :attr:`finished`.

    Args:
        command: the program and its arguments (never a shell string).
        env: the complete environment of the process (default: this process's).
        onProgress: called with a ``glims.progress.ProgressEvent`` for each progress line.
        onLog: called with each log line (protocol ``log`` messages and plain text).
        terminateGracePeriod: seconds between SIGTERM and SIGKILL on cancel.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        onProgress: Callable[[ProgressEvent], None] | None = None,
        onLog: Callable[[str], None] | None = None,
        terminateGracePeriod: float = 10.0,
    ) -> None:
        self.command = [str(c) for c in command]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.onProgress = onProgress
        self.onLog = onLog
        self.terminateGracePeriod = terminateGracePeriod
        self.state = ProcessState.NOT_STARTED
        self.outcome: ProcessOutcome | None = None
        self._popen: subprocess.Popen | None = None
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._openStreams = 0
        self._outputs: dict[str, str] = {}
        self._summary: dict[str, Any] = {}
        self._engineError = ""
        self._logTail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
        self._terminateSentAt: float | None = None
        self._killed = False

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def finished(self) -> bool:
        return self.state.finished

    def start(self) -> None:
        """Start the process and its two reader threads."""
        if self.state is not ProcessState.NOT_STARTED:
            raise RuntimeError("an EngineProcess can be started only once")
        logger.info("starting: %s", subprocess.list2cmdline(self.command))
        self._popen = popenEngine(self.command, self.env, stdin=subprocess.DEVNULL, cwd=self.cwd)
        self.state = ProcessState.RUNNING
        self._openStreams += startLineReaders(self._popen, self._lines)

    def poll(self) -> bool:
        """Deliver the lines read so far to the callbacks and notice the end of the process.

        Returns:
            True once the process has ended and every line it wrote has been delivered.
        """
        if self.state is ProcessState.NOT_STARTED or self.finished:
            return self.finished
        while True:
            try:
                stream, line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._openStreams -= 1
            else:
                self._handleLine(stream, line)
        if self.state is ProcessState.CANCELLING and not self._killed:
            if time.monotonic() - (self._terminateSentAt or 0.0) > self.terminateGracePeriod:
                logger.warning("engine did not stop within %.0f s of SIGTERM; killing it", self.terminateGracePeriod)
                terminateProcessTree(self._popen.pid, kill=True)
                self._killed = True
        if self._openStreams == 0 and self._popen.poll() is not None:
            self._finish(self._popen.returncode)
        return self.finished

    def _handleLine(self, stream: str, line: str) -> None:
        message = parse_protocol_line(line) if stream == "stdout" else None
        if message is None:
            if line.strip():
                self._log(line)
            return
        kind = message["type"]
        if kind == "progress":
            event = ProgressEvent(
                stage=str(message.get("stage", "")),
                done=int(message.get("done", 0)),
                total=int(message.get("total", 0)),
                fraction=float(message.get("fraction", 0.0)),
                message=str(message.get("message", "")),
                data=message.get("data") or {},
            )
            if self.onProgress:
                self.onProgress(event)
        elif kind == "log":
            self._log(str(message.get("message", "")))
        elif kind == "result":
            self._outputs.update({str(k): str(v) for k, v in (message.get("outputs") or {}).items()})
            self._summary.update(message.get("summary") or {})
        elif kind == "error":
            self._engineError = str(message.get("message") or message.get("error") or "")
            self._log(f"error: {self._engineError}")
        else:  # a newer protocol message type: keep it visible
            self._log(line)

    def _log(self, text: str) -> None:
        self._logTail.append(text)
        if self.onLog:
            self.onLog(text)

    def _finish(self, exitCode: int) -> None:
        cancelled = self.state is ProcessState.CANCELLING or exitCode == CANCELLED_EXIT_CODE
        if exitCode == 0 and not cancelled:
            state, error = ProcessState.SUCCEEDED, ""
        elif cancelled:
            state, error = ProcessState.CANCELLED, ""
        else:
            state, error = ProcessState.FAILED, self._failureMessage(exitCode)
        self.outcome = ProcessOutcome(state, exitCode, error, dict(self._outputs), dict(self._summary))
        self.state = state
        logger.info("engine process %s (exit code %s)", state.value, exitCode)

    def _failureMessage(self, exitCode: int) -> str:
        if self._engineError:
            return self._engineError
        for line in reversed(self._logTail):  # the CLI's one-line "glims: error: ..." on stderr
            if "error:" in line:
                return line.split("error:", 1)[1].strip()
        last = next((line for line in reversed(self._logTail) if line.strip()), "")
        detail = f": {last.strip()}" if last else ""
        return f"the GLIMS engine stopped with exit code {exitCode}{detail}"

    def cancel(self) -> None:
        """Ask the whole process tree to stop (returns at once; keep polling until :attr:`finished`)."""
        if self.state is not ProcessState.RUNNING:
            return
        self.state = ProcessState.CANCELLING
        self._terminateSentAt = time.monotonic()
        terminateProcessTree(self._popen.pid)

    def wait(self, pollInterval: float = 0.05) -> ProcessOutcome:
        """Poll until the process has finished (for scripts and tests; the GUI polls from a timer instead)."""
        if self.state is ProcessState.NOT_STARTED:
            raise RuntimeError("the process was not started")
        while not self.poll():
            time.sleep(pollInterval)
        return self.outcome
