"""The layers of docs/ARCHITECTURE.md, checked on the source: every import arrow points down.

The imports of ``glims`` (the engine), ``GLIMSSegmenterLib`` (the Slicer module's Qt-free logic) and
``GLIMSSegmenterWeb`` (the web app) are read with ``ast`` (nothing is imported), so a new upward arrow fails here
with the file and line that adds it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "glims": REPO / "GLIMSSegmenter" / "glims",
    "GLIMSSegmenterLib": REPO / "GLIMSSegmenter" / "GLIMSSegmenterLib",
    "GLIMSSegmenterWeb": REPO / "GLIMSSegmenterWeb",
}
APPLICATION = {"slicer", "qt", "ctk", "vtk", "GLIMSSegmenter", "GLIMSSegmenterLib", "GLIMSSegmenterWeb"}
"""What the engine never imports: the Slicer application and the front ends."""
FLOORS = {"glims.errors", "glims.paths", "glims.fileio", "glims.jsonfiles", "glims.locks", "glims.runfolders",
          "glims.casefiles", "glims.progress"}
"""The engine's ground floor: standard library (and ``filelock``) only, importing no other glims module but these."""
FLOOR_THIRD_PARTY = {"filelock"}
CATALOG_MAY_IMPORT = FLOORS | {"glims.catalog", "glims.catalog_sections"}
TRANSITIONAL: set[tuple[str, str]] = set()
"""Known arrows kept for old callers (none at present): each is looked up on use only, never at import."""


@dataclass(frozen=True)
class Import:
    source: str
    """The importing module, e.g. ``glims.catalog``."""
    target: str
    """The imported module, resolved to its full name (``glims.network``, ``torch.nn``)."""
    file: Path
    line: int
    top_level: bool
    """Imported when the module is imported (not inside a function)."""

    def __str__(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}: {self.source} imports {self.target}"


def _module_name(package: str, root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _imports_of(package: str, root: Path, path: Path) -> list[Import]:
    source = _module_name(package, root, path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(child) for child in ast.walk(node) if child is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = source.split(".")[: len(source.split(".")) - node.level + (1 if is_package else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
                # ``from . import registry`` names a module; ``from .catalog import load_catalog`` a name in one
                targets = [f"{stem}.{a.name}" for a in node.names] if node.module is None else [stem]
            else:
                targets = [node.module or ""]
        else:
            continue
        found += [Import(source, target, path, node.lineno, id(node) not in in_function) for target in targets]
    return found


def _all_imports() -> list[Import]:
    result = []
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            result += _imports_of(package, root, path)
    return result


IMPORTS = _all_imports()


def _top(name: str) -> str:
    return name.split(".")[0]


def _within(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _violations(rule) -> list[str]:
    return [str(i) for i in IMPORTS if rule(i) and (i.source, i.target) not in TRANSITIONAL]


def test_the_import_reader_sees_the_known_arrows():
    """The reader resolves relative imports (a rule that sees nothing would pass whatever the code does)."""
    pairs = {(i.source, i.target) for i in IMPORTS}
    assert ("glims.registry", "glims.catalog") in pairs  # from .catalog import (...)
    assert ("glims.training.data", "glims.catalog") in pairs  # from ..catalog import ...
    assert ("glims.registry", "glims.network") in pairs  # inside register_model
    assert ("GLIMSSegmenterLib.process", "glims.errors") in pairs
    assert ("glims.training.finetune", "glims.training.replay") in pairs  # from .replay import ... in a subpackage
    assert len({i.source for i in IMPORTS if i.source.startswith("glims.")}) > 40


def test_the_engine_never_imports_the_application_or_a_front_end():
    assert _violations(lambda i: _within(i.source, "glims") and _top(i.target) in APPLICATION) == []


def test_the_slicer_logic_imports_neither_qt_nor_the_web_app():
    assert _violations(lambda i: _within(i.source, "GLIMSSegmenterLib")
                       and _top(i.target) in {"qt", "ctk", "GLIMSSegmenterWeb", "GLIMSSegmenter"}) == []


def test_the_floors_import_only_the_standard_library_and_each_other():
    import sys

    def upward(i: Import) -> bool:
        if i.source not in FLOORS or _top(i.target) == "__future__":
            return False
        if _top(i.target) == "glims":
            return i.target not in FLOORS
        return _top(i.target) not in sys.stdlib_module_names and _top(i.target) not in FLOOR_THIRD_PARTY

    assert _violations(upward) == []


def test_the_catalog_is_data_it_builds_no_network():
    """The catalog (read by the Slicer side without torch) sits below the network; the registry sits above it."""
    assert _violations(lambda i: i.source == "glims.catalog" and _top(i.target) == "glims"
                       and i.target not in CATALOG_MAY_IMPORT) == []
    assert _violations(lambda i: i.source == "glims.catalog" and _top(i.target) in {"torch", "numpy"}) == []


def _torch_at_import(module: str, graph: dict[str, set[str]], seen: set[str]) -> list[str] | None:
    """The chain of top-level imports by which importing ``module`` imports torch, or None."""
    if module in seen:
        return None
    seen.add(module)
    for target in sorted(graph.get(module, ())):
        if _top(target) == "torch":
            return [module, target]
        chain = _torch_at_import(target, graph, seen)
        if chain:
            return [module, *chain]
    return None


@pytest.mark.parametrize("package", ["GLIMSSegmenterLib", "GLIMSSegmenterWeb"])
def test_the_front_ends_import_no_torch_when_loaded(package):
    """Slicer loads the module, and the web app starts, without torch: torch runs in the engine's processes."""
    graph: dict[str, set[str]] = {}
    known = {i.source for i in IMPORTS}
    for i in IMPORTS:
        if i.top_level:
            target = i.target
            while target not in known and "." in target and _top(target) in PACKAGES:
                target = target.rsplit(".", 1)[0]  # ``glims.catalog.load_catalog`` is a name in glims.catalog
            graph.setdefault(i.source, set()).add(target)
            parent = i.source.rsplit(".", 1)[0]
            if parent != i.source and parent in known:
                graph.setdefault(i.source, set()).add(parent)  # a submodule's package is imported first
    chains = [_torch_at_import(m, graph, set()) for m in sorted(known) if _within(m, package)]
    assert [" -> ".join(c) for c in chains if c] == []
