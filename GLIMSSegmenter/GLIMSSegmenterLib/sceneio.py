"""Moving data between the MRML scene and files: engine inputs out, the engine's segmentation in, exports out.

Only storage nodes and module logics are used (no ``slicer.util.loadVolume``/``saveNode``, which need the Slicer
application), so the same code runs in Slicer and on the ``slicer-core`` wheel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import slicer
import vtk

__all__ = [
    "LABEL_VALUE_TAG",
    "SURFACE_FORMATS",
    "writeVolumeFile",
    "readSegmentationFile",
    "placeNextTo",
    "segmentIds",
    "modelLabelValue",
    "writeSegmentationFile",
    "writeLabelmapFile",
    "writeLabelValuesFile",
    "writeSurfaceFiles",
    "dicomSegExportProblem",
    "writeDicomSeg",
    "loadedFiles",
]

logger = logging.getLogger(__name__)

LABEL_VALUE_TAG = "GLIMSSegmenter.LabelValue"
"""Segment tag keeping the model's label value, so a labelmap export uses it even after segments were edited."""

SURFACE_FORMATS = ("STL", "OBJ")


def _writeWithStorageNode(storage, node, path: str | os.PathLike, what: str) -> Path:
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise OSError(f"could not write {what} to {path}")
    return Path(path)


def loadedFiles(scene) -> list[Path]:
    """The files the scene's nodes were loaded from (every storage node's file names): what exports must not
    overwrite."""
    files = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLStorageNode")):
        storage = scene.GetNthNodeByClass(index, "vtkMRMLStorageNode")
        names = [storage.GetFileName()] + [storage.GetNthFileName(i) for i in range(storage.GetNumberOfFileNames())]
        files += [Path(name) for name in names if name]
    return files


def writeVolumeFile(volumeNode, path: str | os.PathLike, compress: bool = False) -> Path:
    """Write a volume (its voxels and image geometry; parent transforms are not applied) to NRRD or NIfTI.

    Raises:
        OSError: the file could not be written.
    """
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetUseCompression(compress)
    return _writeWithStorageNode(storage, volumeNode, path, f"volume '{volumeNode.GetName()}'")


def segmentIds(segmentationNode) -> list[str]:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def _stringArray(values: Sequence[str]):
    array = vtk.vtkStringArray()
    for value in values:
        array.InsertNextValue(value)
    return array


def readSegmentationFile(path: str | os.PathLike, referenceVolume, name: str, outputNode=None):
    """Load a ``.seg.nrrd`` written by the engine as a segmentation of ``referenceVolume``.

    Segment names, colours and terminology come from the file. The node gets the reference volume's image
    geometry (and node reference, needed for DICOM SEG export), its parent transform, and its place in the
    subject hierarchy.

    Args:
        path: the engine's ``.seg.nrrd``.
        referenceVolume: the volume the segmentation was computed on.
        name: name of a new node (ignored when ``outputNode`` is given).
        outputNode: an existing segmentation node whose segments are replaced; None creates a new node.

    Returns:
        The segmentation node (added to the scene).

    Raises:
        OSError: the file could not be read; nothing is added to the scene then.
    """
    scene = referenceVolume.GetScene() or slicer.mrmlScene
    _checkImageHeader(path)
    loaded = slicer.vtkMRMLSegmentationNode()
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(loaded) or loaded.GetSegmentation().GetNumberOfSegments() == 0:
        raise OSError(f"could not read the segmentation file {path}")
    loadedSegmentation = loaded.GetSegmentation()
    for segmentId in segmentIds(loaded):
        segment = loadedSegmentation.GetSegment(segmentId)
        segment.SetTag(LABEL_VALUE_TAG, str(segment.GetLabelValue()))

    node = outputNode
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    node.GetSegmentation().DeepCopy(loadedSegmentation)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    node.SetAndObserveTransformNodeID(referenceVolume.GetTransformNodeID())
    placeNextTo(node, referenceVolume)
    return node


def _checkImageHeader(path: str | os.PathLike) -> None:
    """Raise OSError unless ``path`` is an image file with a readable header.

    Checked first because Slicer's NRRD reader aborts the whole process on some malformed headers.
    """
    import SimpleITK as sitk  # bundled with Slicer

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise OSError(f"could not read the segmentation file {path}: {detail}") from None


