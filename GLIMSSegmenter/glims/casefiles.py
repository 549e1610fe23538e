"""The files of one case: its input images and its reference label, as found for training or evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CaseFiles"]


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case."""

    case_id: str
    images: tuple[Path, ...]
    """The input images: one file per model input in the model's input order (training), or the case's image
    files sorted by name (evaluation, where the model's input matching orders them)."""
    label: Path
    convention: str = "auto"
    """``brats2023``, ``brats2017``, ``brats2013`` or ``auto`` (decided from the values when loaded)."""
    label_quality: str = "reference"
    """``exact`` (synthetic), ``silver`` (algorithm output or fusion) or ``reference`` (as given)."""

    def to_dict(self) -> dict:
        return {
            "id": self.case_id,
            "images": [str(p) for p in self.images],
            "label": str(self.label),
            "convention": self.convention,
            "label_quality": self.label_quality,
        }
