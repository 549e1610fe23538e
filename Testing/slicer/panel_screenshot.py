"""Load the module's ``.ui`` in real Qt (PySide6, offscreen) with our stand-in widgets, and draw the panel.

Used by the tests, and run as a script to refresh the README screenshot::

    QT_QPA_PLATFORM=offscreen .venv/bin/python Testing/slicer/panel_screenshot.py docs/images/panel.png

The panel is filled the way the widget fills it (model list, input labels, device choices, a run in progress)
using the module's own presentation functions, with the real BraTS case's volume names.
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


def load_panel(ui_file: Path = UI_FILE):
    """The panel widget built by ``QUiLoader`` from the ``.ui`` with the stand-ins registered."""
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


def fill_example(panel, catalog) -> None:
    """Put the panel in the state of a BraTS run in progress, as the widget would."""
    from PySide6 import QtWidgets

    from glims.progress import ProgressEvent

    from GLIMSSegmenterLib import models, presentation
    from GLIMSSegmenterLib.devices import detectDevices
    from GLIMSSegmenterLib.job import JobState

    find = panel.findChild
    spec = next(m for m in catalog.models if m.preset == "brats")
    combo = find(QtWidgets.QComboBox, "modelComboBox")
    for model in catalog.models:
        combo.addItem(f"{model.title} ({model.id} {model.version})", model.id)
    combo.setCurrentIndex(combo.findData(spec.id))
    find(QtWidgets.QLabel, "modelInfoLabel").setText(models.modelSummary(spec))
    for slot, (inp, name) in enumerate(zip(spec.inputs, BRATS_VOLUMES), start=1):
        find(QtWidgets.QLabel, f"inputVolumeLabel{slot}").setText(presentation.inputLabel(inp.title))
        find(QtWidgets.QComboBox, f"inputVolumeSelector{slot}").addNodeName(name)
    for choice, label in presentation.deviceChoices(detectDevices()):
        find(QtWidgets.QComboBox, "deviceComboBox").addItem(label, choice)
    export = find(QtWidgets.QComboBox, "exportFormatComboBox")
    for file_format, label in presentation.EXPORT_CHOICES:
        export.addItem(label, file_format)
    find(QtWidgets.QWidget, "exportDirectoryButton").setText(str(Path.home() / "GLIMS exports"))
    find(QtWidgets.QComboBox, "resultSegmentationSelector").addNodeName("BraTS-GLI-00001-000-t2f segmentation")
    table = find(QtWidgets.QTableWidget, "modelsTableWidget")
    for model in catalog.models:
        row = table.rowCount()
        table.insertRow(row)
        for column, text in enumerate([model.id, model.version, model.preset, "built-in" if model.builtin else "added"]):
            table.setItem(row, column, QtWidgets.QTableWidgetItem(text))
    for preset in models.PRESETS:
        find(QtWidgets.QComboBox, "addModelPresetComboBox").addItem(preset)

    event = ProgressEvent("infer", 12, 26, 0.52, "window batch 12/26")
    state = presentation.panelState(JobState.RUNNING, canSegment=True)
    apply = find(QtWidgets.QPushButton, "applyButton")
    apply.setText(state.applyText)
    apply.setEnabled(state.applyEnabled)
    find(QtWidgets.QProgressBar, "progressBar").setValue(presentation.progressPercent(event))
    find(QtWidgets.QLabel, "statusLabel").setText(presentation.progressStatus(event))
    find(QtWidgets.QPlainTextEdit, "logTextEdit").setPlainText("\n".join(LOG_LINES))
    busy = ["modelComboBox", "autoFillInputsButton", "outputSegmentationSelector", "advancedCollapsibleButton",
            "modelsCollapsibleButton"] + [f"inputVolumeSelector{slot}" for slot in range(1, 5)]
    for name in busy:  # what the widget locks while a job runs
        find(QtWidgets.QWidget, name).setEnabled(not state.busy)
    for name, expanded in (("advancedCollapsibleButton", True), ("logCollapsibleButton", True),
                           ("modelsCollapsibleButton", False)):
        find(QtWidgets.QWidget, name).setProperty("collapsed", not expanded)


def render_panel(path: Path, width: int = 460) -> Path:
    """Draw the example panel to a PNG file."""
    panel = load_panel()
    fill_example(panel, example_catalog())
    panel.setFixedWidth(width)
    panel.show()  # lay out word-wrapped labels at this width
    panel.resize(width, panel.layout().totalHeightForWidth(width))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    return path


if __name__ == "__main__":
    sys.path[:0] = [str(HERE), str(REPO / "GLIMSSegmenter")]
    print(render_panel(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images" / "panel.png"))
