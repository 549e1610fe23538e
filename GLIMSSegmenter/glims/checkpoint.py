"""Loading and saving GLIMS weights safely.

Two formats are read:

* **the authors' format**: a ``torch.save`` dict with ``state_dict``, ``epoch``, ``best_acc`` (a numpy scalar) and
  optionally ``optimizer``/``scheduler``; keys may carry a ``module.`` (DataParallel) or ``backbone.`` prefix. It is
  unpickled with ``weights_only=True`` and an explicit allowlist of numpy scalar types, so a pickle that would
  import or call anything else (``os.system``...) is refused before any of it runs.
* **ours** (``glims-checkpoint`` v1): ``NAME.safetensors`` (tensors only, no pickle) plus ``NAME.json`` metadata:
  architecture config, task preset, label table, glims version and the sha256 of the weights file.

Writes are atomic: each file goes to a temporary name in the target folder and is renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .fileio import atomic_write, current_umask, sha256_file, write_json  # re-exported: older imports keep working

__all__ = [
    "FORMAT_NAME",
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_state_dict",
    "save_checkpoint",
    "load_into_model",
    "infer_architecture",
    "sha256_file",
    "atomic_write",
    "write_json",
    "current_umask",
]

FORMAT_NAME = "glims-checkpoint"
FORMAT_VERSION = 1
_PREFIXES = ("module.", "backbone.", "_orig_mod.")
_SAFETENSORS_META_KEY = "glims"
# Buffers fully determined by the architecture (the attention window's relative-position index, 18 x 343 x 343
# int64 = 17 MB in the reference model). Our format does not store them; loading takes them from the model.
DERIVED_BUFFER_SUFFIXES = (".relative_position_index",)


def is_derived_buffer(key: str) -> bool:
    return key.endswith(DERIVED_BUFFER_SUFFIXES)


@dataclass
class LoadedCheckpoint:
    """A state_dict with what is known about it."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    """Our JSON metadata, or for the authors' format ``{"epoch": .., "best_acc": ..}``."""
    source_format: str = "glims-checkpoint"
    """``glims-checkpoint`` or ``authors-torch``."""
    path: Path | None = None


def _numpy_allowlist() -> list[Any]:
    """Numpy objects a training script's metrics may leave in a checkpoint: scalars, dtypes and plain arrays.

    Each is data reconstruction only. Names are given for numpy 1.x (``numpy.core``) and 2.x (``numpy._core``)
    pickles alike.
    """
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: list[Any] = [np.dtype, np.ndarray]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.append((multiarray.scalar, f"{module}.scalar"))
        allowed.append((multiarray._reconstruct, f"{module}._reconstruct"))
    allowed.extend(type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG")
    return allowed


def _load_torch_pickle(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_numpy_allowlist()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = str(err).split("\n")
        offending = next((line.strip() for line in detail if "GLOBAL" in line or "Unsupported" in line), detail[0])
        raise CheckpointError(
            f"refused to load {path.name}: it contains Python objects that are not plain weights and could run "
            f"code when unpickled ({offending.strip()[:160]}). Only checkpoints you trust and that hold tensors "
            "and numbers can be loaded."
        ) from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt file; all mean "unreadable"
        raise CheckpointError(f"cannot read {path.name} as a PyTorch checkpoint: {str(err).splitlines()[0]}") from None


def _strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        cleaned[key] = value
    return cleaned


def _from_authors_payload(payload: Any, path: Path) -> LoadedCheckpoint:
    if isinstance(payload, Mapping) and "state_dict" in payload:
        raw, extra = payload["state_dict"], {k: payload[k] for k in ("epoch", "best_acc") if k in payload}
    elif isinstance(payload, Mapping) and "model" in payload and isinstance(payload["model"], Mapping):
        raw, extra = payload["model"], {}
    elif isinstance(payload, Mapping) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        raw, extra = payload, {}
    else:
        raise CheckpointError(f"{path.name} holds no state_dict (expected a dict with a 'state_dict' entry)")
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path.name}: 'state_dict' is not a mapping of names to tensors")
    meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in extra.items()}
    return LoadedCheckpoint(_strip_prefixes(raw), meta, "authors-torch", path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path.name} as safetensors: {err}") from None
    return tensors, header


