"""The ``glims`` command line keeps freed memory for reuse in its own process (glibc), unless told not to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from glims.cli import UsageError, build_parser

ENGINE = Path(__file__).resolve().parents[2] / "GLIMSSegmenter"

# Runs a cheap glims command in a fresh process, then frees and re-allocates a 64 MiB block and prints how many
# pages the second allocation had to fault in: ~16,000 when the block went back to the OS, ~0 when it was kept.
_PROBE = """
import resource, sys
from glims.cli import main
main([*sys.argv[1:], "models"])
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = bytearray(64 << 20)
del block
before = faults()
block = bytearray(64 << 20)
print(faults() - before)
"""


def _faults_after_reuse(*cli_args: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ENGINE), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *cli_args], capture_output=True, text=True, check=True, env=env
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_command_line_keeps_freed_memory_unless_asked_for_the_default():
    kept = _faults_after_reuse()
    returned = _faults_after_reuse("--allocator", "default")
    pages = (64 << 20) // 4096
    assert returned > pages // 2, returned
    assert kept < pages // 20, kept


def test_allocator_choices_are_validated():
    parser = build_parser()
    assert parser.parse_args(["models"]).allocator == "retain"
    with pytest.raises(UsageError, match="invalid choice: 'jemalloc'"):
        parser.parse_args(["--allocator", "jemalloc", "models"])
