"""The Segment step: model picker with licence and model card, inputs assigned by name with an override per role,
the run options (device, window overlap, ...), **Segment** with stage and progress, **Cancel**.

Same semantics as the Slicer module: each run makes a new segmentation node (named after the reference volume and
the model, with the model's segment names, colours and terminology); nothing is added to the scene unless the
engine succeeds.
"""

from __future__ import annotations

import logging
from pathlib import Path

from glims.runoptions import OptionKind, RunOption
from GLIMSSegmenterLib import presentation
from GLIMSSegmenterLib.job import JobState
from GLIMSSegmenterLib.models import modelChoice, modelSummaryText
from GLIMSSegmenterLib.parameters import INPUT_SLOTS
from GLIMSSegmenterLib.runoptions import PANEL_OPTIONS, changedOptions, modelValues

__all__ = ["SegmentStep", "DEVICE_CHOICES", "optionStateName", "setOptionDefaults", "optionValues"]

logger = logging.getLogger(__name__)

DEVICE_CHOICES = (
    {"value": "auto", "title": "Automatic (the GPU when the server has one)"},
    {"value": "cpu", "title": "CPU"},
    {"value": "cuda", "title": "GPU (CUDA)"},
)


def optionStateName(name: str) -> str:
    """The page state that holds the value of the run option ``name``: ``seg_<name>`` (``seg_device``, ...)."""
    return f"seg_{name}"


def setOptionDefaults(state, device: str, options: tuple[RunOption, ...] = PANEL_OPTIONS) -> None:
    """Put every run option of the page at its default (the device at the server's ``--device``)."""
    for option in options:
        state[optionStateName(option.name)] = device if option.kind is OptionKind.DEVICE else option.default


_FROM_PAGE = {OptionKind.FLAG: bool, OptionKind.NUMBER: float, OptionKind.INTEGER: int}


def optionValues(state, options: tuple[RunOption, ...] = PANEL_OPTIONS) -> dict[str, object]:
    """Run option name -> value as the page's controls hold it, typed (a slider may give ``0`` for ``0.0``)."""
    values = {}
    for option in options:
        value = state[optionStateName(option.name)]
        values[option.name] = None if value is None else _FROM_PAGE.get(option.kind, str)(value)
    return values