def _check_metadata(metadata: Any, source: str) -> None:
    """Refuse metadata whose fields have the wrong types (an architecture that is not GLIMS's, a training record
    that is not an object) before anything builds a network from it.

    Raises:
        CheckpointError: naming the field and what it should be.
    """
    from .network import GLIMSConfig

    if not isinstance(metadata, dict):
        raise CheckpointError(f"{source} is not a JSON object (found {type(metadata).__name__})")
    architecture = metadata.get("architecture")
    if architecture is not None:
        if not isinstance(architecture, dict):
            raise CheckpointError(f"{source}: 'architecture' is not a JSON object")
        if architecture.get("name", "GLIMS") != "GLIMS":
            raise CheckpointError(f"{source}: architecture {architecture.get('name')!r} is not GLIMS")
        fields = {k: v for k, v in architecture.items() if k != "name"}
        defaults = {name: f.default for name, f in GLIMSConfig.__dataclass_fields__.items()}
        for key, value in fields.items():
            if key not in defaults:
                raise CheckpointError(f"{source}: unknown architecture field {key!r}")
            expected = defaults[key]
            whole = isinstance(value, int) and not isinstance(value, bool)
            if isinstance(expected, tuple):
                ok = whole or (
                    isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                )
            else:
                ok = whole
            if not ok:
                kind = "a list of whole numbers" if isinstance(expected, tuple) else "a whole number"
                raise CheckpointError(f"{source}: architecture field {key!r} must be {kind}, not {value!r}")
        try:
            GLIMSConfig.from_dict(fields)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: invalid architecture ({err})") from None
    training = metadata.get("training")
    if training is not None:
        if not isinstance(training, dict):
            raise CheckpointError(f"{source}: 'training' is not a JSON object")
        spacing = training.get("spacing")
        if spacing is not None and not (
            isinstance(spacing, list)
            and len(spacing) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in spacing)
        ):
            raise CheckpointError(f"{source}: training 'spacing' must be three positive numbers, not {spacing!r}")


def _load_ours(meta_path: Path | None, weights_path: Path, expected_sha256: str | None) -> LoadedCheckpoint:
    metadata: dict[str, Any] = {}
    if meta_path is not None:
        try:
            found = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"cannot read checkpoint metadata {meta_path.name}: {err}") from None
        if not isinstance(found, dict) or found.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{meta_path.name} is not {FORMAT_NAME} metadata")
        _check_metadata(found, meta_path.name)
        metadata = found
        expected_sha256 = expected_sha256 or metadata.get("sha256")
    if not weights_path.is_file():
        raise CheckpointError(f"weights file not found: {weights_path}")
    if expected_sha256:
        actual = sha256_file(weights_path)
        if actual != expected_sha256:
            raise CheckpointError(
                f"{weights_path.name}: sha256 {actual[:12]}… does not match the expected {expected_sha256[:12]}… "
                "(file corrupt, truncated or replaced)"
            )
    tensors, header = _read_safetensors(weights_path)
    if not metadata and _SAFETENSORS_META_KEY in header:
        source = f"the {_SAFETENSORS_META_KEY!r} metadata in {weights_path.name}'s header"
        try:
            found = json.loads(header[_SAFETENSORS_META_KEY])
        except (json.JSONDecodeError, TypeError) as err:
            raise CheckpointError(f"{source} is not valid JSON ({err})") from None
        _check_metadata(found, source)
        metadata = found
    return LoadedCheckpoint(_strip_prefixes(tensors), metadata, FORMAT_NAME, weights_path)


