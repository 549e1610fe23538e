"""Evaluate segmentations against reference labels: Dice and HD95 of TC, WT and ET per case, a CSV and a summary.

Two entry points:

* ``evaluate_folders(pred_dir, ref_dir)``: label maps already on disk, matched by case id;
* ``evaluate_model(model_id, cases_dir, pred_dir)``: segment every case of a folder with a catalog model (through
  ``segment_cases``, the only place that calls the segmentation pipeline), then score each against the case's
  own reference label.

Case ids come from file names (see ``find_label_files``): ``<ID>/<ID>_seg.nii.gz`` (BraTS 2021),
``<ID>/<ID>-seg.nii.gz`` (BraTS 2023), ``<ID>_seg.nii.gz``, ``<ID>_segm.nii.gz`` (UPenn-GBM), ``<ID>.seg.nrrd``,
``<ID>/seg.nii.gz`` or, in a folder without any such file, ``<ID>.nii.gz``; or from an explicit pattern such as
``"{id}_fusion_simple_silver.nii.gz"``.

With ``breakdown`` settings, each case's errors are also split by kind (``glims.error_breakdown``: boundary, far and
detached false positives, boundary, far and missed false negatives) and, when a model's processing grid is known,
the Dice ceiling that grid sets is computed from the reference label.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .casefiles import CaseFiles
from .catalog_sections import OutputSpec, PreprocessingSpec
from .error_breakdown import DEFAULT_BOUNDARY_MM, ERROR_KINDS, RegionErrors, grid_ceiling, label_errors
from .errors import ConfigError, InputError
from .fileio import atomic_write
from .metrics import BRATS_HD95_PENALTY, REGIONS, RegionScore, get_convention, score_regions
from .progress import CancelToken, ProgressCallback, ProgressEvent, StagePlan

if TYPE_CHECKING:  # SimpleITK is imported when a label file is read
    import SimpleITK as sitk

__all__ = [
    "Breakdown",
    "CaseFiles",
    "CaseResult",
    "find_label_files",
    "find_cases",
    "read_label",
    "evaluate_pair",
    "evaluate_folders",
    "evaluate_model",
    "segment_cases",
    "summarize",
    "format_summary",
    "summarize_breakdown",
    "format_breakdown",
    "write_csv",
    "MISSING_POLICIES",
]

log = logging.getLogger(__name__)

MISSING_POLICIES = ("error", "empty", "skip")
_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_SEG_SUFFIX = re.compile(r"[_\-.](seg|segm|segmentation|label|labels|labelmap|pred|prediction)$", re.IGNORECASE)
_IMAGE_SUFFIX = re.compile(r"[_\-](flair|fla|t2flair|t2f|t1ce|t1c|t1gd|t1|t1n|t2|t2w|ct)$", re.IGNORECASE)
_GENERIC_NAMES = {"seg", "segmentation", "label", "labels", "labelmap", "pred", "prediction"}
_MAX_DEPTH = 3
_GEOMETRY_TOLERANCE_MM = 1e-2


@dataclass(frozen=True)
class _Found:
    case_id: str
    kind: str  # "seg", "image" or "plain"
    path: Path


def _split_name(path: Path) -> tuple[str, str] | None:
    """(stem, extension) for a readable image/label file name, None otherwise."""
    lower = path.name.lower()
    for ext in _EXTENSIONS:
        if lower.endswith(ext) and len(lower) > len(ext):
            return path.name[: -len(ext)], ext
    return None


def _classify(path: Path) -> _Found | None:
    split = _split_name(path)
    if split is None:
        return None
    stem, ext = split
    if ext == ".seg.nrrd":
        return _Found(stem, "seg", path)
    if stem.lower() in _GENERIC_NAMES:
        return _Found(path.parent.name, "seg", path)
    match = _SEG_SUFFIX.search(stem)
    if match:
        return _Found(stem[: match.start()], "seg", path)
    match = _IMAGE_SUFFIX.search(stem)
    if match:
        return _Found(stem[: match.start()], "image", path)
    return _Found(stem, "plain", path)


def _walk(root: Path) -> list[Path]:
    """Files under ``root`` down to ``_MAX_DEPTH`` levels, hidden files and folders excluded, sorted. Symbolic links
    to case folders are followed (datasets are often assembled that way), each folder read once (no link loops)."""
    found: list[Path] = []
    base_depth = len(root.parts)
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        depth = len(Path(folder).parts) - base_depth
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < _MAX_DEPTH else []
        found.extend(Path(folder) / f for f in sorted(files) if not f.startswith("."))
    return found


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    if pattern.count("{id}") != 1:
        raise ConfigError(f"the file pattern {pattern!r} must contain {{id}} exactly once")
    parts = [re.escape(p).replace(r"\*", "[^/]*").replace(r"\?", "[^/]") for p in pattern.split("{id}")]
    return re.compile(f"{parts[0]}(?P<id>[^/]+?){parts[1]}")


def find_label_files(folder: str | os.PathLike, pattern: str | None = None) -> dict[str, Path]:
    """Label files under ``folder`` by case id.

    Without ``pattern``: files named like a segmentation (``*_seg``, ``*-seg``, ``*.seg.nrrd``, ``*_label``,
    ``*_pred``..., or ``seg.nii.gz`` named by its folder) are the labels; only if there are none, every other
    image file is a label named by its stem (a folder of ``<ID>.nii.gz`` predictions). Files named like an MR
    sequence (``_flair``, ``_t1ce``, ``-t2w``...) are never labels. With ``pattern`` (``{id}`` once, ``*`` and
    ``?`` allowed; matched against the path relative to ``folder`` when it holds a ``/``, else the file name):
    exactly the matching files.

    Raises:
        InputError: the folder does not exist, or two files give the same case id.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    files = _walk(root)
    chosen: list[_Found] = []
    if pattern:
        regex = _pattern_regex(pattern)
        for path in files:
            target = path.relative_to(root).as_posix() if "/" in pattern else path.name
            match = regex.fullmatch(target)
            if match:
                chosen.append(_Found(match.group("id"), "seg", path))
    else:
        found = [f for f in (_classify(p) for p in files) if f is not None]
        chosen = [f for f in found if f.kind == "seg"] or [f for f in found if f.kind == "plain"]
    labels: dict[str, Path] = {}
    for item in chosen:
        if item.case_id in labels:
            raise InputError(
                f"two label files for case {item.case_id!r} in {root}: {labels[item.case_id].name} and "
                f"{item.path.name}; remove one or give a file pattern"
            )
        labels[item.case_id] = item.path
    return labels


