"""Inter-process locks on glims's shared state: the user catalog, the case store and each fine-tuning run name.

Several glims processes (two terminals, the Slicer module and a script) may change the same glims home at once.
Every read-modify-write of the user catalog and every change of the case store happens while holding that
store's lock; a fine-tuning run holds the lock of its model name from start to end, so a second run of the same
name is refused at once instead of after its training. The locks are ``filelock`` locks on files in the store's
folder (``.catalog.lock``, ``.cases.lock``, ``.<name>.lock``); the operating system releases them when a process
dies, so a killed run never leaves a stale lock behind.

``filelock`` is imported when a lock is taken, so reading the catalog needs nothing beyond the standard library.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import ConfigError
from .paths import check_name, home_folder

if TYPE_CHECKING:
    from filelock import FileLock

__all__ = ["STORE_WAIT_S", "catalog_lock", "case_store_lock", "finetune_name_lock"]

STORE_WAIT_S = 120.0
"""Longest wait for another process's catalog or case-store change (each lasts well under a second)."""

_LOCKS: dict[str, FileLock] = {}


@contextlib.contextmanager
def _held(lock_path: os.PathLike, timeout: float, busy: str) -> Iterator[None]:
    from filelock import FileLock, Timeout

    key = os.path.realpath(lock_path)
    lock = _LOCKS.setdefault(key, FileLock(key))  # one object per file: re-entrant within a thread
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise ConfigError(busy) from None
    try:
        yield
    finally:
        lock.release()


def _store_lock(
    kind: str, file_name: str, what: str, home: str | os.PathLike | None
) -> contextlib.AbstractContextManager[None]:
    """The lock of one of glims's stores: waits up to ``STORE_WAIT_S`` for another process."""
    path = home_folder(kind, home, create=True) / file_name
    return _held(
        path, STORE_WAIT_S, f"{what} stayed locked by another glims process for {STORE_WAIT_S:.0f} s (lock {path})"
    )


def catalog_lock(home: str | os.PathLike | None = None) -> contextlib.AbstractContextManager[None]:
    """Hold the user catalog's lock (a context manager; waits up to ``STORE_WAIT_S`` for another process)."""
    return _store_lock("models", ".catalog.lock", "the user model catalog", home)


def case_store_lock(home: str | os.PathLike | None = None) -> contextlib.AbstractContextManager[None]:
    """Hold the case store's lock (a context manager; waits up to ``STORE_WAIT_S`` for another process)."""
    return _store_lock("cases", ".cases.lock", "the training-set store", home)


@contextlib.contextmanager
def finetune_name_lock(name: str, home: str | os.PathLike | None = None) -> Iterator[None]:
    """Hold the lock of fine-tuning runs named ``name`` for the whole run; refuse at once if another has it.

    Raises:
        ConfigError: another fine-tuning of ``name`` is running.
    """
    lock_path = home_folder("finetune", home, create=True) / f".{check_name(name, 'model name')}.lock"
    with _held(
        lock_path, 0, f"another `glims finetune --name {name}` is running; wait for it to end or choose another name"
    ):
        yield
