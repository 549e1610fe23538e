"""The bundled weights stay small enough for the repository to stay cloneable (README, "Repository size"): one
weights file per bundled model, nothing else in the weights folder, float16 tensors, each file at most
``MAX_BUNDLED_WEIGHTS_MB``."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

import glims

RESOURCES = Path(glims.__file__).parent / "resources"
MAX_BUNDLED_WEIGHTS_MB = 17.0
"""One fp16 model of the bundled size (8.24 M parameters, 16.5 MB); each adopted version adds about this much to the
git history, which must stay under 100 MB."""


def bundled_entries() -> list[dict]:
    return json.loads((RESOURCES / "models.json").read_text())["models"]


def test_weights_folder_holds_one_weights_file_per_bundled_model_and_its_metadata_only():
    referenced = [w["file"] for entry in bundled_entries() for w in entry["weights"]]
    assert len(referenced) == len(bundled_entries())  # one file per bundled model, no ensembles of copies
    expected = {Path(f).name for f in referenced} | {Path(f).with_suffix(".json").name for f in referenced}
    present = {p.name for p in (RESOURCES / "weights").iterdir()}
    assert present == expected, f"stale or missing files in resources/weights: {sorted(present ^ expected)}"


def test_bundled_weights_are_float16_and_within_the_size_budget():
    for entry in bundled_entries():
        for weights in entry["weights"]:
            path = RESOURCES / weights["file"]
            size_mb = path.stat().st_size / 1e6
            assert size_mb <= MAX_BUNDLED_WEIGHTS_MB, f"{path.name}: {size_mb:.1f} MB"
            with safe_open(str(path), "pt") as handle:
                dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}
            assert dtypes <= {"F16", "I64", "I32", "BOOL"}, f"{path.name} stores {sorted(dtypes)}"
