"""Background engine jobs: the engine process, then its result taken into Slicer, then clean-up; one at a time.

A job owns a temporary folder (the engine's inputs and outputs, or just its working folder). Nothing is added to
the scene or the panel until the engine has succeeded; on failure or cancel the scene is left as it was and the
folder is removed. Segmentation and fine-tuning share one :class:`JobSlot`, so only one engine job runs at once.
"""

from __future__ import annotations

import enum
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .process import EngineProcess, ProcessOutcome, ProcessState

__all__ = ["JobState", "EngineJob", "SegmentationJob", "JobSlot", "JobBusyError", "POLL_INTERVAL_S"]

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05
"""How often a front end polls its running job (:meth:`EngineJob.poll`): a poll only reads the lines the engine
has written since, so a short interval costs nothing while the job runs and shows its result sooner."""


class JobState(enum.Enum):
    RUNNING = "Segmenting"
    CANCELLING = "Cancelling"
    IMPORTING = "Importing results"
    SUCCEEDED = "Finished"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class EngineJob:
    """Poll until :attr:`finished` (Slicer: from a QTimer), or :meth:`wait`; :meth:`cancel` at any time.

    Args:
        process: the engine process, already started.
        workFolder: the job's temporary folder (removed at the end unless ``keepFiles``).
        importResult: called with the engine outcome once it succeeded; returns what the job produced
            (:attr:`result`).
        onFinished: called once with this job when it has finished (any state).
        keepFiles: keep ``workFolder`` for debugging.
        inputNames: temporary input file name -> what the user knows it as (e.g. ``volume 'T2 FLAIR'``), so that
            engine messages name the user's volumes.
    """

    description = "an engine job"
    """What the job is, for messages (e.g. "a segmentation")."""
    resultName = "result"
    """What :attr:`result` is, for the message when importing it fails."""

    def __init__(
        self,
        process: EngineProcess,
        workFolder: Path,
        importResult: Callable[[ProcessOutcome], object],
        onFinished: Callable[[EngineJob], None] | None = None,
        keepFiles: bool = False,
        inputNames: Mapping[str, str] | None = None,
    ) -> None:
        self.process = process
        self.workFolder = Path(workFolder)
        self.importResult = importResult
        self.onFinished = onFinished
        self.keepFiles = keepFiles
        self.inputNames = dict(inputNames or {})
        self.state = JobState.RUNNING
        self.result = None
        self.errorMessage = ""
        self.summary: dict = {}
        self.timings: dict[str, float] = {}
        """Seconds of the front end's own stages (e.g. ``write inputs``, ``import``); the engine's are in
        :attr:`summary` (``timings_s``)."""

    @property
    def finished(self) -> bool:
        return self.state.finished

    def poll(self) -> bool:
        """Deliver progress; when the engine is done, import its result. Returns True once finished."""
        if self.finished or not self.process.poll():
            return self.finished
        outcome = self.process.outcome
        if outcome.state is ProcessState.SUCCEEDED:
            self.state = JobState.IMPORTING
            clock = time.perf_counter()
            try:
                self.summary = outcome.summary
                self.result = self.importResult(outcome)
                self.state = JobState.SUCCEEDED
                self.timings["import"] = time.perf_counter() - clock
                engine = ", ".join(f"{k} {v:.2f} s" for k, v in (self.summary.get("timings_s") or {}).items())
                logger.info("%s imported in %.2f s (engine: %s)", self.resultName, self.timings["import"], engine)
            except Exception as err:  # a failed import must end the job, with the reason for the user
                logger.exception("importing the %s failed", self.resultName)
                self.errorMessage = f"the {self.resultName} could not be loaded: {err}"
                self.state = JobState.FAILED
        elif outcome.state is ProcessState.CANCELLED:
            self.state = JobState.CANCELLED
        else:
            self.errorMessage = self.inUserWords(outcome.errorMessage)
            self.state = JobState.FAILED
        if not self.keepFiles:
            shutil.rmtree(self.workFolder, ignore_errors=True)
        else:
            logger.info("kept the job's files in %s", self.workFolder)
        if self.onFinished:
            self.onFinished(self)
        return True

    def inUserWords(self, message: str) -> str:
        """An engine message with the temporary input files replaced by the user's volume names."""
        for fileName, userName in self.inputNames.items():
            message = message.replace(str(self.workFolder / fileName), userName).replace(fileName, userName)
        return message

    def cancel(self) -> None:
        """Stop the engine (its whole process tree); the job ends as CANCELLED and adds nothing to the scene."""
        if self.state is JobState.RUNNING:
            self.state = JobState.CANCELLING
            self.process.cancel()

    def wait(self, pollInterval: float = POLL_INTERVAL_S) -> JobState:
        """Poll until finished (scripts and tests; the GUI polls from a timer)."""
        while not self.poll():
            time.sleep(pollInterval)
        return self.state


class SegmentationJob(EngineJob):
    """A segmentation run; its result is the segmentation node (added to the scene only on success)."""

    description = "a segmentation"
    resultName = "segmentation"

    @property
    def segmentationNode(self):
        return self.result


class JobBusyError(RuntimeError):
    """Another engine job is running: the panel runs one job at a time."""


class JobSlot:
    """The one engine job that may run at a time (segmentation or fine-tuning)."""

    def __init__(self) -> None:
        self.job: EngineJob | None = None

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.finished

    def ensureFree(self, what: str) -> None:
        """Raise :class:`JobBusyError` (naming the running job) if a job is running.

        Args:
            what: the job about to start, e.g. "fine-tuning", for the message.
        """
        if self.busy:
            raise JobBusyError(
                f"{self.job.description} is running: wait for it to finish or stop it before starting {what}"
            )

    def hold(self, job: EngineJob) -> EngineJob:
        """Occupy the slot with ``job`` (after :meth:`ensureFree`); returns the job."""
        self.ensureFree(job.description)
        self.job = job
        return job