def find_cases(folder: str | os.PathLike) -> list[CaseFiles]:
    """Cases under ``folder``: each reference label (named as in ``find_label_files``) with the image files of
    the same case id (``<ID>_flair.nii.gz``, ``<ID>-t1c.nii.gz``...), sorted by id.

    Raises:
        InputError: no case with both a label and images.
    """
    root = Path(folder)
    labels = find_label_files(root)
    images: dict[str, list[Path]] = {}
    for path in _walk(root):
        found = _classify(path)
        if found is not None and found.kind == "image":
            images.setdefault(found.case_id, []).append(path)
    cases = [CaseFiles(cid, tuple(sorted(images[cid])), labels[cid]) for cid in sorted(labels) if cid in images]
    for cid in sorted(set(labels) - set(images)):
        log.warning("case %s has a label but no images; skipped", cid)
    if not cases:
        raise InputError(f"no case in {root} has both images (<ID>_flair.nii.gz, ...) and a label (<ID>_seg.nii.gz)")
    return cases


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, sitk.Image]:
    """A label map as (array (z, y, x), SimpleITK image holding the geometry).

    Raises:
        InputError: missing, unreadable, truncated, not 3-D, with more than one component, NaN/Inf, implausible
            spacing or axes not perpendicular (``imageio.read_label_image``).
    """
    import SimpleITK as sitk

    from .imageio import read_label_image

    image = read_label_image(path, f"label file {Path(path).name}")
    return sitk.GetArrayFromImage(image), image


