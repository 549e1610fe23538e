"""Progress reporting and cancellation shared by every long-running engine function.

Library functions take keyword-only ``progress`` (a callable receiving ``ProgressEvent``) and ``cancel`` (a
``CancelToken``). The CLI's ``--progress json`` turns events into the **JSON-lines protocol v1** that the Slicer
module reads: one JSON object per stdout line, each with ``"v": 1`` and a ``"type"``:

* ``progress``: ``stage``, ``done``, ``total``, ``fraction`` (0..1 of the whole job), ``message``, optional ``data``
  (e.g. loss and Dice during training);
* ``log``: ``level``, ``message``;
* ``result``: ``outputs`` (name -> path) and optional ``summary``;
* ``error``: ``error`` (class name), ``message``, ``exit_code``.

Lines that do not parse as protocol v1 are plain log text to a reader.
A ``glims worker`` adds the request ``id`` to each line of a job and a few lines of its own (``glims.worker``).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import Cancelled

__all__ = [
    "PROTOCOL_VERSION",
    "ProgressEvent",
    "ProgressCallback",
    "StagePlan",
    "CancelToken",
    "JsonLinesReporter",
    "HumanReporter",
    "TextSink",
    "parse_protocol_line",
    "cancel_on_signals",
]

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a job: ``done`` of ``total`` units of ``stage``; ``fraction`` is the whole job's completion."""

    stage: str
    done: int
    total: int
    fraction: float
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]


class StagePlan:
    """Maps (stage, done, total) to the job's overall fraction from relative stage weights, and emits events."""

    def __init__(self, weights: Sequence[tuple[str, float]], progress: ProgressCallback | None) -> None:
        total = sum(w for _, w in weights) or 1.0
        self._start: dict[str, float] = {}
        self._span: dict[str, float] = {}
        acc = 0.0
        for name, weight in weights:
            self._start[name], self._span[name] = acc / total, weight / total
            acc += weight
        self._progress = progress

    def report(self, stage: str, done: int, total: int, message: str = "", **data: Any) -> None:
        if self._progress is None:
            return
        part = done / total if total else 1.0
        fraction = min(1.0, self._start.get(stage, 0.0) + self._span.get(stage, 0.0) * part)
        self._progress(ProgressEvent(stage, done, total, round(fraction, 4), message, data))


class CancelToken:
    """Set from another thread or a signal handler; long loops call ``check()`` between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise ``Cancelled`` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled(self.reason)


class cancel_on_signals:  # noqa: N801 - used as a context manager, reads like a function
    """Within the block, SIGINT/SIGTERM set the token instead of killing the process (previous handlers restored)."""

    def __init__(self, token: CancelToken, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.token, self.signals = token, signals
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> CancelToken:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self.token

    def _handle(self, signum: int, _frame: Any) -> None:
        self.token.cancel(f"cancelled by {signal.Signals(signum).name}")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class TextSink(Protocol):
    """Where a reporter writes: a text file such as ``sys.stdout``, or anything with its ``write`` and ``flush``."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class JsonLinesReporter:
    """Writes protocol v1 lines to a stream (stdout by default), flushed line by line."""

    def __init__(self, stream: TextSink | None = None, tags: Mapping[str, Any] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tags = dict(tags or {})
        """Fields added to every line (``glims worker`` tags each job's lines with its request ``id``)."""
        self._lock = threading.Lock()

    def emit(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"v": PROTOCOL_VERSION, "type": kind, **self.tags, **fields}, default=_json_default)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def __call__(self, event: ProgressEvent) -> None:
        fields: dict[str, Any] = {
            "stage": event.stage,
            "done": event.done,
            "total": event.total,
            "fraction": event.fraction,
            "message": event.message,
        }
        if event.data:
            fields["data"] = dict(event.data)
        self.emit("progress", **fields)

    def log(self, message: str, level: str = "info") -> None:
        self.emit("log", level=level, message=message)

    def result(self, outputs: Mapping[str, str], summary: Mapping[str, Any] | None = None) -> None:
        self.emit("result", outputs=dict(outputs), **({"summary": dict(summary)} if summary else {}))

    def error(self, err: BaseException, exit_code: int) -> None:
        self.emit("error", error=type(err).__name__, message=str(err), exit_code=exit_code)


class HumanReporter:
    """A one-line progress bar on stderr for people at a terminal."""

    def __init__(self, stream: TextSink | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self._last = ""

    def __call__(self, event: ProgressEvent) -> None:
        filled = int(round(event.fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"\r[{bar}] {event.fraction * 100:5.1f}% {event.stage:<11} {event.message}"[:120]
        if text != self._last:
            self.stream.write(text.ljust(len(self._last)))
            self.stream.flush()
            self._last = text
        if event.fraction >= 1.0:
            self.stream.write("\n")
            self._last = ""

    def log(self, message: str, level: str = "info") -> None:
        self.stream.write(("\n" if self._last else "") + message + "\n")
        self._last = ""


def parse_protocol_line(line: str) -> dict[str, Any] | None:
    """The protocol object on a line, or None if the line is not protocol v1 (then it is plain log text)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("v") != PROTOCOL_VERSION or "type" not in obj:
        return None
    return obj
