"""The last prepared case kept between jobs of one long-lived process (``glims worker``), so a second Segment on
the same unchanged input files does not read and preprocess them again.

Only a process that installs a cache (:func:`use_case_cache`) keeps a case: ``glims.pipeline.segment_files``
prepares its inputs through :func:`prepared_case`, which without a cache simply calls
``glims.preprocessing.prepare_case``. The one entry is keyed by what makes the prepared case what it is: per input
file its resolved path, size, modification time (ns) and inode; the input names (they appear in messages); the
model's preprocessing settings, window size and the crop choice. A file replaced or rewritten on disk therefore
misses (the Slicer module writes a changed volume to a new file). Inputs that are folders (DICOM series) are
never cached: a file changed inside a folder leaves the folder's own identity as it was. The prepared arrays are
never modified by a job (inference and postprocessing read them), so one entry serves any number of jobs.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .catalog_sections import PreprocessingSpec
from .preprocessing import CasePreparation, prepare_case
from .workercache import CountingCache, InstalledCache

__all__ = ["CaseCache", "case_key", "prepared_case", "use_case_cache", "active_case_cache"]

_installed: InstalledCache[CaseCache] = InstalledCache()


def _file_identity(path: str | Path) -> tuple[Any, ...]:
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return (str(resolved), "missing")
    return (str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)


def case_key(
    paths: Sequence[str | Path],
    names: Sequence[str],
    preprocessing: PreprocessingSpec,
    roi_size: Sequence[int],
    crop: bool | None,
) -> tuple[Any, ...]:
    """What identifies a prepared case (see the module docstring)."""
    settings = json.dumps(asdict(preprocessing), sort_keys=True, default=str)
    return (tuple(_file_identity(p) for p in paths), tuple(names), settings, tuple(roi_size), crop)


class CaseCache(CountingCache):
    """One prepared case (the last one), reused while its key is unchanged.

    Args:
        on_lookup: called with a one-line message on every lookup (``case cache hit: ...`` or
            ``case cache miss: ...``); the worker turns it into a log line of the running job.
    """

    def __init__(self, on_lookup: Callable[[str], None] | None = None) -> None:
        super().__init__(on_lookup)
        self._key: tuple[Any, ...] | None = None
        self._case: CasePreparation | None = None

    def __len__(self) -> int:
        return 0 if self._case is None else 1

    def case(self, key: tuple[Any, ...], prepare: Callable[[], CasePreparation]) -> CasePreparation:
        """The cached case if ``key`` is the cached one's, else ``prepare()`` (kept for next time, replacing it)."""
        with self._lock:
            cached = self._case if key == self._key else None
            if cached is not None:
                self.stats.hits += 1
        if cached is not None:
            self._say("case cache hit: the inputs were read and prepared earlier in this worker")
            return cached
        self._say("case cache miss: reading and preparing the inputs")
        with self._lock:  # the old case's memory can go before the new one is made
            self._key, self._case = None, None
        prepared = prepare()  # raises InputError etc.; nothing is cached then
        with self._lock:
            self.stats.misses += 1
            self._key, self._case = key, prepared
        return prepared

    def clear(self) -> None:
        """Drop the cached case."""
        with self._lock:
            self._key, self._case = None, None


def prepared_case(
    paths: Sequence[str | Path],
    names: Sequence[str],
    preprocessing: PreprocessingSpec,
    roi_size: Sequence[int],
    crop: bool | None = None,
) -> CasePreparation:
    """``glims.preprocessing.prepare_case``, through the installed cache when there is one and every input is a
    file."""
    prepare = functools.partial(prepare_case, paths, names, preprocessing, roi_size, crop)
    cache = _installed.get()
    if cache is None or not all(Path(p).is_file() for p in paths):  # a DICOM folder's files may change unseen
        return prepare()
    return cache.case(case_key(paths, names, preprocessing, roi_size, crop), prepare)


def active_case_cache() -> CaseCache | None:
    """The cache installed in this process, if any."""
    return _installed.get()


def use_case_cache(cache: CaseCache) -> contextlib.AbstractContextManager[CaseCache]:
    """Within the block, ``glims.pipeline.segment_files`` keeps and reuses the last prepared case in ``cache``."""
    return _installed.use(cache)
