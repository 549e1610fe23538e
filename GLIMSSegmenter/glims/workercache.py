"""What the caches of a long-lived process (``glims worker``) share: hit and miss counts, a one-line message per
lookup for the running job's log, and the one cache of each kind installed in the process.

``glims.modelcache`` (loaded networks) and ``glims.casecache`` (the last prepared case) build on these.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["CacheStats", "CountingCache", "InstalledCache"]


@dataclass
class CacheStats:
    """Lookups since the cache was made (or since :meth:`CountingCache.reset_stats`)."""

    hits: int = 0
    misses: int = 0


class CountingCache:
    """Counts hits and misses and says each lookup to ``on_lookup`` (the worker turns it into a log line).

    Args:
        on_lookup: called with a one-line message on every lookup, or None.
    """

    def __init__(self, on_lookup: Callable[[str], None] | None = None) -> None:
        self.on_lookup = on_lookup
        self.stats = CacheStats()
        self._lock = threading.Lock()

    def reset_stats(self) -> CacheStats:
        """The counts so far, then start counting again."""
        with self._lock:
            stats, self.stats = self.stats, CacheStats()
        return stats

    def _say(self, message: str) -> None:
        if self.on_lookup is not None:
            self.on_lookup(message)


CacheT = TypeVar("CacheT")


class InstalledCache(Generic[CacheT]):
    """The cache of one kind that this process uses, if any (installed for a block with :meth:`use`)."""

    def __init__(self) -> None:
        self._active: CacheT | None = None

    def get(self) -> CacheT | None:
        """The installed cache, or None."""
        return self._active

    @contextlib.contextmanager
    def use(self, cache: CacheT) -> Iterator[CacheT]:
        """Install ``cache`` for the block (the previous one comes back after it)."""
        previous, self._active = self._active, cache
        try:
            yield cache
        finally:
            self._active = previous
