"""Load the module's ``.ui`` in real Qt (PySide6, offscreen) with our stand-in widgets, and draw the panel.

Used by the tests, and run as a script to refresh the documentation's screenshots::

    QT_QPA_PLATFORM=offscreen .venv/bin/python Testing/slicer/panel_screenshot.py docs/images/panel.png
    QT_QPA_PLATFORM=offscreen .venv/bin/python Testing/slicer/panel_screenshot.py docs/images/panel_finetune.png finetuned

The panel is filled the way the widget fills it (model list, input labels, device choices, training set) using
the module's own presentation functions, with the real BraTS cases' volume names, in one of two states:
``segmenting`` (a segmentation in progress; fine-tuning waits for it) or ``finetuned`` (a fine-tuning has just
registered a new model; its Dice values are illustrative, not measured).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
UI_FILE = REPO / "GLIMSSegmenter" / "Resources" / "UI" / "GLIMSSegmenter.ui"
BRATS_VOLUMES = ("BraTS-GLI-00001-000-t2f", "BraTS-GLI-00001-000-t1c", "BraTS-GLI-00001-000-t1n",
                 "BraTS-GLI-00001-000-t2w")
TRAINING_CASES = (  # (case id, first draft by the example model): the real shared cases, as the panel lists them
    ("BraTS-GLI-00001-000-t2f-20261129T101502", True),
    ("TCGA-FG-6692_fla_sri24_bet-20261129T102233", True),
    ("TCGA-DU-7294_fla_sri24_bet-20261129T103010", False),
)
EXAMPLE_DICE = (  # illustrative before/after validation Dice of the "finetuned" state (not a measurement)
    {"TC": 0.412, "WT": 0.655, "ET": 0.388, "mean": 0.485},
    {"TC": 0.603, "WT": 0.781, "ET": 0.559, "mean": 0.648},
)
LOG_LINES = (
    "input flair  <- volume 'BraTS-GLI-00001-000-t2f'",
    "input t1ce   <- volume 'BraTS-GLI-00001-000-t1c'",
    "input t1     <- volume 'BraTS-GLI-00001-000-t1n'",
    "input t2     <- volume 'BraTS-GLI-00001-000-t2w'",
)

_registered = False


def application():
    """The QApplication (offscreen unless a platform is set)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def create_widget(class_name: str):
    """A new widget of a Qt class, or the stand-in of a CTK or qMRML class (the module creates them with ``qt`` and
    ``ctk``)."""
    from PySide6 import QtWidgets

    from qt_standins import STANDINS

    standins = {widget_class.__name__: widget_class for widget_class in STANDINS}
    return standins[class_name]() if class_name in standins else getattr(QtWidgets, class_name)()


def load_panel(ui_file: Path = UI_FILE, options=None):
    """The panel widget built by ``QUiLoader`` from the ``.ui`` with the stand-ins registered, with the rows of the
    run options (default: ``GLIMSSegmenterLib.runoptions.PANEL_OPTIONS``) added as the module's widget adds them."""
    global _registered
    application()
    from PySide6 import QtCore, QtUiTools

    from qt_standins import STANDINS

    loader = QtUiTools.QUiLoader()
    if not _registered:  # registration is process-wide in PySide6
        for widget_class in STANDINS:
            loader.registerCustomWidget(widget_class)
        _registered = True
    handle = QtCore.QFile(str(ui_file))
    handle.open(QtCore.QFile.ReadOnly)
    try:
        panel = loader.load(handle)
    finally:
        handle.close()
    if panel is None:
        raise RuntimeError(f"QUiLoader could not load {ui_file}: {loader.errorString()}")
    from PySide6 import QtWidgets

    from GLIMSSegmenterLib.runoptions import PANEL_OPTIONS, addOptionRows

    section = panel.findChild(QtWidgets.QWidget, "advancedCollapsibleButton")
    addOptionRows(section.layout(), create_widget, PANEL_OPTIONS if options is None else options)
    return panel


