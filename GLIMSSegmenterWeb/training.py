"""The Train step: **Add to training set**, then **Fine-tune** with a live loss/Dice chart, **Stop**, the Dice of
the base and the fine-tuned model, and switching segmentation to the new model.

Uses the module's ``FineTuningLogic`` (same training-set store, same engine command, same job slot: one engine
job at a time).
"""

from __future__ import annotations

import logging

from GLIMSSegmenterLib import presentation
from GLIMSSegmenterLib.job import JobState
from GLIMSSegmenterLib.models import modelChoice

from .chart import trainingChartSvg

__all__ = ["TrainStep"]

logger = logging.getLogger(__name__)


class TrainStep:
    """Training set and fine-tuning; page state names start with ``train_``.

    Args:
        context: the app's shared objects (``WebContext``); ``context.fineTuning`` is the ``FineTuningLogic``.
    """

    def __init__(self, context) -> None:
        self.context = context
        self.state = context.state
        self.job = None
        self.lastJob = None
        self._cases: list | None = None
        state = self.state
        state.train_cases = []
        state.train_message = ""
        state.train_name = ""
        state.train_name_hint = ""
        state.train_epochs = 5
        state.train_button = "Fine-tune"
        state.train_button_enabled = False
        state.train_busy = False
        state.train_progress = 0
        state.train_status = ""
        state.train_chart = ""
        state.train_result = ""
        state.train_new_model = ""
        state.train_interrupted = False

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.finished

    def refresh(self) -> None:
        """The training-set list and the Fine-tune button (after a case was added, the model changed...)."""
        try:
            cases = self.context.fineTuning.trainingCases()
        except Exception as err:  # an unreadable store must not break the page
            logger.warning("the training set could not be read: %s", err)
            cases = []
        self._cases = cases
        self.state.train_cases = [
            {"id": c.case_id, "preset": c.preset, "row": " · ".join(presentation.trainingCaseRow(c)[1:])} for c in cases
        ]
        spec = self.context.segment.currentModel()
        self.state.train_name_hint = self.context.fineTuning.defaultModelName(spec.ref) if spec else ""
        self.updateButton()

    def _name(self) -> str:
        return (self.state.train_name or "").strip() or self.state.train_name_hint

    def updateButton(self) -> None:
        problem = ""
        if not self.busy:
            spec = self.context.segment.currentModel()
            if self.context.segment.busy:
                problem = "a segmentation is running: wait for it to finish or cancel it"
            elif spec is None:
                problem = "select a model under Segment"
            else:
                try:
                    problem = self.context.fineTuning.fineTuneProblem(spec.ref, self._cases)
                except Exception as err:
                    problem = str(err)
        job = self.job or self.lastJob
        panel = presentation.fineTuneState(
            job.state if job else None,
            problem=problem,
            errorMessage=job.errorMessage if job else "",
            modelRef=job.modelRef if job else "",
        )
        self.state.train_button = panel.applyText
        self.state.train_button_enabled = panel.applyEnabled
        self.state.train_busy = panel.busy
        if not panel.busy or panel.status:
            self.state.train_status = panel.status
        name = self._name()
        self.state.train_interrupted = (
            bool(name) and not self.busy and bool(self.context.fineTuning.interruptedRuns(name))
        )

    # ---- training set -------------------------------------------------------------------------------------

    def addCurrent(self) -> None:
        """Store the edited segmentation and its input volumes as a training case."""
        node = self.context.editing.currentNode()
        if node is None:
            self.state.train_message = "Segment a case first: there is no segmentation to add."
            return
        segment = self.context.segment
        selected = {k: v for k, v in segment.selectedInputs().items() if v is not None}
        try:
            case = self.context.fineTuning.addToTrainingSet(node, self.state.seg_model or None, inputVolumes=selected)
        except Exception as err:
            self.state.train_message = f"Not added: {err}"
            return
        self.state.train_message = f"Added '{node.GetName()}' to the training set as {case.case_id}."
        self.refresh()

    def removeCase(self, caseId: str) -> None:
        try:
            self.context.fineTuning.removeTrainingCase(caseId)
            self.state.train_message = f"Removed {caseId} from the training set."
        except Exception as err:
            self.state.train_message = f"Not removed: {err}"
        self.refresh()

    def discardInterrupted(self) -> None:
        self.context.fineTuning.discardInterruptedRuns(self._name())
        self.updateButton()

    # ---- fine-tuning --------------------------------------------------------------------------------------

    def onButton(self, resume: bool = False) -> None:
        """Fine-tune (or continue the stopped run), or Stop while running."""
        if self.busy:
            self.job.cancel()
            self.updateButton()
            return
        spec = self.context.segment.currentModel()
        self.lastJob = None
        self.state.train_chart = ""
        self.state.train_result = ""
        self.state.train_new_model = ""
        self.state.train_progress = 0
        try:
            epochs = int(self.state.train_epochs)
            self.job = self.context.fineTuning.startFineTuning(
                spec.ref if spec else self.state.seg_model,
                self._name(),
                epochs=epochs,
                device=self.state.seg_device,
                resume=resume,
                onProgress=self._onProgress,
                onLog=self.context.segment.appendLog,
            )
        except Exception as err:
            self.job = None
            self.state.train_status = f"Could not start: {err}"
            self.state.train_button_enabled = True
            return
        self.updateButton()
        self.context.segment.updateButton()
        self.context.poller.follow(self.job, self.updateButton, self._onFinished)

    def _onProgress(self, event) -> None:
        self.state.train_progress = presentation.progressPercent(event)
        self.state.train_status = presentation.fineTuneStatus(event)
        if self.job is not None and self.job.plot is not None:
            self.state.train_chart = trainingChartSvg(self.job.plot.rows())

    def _onFinished(self, job) -> None:
        self.job, self.lastJob = None, job
        if job.plot is not None:
            self.state.train_chart = trainingChartSvg(job.plot.rows())
            job.plot.removeNodes()
        if job.state is JobState.SUCCEEDED:
            self.state.train_result = presentation.diceComparison(job.before, job.after, job.validationCases)
            self.state.train_new_model = job.modelRef
            self.context.segment.reloadModels()
        self.updateButton()
        self.context.segment.updateButton()

    def useNewModel(self) -> None:
        """Select the fine-tuned model for segmentation."""
        ref = self.state.train_new_model
        if not ref:
            return
        catalog = self.context.logic.catalog(reload=True)
        self.context.segment.reloadModels(select=modelChoice(catalog, catalog.get(ref)))
        self.state.train_message = f"Segmentation now uses {ref}."
