"""Names the module gives what it creates: result segmentations (and so their export files).

A result is named after the case and the model that made it, e.g. ``TCGA-FG-6692_glims-brats-synth-1.4.1``:
short enough to read in the Data module and a file dialog, safe as a file name, and different for each model
version. Pure functions of strings, testable without Slicer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .exportnames import safeFileName

__all__ = ["caseName", "resultName"]

_SEPARATORS = "-_. "


def caseName(volumeNames: Sequence[str]) -> str:
    """The case a set of input volumes belongs to: the part of their names they share, cut at a separator.

    E.g. ``TCGA-FG-6692_fla_sri24_bet``, ``TCGA-FG-6692_t1c_sri24_bet`` … -> ``TCGA-FG-6692``;
    ``BraTS-GLI-00001-000-t2f``, ``BraTS-GLI-00001-000-t1c`` … -> ``BraTS-GLI-00001-000``. One volume: its name.
    When the names share nothing (``flair``, ``t1``), the first volume's name.

    Args:
        volumeNames: the names of the model's input volumes, reference (first input) first.
    """
    names = [name.strip() for name in volumeNames if name and name.strip()]
    if not names:
        return ""
    if len(set(names)) == 1:
        return names[0]
    shared = os.path.commonprefix(names)
    if not all(name[len(shared) : len(shared) + 1] in ("", *_SEPARATORS) for name in names):
        cut = max(shared.rfind(separator) for separator in _SEPARATORS)  # within a word: back to a separator
        shared = shared[: max(cut, 0)]
    shared = shared.strip(_SEPARATORS)
    return shared if len(shared) >= 3 else names[0]


def resultName(volumeNames: Sequence[str], modelId: str, version: str) -> str:
    """A result segmentation's name: ``<case>_<model id>-<version>``, file-name safe.

    Unique in a scene only together with ``vtkMRMLScene.GenerateUniqueName`` (a second run of the same model on
    the same case gets ``_1``).
    """
    return safeFileName(f"{safeFileName(caseName(volumeNames), 'case')}_{modelId}-{version}", "segmentation")
