"""The panel: the .ui loads in real Qt with typed widgets and resolved connections, every widget the module code
uses exists, the parameter bindings match the parameter node, and the panel can be drawn (README screenshot)."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "GLIMSSegmenter" / "GLIMSSegmenter.py"
UI_FILE = REPO / "GLIMSSegmenter" / "Resources" / "UI" / "GLIMSSegmenter.ui"
SLICER_CLASSES = {"qMRMLWidget", "qMRMLNodeComboBox", "ctkCollapsibleButton", "ctkSliderWidget", "ctkPathLineEdit",
                  "ctkDirectoryButton"}

QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed")


def _ui_widgets() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).iter("widget")}


def _names_used_by_module() -> set[str]:
    source = MODULE_FILE.read_text()
    names = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", source))
    for prefix, count in re.findall(r'getattr\(self\.ui, f"(\w+)\{slot\}"\) for slot in range\(1, (\w+) \+ 1\)',
                                    source):
        from GLIMSSegmenterLib.parameters import INPUT_SLOTS

        assert count == "INPUT_SLOTS"
        names |= {f"{prefix}{slot}" for slot in range(1, INPUT_SLOTS + 1)}
    return names


@pytest.fixture(scope="module")
def panel():
    from panel_screenshot import load_panel

    from PySide6 import QtCore

    messages = []
    previous = QtCore.qInstallMessageHandler(lambda kind, context, text: messages.append(text))
    try:
        widget = load_panel()
    finally:
        QtCore.qInstallMessageHandler(previous)
    return widget, messages


def test_ui_declares_every_slicer_class_it_uses():
    tree = ET.parse(UI_FILE)
    declared = {c.findtext("class") for c in tree.iter("customwidget")}
    used = set(_ui_widgets().values())
    assert used - declared <= {c for c in used if c.startswith("Q")}
    assert declared == SLICER_CLASSES & used | {"qMRMLWidget"}
    names = [w.get("name") for w in tree.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique (they become self.ui attributes)"


def test_ui_loads_in_qt_with_typed_widgets_and_no_warnings(panel):
    widget, messages = panel
    assert widget.metaObject().className() == "qMRMLWidget"
    assert messages == [], messages  # unknown classes, properties or unresolved <connections> would warn
    for name, cls in _ui_widgets().items():
        child = widget if name == "GLIMSSegmenter" else widget.findChild(QtWidgets.QWidget, name)
        assert child is not None and child.metaObject().className() == cls, name
    selector = widget.findChild(QtWidgets.QWidget, "outputSegmentationSelector")
    assert selector.property("nodeTypes") == ["vtkMRMLSegmentationNode"]
    assert selector.property("noneDisplay") == "Create new segmentation"


def test_every_widget_the_module_uses_exists(panel):
    widget, _ = panel
    used = _names_used_by_module()
    assert {"applyButton", "progressBar", "logTextEdit", "inputVolumeSelector4", "exportButton"} <= used
    missing = sorted(n for n in used if widget.findChild(QtWidgets.QWidget, n) is None)
    assert missing == []


def test_widgets_bound_to_parameters_are_the_parameter_nodes_fields(panel):
    from GLIMSSegmenterLib.parameters import PARAMETER_TYPES

    widget, _ = panel
    bound = {w.property("SlicerParameterName"): w.metaObject().className()
             for w in widget.findChildren(QtWidgets.QWidget) if w.property("SlicerParameterName")}
    assert set(bound) <= set(PARAMETER_TYPES)
    scalars = {"outputSegmentation", "overlap", "testTimeFlips", "wholeImage"}
    assert {f"inputVolume{i}" for i in range(1, 5)} | scalars == set(bound)
    for name, cls in bound.items():
        expected = {"vtkMRMLScalarVolumeNode": "qMRMLNodeComboBox", "vtkMRMLSegmentationNode": "qMRMLNodeComboBox",
                    "float": "ctkSliderWidget", "bool": "QCheckBox"}[PARAMETER_TYPES[name]]
        assert cls == expected, name


def test_the_parameter_node_wrapper_declares_the_same_fields_as_the_logic():
    """The wrapper class declares the model, inputs and output; ``wrapperOptionFields`` adds the run options (here
    with record types in place of Slicer's validators, which exist only in the application)."""
    import typing
    from dataclasses import dataclass

    from glims.catalog import DEFAULT_OVERLAP
    from GLIMSSegmenterLib.parameters import PARAMETER_TYPES
    from GLIMSSegmenterLib.runoptions import wrapperOptionFields

    tree = ast.parse(MODULE_FILE.read_text())
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GLIMSSegmenterParameterNode")
    assert [ast.unparse(d) for d in wrapper.decorator_list] == [
        "parameterNodeWrapper", "wrapperOptionFields(Choice, WithinRange)"]
    fields = {statement.target.id: ast.unparse(statement.annotation)
              for statement in wrapper.body if isinstance(statement, ast.AnnAssign)}

    @dataclass(frozen=True)
    class Choice:
        choices: list

    @dataclass(frozen=True)
    class WithinRange:
        minimum: float
        maximum: float

    options = wrapperOptionFields(Choice, WithinRange)(type("Options", (), {"__annotations__": {}}))
    for name, annotation in options.__annotations__.items():
        fields[name] = (typing.get_args(annotation) or (annotation,))[0].__name__
    assert fields == PARAMETER_TYPES
    assert typing.get_args(options.__annotations__["overlap"])[1:] == (WithinRange(0.0, 0.9),)
    assert typing.get_args(options.__annotations__["device"])[1:] == (Choice(["auto", "cpu", "cuda", "mps"]),)
    assert (options.device, options.overlap, options.testTimeFlips, options.wholeImage) == (
        "auto", DEFAULT_OVERLAP, False, False)


@pytest.mark.parametrize("state", ["segmenting", "finetuned"])
def test_panel_screenshot_is_drawn(tmp_path, state):
    from PySide6 import QtGui

    from panel_screenshot import render_panel

    path = render_panel(tmp_path / "panel.png", state=state)
    image = QtGui.QImage(str(path))
    assert image.width() == 460 and image.height() > 600
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 20  # text, widgets and the progress bar, not a blank image


def test_the_model_summary_is_short_and_leaves_the_model_choice_whole():
    """With the bundled model (long title, description and licence) the summary under the model choice stays a
    few lines at the documentation's panel width, and the model choice shows its whole text."""
    from PySide6 import QtCore

    from panel_screenshot import example_catalog, fill_example, load_panel

    width = 460
    panel = load_panel()
    catalog = example_catalog()
    fill_example(panel, catalog)
    panel.setFixedWidth(width)
    panel.show()
    panel.resize(width, panel.layout().totalHeightForWidth(width))
    QtWidgets.QApplication.processEvents()
    label = panel.findChild(QtWidgets.QLabel, "modelInfoLabel")
    combo = panel.findChild(QtWidgets.QComboBox, "modelComboBox")
    spec = catalog.get(combo.currentData())
    assert label.textFormat() == QtCore.Qt.RichText and label.openExternalLinks()
    assert label.text().count("<br>") == 2 and spec.license in label.toolTip()
    assert label.height() <= 4 * label.fontMetrics().lineSpacing() + 4  # the title may wrap once at this width
    assert combo.currentText() == f"{spec.id} {spec.version}"
    assert combo.fontMetrics().horizontalAdvance(combo.currentText()) < combo.width() - 30  # room for the arrow
    assert combo.itemData(combo.currentIndex(), QtCore.Qt.ToolTipRole) == spec.title
    formWidth = panel.findChild(QtWidgets.QWidget, "inputVolumeSelector1").width()
    assert combo.width() == formWidth  # as wide as the other selectors of the form: not squeezed by the label
