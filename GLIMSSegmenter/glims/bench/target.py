"""What every benchmark target is: its command-line options, its typed run spec, and how it runs."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import Any, Generic, TypeVar

from ..errors import ConfigError
from ..progress import CancelToken, ProgressCallback
from .report import BenchReport

__all__ = ["BenchTarget", "PRECISIONS", "config_keys", "split_keys"]

PRECISIONS = ("fp32", "bf16", "fp16")
"""Autocast choices of the ``network`` and ``segment`` targets (fp16: GPUs only)."""

SpecT = TypeVar("SpecT")


class BenchTarget(ABC, Generic[SpecT]):
    """One benchmark: its CLI arguments, the typed spec they make, and how to run a spec.

    ``run`` takes the spec dataclass, not command-line arguments, so the benchmark is callable from Python with
    ``target.run(Spec(...))``; ``spec_from_args`` is the one place that reads the ``argparse`` namespace.
    """

    name: str = ""
    help: str = ""

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this target's options to its ``glims bench NAME`` subparser."""

    @abstractmethod
    def spec_from_args(self, args: argparse.Namespace) -> SpecT:
        """The run spec of parsed ``glims bench NAME`` arguments."""

    @abstractmethod
    def run(
        self, spec: SpecT, *, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> BenchReport:
        """Measure and return the report (raises ``GlimsError`` subclasses on failure)."""


def split_keys(text: Any) -> tuple[str, ...]:
    """The names in a comma-separated option value, blanks dropped."""
    return tuple(k.strip() for k in str(text).split(",") if k.strip())


def config_keys(keys: Sequence[str], known: Collection[str]) -> list[str]:
    """The configurations of a ``--configs`` value, checked: each one of ``known``, at least one."""
    if not keys or any(k not in known for k in keys):
        raise ConfigError(f"--configs: choose from {', '.join(known)}")
    return list(keys)
