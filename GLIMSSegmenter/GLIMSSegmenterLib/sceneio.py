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
    "surfaceFileNames",
    "DICOM_FORMATS",
    "ALGORITHM_TYPE_TAG",
    "dicomSourceFiles",
    "loadDicomSeries",
    "dicomExportProblem",
    "writeDicomFile",
    "loadedFiles",
]

logger = logging.getLogger(__name__)

LABEL_VALUE_TAG = "GLIMSSegmenter.LabelValue"
"""Segment tag keeping the model's label value, so a labelmap export uses it even after segments were edited."""

SURFACE_FORMATS = ("STL", "OBJ")

ALGORITHM_TYPE_TAG = "DICOM.SegmentAlgorithmType"
ALGORITHM_NAME_TAG = "DICOM.SegmentAlgorithmName"
"""Segment tags Slicer's DICOM exporters read: segments the model made are ``AUTOMATIC``, not ``MANUAL``."""


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


def readSegmentationFile(
    path: str | os.PathLike, referenceVolume, name: str, outputNode=None, algorithmName: str = "GLIMS"
):
    """Load a ``.seg.nrrd`` written by the engine as a segmentation of ``referenceVolume``.

    Segment names, colours and terminology come from the file. The node gets the reference volume's image
    geometry (and node reference, needed for DICOM SEG export), its parent transform, and its place in the
    subject hierarchy.

    Args:
        path: the engine's ``.seg.nrrd``.
        referenceVolume: the volume the segmentation was computed on.
        name: name of a new node (ignored when ``outputNode`` is given).
        outputNode: an existing segmentation node whose segments are replaced; None creates a new node.
        algorithmName: the model (``ID@VERSION``), recorded on each segment with the ``AUTOMATIC`` algorithm type.

    Returns:
        The segmentation node (added to the scene).

    Raises:
        OSError: the file could not be read; nothing is added to the scene then.
    """
    scene = referenceVolume.GetScene() or slicer.mrmlScene
    _checkImageHeader(path)
    # The storage node gives the node it reads display nodes, which needs a scene: a scratch scene of its own
    # keeps the file's contents (and any failure) out of the user's scene until they are complete.
    scratchScene = slicer.vtkMRMLScene()
    loaded = scratchScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(loaded) or loaded.GetSegmentation().GetNumberOfSegments() == 0:
        raise OSError(f"could not read the segmentation file {path}")
    loadedSegmentation = loaded.GetSegmentation()
    for segmentId in segmentIds(loaded):
        segment = loadedSegmentation.GetSegment(segmentId)
        segment.SetTag(LABEL_VALUE_TAG, str(segment.GetLabelValue()))
        segment.SetTag(ALGORITHM_TYPE_TAG, "AUTOMATIC")
        segment.SetTag(ALGORITHM_NAME_TAG, algorithmName)

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
    return _writeWithStorageNode(
        slicer.vtkMRMLSegmentationStorageNode(), segmentationNode, path, f"segmentation '{segmentationNode.GetName()}'"
    )


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
            segmentationNode,
            _stringArray(list(values)),
            labelmap,
            referenceVolume,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
            colorTable,
        )
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
        segmentationNode,
        _stringArray([segmentId]),
        labelmap,
        referenceVolume,
        slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
    )
    if not exported:
        name = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()
        raise OSError(f"could not convert segment '{name}' of '{segmentationNode.GetName()}' to a label map")
    return slicer.util.arrayFromVolume(labelmap) != 0


_TEMPORARY_EXPORT_CLASSES = ("vtkMRMLVolumeNode", "vtkMRMLDisplayNode", "vtkMRMLColorTableNode", "vtkMRMLStorageNode")


def _nodeIds(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def writeLabelValuesFile(
    segmentationNode, referenceVolume, labelValues: dict[str, int], path: str | os.PathLike
) -> Path:
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


def _segmentHasContent(segmentation, segmentId: str) -> bool:
    """True when the segment has voxels (binary labelmap, shared layers included) or surface points."""
    segment = segmentation.GetSegment(segmentId)
    labelmap = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    if labelmap is not None:
        scalars = labelmap.GetPointData().GetScalars() if labelmap.GetPointData() else None
        if scalars is None:
            return False
        from vtk.util.numpy_support import vtk_to_numpy

        return bool((vtk_to_numpy(scalars) == segment.GetLabelValue()).any())
    surface = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())
    return surface is not None and surface.GetNumberOfPoints() > 0


