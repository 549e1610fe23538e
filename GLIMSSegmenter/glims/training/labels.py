"""Label maps to training targets: the three overlapping sigmoid regions TC, WT and ET as a (3, ...) array.

The conventions themselves (BraTS 2023 ET = 3, BraTS 2017-2021 ET = 4, BraTS 2013/2015 with 3 = non-enhancing
tumour) live in ``glims.metrics``, shared with evaluation; this module adds detecting a convention from the values
and stacking the region masks in the network's channel order.
"""

from __future__ import annotations

import numpy as np

from ..metrics import REGIONS, check_labels, label_values, region_masks

__all__ = ["REGIONS", "regions_from_labels", "detect_convention"]


def detect_convention(labels: np.ndarray) -> str:
    """The convention a label map's values imply: 3 and 4 -> brats2013, 4 -> brats2017, else brats2023.

    Only a map without label 4 is ambiguous (a BraTS 2013 map whose tumour has no enhancing part reads as
    brats2023, i.e. its non-enhancing label 3 as ET); give the convention explicitly for such data.
    """
    present = set(label_values(labels))
    if 4 in present:
        return "brats2013" if 3 in present else "brats2017"
    return "brats2023"


def regions_from_labels(labels: np.ndarray, convention: str, name: str = "label map") -> np.ndarray:
    """(X, Y, Z) label map -> (3, X, Y, Z) uint8 masks of TC, WT, ET (network channel order).

    Args:
        labels: integer (or integral float) label values of ``convention``.
        convention: ``brats2023``, ``brats2017``, ``brats2013`` (or an alias ``glims.metrics`` knows), or ``auto``
            (see ``detect_convention``).
        name: how to call the map in error messages.

    Raises:
        InputError: values the convention does not define; ConfigError: unknown convention.
    """
    if convention == "auto":
        convention = detect_convention(labels)
    check_labels(labels, convention, name)
    masks = region_masks(labels, convention)
    return np.stack([masks[region] for region in REGIONS]).astype(np.uint8)
