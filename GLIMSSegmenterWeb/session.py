"""The server's own temporary folder: uploads, the generated sample case, engine jobs and exports.

Created at start (private to the user, mode 0700) and removed when the server exits; nothing outside it is ever
deleted by the web app.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from pathlib import Path

__all__ = ["SessionFolder"]

logger = logging.getLogger(__name__)


class SessionFolder:
    """A temporary folder with one subfolder per use; :meth:`remove` (also run at exit) deletes it."""

    def __init__(self, parent: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="glims-web-", dir=parent))
        atexit.register(self.remove)

    def sub(self, name: str) -> Path:
        """``<root>/<name>``, created if needed."""
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        return folder

    def fresh(self, name: str) -> Path:
        """An empty ``<root>/<name>`` (what it held before is deleted)."""
        folder = self.root / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return folder

    def remove(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
            logger.info("removed the session folder %s", self.root)