def load_checkpoint(path: str | os.PathLike, expected_sha256: str | None = None) -> LoadedCheckpoint:
    """Read any supported weights file.

    Args:
        path: ``NAME.json`` or ``NAME.safetensors`` (ours), or a ``.pt``/``.pth`` file in the authors' format.
        expected_sha256: if given, the weights file must have this sha256.

    Raises:
        CheckpointError: missing, corrupt, unsafe (code-executing pickle) or checksum mismatch.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".json":
        meta = path
        try:
            weights_name = json.loads(path.read_text()).get("weights", path.with_suffix(".safetensors").name)
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"cannot read checkpoint metadata {path.name}: {err}") from None
        return _load_ours(meta, path.parent / weights_name, expected_sha256)
    if path.suffix == ".safetensors":
        sidecar = path.with_suffix(".json")
        return _load_ours(sidecar if sidecar.is_file() else None, path, expected_sha256)
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"{path.name}: sha256 does not match the expected {expected_sha256[:12]}…")
    return _from_authors_payload(_load_torch_pickle(path), path)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict of any supported weights file, with ``module.``/``backbone.`` prefixes removed.

    Raises:
        CheckpointError: see ``load_checkpoint``; unsafe pickles are refused with the reason.
    """
    return load_checkpoint(path).state_dict


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    architecture: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``NAME.safetensors`` and ``NAME.json`` atomically; returns the JSON path.

    Args:
        path: ``NAME``, ``NAME.json`` or ``NAME.safetensors``.
        state_dict: tensors to store (prefixes removed; contiguous CPU copies are written).
        architecture: ``{"name": "GLIMS", **GLIMSConfig.to_dict()}``.
        extra: further metadata (task preset, labels, training summary...).
        dtype: store floating tensors in this dtype (e.g. ``torch.float16``); integer buffers are kept.
    """
    from safetensors.torch import save as safetensors_bytes

    from . import __version__

    base = Path(path)
    if base.suffix in (".json", ".safetensors"):
        base = base.with_suffix("")
    weights_path, meta_path = base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")
    tensors = {}
    for key, value in _strip_prefixes(state_dict).items():
        if is_derived_buffer(key):
            continue
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    embedded = {"architecture": dict(architecture), "glims_version": __version__}
    blob = safetensors_bytes(tensors, metadata={_SAFETENSORS_META_KEY: json.dumps(embedded)})
    with atomic_write(weights_path) as handle:
        handle.write(blob)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "weights": weights_path.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "architecture": dict(architecture),
        "glims_version": __version__,
        **dict(extra or {}),
    }
    return write_json(meta_path, metadata)


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture config (GLIMSConfig fields) read off a GLIMS state_dict's shapes.

    Raises:
        CheckpointError: the tensors are not those of a GLIMS network.
    """
    try:
        stem = state_dict["stem.conv.weight"]
        out = state_dict["out1.conv.conv.weight"]
        pos = state_dict["t3.layer.position_embeddings"]
        heads = [
            state_dict[f"{s}.layer.blocks.0.attn.relative_position_bias_table"].shape[1] for s in ("t3", "t4_pre", "t4")
        ]
        depths = [
            len({k.split(".")[3] for k in state_dict if k.startswith(f"{s}.layer.blocks.")})
            for s in ("t3", "t4_pre", "t4")
        ]
        table = state_dict["t3.layer.blocks.0.attn.relative_position_bias_table"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not a GLIMS checkpoint: tensor {err.args[0]!r} is missing") from None
    side = round(pos.shape[-1] ** (1 / 3))
    window = (round(table ** (1 / 3)) + 1) // 2
    return {
        "in_channels": int(stem.shape[1]),
        "out_channels": int(out.shape[0]),
        "feature_size": int(stem.shape[0]),
        "img_size": [side * 8] * 3,
        "num_heads": [heads[0] // 2 or 1, *heads],
        "depths": [depths[0], *depths],
        "window": int(window),
    }


def load_into_model(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state_dict`` into ``model`` after checking every key and shape.

    Derived buffers (see ``DERIVED_BUFFER_SUFFIXES``) absent from ``state_dict`` keep the model's own values; when
    present they must equal them.

    Raises:
        CheckpointError: one message naming the missing, unexpected and mis-shaped tensors (first few of each).
    """
    expected = model.state_dict()
    given = _strip_prefixes(state_dict)
    for key in expected:
        if is_derived_buffer(key) and key not in given:
            given[key] = expected[key]
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    misshaped = [
        f"{k} {tuple(given[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
        raise CheckpointError("checkpoint does not fit the model architecture: " + "; ".join(parts))
    wrong_index = [
        k for k in expected if is_derived_buffer(k) and not torch.equal(given[k].to(expected[k]), expected[k])
    ]
    if wrong_index:
        raise CheckpointError(
            f"checkpoint does not fit the model architecture: {wrong_index[0]} differs (window size?)"
        )
    model.load_state_dict(dict(given), strict=True)