def placeNextTo(node, siblingNode) -> None:
    """Put ``node`` in the same subject-hierarchy folder (e.g. the DICOM study) as ``siblingNode``."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    if shNode is None:
        return
    siblingItem = shNode.GetItemByDataNode(siblingNode)
    parentItem = shNode.GetItemParent(siblingItem) if siblingItem else shNode.GetSceneItemID()
    item = shNode.GetItemByDataNode(node)
    if item:
        shNode.SetItemParent(item, parentItem)
    else:
        shNode.CreateItem(parentItem, node)


def writeSegmentationFile(segmentationNode, path: str | os.PathLike) -> Path:
    """Write all segments (names, colours, terminology) to a ``.seg.nrrd`` that Slicer and slicerio read.

    Raises:
        OSError: the file could not be written.
    """
    return _writeWithStorageNode(slicer.vtkMRMLSegmentationStorageNode(), segmentationNode, path,
                                 f"segmentation '{segmentationNode.GetName()}'")


def modelLabelValue(segment) -> int | None:
    """The model's label value recorded on a segment at import, or None (e.g. a segment the user added)."""
    tag = vtk.reference("")
    if not segment.GetTag(LABEL_VALUE_TAG, tag) or not str(tag).isdigit():
        return None
    return int(str(tag)) or None


def _labelValues(segmentationNode) -> dict[str, int]:
    """Segment id -> label value: the model's value where the segment has one, else the next free values."""
    segmentation = segmentationNode.GetSegmentation()
    values: dict[str, int] = {}
    for segmentId in segmentIds(segmentationNode):
        value = modelLabelValue(segmentation.GetSegment(segmentId))
        if value is not None and value not in values.values():
            values[segmentId] = value
    nextValue = max(values.values(), default=0) + 1
    for segmentId in segmentIds(segmentationNode):
        if segmentId not in values:
            values[segmentId] = nextValue
            nextValue += 1
    return values


def writeLabelmapFile(segmentationNode, referenceVolume, path: str | os.PathLike) -> Path:
    """Write the segments as one label map on the reference volume's grid (NIfTI ``.nii.gz`` or NRRD).

    Label values are the model's (e.g. BraTS NCR=1, ED=2, ET=3) where known; segments the user added get the next
    free values. Where segments overlap, the later segment wins.

    Raises:
        OSError: the export or the file write failed.
    """
    path = Path(path)
    scene = segmentationNode.GetScene()
    values = _labelValues(segmentationNode)
    segmentation = segmentationNode.GetSegmentation()
    colorTable = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName("GLIMS export colors"))
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("GLIMS export"))
    try:
        colorTable.SetHideFromEditors(True)
        labelmap.SetHideFromEditors(True)
        colorTable.SetTypeToUser()
        colorTable.SetNumberOfColors(max(values.values()) + 1)
        colorTable.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
        for segmentId, value in values.items():
            segment = segmentation.GetSegment(segmentId)
            colorTable.SetColor(value, segment.GetName(), *segment.GetColor(), 1.0)
        exported = slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
            segmentationNode, _stringArray(list(values)), labelmap, referenceVolume,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, colorTable)
        if not exported:
            raise OSError(f"could not convert '{segmentationNode.GetName()}' to a label map")
        writeVolumeFile(labelmap, path, compress=True)
    finally:
        scene.RemoveNode(labelmap)
        scene.RemoveNode(colorTable)
    return path


def _segmentMask(segmentationNode, segmentId: str, referenceVolume, labelmap):
    """One segment as a (k, j, i) boolean array on the reference volume's grid (exported through ``labelmap``)."""
    exported = slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
        segmentationNode, _stringArray([segmentId]), labelmap, referenceVolume,
        slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
    if not exported:
        name = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()
        raise OSError(f"could not convert segment '{name}' of '{segmentationNode.GetName()}' to a label map")
    return slicer.util.arrayFromVolume(labelmap) != 0


_TEMPORARY_EXPORT_CLASSES = ("vtkMRMLVolumeNode", "vtkMRMLDisplayNode", "vtkMRMLColorTableNode", "vtkMRMLStorageNode")


