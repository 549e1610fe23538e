"""GLIMS Segmenter: brain tumour (4-modality MRI) and abdominal organ (CT) segmentation with the GLIMS network.

Slicer's scripted-module entry point: the module description, the parameter node, the panel (widget) and a
self-test. The work is done by ``GLIMSSegmenterLogic`` (``GLIMSSegmenterLib/``, Qt-free and tested without the
Slicer application); the network runs in a separate ``PythonSlicer`` process (the ``glims`` engine package next to
this file), so the panel stays responsive and a run can be cancelled.

Nothing heavy is imported here: torch and MONAI are used only by the engine process, and the Python packages it
needs are installed on first use, after asking.
"""

# No `from __future__ import annotations` here: parameterNodeWrapper reads the class annotations as types.

import logging
import os

import ctk
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from GLIMSSegmenterLib import dependencies, models, presentation, sampledata, sceneio
from GLIMSSegmenterLib.devices import DeviceProbe, cpuDevice
from GLIMSSegmenterLib.engine import engineEnvironment
from GLIMSSegmenterLib.finetuning import FineTuningLogic
from GLIMSSegmenterLib.job import POLL_INTERVAL_S, JobState
from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic  # noqa: F401  (Slicer looks it up in this module)
from GLIMSSegmenterLib.parameters import INPUT_SLOTS, SegmentationParameters
from GLIMSSegmenterLib.runoptions import addOptionRows, modelValues, wrapperOptionFields


