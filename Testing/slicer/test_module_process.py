"""The background process runner against the real ``glims`` command line: protocol lines, plain text, failures."""

from __future__ import annotations

import json

import pytest

from GLIMSSegmenterLib.engine import engineCommand, engineEnvironment, segmentArguments
from GLIMSSegmenterLib.process import EngineProcess, ProcessState


def _run(arguments, glims_home):
    logs, events = [], []
    process = EngineProcess(engineCommand(arguments), env=engineEnvironment(glimsHome=glims_home),
                            onLog=logs.append, onProgress=events.append)
    process.start()
    return process, process.wait(), logs, events


def test_an_engine_error_line_becomes_the_one_line_message(glims_home, tmp_path):
    arguments = segmentArguments("no-such-model", [tmp_path / "flair.nrrd"], tmp_path / "out.seg.nrrd")
    _, outcome, logs, events = _run(arguments, glims_home)
    assert outcome.state is ProcessState.FAILED and outcome.exitCode == 2
    assert outcome.errorMessage.startswith("unknown model 'no-such-model'; available: ")
    assert "tiny-brats" in outcome.errorMessage and "\n" not in outcome.errorMessage
    assert events == [] and not (tmp_path / "out.seg.nrrd").exists()
    assert any(line.startswith("glims: error: unknown model") for line in logs)  # stderr arrives as plain text


def test_a_usage_error_without_protocol_lines_still_gives_a_readable_message(glims_home):
    _, outcome, logs, _ = _run(["segment", "--progress", "json"], glims_home)
    assert outcome.state is ProcessState.FAILED and outcome.exitCode == 2
    assert outcome.errorMessage == "the following arguments are required: -i/--input, -o/--output"
    assert any(line.startswith("usage: glims segment") for line in logs)


def test_plain_stdout_is_delivered_as_log_text(glims_home):
    _, outcome, logs, events = _run(["models", "--json"], glims_home)
    assert outcome.state is ProcessState.SUCCEEDED and outcome.exitCode == 0 and outcome.outputs == {}
    listed = json.loads("\n".join(logs))
    assert {"tiny-brats", "tiny-btcv"} <= {m["id"] for m in listed["models"]}
    assert events == []


def test_a_process_is_started_once_and_waited_for_only_after_starting():
    process = EngineProcess(engineCommand(["--version"]))
    with pytest.raises(RuntimeError, match="not started"):
        process.wait()
    process.start()
    with pytest.raises(RuntimeError, match="only once"):
        process.start()
    assert process.wait().state is ProcessState.SUCCEEDED


def test_the_engine_is_found_through_the_module_folder_first(tmp_path):
    env = engineEnvironment({"PYTHONPATH": "/elsewhere", "CUDA_VISIBLE_DEVICES": "0"}, glimsHome=tmp_path,
                            forceCpu=True)
    from GLIMSSegmenterLib.engine import MODULE_DIR

    assert env["PYTHONPATH"].split(":") == [str(MODULE_DIR), "/elsewhere"]
    assert (MODULE_DIR / "glims" / "__main__.py").is_file()
    assert env["GLIMS_HOME"] == str(tmp_path) and env["CUDA_VISIBLE_DEVICES"] == "-1"
    arguments = segmentArguments("m@1.0.0", ["a.nrrd", "b.nrrd"], "o.seg.nrrd", device="cuda", overlap=0.25,
                                 testTimeFlips=True, wholeImage=True)
    assert arguments == ["segment", "-m", "m@1.0.0", "-i", "a.nrrd", "-i", "b.nrrd", "-o", "o.seg.nrrd",
                         "--device", "cuda", "--overlap", "0.25", "--tta", "--no-crop", "--progress", "json"]
    assert "--no-crop" not in segmentArguments("m", ["a.nrrd"], "o.seg.nrrd")
