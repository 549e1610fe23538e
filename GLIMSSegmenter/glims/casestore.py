"""The training-set store: corrected cases a site keeps for fine-tuning, in ``<home>/cases/<case id>/``.

Each case folder holds the model's inputs as ``<input key>.nii.gz`` (e.g. ``flair.nii.gz``), the corrected label
map ``label.nii.gz`` on the reference input's grid, and ``case.json`` (provenance: preset, the model that produced
the first draft, source names, time, label values and voxel counts). Entries are validated on the way in and
written atomically: a case folder appears complete or not at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .catalog import load_presets, user_home
from .errors import InputError
from .imageio import Geometry, read_image

__all__ = ["StoredCase", "cases_dir", "add_case", "list_cases", "remove_case", "load_case_label"]

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


def cases_dir(home: str | os.PathLike | None = None) -> Path:
    return user_home(home) / "cases"


def _read_label(path: str | os.PathLike) -> sitk.Image:
    path = Path(path)
    if not path.exists():
        raise InputError(f"label map not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"cannot read the label map {path.name}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"label map {path.name}: a single-channel 3D image is needed")
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
        case_id: folder name (letters, digits, ``. _ -``); default: derived from the reference file name.
        provenance: extra facts to keep (model that made the first draft, source volume names...).
        label_map: optional relabelling applied before validation (e.g. ``{4: 3}`` for BraTS 2017-2021 files).

    Raises:
        InputError: a missing or extra input, a label value outside the preset's labels, a label map or an input
            that is not on the reference grid, an unreadable file, or an existing case id.
    """
    presets = load_presets()
    if preset not in presets:
        raise InputError(f"unknown preset {preset!r}; choose from {', '.join(presets)}")
    keys = [item["key"] for item in presets[preset]["inputs"]]
    missing = [k for k in keys if k not in inputs]
    extra = [k for k in inputs if k not in keys]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
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

    case_id = case_id or _default_id(Path(inputs[keys[0]]))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", case_id):
        raise InputError(f"invalid case id {case_id!r}: use letters, digits, '.', '_' and '-'")
    root = cases_dir(home)
    folder = root / case_id
    if folder.exists():
        raise InputError(f"a case called {case_id!r} is already in the training set")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{case_id}.", dir=root))
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
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _load(folder)


def _default_id(reference: Path) -> str:
    name = reference.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._") or "case"
    return f"{name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"


def _load(folder: Path) -> StoredCase:
    record = json.loads((folder / CASE_FILE).read_text())
    return StoredCase(
        case_id=record["case_id"],
        folder=folder,
        preset=record["preset"],
        inputs={k: folder / v for k, v in record["inputs"].items()},
        label=folder / record["label"],
        provenance=record,
    )


def list_cases(home: str | os.PathLike | None = None, preset: str | None = None) -> list[StoredCase]:
    """Complete cases in the store (half-written staging folders are ignored), sorted by id."""
    root = cases_dir(home)
    if not root.is_dir():
        return []
    cases = [_load(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
             and (p / CASE_FILE).is_file()]
    return [c for c in cases if preset is None or c.preset == preset]


def remove_case(case_id: str, home: str | os.PathLike | None = None) -> None:
    """Delete one case folder.

    Raises:
        InputError: no such case.
    """
    folder = cases_dir(home) / case_id
    if not (folder / CASE_FILE).is_file():
        raise InputError(f"no case {case_id!r} in the training set")
    shutil.rmtree(folder)


def load_case_label(case: StoredCase) -> np.ndarray:
    """The stored label map as a (z, y, x) uint8 array."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
