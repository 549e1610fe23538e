"""The model catalog: which GLIMS models exist, what they take, what they output, and where their weights are.

Two catalogs are merged: the built-in one shipped in ``glims/resources/models.json`` and the user's, in
``<home>/models/catalog.json`` (models the user added, fine-tuned versions). ``home`` is the glims home
(``glims.paths.user_home``). Built-in model ids are reserved: a user model cannot take one. Each task's default
model is the built-in one unless the user chose another (``glims models default``); the choice is kept in the user
catalog's ``defaults``. This module reads the catalogs; ``glims.registry`` changes the user's (register, remove,
versions, defaults).

Each entry names a task ``preset`` (``brats`` or ``btcv``, in ``resources/presets.json``) that supplies inputs,
labels, pre- and post-processing; fields set in the entry override the preset's. Both files are validated against
``resources/models.schema.json`` when loaded. The ``preprocessing``, ``output``, ``postprocessing`` and
``inference`` sections become typed objects then (``glims.catalog_sections``). Model references are ``ID`` (newest
version) or ``ID@VERSION``.

This module needs only the standard library and ``jsonschema``: the Slicer module imports it without torch.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .catalog_sections import (  # DEFAULT_OVERLAP and INFERENCE_PRECISIONS re-exported: read by the front ends
    DEFAULT_OVERLAP,
    INFERENCE_PRECISIONS,
    InferenceSpec,
    OutputSpec,
    PostprocessingSpec,
    PreprocessingSpec,
)
from .errors import CatalogError
from .jsonfiles import read_json
from .paths import user_home  # re-exported: the glims home is glims.paths.user_home

__all__ = [
    "TERMINOLOGY_CONTEXT",
    "DEFAULT_OVERLAP",
    "INFERENCE_PRECISIONS",
    "InputSpec",
    "LabelSpec",
    "WeightsSpec",
    "ModelSpec",
    "Catalog",
    "load_catalog",
    "load_presets",
    "PRESET_NAMES",
    "DEFAULT_PRESET",
    "user_home",
    "InputPatterns",
    "match_inputs",
    "spec_from_entry",
    "read_document",
    "validate_document",
    "user_catalog_path",
    "BUILTIN_CATALOG",
    "version_key",
]

logger = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parent / "resources"
BUILTIN_CATALOG = RESOURCES / "models.json"
"""The catalog of the models shipped with glims."""
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

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> InputSpec:
        """The input a catalog entry (or preset) writes as ``{"key", "title", "patterns"}``."""
        return cls(entry["key"], entry["title"], tuple(entry["patterns"]))

    def to_dict(self) -> dict[str, Any]:
        """The input as a catalog entry writes it."""
        return {"key": self.key, "title": self.title, "patterns": list(self.patterns)}


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

    def to_dict(self) -> dict[str, Any]:
        """The label as a catalog entry writes it."""
        return {
            "value": self.value,
            "name": self.name,
            "color": list(self.color),
            "terminology": {k: list(v) for k, v in self.terminology.items()},
        }

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
    preprocessing: PreprocessingSpec
    output: OutputSpec
    postprocessing: PostprocessingSpec
    inference: InferenceSpec
    regions: Mapping[str, tuple[int, ...]]
    match_priority: tuple[str, ...]
    builtin: bool = True
    default: bool = False
    model_card: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    finetuning: Mapping[str, Any] = field(default_factory=dict)
    """How to fine-tune it: ``replay`` recipe of its own domain's data (``glims.training.replay``)."""

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def roi_size(self) -> tuple[int, int, int]:
        size = self.architecture.get("img_size", 96)
        return tuple(size) if isinstance(size, (list, tuple)) else (size,) * 3

    @property
    def overlap(self) -> float:
        """The model's sliding-window overlap: its entry's ``inference.overlap``, else ``DEFAULT_OVERLAP``."""
        return self.inference.overlap

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
            "inputs": [i.to_dict() for i in self.inputs],
            "labels": [{**label.to_dict(), "slicer_terminology": label.slicer_terminology} for label in self.labels],
            "preprocessing": self.preprocessing.to_dict(),
            "output": self.output.to_dict(),
            "postprocessing": self.postprocessing.to_dict(),
            "inference": self.inference.to_dict(),
            "provenance": dict(self.provenance),
            "finetuning": dict(self.finetuning),
        }


def version_key(version: str) -> tuple[int, ...]:
    """``"1.10.0"`` -> ``(1, 10, 0)``: versions in numeric order."""
    return tuple(int(p) for p in version.split("."))


class Catalog:
    """All known models (built-in first, then the user's)."""

    def __init__(self, models: Iterable[ModelSpec], home: Path) -> None:
        self.models = list(models)
        self.home = home

    def ids(self) -> list[str]:
        return sorted({m.id for m in self.models})

    def versions(self, model_id: str) -> list[ModelSpec]:
        return sorted((m for m in self.models if m.id == model_id), key=lambda m: version_key(m.version))

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

    def default(self, preset: str | None = None) -> ModelSpec:
        """The default model of a task: the user's choice (``glims models default``), else the built-in default,
        else the first model of that preset. ``preset`` None: ``DEFAULT_PRESET``."""
        preset = preset or DEFAULT_PRESET
        of_preset = [m for m in self.models if m.preset == preset]
        if not of_preset:
            raise CatalogError(f"no {preset} model in the catalog")
        marked = [m for m in of_preset if m.default]
        return (marked or of_preset)[0]


