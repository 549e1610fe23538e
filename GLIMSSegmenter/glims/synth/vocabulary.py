"""Names the generator shares with its users: sequences, tissues and label values."""

from __future__ import annotations

__all__ = ["MODALITIES", "TISSUES", "LABEL_NCR", "LABEL_ED", "LABEL_ET", "NORMAL_TISSUES"]

MODALITIES = ("flair", "t1ce", "t1", "t2")
"""Sequence names in the authors' channel order (also the BraTS 2021 file suffixes)."""

TISSUES = ("wm", "gm", "deep_gm", "csf", "plexus", "vessel", "edema", "enhancing", "necrosis", "nonenhancing")

LABEL_NCR, LABEL_ED, LABEL_ET = 1, 2, 3
"""BraTS 2023 label values (BraTS 2017-2021 used 4 for ET)."""

NORMAL_TISSUES = ("wm", "gm", "deep_gm", "csf", "plexus", "vessel")
"""Codes 1..6 of ``SynthCase.tissue`` (0 outside the brain)."""
