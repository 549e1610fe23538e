"""All-or-nothing output writing: files are written under temporary names beside their targets, then renamed
together; on any failure or cancellation before the commit, every temporary file is removed."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["OutputSet"]


class OutputSet:
    """Collects outputs; ``commit()`` renames them all into place."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def staged(self, target: str | os.PathLike) -> Path:
        """A temporary path (same folder and extension as ``target``) to write ``target``'s content to."""
        target = Path(target)
        name = target.name
        stem, dot, ext = name.partition(".")
        tmp = target.with_name(f".{stem}.partial-{secrets.token_hex(4)}{dot}{ext}")
        self._pending.append((tmp, target))
        return tmp

    def commit(self) -> list[Path]:
        done = []
        for tmp, target in self._pending:
            os.replace(tmp, target)
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

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is not None:
            self.discard()
