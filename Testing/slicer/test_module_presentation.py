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
    probing = deviceChoices({"cpu": "CPU (2 cores)"}, searching=True)  # before the device probe answers
    assert probing == [("auto", "Automatic (looking for a GPU…)"), ("cpu", "CPU (2 cores)")]


def test_input_labels_are_short():
    assert inputLabel("T1 contrast-enhanced (T1ce / T1c / T1Gd)") == "T1 contrast-enhanced:"
    assert inputLabel("FLAIR") == "FLAIR:"


def test_fine_tune_turns_into_stop_while_running_and_says_why_it_cannot_start():
    from GLIMSSegmenterLib.presentation import fineTuneState

    running = fineTuneState(JobState.RUNNING)
    assert (running.applyText, running.applyEnabled, running.busy) == ("Stop", True, True)
    stopping = fineTuneState(JobState.CANCELLING)
    assert (stopping.applyText, stopping.applyEnabled, stopping.busy) == ("Stopping…", False, True)
    assert fineTuneState(JobState.IMPORTING).busy and not fineTuneState(JobState.IMPORTING).applyEnabled
    blocked = fineTuneState(None, problem="a segmentation is running: wait for it")
    assert (blocked.applyText, blocked.applyEnabled, blocked.status) == ("Fine-tune", False,
                                                                        "A segmentation is running: wait for it.")
    done = fineTuneState(JobState.SUCCEEDED, modelRef="site@1.0.0")
    assert done.applyEnabled and done.status == "Finished: registered site@1.0.0."
    assert "catalog is unchanged" in fineTuneState(JobState.CANCELLED).status
    failed = fineTuneState(JobState.FAILED, problem="select a model", errorMessage="CUDA out of memory")
    assert failed.status == "Failed: CUDA out of memory" and not failed.applyEnabled


def test_training_progress_shows_the_time_left_and_the_dice_comparison_the_change():
    from GLIMSSegmenterLib.presentation import diceComparison, fineTuneStatus, formatDuration

    event = ProgressEvent("train", 4, 12, 0.4, "epoch 2 done: loss 0.8123, val Dice 0.412",
                          {"epoch": 2, "loss": 0.8123, "eta_s": 185.0})
    assert fineTuneStatus(event) == "Train: epoch 2 done: loss 0.8123, val Dice 0.412 (about 3 min left)"
    assert fineTuneStatus(ProgressEvent("load", 1, 3, 0.02, "loaded case_1")) == "Load: loaded case_1"
    assert [formatDuration(s) for s in (4.4, 59, 61, 3725)] == ["4 s", "59 s", "1 min", "1 h 2 min"]
    table = diceComparison({"TC": 0.4, "WT": 0.6, "ET": 0.3, "mean": 0.4333},
                           {"TC": 0.5, "WT": 0.65, "ET": 0.25, "mean": 0.4667})
    assert table.startswith("<table>") and table.count("<tr>") == 4
    assert "0.400" in table and "0.650" in table and "+0.100" in table and "-0.050" in table and "+0.033" in table
    assert "held-out" not in table  # the number of cases is said only when known
    single = diceComparison({"mean": 0.5}, {"mean": 0.45}, validationCases=1)
    assert "Measured on 1 held-out case." in single and "noisy judge" in single
    several = diceComparison({"mean": 0.5}, {"mean": 0.55}, validationCases=3)
    assert "Measured on 3 held-out cases." in several and "noisy judge" not in several


def test_training_set_rows_and_tooltips():
    from pathlib import Path

    from glims.casestore import StoredCase

    from GLIMSSegmenterLib.presentation import trainingCaseRow, trainingCaseToolTip

    case = StoredCase("case-1", Path("case-1"), "brats", {}, Path("label.nii.gz"),
                      {"added": "2026-11-29T10:15:02+00:00", "draft_model": "glims-brats@1.0.0",
                       "sources": {"flair": "T2 FLAIR"}, "label_voxels": {"1": 10, "2": 200}})
    assert trainingCaseRow(case) == ["case-1", "2026-11-29 10:15", "glims-brats@1.0.0"]
    assert trainingCaseToolTip(case) == "case-1 (brats)\nVolumes: flair: T2 FLAIR\nLabel voxels: 1: 10, 2: 200"
    bare = StoredCase("case-2", Path("case-2"), "brats", {}, Path("label.nii.gz"), {"added": "2026-11-29T10:15:02"})
    assert trainingCaseRow(bare)[2] == "—"
