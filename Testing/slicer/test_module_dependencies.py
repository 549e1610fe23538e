"""Python dependencies inside Slicer: minimum versions (never pins), what is missing, how each is installed, and
nothing heavy imported or installed at import time."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from GLIMSSegmenterLib import dependencies as deps

REPO = Path(__file__).resolve().parents[2]


def _pyproject_minimums() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    minimums = {}
    for requirement in project["dependencies"]:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement).groups()
        minimums[name.lower()] = version
    return minimums


def test_requirements_are_the_engines_minimums_plus_the_modules_own():
    ours = {r.name.lower(): r.minimumVersion for r in deps.REQUIREMENTS}
    assert {k: v for k, v in ours.items() if k != "psutil"} == _pyproject_minimums()
    assert all(">=" in r.specifier and "==" not in r.specifier for r in deps.REQUIREMENTS)
    sources = {r.name: r.source for r in deps.REQUIREMENTS}
    assert sources["torch"] is deps.Source.PYTORCH_EXTENSION
    assert sources["numpy"] is sources["SimpleITK"] is deps.Source.SLICER


def test_dicom_requirements_are_the_engines_dicom_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", r).groups()
                 for r in project["optional-dependencies"]["dicom"])
    assert {r.name: r.minimumVersion for r in deps.DICOM_REQUIREMENTS} == extra
    assert deps.missingRequirements(deps.DICOM_REQUIREMENTS) == []


def test_nothing_is_missing_in_this_environment():
    assert deps.missingRequirements() == []


def test_missing_and_too_old_packages_are_reported_and_described():
    installed = {"torch": "2.1.0+cu121", "numpy": "2.4.6", "SimpleITK": "2.5.7",
                 "safetensors": None, "jsonschema": "4.26.0", "psutil": "7.2.2", "filelock": "3.12.0",
                 "nibabel": "5.4.2"}
    missing = deps.missingRequirements(versionOf=installed.get)
    assert [s.requirement.name for s in missing] == ["torch", "safetensors"]
    assert missing[0].describe() == "torch >= 2.4 (2.1.0+cu121 installed; from the PyTorch extension)"
    assert missing[1].describe() == "safetensors >= 0.4 (not installed; from pip)"
    prompt = deps.installPrompt(missing)
    assert "safetensors >= 0.4 (not installed; from pip)" in prompt and prompt.rstrip().endswith("restart afterwards.")


@pytest.mark.parametrize(("version", "minimum", "ok"), [
    ("2.4.0+cu121", "2.4", True), ("1.10", "1.9", True), ("1.9.9", "1.10", False), ("2.13.0", "2.4", True),
    ("0.4", "0.4.0", True), ("5.9rc1", "5.9", False), ("4.0.0.dev1", "4.0.1", False)])
def test_version_comparison(version, minimum, ok):
    assert deps.versionAtLeast(version, minimum) is ok


def test_install_routes_torch_to_pytorch_utils_and_the_rest_to_pip():
    missing = deps.missingRequirements(versionOf={"torch": None, "numpy": "2.0", "SimpleITK": "2.5",
                                                  "safetensors": None, "jsonschema": "3.2", "psutil": "6.0",
                                                  "filelock": "3.20.0", "nibabel": "5.0"}.get)
    torch_calls, pip_calls = [], []
    deps.installRequirements(missing, pipInstall=pip_calls.append, installTorch=torch_calls.append)
    assert torch_calls == [">=2.4"]
    assert pip_calls == [["safetensors>=0.4", "jsonschema>=4.0"]]


def test_what_cannot_be_installed_from_here_is_explained():
    old_slicer = deps.missingRequirements(versionOf=lambda name: "1.0")
    with pytest.raises(deps.DependencyError, match="numpy >= 1.24.*please use a newer 3D Slicer"):
        deps.installRequirements(old_slicer, pipInstall=list, installTorch=list)
    no_torch = [s for s in deps.missingRequirements(versionOf=lambda n: None) if s.requirement.name == "torch"]
    with pytest.raises(deps.DependencyError, match="install 'PyTorch' from the Extensions Manager"):
        deps.installRequirements(no_torch, pipInstall=list)  # no PyTorch extension outside Slicer


def test_importing_the_module_code_imports_no_heavy_package(headless):
    script = (
        "import sys; sys.path[:0] = [{testing!r}, {module!r}]\n"
        "from headless_slicer import HeadlessSlicer; HeadlessSlicer().install()\n"
        "import GLIMSSegmenterLib.logic, GLIMSSegmenterLib.dependencies, GLIMSSegmenterLib.devices\n"
        "import GLIMSSegmenterLib.presentation, GLIMSSegmenterLib.models\n"
        "print(sorted(m for m in ('torch', 'monai', 'SimpleITK', 'jsonschema', 'safetensors', 'psutil')"
        " if m in sys.modules))\n"
    ).format(testing=str(Path(__file__).parent), module=str(REPO / "GLIMSSegmenter"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_devices_always_include_the_cpu():
    from GLIMSSegmenterLib.devices import detectDevices

    devices = detectDevices()
    assert devices["cpu"].startswith("CPU (") and set(devices) <= {"cpu", "cuda", "mps"}
    import torch

    assert ("cuda" in devices) == torch.cuda.is_available()
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in devices["cuda"]


def test_setting_up_the_panel_and_detecting_devices_leaves_torch_out_of_slicers_process(headless, glims_home):
    """What the panel does when it is opened (logic, fine-tuning, catalog, training set, parameter node, device
    probe), in a fresh process standing in for Slicer's: torch is only imported by the probe's own process."""
    script = (
        "import sys; sys.path[:0] = [{testing!r}, {module!r}]\n"
        "from headless_slicer import HeadlessSlicer; HeadlessSlicer().install()\n"
        "from GLIMSSegmenterLib import devices, models, presentation\n"
        "from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic\n"
        "from GLIMSSegmenterLib.finetuning import FineTuningLogic\n"
        "logic = GLIMSSegmenterLogic(glimsHome={home!r}); fineTuning = FineTuningLogic(logic)\n"
        "logic.setDefaultParameters(logic.getParameterNode())\n"
        "for spec in logic.catalog(reload=True).models:\n"
        "    models.modelSummary(spec); models.modelDetails(spec); fineTuning.defaultModelName(spec.ref)\n"
        "    fineTuning.fineTuneProblem(spec.ref, fineTuning.trainingCases())\n"
        "logic.matchInputVolumes(logic.defaultModelId())\n"
        "probe = devices.DeviceProbe(); found = probe.wait()\n"
        "print(presentation.deviceChoices(found)[0][1])\n"
        "print('torch' in sys.modules, sorted(found))\n"
    ).format(testing=str(Path(__file__).parent), module=str(REPO / "GLIMSSegmenter"), home=str(glims_home))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    automatic, modules = result.stdout.strip().splitlines()[-2:]
    import torch

    assert modules == f"False {sorted(['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])}"
    assert automatic.startswith("Automatic (GPU: ") == torch.cuda.is_available()


def test_a_device_probe_that_cannot_run_torch_offers_the_cpu(tmp_path, caplog):
    from GLIMSSegmenterLib.devices import DeviceProbe

    broken = tmp_path / "torch"  # a package named torch that fails on import, first on the probe's path
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('this torch is broken')\n")
    probe = DeviceProbe(env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert set(probe.wait()) == {"cpu"}
    assert "this torch is broken" in caplog.text
