"""The Case step: load a case from the sample cases, the server's data folder (``--data``) or an upload.

Loading empties the scene first (as Slicer's File > Close Scene), then reads each image as a volume named after its
file, so that the model's inputs are assigned by name. A DICOM series is read as one volume that keeps its source
files and instance UIDs, as Slicer's DICOM loader does, so that DICOM SEG and RT Structure Set exports refer to it.
Uploads are checked (file type, image header, total size) and written to a fresh folder inside the session folder.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from glims.errors import InputError
from GLIMSSegmenterLib import sceneio
from GLIMSSegmenterLib.engine import engineEnvironment

from .cases import CaseFiles, dataFolderCases, generatedFiles, sampleCases, sampleGeneration, volumeName
from .security import DICOM_SUFFIX, checkImageFile, safeUploadName

__all__ = ["CaseStep"]

logger = logging.getLogger(__name__)


class CaseStep:
    """Where cases come from and loading them; page state names start with ``case_``.

    Args:
        context: the app's shared objects (``WebContext``).
    """

    def __init__(self, context) -> None:
        self.context = context
        self.state = context.state
        self._dataCases = dataFolderCases(context.options.dataFolder)
        self._uploaded: list[tuple[str, bytes]] = []
        self._uploadBytes = 0
        self._uploadError = ""
        state = self.state
        state.case_samples = [{"value": c.caseId, "title": c.title} for c in sampleCases()]
        state.case_data = [{"value": c.caseId, "title": c.title} for c in self._dataCases]
        state.case_title = ""
        state.case_message = ""
        state.case_loading = False
        state.case_upload_limit_mb = context.options.uploadLimitMb

    # ---- sources ------------------------------------------------------------------------------------------

    async def loadSample(self, caseId: str) -> None:
        """Load a sample case; the synthetic one is generated first by the engine, in a child process."""
        if not self._jobAllowsLoading() or self.state.case_loading:
            return
        folder = self.context.session.fresh("sample")
        try:
            case, command = sampleGeneration(caseId, folder, self.context.options.demoSize)
            if command is not None:
                with self.state:
                    self.state.case_loading = True
                    self.state.case_message = "Generating the synthetic case…"
                process = await asyncio.create_subprocess_exec(
                    *command, env=engineEnvironment(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
                )
                _, errors = await process.communicate()
                if process.returncode != 0:
                    raise InputError(
                        errors.decode(errors="replace").strip()[-300:] or f"exit code {process.returncode}"
                    )
                case = generatedFiles(case, folder)
        except Exception as err:
            with self.state:
                self.state.case_loading = False
                self.state.case_message = f"The sample case could not be prepared: {err}"
            return
        with self.state:
            self.state.case_loading = False
            self.loadFiles(case)

    def loadDataCase(self, caseId: str) -> None:
        case = next((c for c in self._dataCases if c.caseId == caseId), None)
        if case is None:
            self.state.case_message = f"No case {caseId!r} in the data folder."
            return
        if self._jobAllowsLoading():
            self.loadFiles(case)

    async def receiveUploadChunk(self, files: list[dict]) -> None:
        """Called by the page's chunked upload: a list of files, then an empty list at the end."""
        if files:
            for item in files:
                content = item.get("content") or b""
                if isinstance(content, list):
                    content = b"".join(content)
                self._uploadBytes += len(content)
                if self._uploadBytes > self.context.options.uploadLimitMb * 2**20:
                    self._uploadError = (
                        f"the upload is larger than the limit of {self.context.options.uploadLimitMb} MB"
                    )
                    self._uploaded = []
                    continue
                if not self._uploadError:
                    self._uploaded.append((str(item.get("name", "")), content))
            return
        received, error = self._uploaded, self._uploadError
        self._uploaded, self._uploadBytes, self._uploadError = [], 0, ""
        with self.state:
            if error:
                self.state.case_message = f"Not loaded: {error}."
            elif received:
                self._loadUpload(received)

    def _loadUpload(self, received: list[tuple[str, bytes]]) -> None:
        if not self._jobAllowsLoading():
            return
        folder = self.context.session.fresh("upload")
        paths = []
        try:
            for name, content in received:
                target = folder / safeUploadName(name)
                if target.exists():
                    raise InputError(f"two uploaded files are named '{target.name}'")
                target.write_bytes(content)
                checkImageFile(target)
                paths.append(target)
        except InputError as err:
            self.context.session.fresh("upload")
            self.state.case_message = f"Not loaded: {err}."
            return
        series = [p for p in paths if p.name.lower().endswith(DICOM_SUFFIX)]
        if series and len(series) < len(paths):
            self.context.session.fresh("upload")
            self.state.case_message = "Not loaded: upload either the .dcm files of one DICOM series or volume files."
            return
        if series:
            self.loadFiles(CaseFiles("upload", f"Uploaded DICOM series: {len(series)} files", tuple(series), True))
            return
        volumes = [p for p in paths if not p.name.lower().endswith((".raw", ".raw.gz"))]
        self.loadFiles(CaseFiles("upload", f"Uploaded: {', '.join(p.name for p in volumes)}", tuple(volumes)))

    # ---- loading ------------------------------------------------------------------------------------------

    def _jobAllowsLoading(self) -> bool:
        if self.context.logic.jobs.busy:
            self.state.case_message = "A job is running: wait for it to finish or stop it before loading another case."
            return False
        return True

    def loadFiles(self, case: CaseFiles) -> None:
        """Replace the scene's content with the case's volumes and show the reference (first) input."""
        app = self.context.slicerApp
        app.segmentation_editor.deactivate_effect()
        app.scene.Clear()
        self.context.editing.reset()
        loaded, note = [], ""
        if case.dicom:
            node, problem = sceneio.loadDicomSeries(app.volumes_logic, case.files, self._seriesName(case))
            note = f" DICOM export will not be possible: {problem}." if problem else ""
            if node is None:
                self.state.case_message = f"Not loaded: {problem or 'the DICOM series could not be read as a volume'}."
                self.context.segment.refreshVolumes()
                return
            loaded.append(node)
        for path in () if case.dicom else case.files:
            node = app.volumes_logic.AddArchetypeVolume(str(path), volumeName(Path(path)))
            if node is None:
                self.state.case_message = f"'{Path(path).name}' could not be read as a volume."
                app.scene.Clear()
                self.context.segment.refreshVolumes()
                return
            loaded.append(node)
        if not loaded:
            self.state.case_message = "The case has no volume files."
            return
        self.context.segment.refreshVolumes()
        shown = self.context.segment.referenceVolume() or loaded[0]
        app.display_manager.show_volume_in_slice_background(shown)
        app.display_manager.reset_views()
        self.state.case_title = case.title
        self.state.case_message = f"Loaded {len(loaded)} volumes: {', '.join(n.GetName() for n in loaded)}.{note}"
        self.context.onCaseLoaded()

    @staticmethod
    def _seriesName(case: CaseFiles) -> str:
        """The volume name of a DICOM series as Slicer's DICOM loader gives it: "number: description"."""
        import pydicom

        try:
            first = pydicom.dcmread(case.files[0], stop_before_pixels=True)
        except Exception:  # unreadable header: the volume reader says so
            return "DICOM series"
        number, description = (
            first.get("SeriesNumber", ""),
            first.get("SeriesDescription", "") or first.get("Modality", "series"),
        )
        return f"{number}: {description}" if number not in ("", None) else str(description)