def _check_same_grid(pred: sitk.Image, ref: sitk.Image, pred_path: Path, ref_path: Path) -> None:
    problems = []
    if pred.GetSize() != ref.GetSize():
        problems.append(f"size {pred.GetSize()} vs {ref.GetSize()}")
    elif not np.allclose(pred.GetSpacing(), ref.GetSpacing(), rtol=1e-4, atol=1e-5):
        problems.append(f"spacing {pred.GetSpacing()} vs {ref.GetSpacing()}")
    elif not np.allclose(pred.GetOrigin(), ref.GetOrigin(), atol=_GEOMETRY_TOLERANCE_MM):
        problems.append(f"origin {pred.GetOrigin()} vs {ref.GetOrigin()}")
    elif not np.allclose(pred.GetDirection(), ref.GetDirection(), atol=1e-4):
        problems.append("direction")
    if problems:
        raise InputError(
            f"prediction {pred_path.name} is not on the grid of reference {ref_path.name} ({problems[0]}); "
            "resample it onto the reference first"
        )


@dataclass(frozen=True)
class Breakdown:
    """What to add to each case's scores: its errors split by kind and, with a model's catalog blocks, the Dice
    ceiling of the model's processing grid (see ``glims.error_breakdown``)."""

    boundary_mm: float = DEFAULT_BOUNDARY_MM
    preprocessing: PreprocessingSpec | None = None
    """The model's catalog ``preprocessing`` section (its processing grid), or None for no ceiling."""
    output: OutputSpec | None = None
    """The model's catalog ``output`` section (how its channels are painted), or None for no ceiling."""


@dataclass
class CaseResult:
    """The scores of one case."""

    case_id: str
    scores: dict[str, RegionScore]
    pred_path: Path | None = None
    ref_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    errors: dict[str, RegionErrors] | None = None
    """Per region, the error voxels by kind (with a ``Breakdown``)."""
    ceiling: dict[str, float] | None = None
    """Per region, the Dice ceiling of the model's processing grid (with a ``Breakdown`` that names one)."""


def _named(err: InputError, pred_path: str | os.PathLike | None, ref_path: str | os.PathLike) -> InputError:
    which = pred_path if "prediction" in str(err) else ref_path
    return InputError(f"{Path(str(which)).name}: {err}")


def _score_case(
    case_id: str,
    pred_path: str | os.PathLike | None,
    ref_path: str | os.PathLike,
    pred_convention: str,
    ref_convention: str,
    empty_penalty: float,
    breakdown: Breakdown | None,
) -> CaseResult:
    """Read one prediction (None: empty) and its reference once, and score them (and break the errors down)."""
    ref_array, ref_image = read_label(ref_path)
    if pred_path is None:
        pred_array = np.zeros_like(ref_array)
    else:
        pred_array, pred_image = read_label(pred_path)
        _check_same_grid(pred_image, ref_image, Path(pred_path), Path(ref_path))
    spacing = tuple(reversed(ref_image.GetSpacing()))
    try:
        scores = score_regions(pred_array, ref_array, spacing, pred_convention, ref_convention, empty_penalty)
        errors = ceiling = None
        if breakdown is not None:
            errors = label_errors(
                pred_array, ref_array, spacing, pred_convention, ref_convention, breakdown.boundary_mm
            )
            if breakdown.preprocessing is not None and breakdown.output is not None:
                ceiling = grid_ceiling(
                    ref_image, get_convention(ref_convention).name, breakdown.preprocessing, breakdown.output
                )
    except InputError as err:
        raise _named(err, pred_path, ref_path) from None
    notes = [] if pred_path is not None else ["no prediction: scored as empty"]
    return CaseResult(
        case_id, scores, Path(pred_path) if pred_path is not None else None, Path(ref_path), notes, errors, ceiling
    )


