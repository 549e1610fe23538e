"""FineTuningLogic: the training set and fine-tuning, GUI-free (Slicer's console, the widget, the tests).

    from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic
    from GLIMSSegmenterLib.finetuning import FineTuningLogic
    logic = GLIMSSegmenterLogic()
    tuning = FineTuningLogic(logic)
    tuning.addToTrainingSet(segmentationNode, modelId="glims-brats-synth")   # after correcting the segments
    job = tuning.startFineTuning("glims-brats-synth", "glims-brats-site", minutes=15)
    ...                                                                      # poll the job, or job.wait()
    tuning.useModel(logic.getParameterNode(), job.modelRef)

Fine-tuning runs ``glims finetune ... --progress json`` in the background through the same runner as segmentation
(``process.EngineProcess``) and shares its job slot, so one engine job runs at a time. The engine registers the
best weights as a new version in the user catalog and writes atomically, so stopping it (its whole process tree)
at any moment leaves the catalog valid; a stopped run can be continued (``resume=True``) or discarded.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import slicer

from glims.errors import ConfigError, InputError

from . import trainingset
from .engine import FineTuneSettings, engineCommand, engineEnvironment, finetuneArguments
from .job import EngineJob, JobState
from .models import modelChoice
from .parameters import SegmentationParameters
from .process import EngineProcess, ProcessOutcome
from .trainingplot import TrainingPlot

__all__ = ["FineTuningLogic", "FineTuneJob", "MIN_CASES"]

logger = logging.getLogger(__name__)

MIN_CASES = 2
"""Cases needed to fine-tune: at least one to learn from and one held out for validation."""


class FineTuneJob(EngineJob):
    """A running ``glims finetune``; its result is the new model's catalog entry (``glims.catalog.ModelSpec``).

    Attributes:
        baseModel: reference of the starting model. modelName: id of the new model.
        plot: the live loss/Dice plot (None when not requested).
    """

    description = "fine-tuning"
    resultName = "fine-tuned model"

    def __init__(
        self, *args, baseModel: str = "", modelName: str = "", plot: TrainingPlot | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.baseModel = baseModel
        self.modelName = modelName
        self.plot = plot

    @property
    def modelRef(self) -> str:
        """``NAME@VERSION`` of the registered model ("" until the job succeeded)."""
        return self.result.ref if self.result is not None else ""

    @property
    def before(self) -> dict[str, float]:
        """Validation Dice (TC, WT, ET, mean) of the base model."""
        return dict(self.summary.get("before") or {})

    @property
    def after(self) -> dict[str, float]:
        """Validation Dice (TC, WT, ET, mean) of the registered model."""
        return dict(self.summary.get("after") or {})

    @property
    def validationCases(self) -> int:
        """How many held-out cases ``before`` and ``after`` were measured on (0 until the job succeeded)."""
        return len(self.result.provenance.get("validation_cases", [])) if self.result is not None else 0


class FineTuningLogic:
    """Training set and fine-tuning of ``segmenterLogic``'s models.

    Shares the segmentation logic's catalog, user folder (``glimsHome``), engine settings and job slot.
    """

    def __init__(self, segmenterLogic) -> None:
        self.segmenter = segmenterLogic

    @property
    def glimsHome(self):
        return self.segmenter.glimsHome

    # ---- training set -------------------------------------------------------------------------------------

    def addToTrainingSet(
        self,
        segmentationNode,
        modelId: str | None = None,
        inputVolumes: Mapping[str, object] | None = None,
        caseId: str | None = None,
    ):
        """Store a corrected segmentation and its input volumes as a training case of a model.

        Args:
            segmentationNode: the segmentation (after your corrections).
            modelId: the model whose labels and inputs the case follows (the one to fine-tune); default: the
                model that produced the segmentation (recorded when the module created it).
            inputVolumes: input key -> volume, for the inputs not recorded on the segmentation: the volumes a
                segmentation made by the module was computed from are always used for it.
            caseId: name in the training set; default: the reference volume's name and the time.

        Returns:
            The stored case (``glims.casestore.StoredCase``).

        Raises:
            InputError: one readable line: no model known, a missing input, a segment that is not a model label,
                an empty label map, inputs on different grids... (nothing is stored then).
            CatalogError: unknown model.
        """
        name = segmentationNode.GetName()
        modelId = modelId or trainingset.draftModel(segmentationNode)
        if not modelId:
            raise InputError(f"'{name}' cannot be added to the training set: choose the model it is for")
        spec = self.segmenter.model(modelId)
        volumes = {**(inputVolumes or {}), **trainingset.recordedInputs(segmentationNode, spec)}
        return trainingset.addCase(
            segmentationNode, spec, volumes, self.glimsHome, caseId, self.segmenter.temporaryRoot()
        )

    def trainingCases(self, preset: str | None = None) -> list:
        """The stored cases (``glims.casestore.StoredCase``), of ``preset`` only when given."""
        return trainingset.listCases(self.glimsHome, preset)

    def removeTrainingCase(self, caseId: str) -> None:
        """Delete a stored case (raises InputError when there is no such case)."""
        trainingset.removeCase(caseId, self.glimsHome)

    # ---- fine-tuning --------------------------------------------------------------------------------------

    def fineTuneProblem(self, modelId: str, cases: list | None = None) -> str:
        """Why ``modelId`` cannot be fine-tuned now ("" when it can).

        Args:
            modelId: the base model.
            cases: the training set as :meth:`trainingCases` returned it (None: read it now).
        """
        spec = self.segmenter.model(modelId)
        if spec.output.activation != "sigmoid":
            return f"fine-tuning supports the brain-tumour (BraTS) models; {spec.title} is not one"
        count = len([c for c in (self.trainingCases() if cases is None else cases) if c.preset == spec.preset])
        if count < MIN_CASES:
            return (
                f"fine-tuning needs at least {MIN_CASES} {spec.preset} cases in the training set (one is held "
                f"out for validation); it has {count}: add corrected segmentations first"
            )
        return ""

    def defaultModelName(self, modelId: str) -> str:
        """The base's id for a model you added (a new version of it), else ``<id>-finetuned``."""
        spec = self.segmenter.model(modelId)
        return spec.id if not spec.builtin else f"{spec.id}-finetuned"

    def interruptedRuns(self, name: str) -> list[Path]:
        """Run folders of ``name`` that were stopped after at least one epoch (they can be resumed); none for a name
        that is not a valid model name (no run can have it). The engine knows the run-folder layout
        (``glims.runfolders.interrupted_runs``)."""
        from glims.runfolders import interrupted_runs

        return interrupted_runs(name, self.glimsHome)

    def discardInterruptedRuns(self, name: str) -> None:
        """Delete the stopped runs of ``name`` so that a new run can start (the catalog is not touched).

        Raises:
            ConfigError: ``name`` is not a valid model name. OutputError: a run folder is not glims's own
            (``glims.paths.remove_owned``).
        """
        from glims.paths import check_name, remove_owned

        check_name(name, "model name")
        for run in self.interruptedRuns(name):
            remove_owned(run, self.glimsHome)

    def startFineTuning(
        self,
        baseModel: str,
        name: str,
        plot: bool = True,
        onProgress: Callable | None = None,
        onLog: Callable[[str], None] | None = None,
        onFinished: Callable[[FineTuneJob], None] | None = None,
        **settings,
    ) -> FineTuneJob:
        """Start ``glims finetune`` on the training set in the background.

        Args:
            baseModel: catalog reference of the model to start from (its weights are never modified).
            name: id of the new model; registered as ``NAME@1.0.0``, or as the next version of an existing
                model you added.
            plot: add a plot chart of the loss and validation Dice per epoch to the scene (``job.plot``).
            onProgress: called with each ``glims.progress.ProgressEvent`` (after the plot is updated).
            onLog: called with each log line of the engine.
            onFinished: called with the job when it has finished.
            settings: the fields of :class:`GLIMSSegmenterLib.engine.FineTuneSettings`: ``epochs`` and ``minutes``
                (the budget: at least one), ``device``, ``threads``, ``valFraction``, and ``resume`` (continue
                the stopped run of ``name``, see :meth:`interruptedRuns`).

        Returns:
            The running job: poll it (or ``wait()``); when it succeeded, ``modelRef``, ``before`` and ``after``.

        Raises:
            JobBusyError: a segmentation or fine-tuning is running. ConfigError: no budget, an invalid name, a
            stopped run of ``name`` exists and ``resume`` is False. InputError: too few cases, or a model that
            cannot be fine-tuned. CatalogError: unknown base model.
        """
        from glims.paths import check_name

        run = FineTuneSettings(**settings)
        jobs = self.segmenter.jobs
        jobs.ensureFree("fine-tuning")
        spec = self.segmenter.model(baseModel)
        if run.epochs is None and run.minutes is None:
            raise ConfigError("give the fine-tuning a budget: a number of epochs or of minutes")
        check_name(name, "model name")
        if not run.resume:
            problem = self.fineTuneProblem(spec.ref)
            if problem:
                raise InputError(problem)
            if self.interruptedRuns(name):
                raise ConfigError(f"a stopped fine-tuning of {name!r} exists: continue it or discard it first")
        arguments = finetuneArguments(spec.ref, name, run)
        workFolder = Path(tempfile.mkdtemp(prefix="GLIMSSegmenter-finetune-", dir=self.segmenter.temporaryRoot()))
        trainingPlot = TrainingPlot(slicer.mrmlScene, f"Fine-tuning {name}") if plot else None

        def progress(event) -> None:
            if trainingPlot is not None:
                trainingPlot.addFromProgress(event)
            if onProgress is not None:
                onProgress(event)

        def importResult(outcome: ProcessOutcome):
            if "model" not in outcome.outputs:
                raise OSError("the engine finished without reporting the new model")
            return self.segmenter.catalog(reload=True).get(outcome.outputs["model"])

        process = EngineProcess(
            engineCommand(arguments, self.segmenter.pythonExecutable),
            env=engineEnvironment(self.segmenter.baseEnvironment, self.glimsHome),
            cwd=str(workFolder),
            onProgress=progress,
            onLog=onLog,
        )
        job = FineTuneJob(
            process,
            workFolder,
            importResult,
            onFinished,
            keepFiles=self.segmenter.keepTemporaryFiles,
            baseModel=spec.ref,
            modelName=name,
            plot=trainingPlot,
        )
        try:
            process.start()
        except Exception:
            shutil.rmtree(workFolder, ignore_errors=True)
            if trainingPlot is not None:
                trainingPlot.removeNodes()
            raise
        logger.info("fine-tuning %s into %s", spec.ref, name)
        return jobs.hold(job)

    def fineTune(self, baseModel: str, name: str, **options) -> FineTuneJob:
        """Run :meth:`startFineTuning` to the end (blocking) and return the finished job.

        Raises:
            RuntimeError: the engine failed (its message) or the run was stopped; plus those of
            :meth:`startFineTuning`.
        """
        job = self.startFineTuning(baseModel, name, **options)
        if job.wait() is not JobState.SUCCEEDED:
            raise RuntimeError(job.errorMessage or f"fine-tuning {job.state.value.lower()}")
        return job

    def useModel(self, parameterNode, modelRef: str) -> str:
        """Select ``modelRef`` (e.g. the fine-tuned model) for segmentation in the parameter node.

        The input volumes stay selected (a fine-tuned model has its base's inputs).

        Returns:
            The model id stored in the parameter node (its id, or ``ID@VERSION`` for an older version).

        Raises:
            CatalogError: unknown model.
        """
        catalog = self.segmenter.catalog(reload=True)
        params = SegmentationParameters.fromParameterNode(parameterNode)
        params.modelId = modelChoice(catalog, catalog.get(modelRef))
        params.writeToParameterNode(parameterNode)
        return params.modelId
