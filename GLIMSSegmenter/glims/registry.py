"""Changing the user's model catalog: registering weights, removing models, numbering versions, choosing defaults.

``glims.catalog`` reads the catalogs; this module writes the user's (``<home>/models/catalog.json``) and the weights
files beside it. Each change is a read-modify-write under the catalog's inter-process lock (``glims.locks``), and
the document is validated against the schema before it is written atomically. Registering a weights file builds
the network to check it, so this module sits above ``glims.network``; torch is imported only when a model is
registered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .catalog import (
    BUILTIN_CATALOG,
    Catalog,
    ModelSpec,
    load_catalog,
    load_presets,
    read_document,
    spec_from_entry,
    user_catalog_path,
    validate_document,
    version_key,
)
from .catalog_sections import OutputSpec
from .errors import CatalogError, ConfigError
from .fileio import write_json
from .locks import catalog_lock
from .paths import check_name, home_folder, remove_owned

__all__ = [
    "register_model",
    "remove_model",
    "set_default_model",
    "reset_default_model",
    "add_user_entry",
    "check_user_model_id",
    "next_version",
]


def _write_user_document(home: str | os.PathLike | None, document: dict[str, Any]) -> None:
    validate_document(document, "(user catalog being written)")
    write_json(user_catalog_path(home), document)


def _user_document(home: str | os.PathLike | None) -> dict[str, Any]:
    path = user_catalog_path(home)
    return read_document(path) if path.is_file() else {"catalog_version": 1, "models": []}


def check_user_model_id(model_id: str, catalog: Catalog | None = None, home: str | os.PathLike | None = None) -> str:
    """Return ``model_id`` if a user model may take it: a valid name (``glims.paths.check_name``) that is not the
    id of a built-in model.

    Raises:
        ConfigError: an invalid name or a built-in id.
    """
    check_name(model_id, "model id")
    catalog = catalog or load_catalog(home)
    if any(m.id == model_id and m.builtin for m in catalog.models):
        raise ConfigError(f"{model_id} is the id of a built-in model (reserved); choose another id")
    return model_id


def add_user_entry(entry: Mapping[str, Any], home: str | os.PathLike | None = None) -> ModelSpec:
    """Append one entry (weights already in ``<home>/models``) to the user catalog, atomically, under the lock.

    Raises:
        CatalogError: the entry is invalid or its id@version exists already. ConfigError: an invalid or built-in id.
    """
    with catalog_lock(home):
        document = _user_document(home)
        catalog = load_catalog(home)
        check_user_model_id(entry["id"], catalog)
        if any(m.id == entry["id"] and m.version == entry["version"] for m in catalog.models):
            raise CatalogError(f"model {entry['id']}@{entry['version']} already exists")
        document["models"].append(dict(entry))
        spec = spec_from_entry(entry, load_presets(), user_catalog_path(home).parent, False)
        _write_user_document(home, document)
    return replace(spec, default=False)


def next_version(catalog: Catalog, model_id: str) -> str:
    """1.0.0 for a new id, else the newest version with its minor number increased."""
    versions = catalog.versions(model_id)
    if not versions:
        return "1.0.0"
    major, minor, _ = version_key(versions[-1].version)
    return f"{major}.{minor + 1}.0"


def register_model(
    weights_file: str | os.PathLike,
    model_id: str,
    preset: str,
    *,
    title: str | None = None,
    description: str = "",
    license_text: str = "Unknown: added by the user; check the licence of the weights before sharing results.",
    home: str | os.PathLike | None = None,
    provenance: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """Verify a weights file (any supported format), store it as a glims checkpoint in the user folder, register it.

    The file is loaded safely (no code execution), its architecture is read off its tensors and checked by
    building the network and loading it strictly; it is then converted to safetensors under
    ``<home>/models/<id>-<version>.safetensors`` with its sha256 recorded. The original file is not modified. A
    checkpoint written by ``glims train --spacing S`` keeps that processing grid (``preprocessing.spacing``).

    Raises:
        CheckpointError: unreadable, unsafe or not a GLIMS checkpoint; CatalogError: bad id or preset.
    """
    from .checkpoint import infer_architecture, load_checkpoint, load_into_model, save_checkpoint
    from .network import build

    presets = load_presets()
    if preset not in presets:
        raise CatalogError(f"unknown preset {preset!r}; choose from {', '.join(presets)}")
    check_user_model_id(model_id, home=home)
    loaded = load_checkpoint(weights_file)
    architecture = loaded.metadata.get("architecture") or {"name": "GLIMS", **infer_architecture(loaded.state_dict)}
    architecture = {"name": "GLIMS", **{k: v for k, v in architecture.items() if k != "name"}}
    net = build(architecture)
    load_into_model(net, loaded.state_dict)
    expected_inputs = len(presets[preset]["inputs"])
    if net.config.in_channels != expected_inputs:
        raise CatalogError(
            f"{Path(weights_file).name} takes {net.config.in_channels} input channels; preset {preset} has "
            f"{expected_inputs} inputs"
        )
    labels = (overrides or {}).get("labels", presets[preset]["labels"])
    output = OutputSpec.from_dict({**presets[preset]["output"], **(overrides or {}).get("output", {})})
    expected_outputs = output.expected_out_channels(len(labels))
    if expected_outputs is not None and net.config.out_channels != expected_outputs:
        raise CatalogError(
            f"{Path(weights_file).name} gives {net.config.out_channels} output channels; preset {preset} needs "
            f"{expected_outputs}: it is not a {preset} model"
        )
    overrides = dict(overrides or {})
    trained = loaded.metadata.get("training") or {}
    if trained.get("spacing") and "preprocessing" not in overrides:
        # Trained by `glims train --spacing S`: the model only works on that processing grid.
        overrides["preprocessing"] = {"spacing": [float(v) for v in trained["spacing"]]}
    with catalog_lock(home):  # the version, the weights file named after it and the entry: one step
        version = next_version(load_catalog(home), model_id)
        models_dir = home_folder("models", home, create=True)
        meta_path = save_checkpoint(models_dir / f"{model_id}-{version}", net.state_dict(), architecture)
        meta = json.loads(meta_path.read_text())
        return add_user_entry(
            _added_entry(
                model_id,
                version,
                preset,
                weights_file,
                loaded.source_format,
                architecture,
                meta,
                title,
                description,
                license_text,
                provenance,
                overrides,
            ),
            home,
        )


def _added_entry(
    model_id: str,
    version: str,
    preset: str,
    weights_file: str | os.PathLike,
    source_format: str,
    architecture: Mapping[str, Any],
    meta: Mapping[str, Any],
    title: str | None,
    description: str,
    license_text: str,
    provenance: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The user-catalog entry of a weights file added with ``register_model``."""
    return {
        "id": model_id,
        "version": version,
        "title": title or model_id,
        "description": description or f"Added from {Path(weights_file).name}",
        "license": license_text,
        "preset": preset,
        "architecture": dict(architecture),
        "weights": [{"file": meta["weights"], "sha256": meta["sha256"]}],
        "provenance": {
            "source_file": str(Path(weights_file).resolve()),
            "source_format": source_format,
            "added": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **dict(provenance or {}),
        },
        **overrides,
    }


