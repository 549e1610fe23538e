"""The options of a segmentation run, declared once: device, window overlap, test-time flips, whole image, ...

Every layer derives its options from :data:`RUN_OPTIONS`: ``glims segment`` adds its arguments with
:func:`add_run_arguments`; the Slicer module builds from it its parameter node fields, the rows of its panel's
*Device and quality* section and the engine's arguments (``GLIMSSegmenterLib.runoptions``,
``GLIMSSegmenterLib.engine.segmentArguments``); the web app its form. A new option is one :class:`RunOption` here,
plus its effect in the engine (``glims.commands.segment.run``, ``glims.inference`` or ``glims.pipeline``).

An option not given (or a front end's option left at the model's own value) is not sent: the engine then applies
the model's own value (its catalog entry's, e.g. ``inference.overlap``), else the engine's default. This module
needs only the standard library and the catalog's constants (no torch).
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Mapping
from dataclasses import dataclass

from .catalog_sections import BLENDS, DEFAULT_OVERLAP, INFERENCE_PRECISIONS, PLACEMENTS

__all__ = [
    "OptionKind",
    "RunOption",
    "OptionValue",
    "RUN_OPTIONS",
    "DEVICES",
    "run_option",
    "front_end_options",
    "add_run_arguments",
    "given_arguments",
]

DEVICES = ("auto", "cpu", "cuda", "mps")
"""The devices the front ends offer (the command line also takes ``cuda:N``)."""


class OptionKind(enum.Enum):
    """What an option's value is, which decides its argument, its parameter type and its widget."""

    FLAG = "flag"
    """On or off: the flag alone turns it on (a check box)."""
    NUMBER = "number"
    """A decimal number within ``minimum``-``maximum`` (a slider)."""
    INTEGER = "integer"
    """A whole number of at least ``minimum`` (a spin box)."""
    CHOICE = "choice"
    """One of ``choices`` (a drop-down list)."""
    DEVICE = "device"
    """A compute device: one of :data:`DEVICES`, or ``cuda:N`` on the command line (the front ends offer the
    devices they found, with their names)."""
    THRESHOLDS = "thresholds"
    """Channel -> probability, one ``CH=P`` argument each (command line only)."""


_PARAMETER_TYPES = {
    OptionKind.FLAG: "bool",
    OptionKind.NUMBER: "float",
    OptionKind.INTEGER: "int",
    OptionKind.CHOICE: "str",
    OptionKind.DEVICE: "str",
}
"""Type name of each kind's value as the front ends store it (``THRESHOLDS`` is not offered by them)."""

OptionValue = bool | int | float | str | Mapping[str, float] | None
"""A front end's value for an option: channel -> probability for ``THRESHOLDS``, one value for the others, None
for "not given"."""


