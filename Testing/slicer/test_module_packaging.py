"""Packaging: Slicer ships only what GLIMSSegmenter/CMakeLists.txt lists, so every file of the module folder (the
module, its Lib, its resources and the whole engine package) must be listed, explicitly or by the engine's
patterns, and every listed file must exist."""

from __future__ import annotations

import fnmatch
import re
import struct
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "GLIMSSegmenter"
CMAKE = MODULE_DIR / "CMakeLists.txt"
NOT_PACKAGED = ("__pycache__", ".pyc", ".egg-info", "CMakeLists.txt")  # build by-products, the build file itself


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """CMake commands as (name, arguments), comments removed."""
    text = re.sub(r"#[^\n]*", "", text)
    return [(name.lower(), args.split()) for name, args in re.findall(r"(\w+)\s*\(([^)]*)\)", text)]


def _expand_glob(pattern: str) -> set[str]:
    """CMake ``file(GLOB_RECURSE ... RELATIVE <module dir> pattern)``: the pattern's file name matched in its
    folder and every folder below."""
    folder, _, name = pattern.rpartition("/")
    root = MODULE_DIR / folder
    return {str(p.relative_to(MODULE_DIR)) for p in root.rglob("*") if p.is_file() and fnmatch.fnmatch(p.name, name)}


def listed_files() -> dict[str, list[str]]:
    """Variable -> files, as CMake would compute them."""
    variables: dict[str, list[str]] = {}
    for name, args in _commands(CMAKE.read_text()):
        if name == "set":
            variables[args[0]] = args[1:]
        elif name == "file" and args[0] == "GLOB_RECURSE":
            patterns = [a for a in args[2:] if a not in ("RELATIVE", "${CMAKE_CURRENT_SOURCE_DIR}", "CONFIGURE_DEPENDS")]
            variables[args[1]] = sorted(set().union(*(_expand_glob(p) for p in patterns)))
        elif name == "list" and args[0] == "APPEND":
            for value in args[2:]:
                variables[args[1]] += variables[value[2:-1]] if value.startswith("${") else [value]
    module_name = variables["MODULE_NAME"][0]
    return {key: [v.replace("${MODULE_NAME}", module_name) for v in values] for key, values in variables.items()}


def module_folder_files() -> set[str]:
    files = set()
    for path in MODULE_DIR.rglob("*"):
        relative = str(path.relative_to(MODULE_DIR))
        if path.is_file() and not any(part in relative for part in NOT_PACKAGED) and ".pytest_cache" not in relative:
            files.add(relative)
    return files


def test_every_file_of_the_module_folder_is_packaged_once():
    variables = listed_files()
    scripts, resources = variables["MODULE_PYTHON_SCRIPTS"], variables["MODULE_PYTHON_RESOURCES"]
    listed = scripts + resources
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert sorted(module_folder_files() - set(listed)) == [], "files Slicer would not package"
    assert sorted(set(listed) - module_folder_files()) == [], "listed files that do not exist"
    assert all(f.endswith(".py") for f in scripts) and not any(f.endswith(".py") for f in resources)


def test_the_engine_package_ships_whole_with_its_resources():
    listed = set(sum(listed_files().values(), []))
    engine = {f for f in module_folder_files() if f.startswith("glims/")}
    assert {"glims/__main__.py", "glims/cli.py", "glims/progress.py", "glims/resources/models.json",
            "glims/resources/presets.json", "glims/resources/models.schema.json"} <= engine
    assert engine <= listed
    build = next(args for name, args in _commands(CMAKE.read_text()) if name == "slicermacrobuildscriptedmodule")
    assert build[build.index("SCRIPTS") + 1] == "${MODULE_PYTHON_SCRIPTS}"
    assert build[build.index("RESOURCES") + 1] == "${MODULE_PYTHON_RESOURCES}"
    assert "WITH_GENERIC_TESTS" in build


def test_the_icon_is_a_128_pixel_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "GLIMSSegmenter.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 128)
