"""How the Slicer module invokes the ``glims`` engine: which Python, which environment, which arguments.

The engine package ships inside the module folder (``GLIMSSegmenter/glims``), so the module folder goes first on
the child's ``PYTHONPATH``; inside Slicer the interpreter is ``PythonSlicer`` (Slicer's own Python with Slicer's
environment), elsewhere the current interpreter.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from glims.runoptions import given_arguments

__all__ = [
    "MODULE_DIR",
    "pythonExecutable",
    "engineEnvironment",
    "engineCommand",
    "segmentArguments",
    "finetuneArguments",
]

MODULE_DIR = Path(__file__).resolve().parent.parent
"""The module folder: holds GLIMSSegmenter.py, GLIMSSegmenterLib/ and the engine package glims/."""


def _slicerApplication():
    """``slicer.app`` inside the Slicer application, None elsewhere (slicer-core, plain Python)."""
    try:
        import slicer
    except ImportError:
        return None
    return getattr(slicer, "app", None)


def pythonExecutable() -> str:
    """``PythonSlicer`` when running inside Slicer, otherwise this interpreter."""
    if _slicerApplication() is not None:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def engineEnvironment(
    base: Mapping[str, str] | None = None, glimsHome: str | os.PathLike | None = None, forceCpu: bool = False
) -> dict[str, str]:
    """The child's environment: ``base`` (default: this process's) with the engine importable.

    Args:
        base: environment to start from; default: Slicer's start-up environment inside Slicer (``PythonSlicer``
            is a launcher that sets up its own), this process's environment elsewhere.
        glimsHome: user folder for models (sets ``GLIMS_HOME``); None keeps the inherited value.
        forceCpu: hide GPUs from the child.
    """
    if base is None:
        base = os.environ
        if _slicerApplication() is not None:
            import slicer

            base = slicer.util.startupEnvironment()
    env = dict(base)
    paths = [str(MODULE_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if glimsHome is not None:
        env["GLIMS_HOME"] = str(glimsHome)
    if forceCpu:
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


def engineCommand(arguments: Sequence[str], python: str | None = None) -> list[str]:
    """``[python, -m, glims, *arguments]``."""
    return [python or pythonExecutable(), "-m", "glims", *[str(a) for a in arguments]]


def _option(flag: str, value, text: Callable[[object], str]) -> list[str]:
    """``[flag, text(value)]``, or nothing when ``value`` is None (the engine's default applies)."""
    return [] if value is None else [flag, text(value)]


def segmentArguments(
    modelId: str,
    inputPaths: Sequence[str | os.PathLike],
    outputPath: str | os.PathLike,
    labelmapPath: str | os.PathLike | None = None,
    reportPath: str | os.PathLike | None = None,
    **options,
) -> list[str]:
    """Arguments of ``glims segment`` with JSON progress, inputs in the catalog's input order.

    Args:
        options: run options by name (``glims.runoptions.RUN_OPTIONS``: ``device``, ``overlap``,
            ``testTimeFlips``, ``wholeImage``, ...); one that is None (or an unset flag) is not sent, so the
            model's own value applies.

    Raises:
        KeyError: a name that is not a run option.
    """
    arguments = ["segment", "-m", modelId]
    for path in inputPaths:
        arguments += ["-i", str(path)]
    arguments += ["-o", str(outputPath)]
    arguments += _option("--labelmap", labelmapPath, str) + _option("--report", reportPath, str)
    arguments += given_arguments(options)
    arguments += ["--progress", "json"]
    return arguments


@dataclass(frozen=True)
class FineTuneSettings:
    """The options of one ``glims finetune`` run, as :meth:`FineTuningLogic.startFineTuning` takes them.

    Attributes:
        epochs, minutes: the budget (at least one; with both, whichever ends first).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        threads: CPU threads of the engine (None: its default).
        valFraction: share of cases held out when there are more than five (None: the engine's default).
        resume: continue the interrupted run of the model name.
    """

    epochs: int | None = None
    minutes: float | None = None
    device: str = "auto"
    threads: int | None = None
    valFraction: float | None = None
    resume: bool = False


def finetuneArguments(baseModel: str, name: str, settings: FineTuneSettings) -> list[str]:
    """Arguments of ``glims finetune`` on the training-set store, with JSON progress: ``baseModel`` (catalog
    reference of the starting model) fine-tuned into ``name`` (registered as its next version)."""
    arguments = ["finetune", "-m", baseModel, "--name", name]
    arguments += _option("--epochs", settings.epochs, lambda v: str(int(v)))
    arguments += _option("--minutes", settings.minutes, "{:g}".format)
    arguments += ["--device", settings.device] + _option("--threads", settings.threads, lambda v: str(int(v)))
    arguments += _option("--val-fraction", settings.valFraction, "{:g}".format)
    if settings.resume:
        arguments.append("--resume")
    arguments += ["--progress", "json"]
    return arguments