_schema_cache: dict[str, Any] = {}


def validate_document(document: Any, source: str, required: bool = True) -> None:
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
    """The task presets of ``resources/presets.json`` by name."""
    return json.loads((RESOURCES / "presets.json").read_text())


PRESET_NAMES: tuple[str, ...] = tuple(load_presets())
"""The task presets (``brats``, ``btcv``): the choices of every ``--preset`` and of the Slicer module."""
DEFAULT_PRESET = PRESET_NAMES[0]
"""The task of a command given no model and no ``--preset`` (the first preset: ``brats``)."""


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
    inputs = tuple(InputSpec.from_dict(i) for i in merged["inputs"])
    output = _section(entry, "output", OutputSpec.from_dict, merged)
    out_channels = merged["architecture"].get("out_channels")
    expected = output.expected_out_channels(len(labels))
    if out_channels is not None and expected is not None and out_channels != expected:
        if output.activation == "softmax":
            raise CatalogError(f"model {entry['id']}: {out_channels} softmax outputs for {len(labels)} labels")
        raise CatalogError(
            f"model {entry['id']}: {out_channels} output channels; its task ({entry['preset']}) "
            f"has {expected} ({', '.join(output.channels)})"
        )
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
        preprocessing=_section(entry, "preprocessing", PreprocessingSpec.from_dict, merged),
        output=output,
        postprocessing=_section(entry, "postprocessing", PostprocessingSpec.from_dict, merged),
        inference=_section(entry, "inference", InferenceSpec.from_dict, merged),
        regions={k: tuple(v) for k, v in merged.get("regions", {}).items()},
        match_priority=tuple(merged.get("match_priority", [i.key for i in inputs])),
        builtin=builtin,
        default=bool(merged.get("default", False)),
        model_card=merged.get("model_card", ""),
        provenance=merged.get("provenance", {}),
        finetuning=merged.get("finetuning", {}),
    )


SectionT = TypeVar("SectionT")


def _section(
    entry: Mapping[str, Any], name: str, read: Callable[[Mapping[str, Any]], SectionT], merged: Mapping[str, Any]
) -> SectionT:
    """The typed ``name`` section of a merged entry; a value it cannot take is reported against the model.

    Raises:
        CatalogError: an invalid setting (unknown activation or intensity rule, missing or non-numeric value, ...).
    """
    try:
        return read(merged.get(name, {}))
    except CatalogError as err:
        raise CatalogError(f"model {entry['id']}: {name}: {err}") from None
    except KeyError as err:
        raise CatalogError(f"model {entry['id']}: {name}: a setting lacks {err}") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise CatalogError(f"model {entry['id']}: {name}: invalid setting ({err})") from None


def read_document(path: Path, required: bool = True) -> dict[str, Any]:
    """A catalog file, read and checked against the schema (``validate_document``).

    Raises:
        CatalogError: unreadable, not JSON or not a valid catalog.
    """
    document = read_json(path, "model catalog", CatalogError)
    validate_document(document, str(path), required)
    return document


def user_catalog_path(home: str | os.PathLike | None = None) -> Path:
    """``<home>/models/catalog.json``: the user's catalog."""
    return user_home(home) / "models" / "catalog.json"


def load_catalog(home: str | os.PathLike | None = None, builtin_path: Path | None = None) -> Catalog:
    """Built-in plus user models, validated.

    Raises:
        CatalogError: a catalog file is not valid JSON or does not follow the schema.
    """
    presets = load_presets()
    builtin_path = builtin_path or BUILTIN_CATALOG
    builtin = read_document(builtin_path, required=False)["models"]
    models = [spec_from_entry(e, presets, builtin_path.parent, True) for e in builtin]
    builtin_ids = {m.id for m in models}
    user_path = user_catalog_path(home)
    chosen: dict[str, str] = {}
    if user_path.exists():
        document = read_document(user_path)
        for entry in document["models"]:
            if entry["id"] in builtin_ids:
                raise CatalogError(
                    f"user catalog {user_path}: model {entry['id']}@{entry['version']} takes the id of a built-in "
                    f"model; remove it with `glims models rm {entry['id']}@{entry['version']}` and add it again "
                    "under another id"
                )
            # a user entry never makes itself a default: only the user's explicit choice does
            models.append(replace(spec_from_entry(entry, presets, user_path.parent, False), default=False))
        chosen = dict(document.get("defaults", {}))
    catalog = Catalog(models, user_home(home))
    for preset, ref in chosen.items():
        try:
            pick = catalog.get(ref)
        except CatalogError:
            raise CatalogError(
                f"the default {preset} model chosen in {user_path}, {ref}, is not in the catalog; "
                f"choose another with `glims models default ID` or go back to the built-in one with "
                f"`glims models default --reset`"
            ) from None
        catalog.models = [replace(m, default=m is pick) if m.preset == preset else m for m in catalog.models]
    return catalog


class InputPatterns(Protocol):
    """What assigns names to a model's inputs: a ``ModelSpec``, or just that part of a catalog entry."""

    @property
    def inputs(self) -> tuple[InputSpec, ...]: ...

    @property
    def match_priority(self) -> tuple[str, ...]:
        """Input keys in the order their patterns are tried."""
        ...


def match_inputs(spec: InputPatterns, names: Sequence[str], strict: bool = False) -> dict[str, str]:
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
