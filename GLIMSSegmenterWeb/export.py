"""The Export step: the edited segmentation as browser downloads (Slicer ``.seg.nrrd``, NIfTI label map, STL, DICOM
SEG, DICOM RT Structure Set).

The files are written by the module's logic (``GLIMSSegmenterLogic.export``: same names, label values and
terminology as in Slicer) into the session folder, then sent to the browser; STL surfaces come as one zip. The DICOM
objects need the reference volume loaded from a DICOM series; otherwise the page says why instead of a download.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from GLIMSSegmenterLib import sceneio

__all__ = ["ExportStep", "DOWNLOAD_FORMATS"]

logger = logging.getLogger(__name__)

DOWNLOAD_FORMATS = (
    {"value": "seg.nrrd", "title": "Slicer segmentation (.seg.nrrd)"},
    {"value": "nifti", "title": "NIfTI label map (.nii.gz)"},
    {"value": "stl", "title": "STL surfaces (.zip, one file per segment)"},
    {"value": "dicom", "title": "DICOM SEG (.dcm)"},
    {"value": "rtstruct", "title": "DICOM RT Structure Set (.dcm)"},
)


class ExportStep:
    """Prepares one download at a time; page state names start with ``export_``.

    The page asks in two calls (triggers ``prepareTrigger`` and ``fetchTrigger``): :meth:`prepare` writes the file
    and returns its name (or "" with the reason in ``export_message``), then :meth:`fetch` returns its bytes as a
    websocket attachment.
    """

    def __init__(self, context) -> None:
        self.context = context
        self.state = context.state
        self.state.export_format = "seg.nrrd"
        self.state.export_message = ""
        self._ready: Path | None = None
        self.prepareTrigger = context.server.controller.trigger_name(self.prepare)
        self.fetchTrigger = context.server.controller.trigger_name(self.fetch)

    def downloadName(self, node, fileFormat: str) -> str:
        name = self.context.logic.defaultExportName(node, fileFormat)
        return f"{name}.zip" if fileFormat == "stl" else name

    def prepare(self, fileFormat: str) -> str:
        """Write the current segmentation in ``fileFormat``; returns the download's file name ("" on failure)."""
        node = self.context.editing.currentNode()
        self._ready = None
        if node is None:
            self.state.export_message = "Nothing to export: segment a case first."
            return ""
        if fileFormat not in {f["value"] for f in DOWNLOAD_FORMATS}:
            self.state.export_message = f"Unknown export format {fileFormat!r}."
            return ""
        if fileFormat in sceneio.DICOM_FORMATS:
            problem = sceneio.dicomExportProblem(node, self.context.logic.referenceVolume(node))
            if problem:
                self.state.export_message = f"DICOM export is not possible: {problem}."
                return ""
        folder = self.context.session.fresh("export")
        name = self.downloadName(node, fileFormat)
        try:
            if fileFormat == "stl":
                written = self.context.logic.export(node, "stl", folder / "surfaces")
                target = folder / name
                with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in written:
                        archive.write(path, path.name)
            else:
                target = self.context.logic.export(node, fileFormat, folder / name)[0]
        except Exception as err:  # one clear line; the page stays usable
            logger.exception("export failed")
            self.state.export_message = f"Export failed: {err}"
            return ""
        self._ready = target
        self.state.export_message = f"Exported '{node.GetName()}' as {name}."
        return name

    def fetch(self):
        """The prepared file's bytes as an attachment of the reply (None when nothing is prepared)."""
        if self._ready is None or not self._ready.is_file():
            return None
        data = self._ready.read_bytes()
        return self.context.server.protocol.addAttachment(data)
