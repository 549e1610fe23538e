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


def test_nothing_is_missing_in_this_environment():
    assert deps.missingRequirements() == []


def test_missing_and_too_old_packages_are_reported_and_described():
    installed = {"torch": "2.1.0+cu121", "monai": None, "numpy": "2.4.6", "SimpleITK": "2.5.7",
                 "safetensors": "0.4.0", "jsonschema": "4.26.0", "nibabel": "5.4.2", "psutil": "7.2.2"}
    missing = deps.missingRequirements(versionOf=installed.get)
    assert [s.requirement.name for s in missing] == ["torch", "monai"]
    assert missing[0].describe() == "torch >= 2.4 (2.1.0+cu121 installed; from the PyTorch extension)"
    assert missing[1].describe() == "monai >= 1.3 (not installed; from pip)"
    prompt = deps.installPrompt(missing)
    assert "monai >= 1.3 (not installed; from pip)" in prompt and prompt.rstrip().endswith("restart afterwards.")


@pytest.mark.parametrize(("version", "minimum", "ok"), [
    ("2.4.0+cu121", "2.4", True), ("1.10", "1.9", True), ("1.9.9", "1.10", False), ("2.13.0", "2.4", True),
    ("0.4", "0.4.0", True), ("5.9rc1", "5.9", False), ("4.0.0.dev1", "4.0.1", False)])
def test_version_comparison(version, minimum, ok):
    assert deps.versionAtLeast(version, minimum) is ok


def test_install_routes_torch_to_pytorch_utils_and_the_rest_to_pip():
    missing = deps.missingRequirements(versionOf={"torch": None, "monai": "1.2", "numpy": "2.0", "SimpleITK": "2.5",
                                                  "safetensors": None, "jsonschema": "4.1", "nibabel": "5.0",
                                                  "psutil": "6.0"}.get)
    torch_calls, pip_calls = [], []
    deps.installRequirements(missing, pipInstall=pip_calls.append, installTorch=torch_calls.append)
    assert torch_calls == [">=2.4"]
    assert pip_calls == [["monai>=1.3", "safetensors>=0.4"]]


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
