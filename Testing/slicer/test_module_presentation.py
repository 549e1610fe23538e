"""What the panel shows in each state (button, status, progress, devices), without Qt."""

from __future__ import annotations

from glims.progress import ProgressEvent

from GLIMSSegmenterLib.job import JobState
from GLIMSSegmenterLib.presentation import deviceChoices, inputLabel, panelState, progressPercent, progressStatus


def test_segment_turns_into_cancel_while_running_and_back_afterwards():
    idle = panelState(None, canSegment=False, reason="Select FLAIR.")
    assert (idle.applyText, idle.applyEnabled, idle.busy, idle.status) == ("Segment", False, False, "Select FLAIR.")
    running = panelState(JobState.RUNNING, canSegment=True)
    assert (running.applyText, running.applyEnabled, running.busy) == ("Cancel", True, True)
    cancelling = panelState(JobState.CANCELLING, canSegment=True)
    assert (cancelling.applyText, cancelling.applyEnabled) == ("Cancelling…", False)
    importing = panelState(JobState.IMPORTING, canSegment=True)
    assert importing.busy and not importing.applyEnabled
    done = panelState(JobState.SUCCEEDED, canSegment=True)
    assert (done.applyText, done.applyEnabled, done.busy) == ("Segment", True, False)
    assert "Segment Editor" in done.status
    assert panelState(JobState.CANCELLED, canSegment=True).status == "Cancelled: nothing was added to the scene."


def test_a_failure_stays_visible_until_the_next_run():
    failed = panelState(JobState.FAILED, canSegment=False, errorMessage="CUDA out of memory", reason="Select T2.")
    assert failed.status == "Failed: CUDA out of memory"


def test_progress_lines_become_a_percentage_and_a_status():
    event = ProgressEvent("infer", 3, 27, 0.4567, "window batch 3/27")
    assert progressPercent(event) == 46
    assert progressStatus(event) == "Infer: window batch 3/27"
    assert progressStatus(ProgressEvent("post_process", 1, 4, 0.9)) == "Post process: 1 of 4"
    assert progressPercent(ProgressEvent("write", 1, 1, 1.2)) == 100


def test_device_choices_say_what_automatic_will_use():
    assert deviceChoices({"cpu": "CPU (2 cores)"}) == [("auto", "Automatic (no GPU found: CPU)"),
                                                       ("cpu", "CPU (2 cores)")]
    gpu = deviceChoices({"cpu": "CPU (16 cores)", "cuda": "GPU: NVIDIA H200, 140 GiB"})
    assert gpu[0] == ("auto", "Automatic (GPU: NVIDIA H200, 140 GiB)") and gpu[-1][0] == "cuda"


def test_input_labels_are_short():
    assert inputLabel("T1 contrast-enhanced (T1ce / T1c / T1Gd)") == "T1 contrast-enhanced:"
    assert inputLabel("FLAIR") == "FLAIR:"