def _safeCopy(segmentationNode, segmentIdsToCopy: Sequence[str], nodeName: str, segmentNames: Sequence[str]):
    """A hidden segmentation node holding copies of the segments under file-safe names (the user's node is left
    as it is); same parent transform and conversion parameters."""
    scene = segmentationNode.GetScene()
    copy = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", nodeName)
    copy.SetHideFromEditors(True)
    source = segmentationNode.GetSegmentation()
    target = copy.GetSegmentation()
    target.SetSourceRepresentationName(source.GetSourceRepresentationName())
    target.CopyConversionParameters(source)
    for segmentId, name in zip(segmentIdsToCopy, segmentNames, strict=False):
        if not target.CopySegmentFromSegmentation(source, segmentId):
            scene.RemoveNode(copy)
            raise OSError(f"could not copy segment '{source.GetSegment(segmentId).GetName()}' for export")
        target.GetSegment(segmentId).SetName(name)
    copy.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
    return copy


def _objGroups(path: Path) -> int:
    return sum(1 for line in path.read_text(errors="replace").splitlines() if line.startswith("g "))


def _surfaceExportPlan(segmentationNode, fileFormat: str, segmentIdsToWrite: Sequence[str] | None = None):
    """What a surface export writes: (non-empty segment ids, node file stem, segment file stems, file names)."""
    from .exportnames import safeFileName, uniqueFileNames

    fileFormat = fileFormat.upper()
    if fileFormat not in SURFACE_FORMATS:
        raise ValueError(f"surface format must be one of {', '.join(SURFACE_FORMATS)}, not {fileFormat!r}")
    segmentation = segmentationNode.GetSegmentation()
    wanted = list(segmentIdsToWrite) if segmentIdsToWrite else segmentIds(segmentationNode)
    present = [i for i in wanted if _segmentHasContent(segmentation, i)]
    nodeName = safeFileName(segmentationNode.GetName(), "segmentation")
    names = uniqueFileNames([segmentation.GetSegment(i).GetName() for i in present])
    expected = (
        [f"{nodeName}_{name}.stl" for name in names] if fileFormat == "STL" else [f"{nodeName}.obj", f"{nodeName}.mtl"]
    )
    return present, nodeName, names, expected


def surfaceFileNames(segmentationNode, fileFormat: str) -> list[str]:
    """The names of the files :func:`writeSurfaceFiles` writes for ``segmentationNode`` in ``fileFormat``."""
    return _surfaceExportPlan(segmentationNode, fileFormat)[3]


def writeSurfaceFiles(
    segmentationNode, folder: str | os.PathLike, fileFormat: str = "STL", segmentIdsToWrite: Sequence[str] | None = None
) -> list[Path]:
    """Write the non-empty segments' closed surfaces (LPS, millimetres) into ``folder``, all or nothing.

    File names come from the node and segment names made safe and unique (``exportnames``): STL writes one
    ``<segmentation>_<segment>.stl`` per segment; OBJ one ``<segmentation>.obj`` with a group per segment and the
    colours in ``<segmentation>.mtl`` (VTK's exporter, which needs OpenGL: EGL or OSMesa without a display). The
    files are written to a private folder first and moved into ``folder`` only when every expected file is there.

    Returns:
        The files written.

    Raises:
        ValueError: unknown format; OSError: nothing to write, or a segment's file is missing (the message names
        it; nothing is left in ``folder``).
    """
    import shutil
    import tempfile

    fileFormat = fileFormat.upper()
    folder = Path(folder)
    present, nodeName, names, expected = _surfaceExportPlan(segmentationNode, fileFormat, segmentIdsToWrite)
    if not present:
        raise OSError(f"'{segmentationNode.GetName()}' has no non-empty segment to export as {fileFormat}")
    folder.mkdir(parents=True, exist_ok=True)
    copy = _safeCopy(segmentationNode, present, nodeName, names)
    staging = Path(tempfile.mkdtemp(prefix=".glims-export-", dir=folder))
    scene = segmentationNode.GetScene()
    try:
        slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsClosedSurfaceRepresentationToFiles(
            str(staging), copy, None, fileFormat, True, 1.0, False
        )
        missing = [name for name in expected if not (staging / name).is_file() or (staging / name).stat().st_size == 0]
        if fileFormat == "OBJ" and not missing and _objGroups(staging / expected[0]) != len(present):
            missing = [f"{len(present) - _objGroups(staging / expected[0])} of the groups in {expected[0]}"]
        if missing:
            raise OSError(
                f"{fileFormat} export of '{segmentationNode.GetName()}' wrote {len(expected) - len(missing)} "
                f"of {len(expected)} files for its {len(present)} non-empty segments; missing: "
                f"{', '.join(missing)}"
            )
        written = []
        for name in expected:
            os.replace(staging / name, folder / name)
            written.append(folder / name)
        return written
    finally:
        for node in [copy.GetDisplayNode(), copy.GetStorageNode(), copy]:
            if node is not None:
                scene.RemoveNode(node)
        shutil.rmtree(staging, ignore_errors=True)


