"""File names made from node and segment names: safe on every file system, and unique within one export.

Names come from users (``NCR/NET``, ``a:b``, ``Œdème``): letters and digits of any script are kept, and ``-_.``
too; every run of anything else (path separators, ``:``, spaces, control characters) becomes one ``_``. Leading and
trailing dots and underscores are dropped (no hidden files, no ``..``; Windows ignores trailing dots), names
reserved on Windows get a ``_`` prefix, and long names are cut.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["safeFileName", "uniqueFileNames"]

KEPT = "-_."
MAX_LENGTH = 100
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def safeFileName(name: str, fallback: str = "segment") -> str:
    """``name`` as a file-name stem (no extension); ``fallback`` when nothing usable is left."""
    safe = re.sub(r"_{2,}", "_", "".join(c if c.isalnum() or c in KEPT else "_" for c in name))
    safe = safe.strip("._")[:MAX_LENGTH].rstrip("._")
    if not safe:
        return fallback
    if safe.split(".")[0].upper() in _WINDOWS_RESERVED:
        safe = "_" + safe
    return safe


def uniqueFileNames(names: Sequence[str], fallback: str = "segment") -> list[str]:
    """Safe stems for ``names``, in order, made unique (case-insensitively) with ``_2``, ``_3``... suffixes."""
    taken: set[str] = set()
    out = []
    for name in names:
        stem = safeFileName(name, fallback)
        candidate, number = stem, 1
        while candidate.lower() in taken:
            number += 1
            candidate = f"{stem}_{number}"
        taken.add(candidate.lower())
        out.append(candidate)
    return out
