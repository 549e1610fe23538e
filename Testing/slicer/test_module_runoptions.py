"""The run options are declared once (``glims.runoptions.RUN_OPTIONS``) and every layer follows: a new option
appears on the command line, in the parameter node, in the engine arguments, in the panel and on the web page;
options left at the model's own value are not sent; the front ends' arguments mean to the engine what they say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glims.runoptions import RUN_OPTIONS, OptionKind, RunOption, given_arguments, run_option
from GLIMSSegmenterLib.engine import segmentArguments
from GLIMSSegmenterLib.parameters import PARAMETER_TYPES, SegmentationParameters
from GLIMSSegmenterLib.runoptions import PANEL_OPTIONS, changedOptions, modelValues, widgetName

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def new_options_report() -> dict:
    """What each layer made of two options added to the declaration only (``new_run_option.py``)."""
    repo = HERE.parents[1]
    paths = [str(repo), str(repo / "GLIMSSegmenter"), os.environ.get("PYTHONPATH", "")]
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    result = subprocess.run([sys.executable, str(HERE / "new_run_option.py")], capture_output=True, text=True,
                            env=environment, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_a_new_option_reaches_the_command_line_and_the_parameter_node(new_options_report):
    engine, slicer_side = new_options_report["engine"], new_options_report["slicer"]
    assert engine["parsed"] == {"sharperEdges": True, "edgeWeight": 0.7}
    assert engine["unset"] == {"sharperEdges": False, "edgeWeight": None}  # not given: the engine's own
    assert slicer_side["types"] == {"sharperEdges": "bool", "edgeWeight": "float"}
    assert slicer_side["defaults"] == {"sharperEdges": False, "edgeWeight": 0.3}
    assert slicer_side["stored"] == {"sharperEdges": "True", "edgeWeight": "0.7"}  # as the wrapper stores them
    assert slicer_side["restored"] == {"sharperEdges": True, "edgeWeight": 0.7}


def test_a_new_option_is_sent_when_changed_and_not_at_its_default(new_options_report):
    slicer_side = new_options_report["slicer"]
    assert slicer_side["argv_changed"][-5:] == ["--sharper-edges", "--edge-weight", "0.7", "--progress", "json"]
    assert slicer_side["argv_default"] == ["segment", "-m", "m", "-i", "a.nrrd", "-o", "o.seg.nrrd",
                                           "--progress", "json"]


def test_a_new_option_gets_a_bound_row_in_the_panel_and_a_control_on_the_web_page(new_options_report):
    rows = new_options_report["panel"]["rows"]
    names = [name for name, _, _ in rows]
    assert names == ["deviceComboBox", "overlapSliderWidget", "testTimeFlipsCheckBox", "wholeImageCheckBox",
                     "sharperEdgesCheckBox", "edgeWeightSliderWidget", "keepTemporaryFilesCheckBox",
                     "checkDependenciesButton"]  # the declaration's order, above the section's own rows
    assert ["sharperEdgesCheckBox", "sharperEdges", "What sharperEdges does."] in rows
    assert ["edgeWeightSliderWidget", "edgeWeight", "What edgeWeight does."] in rows
    web = new_options_report["web"]
    assert web["defaults"] == {"device": "cpu", "overlap": 0.5, "testTimeFlips": False, "wholeImage": False,
                               "sharperEdges": False, "edgeWeight": 0.3}
    for name in ("device", "overlap", "testTimeFlips", "wholeImage", "sharperEdges", "edgeWeight"):
        assert f'id="glims-option-{name}"' in web["html"] and f'v-model="seg_{name}"' in web["html"]
    assert 'title="What edgeWeight does."' in web["html"]


def test_the_panel_keeps_the_names_scenes_were_saved_with():
    """Parameter names are stored in scenes; widget names are what the module code and .ui connections use."""
    assert [o.name for o in PANEL_OPTIONS] == ["device", "overlap", "testTimeFlips", "wholeImage"]
    assert {name: PARAMETER_TYPES[name] for name in ("device", "overlap", "testTimeFlips", "wholeImage")} == {
        "device": "str", "overlap": "float", "testTimeFlips": "bool", "wholeImage": "bool"}
    assert [widgetName(o) for o in PANEL_OPTIONS] == ["deviceComboBox", "overlapSliderWidget",
                                                     "testTimeFlipsCheckBox", "wholeImageCheckBox"]


def test_every_option_built_by_a_front_end_reads_back_the_same_in_the_engine():
    """The arguments the front ends build, parsed by ``glims segment``'s own parser, give the values back."""
    from glims.cli import build_parser

    values = {"device": "cuda:1", "overlap": 0.25, "blend": "constant", "placement": "even", "swBatchSize": 3,
              "precision": "bf16",
              "threads": 1, "testTimeFlips": True, "noPostprocess": True, "wholeImage": True, "thresholds": {"ET": 0.5, "TC": 0.45}}
    assert set(values) == {o.name for o in RUN_OPTIONS}
    parsed = build_parser().parse_args(["segment", "-i", "a.nrrd", "-o", "o.seg.nrrd", *given_arguments(values)])
    back = {o.name: getattr(parsed, o.dest) for o in RUN_OPTIONS}
    assert back == {**values, "thresholds": ["ET=0.5", "TC=0.45"]}
    unset = build_parser().parse_args(["segment", "-i", "a.nrrd", "-o", "o.seg.nrrd"])
    assert {o.name: getattr(unset, o.dest) for o in RUN_OPTIONS} == {
        "device": None, "overlap": None, "blend": None, "placement": None, "swBatchSize": None, "precision": None, "threads": None,
        "testTimeFlips": False, "noPostprocess": False, "wholeImage": False, "thresholds": []}


