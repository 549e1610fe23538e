"""The typed sections of a catalog entry: ``preprocessing``, ``output``, ``postprocessing`` and ``inference``.

``glims.catalog.spec_from_entry`` builds them once, when an entry is read, from the entry's section merged over its
preset's (``resources/presets.json``); a setting that neither gives takes the default of its field here, which is
the one home of that default. Readers use the attributes.

``resources/models.schema.json`` checks the ``inference`` section when a catalog is read; ``from_dict`` checks what
the schema leaves open: the names of activations and intensity rules, and the channels that paint steps name.

Each section keeps the JSON it was read from (``written``) and gives it back unchanged (``to_dict``): ``glims
models --json`` prints what the catalog says, and an entry copied from a model (a fine-tuned version) says the same.
Build sections with ``from_dict``, so that the two agree.

This module needs only the standard library: the Slicer module reads the catalog without torch or numpy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import CatalogError

__all__ = [
    "Activation",
    "ACTIVATIONS",
    "IntensityKind",
    "INTENSITY_KINDS",
    "Blend",
    "BLENDS",
    "Placement",
    "PLACEMENTS",
    "Precision",
    "INFERENCE_PRECISIONS",
    "DEFAULT_OVERLAP",
    "CROP_MARGIN",
    "IntensitySpec",
    "PreprocessingSpec",
    "PaintStep",
    "OutputSpec",
    "CleanupRule",
    "HoleFilling",
    "PostprocessingSpec",
    "InferenceSpec",
]

Activation = Literal["sigmoid", "softmax"]
"""How logits become probabilities: independent sigmoid channels (overlapping regions, thresholded and painted in
order) or a softmax over background and the labels (arg-max)."""
ACTIVATIONS: tuple[Activation, ...] = get_args(Activation)
IntensityKind = Literal["zscore_nonzero", "window"]
"""``zscore_nonzero``: per channel, (v - mean) / std over the non-zero voxels; ``window``: clip to [min, max] and
scale to [0, 1]."""
INTENSITY_KINDS: tuple[IntensityKind, ...] = get_args(IntensityKind)
Blend = Literal["gaussian", "constant"]
"""How overlapping windows are blended: centre-weighted or flat."""
BLENDS: tuple[Blend, ...] = get_args(Blend)
Placement = Literal["step", "even"]
"""Where the sliding windows go along each axis: every window x (1 - overlap) voxels, the last moved back to the
edge (MONAI's), or spread evenly from edge to edge (``glims.sliding_window``)."""
PLACEMENTS: tuple[Placement, ...] = get_args(Placement)
Precision = Literal["fp32", "bf16", "fp16"]
"""Arithmetic of a segmentation run (``glims segment --precision``); bf16 and fp16 through autocast."""
INFERENCE_PRECISIONS: tuple[Precision, ...] = get_args(Precision)
DEFAULT_OVERLAP = 0.5
"""Sliding-window overlap of a model whose catalog entry sets none (``inference.overlap``)."""
CROP_MARGIN = 8
"""Voxels kept around the foreground box of a model whose entry sets no ``preprocessing.crop_margin``."""


def _given(section: Mapping[str, Any], readers: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    """The settings ``section`` gives, each read by its reader (what it leaves out keeps its field's default)."""
    return {key: read(section[key]) for key, read in readers.items() if key in section}


def _spacing(value: Any) -> tuple[float, ...] | None:
    return tuple(float(v) for v in value) if value else None


@dataclass(frozen=True)
class CatalogSection:
    """What every section has: the JSON it was read from."""

    written: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False, kw_only=True)
    """The section as the catalog holds it (the entry's merged over its preset's)."""

    def to_dict(self) -> dict[str, Any]:
        """The section as the catalog holds it (a copy), for JSON views and entries copied from a model."""
        return copy.deepcopy(dict(self.written))


@dataclass(frozen=True)
class IntensitySpec:
    """How image intensities are normalised (``preprocessing.intensity``)."""

    kind: IntensityKind = "zscore_nonzero"
    min: float | None = None
    """``window`` only: the lower end of the window (e.g. -175 HU)."""
    max: float | None = None
    """``window`` only: the upper end of the window."""

    def __post_init__(self) -> None:
        if self.kind not in INTENSITY_KINDS:
            raise CatalogError(f"unknown intensity normalisation {self.kind!r}; use {' or '.join(INTENSITY_KINDS)}")
        if self.kind == "window" and (self.min is None or self.max is None):
            raise CatalogError("a window intensity normalisation needs min and max")

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> IntensitySpec:
        return cls(**_given(rule, {"kind": str, "min": float, "max": float}))


@dataclass(frozen=True)
class PreprocessingSpec(CatalogSection):
    """From input images to the network's input (``glims.preprocessing.prepare_case``)."""

    orientation: str | None = None
    """Axis codes of the processing grid (e.g. ``LPS``); None keeps each image's own."""
    spacing: tuple[float, ...] | None = None
    """Voxel size of the processing grid (mm, x y z); None keeps the reference input's."""
    intensity: IntensitySpec = IntensitySpec()
    crop_foreground: bool = True
    """Run the windows on the foreground's bounding box only."""
    crop_margin: int = CROP_MARGIN
    """Voxels kept around the foreground box."""

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> PreprocessingSpec:
        readers: dict[str, Callable[[Any], Any]] = {
            "orientation": lambda v: str(v) if v else None,
            "spacing": _spacing,
            "intensity": IntensitySpec.from_dict,
            "crop_foreground": bool,
            "crop_margin": int,
        }
        return cls(**_given(section, readers), written=dict(section))


@dataclass(frozen=True)
class PaintStep:
    """One step of painting sigmoid channels into labels: voxels above the channel's threshold become ``label``."""

    channel: str
    label: int


@dataclass(frozen=True)
class OutputSpec(CatalogSection):
    """From network outputs to labels (``glims.postprocessing.probabilities_to_labels``)."""

    activation: Activation
    channels: tuple[str, ...] = ()
    """Sigmoid models: the name of each output channel, in order (e.g. ``TC``, ``WT``, ``ET``)."""
    thresholds: Mapping[str, float] = field(default_factory=dict)
    """Sigmoid models: probability above which a channel's voxel is painted (0.5 for a channel not listed)."""
    paint: tuple[PaintStep, ...] = ()
    """Sigmoid models: painting order (later steps paint over earlier ones)."""

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise CatalogError(f"unknown output activation {self.activation!r}; use {' or '.join(ACTIVATIONS)}")
        for step in self.paint:
            if step.channel not in self.channels:
                raise CatalogError(f"paint step names channel {step.channel!r}, not one of {list(self.channels)}")

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> OutputSpec:
        if "activation" not in section:
            raise CatalogError("the output section names no activation")
        readers: dict[str, Callable[[Any], Any]] = {
            "activation": str,
            "channels": lambda v: tuple(str(c) for c in v),
            "thresholds": lambda v: {str(k): float(t) for k, t in v.items()},
            "paint": lambda v: tuple(PaintStep(str(s["channel"]), int(s["label"])) for s in v),
        }
        return cls(**_given(section, readers), written=dict(section))

    def expected_out_channels(self, n_labels: int) -> int | None:
        """Output channels a network must have: one per sigmoid channel, or background plus one per label for
        softmax; None when a sigmoid model names no channels."""
        if self.activation == "softmax":
            return n_labels + 1
        return len(self.channels) or None


@dataclass(frozen=True)
class CleanupRule:
    """Connected components of ``label`` with fewer than ``min_voxels`` voxels *and* a mean probability of
    ``channel`` below ``max_mean_prob`` become ``relabel`` (``glims.postprocessing.apply_cleanup_rules``)."""

    label: int
    min_voxels: int
    max_mean_prob: float
    channel: str
    relabel: int

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> CleanupRule:
        return cls(
            label=int(rule["label"]),
            min_voxels=int(rule["min_voxels"]),
            max_mean_prob=float(rule["max_mean_prob"]),
            channel=str(rule["channel"]),
            relabel=int(rule["relabel"]),
        )


@dataclass(frozen=True)
class HoleFilling:
    """Voxels enclosed by ``label`` become ``fill_with`` (``glims.postprocessing.fill_holes``)."""

    label: int
    fill_with: int


@dataclass(frozen=True)
class PostprocessingSpec(CatalogSection):
    """The clean-up of a sigmoid model's labels (the authors' challenge rules)."""

    enabled: bool = False
    """Applied unless a run says otherwise (``glims segment --no-postprocess``)."""
    rules: tuple[CleanupRule, ...] = ()
    fill_holes: HoleFilling | None = None

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> PostprocessingSpec:
        readers: dict[str, Callable[[Any], Any]] = {
            "enabled": bool,
            "rules": lambda v: tuple(CleanupRule.from_dict(r) for r in v),
            "fill_holes": lambda v: HoleFilling(int(v["label"]), int(v["fill_with"])) if v else None,
        }
        return cls(**_given(section, readers), written=dict(section))


@dataclass(frozen=True)
class InferenceSpec(CatalogSection):
    """A model's own sliding-window settings: the defaults of its runs (``glims.inference.InferenceOptions``).
    ``models.schema.json`` checks their values."""

    overlap: float = DEFAULT_OVERLAP
    blend: Blend = "gaussian"
    placement: Placement = "step"
    sw_batch_size: int = 1
    """Windows per forward pass."""

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> InferenceSpec:
        readers = {"overlap": float, "blend": str, "placement": str, "sw_batch_size": int}
        return cls(**_given(section, readers), written=dict(section))
