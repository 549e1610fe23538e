"""The training-set store: corrected cases a site keeps for fine-tuning, in ``<home>/cases/<case id>/``.

Each case folder holds the model's inputs as ``<input key>.nii.gz`` (e.g. ``flair.nii.gz``), the corrected label
map ``label.nii.gz`` on the reference input's grid, and ``case.json`` (provenance: preset, the model that produced
the first draft, source names, time, label values and voxel counts). Entries are validated on the way in and
written atomically: a case folder appears complete or not at all. Case ids follow glims's one rule for names
(``glims.paths.check_name``); adding and removing happen under the store's inter-process lock, and a case
folder is deleted only through ``glims.paths.remove_owned`` (it carries glims's marker).

A case folder whose ``case.json`` cannot be read (not UTF-8, not JSON, fields missing) is *broken*: ``scan_cases``
reports it beside the readable cases, ``list_cases`` (what fine-tuning trains on) refuses the whole store with
one line naming it, and ``glims cases rm ID`` removes it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .catalog import load_presets
from .errors import InputError
from .imageio import Geometry, read_image, read_label_image
from .jsonfiles import read_json
from .locks import case_store_lock
from .paths import NAME_MAX_LENGTH, OWNED_MARKER, check_name, home_folder, mark_owned, remove_owned

__all__ = [
    "StoredCase",
    "BrokenCase",
    "cases_dir",
    "add_case",
    "scan_cases",
    "list_cases",
    "remove_case",
    "load_case_label",
]

CASE_FILE = "case.json"
LABEL_FILE = "label.nii.gz"


@dataclass(frozen=True)
class StoredCase:
    case_id: str
    folder: Path
    preset: str
    inputs: dict[str, Path]
    label: Path
    provenance: dict[str, Any]


@dataclass(frozen=True)
class BrokenCase:
    """A case folder whose ``case.json`` cannot be read."""

    case_id: str
    folder: Path
    reason: str


def cases_dir(home: str | os.PathLike | None = None) -> Path:
    return home_folder("cases", home)


def _read_label(path: str | os.PathLike) -> sitk.Image:
    path = Path(path)
    image = read_label_image(path)  # the file, spacing and axis checks every image gets
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise InputError(f"label map {path.name}: values are not whole numbers (is this an image, not labels?)")
    return sitk.Cast(image, sitk.sitkUInt8) if array.min() >= 0 and array.max() <= 255 else image


def add_case(
    preset: str,
    inputs: Mapping[str, str | os.PathLike],
    label: str | os.PathLike,
    *,
    case_id: str | None = None,
    home: str | os.PathLike | None = None,
    provenance: Mapping[str, Any] | None = None,
    label_map: Mapping[int, int] | None = None,
) -> StoredCase:
    """Validate and store one corrected case.

    Args:
        preset: ``brats`` or ``btcv`` (decides the inputs and the allowed label values).
        inputs: ``{input key: image path}`` for every input of the preset (the first key's image is the reference).
        label: corrected label map on the reference grid.
        case_id: folder name (``glims.paths.check_name``: up to 64 letters, digits, ``. _ -``); default: derived
            from the reference file name.
        provenance: extra facts to keep (model that made the first draft, source volume names...).
        label_map: optional relabelling applied before validation (e.g. ``{4: 3}`` for BraTS 2017-2021 files).

    Raises:
        InputError: a missing or extra input, a label value outside the preset's labels, a label map or an input
            that is not on the reference grid, an unreadable file, or an existing case id. ConfigError: an invalid
            case id (checked before anything is read).
    """
    if case_id is not None:
        check_name(case_id, "case id")
    presets = load_presets()
    if preset not in presets:
        raise InputError(f"unknown preset {preset!r}; choose from {', '.join(presets)}")
    keys = [item["key"] for item in presets[preset]["inputs"]]
    missing = [k for k in keys if k not in inputs]
    extra = [k for k in inputs if k not in keys]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise InputError(f"a {preset} case needs inputs {', '.join(keys)}: {'; '.join(parts)}")
    images = {key: read_image(inputs[key], f"{key} ({Path(inputs[key]).name})") for key in keys}
    reference = Geometry.of(images[keys[0]])
    for key in keys[1:]:
        if not Geometry.of(images[key]).matches(reference):
            raise InputError(
                f"{key} is not on the reference ({keys[0]}) grid: {Geometry.of(images[key]).describe()} vs "
                f"{reference.describe()}; resample it onto the reference first"
            )
    label_image = _read_label(label)
    if not Geometry.of(label_image).matches(reference):
        raise InputError(
            f"the label map is not on the reference ({keys[0]}) grid: {Geometry.of(label_image).describe()} at "
            f"origin {tuple(round(v, 2) for v in label_image.GetOrigin())} vs {reference.describe()} at origin "
            f"{tuple(round(v, 2) for v in reference.origin)}"
        )
    array = sitk.GetArrayFromImage(label_image).astype(np.int64)
    if label_map:
        remapped = array.copy()
        for old, new in label_map.items():
            remapped[array == int(old)] = int(new)
        array = remapped
    allowed = {0} | {int(item["value"]) for item in presets[preset]["labels"]}
    values = set(np.unique(array).tolist())
    if values - allowed:
        raise InputError(
            f"label values {sorted(values - allowed)} are not labels of the {preset} models (allowed: "
            f"{sorted(allowed)})"
        )
    if values == {0}:
        raise InputError("the label map is empty: nothing to learn from")

    case_id = check_name(case_id or _default_id(Path(inputs[keys[0]])), "case id")
    root = home_folder("cases", home, create=True)
    folder = root / case_id
    if os.path.lexists(folder):
        raise InputError(f"a case called {case_id!r} is already in the training set")
    staging = mark_owned(tempfile.mkdtemp(prefix=f".{case_id}.", dir=root))
    try:
        for key in keys:
            sitk.WriteImage(images[key], str(staging / f"{key}.nii.gz"), True)
        out = sitk.GetImageFromArray(array.astype(np.uint8))
        out.CopyInformation(label_image)
        sitk.WriteImage(out, str(staging / LABEL_FILE), True)
        counts = {str(v): int((array == v).sum()) for v in sorted(values) if v}
        record = {
            "case_id": case_id,
            "preset": preset,
            "inputs": {key: f"{key}.nii.gz" for key in keys},
            "label": LABEL_FILE,
            "label_voxels": counts,
            "added": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sources": {key: str(Path(path).name) for key, path in inputs.items()},
            **dict(provenance or {}),
        }
        (staging / CASE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        with case_store_lock(home):  # the check and the rename, as one step among processes
            if os.path.lexists(folder):
                raise InputError(f"a case called {case_id!r} is already in the training set")
            os.replace(staging, folder)
    except BaseException:
        remove_owned(staging, home)
        raise
    return _load(folder)


def _default_id(reference: Path) -> str:
    name = reference.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).replace("..", "-")[: NAME_MAX_LENGTH - len(stamp) - 1]
    return f"{name.strip('-._') or 'case'}-{stamp}"


def _load(folder: Path) -> StoredCase:
    """The case in ``folder``.

    Raises:
        InputError: its ``case.json`` cannot be read or lacks a field (the message names the folder).
    """
    path = folder / CASE_FILE
    try:
        record = read_json(path, "case record", InputError)
        inputs = {str(k): folder / check_name(v, "input file name") for k, v in record["inputs"].items()}
        return StoredCase(
            case_id=str(record["case_id"]),
            folder=folder,
            preset=str(record["preset"]),
            inputs=inputs,
            label=folder / check_name(record["label"], "label file name"),
            provenance=record,
        )
    except InputError as err:
        reason = str(err)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        reason = f"case record {path} is malformed ({type(err).__name__}: {err})"
    raise InputError(
        f"case {folder.name} in the training set is broken: {reason}; remove it with `glims cases rm {folder.name}`"
    )


def scan_cases(home: str | os.PathLike | None = None) -> tuple[list[StoredCase], list[BrokenCase]]:
    """Every case folder of the store: the readable cases and the broken ones, each sorted by id (half-written
    staging folders, whose names start with a dot, are not cases)."""
    root = cases_dir(home)
    if not root.is_dir():
        return [], []
    cases, broken = [], []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir() or not (folder / CASE_FILE).is_file():
            continue
        try:
            cases.append(_load(folder))
        except InputError as err:
            broken.append(BrokenCase(folder.name, folder, str(err)))
    return cases, broken


def list_cases(home: str | os.PathLike | None = None, preset: str | None = None) -> list[StoredCase]:
    """Complete cases in the store, sorted by id (only ``preset``'s when given).

    Raises:
        InputError: a case folder is broken (one line naming it and how to remove it): training on what is left
            without saying so would be a silently different training set.
    """
    cases, broken = scan_cases(home)
    if broken:
        raise InputError(
            broken[0].reason
            if len(broken) == 1
            else f"{len(broken)} cases in the training set are broken ({', '.join(b.case_id for b in broken)})"
            f"; first: {broken[0].reason}"
        )
    return [c for c in cases if preset is None or c.preset == preset]


def remove_case(case_id: str, home: str | os.PathLike | None = None) -> None:
    """Delete one case folder (a broken one too).

    A case folder that an earlier glims version stored (before folders carried glims's marker) is recognised by its
    layout, a real folder of the store holding a ``case.json`` file, and marked before it is removed.

    Raises:
        ConfigError: ``case_id`` is not a valid name (e.g. a path). InputError: no such case. OutputError: the
            folder is not glims's (``glims.paths.remove_owned``).
    """
    check_name(case_id, "case id")
    folder = cases_dir(home) / case_id
    with case_store_lock(home):
        if not folder.is_dir() or folder.is_symlink():
            raise InputError(f"no case {case_id!r} in the training set")
        record = folder / CASE_FILE
        if not (folder / OWNED_MARKER).exists() and record.is_file() and not record.is_symlink():
            mark_owned(folder)  # stored by an earlier glims version, before the marker existed
        remove_owned(folder, home)


def load_case_label(case: StoredCase) -> np.ndarray:
    """The stored label map as a (z, y, x) uint8 array."""
    return sitk.GetArrayFromImage(read_label_image(case.label))
