"""GLIMSSegmenterLogic: the GUI-free, scriptable part of the module.

Usable from Slicer's Python console, from the widget, and on the ``slicer-core`` wheel (the tests)::

    logic = GLIMSSegmenterLogic()
    segmentation = logic.segment("glims-brats-synth", {"flair": flair, "t1ce": t1ce, "t1": t1, "t2": t2})

The widget uses :meth:`startSegmentation` instead and polls the returned job from a timer.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from glims.errors import CatalogError, InputError, OutputError
from glims.runoptions import given_arguments

from . import sceneio, trainingset
from .engine import engineCommand, engineEnvironment, segmentArguments
from .exportnames import safeFileName
from .inputfiles import InputFileCache
from .job import JobSlot, JobState, SegmentationJob
from .models import loadCatalog, matchVolumes
from .naming import resultName
from .parameters import INPUT_SLOTS, SegmentationParameters
from .process import EngineProcess, ProcessOutcome
from .runoptions import changedOptions, modelValues
from .warmworker import WarmWorker, sharedWarmWorker

__all__ = ["GLIMSSegmenterLogic", "EXPORT_FORMATS", "INPUT_SLOTS"]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("seg.nrrd", "nifti", "stl", "obj", "dicom", "rtstruct")
"""Export formats: Slicer segmentation file, NIfTI label map, STL/OBJ surfaces, DICOM SEG, DICOM RT Structure Set."""


class GLIMSSegmenterLogic(ScriptedLoadableModuleLogic):
    """Runs GLIMS models on volumes of the scene and manages the results.

    Attributes:
        glimsHome: the engine's user folder (user models); None: ``GLIMS_HOME`` or the platform default.
        keepTemporaryFiles: keep each job's input/output folder (for debugging).
        baseEnvironment: environment of the engine process (None: Slicer's start-up environment / os.environ).
        pythonExecutable: the interpreter (or launcher) that runs the engine (None: PythonSlicer in Slicer, else
            this interpreter).
        jobs: the one engine job that may run at a time (shared with fine-tuning, see ``FineTuningLogic``).
        useWarmWorker: run segmentations in the warm engine worker (default; ``GLIMS_WARM_WORKER=0`` in the
            environment turns it off), else in a new engine process per run.
        warmWorker: the worker (shared by the application's logic objects; ``GLIMSSegmenterLib.warmworker``).
        inputFiles: the engine's input files of the scene's volumes, reused by the next segmentation while the
            volumes are unchanged (``GLIMSSegmenterLib.inputfiles``); removed by :meth:`releaseWorker` and when the
            scene is closed.
    """

    def __init__(self, glimsHome: str | os.PathLike | None = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.glimsHome = glimsHome
        self.keepTemporaryFiles = False
        self.baseEnvironment: Mapping[str, str] | None = None
        self.pythonExecutable: str | None = None
        self.jobs = JobSlot()
        self.useWarmWorker = os.environ.get("GLIMS_WARM_WORKER", "1").strip() != "0"
        self.warmWorker: WarmWorker = sharedWarmWorker()
        self.inputFiles = InputFileCache(self.temporaryRoot)
        self._watchedScenes: set[int] = set()
        self._catalog = None

    # ---- models -------------------------------------------------------------------------------------------

    def catalog(self, reload: bool = False):
        """The model catalog (``glims.catalog.Catalog``), cached until ``reload``."""
        if self._catalog is None or reload:
            self._catalog = loadCatalog(self.glimsHome)
        return self._catalog

    def model(self, modelId: str):
        """The catalog entry of ``ID`` or ``ID@VERSION`` (raises ``glims.errors.CatalogError`` if unknown)."""
        return self.catalog().get(modelId)

    def defaultModelId(self) -> str:
        """The id of the first default model, or of the first model; "" when the catalog is empty."""
        models = self.catalog().models
        marked = [m for m in models if m.default]
        return (marked or models)[0].id if models else ""

    def matchInputVolumes(self, modelId: str, volumeNodes: Sequence | None = None) -> dict[str, object]:
        """Input key -> volume, assigned by the model's name patterns among ``volumeNodes`` (default: all)."""
        if volumeNodes is None:
            volumeNodes = list(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"))
            volumeNodes = [v for v in volumeNodes if not v.IsA("vtkMRMLLabelMapVolumeNode")]
        return matchVolumes(self.model(modelId), volumeNodes)

    # ---- parameters ---------------------------------------------------------------------------------------

    def setDefaultParameters(self, parameterNode) -> None:
        """Fill in what is unset: the default model, and the model's own value of each run option a model may set
        (its catalog entry's window overlap, ...); the other run options keep their defaults (device ``auto``)."""
        params = SegmentationParameters.fromParameterNode(parameterNode)
        if not params.modelId:
            params.modelId = self.defaultModelId()
        try:
            spec = self.model(params.modelId)
        except CatalogError:  # a model this catalog lacks (a scene from elsewhere): the panel says so
            spec = None
        for name, value in modelValues(spec).items():
            if getattr(params, name) is None:
                setattr(params, name, value)
        params.writeToParameterNode(parameterNode)

    def inputsFromParameters(self, params: SegmentationParameters) -> dict[str, object]:
        """Input key -> volume node for the parameters' model (volumes in catalog order of the slots)."""
        spec = self.model(params.modelId)
        return {inp.key: volume for inp, volume in zip(spec.inputs, params.inputVolumes, strict=False)}

    # ---- segmentation -------------------------------------------------------------------------------------

    def _orderedInputs(self, spec, inputVolumes) -> list:
        """The volume of every model input, in catalog order; raises InputError naming what is missing."""
        if not isinstance(inputVolumes, Mapping):
            volumes = list(inputVolumes)
            if len(volumes) != len(spec.inputs):
                raise InputError(
                    f"{spec.title} needs {len(spec.inputs)} input volumes "
                    f"({', '.join(i.title for i in spec.inputs)}), got {len(volumes)}"
                )
            inputVolumes = {inp.key: volume for inp, volume in zip(spec.inputs, volumes, strict=False)}
        unknown = set(inputVolumes) - {i.key for i in spec.inputs}
        if unknown:
            raise InputError(f"{spec.title} has no input {', '.join(sorted(unknown))}")
        missing = [i.title for i in spec.inputs if inputVolumes.get(i.key) is None]
        if missing:
            raise InputError(f"select a volume for: {', '.join(missing)}")
        ordered = [inputVolumes[i.key] for i in spec.inputs]
        for volume in ordered:
            if volume.GetImageData() is None:
                raise InputError(f"volume '{volume.GetName()}' has no image data")
        return ordered

    def _inputFiles(self, spec, volumes, workFolder: Path) -> list[Path]:
        """The engine's input files: kept ones from :attr:`inputFiles` (written when a volume changed), or, with
        ``keepTemporaryFiles``, fresh ones in the job's folder (kept with it for debugging)."""
        roles = [inp.key for inp in spec.inputs]
        if self.keepTemporaryFiles:
            return [sceneio.writeVolumeFile(v, workFolder / f"{r}.nrrd") for r, v in zip(roles, volumes, strict=False)]
        self._clearInputFilesWhenClosed(volumes[0].GetScene())
        return [self.inputFiles.fileFor(role, volume) for role, volume in zip(roles, volumes, strict=False)]

    def _clearInputFilesWhenClosed(self, scene) -> None:
        """Remove the kept input files when ``scene`` is closed (observed once per scene)."""
        if scene is None or id(scene) in self._watchedScenes:
            return
        self._watchedScenes.add(id(scene))
        cache = weakref.ref(self.inputFiles)
        scene.AddObserver(scene.EndCloseEvent, lambda *_: cache() is not None and cache().clear())

    def startSegmentation(
        self,
        modelId: str,
        inputVolumes: Mapping[str, object] | Sequence,
        outputSegmentation=None,
        replaceExisting: bool = False,
        onProgress: Callable | None = None,
        onLog: Callable[[str], None] | None = None,
        onFinished: Callable[[SegmentationJob], None] | None = None,
        **options,
    ) -> SegmentationJob:
        """Write the inputs to files (or reuse those written for unchanged volumes) and start the engine in the
        background.

        Args:
            modelId: catalog model ``ID`` or ``ID@VERSION``.
            inputVolumes: input key -> volume node, or volume nodes in the catalog's input order. The first input
                is the reference: the result is on its grid, next to it in the subject hierarchy.
            outputSegmentation: None creates a new segmentation node when the job succeeds; an existing node has
                its segments replaced, which requires ``replaceExisting`` if it has any segments.
            onProgress: called with each ``glims.progress.ProgressEvent``.
            onLog: called with each log line of the engine.
            onFinished: called with the job when it has finished.
            options: run options by name, as declared in ``glims.runoptions.RUN_OPTIONS``; those given are sent
                to the engine, the others (or None) leave the model's own value. ``device``: ``auto``, ``cpu``,
                ``cuda`` or ``mps``; ``overlap``: sliding-window overlap (0-0.9); ``testTimeFlips``: average over
                four flipped copies (about 4x slower); ``wholeImage``: windows over the whole image, as the
                reference pipeline places them (its answer; about 2.5x slower), instead of over the foreground box.

        Returns:
            The running job; poll it (or ``wait()``) until finished, then read ``segmentationNode`` or
            ``errorMessage``.

        Raises:
            glims.errors.CatalogError: unknown model. InputError: an input is missing or empty.
            KeyError: an option that is not a run option.
            OutputError: ``outputSegmentation`` has segments and ``replaceExisting`` is False.
            JobBusyError: another job (segmentation or fine-tuning) is running.
        """
        spec = self.model(modelId)
        given_arguments(options)  # an unknown option fails here, before any file is written
        self.jobs.ensureFree("a segmentation")
        volumes = self._orderedInputs(spec, inputVolumes)
        if (
            outputSegmentation is not None
            and not replaceExisting
            and outputSegmentation.GetSegmentation().GetNumberOfSegments() > 0
        ):
            raise OutputError(
                f"'{outputSegmentation.GetName()}' already has segments; choose a new segmentation "
                "or confirm that its segments may be replaced"
            )
        workFolder = Path(tempfile.mkdtemp(prefix="GLIMSSegmenter-", dir=self.temporaryRoot()))
        clock = time.perf_counter()
        try:
            inputPaths = self._inputFiles(spec, volumes, workFolder)
        except Exception:
            shutil.rmtree(workFolder, ignore_errors=True)
            raise
        writeSeconds = time.perf_counter() - clock
        reused, written = (0, len(inputPaths)) if self.keepTemporaryFiles else self.inputFiles.takeCounts()
        outputPath = workFolder / "segmentation.seg.nrrd"
        arguments = segmentArguments(
            spec.ref,
            inputPaths,
            outputPath,
            reportPath=workFolder / "report.json",
            **options,
        )
        process = self._segmentationProcess(arguments, workFolder, onProgress)
        reference = volumes[0]
        name = resultName([volume.GetName() for volume in volumes], spec.id, spec.version)

        def importResult(outcome: ProcessOutcome):
            if "segmentation" not in outcome.outputs:
                raise OSError("the engine finished without reporting a segmentation file")
            node = sceneio.readSegmentationFile(
                outcome.outputs["segmentation"], reference, name, outputSegmentation, algorithmName=spec.ref
            )
            trainingset.recordDraft(node, spec, dict(zip((inp.key for inp in spec.inputs), volumes, strict=False)))
            return node

        userNames = [f"volume '{volume.GetName()}'" for volume in volumes]
        inputNames = {str(path): user for path, user in zip(inputPaths, userNames, strict=False)}
        inputNames.update({path.name: user for path, user in zip(inputPaths, userNames, strict=False)})
        job = SegmentationJob(
            process, workFolder, importResult, onFinished, keepFiles=self.keepTemporaryFiles, inputNames=inputNames
        )
        job.timings["write inputs"] = writeSeconds
        logger.info("segmentation inputs: %d file(s) reused, %d written in %.2f s", reused, written, writeSeconds)
        if onLog is not None:
            process.onLog = lambda line: onLog(job.inUserWords(line))
        try:
            process.start()
        except Exception:
            shutil.rmtree(workFolder, ignore_errors=True)
            raise
        return self.jobs.hold(job)

    def _segmentationProcess(self, arguments: Sequence[str], workFolder: Path, onProgress) -> EngineProcess:
        """The engine run of one segmentation: a request to the warm worker, or a process of its own (worker off,
        unresponsive, or busy with another logic object's job)."""
        env = engineEnvironment(self.baseEnvironment, self.glimsHome)
        if self.useWarmWorker and not self.warmWorker.unresponsive and not self.warmWorker.busy:
            return self.warmWorker.request(
                arguments, python=self.pythonExecutable, env=env, cwd=str(workFolder), onProgress=onProgress
            )
        return EngineProcess(
            engineCommand(arguments, self.pythonExecutable), env=env, cwd=str(workFolder), onProgress=onProgress
        )

    def prestartWorker(self) -> bool:
        """Start the warm engine worker now, if segmentations use it and none is running, so that the first
        Segment finds torch and the engine already imported (a new worker takes seconds to import them; a request
        sent before it is ready waits for it). Call it when a segmentation is likely soon: the module shown, a case
        loaded. Without a request the worker still exits after its idle timeout. Returns whether it started one.

        The engine's packages must be installed (in Slicer: ``dependencies.missingRequirements()`` is empty)."""
        worker = self.warmWorker
        if not self.useWarmWorker or worker.unresponsive or worker.running:
            return False
        worker.acquire(self.pythonExecutable, engineEnvironment(self.baseEnvironment, self.glimsHome))
        return True

    def releaseWorker(self) -> None:
        """Stop the warm engine worker now and release its memory (a running segmentation ends as cancelled);
        the next segmentation starts a new one. The kept input files are removed too."""
        self.warmWorker.shutdown()
        self.inputFiles.clear()

    def segment(self, modelId: str, inputVolumes: Mapping[str, object] | Sequence, **options):
        """Run a segmentation to the end (blocking) and return the segmentation node.

        Takes the arguments of :meth:`startSegmentation`.

        Raises:
            RuntimeError: the engine failed (its message) or the run was cancelled; plus those of
            :meth:`startSegmentation`.
        """
        job = self.startSegmentation(modelId, inputVolumes, **options)
        if job.wait() is not JobState.SUCCEEDED:
            raise RuntimeError(job.errorMessage or f"segmentation {job.state.value.lower()}")
        return job.segmentationNode

    def segmentFromParameterNode(self, parameterNode, **options):
        """:meth:`startSegmentation` with the model, inputs, output and run options stored in the node (those the
        user changed: :meth:`chosenOptions`)."""
        params = SegmentationParameters.fromParameterNode(parameterNode)
        return self.startSegmentation(
            params.modelId,
            self.inputsFromParameters(params),
            outputSegmentation=params.outputSegmentation,
            **self.chosenOptions(params),
            **options,
        )

    def chosenOptions(self, params: SegmentationParameters) -> dict[str, object]:
        """The run options to ask the engine for: those whose value differs from the model's own (its catalog
        entry's overlap, ...) or from the option's default; the engine applies the others itself."""
        return changedOptions(params.optionValues(), self.model(params.modelId))

    def temporaryRoot(self) -> str | None:
        """Slicer's temporary folder in the application, None (the system's) elsewhere."""
        app = getattr(slicer, "app", None)
        return app.temporaryPath if app is not None else None

    # ---- results ------------------------------------------------------------------------------------------

    @staticmethod
    def setShowIn3D(segmentationNode, show: bool) -> None:
        """Show the segments as surfaces in 3D views (builds the closed-surface representation) or not."""
        if show:
            segmentationNode.CreateClosedSurfaceRepresentation()
        else:
            segmentationNode.RemoveClosedSurfaceRepresentation()

    @staticmethod
    def referenceVolume(segmentationNode):
        """The volume the segmentation was made on (its reference-geometry node), or None."""
        return segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())

    def export(self, segmentationNode, fileFormat: str, destination: str | os.PathLike) -> list[Path]:
        """Write the segmentation in one of ``EXPORT_FORMATS``.

        Args:
            segmentationNode: what to export.
            fileFormat: ``seg.nrrd``, ``nifti``, ``dicom`` (DICOM SEG) or ``rtstruct`` (DICOM RT Structure Set):
                ``destination`` is the file; ``stl``/``obj``: surfaces of the non-empty segments in the
                ``destination`` folder (file names made safe from the segment names). DICOM needs the reference
                volume loaded from DICOM, and pydicom and highdicom (``dependencies.DICOM_REQUIREMENTS``).

        Returns:
            The files written.

        Raises:
            ValueError: unknown format; OutputError: a file it would write is one the scene was loaded from (an
            input is never overwritten); OSError/RuntimeError: the export failed or would be incomplete.
        """
        from glims.outputs import check_targets

        fileFormat = fileFormat.lower()
        if fileFormat not in EXPORT_FORMATS:
            raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, not {fileFormat!r}")
        destination = Path(destination)
        check_targets(
            self._exportTargets(segmentationNode, fileFormat, destination),
            sceneio.loadedFiles(segmentationNode.GetScene()),
        )
        if fileFormat == "seg.nrrd":
            return [sceneio.writeSegmentationFile(segmentationNode, destination)]
        if fileFormat == "nifti":
            reference = self.referenceVolume(segmentationNode)
            if reference is None:
                raise ValueError(f"'{segmentationNode.GetName()}' has no reference volume to define the label map grid")
            return [sceneio.writeLabelmapFile(segmentationNode, reference, destination)]
        if fileFormat in ("stl", "obj"):
            return sceneio.writeSurfaceFiles(segmentationNode, destination, fileFormat)
        return [
            sceneio.writeDicomFile(
                segmentationNode,
                self.referenceVolume(segmentationNode),
                destination,
                fileFormat,
                self._algorithmOf(segmentationNode),
            )
        ]

    def _algorithmOf(self, segmentationNode):
        """The DICOM algorithm identification of the model that drafted the node (its catalog entry when known)."""
        from glims import __version__
        from glims.dicom.content import Algorithm
        from glims.errors import CatalogError

        ref = trainingset.draftModel(segmentationNode)
        if ref:
            try:
                from glims.dicom.export import algorithm_of

                return algorithm_of(self.model(ref))
            except CatalogError:
                modelId, _, version = ref.partition("@")
                return Algorithm(modelId, version or "unknown", (), f"glims {__version__}")
        return Algorithm("GLIMS Segmenter", __version__, (), f"glims {__version__}")

    @staticmethod
    def _exportTargets(segmentationNode, fileFormat: str, destination: Path) -> dict[str, Path]:
        """The files an export writes (role -> path), as far as they are known before it runs."""
        if fileFormat in ("stl", "obj"):
            return {
                f"surface file {name}": destination / name
                for name in sceneio.surfaceFileNames(segmentationNode, fileFormat)
            }
        return {"export": destination}

    def defaultExportName(self, segmentationNode, fileFormat: str) -> str:
        """A file (or folder) name for an export: the node name made safe for file systems, plus the extension."""
        suffix = {"seg.nrrd": ".seg.nrrd", "nifti": ".nii.gz", "dicom": "_seg.dcm", "rtstruct": "_rtstruct.dcm"}.get(
            fileFormat.lower(), f"_{fileFormat.lower()}"
        )
        return safeFileName(segmentationNode.GetName(), "segmentation") + suffix