def remove_model(ref: str, home: str | os.PathLike | None = None) -> list[str]:
    """Remove user model versions (``ID`` = all versions, ``ID@VERSION`` = one) and their weights files.

    Raises:
        CatalogError: unknown in the user catalog, or a built-in model (those cannot be removed).
    """
    model_id, _, version = ref.partition("@")
    check_name(model_id, "model id")
    with catalog_lock(home):
        document = _user_document(home)
        keep, removed = [], []
        for entry in document["models"]:
            if entry["id"] == model_id and (not version or entry["version"] == version):
                removed.append(entry)
            else:
                keep.append(entry)
        if not removed:
            if any(m.id == model_id and m.builtin for m in load_catalog(home).models):
                raise CatalogError(f"{model_id} is a built-in model and cannot be removed")
            raise CatalogError(f"no user model {ref!r}")
        document["models"] = keep
        refs = {f"{e['id']}@{e['version']}" for e in removed}
        defaults = document.get("defaults", {})
        for preset, chosen in list(defaults.items()):
            if chosen in refs or (chosen == model_id and not any(e["id"] == model_id for e in keep)):
                del defaults[preset]  # the task goes back to its built-in default
        _write_user_document(home, document)
        models_dir = home_folder("models", home, create=True)
        for entry in removed:
            for weights in entry["weights"]:
                path = models_dir / weights["file"]
                # only weights glims stored itself: a file directly in the models folder, never one elsewhere
                if (
                    path.is_file()
                    and not path.is_symlink()
                    and Path(os.path.realpath(path)).parent == Path(os.path.realpath(models_dir))
                ):
                    remove_owned(path, home)
                    remove_owned(path.with_suffix(".json"), home)
    return [f"{e['id']}@{e['version']}" for e in removed]


def set_default_model(ref: str, home: str | os.PathLike | None = None) -> ModelSpec:
    """Make ``ref`` (``ID``: its newest version at each use; ``ID@VERSION``: that version) the default of its task.

    Raises:
        CatalogError: unknown model.
    """
    check_name(ref.partition("@")[0], "model id")
    with catalog_lock(home):
        spec = load_catalog(home).get(ref)
        document = _user_document(home)
        defaults = document.setdefault("defaults", {})
        builtin_defaults = {
            e["id"]
            for e in read_document(BUILTIN_CATALOG, required=False)["models"]
            if e.get("default") and e["preset"] == spec.preset
        }
        if spec.id in builtin_defaults and not ref.partition("@")[2]:
            defaults.pop(spec.preset, None)  # the built-in default again: no choice to keep
        else:
            defaults[spec.preset] = ref
        if not defaults:
            document.pop("defaults")
        _write_user_document(home, document)
    return load_catalog(home).default(spec.preset)


def reset_default_model(preset: str | None = None, home: str | os.PathLike | None = None) -> list[str]:
    """Forget the user's default choice of ``preset`` (None: of every task); returns the tasks reset."""
    with catalog_lock(home):
        document = _user_document(home)
        defaults = document.get("defaults", {})
        reset = [p for p in list(defaults) if preset is None or p == preset]
        for name in reset:
            del defaults[name]
        if not defaults:
            document.pop("defaults", None)
        if reset:
            _write_user_document(home, document)
    return reset
