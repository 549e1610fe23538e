"""GLIMSSegmenter.py as Slicer loads it: it can only be imported inside Slicer (qt, PythonQt), so it is checked
statically: it compiles, imports only Slicer-provided packages at file scope, runs nothing at import time, and
declares the classes Slicer looks for. Its behaviour lives in GLIMSSegmenterLib, tested on slicer-core."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "GLIMSSegmenter"
MODULE_FILE = MODULE_DIR / "GLIMSSegmenter.py"
SLICER_PROVIDED = {"qt", "ctk", "vtk", "slicer", "logging", "os", "typing"}


def _tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


def test_file_scope_imports_are_slicer_provided_or_the_modules_own():
    for node in _tree().body:
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert roots <= SLICER_PROVIDED | {"GLIMSSegmenterLib"}, ast.unparse(node)


def test_the_modules_own_file_scope_imports_stay_light():
    """What GLIMSSegmenter.py imports from GLIMSSegmenterLib may import only the stdlib, slicer/vtk and glims'
    stdlib-only modules at file scope (torch, MONAI, SimpleITK... are imported inside functions)."""
    allowed = SLICER_PROVIDED | {"__future__", "GLIMSSegmenterLib", "glims"} | set(sys.stdlib_module_names)
    for path in sorted((MODULE_DIR / "GLIMSSegmenterLib").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # relative imports inside GLIMSSegmenterLib
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert {n.split(".")[0] for n in names} <= allowed, f"{path.name}: {ast.unparse(node)}"
                if any(n.split(".")[0] == "glims" for n in names):
                    # stdlib-only engine modules (Testing/test_architecture.py checks that none of them imports torch)
                    assert names[0] in {"glims.progress", "glims.errors", "glims.outputs", "glims.catalog",
                                        "glims.runoptions"}, \
                        f"{path.name}: {ast.unparse(node)}"


def test_nothing_runs_at_import_time():
    for node in _tree().body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        assert isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef)), \
            f"line {node.lineno}: {ast.unparse(node)[:80]}"


def test_slicer_finds_the_module_widget_logic_and_test_classes():
    classes = {node.name: [ast.unparse(b) for b in node.bases] for node in _tree().body
               if isinstance(node, ast.ClassDef)}
    assert classes["GLIMSSegmenter"] == ["ScriptedLoadableModule"]
    assert classes["GLIMSSegmenterWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert classes["GLIMSSegmenterTest"] == ["ScriptedLoadableModuleTest"]
    source = MODULE_FILE.read_text()
    assert "from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic" in source
    assert 'self.parent.categories = ["Segmentation"]' in source
    assert "10.1016/j.imavis.2024.105055" in source  # the GLIMS citation in the acknowledgement


def test_slicer_files_use_camel_case_methods():
    files = [MODULE_FILE, *sorted((MODULE_DIR / "GLIMSSegmenterLib").glob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("__"):
                assert "_" not in node.name.lstrip("_") or node.name.startswith("test_"), f"{path.name}: {node.name}"


def _help_text() -> str:
    for node in ast.walk(_tree()):
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "self.parent.helpText":
            return ast.literal_eval(node.value)
    raise AssertionError("GLIMSSegmenter.py sets no helpText")


def test_help_and_docs_promise_only_the_models_the_catalog_has(tmp_path):
    from glims.catalog import load_catalog, load_presets

    named = {"brats": "brain-tumour", "btcv": "CT"}  # how the help text names each task's model
    assert set(named) == set(load_presets()), "a new task: say in the help text whether a model is included"
    bundled = {spec.preset for spec in load_catalog(tmp_path).models if spec.builtin}  # no user models here
    help_text = _help_text()
    docs = (REPO / "docs" / "slicer_module.md").read_text()
    for preset, model in named.items():
        if preset in bundled:
            assert f"a {model} model is included" in help_text
        else:
            assert f"no {model} model is included" in help_text and f"<i>{preset}</i> task" in help_text
            assert f"no {model} model comes with the module" in docs
