"""Loaded networks kept between jobs of one long-lived process (``glims worker``), so a second job on the same
model does not read, verify and build it again.

Only a process that installs a cache (:func:`use_model_cache`) keeps networks: ``glims.inference.load_models`` asks
the installed cache, and without one loads as before. An entry is keyed by what makes its networks what they are:
model id and version, the architecture, and per weights file its path, catalog sha256, size and modification time
(a file replaced on disk is loaded and verified again). Device and precision are not part of the key: the networks
stay on the CPU between jobs (``predict_logits`` moves them to the job's device and back) and precision is applied
by autocast while a job runs, so one entry serves every device and precision. The least recently used entry is
dropped when the cache is full.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .catalog import ModelSpec
from .workercache import CacheStats, CountingCache, InstalledCache

__all__ = ["ModelCache", "CacheStats", "use_model_cache", "active_model_cache", "cache_key"]

_installed: InstalledCache[ModelCache] = InstalledCache()


def cache_key(spec: ModelSpec) -> tuple[Any, ...]:
    """What identifies the networks of ``spec`` (see the module docstring)."""
    files = []
    for weights in spec.weights:
        try:
            stat = weights.path.stat()
            identity: tuple[Any, ...] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            identity = ("missing",)
        files.append((str(weights.path), weights.sha256, *identity))
    return (spec.id, spec.version, json.dumps(dict(spec.architecture), sort_keys=True), tuple(files))


class ModelCache(CountingCache):
    """Up to ``capacity`` models' networks, least recently used dropped first.

    Args:
        capacity: models kept (each entry holds every network of one catalog entry).
        on_lookup: called with a one-line message on every lookup (``model cache hit: ID@VERSION`` or
            ``model cache miss: ...``); the worker turns it into a log line of the running job.
    """

    def __init__(self, capacity: int = 2, on_lookup: Callable[[str], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("a model cache holds at least one model")
        super().__init__(on_lookup)
        self.capacity = capacity
        self._entries: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def models(self, spec: ModelSpec, load: Callable[[ModelSpec], list[Any]]) -> list[Any]:
        """The networks of ``spec``: cached ones, or ``load(spec)`` (kept for next time)."""
        key = cache_key(spec)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self.stats.hits += 1
        if cached is not None:
            self._say(f"model cache hit: {spec.ref} (loaded earlier in this worker)")
            return cached
        self._say(f"model cache miss: loading {spec.ref}")
        loaded = load(spec)  # raises CheckpointError etc.; nothing is cached then
        with self._lock:
            self.stats.misses += 1
            self._entries[key] = loaded
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return loaded

    def clear(self) -> None:
        """Drop every network (the memory returns to the allocator)."""
        with self._lock:
            self._entries.clear()


def active_model_cache() -> ModelCache | None:
    """The cache installed in this process, if any."""
    return _installed.get()


def use_model_cache(cache: ModelCache) -> contextlib.AbstractContextManager[ModelCache]:
    """Within the block, ``glims.inference.load_models`` keeps and reuses networks in ``cache``."""
    return _installed.use(cache)
