"""The fine-tuning run folders: where they are and what marks their state.

A run of ``glims finetune NAME`` works in ``<home>/finetune/<NAME>-<VERSION>``. ``state.pt`` appears there when its
first epoch ends (from then on the run can be resumed); ``registered.json`` when its model is in the catalog (the
run is finished). Standard library only: the Slicer module asks this module which runs it may offer to resume.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError
from .paths import check_name, home_folder

__all__ = ["STATE_FILE", "REGISTERED_FILE", "runs_folder", "run_folder", "has_state", "interrupted_runs"]

STATE_FILE = "state.pt"
"""The training state of a run (``glims.training.state``): written at the end of every epoch."""
REGISTERED_FILE = "registered.json"
"""Written when a run's model has been added to the catalog: the run is finished."""


def runs_folder(home: str | os.PathLike | None = None, *, create: bool = False) -> Path:
    """``<home>/finetune``: the folder of every fine-tuning run."""
    return home_folder("finetune", home, create=create)


def run_folder(name: str, version: str, home: str | os.PathLike | None = None) -> Path:
    """The folder of the run making version ``version`` of model ``name`` (not created here)."""
    return runs_folder(home) / f"{name}-{version}"


def has_state(run: Path) -> bool:
    """Whether ``run`` got past its first epoch (it holds a training state to resume from)."""
    return (run / STATE_FILE).is_file()


def interrupted_runs(name: str, home: str | os.PathLike | None = None) -> list[Path]:
    """The runs of model ``name`` that stopped after an epoch and were not finished, oldest first (by the time
    their folder last changed); none for a name that is not a valid model name (no run can have it)."""
    try:
        check_name(name, "model name")
    except ConfigError:
        return []
    folder = runs_folder(home)
    if not folder.is_dir():
        return []
    runs = (p for p in folder.glob(f"{name}-*") if has_state(p) and not (p / REGISTERED_FILE).is_file())
    return sorted(runs, key=lambda p: (p.stat().st_mtime, p.name))
