"""From network outputs to a label map: activation, thresholds, label painting and the authors' clean-up rules.

BraTS models have three independent sigmoid channels (TC, WT, ET). Each is thresholded (authors: TC 0.6, WT 0.5,
ET 0.6) and painted in order WT -> 2, TC -> 1, ET -> 3, so the result uses the BraTS 2023 labels (1 NCR, 2 ED,
3 ET). The optional clean-up follows the authors' challenge script: small connected components (26-connectivity)
with low mean probability are relabelled, and holes inside the enhancing tumour are filled as necrosis.
Softmax models (BTCV) take the arg-max.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from .catalog_sections import ACTIVATIONS, Activation, CleanupRule, OutputSpec
from .errors import ConfigError

__all__ = ["activate", "check_thresholds", "probabilities_to_labels", "apply_cleanup_rules", "fill_holes"]


def activate(logits: np.ndarray, activation: Activation) -> np.ndarray:
    """Logits (K, ...) -> probabilities (K, ...) float32. (A catalog's activation is checked when it is read.)"""
    if activation == "sigmoid":
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    if activation == "softmax":
        shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
        return (shifted / shifted.sum(axis=0, keepdims=True)).astype(np.float32)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")


def check_thresholds(output: OutputSpec, thresholds: Mapping[str, float] | None) -> None:
    """Refuse threshold overrides that would be ignored or meaningless: unknown channels, values outside (0, 1),
    or any override for a softmax model (which takes the arg-max, no thresholds)."""
    if not thresholds:
        return
    if output.activation != "sigmoid":
        raise ConfigError("thresholds apply to models with sigmoid outputs; this model takes the arg-max of a softmax")
    channels = list(output.channels)
    unknown = sorted(set(thresholds) - set(channels))
    if unknown:
        raise ConfigError(f"threshold for unknown channel(s) {unknown}; this model's channels are {channels}")
    for channel, value in thresholds.items():
        if not 0.0 < float(value) < 1.0:
            raise ConfigError(f"threshold of {channel} must lie strictly between 0 and 1, got {value}")


def probabilities_to_labels(
    probs: np.ndarray, output: OutputSpec, thresholds: Mapping[str, float] | None = None
) -> np.ndarray:
    """Probabilities (K, X, Y, Z) -> uint8 label map (X, Y, Z).

    Args:
        probs: output of ``activate``.
        output: the model's catalog ``output`` section (activation, channels, thresholds, paint order).
        thresholds: per-channel overrides of the catalog thresholds (sigmoid models).
    """
    if output.activation == "softmax":
        return probs.argmax(axis=0).astype(np.uint8)
    channels = list(output.channels)
    limits = {**output.thresholds, **(thresholds or {})}
    labels = np.zeros(probs.shape[1:], dtype=np.uint8)
    for step in output.paint:
        labels[probs[channels.index(step.channel)] > float(limits.get(step.channel, 0.5))] = step.label
    return labels


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    components = sitk.ConnectedComponent(image, True)  # fully connected: 26-neighbourhood in 3D
    count = int(sitk.GetArrayViewFromImage(components).max())
    return sitk.GetArrayFromImage(components), count


def apply_cleanup_rules(
    labels: np.ndarray, probs: np.ndarray, channels: Sequence[str], rules: Sequence[CleanupRule]
) -> np.ndarray:
    """Relabel small, unconfident components, rule by rule (in place; returns ``labels``).

    A rule turns every connected component of ``rule.label`` with fewer than ``rule.min_voxels`` voxels *and* a
    mean probability of ``rule.channel`` below ``rule.max_mean_prob`` into ``rule.relabel``.
    """
    for rule in rules:
        components, count = _components(labels == rule.label)
        if count == 0:
            continue
        ids = components.ravel()
        sizes = np.bincount(ids, minlength=count + 1)
        prob = probs[list(channels).index(rule.channel)].ravel()
        mean_prob = np.bincount(ids, weights=prob, minlength=count + 1) / np.maximum(sizes, 1)
        weak = (sizes < rule.min_voxels) & (mean_prob < rule.max_mean_prob)
        weak[0] = False
        labels[weak[components]] = rule.relabel
    return labels


def fill_holes(labels: np.ndarray, label: int, fill_with: int) -> np.ndarray:
    """Voxels enclosed by ``label`` (fully connected hole filling) become ``fill_with`` (in place)."""
    mask = (labels == label).astype(np.uint8)
    if not mask.any():
        return labels
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(mask), True, 1))
    labels[(filled == 1) & (mask == 0)] = fill_with
    return labels
