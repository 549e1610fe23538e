"""All-or-nothing output writing: files are written under temporary names beside their targets, then renamed
together; on any failure or cancellation before the commit, every temporary file is removed.

Before any work, ``check_targets`` makes sure no output would overwrite an input or another output (compared as
real paths, with ``./``, ``..`` and symlinks resolved, and by ``os.path.samefile`` for hard links), and that each
output's folder can be a folder. A temporary file is named ``.<stem>.partial-<pid>-<random>.<ext>``: a run killed
outright (SIGKILL, power loss) cannot remove its own, so ``remove_stale_partials`` — called by the next run that
writes to the same folder — deletes those whose process is gone (or, for a name without a live process id, that
are older than ``STALE_AFTER_S``). Nothing else in the folder is touched.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import OutputError

__all__ = [
    "OutputSet",
    "check_targets",
    "check_output_folder",
    "remove_stale_partials",
    "describe_write_error",
    "STALE_AFTER_S",
]

logger = logging.getLogger(__name__)

STALE_AFTER_S = 3600.0
"""Age after which a temporary output whose writer cannot be identified counts as abandoned."""

# ".<stem>.partial-<pid>-<8 hex>.<ext>", and the temporary files image writers make from such a name (which
# start with a further dot and keep the whole name inside)
_PARTIAL = re.compile(r"^\.+[^/]*?\.partial-(?:(?P<pid>\d+)-)?[0-9a-f]{8}(?:\.|$)")


def _same(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name the same file: equal real paths, or (both existing) ``samefile``."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


def _check_folder(path: Path, role: str) -> None:
    """Refuse an output file that is a folder, or whose folder cannot be a folder."""
    if path.is_dir():
        raise OutputError(f"cannot write the {role} {path}: it is a folder")
    _check_parents(path, role)


def check_output_folder(path: str | os.PathLike, role: str) -> None:
    """Refuse, before any work, an output folder that is a file or lies below one.

    Raises:
        OutputError: the message names the file in the way.
    """
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"cannot use {path} as the {role}: it is a file, not a folder")
    _check_parents(path, role)


def _check_parents(path: Path, role: str) -> None:
    """Refuse a path below a file (or a dangling link): its folder could not be created."""
    for parent in path.parents:
        if parent.is_dir():
            return
        if os.path.lexists(parent):
            what = "a file" if parent.exists() else "a broken symbolic link"
            raise OutputError(f"cannot write the {role} {path}: {parent} is {what}, not a folder")


def check_targets(outputs: Mapping[str, str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other, or cannot have a folder.

    Args:
        outputs: role (``segmentation``, ``report``...) -> path to write.
        inputs: files (or DICOM folders) that will be read.

    Raises:
        OutputError: an output is an input (also through ``./``, ``..``, a symlink or a hard link), two outputs
            are the same file, or a file stands where an output's folder should be.
    """
    input_paths = [Path(p) for p in inputs]
    seen: list[tuple[str, Path]] = []
    for role, target in outputs.items():
        target = Path(target)
        for source in input_paths:
            inside_dicom_folder = source.is_dir() and os.path.realpath(target).startswith(
                os.path.realpath(source) + os.sep
            )
            if _same(target, source) or inside_dicom_folder:
                raise OutputError(f"the {role} {target} would overwrite the input {source}; choose another output")
        for other_role, other in seen:
            if _same(target, other):
                raise OutputError(
                    f"the {role} and the {other_role} are the same file ({target}); give each output its own file"
                )
        seen.append((role, target))
        _check_folder(target, role)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def remove_stale_partials(folder: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Delete abandoned temporary outputs of glims in ``folder`` (not below it); returns what was removed.

    Only regular files named by glims's temporary pattern are candidates, and only those whose writing process no
    longer runs (same machine) or, without a process id, older than ``STALE_AFTER_S``.
    """
    folder = Path(folder)
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        pid = match.group("pid")
        try:
            stale = (
                (not _process_alive(int(pid)))
                if pid
                else now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            )
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
                logger.info("removed %s, left behind by an interrupted glims run", entry.path)
        except FileNotFoundError:
            continue
        except OSError as err:
            logger.warning("could not remove the abandoned temporary file %s: %s", entry.path, err)
    return removed


class OutputSet:
    """Collects outputs; ``commit()`` renames them all into place."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def staged(self, target: str | os.PathLike) -> Path:
        """A temporary path (same folder and extension as ``target``) to write ``target``'s content to."""
        target = Path(target)
        name = target.name
        stem, dot, ext = name.partition(".")
        tmp = target.with_name(f".{stem}.partial-{os.getpid()}-{secrets.token_hex(4)}{dot}{ext}")
        self._pending.append((tmp, target))
        return tmp

    def commit(self) -> list[Path]:
        """Rename every staged file into place.

        Raises:
            OutputError: a rename failed (the staged files not yet renamed are removed).
        """
        done = []
        for index, (tmp, target) in enumerate(self._pending):
            try:
                os.replace(tmp, target)
            except OSError as err:
                self._pending = self._pending[index:]
                self.discard()
                raise OutputError(f"cannot write {target}: {err.strerror or err}") from None
            done.append(target)
        self._pending.clear()
        return done

    def discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._pending.clear()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is not None:
            self.discard()


def describe_write_error(err: OSError, path: str | os.PathLike) -> OutputError:
    """One-line ``OutputError`` for a failed write of ``path`` (disk full, permissions...)."""
    if err.errno == errno.ENOSPC:
        return OutputError(f"cannot write {path}: the disk is full (nothing was written)")
    return OutputError(f"cannot write {path}: {err.strerror or err} (nothing was written)")
