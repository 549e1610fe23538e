"""Where glims keeps its own files, the one rule for names that become part of a path, and the one deletion.

glims writes its own state only under the **glims home**: an explicit ``home`` argument (``--home``), else the
``GLIMS_HOME`` environment variable, else a per-user folder (``~/.local/share/glims`` on Linux, ``~/Library/
Application Support/glims`` on macOS, ``%LOCALAPPDATA%/glims`` on Windows). Inside it: ``models/`` (the user
catalog and its weights), ``cases/`` (the training-set store), ``finetune/`` (fine-tuning runs) and ``replay/``
(generated replay cases).

Every user-given identifier that becomes a file or folder name (model id, fine-tuned model name, case id) passes
``check_name`` before any work. Every folder glims creates under the home carries a marker file
(``OWNED_MARKER``), and ``remove_owned`` is the only way glims deletes anything there: it refuses whatever is not
inside the home once symlinks are resolved, or was not marked by glims.

Standard library only: the Slicer module imports it without torch.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from .errors import ConfigError, OutputError

__all__ = [
    "NAME_MAX_LENGTH",
    "OWNED_MARKER",
    "user_home",
    "home_folder",
    "check_name",
    "is_inside",
    "make_owned_dir",
    "mark_owned",
    "remove_owned",
]

NAME_MAX_LENGTH = 64
"""Longest accepted identifier (leaves room for ``-<version>.safetensors`` within any file system's name limit)."""

OWNED_MARKER = ".glims-owned"
"""File glims writes into every folder it creates under the home; ``remove_owned`` deletes only marked folders."""

_NAME_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)
# device names Windows reserves in every folder (also with an extension)
_RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def user_home(home: str | os.PathLike | None = None) -> Path:
    """The glims home (not created here): ``home``, else ``$GLIMS_HOME``, else the platform's per-user folder."""
    if home is not None:
        return Path(home).expanduser()
    if os.environ.get("GLIMS_HOME"):
        return Path(os.environ["GLIMS_HOME"]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "glims"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "glims"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "glims"


def home_folder(kind: str, home: str | os.PathLike | None = None, *, create: bool = False) -> Path:
    """``<home>/<kind>``: ``models``, ``cases``, ``finetune`` or ``replay``.

    Args:
        create: create it (and the home) if missing and make sure it carries glims's marker (also when an
            earlier glims version created it without one: these folder names are glims's own).

    Raises:
        OutputError: with ``create``, a file stands where the folder belongs.
    """
    if kind not in ("models", "cases", "finetune", "replay"):
        raise ValueError(f"unknown glims folder {kind!r}")
    folder = user_home(home) / kind
    if create:
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise OutputError(
                f"cannot use {folder}: glims needs a folder of its own there, not a file or a link "
                "(to keep glims's files elsewhere, point GLIMS_HOME there)"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise OutputError(f"cannot create {folder}: a file stands in the way") from None
        mark_owned(folder)
    return folder


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a safe identifier for a file or folder name, else raise.

    Allowed: 1 to ``NAME_MAX_LENGTH`` ASCII letters, digits, ``.``, ``_`` and ``-``, starting and ending with a
    letter or digit, without ``..`` and not a device name Windows reserves. So a name can never be a path
    (no separator, no ``..``, not absolute), hidden, empty or too long for a file system.

    Raises:
        ConfigError: one line saying what is wrong with the name.
    """
    rule = f"use 1 to {NAME_MAX_LENGTH} letters, digits, '.', '_' and '-', starting and ending with a letter or digit"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"invalid {what} {name!r}: empty; {rule}")
    if len(name) > NAME_MAX_LENGTH:
        raise ConfigError(f"invalid {what} {name[:20]!r}...: {len(name)} characters is too long; {rule}")
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ConfigError(f"invalid {what} {name!r}: a name, not a path, is needed; {rule}")
    if ".." in name or not _NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"invalid {what} {name!r}: {rule}")
    if name.split(".")[0].lower() in _RESERVED_NAMES:
        raise ConfigError(f"invalid {what} {name!r}: a device name reserved by Windows")
    return name


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` lies strictly inside ``folder``, both compared with every symlink resolved."""
    real_path, real_folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real_path != real_folder and real_path.is_relative_to(real_folder)


def mark_owned(folder: str | os.PathLike) -> Path:
    """Write glims's marker into an existing ``folder`` that glims created (idempotent); returns the folder."""
    folder = Path(folder)
    marker = folder / OWNED_MARKER
    if not marker.is_file():
        marker.write_text("created by glims; glims may delete this folder\n")
    return folder


def make_owned_dir(path: str | os.PathLike, home: str | os.PathLike | None = None) -> Path:
    """Create ``path`` (and its parents up to the home), each new folder marked as glims's; returns ``path``.

    Raises:
        OutputError: ``path`` would not lie inside the glims home, or a file stands where a folder is needed.
    """
    root = user_home(home)
    path = Path(path)
    if not is_inside(path, root):
        raise OutputError(f"refusing to create {path}: not inside the glims home {root}")
    missing = []
    probe = path
    while not probe.exists() and probe != root:
        missing.append(probe)
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"cannot create {path}: {probe} is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise OutputError(f"cannot create {folder}: a file of that name exists") from None
            continue  # created by a concurrent glims process at the same moment: it marks it too
        mark_owned(folder)
    return path


def remove_owned(path: str | os.PathLike, home: str | os.PathLike | None = None) -> None:
    """Delete a folder (with its contents) or a file that glims created inside the glims home.

    A folder must carry glims's marker; a file must lie in a marked folder. Both must be inside the home once
    every symlink is resolved, and the path itself must not be a symlink (the link would point elsewhere).
    A path that does not exist is left alone.

    Raises:
        OutputError: the path is outside the home, a symlink, the home itself, or not marked as glims's.
    """
    path = Path(path)
    root = user_home(home)
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise OutputError(f"refusing to delete {path}: a symbolic link (glims deletes only what it created)")
    if not is_inside(path, root):
        raise OutputError(f"refusing to delete {path}: not inside the glims home {root}")
    real = Path(os.path.realpath(path))
    owner = real if real.is_dir() else real.parent
    marker = owner / OWNED_MARKER
    if marker.is_symlink() or not marker.is_file() or not is_inside(owner, root):
        raise OutputError(f"refusing to delete {path}: glims did not create it (no {OWNED_MARKER} marker)")
    if real.is_dir():
        shutil.rmtree(real)
    else:
        real.unlink()