DICOM_FORMATS = {"dicom": "dicom_seg", "rtstruct": "dicom_rtstruct"}
"""Export format -> the engine's DICOM output key (``glims.dicom.export.DICOM_OUTPUTS``)."""
DEFAULT_CATEGORY = ("SCT", "85756007", "Tissue")
"""Category and type of a segment without terminology (Slicer's default for new segments)."""


def dicomSourceFiles(volumeNode) -> list[str]:
    """The DICOM files a volume was loaded from: by instance UID from Slicer's DICOM database, else its storage
    node's file list (both kept by Slicer's DICOM loader, one file per instance); empty when the volume did not
    come from DICOM or its files are gone."""
    uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids:
        return []
    database = getattr(slicer, "dicomDatabase", None)
    if database is not None and database.isOpen:
        files = [database.fileForInstance(uid) for uid in uids]
        if all(files):
            return files
    storage = volumeNode.GetStorageNode()
    if storage is None or not storage.GetFileName():
        return []
    files = [storage.GetFileName()] + [
        storage.GetNthFileName(i)
        for i in range(storage.GetNumberOfFileNames())
        if storage.GetNthFileName(i) != storage.GetFileName()
    ]
    return files if len(files) == len(uids) and all(os.path.isfile(f) for f in files) else []


def loadDicomSeries(volumesLogic, files: Sequence[str | os.PathLike], name: str):
    """Read one DICOM image series into a scalar volume as Slicer's DICOM loader leaves it: the files in slice
    order in its storage node's file list and their SOP Instance UIDs in ``DICOM.instanceUIDs`` (what
    :func:`dicomSourceFiles` reads back for a DICOM export).

    A series the DICOM writer cannot refer to (e.g. anonymised with its UIDs removed) is still read, in file name
    order and without DICOM identity; files of several series are not read.

    Returns:
        The volume node (None when the files could not be read as one volume), and "" or why a DICOM export will
        not be possible for it (or why nothing was read).
    """
    import pydicom

    from glims.dicom.source import read_source_series
    from glims.errors import GlimsError

    problem = ""
    try:
        source = read_source_series(files)
        ordered, uids = [ds.filename for ds in source.datasets], [ds.SOPInstanceUID for ds in source.datasets]
    except GlimsError as err:
        problem, ordered, uids = str(err), sorted(str(f) for f in files), []
        series = {
            str(pydicom.dcmread(f, stop_before_pixels=True, force=True).get("SeriesInstanceUID", "")) for f in files
        }
        if len(series - {""}) > 1:
            return None, f"the files hold {len(series - {''})} DICOM series; give the files of one series"
    names = _stringArray([str(f) for f in ordered])
    volume = volumesLogic.AddArchetypeVolume(str(ordered[0]), name, 0, names) if ordered else None
    if volume is not None and uids:
        volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    return volume, problem


def dicomExportProblem(segmentationNode, referenceVolume) -> str:
    """Why a DICOM SEG or RT Structure Set cannot be written for this segmentation ("" when it can)."""
    if segmentationNode is None or referenceVolume is None:
        return "select a segmentation and its input volume first"
    if not referenceVolume.GetAttribute("DICOM.instanceUIDs"):
        return (
            f"'{referenceVolume.GetName()}' was not loaded from DICOM, so a DICOM object cannot refer to it "
            "(load the series through the DICOM module, or export NIfTI or .seg.nrrd)"
        )
    if not dicomSourceFiles(referenceVolume):
        return f"the DICOM files of '{referenceVolume.GetName()}' are no longer in the DICOM database"
    return ""


