"""The resumable state of a training run, written atomically at the end of every epoch.

A run folder holds ``state.pt`` (optimizer state, epoch and step counters, schedule horizon, best metric, history,
random-number-generator state, configuration and split: tensors and plain Python values only, loaded with
``torch.load(weights_only=True)``, so a tampered file cannot run code) and the weights it refers to,
``last-eNNNN.safetensors`` + ``.json`` (our checkpoint format). The weights are written first under a new name,
then ``state.pt`` is replaced, then older weights are removed: a kill at any moment leaves a ``state.pt`` whose
weights exist and match its recorded sha256.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import CheckpointError
from ..fileio import atomic_write, sha256_file
from ..runfolders import STATE_FILE

__all__ = ["STATE_FILE", "save_state", "load_state"]

logger = logging.getLogger(__name__)

STATE_FORMAT = "glims-train-state"
STATE_VERSION = 1


def save_state(run_dir: Path, model: torch.nn.Module, architecture: Mapping[str, Any], state: dict[str, Any]) -> Path:
    """Write the weights of ``model`` and ``state`` (plain values and tensors) for epoch ``state['epoch']``."""
    epoch = int(state["epoch"])
    meta_path = save_checkpoint(
        run_dir / f"last-e{epoch:04d}",
        model.state_dict(),
        architecture,
        extra={"training_state": STATE_FILE, "epoch": epoch},
    )
    weights = meta_path.with_suffix(".safetensors")
    payload = {
        **state,
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "weights_file": weights.name,
        "weights_sha256": sha256_file(weights),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(run_dir / STATE_FILE) as handle:
        handle.write(buffer.getvalue())
    for old in run_dir.glob("last-e*.safetensors"):
        if old.name != weights.name:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    return run_dir / STATE_FILE


def load_state(run_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(state, model state_dict) of a run folder.

    Raises:
        CheckpointError: no state, a state that is not ours or holds Python objects, or weights that are missing
            or do not match the recorded sha256.
    """
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"nothing to resume in {run_dir}: {STATE_FILE} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types; all mean "refused"
        raise CheckpointError(f"cannot load {path}: {str(err).splitlines()[0][:200]}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a glims training state")
    weights = run_dir / str(state["weights_file"])
    loaded = load_checkpoint(weights, expected_sha256=str(state["weights_sha256"]))
    return state, loaded.state_dict