def example_catalog():
    """The real catalog; when it has no BraTS model yet, a temporary example model (tiny, random) stands in."""
    from glims.catalog import load_catalog

    catalog = load_catalog()
    if any(m.preset == "brats" for m in catalog.models):
        return catalog
    sys.path.insert(0, str(HERE.parent))
    from tiny_models import register_tiny_model

    home = Path(tempfile.mkdtemp(prefix="glims-screenshot-"))
    register_tiny_model(home, "brats", model_id="glims-brats-example")
    return load_catalog(home)


def _fill_table(table, rows) -> None:
    from PySide6 import QtWidgets

    for cells in rows:
        row = table.rowCount()
        table.insertRow(row)
        for column, text in enumerate(cells):
            table.setItem(row, column, QtWidgets.QTableWidgetItem(text))
    table.resizeColumnsToContents()


def _fill_fine_tuning(panel, spec, state: str) -> None:
    """The Fine-tune section: the training set, the base model, and either waiting for the running segmentation
    (``segmenting``) or the result of a finished fine-tuning (``finetuned``)."""
    from PySide6 import QtWidgets

    from glims.casestore import StoredCase

    from GLIMSSegmenterLib import presentation
    from GLIMSSegmenterLib.job import JobState

    find = panel.findChild
    cases = [StoredCase(case_id, Path(case_id), "brats", {}, Path("label.nii.gz"),
                        {"added": f"2026-11-29T10:{15 + 7 * n:02d}:02+00:00",
                         "draft_model": spec.ref if drafted else None})
             for n, (case_id, drafted) in enumerate(TRAINING_CASES)]
    table = find(QtWidgets.QTableWidget, "trainingCasesTableWidget")
    _fill_table(table, [presentation.trainingCaseRow(case) for case in cases])
    header = table.horizontalHeader()  # as the widget sets it up
    header.setSectionResizeMode(0, QtWidgets.QHeaderView.Stretch)
    for column in (1, 2):
        header.setSectionResizeMode(column, QtWidgets.QHeaderView.ResizeToContents)
    find(QtWidgets.QLabel, "fineTuneBaseValueLabel").setText(f"{spec.title} ({spec.ref})")
    name = find(QtWidgets.QLineEdit, "fineTuneNameLineEdit")
    name.setPlaceholderText(f"{spec.id}-finetuned")
    for unit, label in presentation.BUDGET_UNITS:
        find(QtWidgets.QComboBox, "fineTuneBudgetUnitComboBox").addItem(label, unit)
    newModel = f"{spec.id}-site"
    if state == "finetuned":
        name.setText(newModel)
        fine = presentation.fineTuneState(JobState.SUCCEEDED, modelRef=f"{newModel}@1.0.0")
        find(QtWidgets.QLabel, "fineTuneResultLabel").setText(
            presentation.diceComparison(*EXAMPLE_DICE, validationCases=1))
        find(QtWidgets.QPushButton, "useFineTunedModelButton").setText(f"Use {newModel}@1.0.0 for segmentation")
    else:
        fine = presentation.fineTuneState(
            None, problem="a segmentation is running: wait for it to finish or cancel it")
    for name in ("fineTuneResultLabel", "useFineTunedModelButton"):
        find(QtWidgets.QWidget, name).setVisible(state == "finetuned")
    button = find(QtWidgets.QPushButton, "fineTuneButton")
    button.setText(fine.applyText)
    button.setEnabled(fine.applyEnabled)
    find(QtWidgets.QWidget, "fineTuneProgressBar").setVisible(fine.busy)
    find(QtWidgets.QLabel, "fineTuneStatusLabel").setText(fine.status)