def _codeOf(text: str, default):
    parts = text.split("^")
    return tuple(parts[:3]) if len(parts) >= 3 and parts[0] and parts[1] else default


def _exportSegment(segment, mask, modelSegment: bool):
    """One segment in the engine's DICOM terms: its name, colour, terminology codes and algorithm type."""
    from glims.dicom.content import AUTOMATIC, MANUAL, ExportSegment

    fields = (segment.GetTerminology() or "").split("~")
    fields += [""] * (7 - len(fields))
    tag = vtk.reference("")
    algorithmType = (
        str(tag) if segment.GetTag(ALGORITHM_TYPE_TAG, tag) and str(tag) else (AUTOMATIC if modelSegment else MANUAL)
    )
    return ExportSegment(
        name=segment.GetName(),
        color=tuple(round(c * 255) for c in segment.GetColor()),
        category=_codeOf(fields[1], DEFAULT_CATEGORY),
        type=_codeOf(fields[2], DEFAULT_CATEGORY),
        mask=mask,
        algorithm_type=algorithmType,
        type_modifier=_codeOf(fields[3], None),
        region=_codeOf(fields[5], None),
    )


def _maskImage(mask, volumeNode):
    """A (k, j, i) mask as a SimpleITK image with the volume's geometry (LPS; parent transforms not applied)."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASDirectionMatrix(matrix)
    flip = (-1.0, -1.0, 1.0)
    image.SetDirection([flip[r] * matrix.GetElement(r, c) for r in range(3) for c in range(3)])
    image.SetOrigin([f * o for f, o in zip(flip, volumeNode.GetOrigin(), strict=False)])
    image.SetSpacing(volumeNode.GetSpacing())
    return image


def writeDicomFile(segmentationNode, referenceVolume, path: str | os.PathLike, fileFormat: str, algorithm) -> Path:
    """Write all segments as a DICOM SEG (``dicom``) or RT Structure Set (``rtstruct``) with the engine's writer.

    Every segment is written (empty ones are described without voxels), on the reference volume's DICOM series;
    segments the model made are ``AUTOMATIC`` (tag ``DICOM.SegmentAlgorithmType``), those added by hand ``MANUAL``.

    Args:
        algorithm: ``glims.dicom.content.Algorithm`` of the model that made the draft.

    Raises:
        OSError: not possible here (see :func:`dicomExportProblem`), or the file could not be written.
    """
    from glims.dicom.export import labels_on_series, write_dicom_objects
    from glims.dicom.source import read_source_series, require_dicom_libraries
    from glims.errors import GlimsError

    problem = dicomExportProblem(segmentationNode, referenceVolume)
    if problem:
        raise OSError(f"DICOM export is not possible: {problem}")
    scene = segmentationNode.GetScene()
    before = _nodeIds(scene)
    try:
        require_dicom_libraries()
        source = read_source_series(dicomSourceFiles(referenceVolume))
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("GLIMS DICOM"))
        labelmap.SetHideFromEditors(True)
        segmentation = segmentationNode.GetSegmentation()
        segments = []
        for segmentId in segmentIds(segmentationNode):
            segment = segmentation.GetSegment(segmentId)
            mask = _segmentMask(segmentationNode, segmentId, referenceVolume, labelmap)
            onSeries = labels_on_series(_maskImage(mask, referenceVolume), source).astype(bool)
            segments.append(_exportSegment(segment, onSeries, modelLabelValue(segment) is not None))
        return write_dicom_objects(source, segments, algorithm, {DICOM_FORMATS[fileFormat]: path})[
            DICOM_FORMATS[fileFormat]
        ]
    except GlimsError as err:
        raise OSError(str(err)) from None
    finally:
        for nodeId in _nodeIds(scene) - before:
            node = scene.GetNodeByID(nodeId)
            if node is not None and any(node.IsA(c) for c in _TEMPORARY_EXPORT_CLASSES):
                scene.RemoveNode(node)