@dataclass(frozen=True)
class RunOption:
    """One option of a segmentation run.

    Attributes:
        name: the option's name in the front ends: the Slicer module's parameter (saved with scenes, so it never
            changes), keyword of ``segmentArguments`` and ``startSegmentation``, the web page's ``seg_<name>``.
        flag: the ``glims segment`` argument.
        kind: what its value is.
        help: the command line's help text.
        default: the engine's value when neither the command line nor the model sets one (None: the engine's own
            default, for the options the front ends do not offer); what the front ends start from.
        model_setting: the attribute of ``glims.catalog.ModelSpec`` that holds the model's own value (its catalog
            entry's, else ``default``), when a model may set its own; it replaces ``default`` in the front ends.
        choices: the values of a ``CHOICE`` option.
        minimum, maximum, step: the range a front end offers for a ``NUMBER`` or ``INTEGER`` (the engine checks
            its own range).
        metavar: the value's name in the command line's help.
        advanced: an expert setting offered on the command line only, not by the Slicer panel or the web page.
        label, tooltip: the front ends' row label and its explanation (required unless ``advanced``).
    """

    name: str
    flag: str
    kind: OptionKind
    help: str
    default: object = None
    model_setting: str | None = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    metavar: str | None = None
    advanced: bool = False
    label: str = ""
    tooltip: str = ""

    def __post_init__(self) -> None:
        if self.kind is OptionKind.CHOICE and not self.choices:
            raise ValueError(f"{self.name}: a choice needs its choices")
        if self.kind is OptionKind.FLAG and self.default is not False:
            raise ValueError(f"{self.name}: a flag is off unless given (default False)")
        if not self.advanced:
            if self.kind not in _PARAMETER_TYPES:
                raise ValueError(f"{self.name}: a {self.kind.value} option is offered on the command line only")
            if not (self.label and self.tooltip):
                raise ValueError(f"{self.name}: an option the front ends offer needs a label and a tooltip")
            if self.default is None:
                raise ValueError(f"{self.name}: the front ends need a default to start from")
            if self.kind in (OptionKind.NUMBER, OptionKind.INTEGER) and (self.minimum is None or self.maximum is None):
                raise ValueError(f"{self.name}: a number the front ends offer needs its minimum and maximum")

    @property
    def dest(self) -> str:
        """Its attribute in the parsed command line (``--no-crop`` -> ``no_crop``)."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def parameter_type(self) -> str:
        """The type name of its value in the front ends: ``bool``, ``float``, ``int`` or ``str``."""
        return _PARAMETER_TYPES[self.kind]

    def arguments(self, value: OptionValue) -> list[str]:
        """The ``glims segment`` arguments that give ``value``: none for None or an unset flag.

        Raises:
            TypeError: channel -> probability for an option of one value, or the other way round.
        """
        if value is None or (self.kind is OptionKind.FLAG and not value):
            return []
        if self.kind is OptionKind.FLAG:
            return [self.flag]
        if isinstance(value, Mapping) != (self.kind is OptionKind.THRESHOLDS):
            raise TypeError(f"{self.name}: a {self.kind.value} option cannot take {value!r}")
        if isinstance(value, Mapping):
            return [text for channel, p in value.items() for text in (self.flag, f"{channel}={float(p):g}")]
        if self.kind is OptionKind.NUMBER:
            return [self.flag, f"{float(value):g}"]
        if self.kind is OptionKind.INTEGER:
            return [self.flag, str(int(value))]
        return [self.flag, str(value)]


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption(
        "device",
        "--device",
        OptionKind.DEVICE,
        "auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps",
        default="auto",
        label="Device",
        tooltip="Automatic uses a GPU when one is available (CUDA or Apple MPS) and the CPU otherwise.",
    ),
    RunOption(
        "overlap",
        "--overlap",
        OptionKind.NUMBER,
        f"window overlap in [0, 1) (default: the model's, else {DEFAULT_OVERLAP:g})",
        default=DEFAULT_OVERLAP,
        model_setting="overlap",
        minimum=0.0,
        maximum=0.9,
        step=0.05,
        label="Window overlap",
        tooltip="How much neighbouring sliding windows overlap. More overlap: smoother results, longer runs.",
    ),
    RunOption(
        "blend",
        "--blend",
        OptionKind.CHOICE,
        "how overlapping windows are combined (default: the model's)",
        choices=BLENDS,
        advanced=True,
    ),
    RunOption(
        "placement",
        "--placement",
        OptionKind.CHOICE,
        "where the windows go (default: the model's): step, every window x (1 - overlap) voxels as MONAI places "
        "them, or even, spread evenly with their spacing nearest to that (fewer windows)",
        choices=PLACEMENTS,
        advanced=True,
    ),
    RunOption(
        "swBatchSize", "--sw-batch-size", OptionKind.INTEGER, "windows per forward pass", minimum=1, advanced=True
    ),
    RunOption(
        "precision",
        "--precision",
        OptionKind.CHOICE,
        "arithmetic of the network (default: the model's)",
        choices=INFERENCE_PRECISIONS,
        advanced=True,
    ),
    RunOption(
        "threads",
        "--threads",
        OptionKind.INTEGER,
        "CPU threads (default: small windows run as one stream per core; large windows get one thread per core "
        "that other programs left free, measured before the job)",
        minimum=1,
        advanced=True,
    ),
    RunOption(
        "testTimeFlips",
        "--tta",
        OptionKind.FLAG,
        "test-time flips (4x slower, smoother)",
        default=False,
        label="Test-time flips",
        tooltip="Average the predictions of four mirrored copies: about 4 times slower. It did not help the "
        "bundled BraTS model (see its model card).",
    ),
    RunOption(
        "noPostprocess",
        "--no-postprocess",
        OptionKind.FLAG,
        "skip the small-component clean-up",
        default=False,
        advanced=True,
    ),
    RunOption(
        "wholeImage",
        "--no-crop",
        OptionKind.FLAG,
        "run windows over the whole image, not just the foreground",
        default=False,
        label="Whole image",
        tooltip="Run the windows over the whole image, as the reference pipeline does, instead of only over the "
        "brain or body: about 3 times slower.",
    ),
    RunOption(
        "thresholds",
        "--threshold",
        OptionKind.THRESHOLDS,
        "sigmoid threshold override, e.g. --threshold ET=0.5 (repeatable)",
        metavar="CH=P",
        advanced=True,
    ),
)
"""Every option of a segmentation run, in the order of ``glims segment --help`` and of the panel's rows."""