class GLIMSSegmenter(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "GLIMS Segmenter"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["GLIMSSegmenter developers"]
        self.parent.helpText = (
            "Segments brain tumours on co-registered FLAIR, T1ce, T1 and T2 MRI (necrotic core, edema, enhancing "
            "tumour) with the GLIMS network; a brain-tumour model is included. The module also knows the task of "
            "13 abdominal organs on CT (BTCV labels), but no CT model is included: add GLIMS weights trained for it "
            "under <b>Models</b> with the <i>btcv</i> task. Select a model and its input volumes, "
            "click <b>Segment</b>, then refine the segments in Segment Editor and export them. Corrected "
            "segmentations can be added to a training set and the model fine-tuned on them (<b>Fine-tune</b>).<br>"
            "The network runs in the background on the GPU when one is available. Each model's licence is shown "
            "under its name; the licence of added checkpoints is the responsibility of whoever added them. "
            "Results are for research, not for clinical use.<br>"
            "See the <a href='https://github.com/glims-segmenter/SlicerGLIMSSegmenter#readme'>documentation</a>."
        )
        self.parent.acknowledgementText = (
            'GLIMS network: Z. A. Yazici, I. Oksuz, H. K. Ekenel, "GLIMS: Attention-guided lightweight '
            'multi-scale hybrid network for volumetric semantic segmentation", Image and Vision Computing, 2024, '
            "doi:10.1016/j.imavis.2024.105055 (reference code MIT licence, (c) 2023 Ziya Ata Yazici). "
            "This module re-implements the network; please cite the paper when you use it."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Offer the GLIMS sample cases in the Sample Data module (made or found on this computer, never downloaded)."""

    def load(case):
        with slicer.util.tryWithErrorDisplay(f"Could not load the sample case '{case.name}'.", waitCursor=True):
            return sampledata.loadSampleCase(sampledata.prepareSampleCase(case))

    sampledata.registerSampleData(sampledata.sampleCases(), load)


@parameterNodeWrapper
@wrapperOptionFields(Choice, WithinRange)
class GLIMSSegmenterParameterNode:
    """The panel's state, saved with the scene. Same fields as ``GLIMSSegmenterLib.parameters.PARAMETER_TYPES``.

    modelId: catalog model id. inputVolume1-4: one volume per model input, in the catalog's input order.
    outputSegmentation: segmentation to replace, or None for a new one. Plus one field per run option of the panel
    (``GLIMSSegmenterLib.runoptions.PANEL_OPTIONS``: device, overlap, testTimeFlips, wholeImage), added by
    ``wrapperOptionFields``; the overlap is set to the model's own on model change.
    """

    modelId: str
    inputVolume1: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    inputVolume4: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode


def _createWidget(className):
    """A new widget of a Qt or CTK class (for the run option rows of the panel)."""
    return getattr(ctk if className.startswith("ctk") else qt, className)()


class GLIMSSegmenterWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: applies the logic's results and the presentation module's texts to the widgets."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._lastJobState = None
        self._lastError = ""
        self.fineTuning = None
        self._fineTuneJob = None
        self._lastFineTuneJob = None
        self._trainingCases = []
        self._updatingGui = False
        self._deviceProbe = None
        self._deviceTimer = None
        self._pollTimer = None

    # ---- set-up -------------------------------------------------------------------------------------------

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GLIMSSegmenter.ui"))
        self.layout.addWidget(uiWidget)
        addOptionRows(slicer.util.findChild(uiWidget, "advancedCollapsibleButton").layout(), _createWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = GLIMSSegmenterLogic()
        self.fineTuning = FineTuningLogic(self.logic)

        self._inputLabels = [getattr(self.ui, f"inputVolumeLabel{slot}") for slot in range(1, INPUT_SLOTS + 1)]
        self._inputSelectors = [getattr(self.ui, f"inputVolumeSelector{slot}") for slot in range(1, INPUT_SLOTS + 1)]
        for fileFormat, label in presentation.EXPORT_CHOICES:
            self.ui.exportFormatComboBox.addItem(label, fileFormat)
        for preset in models.PRESETS:
            self.ui.addModelPresetComboBox.addItem(preset)
        self.ui.exportDirectoryButton.directory = qt.QDir.homePath()
        self._fillDeviceChoices(cpuDevice(), searching=True)
        self.ui.progressBar.setVisible(False)
        for unit, label in presentation.BUDGET_UNITS:
            self.ui.fineTuneBudgetUnitComboBox.addItem(label, unit)
        self.ui.fineTuneProgressBar.setVisible(False)
        self.ui.fineTuneResultLabel.setVisible(False)
        self.ui.useFineTunedModelButton.setVisible(False)
        header = self.ui.trainingCasesTableWidget.horizontalHeader()
        header.setSectionResizeMode(0, qt.QHeaderView.Stretch)  # long case ids are elided in the middle
        for column in (1, 2):
            header.setSectionResizeMode(column, qt.QHeaderView.ResizeToContents)

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(round(POLL_INTERVAL_S * 1000))
        self._pollTimer.connect("timeout()", self.onPollJob)
        self._deviceTimer = qt.QTimer()
        self._deviceTimer.setInterval(250)
        self._deviceTimer.connect("timeout()", self.onPollDevices)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.autoFillInputsButton.connect("clicked(bool)", self.onAutoFillInputs)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.keepTemporaryFilesCheckBox.connect("toggled(bool)", self.onKeepTemporaryFilesToggled)
        self.ui.checkDependenciesButton.connect("clicked(bool)", self.onCheckDependencies)
        self.ui.resultSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onResultChanged)
        self.ui.show3DButton.connect("toggled(bool)", self.onShow3DToggled)
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onOpenSegmentEditor)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.addModelButton.connect("clicked(bool)", self.onAddModel)
        self.ui.removeModelButton.connect("clicked(bool)", self.onRemoveModel)
        self.ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        self.ui.addToTrainingSetButton.connect("clicked(bool)", self.onAddToTrainingSet)
        self.ui.removeTrainingCaseButton.connect("clicked(bool)", self.onRemoveTrainingCase)
        self.ui.fineTuneButton.connect("clicked(bool)", self.onFineTuneButton)
        self.ui.useFineTunedModelButton.connect("clicked(bool)", self.onUseFineTunedModel)

        self._reloadModels()
        self._reloadTrainingCases()
        self.initializeParameterNode()
        self.onResultChanged(self.ui.resultSegmentationSelector.currentNode())

    def _stopJobs(self):
        for job in (self._job, self._fineTuneJob):
            if job is not None and not job.finished:
                job.cancel()
                job.wait()

    def cleanup(self):
        self._stopJobs()
        self.logic.releaseWorker()  # the warm engine worker's memory goes back now, not after its idle timeout
        if self._deviceTimer is not None:
            self._deviceTimer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.onAutoFillInputs(onlyEmpty=True)  # volumes loaded since the panel was last shown
        if self._deviceProbe is None:  # asked once, in the engine's Python: torch stays out of Slicer's process
            self._startDeviceProbe()
        if not dependencies.missingRequirements():  # the engine's imports run while the user picks the inputs
            self.logic.prestartWorker()

    def exit(self):
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event):
        self._stopJobs()
        self._disconnectParameterNode()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ---- parameter node -----------------------------------------------------------------------------------

    def initializeParameterNode(self):
        parameterNode = self.logic.getParameterNode()
        try:
            self.logic.setDefaultParameters(parameterNode)
        except Exception as err:  # an unreadable catalog must not break the panel; the status says why
            logging.warning("GLIMS Segmenter: %s", err)
        self._setParameterNode(GLIMSSegmenterParameterNode(parameterNode))

    def _setParameterNode(self, inputParameterNode):
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._updateGui()

    def _disconnectParameterNode(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def _currentModel(self):
        if not self._parameterNode or not self._parameterNode.modelId:
            return None
        try:
            return self.logic.model(self._parameterNode.modelId)
        except Exception:
            return None

    def _updateGui(self, caller=None, event=None):
        if self._updatingGui:
            return
        self._updatingGui = True
        try:
            spec = self._currentModel()
            if self._parameterNode:
                index = self.ui.modelComboBox.findData(self._parameterNode.modelId)
                self.ui.modelComboBox.setCurrentIndex(index)
                deviceIndex = self.ui.deviceComboBox.findData(self._parameterNode.device)
                self.ui.deviceComboBox.setCurrentIndex(max(deviceIndex, 0))
            self.ui.modelInfoLabel.text = models.modelSummary(spec) if spec else "No model selected."
            self.ui.modelInfoLabel.toolTip = models.modelDetails(spec) if spec else ""
            inputCount = len(spec.inputs) if spec else 0
            for slot, (label, selector) in enumerate(zip(self._inputLabels, self._inputSelectors, strict=False)):
                visible = slot < inputCount
                label.setVisible(visible)
                selector.setVisible(visible)
                if visible:
                    label.text = presentation.inputLabel(spec.inputs[slot].title)
                    label.toolTip = spec.inputs[slot].title
            self.ui.fineTuneBaseValueLabel.text = f"{spec.title} ({spec.ref})" if spec else "No model selected."
            self.ui.fineTuneNameLineEdit.placeholderText = self.fineTuning.defaultModelName(spec.ref) if spec else ""
            self._updateProcessingState()
        finally:
            self._updatingGui = False

    def _missingInputs(self):
        spec = self._currentModel()
        if spec is None:
            return ["a model"]
        return [
            inp.title
            for inp, selector in zip(spec.inputs, self._inputSelectors, strict=False)
            if selector.currentNode() is None
        ]

    def _fineTuneBusy(self):
        return self._fineTuneJob is not None and not self._fineTuneJob.finished

    def _updateProcessingState(self):
        jobState = self._job.state if self._job is not None else self._lastJobState
        busy = self._job is not None and not self._job.finished
        missing = self._missingInputs()
        reason = f"Select {', '.join(missing)}." if missing else ""
        if self._fineTuneBusy():
            reason = "Fine-tuning is running: wait for it to finish or stop it."
        state = presentation.panelState(
            jobState, canSegment=busy or not reason, errorMessage=self._lastError, reason=reason
        )
        self.ui.applyButton.text = state.applyText
        self.ui.applyButton.enabled = state.applyEnabled
        self.ui.progressBar.setVisible(state.busy)
        self.ui.statusLabel.text = state.status
        for widget in [
            self.ui.modelComboBox,
            self.ui.autoFillInputsButton,
            self.ui.outputSegmentationSelector,
            self.ui.advancedCollapsibleButton,
            self.ui.modelsCollapsibleButton,
        ] + self._inputSelectors:
            widget.enabled = not state.busy and not self._fineTuneBusy()
        self._updateFineTuneState(segmenting=busy)

    def _updateFineTuneState(self, segmenting=False):
        job = self._fineTuneJob or self._lastFineTuneJob
        busy = self._fineTuneBusy()
        problem = ""
        if not busy:
            if segmenting:
                problem = "a segmentation is running: wait for it to finish or cancel it"
            elif not self._parameterNode or not self._parameterNode.modelId:
                problem = "select a model under Inputs"
            else:
                try:
                    problem = self.fineTuning.fineTuneProblem(self._parameterNode.modelId, self._trainingCases)
                except Exception as err:  # an unknown model: the status says why
                    problem = str(err)
        state = presentation.fineTuneState(
            job.state if job else None,
            problem=problem,
            errorMessage=job.errorMessage if job else "",
            modelRef=job.modelRef if job else "",
        )
        self.ui.fineTuneButton.text = state.applyText
        self.ui.fineTuneButton.enabled = state.applyEnabled
        self.ui.fineTuneProgressBar.setVisible(state.busy)
        self.ui.fineTuneStatusLabel.text = state.status
        for widget in (
            self.ui.fineTuneNameLineEdit,
            self.ui.fineTuneBudgetSpinBox,
            self.ui.fineTuneBudgetUnitComboBox,
            self.ui.addToTrainingSetButton,
            self.ui.removeTrainingCaseButton,
        ):
            widget.enabled = not state.busy

    # ---- inputs -------------------------------------------------------------------------------------------

    def _reloadModels(self, selectModelId=None):
        self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        self.ui.modelsTableWidget.setRowCount(0)
        try:
            catalog = self.logic.catalog(reload=True)
        except Exception as err:  # typically a Python package not installed yet: show where to install it
            self.ui.modelInfoLabel.text = (
                f"The model catalog could not be read: {err}\nClick 'Check Python packages' under 'Device and quality'."
            )
            self.ui.advancedCollapsibleButton.collapsed = False
            catalog = None
        for spec in catalog.models if catalog else []:
            self.ui.modelComboBox.addItem(models.modelChoiceText(spec), models.modelChoice(catalog, spec))
            self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, spec.title, qt.Qt.ToolTipRole)
            row = self.ui.modelsTableWidget.rowCount
            self.ui.modelsTableWidget.insertRow(row)
            for column, text in enumerate(
                [spec.id, spec.version, spec.preset, "built-in" if spec.builtin else "added"]
            ):
                self.ui.modelsTableWidget.setItem(row, column, qt.QTableWidgetItem(text))
        self.ui.modelsTableWidget.resizeColumnsToContents()
        self.ui.modelComboBox.blockSignals(False)
        if self._parameterNode and selectModelId:
            self._parameterNode.modelId = selectModelId
        self._updateGui()

    def onModelChanged(self, index):
        if self._updatingGui or not self._parameterNode or index < 0:
            return
        self._parameterNode.modelId = self.ui.modelComboBox.itemData(index)
        spec = self._currentModel()
        if spec is not None:
            for name, value in modelValues(spec).items():  # each model starts from its own overlap, ...
                setattr(self._parameterNode, name, value)
        self.onAutoFillInputs(onlyEmpty=True)

    def onAutoFillInputs(self, checked=False, onlyEmpty=False):
        """Assign loaded volumes to the model's inputs by their names (keeps choices when ``onlyEmpty``)."""
        spec = self._currentModel()
        if spec is None or not self._parameterNode:
            return
        matched = self.logic.matchInputVolumes(spec.ref)
        wasModified = self._parameterNode.StartModify()
        try:
            for slot, inp in enumerate(spec.inputs, start=1):
                current = getattr(self._parameterNode, f"inputVolume{slot}")
                if inp.key in matched and not (onlyEmpty and current is not None):
                    setattr(self._parameterNode, f"inputVolume{slot}", matched[inp.key])
        finally:
            self._parameterNode.EndModify(wasModified)

    def _fillDeviceChoices(self, detected, searching=False):
        self.ui.deviceComboBox.blockSignals(True)
        self.ui.deviceComboBox.clear()
        for device, label in presentation.deviceChoices(detected, searching=searching):
            self.ui.deviceComboBox.addItem(label, device)
        self.ui.deviceComboBox.blockSignals(False)
        self._updateGui()

    def _startDeviceProbe(self):
        try:
            environment = engineEnvironment(self.logic.baseEnvironment, self.logic.glimsHome)
            self._deviceProbe = DeviceProbe(python=self.logic.pythonExecutable, env=environment)
        except OSError as err:  # the engine's Python cannot start: the first run will say why
            logging.warning("GLIMS Segmenter: could not look for GPUs: %s", err)
            self._deviceProbe = False
            self._fillDeviceChoices(cpuDevice())
            return
        self._deviceTimer.start()

    def onPollDevices(self):
        detected = self._deviceProbe.poll() if self._deviceProbe else cpuDevice()
        if detected is not None:
            self._deviceTimer.stop()
            self._fillDeviceChoices(detected)

    def onDeviceChanged(self, index):
        if self._updatingGui or not self._parameterNode or index < 0:
            return
        self._parameterNode.device = self.ui.deviceComboBox.itemData(index)

    def onKeepTemporaryFilesToggled(self, checked):
        self.logic.keepTemporaryFiles = checked

    # ---- dependencies -------------------------------------------------------------------------------------

    def _ensureDependencies(self, requirements=dependencies.REQUIREMENTS):
        """True when every package is there, after installing what is missing if the user agrees."""
        missing = dependencies.missingRequirements(requirements)
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(dependencies.installPrompt(missing), "GLIMS Segmenter"):
            return False
        with slicer.util.tryWithErrorDisplay("Installing the Python packages failed.", waitCursor=True):
            dependencies.installRequirements(missing)
            still = dependencies.missingRequirements(requirements)
            if still:
                raise dependencies.DependencyError(
                    "still missing after installation: "
                    + ", ".join(s.describe() for s in still)
                    + ". Restart Slicer and try again."
                )
            self._reloadModels(self._parameterNode.modelId if self._parameterNode else None)
            return True
        return False

    def onCheckDependencies(self):
        if self._ensureDependencies():
            slicer.util.infoDisplay("All Python packages GLIMS needs are installed.", "GLIMS Segmenter")

    # ---- segmentation -------------------------------------------------------------------------------------

    def onApplyButton(self):
        if self._job is not None and not self._job.finished:
            self._job.cancel()
            self._updateProcessingState()
            return
        if not self._ensureDependencies():
            return
        outputNode = self._parameterNode.outputSegmentation
        replace = False
        if outputNode is not None and outputNode.GetSegmentation().GetNumberOfSegments() > 0:
            replace = slicer.util.confirmOkCancelDisplay(
                f"Replace all segments of '{outputNode.GetName()}' with the new result?\n"
                "Choose 'Create new segmentation' as output to keep it.",
                "GLIMS Segmenter",
            )
            if not replace:
                return
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self._lastError = ""
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            self._job = self.logic.segmentFromParameterNode(
                self._parameterNode.parameterNode,
                replaceExisting=replace,
                onProgress=self.onJobProgress,
                onLog=self.onJobLog,
                onFinished=self.onJobFinished,
            )
            self._pollTimer.start()
        self._updateProcessingState()

    def onPollJob(self):
        for job in (self._job, self._fineTuneJob):
            if job is not None:
                job.poll()

    def onJobProgress(self, event):
        self.ui.progressBar.value = presentation.progressPercent(event)
        self.ui.statusLabel.text = presentation.progressStatus(event)

    def onJobLog(self, line):
        self.ui.logTextEdit.appendPlainText(line)

    def onJobFinished(self, job):
        self._pollTimer.stop()
        self._lastJobState = job.state
        self._lastError = job.errorMessage
        self._job = None
        if job.state is JobState.SUCCEEDED:
            show3D = self.ui.show3DButton.checked  # as the user left it (on for the first result)
            node = job.segmentationNode
            self.ui.resultSegmentationSelector.setCurrentNode(node)
            if show3D:  # the slice views draw the result first, the surfaces follow
                qt.QTimer.singleShot(int(presentation.SURFACES_AFTER_S * 1000), lambda: self._showSurfaces(node))
        elif job.keepFiles:
            self.onJobLog(f"Temporary files kept in {job.workFolder}")
        self._updateProcessingState()
        if job.state is JobState.FAILED:
            slicer.util.errorDisplay(f"Segmentation failed: {job.errorMessage}", "GLIMS Segmenter")

    # ---- results ------------------------------------------------------------------------------------------

    def onResultChanged(self, node):
        for widget in (self.ui.show3DButton, self.ui.segmentEditorButton, self.ui.exportButton):
            widget.enabled = node is not None
        if node is not None:
            self.ui.show3DButton.blockSignals(True)
            self.ui.show3DButton.checked = node.GetSegmentation().ContainsRepresentation("Closed surface")
            self.ui.show3DButton.blockSignals(False)

    def _showSurfaces(self, node):
        """Turn *Show 3D* on for ``node`` if it is still the chosen result (its toggle builds the surfaces)."""
        current = self.ui.resultSegmentationSelector.currentNode()
        if current is not None and current.GetID() == node.GetID():
            self.ui.show3DButton.checked = True

    def onShow3DToggled(self, checked):
        node = self.ui.resultSegmentationSelector.currentNode()
        if node is not None:
            with slicer.util.tryWithErrorDisplay("Could not build the 3D surfaces.", waitCursor=True):
                self.logic.setShowIn3D(node, checked)

    def onOpenSegmentEditor(self):
        node = self.ui.resultSegmentationSelector.currentNode()
        if node is None:
            return
        reference = self.logic.referenceVolume(node)
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.SegmentEditorWidget.editor
        editor.setSegmentationNode(node)
        if reference is not None:
            if hasattr(editor, "setSourceVolumeNode"):
                editor.setSourceVolumeNode(reference)
            else:  # Slicer < 5.4
                editor.setMasterVolumeNode(reference)

    def onExport(self):
        node = self.ui.resultSegmentationSelector.currentNode()
        if node is None:
            return
        fileFormat = self.ui.exportFormatComboBox.currentData
        if fileFormat in sceneio.DICOM_FORMATS and not self._ensureDependencies(dependencies.DICOM_REQUIREMENTS):
            return
        folder = self.ui.exportDirectoryButton.directory
        destination = os.path.join(folder, self.logic.defaultExportName(node, fileFormat))
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            written = self.logic.export(node, fileFormat, destination)
            self.ui.statusLabel.text = f"Exported {len(written)} file(s) to {folder}"
            for path in written:
                self.onJobLog(f"Exported {path}")

    # ---- models -------------------------------------------------------------------------------------------

    def onAddModel(self):
        path = self.ui.addModelPathLineEdit.currentPath
        modelId = self.ui.addModelIdLineEdit.text.strip()
        preset = self.ui.addModelPresetComboBox.currentText
        if not path or not modelId:
            slicer.util.warningDisplay("Choose a checkpoint file and a model id first.", "GLIMS Segmenter")
            return
        if not self._ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("The model could not be added.", waitCursor=True):
            for line in models.addUserModel(path, modelId, preset, self.logic.glimsHome):
                self.onJobLog(line)
            self._reloadModels(selectModelId=modelId)
            self.ui.statusLabel.text = f"Added model {modelId}."

    def onRemoveModel(self):
        row = self.ui.modelsTableWidget.currentRow()
        if row < 0:
            return
        modelId = self.ui.modelsTableWidget.item(row, 0).text()
        version = self.ui.modelsTableWidget.item(row, 1).text()
        if not slicer.util.confirmOkCancelDisplay(
            f"Remove model {modelId} {version} and its weights file?", "GLIMS Segmenter"
        ):
            return
        with slicer.util.tryWithErrorDisplay("The model could not be removed.", waitCursor=True):
            models.removeUserModel(f"{modelId}@{version}", self.logic.glimsHome)
            self._reloadModels()

    def onOpenModelsFolder(self):
        folder = models.userModelsFolder(self.logic.glimsHome)
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    # ---- training set and fine-tuning ---------------------------------------------------------------------

    def _reloadTrainingCases(self):
        try:
            self._trainingCases = self.fineTuning.trainingCases()
        except Exception as err:  # e.g. SimpleITK or jsonschema not installed yet: the status says why
            logging.warning("GLIMS Segmenter: the training set could not be read: %s", err)
            self._trainingCases = []
        table = self.ui.trainingCasesTableWidget
        table.setRowCount(0)
        for case in self._trainingCases:
            row = table.rowCount
            table.insertRow(row)
            for column, text in enumerate(presentation.trainingCaseRow(case)):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(presentation.trainingCaseToolTip(case))
                table.setItem(row, column, item)
        self._updateGui()

    def onAddToTrainingSet(self):
        node = self.ui.resultSegmentationSelector.currentNode()
        if node is None:
            slicer.util.warningDisplay("Select the corrected segmentation under Result first.", "GLIMS Segmenter")
            return
        if not self._ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("The case was not added to the training set.", waitCursor=True):
            params = SegmentationParameters.fromParameterNode(self._parameterNode.parameterNode)
            selected = self.logic.inputsFromParameters(params) if params.modelId else {}
            case = self.fineTuning.addToTrainingSet(node, params.modelId or None, inputVolumes=selected)
            self._reloadTrainingCases()
            self.ui.fineTuneStatusLabel.text = f"Added '{node.GetName()}' to the training set as {case.case_id}."
            self.onJobLog(f"Training set: added {case.case_id} ({case.folder})")

    def onRemoveTrainingCase(self):
        row = self.ui.trainingCasesTableWidget.currentRow()
        if row < 0:
            return
        caseId = self.ui.trainingCasesTableWidget.item(row, 0).text()
        if not slicer.util.confirmOkCancelDisplay(
            f"Remove {caseId} from the training set (its stored volumes and label map are deleted)?", "GLIMS Segmenter"
        ):
            return
        with slicer.util.tryWithErrorDisplay("The case could not be removed.", waitCursor=True):
            self.fineTuning.removeTrainingCase(caseId)
        self._reloadTrainingCases()

    def _fineTuneName(self):
        return self.ui.fineTuneNameLineEdit.text.strip() or self.ui.fineTuneNameLineEdit.placeholderText

    def _askResume(self, name):
        """True: continue the stopped run of ``name``; False: start again; None: do nothing."""
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle("GLIMS Segmenter")
        box.setText(f"A stopped fine-tuning of '{name}' exists. Continue it, or discard it and start again?")
        continueButton = box.addButton("Continue it", qt.QMessageBox.AcceptRole)
        restartButton = box.addButton("Start again", qt.QMessageBox.DestructiveRole)
        box.addButton(qt.QMessageBox.Cancel)
        box.exec_()
        if box.clickedButton() == continueButton:
            return True
        if box.clickedButton() == restartButton:
            self.fineTuning.discardInterruptedRuns(name)
            return False
        return None

    def onFineTuneButton(self):
        if self._fineTuneBusy():
            self._fineTuneJob.cancel()
            self._updateProcessingState()
            return
        if not self._ensureDependencies():
            return
        name = self._fineTuneName()
        resume = False
        if self.fineTuning.interruptedRuns(name):
            resume = self._askResume(name)
            if resume is None:
                return
        budget = {self.ui.fineTuneBudgetUnitComboBox.currentData: self.ui.fineTuneBudgetSpinBox.value}
        self.ui.fineTuneProgressBar.value = 0
        self.ui.fineTuneResultLabel.setVisible(False)
        self.ui.useFineTunedModelButton.setVisible(False)
        self._lastFineTuneJob = None
        with slicer.util.tryWithErrorDisplay("Could not start fine-tuning.", waitCursor=True):
            self._fineTuneJob = self.fineTuning.startFineTuning(
                self._parameterNode.modelId,
                name,
                device=self._parameterNode.device,
                resume=resume,
                onProgress=self.onFineTuneProgress,
                onLog=self.onJobLog,
                onFinished=self.onFineTuneFinished,
                **budget,
            )
            self._pollTimer.start()
            self._showPlot(self._fineTuneJob.plot)
        self._updateProcessingState()

    def _showPlot(self, plot):
        """Show the fine-tuning chart in the layout's plot view (switching to a layout with one if needed)."""
        if plot is not None:
            slicer.modules.plots.logic().ShowChartInLayout(plot.chartNode)

    def onFineTuneProgress(self, event):
        self.ui.fineTuneProgressBar.value = presentation.progressPercent(event)
        self.ui.fineTuneStatusLabel.text = presentation.fineTuneStatus(event)

    def onFineTuneFinished(self, job):
        self._pollTimer.stop()
        self._fineTuneJob = None
        self._lastFineTuneJob = job
        if job.state is JobState.SUCCEEDED:
            self._reloadModels()
            self.ui.fineTuneResultLabel.text = presentation.diceComparison(job.before, job.after, job.validationCases)
            self.ui.fineTuneResultLabel.setVisible(True)
            self.ui.useFineTunedModelButton.text = f"Use {job.modelRef} for segmentation"
            self.ui.useFineTunedModelButton.setVisible(True)
        self._updateProcessingState()
        if job.state is JobState.SUCCEEDED:
            before, after = job.before.get("mean"), job.after.get("mean")
            dice = (
                f" Mean validation Dice: {before:.3f} before, {after:.3f} after." if None not in (before, after) else ""
            )
            if slicer.util.confirmOkCancelDisplay(
                f"Fine-tuning registered the model {job.modelRef}.{dice}\n\nUse it for segmentation now?",
                "GLIMS Segmenter",
            ):
                self.onUseFineTunedModel()
        elif job.state is JobState.FAILED:
            slicer.util.errorDisplay(f"Fine-tuning failed: {job.errorMessage}", "GLIMS Segmenter")

    def onUseFineTunedModel(self):
        job = self._lastFineTuneJob
        if job is None or not job.modelRef or not self._parameterNode:
            return
        with slicer.util.tryWithErrorDisplay("Could not select the fine-tuned model.", waitCursor=True):
            self.fineTuning.useModel(self._parameterNode.parameterNode, job.modelRef)
            self.ui.useFineTunedModelButton.setVisible(False)


class GLIMSSegmenterTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: the default model on a generated case, then export and parameter round trip.

    The logic's behaviour is tested in depth without the application (``Testing/slicer``, pytest on slicer-core).
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segmentGeneratedCase()

    def _generatedVolume(self, name, seed):
        import numpy as np

        rng = np.random.default_rng(seed)
        z, y, x = np.mgrid[:48, :64, :64]
        blob = ((x - 32) ** 2 + (y - 30) ** 2 + ((z - 24) * 1.3) ** 2) < 15**2
        voxels = (100 + 400 * blob + rng.normal(0, 20, blob.shape)).astype("int16")
        volume = slicer.util.addVolumeFromArray(voxels, name=name)
        volume.SetSpacing(1.5, 1.5, 2.0)
        return volume

    def test_segmentGeneratedCase(self):
        self.delayDisplay("Generating a case for the default model")
        logic = GLIMSSegmenterLogic()
        spec = logic.model(logic.defaultModelId())
        volumes = {inp.key: self._generatedVolume(f"generated {inp.key}", seed) for seed, inp in enumerate(spec.inputs)}
        self.assertEqual(logic.matchInputVolumes(spec.ref, list(volumes.values())), volumes)

        self.delayDisplay(f"Segmenting with {spec.ref}")
        segmentation = logic.segment(spec.ref, volumes, device="cpu")
        names = [
            segmentation.GetSegmentation().GetNthSegment(i).GetName()
            for i in range(segmentation.GetSegmentation().GetNumberOfSegments())
        ]
        self.assertEqual(names, [label.name for label in spec.labels])
        self.assertIs(logic.referenceVolume(segmentation), volumes[spec.inputs[0].key])

        self.delayDisplay("Exporting")
        folder = slicer.util.tempDirectory()
        for fileFormat in ("seg.nrrd", "nifti"):
            written = logic.export(
                segmentation, fileFormat, os.path.join(folder, logic.defaultExportName(segmentation, fileFormat))
            )
            self.assertTrue(all(os.path.isfile(p) for p in written))
        self.delayDisplay("Test passed")
