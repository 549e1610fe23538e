"""The worker subprocess's entry point: ``python -m glims.bench worker KIND SPEC_JSON``."""

from __future__ import annotations

import sys

from . import TARGETS  # noqa: F401  (importing the targets registers their workers)
from .workers import worker_main

if __name__ == "__main__":  # pragma: no cover - run in the worker subprocesses
    sys.exit(worker_main(sys.argv[1:]))
