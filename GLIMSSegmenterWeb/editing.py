"""The Edit step: Slicer's segment editor effects (trame-slicer), undo/redo, 3D surfaces, the result to work on.

Every run adds a new segmentation node; the page keeps them all and shows one at a time (the others are hidden),
so an edited result is never replaced by a later run. A result appears where the user is looking: the slice views
keep their slices, zoom and pan; only the case's first result frames the 3D view on its surfaces.

A result is shown in two steps: the slice views draw it at once (its label map), and the segment editor takes it a
moment later, building its 3D surfaces then (on for the page's first result, afterwards as the user leaves
*Toggle 3D* in the editor's *Rendering* settings). Surfaces take 0.05 s for a brain tumour and seconds for the
organs of a full-resolution CT: the slice views do not wait for them.
"""

from __future__ import annotations

import asyncio

from GLIMSSegmenterLib.presentation import SURFACES_AFTER_S

__all__ = ["EditStep"]


class EditStep:
    """Which segmentation is edited; page state names start with ``edit_``.

    Args:
        context: the app's shared objects (``WebContext``); ``context.editorLogic`` is trame-slicer's
            ``SegmentEditorLogic`` (effects, segment list, undo stack).
    """

    def __init__(self, context) -> None:
        self.context = context
        self.state = context.state
        self.state.edit_segmentations = []
        self.state.edit_segmentation = None
        self.state.edit_has_result = False
        self._framed3D = False  # the 3D view shows this case's surfaces (its camera is the user's from then on)
        self._surfacesTurnedOn = False  # the page's first result turns the 3D surfaces on; later, the user decides
        self._pending = None  # the result the editor takes next (shown in the slice views already)
        self.state.change("edit_segmentation")(self._onSelected)

    @property
    def editor(self):
        return self.context.slicerApp.segmentation_editor

    def segmentationNodes(self) -> list:
        scene = self.context.slicerApp.scene
        return [
            scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))
        ]

    def currentNode(self):
        """The segmentation being edited (None before the first result)."""
        nodeId = self.state.edit_segmentation
        return self.context.slicerApp.scene.GetNodeByID(nodeId) if nodeId else None

    def reset(self) -> None:
        """After a new case was loaded: no result yet."""
        self.state.edit_segmentations = []
        self.state.edit_segmentation = None
        self.state.edit_has_result = False
        self._framed3D = False
        self._pending = None

    def showResult(self, node, referenceVolume) -> None:
        """Make ``node`` (a new result) the edited segmentation, shown over ``referenceVolume``."""
        self.state.edit_segmentations = [{"value": n.GetID(), "title": n.GetName()} for n in self.segmentationNodes()]
        self._activate(node, referenceVolume)
        self.state.edit_segmentation = node.GetID()

    def _onSelected(self, edit_segmentation=None, **_) -> None:
        node = self.currentNode()
        if node is None or node is self.editor.active_segmentation_node or node is self._pending:
            return
        reference = self.context.logic.referenceVolume(node) or self.context.segment.referenceVolume()
        self._activate(node, reference)

    def _activate(self, node, referenceVolume) -> None:
        for other in self.segmentationNodes():
            other.SetDisplayVisibility(other is node)
        self.editor.deactivate_effect()
        self.state.edit_has_result = True
        self.context.onResultChanged()
        self._pending = node
        asyncio.get_event_loop().call_later(SURFACES_AFTER_S, self._giveToEditor, node, referenceVolume)

    def _giveToEditor(self, node, referenceVolume) -> None:
        """The segment editor takes ``node`` (its 3D surfaces are built now); the 3D view is framed on the surfaces
        once per case."""
        if node is not self._pending or node.GetScene() is None:
            return  # another result was chosen since, or another case loaded
        self._pending = None
        with self.state:
            self.editor.set_active_segmentation(node, referenceVolume)
            if not self._surfacesTurnedOn:
                self.editor.set_surface_representation_enabled(True)
                self.context.editorLogic.data.segment_display.show_3d = True
                self._surfacesTurnedOn = True
            if not self._framed3D and self.editor.is_surface_representation_enabled():
                for view in self.context.slicerApp.view_manager.get_threed_views():
                    view.reset_view()
                self._framed3D = True
