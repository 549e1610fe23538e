"""What the panel shows for a given state: button text, progress, status line, device choices.

Pure functions of the logic's objects, so the panel's behaviour is testable without Qt; the widget only applies
the returned values to its widgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .job import JobState

__all__ = [
    "SURFACES_AFTER_S",
    "EXPORT_CHOICES",
    "BUDGET_UNITS",
    "PanelState",
    "panelState",
    "progressPercent",
    "progressStatus",
    "deviceChoices",
    "inputLabel",
    "fineTuneState",
    "fineTuneStatus",
    "formatDuration",
    "diceComparison",
    "trainingCaseRow",
    "trainingCaseToolTip",
]

SURFACES_AFTER_S = 0.2
"""A new result is drawn in the slice views first; its 3D surfaces are built this many seconds later (they take
0.05 s for a brain tumour, seconds for the organs of a full-resolution CT, and the views should not wait for them)."""

EXPORT_CHOICES = (
    ("seg.nrrd", "Slicer segmentation (.seg.nrrd)"),
    ("nifti", "NIfTI label map (.nii.gz)"),
    ("stl", "STL surfaces (one file per segment)"),
    ("obj", "OBJ surfaces (one file, a group per segment)"),
    ("dicom", "DICOM SEG (inputs loaded from DICOM)"),
    ("rtstruct", "DICOM RT Structure Set (inputs loaded from DICOM)"),
)
"""(format of ``GLIMSSegmenterLogic.export``, label in the panel)."""

BUDGET_UNITS = (("minutes", "minutes"), ("epochs", "epochs"))
"""(keyword of ``FineTuningLogic.startFineTuning``, label in the panel) of the fine-tuning budget."""


@dataclass(frozen=True)
class PanelState:
    applyText: str
    """Text of the section's start button (Segment / Cancel, Fine-tune / Stop)."""
    applyEnabled: bool
    busy: bool
    """A job is running: inputs and model are locked, the progress bar is shown."""
    status: str


def panelState(jobState: JobState | None, canSegment: bool, errorMessage: str = "", reason: str = "") -> PanelState:
    """The Segment/Cancel button and status line.

    Args:
        jobState: state of the current or last job; None before the first run.
        canSegment: every input is selected.
        errorMessage: the last job's error (shown when it failed).
        reason: why segmenting is not possible now (shown when idle and ``canSegment`` is False).
    """
    if jobState in (JobState.RUNNING, JobState.IMPORTING):
        return PanelState("Cancel", jobState is JobState.RUNNING, True, f"{jobState.value}…")
    if jobState is JobState.CANCELLING:
        return PanelState("Cancelling…", False, True, "Stopping the engine…")
    idleStatus = {
        None: "",
        JobState.SUCCEEDED: "Finished: the segments can now be edited in Segment Editor.",
        JobState.CANCELLED: "Cancelled: nothing was added to the scene.",
        JobState.FAILED: f"Failed: {errorMessage}" if errorMessage else "Failed.",
    }[jobState]
    if not canSegment and reason and jobState is not JobState.FAILED:
        idleStatus = reason
    return PanelState("Segment", canSegment, False, idleStatus)


def progressPercent(event) -> int:
    """0-100 from a ``glims.progress.ProgressEvent``'s whole-job fraction."""
    return max(0, min(100, int(round(event.fraction * 100))))


def progressStatus(event) -> str:
    """One status line, e.g. ``Inference: window 3 of 27``."""
    stage = event.stage.replace("_", " ").capitalize() or "Working"
    if event.message:
        return f"{stage}: {event.message}"
    if event.total:
        return f"{stage}: {event.done} of {event.total}"
    return stage


def deviceChoices(detected: Mapping[str, str], searching: bool = False) -> list[tuple[str, str]]:
    """(device, label) items for the device combo box: ``auto`` first, then what was detected.

    Args:
        detected: device -> description (``GLIMSSegmenterLib.devices``).
        searching: the GPU probe has not answered yet (``auto`` then says so rather than "no GPU").
    """
    gpu = next((detected[d] for d in ("cuda", "mps") if d in detected), None)
    automatic = f"Automatic ({gpu})" if gpu else "Automatic (no GPU found: CPU)"
    if searching and not gpu:
        automatic = "Automatic (looking for a GPU…)"
    choices = [("auto", automatic)]
    choices.append(("cpu", detected.get("cpu", "CPU")))
    for device in ("cuda", "mps"):
        if device in detected:
            choices.append((device, detected[device]))
    return choices


