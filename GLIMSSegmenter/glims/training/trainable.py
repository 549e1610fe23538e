"""Which parameters a training run updates: all of them, or only those that adapt a trained network to a new site.

A new scanner or protocol changes how tissues look, not what a tumour is. With a handful of corrected cases,
updating all 8 million weights of the bundled model lets it learn those few cases' particulars; ``early`` updates
only the layers that read the intensities — the stem, the first two encoder stages and their skip attention —
plus the scale and shift of every normalisation layer (under 1% of the bundled model's weights), and keeps the deep
layers that encode tumour shape and context as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:  # the command-line parser reads TRAINABLE without loading torch
    import torch

__all__ = ["TRAINABLE", "select_trainable"]

_EARLY_MODULES = ("stem.", "dmsf_1.", "dmsf_2.", "csab1.", "csab2.")

TRAINABLE = {
    "all": "every parameter",
    "early": "stem, encoder stages 1-2 and their skip attention, and every normalisation layer's scale and shift",
}


def _is_norm(name: str) -> bool:
    return any(part.startswith("norm") or part.endswith("norm") for part in name.split(".")[:-1])


def select_trainable(net: torch.nn.Module, which: str) -> list[torch.nn.Parameter]:
    """Mark the parameters that ``which`` selects trainable (the others frozen) and return them, in order.

    Raises:
        ConfigError: unknown ``which``, or a network in which it selects nothing.
    """
    if which not in TRAINABLE:
        raise ConfigError(f"unknown trainable set {which!r}; choose from {', '.join(TRAINABLE)}")
    selected = []
    for name, parameter in net.named_parameters():
        keep = which == "all" or name.startswith(_EARLY_MODULES) or _is_norm(name)
        parameter.requires_grad_(keep)
        if keep:
            selected.append(parameter)
    if not selected:
        raise ConfigError(f"the trainable set {which!r} selects no parameter of this network")
    return selected
