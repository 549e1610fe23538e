"""The engine's input files of the scene's volumes, kept between Segment clicks (MRML, no Qt).

The engine reads files, so every segmentation needs its input volumes on disk. Writing them on every click costs
time (four 1 mm brain volumes: about 140 MB), so :class:`InputFileCache` keeps the file it wrote for each input
and hands it out again while the volume is unchanged. *Unchanged* is what MRML can tell: the same node (ID), the
node's and its image data's modification times (``GetMTime``; VTK's modification counter is global and only grows,
so a replaced or modified volume, or its voxels changed and ``Modified()`` called, always looks different), and
the voxel type and dimensions.

A changed volume is written to a new file name (the engine's warm worker recognises a file by its path, size,
modification time and inode, so a rewritten file must not look like the old one) and the old file is removed.
The files live in one folder the cache owns (``GLIMSSegmenter-inputs-*`` under the logic's temporary root); they
are never user files. :meth:`InputFileCache.clear` removes the folder: the logic calls it when it releases the
worker, when the scene is closed, and it happens when the cache is garbage-collected or Python exits.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import sceneio

__all__ = ["InputFileCache", "volumeSignature"]


def volumeSignature(volumeNode) -> tuple:
    """What identifies a volume's content for the engine (see the module docstring)."""
    imageData = volumeNode.GetImageData()
    return (
        volumeNode.GetID(),
        volumeNode.GetMTime(),
        imageData.GetMTime(),
        imageData.GetScalarType(),
        imageData.GetNumberOfScalarComponents(),
        tuple(imageData.GetDimensions()),
    )


@dataclass
class _Entry:
    signature: tuple
    path: Path


class InputFileCache:
    """The last input file written per input role (e.g. ``flair``), reused while its volume is unchanged.

    Args:
        temporaryRoot: the folder in which the cache makes its own folder (None: the system's temporary folder),
            or a function that returns it when the folder is made.

    Attributes:
        reused, written: files handed out again / written since the last :meth:`takeCounts`.
    """

    def __init__(self, temporaryRoot: str | Callable[[], str | None] | None = None) -> None:
        self.temporaryRoot = temporaryRoot
        self.reused = 0
        self.written = 0
        self._folder: Path | None = None
        self._entries: dict[str, _Entry] = {}
        self._numbers = itertools.count(1)
        self._finalizer: weakref.finalize | None = None

    @property
    def folder(self) -> Path | None:
        """The cache's folder, None until a file was written (and after :meth:`clear`)."""
        return self._folder

    def fileFor(self, role: str, volumeNode) -> Path:
        """The input file of ``volumeNode`` for ``role``: the one written earlier if the volume is unchanged,
        else a freshly written one (the previous file of the role is removed).

        Raises:
            OSError: the file could not be written (the role's previous file is kept then).
        """
        signature = volumeSignature(volumeNode)
        entry = self._entries.get(role)
        if entry is not None and entry.signature == signature and entry.path.is_file():
            self.reused += 1
            return entry.path
        path = self._ownFolder() / f"{role}-{next(self._numbers)}.nrrd"
        try:
            sceneio.writeVolumeFile(volumeNode, path)
        except Exception:
            path.unlink(missing_ok=True)
            raise
        if entry is not None:
            entry.path.unlink(missing_ok=True)
        self._entries[role] = _Entry(signature, path)
        self.written += 1
        return path

    def takeCounts(self) -> tuple[int, int]:
        """(reused, written) since the last call, then count again from zero."""
        counts = (self.reused, self.written)
        self.reused = self.written = 0
        return counts

    def clear(self) -> None:
        """Forget every file and remove the cache's folder (only ever the folder it made itself)."""
        self._entries.clear()
        folder, self._folder = self._folder, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _ownFolder(self) -> Path:
        if self._folder is None or not self._folder.is_dir():
            self.clear()
            root = self.temporaryRoot() if callable(self.temporaryRoot) else self.temporaryRoot
            self._folder = Path(tempfile.mkdtemp(prefix="GLIMSSegmenter-inputs-", dir=root))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._folder), True)
        return self._folder