def fill_example(panel, catalog, state: str = "segmenting") -> None:
    """Put the panel in an example state (see the module docstring), as the widget would."""
    from PySide6 import QtCore, QtWidgets

    from glims.progress import ProgressEvent

    from GLIMSSegmenterLib import models, naming, presentation
    from GLIMSSegmenterLib.devices import detectDevices
    from GLIMSSegmenterLib.job import JobState

    find = panel.findChild
    spec = next(m for m in catalog.models if m.preset == "brats")
    combo = find(QtWidgets.QComboBox, "modelComboBox")
    for model in catalog.models:
        combo.addItem(models.modelChoiceText(model), model.id)
        combo.setItemData(combo.count() - 1, model.title, QtCore.Qt.ToolTipRole)
    combo.setCurrentIndex(combo.findData(spec.id))
    find(QtWidgets.QLabel, "modelInfoLabel").setText(models.modelSummary(spec))
    find(QtWidgets.QLabel, "modelInfoLabel").setToolTip(models.modelDetails(spec))
    for slot, (inp, name) in enumerate(zip(spec.inputs, BRATS_VOLUMES), start=1):
        find(QtWidgets.QLabel, f"inputVolumeLabel{slot}").setText(presentation.inputLabel(inp.title))
        find(QtWidgets.QComboBox, f"inputVolumeSelector{slot}").addNodeName(name)
    for choice, label in presentation.deviceChoices(detectDevices()):
        find(QtWidgets.QComboBox, "deviceComboBox").addItem(label, choice)
    export = find(QtWidgets.QComboBox, "exportFormatComboBox")
    for file_format, label in presentation.EXPORT_CHOICES:
        export.addItem(label, file_format)
    find(QtWidgets.QWidget, "exportDirectoryButton").setText(str(Path.home() / "GLIMS exports"))
    find(QtWidgets.QComboBox, "resultSegmentationSelector").addNodeName(
        naming.resultName(BRATS_VOLUMES, spec.id, spec.version))
    _fill_table(find(QtWidgets.QTableWidget, "modelsTableWidget"),
                [[m.id, m.version, m.preset, "built-in" if m.builtin else "added"] for m in catalog.models])
    for preset in models.PRESETS:
        find(QtWidgets.QComboBox, "addModelPresetComboBox").addItem(preset)

    event = ProgressEvent("infer", 4, 8, 0.52, "window batch 4/8")  # the bundled model: 60 windows on this case
    segmenting = state == "segmenting"
    panel_state = presentation.panelState(JobState.RUNNING if segmenting else JobState.SUCCEEDED, canSegment=True)
    apply = find(QtWidgets.QPushButton, "applyButton")
    apply.setText(panel_state.applyText)
    apply.setEnabled(panel_state.applyEnabled)
    find(QtWidgets.QProgressBar, "progressBar").setValue(presentation.progressPercent(event))
    find(QtWidgets.QProgressBar, "progressBar").setVisible(panel_state.busy)
    find(QtWidgets.QLabel, "statusLabel").setText(presentation.progressStatus(event) if segmenting
                                                  else panel_state.status)
    find(QtWidgets.QPlainTextEdit, "logTextEdit").setPlainText("\n".join(LOG_LINES))
    busy = ["modelComboBox", "autoFillInputsButton", "outputSegmentationSelector", "advancedCollapsibleButton",
            "modelsCollapsibleButton"] + [f"inputVolumeSelector{slot}" for slot in range(1, 5)]
    for name in busy:  # what the widget locks while a job runs
        find(QtWidgets.QWidget, name).setEnabled(not panel_state.busy)
    _fill_fine_tuning(panel, spec, state)
    for name, expanded in (("advancedCollapsibleButton", segmenting), ("logCollapsibleButton", segmenting),
                           ("fineTuneCollapsibleButton", True), ("modelsCollapsibleButton", False)):
        find(QtWidgets.QWidget, name).setProperty("collapsed", not expanded)


def render_panel(path: Path, width: int = 460, state: str = "segmenting") -> Path:
    """Draw the example panel in ``state`` (``segmenting`` or ``finetuned``) to a PNG file."""
    panel = load_panel()
    fill_example(panel, example_catalog(), state)
    panel.setFixedWidth(width)
    panel.show()  # lay out word-wrapped labels at this width
    panel.resize(width, panel.layout().totalHeightForWidth(width))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    return path


if __name__ == "__main__":
    sys.path[:0] = [str(HERE), str(REPO / "GLIMSSegmenter")]
    print(render_panel(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images" / "panel.png",
                       state=sys.argv[2] if len(sys.argv) > 2 else "segmenting"))