def evaluate_pair(
    pred_path: str | os.PathLike | None,
    ref_path: str | os.PathLike,
    pred_convention: str = "brats2023",
    ref_convention: str = "brats2023",
    empty_penalty: float = BRATS_HD95_PENALTY,
) -> dict[str, RegionScore]:
    """Scores of one prediction file against one reference file on the same grid.

    ``pred_path=None`` scores an empty prediction (a missing case counted as BraTS does).
    """
    return _score_case("", pred_path, ref_path, pred_convention, ref_convention, empty_penalty, None).scores


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    *,
    pred_convention: str = "brats2023",
    ref_convention: str = "brats2023",
    pred_pattern: str | None = None,
    ref_pattern: str | None = None,
    missing: str = "error",
    empty_penalty: float = BRATS_HD95_PENALTY,
    breakdown: Breakdown | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[CaseResult]:
    """Score every reference case that has a prediction, matched by case id.

    Args:
        pred_dir, ref_dir: folders of label maps (see ``find_label_files``).
        pred_convention, ref_convention: label conventions (``brats2023``, ``brats2017``, ``brats2013``).
        pred_pattern, ref_pattern: optional file patterns with ``{id}``.
        missing: a reference without a prediction is an ``error``, scored as an ``empty`` prediction (BraTS
            rule: Dice 0 and the HD95 penalty where the reference has the region), or ``skip``ped.
        empty_penalty: HD95 in mm when exactly one side is empty.
        breakdown: also split each case's errors by kind (and compute a grid ceiling if it names a model's grid).
        progress, cancel: see ``glims.progress``.

    Returns:
        One result per scored case, sorted by case id.
    """
    if missing not in MISSING_POLICIES:
        raise ConfigError(f"missing must be one of {MISSING_POLICIES}, not {missing!r}")
    get_convention(pred_convention)
    get_convention(ref_convention)
    preds = find_label_files(pred_dir, pred_pattern)
    refs = find_label_files(ref_dir, ref_pattern)
    if not refs:
        raise InputError(f"no reference label files found in {ref_dir}")
    unmatched = sorted(set(preds) - set(refs))
    if unmatched:
        log.warning("%d predictions have no reference and are ignored: %s", len(unmatched), ", ".join(unmatched[:5]))
    lacking = sorted(set(refs) - set(preds))
    if lacking and missing == "error":
        shown = ", ".join(lacking[:5]) + (" ..." if len(lacking) > 5 else "")
        raise InputError(
            f"{len(lacking)} of {len(refs)} reference cases have no prediction in {pred_dir} ({shown}); "
            "pass --missing empty to score them as empty or --missing skip to leave them out"
        )
    case_ids = sorted(refs) if missing == "empty" else sorted(set(refs) & set(preds))
    if not case_ids:
        raise InputError(f"no case id is shared by the predictions in {pred_dir} and the references in {ref_dir}")
    plan = StagePlan([("evaluate", 1.0)], progress)
    results = []
    for done, case_id in enumerate(case_ids):
        if cancel is not None:
            cancel.check()
        results.append(
            _score_case(
                case_id, preds.get(case_id), refs[case_id], pred_convention, ref_convention, empty_penalty, breakdown
            )
        )
        plan.report("evaluate", done + 1, len(case_ids), case_id)
    return results


def segment_cases(
    model_id: str,
    cases: Sequence[CaseFiles],
    out_dir: str | os.PathLike,
    *,
    inference: Mapping[str, object] | None = None,
    thresholds: Mapping[str, float] | None = None,
    crop: bool | None = None,
    postprocess: bool | None = None,
    home: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Path]:
    """Segment each case's images with a catalog model into ``<out_dir>/<ID>.nii.gz`` label maps.

    The only place where evaluation calls the segmentation pipeline (``glims.pipeline.segment_files``); inputs
    are matched to the model's inputs by file name there.

    Args:
        model_id: catalog reference (``ID`` or ``ID@VERSION``).
        cases: from ``find_cases``.
        out_dir: folder for the label maps (created).
        inference: settings that replace the catalog entry's inference settings for every case, by
            ``glims.inference.InferenceOptions`` field name (e.g. ``{"device": "cpu", "tta": True}``); ``None``
            values are ignored.
        thresholds: per-channel sigmoid threshold overrides, as ``glims segment --threshold``.
        crop, postprocess: ``False`` runs the windows over the whole image / skips the clean-up, as ``glims segment
            --no-crop`` / ``--no-postprocess``; ``None`` keeps the catalog's setting.
        home: user folder holding the user catalog.

    Returns:
        ``{case_id: label map path}``.
    """
    from dataclasses import fields

    from .inference import InferenceOptions
    from .pipeline import resolve_model, segment_files
    from .postprocessing import check_thresholds

    spec = resolve_model(model_id, home)
    overrides = {key: value for key, value in (inference or {}).items() if value is not None}
    unknown = sorted(set(overrides) - {f.name for f in fields(InferenceOptions)})
    if unknown:
        raise ConfigError(f"unknown inference settings {unknown}")
    options = InferenceOptions.from_spec(spec.inference, **overrides)
    check_thresholds(spec.output, thresholds)
    out = Path(out_dir)
    plan = StagePlan([("segment", 1.0)], progress)
    written: dict[str, Path] = {}
    for done, case in enumerate(cases):
        if cancel is not None:
            cancel.check()
        plan.report("segment", done, len(cases), f"segmenting {case.case_id}")
        target = out / f"{case.case_id}.nii.gz"
        segment_files(
            spec,
            case.images,
            None,
            labelmap=target,
            options=options,
            thresholds=thresholds,
            crop=crop,
            postprocess=postprocess,
            home=home,
            cancel=cancel,
        )
        written[case.case_id] = target
        log.info("segmented %s -> %s", case.case_id, target)
    plan.report("segment", len(cases), len(cases), "all cases segmented")
    return written


