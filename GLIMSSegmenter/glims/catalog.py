"""The model catalog: which GLIMS models exist, what they take, what they output, and where their weights are.

Two catalogs are merged: the built-in one shipped in ``glims/resources/models.json`` and the user's, in
``<home>/models/catalog.json`` (models the user added, fine-tuned versions). ``home`` is the glims home
(``glims.paths.user_home``). Built-in model ids are reserved: a user model cannot take one. Each task's default
model is the built-in one unless the user chose another with ``set_default_model`` (``glims models default``);
the choice is kept in the user catalog's ``defaults``. Every change of the user catalog is a read-modify-write
under the catalog's inter-process lock (``glims.locks``).

Each entry names a task ``preset`` (``brats`` or ``btcv``, in ``resources/presets.json``) that supplies inputs,
labels, pre- and post-processing; fields set in the entry override the preset's. Both files are validated against
``resources/models.schema.json`` when loaded. Model references are ``ID`` (newest version) or ``ID@VERSION``.

This module needs only the standard library and ``jsonschema``: the Slicer module imports it without torch.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import CatalogError, ConfigError
from .fileio import write_json
from .jsonfiles import read_json
from .paths import check_name, home_folder, remove_owned, user_home

__all__ = [
    "TERMINOLOGY_CONTEXT",
    "InputSpec",
    "LabelSpec",
    "WeightsSpec",
    "ModelSpec",
    "Catalog",
    "load_catalog",
    "load_presets",
    "user_home",
    "match_inputs",
    "register_model",
    "remove_model",
    "set_default_model",
    "reset_default_model",
    "expected_out_channels",
    "add_user_entry",
    "spec_from_entry",
]

logger = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parent / "resources"
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMY_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class InputSpec:
    """One input image of a model."""

    key: str
    """Short identifier, e.g. ``flair``; also the temp-file name the Slicer module uses."""
    title: str
    patterns: tuple[str, ...]
    """Case-insensitive regular expressions searched in a file or volume name."""

    def matches(self, name: str) -> bool:
        return any(re.search(p, name, re.IGNORECASE) for p in self.patterns)


def _code_string(code: Sequence[str] | None) -> str:
    return "^".join(code) if code else "^^"


@dataclass(frozen=True)
class LabelSpec:
    """One output label: its value in label maps, name, display colour and terminology codes."""

    value: int
    name: str
    color: tuple[int, int, int]
    """0-255 RGB."""
    terminology: Mapping[str, tuple[str, str, str]]
    """``category``, ``type`` and optional ``modifier``, ``region``, ``region_modifier`` as (scheme, code, meaning)."""

    @property
    def color_float(self) -> tuple[float, float, float]:
        return tuple(c / 255.0 for c in self.color)  # type: ignore[return-value]

    @property
    def slicer_terminology(self) -> str:
        """The terminology entry string 3D Slicer stores on a segment (``vtkSegment::SetTerminology``)."""
        t = self.terminology
        return "~".join(
            [
                TERMINOLOGY_CONTEXT,
                _code_string(t["category"]),
                _code_string(t["type"]),
                _code_string(t.get("modifier")),
                ANATOMY_CONTEXT,
                _code_string(t.get("region")),
                _code_string(t.get("region_modifier")),
            ]
        )


@dataclass(frozen=True)
class WeightsSpec:
    path: Path
    sha256: str
    format: str = "glims-checkpoint"


@dataclass(frozen=True)
class ModelSpec:
    """A catalog entry with its preset merged in (every field populated)."""

    id: str
    version: str
    title: str
    description: str
    license: str
    preset: str
    architecture: Mapping[str, Any]
    weights: tuple[WeightsSpec, ...]
    inputs: tuple[InputSpec, ...]
    labels: tuple[LabelSpec, ...]
    preprocessing: Mapping[str, Any]
    output: Mapping[str, Any]
    postprocessing: Mapping[str, Any]
    inference: Mapping[str, Any]
    regions: Mapping[str, tuple[int, ...]]
    match_priority: tuple[str, ...]
    builtin: bool = True
    default: bool = False
    model_card: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    finetuning: Mapping[str, Any] = field(default_factory=dict)
    """How to fine-tune it: ``replay`` recipe of its own domain's data (``glims.replay``)."""

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def roi_size(self) -> tuple[int, int, int]:
        size = self.architecture.get("img_size", 96)
        return tuple(size) if isinstance(size, (list, tuple)) else (size,) * 3  # type: ignore[return-value]

    def label_by_value(self) -> dict[int, LabelSpec]:
        return {label.value: label for label in self.labels}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (what ``glims models --json`` prints)."""
        return {
            "id": self.id,
            "version": self.version,
            "ref": self.ref,
            "title": self.title,
            "description": self.description,
            "license": self.license,
            "preset": self.preset,
            "builtin": self.builtin,
            "default": self.default,
            "model_card": self.model_card,
            "architecture": dict(self.architecture),
            "weights": [{"file": str(w.path), "sha256": w.sha256, "format": w.format} for w in self.weights],
            "inputs": [{"key": i.key, "title": i.title, "patterns": list(i.patterns)} for i in self.inputs],
            "labels": [
                {
                    "value": label.value,
                    "name": label.name,
                    "color": list(label.color),
                    "terminology": {k: list(v) for k, v in label.terminology.items()},
                    "slicer_terminology": label.slicer_terminology,
                }
                for label in self.labels
            ],
            "preprocessing": dict(self.preprocessing),
            "output": dict(self.output),
            "postprocessing": dict(self.postprocessing),
            "inference": dict(self.inference),
            "provenance": dict(self.provenance),
            "finetuning": dict(self.finetuning),
        }


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class Catalog:
    """All known models (built-in first, then the user's)."""

    def __init__(self, models: Iterable[ModelSpec], home: Path) -> None:
        self.models = list(models)
        self.home = home

    def ids(self) -> list[str]:
        return sorted({m.id for m in self.models})

    def versions(self, model_id: str) -> list[ModelSpec]:
        return sorted((m for m in self.models if m.id == model_id), key=lambda m: _version_key(m.version))

    def get(self, ref: str) -> ModelSpec:
        """``ID`` (newest version) or ``ID@VERSION``.

        Raises:
            CatalogError: unknown model or version (the message lists what exists).
        """
        model_id, _, version = ref.partition("@")
        candidates = self.versions(model_id)
        if not candidates:
            known = ", ".join(self.ids()) or "none (add one with `glims models add`)"
            raise CatalogError(f"unknown model {model_id!r}; available: {known}")
        if not version:
            return candidates[-1]
        for spec in candidates:
            if spec.version == version:
                return spec
        raise CatalogError(
            f"model {model_id!r} has no version {version}; available: {', '.join(m.version for m in candidates)}"
        )

    def default(self, preset: str = "brats") -> ModelSpec:
        """The default model of a task: the user's choice (``glims models default``), else the built-in default,
        else the first model of that preset."""
        of_preset = [m for m in self.models if m.preset == preset]
        if not of_preset:
            raise CatalogError(f"no {preset} model in the catalog")
        marked = [m for m in of_preset if m.default]
        return (marked or of_preset)[0]


_schema_cache: dict[str, Any] = {}


def _validate(document: Any, source: str, required: bool = True) -> None:
    """Check a catalog document against ``models.schema.json``.

    Without the ``jsonschema`` package (inside 3D Slicer before the first package install) a document that must be
    checked (``required``: user catalogs, anything being written) raises; the built-in catalog, which the test
    suite validates, is then read unchecked so that the model list can show before any install.
    """
    try:
        import jsonschema
    except ImportError:
        if not required:
            logger.info("jsonschema not installed: reading %s without schema validation", source)
            return
        raise CatalogError(
            "the Python package 'jsonschema' is needed to validate the model catalog (install the module's packages)"
        ) from None
    if "schema" not in _schema_cache:
        _schema_cache["schema"] = json.loads((RESOURCES / "models.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(_schema_cache["schema"])
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise CatalogError(f"invalid model catalog {source}: at {where}: {first.message}")


def load_presets() -> dict[str, dict[str, Any]]:
    return json.loads((RESOURCES / "presets.json").read_text())


def spec_from_entry(entry: Mapping[str, Any], presets: Mapping[str, Any], root: Path, builtin: bool) -> ModelSpec:
    """A catalog entry merged with its preset (entry fields win); weights paths resolved against ``root``."""
    preset = copy.deepcopy(presets[entry["preset"]])
    merged = {**preset, **copy.deepcopy(dict(entry))}
    for key in ("preprocessing", "output", "postprocessing"):
        merged[key] = {**preset.get(key, {}), **entry.get(key, {})}
    weights = tuple(
        WeightsSpec(
            path=(root / w["file"]) if not Path(w["file"]).is_absolute() else Path(w["file"]),
            sha256=w["sha256"],
            format=w.get("format", "glims-checkpoint"),
        )
        for w in merged["weights"]
    )
    labels = tuple(
        LabelSpec(
            value=lab["value"],
            name=lab["name"],
            color=tuple(lab["color"]),
            terminology={k: tuple(v) for k, v in lab["terminology"].items()},
        )
        for lab in merged["labels"]
    )
    inputs = tuple(InputSpec(i["key"], i["title"], tuple(i["patterns"])) for i in merged["inputs"])
    out_channels = merged["architecture"].get("out_channels")
    expected = expected_out_channels(merged["output"], len(labels))
    if out_channels is not None and expected is not None and out_channels != expected:
        if merged["output"].get("activation") == "softmax":
            raise CatalogError(f"model {entry['id']}: {out_channels} softmax outputs for {len(labels)} labels")
        raise CatalogError(f"model {entry['id']}: {out_channels} output channels; its task ({entry['preset']}) "
                           f"has {expected} ({', '.join(merged['output']['channels'])})")
    in_channels = merged["architecture"].get("in_channels")
    if in_channels not in (None, len(inputs)):
        raise CatalogError(f"model {entry['id']}: {in_channels} input channels but {len(inputs)} inputs listed")
    return ModelSpec(
        id=merged["id"],
        version=merged["version"],
        title=merged["title"],
        description=merged["description"],
        license=merged["license"],
        preset=merged["preset"],
        architecture=merged["architecture"],
        weights=weights,
        inputs=inputs,
        labels=labels,
        preprocessing=merged["preprocessing"],
        output=merged["output"],
        postprocessing=merged["postprocessing"],
        inference=merged.get("inference", {}),
        regions={k: tuple(v) for k, v in merged.get("regions", {}).items()},
        match_priority=tuple(merged.get("match_priority", [i.key for i in inputs])),
        builtin=builtin,
        default=bool(merged.get("default", False)),
        model_card=merged.get("model_card", ""),
        provenance=merged.get("provenance", {}),
        finetuning=merged.get("finetuning", {}),
    )


def expected_out_channels(output: Mapping[str, Any], n_labels: int) -> int | None:
    """Output channels a network must have for a task's ``output`` rules: one per sigmoid channel, or background
    plus one per label for softmax; None when the rules do not say."""
    if output.get("activation") == "sigmoid" and output.get("channels"):
        return len(output["channels"])
    if output.get("activation") == "softmax":
        return n_labels + 1
    return None


def _read_document(path: Path, required: bool = True) -> dict[str, Any]:
    document = read_json(path, "model catalog", CatalogError)
    _validate(document, str(path), required)
    return document


def user_catalog_path(home: str | os.PathLike | None = None) -> Path:
    return user_home(home) / "models" / "catalog.json"


def load_catalog(home: str | os.PathLike | None = None, builtin_path: Path | None = None) -> Catalog:
    """Built-in plus user models, validated.

    Raises:
        CatalogError: a catalog file is not valid JSON or does not follow the schema.
    """
    presets = load_presets()
    builtin_path = builtin_path or RESOURCES / "models.json"
    builtin = _read_document(builtin_path, required=False)["models"]
    models = [spec_from_entry(e, presets, builtin_path.parent, True) for e in builtin]
    builtin_ids = {m.id for m in models}
    user_path = user_catalog_path(home)
    chosen: dict[str, str] = {}
    if user_path.exists():
        document = _read_document(user_path)
        for entry in document["models"]:
            if entry["id"] in builtin_ids:
                raise CatalogError(
                    f"user catalog {user_path}: model {entry['id']}@{entry['version']} takes the id of a built-in "
                    f"model; remove it with `glims models rm {entry['id']}@{entry['version']}` and add it again "
                    "under another id")
            # a user entry never makes itself a default: only the user's explicit choice does
            models.append(replace(spec_from_entry(entry, presets, user_path.parent, False), default=False))
        chosen = dict(document.get("defaults", {}))
    catalog = Catalog(models, user_home(home))
    for preset, ref in chosen.items():
        try:
            pick = catalog.get(ref)
        except CatalogError:
            raise CatalogError(f"the default {preset} model chosen in {user_path}, {ref}, is not in the catalog; "
                               f"choose another with `glims models default ID` or go back to the built-in one with "
                               f"`glims models default --reset`") from None
        catalog.models = [replace(m, default=m is pick) if m.preset == preset else m for m in catalog.models]
    return catalog


def match_inputs(spec: ModelSpec, names: Sequence[str], strict: bool = False) -> dict[str, str]:
    """Assign names (file or volume names) to the model's inputs by their patterns.

    Each name goes to the first input, in the preset's priority order, whose pattern it matches (so "t1ce" is
    not taken for "t1"). An input matched by several names takes the first of them, unless ``strict``: then two
    names claiming one input are refused. Unmatched inputs are absent from the result.

    Raises:
        InputError: with ``strict``, two names match the same input (the message names both and the input).
    """
    by_key = {i.key: i for i in spec.inputs}
    order = [k for k in spec.match_priority if k in by_key] + [k for k in by_key if k not in spec.match_priority]
    claims: dict[str, list[str]] = {}
    for name in names:
        base = Path(name).name
        for key in order:
            if by_key[key].matches(base):
                claims.setdefault(key, []).append(name)
                break
    for key, claimed in claims.items():
        if strict and len(claimed) > 1:
            from .errors import InputError

            role = by_key[key].title.split(" (")[0]
            shown = " and ".join(Path(n).name for n in claimed)
            every = "both" if len(claimed) == 2 else "all"
            raise InputError(f"{shown} {every} look like {role} by their names: which one is {role} is ambiguous")
    return {key: claimed[0] for key, claimed in claims.items()}


def _write_user_document(home: str | os.PathLike | None, document: dict[str, Any]) -> None:
    _validate(document, "(user catalog being written)")
    write_json(user_catalog_path(home), document)


def _user_document(home: str | os.PathLike | None) -> dict[str, Any]:
    path = user_catalog_path(home)
    return _read_document(path) if path.is_file() else {"catalog_version": 1, "models": []}


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
    from .locks import catalog_lock

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
    major, minor, _ = _version_key(versions[-1].version)
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
    from .locks import catalog_lock
    from .network import GLIMS

    presets = load_presets()
    if preset not in presets:
        raise CatalogError(f"unknown preset {preset!r}; choose from {', '.join(presets)}")
    check_user_model_id(model_id, home=home)
    loaded = load_checkpoint(weights_file)
    architecture = loaded.metadata.get("architecture") or {"name": "GLIMS", **infer_architecture(loaded.state_dict)}
    architecture = {"name": "GLIMS", **{k: v for k, v in architecture.items() if k != "name"}}
    net = GLIMS(**{k: v for k, v in architecture.items() if k != "name"})
    load_into_model(net, loaded.state_dict)
    expected_inputs = len(presets[preset]["inputs"])
    if net.config.in_channels != expected_inputs:
        raise CatalogError(
            f"{Path(weights_file).name} takes {net.config.in_channels} input channels; preset {preset} has "
            f"{expected_inputs} inputs"
        )
    labels = (overrides or {}).get("labels", presets[preset]["labels"])
    expected_outputs = expected_out_channels({**presets[preset]["output"], **(overrides or {}).get("output", {})},
                                             len(labels))
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
        return add_user_entry(_added_entry(model_id, version, preset, weights_file, loaded.source_format,
                                           architecture, meta, title, description, license_text, provenance,
                                           overrides), home)


def _added_entry(model_id: str, version: str, preset: str, weights_file, source_format: str,
                 architecture: Mapping[str, Any], meta: Mapping[str, Any], title: str | None, description: str,
                 license_text: str, provenance: Mapping[str, Any] | None,
                 overrides: Mapping[str, Any]) -> dict[str, Any]:
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
    from .locks import catalog_lock

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
                if path.is_file() and not path.is_symlink() and Path(os.path.realpath(path)).parent == Path(
                        os.path.realpath(models_dir)):
                    remove_owned(path, home)
                    remove_owned(path.with_suffix(".json"), home)
    return [f"{e['id']}@{e['version']}" for e in removed]


def set_default_model(ref: str, home: str | os.PathLike | None = None) -> ModelSpec:
    """Make ``ref`` (``ID``: its newest version at each use; ``ID@VERSION``: that version) the default of its task.

    Raises:
        CatalogError: unknown model.
    """
    from .locks import catalog_lock

    check_name(ref.partition("@")[0], "model id")
    with catalog_lock(home):
        spec = load_catalog(home).get(ref)
        document = _user_document(home)
        defaults = document.setdefault("defaults", {})
        builtin_defaults = {e["id"] for e in _read_document(RESOURCES / "models.json", required=False)["models"]
                            if e.get("default") and e["preset"] == spec.preset}
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
    from .locks import catalog_lock

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
