"""What every benchmark target is: its command-line options, its typed run spec, and how it runs."""

from __future__ import annotations

import argparse
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, get_args, get_type_hints

from ..cpu_allocator import ALLOCATORS
from ..errors import ConfigError
from ..progress import CancelToken, ProgressCallback
from .report import BenchReport

__all__ = [
    "BenchTarget",
    "CHOICES",
    "PRECISIONS",
    "SHORT_FLAGS",
    "add_spec_options",
    "config_keys",
    "spec_from_namespace",
    "split_keys",
]

PRECISIONS = ("fp32", "bf16", "fp16")
"""Autocast choices of the ``network`` and ``segment`` targets (fp16: GPUs only)."""

SHORT_FLAGS = {"model": "-m"}
"""The one-letter flags of spec-field options, by field."""

CHOICES: dict[str, tuple[str, ...]] = {"precision": PRECISIONS, "allocator": ALLOCATORS}
"""The allowed values of spec-field options that take only a few, by field."""

SpecT = TypeVar("SpecT")


class BenchTarget(ABC, Generic[SpecT]):
    """One benchmark: its CLI arguments, the typed spec they make, and how to run a spec.

    ``run`` takes the spec dataclass, not command-line arguments, so the benchmark is callable from Python with
    ``target.run(Spec(...))``; ``spec_from_args`` is the one place that reads the ``argparse`` namespace.
    """

    name: str = ""
    help: str = ""
    spec_type: type[SpecT]
    """The spec dataclass; its fields name the parsed options and its defaults are theirs."""

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this target's options to its ``glims bench NAME`` subparser."""

    def spec_from_args(self, args: argparse.Namespace) -> SpecT:
        """The run spec of parsed ``glims bench NAME`` arguments (override only for options the spec renames)."""
        return spec_from_namespace(self.spec_type, args)

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


def spec_from_namespace(spec_type: type[SpecT], args: argparse.Namespace, **renamed: Any) -> SpecT:
    """A spec built from parsed arguments over its fields: each field from the option of its name (comma-separated
    text for a field whose default is a tuple, through ``split_keys``), from ``renamed`` where the target's option
    differs, and its default where there is no such option."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(spec_type):  # type: ignore[arg-type]
        if field.name in renamed:
            values[field.name] = renamed[field.name]
        elif hasattr(args, field.name):
            value = getattr(args, field.name)
            values[field.name] = split_keys(value) if isinstance(field.default, tuple) else value
    return spec_type(**values)


def add_spec_options(parser: argparse.ArgumentParser, spec_type: type[Any], helps: Mapping[str, str | None]) -> None:
    """Add ``--field-name`` options for the spec fields named in ``helps``, in its order, each with its help text
    (None: none), the field's default and the field's type (int, float or Path; ``SHORT_FLAGS`` and ``CHOICES``
    add the rest). A tuple default is shown as comma-separated text, which ``spec_from_namespace`` splits back."""
    hints = get_type_hints(spec_type)
    for name, help_text in helps.items():
        default = _field_default(spec_type, name)
        if isinstance(default, tuple):
            default = ",".join(str(value) for value in default)
        flags = [flag for flag in (SHORT_FLAGS.get(name), "--" + name.replace("_", "-")) if flag]
        settings: dict[str, Any] = {"choices": CHOICES[name]} if name in CHOICES else {}
        kinds = [kind for kind in get_args(hints[name]) or (hints[name],) if kind is not type(None)]
        if len(kinds) == 1 and kinds[0] in (int, float, Path):
            settings["type"] = kinds[0]
        parser.add_argument(*flags, default=default, help=help_text, **settings)


def _field_default(spec_type: type[Any], name: str) -> Any:
    field = next(f for f in dataclasses.fields(spec_type) if f.name == name)
    return None if field.default is dataclasses.MISSING else field.default