def _nodeIds(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def writeLabelValuesFile(segmentationNode, referenceVolume, labelValues: dict[str, int],
                         path: str | os.PathLike) -> Path:
    """Write chosen segments as one uint8 label map on the reference volume's grid, with the given values.

    Unlike :func:`writeLabelmapFile`, several segments may share a value (e.g. two painted edema segments), and
    segments not in ``labelValues`` are left out. Where segments overlap, the later segment wins. The scene is
    left as it was (the temporary label map, display and colour nodes are removed).

    Args:
        segmentationNode: the segments.
        referenceVolume: the grid (origin, spacing, directions, extent) of the label map.
        labelValues: segment id -> label value (1-255).
        path: a ``.nrrd`` or ``.nii.gz`` file.

    Raises:
        OSError: nothing to write, a segment could not be converted, or the file could not be written.
    """
    import numpy as np

    if not labelValues:
        raise OSError(f"no segments of '{segmentationNode.GetName()}' to write")
    scene = segmentationNode.GetScene()
    before = _nodeIds(scene)
    try:
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("GLIMS labels"))
        labelmap.SetHideFromEditors(True)
        labels = None
        for segmentId, value in labelValues.items():
            mask = _segmentMask(segmentationNode, segmentId, referenceVolume, labelmap)
            if labels is None:
                labels = np.zeros(mask.shape, np.uint8)
            labels[mask] = value
        labelmap.CopyOrientation(referenceVolume)
        slicer.util.updateVolumeFromArray(labelmap, labels)
        return writeVolumeFile(labelmap, path, compress=str(path).endswith(".gz"))
    finally:
        for nodeId in _nodeIds(scene) - before:  # the label map and the display/colour nodes the export added
            node = scene.GetNodeByID(nodeId)
            if node is not None and any(node.IsA(c) for c in _TEMPORARY_EXPORT_CLASSES):
                scene.RemoveNode(node)


def writeSurfaceFiles(segmentationNode, folder: str | os.PathLike, fileFormat: str = "STL",
                      segmentIdsToWrite: Sequence[str] | None = None) -> list[Path]:
    """Write the segments' closed surfaces (LPS, millimetres) into ``folder``.

    STL: one file per segment, ``<segmentation>_<segment>.stl``. OBJ: one ``<segmentation>.obj`` with a group per
    segment and the colours in ``<segmentation>.mtl`` (written through VTK's exporter, which needs OpenGL: EGL or
    OSMesa without a display).

    Returns:
        The files written.

    Raises:
        ValueError: unknown format; OSError: the export failed.
    """
    fileFormat = fileFormat.upper()
    if fileFormat not in SURFACE_FORMATS:
        raise ValueError(f"surface format must be one of {', '.join(SURFACE_FORMATS)}, not {fileFormat!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.iterdir())
    ids = _stringArray(segmentIdsToWrite) if segmentIdsToWrite else None
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsClosedSurfaceRepresentationToFiles(
            str(folder), segmentationNode, ids, fileFormat, True, 1.0, False):
        raise OSError(f"could not write {fileFormat} surfaces to {folder}")
    return sorted(set(folder.iterdir()) - before)


def dicomSegExportProblem(segmentationNode, referenceVolume) -> str:
    """Why DICOM SEG export is not possible here ("" when it is).

    It needs a reference volume loaded from DICOM and Slicer's DICOM segmentation exporter (Slicer 5.12+ core, or
    the QuantitativeReporting extension before that).
    """
    if segmentationNode is None or referenceVolume is None:
        return "select a segmentation and its input volume first"
    if not referenceVolume.GetAttribute("DICOM.instanceUIDs"):
        return f"'{referenceVolume.GetName()}' was not loaded from DICOM, so a DICOM SEG cannot reference it"
    try:
        import DICOMSegmentationPlugin  # noqa: F401  (Slicer's DICOM plugin, not on the slicer-core wheel)
    except ImportError:
        return "this Slicer has no DICOM segmentation exporter (use Slicer 5.12 or install QuantitativeReporting)"
    return ""


def writeDicomSeg(segmentationNode, referenceVolume, folder: str | os.PathLike) -> None:
    """Export a DICOM SEG object referencing the input series into ``folder`` (inside Slicer only).

    Raises:
        RuntimeError: export is not possible here (see :func:`dicomSegExportProblem`) or failed.
    """
    problem = dicomSegExportProblem(segmentationNode, referenceVolume)
    if problem:
        raise RuntimeError(f"DICOM SEG export is not possible: {problem}")
    import DICOMSegmentationPlugin

    placeNextTo(segmentationNode, referenceVolume)  # the exporter looks for the referenced series in the study
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(segmentationNode.GetScene())
    exporter = DICOMSegmentationPlugin.DICOMSegmentationPluginClass()
    exportables = exporter.examineForExport(shNode.GetItemByDataNode(segmentationNode))
    if not exportables:
        raise RuntimeError("the DICOM segmentation exporter does not accept this segmentation")
    for exportable in exportables:
        exportable.directory = str(folder)
    error = exporter.export(exportables)
    if error:
        raise RuntimeError(f"DICOM SEG export failed: {error}")
