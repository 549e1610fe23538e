"""A headless 3D Slicer for tests: the ``slicer-core`` wheel's real MRML scene and module logics, wired the way
the Slicer application (and trame-slicer's ``SlicerApp``) wires them, with no Qt and no views.

After :meth:`HeadlessSlicer.install` the module's Qt-free code runs unchanged:

* ``slicer.mrmlScene`` is the scene;
* ``slicer.modules.<name>.logic()`` returns the volumes, segmentations, subjecthierarchy, terminologies and colors
  logics;
* ``slicer.ScriptedLoadableModule`` provides ``ScriptedLoadableModuleLogic`` with Slicer's parameter-node rules
  (a singleton ``vtkMRMLScriptedModuleNode`` tagged with the module name).

``slicer.app`` stays absent on purpose: code that needs the application (``slicer.util.loadVolume``, dialogs)
fails here as it should in a GUI-free logic.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import slicer


def terminology_folder() -> Path | None:
    """The three Slicer ``.term.json`` files shipped in the trame-slicer package (not imported: it is heavy)."""
    spec = importlib.util.find_spec("trame_slicer")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "resources" / "terminologies"
    return folder if folder.is_dir() else None


class _LogicHolder:
    """What ``slicer.modules.<name>`` is to module code: something with ``logic()``."""

    def __init__(self, logic) -> None:
        self._logic = logic

    def logic(self):
        return self._logic


def _scripted_loadable_module_namespace() -> types.ModuleType:
    """A ``slicer.ScriptedLoadableModule`` holding the Qt-free classes module logic derives from."""
    namespace = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleLogic:
        """Parameter-node handling as in Slicer: one singleton node per module, found by its singleton tag."""

        def __init__(self, parent=None) -> None:
            name = type(self).__name__
            self.moduleName = name[: -len("Logic")] if name.endswith("Logic") else name
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            scene = slicer.mrmlScene
            if self.isSingletonParameterNode:
                node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
                if node is not None:
                    return node
            else:
                nodes = self.getAllParameterNodes()
                if nodes:
                    return nodes[0]
            return scene.AddNode(self.createParameterNode())

        def getAllParameterNodes(self):
            scene = slicer.mrmlScene
            nodes = (scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
                     for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")))
            return [n for n in nodes if n.GetAttribute("ModuleName") == self.moduleName]

        def createParameterNode(self):
            node = slicer.vtkMRMLScriptedModuleNode()
            if self.isSingletonParameterNode:
                node.SetSingletonTag(self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            node.SetAttribute("ModuleName", self.moduleName)
            return node

    ScriptedLoadableModuleLogic.__module__ = namespace.__name__
    namespace.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    return namespace


class HeadlessSlicer:
    """Scene, application logic and the module logics a segmentation module uses."""

    def __init__(self, terminologies: Path | None = None) -> None:
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.colors = self.app_logic.GetColorLogic()
        self.colors.SetMRMLScene(self.scene)
        self.colors.AddDefaultColorNodes()
        self.app_logic.SetModuleLogic("Colors", self.colors)  # the volumes logic finds the colour logic by name
        self.volumes = self._register("Volumes", slicer.vtkSlicerVolumesLogic())
        self.segmentations = self._register("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic())
        self.subject_hierarchy = self._register("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic())
        self.terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
        if terminologies is not None:  # read when the scene is set, so it must come first
            self.terminologies.SetModuleShareDirectory(str(terminologies))
        self._register("Terminologies", self.terminologies)
        # vtkMRMLScene.ReadFromMRB needs a data IO manager with a cache folder
        self._cache = tempfile.TemporaryDirectory(prefix="headless-slicer-cache-")
        cache = slicer.vtkCacheManager()
        cache.SetRemoteCacheDirectory(self._cache.name)
        self.data_io = slicer.vtkDataIOManager()
        self.data_io.SetCacheManager(cache)
        self.scene.SetDataIOManager(self.data_io)

    def _register(self, name: str, logic):
        logic.SetMRMLScene(self.scene)
        logic.SetMRMLApplicationLogic(self.app_logic)
        self.app_logic.SetModuleLogic(name, logic)
        return logic

    def install(self) -> None:
        """Make ``slicer.mrmlScene``, ``slicer.modules`` and ``slicer.ScriptedLoadableModule`` available."""
        if getattr(slicer, "app", None) is not None:
            raise RuntimeError("inside the Slicer application: use the real one")
        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(
            volumes=_LogicHolder(self.volumes),
            segmentations=_LogicHolder(self.segmentations),
            subjecthierarchy=_LogicHolder(self.subject_hierarchy),
            terminologies=_LogicHolder(self.terminologies),
            colors=_LogicHolder(self.colors),
        )
        if "slicer.ScriptedLoadableModule" not in sys.modules:
            namespace = _scripted_loadable_module_namespace()
            sys.modules[namespace.__name__] = namespace
            slicer.ScriptedLoadableModule = namespace

    def clear(self) -> None:
        """Empty the scene as File > Close Scene does (default colour nodes stay)."""
        self.scene.Clear(0)

    def load_volume(self, path: str | Path, name: str | None = None):
        """Load an image file (NIfTI, NRRD, ...) as a scalar volume node, as Slicer's Add Data does."""
        node = self.volumes.AddArchetypeVolume(str(path), name or Path(path).name.split(".")[0])
        if node is None:
            raise OSError(f"could not load {path}")
        return node
