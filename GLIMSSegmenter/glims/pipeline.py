"""Segment a case end to end: the one code path used by the CLI, the Slicer module, evaluation and benchmarks.

``segment_files`` reads the inputs, prepares them (``preprocessing``), runs the model (``inference``), turns the
outputs into labels (``postprocessing``), puts them on the reference input's grid and writes the requested outputs
(Slicer ``.seg.nrrd``, NIfTI label map, probability maps, JSON report) all-or-nothing.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from . import __version__
from .casecache import prepared_case
from .catalog import ModelSpec, load_catalog
from .imageio import check_image_target, ensure_writable, write_image
from .inference import InferenceOptions, count_windows, load_models, predict_logits
from .inputroles import assign_inputs
from .outputs import OutputSet, check_targets, describe_write_error, remove_stale_partials
from .postprocessing import activate, apply_cleanup_rules, check_thresholds, fill_holes, probabilities_to_labels
from .preprocessing import CasePreparation
from .progress import CancelToken, ProgressCallback, StagePlan
from .segfile import label_counts, write_seg_nrrd

if TYPE_CHECKING:  # glims.dicom is imported when a DICOM output is asked for
    from .dicom.export import DicomRequest

__all__ = ["SegmentationResult", "assign_inputs", "segment_files", "resolve_model"]

logger = logging.getLogger(__name__)

STAGES = (("load", 3.0), ("preprocess", 7.0), ("infer", 80.0), ("postprocess", 6.0), ("write", 4.0))


@dataclass
class SegmentationResult:
    """What a segmentation produced."""

    labels: sitk.Image
    """uint8 label map on the reference input's grid."""
    outputs: dict[str, Path]
    report: dict[str, Any]
    assignment: dict[str, str] = field(default_factory=dict)


def resolve_model(model: str | ModelSpec, home: str | os.PathLike | None = None) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else load_catalog(home).get(model)


def _segment_stats(labels: sitk.Image, counts: np.ndarray, spec: ModelSpec) -> list[dict[str, Any]]:
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    return [
        {
            "value": label.value,
            "name": label.name,
            "voxels": int(counts[label.value]),
            "volume_ml": round(int(counts[label.value]) * voxel_ml, 3),
        }
        for label in spec.labels
    ]


