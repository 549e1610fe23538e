"""Gives the module's Qt-free logic the names it expects from Slicer, backed by trame-slicer's application.

``GLIMSSegmenterLib`` is written for Slicer: it reaches the scene as ``slicer.mrmlScene``, module logics as
``slicer.modules.<name>.logic()`` and derives its logic class from ``slicer.ScriptedLoadableModule``. The
``slicer-core`` wheel has none of these; trame-slicer's ``SlicerApp`` owns the scene and the module logics, so
:func:`bindSlicerNames` points those names at them. Call it once, before importing ``GLIMSSegmenterLib.logic``.
"""

from __future__ import annotations

import sys
import types

import slicer

__all__ = ["bindSlicerNames"]


class _ModuleHandle:
    """Stands for ``slicer.modules.<name>``: only ``logic()`` is used by the module's logic."""

    def __init__(self, logic) -> None:
        self._logic = logic

    def logic(self):
        return self._logic


def _scriptedModuleNamespace() -> types.ModuleType:
    """``slicer.ScriptedLoadableModule`` with the logic base class only.

    The web app keeps the panel's choices in its own page state, so the base class needs no parameter node.
    """
    namespace = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleLogic:
        """Base class of scripted module logics (nothing to set up outside the Slicer application)."""

        def __init__(self, parent=None) -> None:
            self.parent = parent

    ScriptedLoadableModuleLogic.__module__ = namespace.__name__
    namespace.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    return namespace


def bindSlicerNames(slicerApp) -> None:
    """Point ``slicer.mrmlScene``, ``slicer.modules`` and ``slicer.ScriptedLoadableModule`` at ``slicerApp``.

    Args:
        slicerApp: a ``trame_slicer.core.SlicerApp`` (its scene and registered module logics).

    Raises:
        RuntimeError: inside the Slicer application, whose own names must not be replaced.
    """
    if getattr(slicer, "app", None) is not None:
        raise RuntimeError("the web app cannot run inside the Slicer application")
    slicer.mrmlScene = slicerApp.scene
    slicer.modules = types.SimpleNamespace(
        volumes=_ModuleHandle(slicerApp.volumes_logic),
        segmentations=_ModuleHandle(slicerApp.segmentations_logic),
        subjecthierarchy=_ModuleHandle(slicerApp.subject_hierarchy_logic),
        terminologies=_ModuleHandle(slicerApp.terminologies_logic),
        colors=_ModuleHandle(slicerApp.color_logic),
    )
    if "slicer.ScriptedLoadableModule" not in sys.modules:
        namespace = _scriptedModuleNamespace()
        sys.modules[namespace.__name__] = namespace
        slicer.ScriptedLoadableModule = namespace
