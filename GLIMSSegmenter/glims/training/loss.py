"""The training loss: soft Dice plus cross-entropy on sigmoid region channels, with deep supervision.

Dice follows the authors' MONAI ``DiceCELoss(sigmoid=True, squared_pred=True, smooth_nr=1e-6, smooth_dr=0)``: per
sample and channel, ``1 - (2 sum(p t) + 1e-6) / (sum(p^2) + sum(t^2) + smooth_dr)`` with ``p = sigmoid(logits)``,
averaged — with one deliberate change: ``smooth_dr = 1e-6`` instead of 0. With 0, a window without tumour (empty
target) scores ``1 - 1e-6 / sum(p^2)``, which has no lower bound: pushing its predictions towards 0 drives the loss
to minus infinity, and a run with many tumour-free windows diverges (ours did, after 2,250 steps of 32^3 windows;
the authors' 128^3 crops of BraTS almost always contain tumour). With ``smooth_dr = smooth_nr`` that term lies in
[0, 1) and the loss is never negative; where the target is not empty the change is below float32 resolution.

The cross-entropy term has two variants:

* ``bce`` (default): binary cross-entropy per channel, the natural partner of independent sigmoid channels.
* ``softmax``: what MONAI's ``DiceCELoss`` actually computes for a multi-channel input even with ``sigmoid=True``
  and hence what the authors trained with: a softmax cross-entropy across the TC/WT/ET channels with the
  (overlapping, multi-hot) region masks as class probabilities.

Deep supervision: the four heads (full, 1/2, 1/4, 1/8 resolution) are weighted 1, 1/2, 1/4, 1/8 and the sum is
divided by 1.875; low-resolution targets are the full target downsampled by nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["DEEP_SUPERVISION_WEIGHTS", "dice_ce_loss", "deep_supervision_loss"]

DEEP_SUPERVISION_WEIGHTS = (1.0, 0.5, 0.25, 0.125)
SMOOTH_NR, SMOOTH_DR = 1e-6, 1e-6


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, ce: str = "bce") -> torch.Tensor:
    """Dice + cross-entropy of (B, K, ...) logits against a (B, K, ...) 0/1 target (see module docstring)."""
    target = target.to(logits.dtype)
    prob = torch.sigmoid(logits)
    dims = tuple(range(2, logits.ndim))
    intersection = (prob * target).sum(dims)
    denominator = (prob * prob).sum(dims) + (target * target).sum(dims)
    dice = 1.0 - (2.0 * intersection + SMOOTH_NR) / (denominator + SMOOTH_DR)
    if ce == "bce":
        cross_entropy = F.binary_cross_entropy_with_logits(logits, target)
    elif ce == "softmax":
        cross_entropy = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    else:
        raise ConfigError(f"unknown cross-entropy variant {ce!r}; use bce or softmax")
    return dice.mean() + cross_entropy


def deep_supervision_loss(
    outputs: Sequence[torch.Tensor] | torch.Tensor,
    target: torch.Tensor,
    ce: str = "bce",
    weights: Sequence[float] = DEEP_SUPERVISION_WEIGHTS,
) -> torch.Tensor:
    """Weighted loss over the heads (a single tensor is the full-resolution head alone)."""
    if isinstance(outputs, torch.Tensor):
        return dice_ce_loss(outputs, target, ce)
    total = outputs[0].new_zeros(())
    for output, weight in zip(outputs, weights, strict=False):
        scaled = (
            target
            if output.shape[2:] == target.shape[2:]
            else F.interpolate(target.float(), size=output.shape[2:], mode="nearest")
        )
        total = total + weight * dice_ce_loss(output, scaled, ce)
    return total / sum(weights[: len(outputs)])
