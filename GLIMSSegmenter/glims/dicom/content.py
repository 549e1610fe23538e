"""What a DICOM output says about each segment and about the algorithm that made it, independent of the format.

Codes are (coding scheme, code value, meaning) triples as the catalog stores them (e.g. ``("SCT", "6574001",
"Necrosis")``); masks are boolean (slice, row, column) arrays on the source series' grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..catalog import LabelSpec

__all__ = ["AUTOMATIC", "MANUAL", "SEMIAUTOMATIC", "Algorithm", "ExportSegment", "segments_from_labels"]

AUTOMATIC = "AUTOMATIC"
SEMIAUTOMATIC = "SEMIAUTOMATIC"
MANUAL = "MANUAL"
Code = tuple[str, str, str]


@dataclass(frozen=True)
class Algorithm:
    """The model that produced the segments (DICOM Algorithm Identification)."""

    name: str
    """Model id, e.g. ``glims-brats``."""
    version: str
    weights_sha256: tuple[str, ...] = ()
    software: str = ""
    """E.g. ``glims 1.4.0``."""

    def parameters(self) -> dict[str, str]:
        """Algorithm parameters recorded with it (name -> value)."""
        params = {"weights_sha256": ",".join(self.weights_sha256)} if self.weights_sha256 else {}
        if self.software:
            params["software"] = self.software
        return params


@dataclass(frozen=True)
class ExportSegment:
    """One segment to write."""

    name: str
    color: tuple[int, int, int]
    """0-255 RGB."""
    category: Code
    type: Code
    mask: np.ndarray = field(repr=False)
    """bool (slices, rows, columns) on the source grid."""
    algorithm_type: str = AUTOMATIC
    type_modifier: Code | None = None
    region: Code | None = None

    @property
    def empty(self) -> bool:
        return not bool(self.mask.any())


def segments_from_labels(
    labels_zyx: np.ndarray, labels: Sequence[LabelSpec], algorithm_types: Mapping[int, str] | None = None
) -> list[ExportSegment]:
    """One segment per catalog label (also empty ones), its mask where ``labels_zyx == label.value``."""
    segments = []
    for label in labels:
        terms = label.terminology
        segments.append(
            ExportSegment(
                name=label.name,
                color=label.color,
                category=terms["category"],
                type=terms["type"],
                mask=labels_zyx == label.value,
                algorithm_type=(algorithm_types or {}).get(label.value, AUTOMATIC),
                type_modifier=terms.get("modifier"),
                region=terms.get("region"),
            )
        )
    return segments