def run_option(name: str, options: tuple[RunOption, ...] | None = None) -> RunOption:
    """The option called ``name`` among ``options`` (default: :data:`RUN_OPTIONS`); raises KeyError naming the
    known ones."""
    options = RUN_OPTIONS if options is None else options
    for option in options:
        if option.name == name:
            return option
    raise KeyError(f"no run option {name!r}; known: {', '.join(o.name for o in options)}")


def front_end_options(options: tuple[RunOption, ...] | None = None) -> tuple[RunOption, ...]:
    """The options the Slicer panel and the web page offer (all but the advanced ones of ``options``, default
    :data:`RUN_OPTIONS`), in order."""
    return tuple(option for option in (RUN_OPTIONS if options is None else options) if not option.advanced)


def add_run_arguments(
    parser: argparse.ArgumentParser,
    options: tuple[RunOption, ...] | None = None,
    help_prefix: str = "",
) -> None:
    """Add one argument per option: flags store True; the others default to None ("not given"), so the command
    can tell the model's own value from one the user chose.

    Args:
        parser: the command's parser.
        options: which options (default: all).
        help_prefix: put before each help text (e.g. ``"with -m: "``).
    """
    for option in RUN_OPTIONS if options is None else options:
        text = help_prefix + option.help
        if option.kind is OptionKind.FLAG:
            parser.add_argument(option.flag, action="store_true", help=text)
        elif option.kind is OptionKind.THRESHOLDS:
            parser.add_argument(option.flag, action="append", default=[], metavar=option.metavar, help=text)
        elif option.kind is OptionKind.CHOICE:
            parser.add_argument(option.flag, choices=option.choices, default=None, help=text)
        elif option.kind is OptionKind.NUMBER:
            parser.add_argument(option.flag, type=float, default=None, metavar=option.metavar, help=text)
        elif option.kind is OptionKind.INTEGER:
            parser.add_argument(option.flag, type=int, default=None, metavar=option.metavar, help=text)
        else:
            parser.add_argument(option.flag, default=None, metavar=option.metavar, help=text)


def given_arguments(values: Mapping[str, OptionValue], options: tuple[RunOption, ...] | None = None) -> list[str]:
    """The ``glims segment`` arguments for option name -> value (None and unset flags give nothing).

    Raises:
        KeyError: a name that is not an option.
    """
    options = RUN_OPTIONS if options is None else options
    unknown = sorted(set(values) - {option.name for option in options})
    if unknown:
        raise KeyError(f"no run option {', '.join(map(repr, unknown))}; known: {', '.join(o.name for o in options)}")
    return [text for option in options for text in option.arguments(values.get(option.name))]
