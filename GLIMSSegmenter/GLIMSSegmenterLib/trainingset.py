"""The training set from Slicer: a corrected segmentation and its input volumes stored as a fine-tuning case.

The engine's case store (``glims.casestore``, ``<GLIMS home>/cases/``) validates and keeps the cases; this module
turns scene content into what it needs: the model's input volumes as files, and one label map on the reference
(first) input's grid whose values are the model's label values. Each segment's value is found from, in order,

1. its name (the label's full name, its short form before the brackets, or the abbreviation in brackets),
2. its terminology (type and modifier codes, as the module sets them and Slicer's terminology picker does),
3. the model label value recorded on the segment when the module imported a result (``sceneio.LABEL_VALUE_TAG``).

A segment matching none of them is refused, with its name, so that nothing is trained on a guess.

When the module creates a segmentation it records on the node the model that produced it and its input volumes
(:func:`recordDraft`), so that "Add to training set" knows the inputs and the provenance later.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from glims.errors import InputError

from . import sceneio

__all__ = [
    "DRAFT_MODEL_ATTRIBUTE",
    "INPUT_REFERENCE_ROLE",
    "recordDraft",
    "draftModel",
    "recordedInputs",
    "segmentLabelValues",
    "addCase",
    "listCases",
    "removeCase",
]

logger = logging.getLogger(__name__)

DRAFT_MODEL_ATTRIBUTE = "GLIMSSegmenter.DraftModel"
"""Segmentation node attribute: ``ID@VERSION`` of the model that produced the first draft."""

INPUT_REFERENCE_ROLE = "GLIMSSegmenter.Input."
"""Segmentation node reference role prefix (+ input key): the volumes the draft was computed from."""


def recordDraft(segmentationNode, spec, inputVolumes: Mapping[str, object]) -> None:
    """Keep on the node which model produced it and from which volumes (saved with the scene)."""
    segmentationNode.SetAttribute(DRAFT_MODEL_ATTRIBUTE, spec.ref)
    for inp in spec.inputs:
        volume = inputVolumes.get(inp.key)
        segmentationNode.SetNodeReferenceID(INPUT_REFERENCE_ROLE + inp.key, volume.GetID() if volume else None)


def draftModel(segmentationNode) -> str:
    """The model that produced the node's first draft (``ID@VERSION``), or "" when the module did not make it."""
    return segmentationNode.GetAttribute(DRAFT_MODEL_ATTRIBUTE) or ""


def recordedInputs(segmentationNode, spec) -> dict[str, object]:
    """Input key -> volume recorded by :func:`recordDraft` and still in the scene (absent keys: not known)."""
    found = {}
    for inp in spec.inputs:
        volume = segmentationNode.GetNodeReference(INPUT_REFERENCE_ROLE + inp.key)
        if volume is not None:
            found[inp.key] = volume
    return found


def _nameForms(label) -> set[str]:
    """``Peritumoral edema (ED)`` -> {"peritumoral edema (ed)", "peritumoral edema", "ed"}."""
    name = label.name.strip().lower()
    forms = {name}
    match = re.fullmatch(r"(.*?)\s*\(([^()]+)\)", name)
    if match:
        forms |= {match.group(1).strip(), match.group(2).strip()}
    return forms


def _codes(entry: str) -> tuple[str, str]:
    """``scheme^code^meaning`` -> (scheme, code) ("" parts when empty)."""
    parts = (entry or "").split("^")
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "")


def _terminologyKey(serialized: str) -> tuple | None:
    """(type codes, modifier codes) of a segment's serialized terminology entry, or None when it has no type."""
    fields = (serialized or "").split("~")
    if len(fields) < 4 or not _codes(fields[2])[1]:
        return None
    return (_codes(fields[2]), _codes(fields[3]))


def _labelTerminologyKey(label) -> tuple:
    modifier = label.terminology.get("modifier")
    return (tuple(label.terminology["type"][:2]), tuple(modifier[:2]) if modifier else ("", ""))


def _matchSegment(segment, spec, byTerminology: Mapping[tuple, int]) -> int | None:
    name = segment.GetName().strip().lower()
    for label in spec.labels:
        if name in _nameForms(label):
            return label.value
    key = _terminologyKey(segment.GetTerminology())
    if key is not None and key in byTerminology:
        return byTerminology[key]
    recorded = sceneio.modelLabelValue(segment)
    if recorded in {label.value for label in spec.labels}:
        return recorded
    return None


