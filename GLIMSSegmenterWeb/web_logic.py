"""The module's logic with the web server's job folder: engine inputs and outputs stay in the session folder."""

from __future__ import annotations

from pathlib import Path

from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic

__all__ = ["WebSegmenterLogic"]


class WebSegmenterLogic(GLIMSSegmenterLogic):
    """``GLIMSSegmenterLogic`` whose temporary job folders are made in ``jobsFolder`` (removed at exit).

    Args:
        jobsFolder: the session's folder for engine jobs.
        glimsHome: the engine's user folder (None: ``GLIMS_HOME`` or the default).
    """

    def __init__(self, jobsFolder: Path, glimsHome=None) -> None:
        super().__init__(glimsHome=glimsHome)
        self.jobsFolder = Path(jobsFolder)

    def temporaryRoot(self) -> str:
        return str(self.jobsFolder)
