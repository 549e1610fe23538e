"""Keeping freed memory in the process for reuse (glibc), instead of returning large blocks to the OS.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (at most 32 MiB with the
default dynamic threshold) with a fresh ``mmap`` and unmaps them on free, so every large activation (85 MB for a
24 x 96^3 float32 map) is page-faulted in again on its next use: on this project's CPUs that costs about as much as
the arithmetic of an element-wise op on it. ``retain_freed_memory()`` raises the mmap and trim thresholds so large
blocks come from the heap and stay there once freed; repeated forwards then reuse the same pages.

The price: the process keeps its peak heap until it exits (resident memory does not drop after a job). That is
right for a command-line job or a worker process, and a choice for a long-lived host application: the ``glims``
command line applies it to its own process by default (``glims --allocator default ...`` opts out), importing the
library never does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["ALLOCATORS", "retain_freed_memory"]

ALLOCATORS = ("retain", "default")
"""Allocator policies a process can choose: keep freed memory for reuse, or the C library's default."""

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_memory(max_block_bytes: int = 1 << 30) -> bool:
    """Make glibc serve blocks up to ``max_block_bytes`` from the heap and never trim it. Process-wide.

    Args:
        max_block_bytes: largest block kept on the heap (larger ones are still mmap-ed). Defaults to 1 GiB.

    Returns:
        True if applied; False where the C library is not glibc (macOS, Windows, musl) or refused the setting.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    limit = min(int(max_block_bytes), 2**31 - 1)
    applied = bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    if not applied:
        logger.info("the C library refused the allocator settings; freed memory is returned to the OS as usual")
    return applied
