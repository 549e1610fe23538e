"""Training cases: finding them on disk, loading them exactly as inference prepares its input, and sampling patches.

A *case folder* holds one image per model input and one label map. Images are assigned to inputs by the
catalog preset's name patterns (the same rules ``glims segment`` uses), so BraTS 2021 names (``_flair``,
``_t1ce``, ``_t1``, ``_t2``), BraTS 2023 names (``-t2f``, ``-t1c``, ``-t1n``, ``-t2w``) and BraTS-Toolkit names
(``_fla_``, ``_t1c_``...) all work. The label is the file whose name says ``seg``, ``label``, ``gt``, ``truth`` or
``silver``; when there are several, a plain ``..._seg`` (a reference label) wins over predictions and silver
fusions, then the alphabetically first.

Which BraTS label convention a case uses (see ``labels``) is taken, in this order, from the caller, from a
``dataset.json`` beside the case folders (written by ``glims synth``), from BraTS 2023 file names (ET = 3), and
finally from the label values themselves.

Loading runs ``glims.preprocessing.prepare_case`` (orientation, spacing, foreground crop, per-channel z-score), so a
network sees in training what it sees in ``glims segment``. Region masks are resampled onto that grid by linear
interpolation of each binary mask and a 0.5 threshold (a voxel belongs to a region when at least half of it does).
``store_case_on_grid`` writes a case already on that grid (images as inference resamples them, the label's regions
painted in BraTS 2023 labels): it trains exactly as the original files do, at an eighth of the size for 1 mm cases
and a 2 mm model.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..casefiles import CaseFiles
from ..catalog import InputSpec, match_inputs
from ..catalog_sections import OutputSpec, PreprocessingSpec
from ..errors import ConfigError, InputError, OutputError
from ..imageio import read_image, read_label_image, write_image
from ..postprocessing import probabilities_to_labels
from ..preprocessing import from_xyz, prepare_case, to_processing_grid, to_xyz
from .labels import REGIONS, detect_convention, regions_from_labels

__all__ = [
    "CaseFiles",
    "LoadedCase",
    "InputMatcher",
    "discover_cases",
    "label_on_processing_grid",
    "load_case",
    "region_masks_on_grid",
    "sample_patch",
    "split_cases",
    "store_case_on_grid",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_LABEL_WORDS = re.compile(r"(^|[-_.])(seg|label|labels|gt|truth|silver)([-_.]|$)|silver", re.IGNORECASE)
_PREDICTED = re.compile(r"pred|silver|fusion", re.IGNORECASE)
_BRATS2023_NAMES = re.compile(r"-(t2f|t1c|t1n|t2w)\.", re.IGNORECASE)


@dataclass(frozen=True)
class InputMatcher:
    """The part of a catalog entry that assigns files to model inputs (``inputs`` and ``match_priority``)."""

    inputs: tuple[InputSpec, ...]
    match_priority: tuple[str, ...]

    @classmethod
    def from_preset(cls, preset: Mapping) -> InputMatcher:
        inputs = tuple(InputSpec.from_dict(i) for i in preset["inputs"])
        return cls(inputs, tuple(preset.get("match_priority", [i.key for i in inputs])))


@dataclass
class LoadedCase:
    """A case on the processing grid, cropped to the foreground as inference crops it."""

    case_id: str
    image: np.ndarray
    """(C, X, Y, Z) float32, normalised."""
    target: np.ndarray
    """(3, X, Y, Z) uint8 masks of TC, WT, ET."""
    files: CaseFiles
    convention: str
    """The convention actually applied."""


def _is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _dataset_convention(folder: Path) -> tuple[str | None, bool]:
    """(convention, synthetic) stated by a ``dataset.json`` in ``folder`` (glims synth writes one)."""
    manifest = folder / "dataset.json"
    if not manifest.is_file():
        return None, False
    try:
        info = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None, False
    text = str(info.get("label_convention", ""))
    convention = "brats2023" if "2023" in text else "brats2017" if "2017" in text or "2021" in text else None
    return convention, info.get("generator") == "glims.synth"


def _case_in_folder(folder: Path, matcher: InputMatcher, convention: str) -> CaseFiles | None:
    files = sorted(p for p in folder.iterdir() if _is_image(p))
    if not files:
        return None
    labels = [p for p in files if _LABEL_WORDS.search(_stem(p))]
    images = [p for p in files if p not in labels]
    try:
        assigned = match_inputs(matcher, [str(p) for p in images], strict=True)
    except InputError as err:
        raise InputError(f"case {folder}: {err}; keep one image per input in a case folder") from None
    missing = [i.title.split(" (")[0] for i in matcher.inputs if i.key not in assigned]
    if missing:
        raise InputError(f"case {folder}: no image found for {', '.join(missing)}")
    if not labels:
        raise InputError(f"case {folder}: no label map (a file named *seg*, *label*, *gt* or *silver*)")
    labels.sort(key=lambda p: (bool(_PREDICTED.search(_stem(p))), p.name))
    if len(labels) > 1:
        logger.info(
            "case %s: using label %s (also present: %s)",
            folder.name,
            labels[0].name,
            ", ".join(p.name for p in labels[1:]),
        )
    stated, synthetic = _dataset_convention(folder.parent)
    if convention == "auto":
        if stated:
            convention = stated
        elif any(_BRATS2023_NAMES.search(p.name) for p in images):
            convention = "brats2023"
    quality = "exact" if synthetic else "silver" if _PREDICTED.search(_stem(labels[0])) else "reference"
    return CaseFiles(
        case_id=folder.name,
        images=tuple(Path(assigned[i.key]) for i in matcher.inputs),
        label=labels[0],
        convention=convention,
        label_quality=quality,
    )


def discover_cases(
    roots: Sequence[str | os.PathLike], matcher: InputMatcher, convention: str = "auto"
) -> list[CaseFiles]:
    """Cases under each root: the root itself if it holds images, else each of its sub-folders that does.

    Args:
        roots: case folders or folders of case folders.
        matcher: how files are assigned to model inputs.
        convention: label convention for all cases, or ``auto`` (see module docstring).

    Raises:
        InputError: a root does not exist or holds no case; a case lacks an input or its label.
    """
    cases: list[CaseFiles] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise InputError(f"case folder not found: {root}")
        direct = _case_in_folder(root, matcher, convention)
        if direct is not None:
            cases.append(direct)
            continue
        found = [
            c
            for c in (_case_in_folder(sub, matcher, convention) for sub in sorted(root.iterdir()) if sub.is_dir())
            if c is not None
        ]
        if not found:
            raise InputError(f"no cases found in {root} (expected image files, or folders of them)")
        cases.extend(found)
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(f"case ids occur twice: {', '.join(duplicates[:5])}")
    return cases


def region_masks_on_grid(label: sitk.Image, grid: sitk.Image, convention: str, name: str) -> tuple[np.ndarray, str]:
    """A label map's TC, WT and ET regions on another grid, as training targets are made (see module docstring).

    Args:
        label: the label map as read.
        grid: an image on the target grid (e.g. ``CasePreparation.processing``); only its geometry is used.
        convention: the label map's convention, or ``auto`` (``labels.detect_convention``).
        name: how to call the map in error messages.

    Returns:
        ((3, X, Y, Z) uint8 masks in ``REGIONS`` order on ``grid``, the convention used).
    """
    values = sitk.GetArrayViewFromImage(label)
    if convention == "auto":
        convention = detect_convention(np.asarray(values))
    regions_zyx = regions_from_labels(np.asarray(values), convention, name)
    out = np.empty((len(REGIONS), *grid.GetSize()), dtype=np.uint8)
    for index in range(len(REGIONS)):
        mask = sitk.GetImageFromArray(regions_zyx[index].astype(np.float32))
        mask.CopyInformation(label)
        resampled = sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        out[index] = to_xyz(resampled) >= 0.5
    return out, convention


def label_on_processing_grid(
    label: sitk.Image, convention: str, preprocessing: PreprocessingSpec, output: OutputSpec
) -> sitk.Image:
    """A reference label on a model's processing grid, as training sees it (see module docstring): each region
    resampled there (at least half a voxel), painted in the model's labels (BraTS 2023 for glims).

    Regions nest (ET in TC in WT) before and after resampling, so reading the result's regions back on the same grid
    gives the same training targets: a case can be stored on the processing grid without changing what trains.

    Args:
        label: the reference label map as read.
        convention: its label convention (or ``auto``).
        preprocessing: the model's catalog ``preprocessing`` section (``orientation``, ``spacing``).
        output: the model's catalog ``output`` section (sigmoid TC/WT/ET channels and their paint order).

    Raises:
        ConfigError: a model whose outputs are not the sigmoid TC, WT and ET regions.
    """
    if output.activation != "sigmoid" or sorted(output.channels) != sorted(REGIONS):
        raise ConfigError("a label map on the processing grid needs a model with sigmoid TC, WT and ET outputs")
    grid = to_processing_grid(label, preprocessing.orientation, preprocessing.spacing)
    masks, _ = region_masks_on_grid(label, grid, convention, "the reference label")
    channels = list(output.channels)
    regions_in_output_order = masks[[REGIONS.index(c) for c in channels]].astype(np.float32)
    painted = probabilities_to_labels(regions_in_output_order, output, {c: 0.5 for c in channels})
    return from_xyz(painted, grid)


def store_case_on_grid(
    files: CaseFiles, preprocessing: PreprocessingSpec, output: OutputSpec, out_dir: str | Path, keys: Sequence[str]
) -> Path:
    """Write a case's images and label on the model's processing grid, so that it travels small (a 1 mm BraTS case
    stored at 2 mm: about 2 MB instead of 8) and trains exactly as from its original files.

    Images go through ``to_processing_grid`` as inference reads them (same pixel type); the label through
    ``label_on_processing_grid`` (BraTS 2023 labels; ``_seg_silver`` in the name keeps a silver label silver).

    Args:
        files: the case (e.g. from ``discover_cases``).
        preprocessing, output: the model's catalog ``preprocessing`` and ``output`` sections.
        out_dir: folder to write ``<ID>/<ID>_<key>.nii.gz`` and the label into (``<ID>`` must not exist yet).
        keys: the model's input keys, in ``files.images`` order (e.g. ``flair``, ``t1ce``, ``t1``, ``t2``).

    Returns:
        The case folder written.
    """
    if len(keys) != len(files.images):
        raise ConfigError(f"{len(keys)} input keys for {len(files.images)} images of case {files.case_id}")
    folder = Path(out_dir) / files.case_id
    if folder.exists():
        raise OutputError(f"{folder} exists already; a stored case is never overwritten")
    folder.mkdir(parents=True)
    orientation, spacing = preprocessing.orientation, preprocessing.spacing
    for key, path in zip(keys, files.images, strict=False):
        write_image(
            to_processing_grid(read_image(path, key), orientation, spacing), folder / f"{files.case_id}_{key}.nii.gz"
        )
    label = read_label_image(files.label)
    suffix = "_seg_silver" if files.label_quality == "silver" else "_seg"
    write_image(
        label_on_processing_grid(label, files.convention, preprocessing, output),
        folder / f"{files.case_id}{suffix}.nii.gz",
    )
    return folder


def load_case(
    files: CaseFiles, preprocessing: PreprocessingSpec, roi_size: Sequence[int], titles: Sequence[str] | None = None
) -> LoadedCase:
    """Read and prepare a case (see module docstring).

    Raises:
        InputError: unreadable images or label, label values outside the convention, label grid far from the
            images'.
    """
    names = [f"{t} ({p.name})" for t, p in zip(titles or [p.name for p in files.images], files.images, strict=False)]
    prepared = prepare_case(files.images, names, preprocessing, roi_size)
    label = read_label_image(files.label, f"{files.case_id}: label map {files.label.name}")
    reference = prepared.reference
    if not np.allclose(label.GetOrigin(), reference.GetOrigin(), atol=1.0) or label.GetSize() != reference.GetSize():
        logger.warning(
            "case %s: label grid differs from the first image's; resampling it in physical space", files.case_id
        )
    regions, convention = region_masks_on_grid(label, prepared.processing, files.convention, files.label.name)
    every_channel = (slice(None), *prepared.box)  # (a name of its own: mypy misreads a[(x, *y)] as a[x, *y])
    target = np.ascontiguousarray(regions[every_channel])
    return LoadedCase(files.case_id, prepared.array, target, files, convention)


def split_cases(cases: Sequence[CaseFiles], val_fraction: float, seed: int) -> tuple[list[CaseFiles], list[CaseFiles]]:
    """Seeded split into (training, validation); at least one case each when there are two or more.

    With a single case it is used for both (a smoke run, reported as such by the trainer).
    """
    if not cases:
        raise InputError("no training cases")
    if len(cases) == 1:
        return list(cases), list(cases)
    order = np.random.default_rng([seed, 7919]).permutation(len(cases))
    n_val = min(len(cases) - 1, max(1, int(round(val_fraction * len(cases))))) if val_fraction > 0 else 0
    val = [cases[i] for i in sorted(order[:n_val])]
    train = [cases[i] for i in sorted(order[n_val:])]
    return train, val


def sample_patch(
    case: LoadedCase, size: Sequence[int], rng: np.random.Generator, tumour_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """A random window of ``size`` voxels from a case: (C, *size) float32 image and (3, *size) uint8 target.

    With probability ``tumour_fraction`` the window is centred on a random whole-tumour voxel (when the case has
    one), else placed uniformly. Cases smaller than the window are zero-padded (like inference pads them).
    """
    shape = case.image.shape[1:]
    pad = [(0, 0)] + [(0, max(0, s - n)) for s, n in zip(size, shape, strict=False)]
    image, target = case.image, case.target
    if any(p[1] for p in pad[1:]):
        image, target = np.pad(image, pad), np.pad(target, pad)
        shape = image.shape[1:]
    wt = case.target[REGIONS.index("WT")]
    if rng.random() < tumour_fraction and wt.any():
        voxels = np.flatnonzero(wt)
        centre = np.unravel_index(voxels[rng.integers(len(voxels))], wt.shape)
        start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, size, shape, strict=False)]
    else:
        start = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, shape, strict=False)]
    every_channel = (slice(None), *(slice(b, b + s) for b, s in zip(start, size, strict=False)))
    return np.ascontiguousarray(image[every_channel]), np.ascontiguousarray(target[every_channel])