def segmentLabelValues(segmentationNode, spec) -> dict[str, int]:
    """Segment id -> the model's label value for every segment (see the module docstring for the rules).

    Raises:
        InputError: the node has no segments, or some segments match no label of the model (all are named).
    """
    segmentation = segmentationNode.GetSegmentation()
    ids = sceneio.segmentIds(segmentationNode)
    if not ids:
        raise InputError(f"'{segmentationNode.GetName()}' has no segments")
    terminologyKeys = [_labelTerminologyKey(label) for label in spec.labels]
    byTerminology = {
        key: label.value
        for key, label in zip(terminologyKeys, spec.labels, strict=False)
        if terminologyKeys.count(key) == 1
    }
    values, unknown = {}, []
    for segmentId in ids:
        segment = segmentation.GetSegment(segmentId)
        value = _matchSegment(segment, spec, byTerminology)
        if value is None:
            unknown.append(f"'{segment.GetName()}'")
        else:
            values[segmentId] = value
    if unknown:
        labels = ", ".join(label.name for label in spec.labels)
        raise InputError(
            f"segment{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"{'are' if len(unknown) > 1 else 'is'} not a label of "
            f"{spec.ref} ({labels}): rename {'them' if len(unknown) > 1 else 'it'} to one of these "
            f"or delete {'them' if len(unknown) > 1 else 'it'}"
        )
    return values


def _caseId(referenceVolume, glimsHome) -> str:
    """The reference volume's name made safe, plus the time; a counter if that id is taken."""
    from glims.casestore import cases_dir

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", referenceVolume.GetName()).strip("-._") or "case"
    base = f"{name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    caseId, counter = base, 1
    while (cases_dir(glimsHome) / caseId).exists():
        counter += 1
        caseId = f"{base}-{counter}"
    return caseId


def addCase(
    segmentationNode,
    spec,
    inputVolumes: Mapping[str, object],
    glimsHome: str | os.PathLike | None = None,
    caseId: str | None = None,
    temporaryRoot: str | None = None,
):
    """Store the segmentation (as the model's label map) and its input volumes as one training case.

    Args:
        segmentationNode: the corrected segmentation.
        spec: the model (``glims.catalog.ModelSpec``) whose inputs and label values the case follows.
        inputVolumes: input key -> volume node for every input of ``spec`` (the first input is the reference
            grid of the label map).
        glimsHome: the engine's user folder (None: ``GLIMS_HOME`` or the platform default).
        caseId: the case's name in the store; default: the reference volume's name and the time.
        temporaryRoot: where the files passed to the store are written first (removed afterwards).

    Returns:
        The stored case (``glims.casestore.StoredCase``); its provenance keeps the source volume names, the model
        that produced the first draft, the segment names and values, and the time.

    Raises:
        InputError: one line naming the segmentation and the problem: a missing or empty input volume, a segment
            that is not a model label, an empty label map, inputs on different grids, an existing case id.
    """
    from glims.casestore import add_case

    what = f"'{segmentationNode.GetName()}' cannot be added to the training set"
    missing = [inp.title for inp in spec.inputs if inputVolumes.get(inp.key) is None]
    if missing:
        raise InputError(f"{what}: select a volume for {', '.join(missing)}")
    empty = [inputVolumes[inp.key].GetName() for inp in spec.inputs if inputVolumes[inp.key].GetImageData() is None]
    if empty:
        raise InputError(f"{what}: volume '{empty[0]}' has no image data")
    try:
        values = segmentLabelValues(segmentationNode, spec)
    except InputError as err:
        raise InputError(f"{what}: {err}") from None
    reference = inputVolumes[spec.inputs[0].key]
    segmentation = segmentationNode.GetSegmentation()
    folder = Path(tempfile.mkdtemp(prefix="GLIMSSegmenter-case-", dir=temporaryRoot))
    userNames = {}
    try:
        paths = {}
        for inp in spec.inputs:
            volume = inputVolumes[inp.key]
            paths[inp.key] = sceneio.writeVolumeFile(volume, folder / f"{inp.key}.nrrd")
            userNames[paths[inp.key].name] = f"volume '{volume.GetName()}'"
        label = sceneio.writeLabelValuesFile(segmentationNode, reference, values, folder / "label.nrrd")
        userNames[label.name] = f"the label map of '{segmentationNode.GetName()}'"
        provenance = {
            "draft_model": draftModel(segmentationNode) or None,
            "labels_of": spec.ref,
            "sources": {inp.key: inputVolumes[inp.key].GetName() for inp in spec.inputs},
            "segmentation": segmentationNode.GetName(),
            "segments": {segmentation.GetSegment(sid).GetName(): value for sid, value in values.items()},
            "added_from": "3D Slicer (GLIMSSegmenter)",
        }
        case = add_case(
            spec.preset,
            paths,
            label,
            case_id=caseId or _caseId(reference, glimsHome),
            home=glimsHome,
            provenance=provenance,
        )
        logger.info("added '%s' to the training set as %s", segmentationNode.GetName(), case.case_id)
        return case
    except InputError as err:
        message = str(err)
        for fileName, userName in userNames.items():
            message = message.replace(str(folder / fileName), userName).replace(fileName, userName)
        raise InputError(f"{what}: {message}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def listCases(glimsHome: str | os.PathLike | None = None, preset: str | None = None) -> list:
    """The stored cases (``glims.casestore.StoredCase``), sorted by id; only ``preset``'s when given."""
    from glims.casestore import list_cases

    return list_cases(glimsHome, preset)


def removeCase(caseId: str, glimsHome: str | os.PathLike | None = None) -> None:
    """Delete a stored case.

    Raises:
        InputError: no such case.
    """
    from glims.casestore import remove_case

    remove_case(caseId, glimsHome)
