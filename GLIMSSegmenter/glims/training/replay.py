"""Replay data for fine-tuning: labelled cases of a base model's own domain, made from its catalog recipe.

Fine-tuning on a handful of a site's cases makes a model forget what those cases do not show (docs/FINETUNING.md:
tumour cores it knew, lost). Mixing cases of the base model's own domain into the training windows ("replay")
counters that. A model trained on ``glims.synth`` data can carry the recipe of that data in its catalog entry::

    "finetuning": {"replay": {"synth": {"n": 10, "seed": 2026, "shape": [120, 120, 80], "spacing": 2.0,
                                        "generator": 2}}}

(``shape`` is x y z, as ``glims synth --shape`` takes it; ``generator`` is the generator version, 1 when absent).
``replay_cases`` generates those cases once per user folder, under ``<home>/replay/<recipe digest>/``, and reuses
them afterwards: the generator is deterministic by seed, so the cases are the same wherever they are made.
Generation writes into a temporary folder that is renamed when complete, so an interrupted generation is never
mistaken for a finished one; the folder of a generation killed outright is deleted by a later one once it is an
hour old.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..catalog import ModelSpec
from ..errors import ConfigError, OutputError
from ..fileio import write_json
from ..paths import home_folder, make_owned_dir, remove_owned
from ..progress import CancelToken, ProgressCallback

if TYPE_CHECKING:
    from ..synth import SynthParams

__all__ = ["REPLAY_DIR", "replay_cases", "replay_recipe"]

logger = logging.getLogger(__name__)

REPLAY_DIR = "replay"
RECIPE_FILE = "recipe.json"
ABANDONED_AFTER_S = 3600.0


def replay_recipe(spec: ModelSpec) -> dict[str, Any] | None:
    """The model's synthetic replay recipe (``n``, ``seed``, ``shape`` x y z, ``spacing``, optional
    ``generator``), or None."""
    synth = spec.finetuning.get("replay", {}).get("synth")
    return dict(synth) if synth else None


def _digest(recipe: Mapping[str, Any], params: SynthParams) -> str:
    # the generator version enters through its parameters: a recipe that names version 1 keeps the folder it had
    # before recipes named versions
    plain = {k: v for k, v in recipe.items() if k != "generator"}
    canonical = json.dumps({"recipe": plain, "params": params.to_dict()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _case_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def _remove_abandoned(root: Path, digest: str, home: str | os.PathLike | None) -> None:
    """Delete half-generated folders of ``digest`` untouched for ``ABANDONED_AFTER_S`` (a generation killed
    outright; a live one writes a case every few seconds). Age, not process ids: that works on every platform."""
    now = time.time()
    for partial in root.glob(f".{digest}.partial-*"):
        touched = max((p.stat().st_mtime for p in (partial, partial / "cases") if p.exists()), default=now)
        if now - touched > ABANDONED_AFTER_S:
            _remove_quietly(partial, home)


def _remove_quietly(folder: Path, home: str | os.PathLike | None) -> None:
    """``remove_owned``, leaving (and logging) what it refuses or cannot delete: clean-up never fails a run."""
    try:
        remove_owned(folder, home)
    except (OutputError, OSError) as err:
        logger.warning("left %s in place: %s", folder, err)


def replay_cases(
    spec: ModelSpec,
    home: str | os.PathLike | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[Path]:
    """The case folders of ``spec``'s replay recipe, generated on first use; [] when the model has no recipe.

    The folder name digests the recipe together with the parameters of its generator version, so a changed
    generator makes new cases instead of reusing stale ones.

    Raises:
        ConfigError: a malformed recipe. Cancelled: cancelled during generation (nothing is left behind).
    """
    from ..synth import generate_dataset, synth_params

    recipe = replay_recipe(spec)
    if recipe is None:
        return []
    try:
        count, seed = int(recipe["n"]), int(recipe["seed"])
        shape_zyx = tuple(int(n) for n in reversed(recipe["shape"]))
        spacing = float(recipe["spacing"])
        # a recipe written before generator versions existed names none: version 1
        params = synth_params(recipe.get("generator", 1))
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"model {spec.ref}: malformed replay recipe {recipe}: {exc}") from None
    root = home_folder(REPLAY_DIR, home, create=True)
    target = root / _digest(recipe, params)
    if (target / RECIPE_FILE).is_file():
        return _case_folders(target / "cases")
    _remove_abandoned(root, target.name, home)
    staging = root / f".{target.name}.partial-{os.getpid()}"
    _remove_quietly(staging, home)
    make_owned_dir(staging, home)
    try:
        generate_dataset(
            staging / "cases",
            count,
            seed,
            shape_zyx,
            spacing,
            params,
            prefix="GLIMS-REPLAY",
            progress=progress,
            cancel=cancel,
        )
        write_json(staging / RECIPE_FILE, {"model": spec.ref, "synth": recipe})
        if not target.exists():  # else another process finished the same recipe first: ours is removed below
            os.replace(staging, target)
    finally:
        _remove_quietly(staging, home)
    return _case_folders(target / "cases")