def segment_files(
    model: str | ModelSpec,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    *,
    labelmap: str | os.PathLike | None = None,
    probabilities: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    options: InferenceOptions | None = None,
    postprocess: bool | None = None,
    thresholds: Mapping[str, float] | None = None,
    crop: bool | None = None,
    home: str | os.PathLike | None = None,
    dicom_seg: str | os.PathLike | None = None,
    dicom_rtstruct: str | os.PathLike | None = None,
    dicom_reference: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SegmentationResult:
    """Segment one case.

    Args:
        model: catalog reference (``ID`` or ``ID@VERSION``) or a ``ModelSpec``.
        inputs: image files or DICOM folders, one per model input (matched by name pattern, else catalog order).
        output: Slicer segmentation file (``.seg.nrrd``) to write, or None.
        labelmap: label map to write (``.nii.gz``, ``.nrrd``...), or None.
        probabilities: probability map to write (``.nrrd`` or ``.nii.gz``): one vector component per output
            channel, on the reference grid, or None.
        report: JSON report to write, or None.
        options: device, overlap, blending, window placement, batch, precision, flips (default: the catalog
            entry's ``inference``).
        postprocess: apply the catalog's clean-up rules (default: as the catalog says).
        thresholds: per-channel sigmoid threshold overrides.
        crop: crop to the foreground before the windows (default: as the catalog says).
        home: user folder holding the user catalog.
        dicom_seg, dicom_rtstruct: DICOM Segmentation / RT Structure Set to write (``glims.dicom``), or None;
            they refer to ``dicom_reference``, a DICOM series folder (default: the reference input).
        progress, cancel: see ``glims.progress``.

    Returns:
        The label image (reference grid), the written paths and the report.

    Raises:
        InputError, ConfigError (e.g. a threshold for a channel the model lacks), CheckpointError, CatalogError,
        DeviceError, OutputError, Cancelled. Nothing is written unless the whole job succeeds.
    """
    plan = StagePlan(STAGES, progress)
    timings: dict[str, float] = {}
    targets = {
        k: v
        for k, v in (
            ("segmentation", output),
            ("labelmap", labelmap),
            ("probabilities", probabilities),
            ("report", report),
            ("dicom_seg", dicom_seg),
            ("dicom_rtstruct", dicom_rtstruct),
        )
        if v is not None
    }
    check_targets(targets, inputs)  # no output overwrites an input or another output
    for path in (labelmap, probabilities):
        if path is not None:
            check_image_target(path)  # a format that keeps its voxels in a second file cannot be written atomically
    for path in targets.values():
        ensure_writable(path)
    for folder in {Path(path).parent for path in targets.values()}:
        remove_stale_partials(folder)  # left behind by a run killed while writing here

    clock = time.perf_counter()
    plan.report("load", 0, 1, "loading model")
    spec = resolve_model(model, home)
    check_thresholds(spec.output, thresholds)
    assignment = assign_inputs(spec, inputs)
    for key, path in assignment:
        logger.info("input %s <- %s", key, path)
    dicom = _dicom_request(dicom_seg, dicom_rtstruct, dicom_reference or assignment[0][1])
    models = load_models(spec)
    timings["load"] = time.perf_counter() - clock
    plan.report("load", 1, 1, f"model {spec.ref} loaded")
    _check(cancel)

    clock = time.perf_counter()
    plan.report("preprocess", 0, 1, "reading and preparing images")
    titles = {i.key: i.title.split(" (")[0] for i in spec.inputs}
    case = prepared_case(
        [p for _, p in assignment],
        [f"{titles[k]} ({p.name})" for k, p in assignment],
        spec.preprocessing,
        spec.roi_size,
        crop,
    )
    timings["preprocess"] = time.perf_counter() - clock
    plan.report("preprocess", 1, 1, f"{'x'.join(map(str, case.array.shape[1:]))} voxels to segment")
    _check(cancel)

    clock = time.perf_counter()
    opts = options or InferenceOptions.from_spec(spec.inference)
    logits, device = predict_logits(
        models,
        case.array,
        spec.roi_size,
        opts,
        progress=lambda done, total: plan.report("infer", done, total, f"window batch {done}/{total}"),
        cancel=cancel,
    )
    timings["infer"] = time.perf_counter() - clock

    clock = time.perf_counter()
    plan.report("postprocess", 0, 1, "labels")
    labels, probs_full = _labels_on_reference(spec, case, logits, postprocess, thresholds)
    counts = label_counts(labels)  # for the report and the .seg.nrrd, counted once
    timings["postprocess"] = time.perf_counter() - clock
    plan.report("postprocess", 1, 1, "labels ready")
    _check(cancel)

    clock = time.perf_counter()
    summary: dict[str, Any] = {
        "glims_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "id": spec.id,
            "version": spec.version,
            "preset": spec.preset,
            "weights_sha256": [w.sha256 for w in spec.weights],
        },
        "inputs": {key: str(path) for key, path in assignment},
        "reference_geometry": {
            "size": list(case.reference.GetSize()),
            "spacing": list(case.reference.GetSpacing()),
            "origin": list(case.reference.GetOrigin()),
            "direction": list(case.reference.GetDirection()),
        },
        "device": device,
        "options": {
            "overlap": opts.overlap,
            "blend": opts.blend,
            "placement": opts.placement,
            "windows": count_windows(case.array.shape[1:], spec.roi_size, opts.overlap, opts.placement),
            "sw_batch_size": opts.sw_batch_size,
            "precision": opts.precision,
            "tta": opts.tta,
        },
        "runtime": {"python": platform.python_version(), "torch": _torch_version()},
        "segments": _segment_stats(labels, counts, spec),
        "timings_s": {},
        "outputs": {k: str(v) for k, v in targets.items()},
    }
    plan.report("write", 0, len(targets) or 1, "writing outputs")
    written: dict[str, Path] = {}
    with OutputSet() as pending:
        if output is not None:
            write_seg_nrrd(labels, spec.labels, pending.staged(output), counts)
        if labelmap is not None:
            write_image(labels, pending.staged(labelmap))
        if probabilities is not None:
            write_image(_probability_image(probs_full, case), pending.staged(probabilities))
        if dicom is not None:
            dicom.write(labels, spec, pending)
        timings["write"] = time.perf_counter() - clock
        timings_s = {k: round(v, 3) for k, v in timings.items()}
        timings_s["total"] = round(sum(timings.values()), 3)
        summary["timings_s"] = timings_s
        if report is not None:
            staged = pending.staged(report)
            try:
                with open(staged, "w") as handle:
                    json.dump(summary, handle, indent=2)
                    handle.write("\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as err:  # e.g. the disk is full: the staged outputs are discarded on the way out
                raise describe_write_error(err, report) from None
        _check(cancel)
        pending.commit()
        written = {k: Path(v) for k, v in targets.items()}
    plan.report("write", len(targets) or 1, len(targets) or 1, "done")
    return SegmentationResult(labels, written, summary, {k: str(p) for k, p in assignment})


def _dicom_request(
    seg: str | os.PathLike | None, rtstruct: str | os.PathLike | None, reference: str | os.PathLike
) -> DicomRequest | None:
    """The checked DICOM outputs (``glims.dicom``, imported only when asked for), or None."""
    if seg is None and rtstruct is None:
        return None
    from .dicom.export import DicomRequest

    return DicomRequest.prepare({"dicom_seg": seg, "dicom_rtstruct": rtstruct}, reference)


def _check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check()


def _torch_version() -> str:
    import torch

    return torch.__version__


def _labels_on_reference(
    spec: ModelSpec,
    case: CasePreparation,
    logits: np.ndarray,
    postprocess: bool | None,
    thresholds: Mapping[str, float] | None,
) -> tuple[sitk.Image, np.ndarray]:
    """The uint8 label map on the reference grid, and the probabilities on the full processing grid."""
    output = spec.output
    probs = activate(logits, output.activation)
    background = [1.0] + [0.0] * (probs.shape[0] - 1) if output.activation == "softmax" else 0.0
    probs_full = case.uncrop(probs, background)
    labels = probabilities_to_labels(probs_full, output, thresholds)
    cleanup = spec.postprocessing
    if (cleanup.enabled if postprocess is None else postprocess) and output.activation == "sigmoid":
        apply_cleanup_rules(labels, probs_full, list(output.channels), cleanup.rules)
        if cleanup.fill_holes is not None:
            fill_holes(labels, cleanup.fill_holes.label, cleanup.fill_holes.fill_with)
    labels[~case.foreground] = 0
    # nearest neighbour on the uint8 labels themselves: the same values, a quarter of the memory traffic of float32
    return case.to_reference(labels[None], sitk.sitkNearestNeighbor)[0], probs_full


def _probability_image(probs_full: np.ndarray, case: CasePreparation) -> sitk.Image:
    channels = case.to_reference(probs_full, sitk.sitkLinear)
    return sitk.Compose([sitk.Cast(c, sitk.sitkFloat32) for c in channels])
