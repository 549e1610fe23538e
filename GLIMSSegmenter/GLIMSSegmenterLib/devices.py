"""Which compute devices this computer offers the engine (shown in the panel's device choice).

torch is never imported into Slicer's process for this: importing it takes seconds and hundreds of megabytes,
and only the engine process uses it. A short probe runs in the engine's Python instead (``PythonSlicer`` in
Slicer), in the background, and reports what torch sees there, which is also what the engine will see.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping

from .engine import engineEnvironment, pythonExecutable

__all__ = ["DeviceProbe", "detectDevices", "cpuDevice"]

logger = logging.getLogger(__name__)

_PROBE = """\
import importlib.util, json
found = {}
if importlib.util.find_spec("torch") is not None:
    import torch
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        more = f" (+{count - 1} more)" if count > 1 else ""
        found["cuda"] = f"GPU: {torch.cuda.get_device_name(0)}, {memory:.0f} GiB{more}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found["mps"] = "GPU: Apple Metal (MPS)"
print(json.dumps(found))
"""
"""Run by the engine's Python: prints one JSON object, device -> description, of the GPUs torch sees."""


def cpuDevice() -> dict[str, str]:
    """The CPU entry, known without asking torch."""
    return {"cpu": f"CPU ({os.cpu_count() or 1} cores)"}


class DeviceProbe:
    """The probe running in the background: :meth:`poll` until it returns the devices.

    Args:
        python: the engine's interpreter (default: ``PythonSlicer`` in Slicer, else this interpreter).
        env: the engine's environment (default: :func:`engine.engineEnvironment`).
        timeout: seconds after which the probe is stopped and only the CPU is reported.
    """

    def __init__(self, python: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 120.0) -> None:
        self._deadline = time.monotonic() + timeout
        self._result: dict[str, str] | None = None
        self._process = subprocess.Popen(
            [python or pythonExecutable(), "-c", _PROBE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else engineEnvironment(),
            text=True,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )

    def poll(self) -> dict[str, str] | None:
        """Device -> description (``cpu`` always, ``cuda``/``mps`` when there), or None while still probing.

        A probe that fails or times out reports only the CPU (and logs why); the engine still picks the best
        device itself with ``auto``.
        """
        if self._result is not None:
            return self._result
        if self._process.poll() is None:
            if time.monotonic() < self._deadline:
                return None
            self._process.kill()
            self._process.communicate()
            logger.warning("the device probe did not answer in time; offering the CPU only")
            self._result = cpuDevice()
            return self._result
        stdout, stderr = self._process.communicate()
        self._result = {**cpuDevice(), **_parse(stdout, stderr, self._process.returncode)}
        return self._result

    def wait(self, pollInterval: float = 0.05) -> dict[str, str]:
        """Block until the probe has answered (for scripts and tests)."""
        while (result := self.poll()) is None:
            time.sleep(pollInterval)
        return result


def _parse(stdout: str, stderr: str, returnCode: int) -> dict[str, str]:
    lines = stdout.strip().splitlines()
    if returnCode == 0 and lines:
        try:
            found = json.loads(lines[-1])
        except json.JSONDecodeError:
            found = None
        if isinstance(found, dict):
            return {str(k): str(v) for k, v in found.items() if k in ("cuda", "mps")}
    detail = (stderr.strip().splitlines() or [f"exit code {returnCode}"])[-1]
    logger.warning("could not query the compute devices (%s); offering the CPU only", detail)
    return {}


def detectDevices(python: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Device -> description: always ``cpu``; ``cuda``/``mps`` when torch sees them in the engine's Python.

    Blocks for the probe (a few seconds: it imports torch there); the panel uses :class:`DeviceProbe` instead.
    """
    return DeviceProbe(python, env).wait()