def test_options_at_the_models_own_values_send_nothing(logic):
    """The panel's values start at the model's own (its catalog entry's overlap) and defaults: nothing is sent,
    so the engine applies the catalog; a changed value is sent as chosen."""
    spec = logic.model("tiny-brats")
    shown = SegmentationParameters(modelId=spec.ref, **modelValues(spec))
    assert shown.overlap == spec.overlap
    assert changedOptions(shown.optionValues(), spec) == {}
    arguments = segmentArguments(spec.ref, ["a.nrrd"], "o.seg.nrrd", **changedOptions(shown.optionValues(), spec))
    assert not {o.flag for o in RUN_OPTIONS} & set(arguments)
    shown.device, shown.wholeImage = "cpu", True
    assert changedOptions(shown.optionValues(), spec) == {"device": "cpu", "wholeImage": True}


def test_unknown_options_and_incomplete_declarations_are_refused(logic):
    with pytest.raises(KeyError, match="fastMode"):
        segmentArguments("m", ["a.nrrd"], "o.seg.nrrd", fastMode=True)
    with pytest.raises(KeyError, match="fastMode"):
        logic.startSegmentation("tiny-brats", {}, fastMode=True)  # before any input is looked at
    with pytest.raises(KeyError, match="known: device"):
        run_option("fastMode")
    with pytest.raises(ValueError, match="label and a tooltip"):
        RunOption("fast", "--fast", OptionKind.FLAG, "faster", default=False)
    with pytest.raises(ValueError, match="command line only"):
        RunOption("t", "--t", OptionKind.THRESHOLDS, "thresholds", label="T", tooltip="t", default={})
    with pytest.raises(ValueError, match="minimum and maximum"):
        RunOption("w", "--w", OptionKind.NUMBER, "weight", default=0.5, label="W", tooltip="w")
    assert run_option("wholeImage").flag == "--no-crop"


def test_a_value_of_the_wrong_shape_is_refused():
    """Channel -> probability goes only to the thresholds, a single value only to the other options."""
    with pytest.raises(TypeError, match="overlap"):
        given_arguments({"overlap": {"ET": 0.5}})
    with pytest.raises(TypeError, match="thresholds"):
        given_arguments({"thresholds": 0.5})
    assert given_arguments({"thresholds": {}, "overlap": 0.5}) == ["--overlap", "0.5"]