def evaluate_model(
    model_id: str,
    cases_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    *,
    pred_convention: str = "brats2023",
    ref_convention: str = "brats2023",
    empty_penalty: float = BRATS_HD95_PENALTY,
    inference: Mapping[str, object] | None = None,
    thresholds: Mapping[str, float] | None = None,
    crop: bool | None = None,
    postprocess: bool | None = None,
    breakdown_mm: float | None = None,
    home: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[CaseResult]:
    """Segment every case under ``cases_dir`` (see ``find_cases``) with ``model_id``, writing the label maps to
    ``pred_dir``, and score each against the case's reference label. ``inference``, ``thresholds``, ``crop`` and
    ``postprocess``: as in ``segment_cases``. With ``breakdown_mm``, each case's errors are split by kind (boundary
    errors: within that many mm) and the Dice ceiling of the model's processing grid is computed from each
    reference label."""
    get_convention(pred_convention)
    get_convention(ref_convention)
    cases = find_cases(cases_dir)
    plan = StagePlan([("segment", 0.95), ("evaluate", 0.05)], progress)

    def segment_progress(event: ProgressEvent) -> None:
        plan.report("segment", event.done, event.total, event.message)

    predictions = segment_cases(
        model_id,
        cases,
        pred_dir,
        inference=inference,
        thresholds=thresholds,
        crop=crop,
        postprocess=postprocess,
        home=home,
        progress=segment_progress,
        cancel=cancel,
    )
    breakdown = None
    if breakdown_mm is not None:
        from .pipeline import resolve_model

        spec = resolve_model(model_id, home)
        breakdown = Breakdown(breakdown_mm, spec.preprocessing, spec.output)
    results = []
    for done, case in enumerate(cases):
        results.append(
            _score_case(
                case.case_id,
                predictions[case.case_id],
                case.label,
                pred_convention,
                ref_convention,
                empty_penalty,
                breakdown,
            )
        )
        plan.report("evaluate", done + 1, len(cases), case.case_id)
    return results


def summarize(results: Sequence[CaseResult]) -> dict[str, dict[str, dict[str, float]]]:
    """``{metric: {region: {mean, median, std, min, max, n}}}`` for metric ``dice`` and ``hd95`` (mm).

    ``std`` is the population standard deviation (ddof 0). HD95 statistics include the empty-region penalties.
    """
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for metric in ("dice", "hd95"):
        summary[metric] = {}
        for region in REGIONS:
            values = np.array([getattr(r.scores[region], metric) for r in results], dtype=np.float64)
            if values.size == 0:
                continue
            summary[metric][region] = {
                "mean": float(values.mean()),
                "median": float(np.median(values)),
                "std": float(values.std()),
                "min": float(values.min()),
                "max": float(values.max()),
                "n": int(values.size),
            }
    return summary


def format_summary(summary: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A fixed-width table of the summary, one row per region."""
    lines = [f"{'region':<7}{'Dice mean':>10}{'median':>9}{'std':>8}   {'HD95 mean':>10}{'median':>9}{'std':>9}  (mm)"]
    for region in REGIONS:
        d, h = summary["dice"].get(region), summary["hd95"].get(region)
        if d is None or h is None:
            continue
        lines.append(
            f"{region:<7}{d['mean']:>10.4f}{d['median']:>9.4f}{d['std']:>8.4f}   "
            f"{h['mean']:>10.2f}{h['median']:>9.2f}{h['std']:>9.2f}"
        )
    count = next(iter(summary["dice"].values()), {}).get("n", 0)
    lines.append(f"{int(count)} cases; HD95 of a region present on one side only = penalty")
    return "\n".join(lines)


def summarize_breakdown(results: Sequence[CaseResult]) -> dict[str, dict[str, float]]:
    """``{region: {kind: mean Dice lost to it, ..., "dice": mean Dice, "ceiling": mean grid ceiling}}`` over the
    cases that have a breakdown (``ceiling`` only when every such case has one). Empty without breakdowns."""
    broken = [(r, r.errors) for r in results if r.errors is not None]
    if not broken:
        return {}
    ceilings = [r.ceiling for r, _ in broken if r.ceiling is not None]
    out: dict[str, dict[str, float]] = {}
    for region in REGIONS:
        row = {"dice": float(np.mean([r.scores[region].dice for r, _ in broken]))}
        for kind in ERROR_KINDS:
            row[kind] = float(np.mean([errors[region].dice_lost(kind) for _, errors in broken]))
        if len(ceilings) == len(broken):
            row["ceiling"] = float(np.mean([ceiling[region] for ceiling in ceilings]))
        out[region] = row
    return out


def format_breakdown(breakdown: Mapping[str, Mapping[str, float]], boundary_mm: float) -> str:
    """A fixed-width table of ``summarize_breakdown``: mean Dice, the mean Dice lost to each kind, the ceiling."""
    heads = {
        "fp_boundary": "FP bnd",
        "fp_far": "FP far",
        "fp_detached": "FP det",
        "fn_boundary": "FN bnd",
        "fn_far": "FN far",
        "fn_missed": "FN miss",
    }
    lines = [f"{'region':<7}{'Dice':>7}" + "".join(f"{heads[k]:>9}" for k in ERROR_KINDS) + f"{'ceiling':>9}"]
    for region, row in breakdown.items():
        ceiling = f"{row['ceiling']:>9.4f}" if "ceiling" in row else f"{'-':>9}"
        lines.append(f"{region:<7}{row['dice']:>7.4f}" + "".join(f"{row[k]:>9.4f}" for k in ERROR_KINDS) + ceiling)
    lines.append(
        f"Dice lost to each kind of error (they add up to 1 - Dice); boundary = within {boundary_mm:g} mm; "
        "ceiling = the reference through the model's grid and back"
    )
    return "\n".join(lines)


def _csv_columns(with_breakdown: bool) -> list[str]:
    columns = ["case_id"]
    columns += [f"dice_{r}" for r in REGIONS] + [f"hd95_{r}" for r in REGIONS]
    columns += [f"ref_voxels_{r}" for r in REGIONS] + [f"pred_voxels_{r}" for r in REGIONS]
    if with_breakdown:
        columns += [f"{kind}_{r}" for r in REGIONS for kind in ("tp", *ERROR_KINDS)]
        columns += [f"ceiling_{r}" for r in REGIONS]
    return columns + ["prediction", "reference", "notes"]


def _breakdown_cells(result: CaseResult) -> list[object]:
    errors, ceiling = result.errors or {}, result.ceiling or {}
    cells: list[object] = []
    for region in REGIONS:
        cells += [getattr(errors[region], kind) if region in errors else "" for kind in ("tp", *ERROR_KINDS)]
    return cells + [f"{ceiling[r]:.6f}" if r in ceiling else "" for r in REGIONS]


def write_csv(results: Sequence[CaseResult], path: str | os.PathLike) -> Path:
    """Write one row per case (Dice, HD95 in mm and voxel counts per region; with breakdowns, the true positives,
    the error voxels of each kind and the grid ceiling per region), atomically."""
    with_breakdown = any(r.errors is not None for r in results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_csv_columns(with_breakdown))
    for result in results:
        s = result.scores
        writer.writerow(
            [result.case_id]
            + [f"{s[r].dice:.6f}" for r in REGIONS]
            + [f"{s[r].hd95:.4f}" for r in REGIONS]
            + [s[r].ref_voxels for r in REGIONS]
            + [s[r].pred_voxels for r in REGIONS]
            + (_breakdown_cells(result) if with_breakdown else [])
            + [str(result.pred_path or ""), str(result.ref_path or ""), "; ".join(result.notes)]
        )
    target = Path(path)
    with atomic_write(target, "w") as handle:
        handle.write(buffer.getvalue())
    return target