class SegmentStep:
    """Model, inputs and the segmentation job; page state names start with ``seg_``.

    Args:
        context: the app's shared objects (``WebContext``).
    """

    def __init__(self, context) -> None:
        self.context = context
        self.state = context.state
        self.job = None
        self.lastState: JobState | None = None
        self.lastError = ""
        state = self.state
        state.seg_models = []
        state.seg_model = ""
        state.seg_model_summary = ""
        state.seg_model_card = ""
        state.seg_card_open = False
        state.seg_volumes = []
        for slot in range(1, INPUT_SLOTS + 1):
            state[f"seg_input_{slot}"] = None
        state.seg_input_labels = []
        setOptionDefaults(state, context.options.device)
        state.seg_button = "Segment"
        state.seg_button_enabled = False
        state.seg_busy = False
        state.seg_progress = 0
        state.seg_status = "Load a case first."
        state.seg_log = []
        state.change("seg_model")(self._onModelChanged)
        for slot in range(1, INPUT_SLOTS + 1):
            state.change(f"seg_input_{slot}")(lambda **_: self.updateButton())

    # ---- models -------------------------------------------------------------------------------------------

    def reloadModels(self, select: str | None = None) -> None:
        """Fill the model list from the catalog (built-in and user models, every version)."""
        catalog = self.context.logic.catalog(reload=True)
        items = []
        for spec in catalog.models:
            choice = modelChoice(catalog, spec)
            items.append(
                {
                    "value": choice,
                    "title": f"{spec.title} — {spec.version}" + ("" if spec.builtin else f" (yours: {spec.id})"),
                }
            )
        self.state.seg_models = items
        if select is not None:
            self.state.seg_model = select
        elif not self.state.seg_model:
            self.state.seg_model = self.context.logic.defaultModelId()
        self._onModelChanged()

    def currentModel(self):
        """The selected catalog entry, or None."""
        try:
            return self.context.logic.model(self.state.seg_model) if self.state.seg_model else None
        except Exception:
            return None

    def _onModelChanged(self, **_) -> None:
        spec = self.currentModel()
        self.state.seg_model_summary = modelSummaryText(spec) if spec else "No model selected."
        self.state.seg_model_card = _modelCardText(spec) if spec else ""
        for name, value in modelValues(spec).items():  # each model starts from its own overlap, ...
            self.state[optionStateName(name)] = value
        self.state.seg_input_labels = (
            [
                {"slot": i + 1, "label": presentation.inputLabel(inp.title), "title": inp.title}
                for i, inp in enumerate(spec.inputs)
            ]
            if spec
            else []
        )
        self.autoAssign(onlyEmpty=True)
        self.context.training.refresh()

    # ---- inputs -------------------------------------------------------------------------------------------

    def volumeNodes(self) -> list:
        scene = self.context.slicerApp.scene
        nodes = [
            scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
        ]
        return [n for n in nodes if not n.IsA("vtkMRMLLabelMapVolumeNode") and not n.GetHideFromEditors()]

    def refreshVolumes(self) -> None:
        """The volume lists after a case was loaded, then inputs assigned by name."""
        self.state.seg_volumes = [{"value": n.GetID(), "title": n.GetName()} for n in self.volumeNodes()]
        for slot in range(1, INPUT_SLOTS + 1):
            self.state[f"seg_input_{slot}"] = None
        self.autoAssign(onlyEmpty=False)
        self.lastState, self.lastError = None, ""
        self.updateButton()

    def autoAssign(self, onlyEmpty: bool = False) -> None:
        """Assign volumes to the model's inputs by their names (the model's patterns), as the module does."""
        spec = self.currentModel()
        if spec is None:
            return
        matched = self.context.logic.matchInputVolumes(spec.ref, self.volumeNodes())
        for slot, inp in enumerate(spec.inputs, start=1):
            name = f"seg_input_{slot}"
            if onlyEmpty and self.state[name]:
                continue
            node = matched.get(inp.key)
            self.state[name] = node.GetID() if node is not None else None
        self.updateButton()

    def selectedInputs(self) -> dict[str, object]:
        """Input key -> volume node of the current choice (missing inputs are None)."""
        spec = self.currentModel()
        scene = self.context.slicerApp.scene
        if spec is None:
            return {}
        return {
            inp.key: (scene.GetNodeByID(self.state[f"seg_input_{slot}"]) if self.state[f"seg_input_{slot}"] else None)
            for slot, inp in enumerate(spec.inputs, start=1)
        }

    def referenceVolume(self):
        """The first input's volume (the grid of the result), or None."""
        inputs = list(self.selectedInputs().values())
        return inputs[0] if inputs else None

    # ---- the job ------------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.finished

    def updateButton(self) -> None:
        """The Segment/Cancel button and status line from the job state (``presentation.panelState``)."""
        spec = self.currentModel()
        missing = (
            ["a model"]
            if spec is None
            else [
                inp.title
                for inp, node in zip(spec.inputs, self.selectedInputs().values(), strict=False)
                if node is None
            ]
        )
        reason = f"Select {', '.join(missing)}." if missing else ""
        if not self.busy and self.context.logic.jobs.busy:
            reason = "Fine-tuning is running: wait for it to finish or stop it."
        jobState = self.job.state if self.job is not None else self.lastState
        panel = presentation.panelState(
            jobState, canSegment=self.busy or not reason, errorMessage=self.lastError, reason=reason
        )
        self.state.seg_button = panel.applyText
        self.state.seg_button_enabled = panel.applyEnabled
        self.state.seg_busy = panel.busy
        if panel.status or not panel.busy:
            self.state.seg_status = panel.status
        self.context.onJobsChanged()

    def onButton(self) -> None:
        """Segment, or Cancel while running."""
        if self.busy:
            self.job.cancel()
            self.updateButton()
            return
        self.start()

    def start(self) -> None:
        """Start a segmentation of the selected inputs into a new segmentation node."""
        spec = self.currentModel()
        self.lastState, self.lastError = None, ""
        self.state.seg_log = []
        self.state.seg_progress = 0
        try:
            self.job = self.context.logic.startSegmentation(
                spec.ref if spec else self.state.seg_model,
                self.selectedInputs(),
                onProgress=self._onProgress,
                onLog=self.appendLog,
                **changedOptions(optionValues(self.state), spec),
            )
        except Exception as err:  # busy, missing input, unknown model: one clear line, the page stays usable
            self.job = None
            self.lastState, self.lastError = JobState.FAILED, str(err)
            self.updateButton()
            return
        self.updateButton()
        self.context.poller.follow(self.job, self.updateButton, self._onFinished)

    def _onProgress(self, event) -> None:
        self.state.seg_progress = presentation.progressPercent(event)
        self.state.seg_status = presentation.progressStatus(event)

    def appendLog(self, line: str) -> None:
        """Add an engine log line to the *Engine log* (the last 200 lines are kept)."""
        self.state.seg_log = [*self.state.seg_log[-199:], line]

    def _onFinished(self, job) -> None:
        self.job = None
        self.lastState, self.lastError = job.state, job.errorMessage
        if job.state is JobState.SUCCEEDED:
            self.context.editing.showResult(job.segmentationNode, self.referenceVolume())
        self.updateButton()


def _modelCardText(spec) -> str:
    """The model card's text (Markdown) when the catalog names one that exists, else its description."""
    from GLIMSSegmenterLib.engine import MODULE_DIR

    if spec.model_card:
        for root in (MODULE_DIR.parent, MODULE_DIR):
            path = Path(root) / spec.model_card
            if path.is_file():
                return path.read_text(encoding="utf-8")
    return spec.description or "This model has no model card."
