"""Run as a script by ``test_module_runoptions.py``: declares two more run options in ``glims.runoptions`` (nothing
else is edited), then prints as JSON what every layer made of them.

The declaration is extended before any front end is imported, as an edit of ``RUN_OPTIONS`` would be: the
command line's parser, the Slicer module's parameters (written to and read from a real MRML parameter node), the
engine arguments, the panel's rows (the real ``.ui`` in PySide6) and the web page's state and controls. Run it
with the checkout and its ``GLIMSSegmenter`` folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os

NEW_OPTIONS = {
    "sharperEdges": {"flag": "--sharper-edges", "kind": "FLAG", "default": False, "set": True},
    "edgeWeight": {"flag": "--edge-weight", "kind": "NUMBER", "default": 0.3, "set": 0.7},
}
"""The options this script declares: name -> flag, kind, default and the value it sets."""


def declare() -> None:
    """Add the new options to the end of ``glims.runoptions.RUN_OPTIONS``."""
    from glims import runoptions

    added = tuple(
        runoptions.RunOption(
            name,
            spec["flag"],
            runoptions.OptionKind[spec["kind"]],
            f"{name} (a test option)",
            default=spec["default"],
            minimum=0.0 if spec["kind"] == "NUMBER" else None,
            maximum=1.0 if spec["kind"] == "NUMBER" else None,
            step=0.1 if spec["kind"] == "NUMBER" else None,
            label=name.capitalize(),
            tooltip=f"What {name} does.",
        )
        for name, spec in NEW_OPTIONS.items()
    )
    runoptions.RUN_OPTIONS = runoptions.RUN_OPTIONS + added


def engine_report() -> dict:
    from glims.cli import build_parser

    parser = build_parser()
    given = ["--sharper-edges", "--edge-weight", "0.7"]  # as a user types them
    parsed = parser.parse_args(["segment", "-i", "a.nrrd", "-o", "o.seg.nrrd", *given])
    unset = parser.parse_args(["segment", "-i", "a.nrrd", "-o", "o.seg.nrrd"])
    return {
        "parsed": {name: getattr(parsed, spec["flag"][2:].replace("-", "_")) for name, spec in NEW_OPTIONS.items()},
        "unset": {name: getattr(unset, spec["flag"][2:].replace("-", "_")) for name, spec in NEW_OPTIONS.items()},
    }


def slicer_report() -> dict:
    import slicer

    from GLIMSSegmenterLib.engine import segmentArguments
    from GLIMSSegmenterLib.parameters import PARAMETER_TYPES, SegmentationParameters
    from GLIMSSegmenterLib.runoptions import changedOptions

    node = slicer.vtkMRMLScriptedModuleNode()
    defaults = SegmentationParameters()
    chosen = SegmentationParameters(**{name: spec["set"] for name, spec in NEW_OPTIONS.items()})
    chosen.writeToParameterNode(node)
    restored = SegmentationParameters.fromParameterNode(node)
    return {
        "types": {name: PARAMETER_TYPES.get(name) for name in NEW_OPTIONS},
        "defaults": {name: getattr(defaults, name) for name in NEW_OPTIONS},
        "stored": {name: node.GetParameter(name) for name in NEW_OPTIONS},
        "restored": {name: getattr(restored, name) for name in NEW_OPTIONS},
        "argv_changed": segmentArguments("m", ["a.nrrd"], "o.seg.nrrd", **changedOptions(restored.optionValues())),
        "argv_default": segmentArguments("m", ["a.nrrd"], "o.seg.nrrd", **changedOptions(defaults.optionValues())),
    }


def panel_report() -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    from panel_screenshot import load_panel

    panel = load_panel()
    form = panel.findChild(QtWidgets.QWidget, "advancedCollapsibleButton").layout()
    rows = []
    for row in range(form.rowCount()):
        field = form.itemAt(row, QtWidgets.QFormLayout.FieldRole)
        widget = field.widget() if field is not None else None
        if widget is not None:
            rows.append([widget.objectName(), widget.property("SlicerParameterName"), widget.toolTip()])
    return {"rows": rows}


def web_report() -> dict:
    from trame.app import get_server
    from trame.ui.html import DivLayout

    from GLIMSSegmenterWeb.page import runOptionsSection
    from GLIMSSegmenterWeb.segment_job import optionValues, setOptionDefaults

    server = get_server("new-run-option", client_type="vue3")
    setOptionDefaults(server.state, "cpu")
    defaults = optionValues(server.state)
    with DivLayout(server) as layout:
        runOptionsSection()
    return {"defaults": defaults, "html": layout.html}


def main() -> None:
    declare()
    print(json.dumps({"engine": engine_report(), "slicer": slicer_report(), "panel": panel_report(),
                      "web": web_report()}))


if __name__ == "__main__":
    main()
