"""The extension's three descriptions (top CMakeLists.txt, .s4ext, Extensions Index JSON) agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cmake_settings() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text()
    return dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))


def s4ext_settings() -> dict[str, str]:
    out = {}
    for line in (REPO / "GLIMSSegmenter.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def test_project_name_is_the_extension_name():
    project = re.search(r"project\((\w+)\)", (REPO / "CMakeLists.txt").read_text()).group(1)
    assert project == "GLIMSSegmenter"
    assert (REPO / f"{project}.s4ext").is_file() and (REPO / f"{project}.json").is_file()
    assert "add_subdirectory(GLIMSSegmenter)" in (REPO / "CMakeLists.txt").read_text()


def test_cmake_s4ext_and_index_json_agree():
    cmake, s4ext = cmake_settings(), s4ext_settings()
    index = json.loads((REPO / "GLIMSSegmenter.json").read_text())
    assert cmake["EXTENSION_CATEGORY"] == s4ext["category"] == index["category"] == "Segmentation"
    assert cmake["EXTENSION_DEPENDS"].split() == s4ext["depends"].split() == index["build_dependencies"] == ["PyTorch"]
    assert cmake["EXTENSION_HOMEPAGE"] == s4ext["homepage"]
    assert cmake["EXTENSION_DESCRIPTION"] == s4ext["description"]
    assert cmake["EXTENSION_ICONURL"] == s4ext["iconurl"]
    assert cmake["EXTENSION_SCREENSHOTURLS"] == s4ext["screenshoturls"]
    assert cmake["EXTENSION_CONTRIBUTORS"] == s4ext["contributors"]
    assert s4ext["scmurl"] == index["scm_url"] and s4ext["scmrevision"] == index["scm_revision"]
    assert s4ext["build_subdirectory"] == index["build_subdirectory"] == "."


def test_icon_and_screenshot_named_in_the_metadata_exist_in_the_repository():
    cmake = cmake_settings()
    for url in (cmake["EXTENSION_ICONURL"], *cmake["EXTENSION_SCREENSHOTURLS"].split()):
        relative = url.split("/main/", 1)[1]
        assert (REPO / relative).is_file(), relative
