"""What the panel shows for a given state: button text, progress, status line, device choices.

Pure functions of the logic's objects, so the panel's behaviour is testable without Qt; the widget only applies
the returned values to its widgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .job import JobState

__all__ = ["EXPORT_CHOICES", "PanelState", "panelState", "progressPercent", "progressStatus", "deviceChoices",
           "inputLabel"]

EXPORT_CHOICES = (
    ("seg.nrrd", "Slicer segmentation (.seg.nrrd)"),
    ("nifti", "NIfTI label map (.nii.gz)"),
    ("stl", "STL surfaces (one file per segment)"),
    ("obj", "OBJ surfaces (one file, a group per segment)"),
    ("dicom", "DICOM SEG (inputs loaded from DICOM)"),
)
"""(format of ``GLIMSSegmenterLogic.export``, label in the panel)."""


@dataclass(frozen=True)
class PanelState:
    applyText: str
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


def deviceChoices(detected: Mapping[str, str]) -> list[tuple[str, str]]:
    """(device, label) items for the device combo box: ``auto`` first, then what was detected."""
    gpu = next((detected[d] for d in ("cuda", "mps") if d in detected), None)
    choices = [("auto", f"Automatic ({gpu})" if gpu else "Automatic (no GPU found: CPU)")]
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
