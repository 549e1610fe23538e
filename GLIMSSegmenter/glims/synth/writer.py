"""Writing cases and datasets: BraTS 2021 file naming, NIfTI in BraTS geometry, ``dataset.json``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, OutputError
from ..progress import CancelToken, ProgressCallback, StagePlan
from .case import SynthCase, generate_case
from .geometry import spacing_zyx
from .params import SynthParams
from .vocabulary import MODALITIES

__all__ = ["write_case", "dataset_case_seed", "generate_dataset"]

log = logging.getLogger(__name__)


def _write_nifti(array: np.ndarray, spacing: Sequence[float], path: Path, integer: bool) -> None:
    """Write a (z, y, x) array as NIfTI in BraTS geometry (LPS, identity direction), atomically."""
    import SimpleITK as sitk

    from ..imageio import write_image

    if integer and array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        array = array.astype(np.int16 if -32768 <= low and high <= 32767 else np.int32)
    image = sitk.GetImageFromArray(array)
    sz, sy, sx = (float(v) for v in spacing)
    image.SetSpacing((sx, sy, sz))
    image.SetOrigin((0.0, -(array.shape[1] - 1) * sy, 0.0))
    write_image(image, path)


def write_case(case: SynthCase, out_dir: str | os.PathLike, case_id: str) -> dict[str, Path]:
    """Write a case in BraTS 2021 naming: ``<out>/<ID>/<ID>_{flair,t1ce,t1,t2,seg}.nii.gz``.

    The label file keeps the BraTS 2023 values (ET = 3), not BraTS 2021's ET = 4. Images are int16 when their
    values are integers that fit, else float32. Each file is written to a temporary name and renamed.

    Returns:
        ``{modality or "seg": path}``.
    """
    if not case_id or any(c in case_id for c in "/\\") or case_id in (".", ".."):
        raise ConfigError(f"invalid case id {case_id!r}")
    folder = Path(out_dir) / case_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {folder}: {err.strerror}") from None
    paths: dict[str, Path] = {}
    integer = all(np.array_equal(img, np.round(img)) for img in case.images.values())
    try:
        for modality in MODALITIES:
            paths[modality] = folder / f"{case_id}_{modality}.nii.gz"
            _write_nifti(case.images[modality], case.spacing, paths[modality], integer)
        paths["seg"] = folder / f"{case_id}_seg.nii.gz"
        _write_nifti(case.label.astype(np.uint8), case.spacing, paths["seg"], True)
    except OSError as err:
        raise OutputError(f"cannot write case {case_id} in {folder}: {err}") from None
    return paths


def dataset_case_seed(dataset_seed: int, index: int) -> int:
    """The seed of case ``index`` of a dataset: independent streams for every (dataset seed, index) pair."""
    return int(np.random.SeedSequence([int(dataset_seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def generate_dataset(
    out_dir: str | os.PathLike,
    count: int,
    seed: int,
    shape: Sequence[int] = (128, 128, 128),
    spacing: float | Sequence[float] = 1.0,
    params: SynthParams | None = None,
    prefix: str = "GLIMS-SYN",
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[Path]:
    """Generate and write ``count`` cases plus ``dataset.json`` (seeds, shape, spacing, params, per-case info).

    Case ``i`` is ``<prefix>-<seed>-<i:04d>`` generated from ``dataset_case_seed(seed, i)``, so a dataset is
    reproducible and can be extended with the same seed.

    Returns:
        The case folders.
    """
    if count < 1:
        raise ConfigError(f"the number of cases must be at least 1, not {count}")
    params = params or SynthParams()
    plan = StagePlan([("synthesise", 1.0)], progress)
    folders: list[Path] = []
    cases: list[dict[str, Any]] = []
    out = Path(out_dir)
    for index in range(count):
        if cancel is not None:
            cancel.check()
        case_seed = dataset_case_seed(seed, index)
        case_id = f"{prefix}-{seed}-{index:04d}"
        case = generate_case(case_seed, shape, spacing, params)
        paths = write_case(case, out, case_id)
        folders.append(paths["seg"].parent)
        cases.append({"id": case_id, "seed": case_seed, **case.info})
        log.info("wrote %s (%s)", case_id, case.info["tumour"])
        plan.report("synthesise", index + 1, count, case_id)
    manifest = {
        "generator": "glims.synth",
        "label_convention": "BraTS 2023 (1 NCR, 2 ED, 3 ET)",
        "file_naming": "BraTS 2021 (<ID>_flair, _t1ce, _t1, _t2, _seg .nii.gz)",
        "seed": int(seed),
        "shape_zyx": [int(n) for n in shape],
        "spacing_zyx_mm": list(spacing_zyx(spacing)),
        "params": params.to_dict(),
        "cases": cases,
    }
    from ..fileio import atomic_write

    with atomic_write(out / "dataset.json", "w") as handle:
        json.dump(manifest, handle, indent=1)
    return folders