def inputLabel(title: str) -> str:
    """A short form label for a model input: its title without the parenthesised aliases, plus a colon.

    E.g. ``T1 contrast-enhanced (T1ce / T1c / T1Gd)`` -> ``T1 contrast-enhanced:`` (the full title is the tooltip).
    """
    return title.split(" (", 1)[0].strip() + ":"


def fineTuneState(
    jobState: JobState | None, problem: str = "", errorMessage: str = "", modelRef: str = ""
) -> PanelState:
    """The Fine-tune/Stop button and the fine-tuning status line.

    Args:
        jobState: state of the current or last fine-tuning; None before the first.
        problem: why fine-tuning cannot start now ("" when it can; shown when idle).
        errorMessage: the last run's error (shown when it failed).
        modelRef: the model the last run registered (shown when it succeeded).
    """
    if jobState is JobState.RUNNING:
        return PanelState("Stop", True, True, "Fine-tuning…")
    if jobState is JobState.IMPORTING:
        return PanelState("Stop", False, True, "Registering the new model…")
    if jobState is JobState.CANCELLING:
        return PanelState("Stopping…", False, True, "Stopping the engine…")
    status = {
        None: "",
        JobState.SUCCEEDED: f"Finished: registered {modelRef}." if modelRef else "Finished.",
        JobState.CANCELLED: "Stopped: no model was registered and the model catalog is unchanged.",
        JobState.FAILED: f"Failed: {errorMessage}" if errorMessage else "Failed.",
    }[jobState]
    if problem and jobState is not JobState.FAILED:
        status = problem[0].upper() + problem[1:] + ("" if problem.endswith(".") else ".")
    return PanelState("Fine-tune", not problem, False, status)


def formatDuration(seconds: float) -> str:
    """``45 s``, ``3 min``, ``1 h 5 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def fineTuneStatus(event) -> str:
    """One status line for a fine-tuning progress event, with the time left when the engine estimates it.

    E.g. ``Train: epoch 2 done: loss 0.8123, val Dice 0.412 (about 3 min left)``.
    """
    status = progressStatus(event)
    eta = (event.data or {}).get("eta_s")
    if eta:
        status += f" (about {formatDuration(eta)} left)"
    return status


SINGLE_CASE_CAUTION = (
    "One held-out case is a noisy judge: in our measurements its Dice moved either way while "
    "other cases of the site improved. Try the new model on a few of your cases."
)


def diceComparison(before: Mapping[str, float], after: Mapping[str, float], validationCases: int = 0) -> str:
    """A small rich-text table of validation Dice per region and their mean: base, fine-tuned, change; with the
    number of held-out cases it was measured on (when known), and a caution when that is a single case."""
    columns = [c for c in ("TC", "WT", "ET", "mean") if c in before and c in after]
    cell = '<td align="right">&nbsp;{}&nbsp;</td>'
    rows = ["<tr><td>Validation Dice</td>" + "".join(cell.format(f"<b>{c}</b>") for c in columns) + "</tr>"]
    for title, values in (("base model", before), ("fine-tuned", after)):
        rows.append(f"<tr><td>{title}</td>" + "".join(cell.format(f"{values[c]:.3f}") for c in columns) + "</tr>")
    rows.append("<tr><td>change</td>" + "".join(cell.format(f"{after[c] - before[c]:+.3f}") for c in columns) + "</tr>")
    table = "<table>" + "".join(rows) + "</table>"
    if validationCases:
        table += f"<p>Measured on {validationCases} held-out case{'s' if validationCases > 1 else ''}."
        table += f" {SINGLE_CASE_CAUTION}</p>" if validationCases == 1 else "</p>"
    return table


def trainingCaseRow(case) -> list[str]:
    """The training-set table's cells for a stored case: case id, when it was added (UTC), first-draft model."""
    provenance = case.provenance
    added = str(provenance.get("added", "")).replace("T", " ")[:16]
    return [case.case_id, added, provenance.get("draft_model") or "—"]


def trainingCaseToolTip(case) -> str:
    """What a stored case is: its id, task, source volumes and label voxel counts."""
    provenance = case.provenance
    lines = [f"{case.case_id} ({case.preset})"]
    sources = provenance.get("sources") or {}
    if sources:
        lines.append("Volumes: " + ", ".join(f"{key}: {name}" for key, name in sources.items()))
    counts = provenance.get("label_voxels") or {}
    if counts:
        lines.append("Label voxels: " + ", ".join(f"{value}: {count}" for value, count in counts.items()))
    return "\n".join(lines)
