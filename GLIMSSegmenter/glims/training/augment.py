"""Training augmentations after the authors' recipe, drawn from a seeded ``numpy.random.Generator``.

Spatial: a flip of each axis with probability 0.5 (image and target together). Intensity, each with probability
0.2 and per channel: scale by 1 + U(-0.2, 0.2), shift by U(-0.2, 0.2), gamma contrast (min-max to [0, 1], power
U(0.5, 2), back), Gaussian noise with a standard deviation of U(0, 0.1), Gaussian smoothing with sigma U(0.25, 1.5)
voxels per axis. Intensity changes are applied inside the foreground only (background stays exactly 0, as in the
z-scored inputs inference sees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment_patch"]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges (the authors' values by default; ``AugmentConfig.none()`` turns all off)."""

    p_flip: float = 0.5
    p_scale: float = 0.2
    scale: float = 0.2
    p_shift: float = 0.2
    shift: float = 0.2
    p_contrast: float = 0.2
    gamma: tuple[float, float] = (0.5, 2.0)
    p_noise: float = 0.2
    noise_std: float = 0.1
    p_smooth: float = 0.2
    smooth_sigma: tuple[float, float] = (0.25, 1.5)

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(p_flip=0.0, p_scale=0.0, p_shift=0.0, p_contrast=0.0, p_noise=0.0, p_smooth=0.0)


def _smooth(channel: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(channel)[None, None]
    for axis, sigma in enumerate(sigmas):
        radius = max(1, int(np.ceil(3 * sigma)))
        grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (grid / float(sigma)) ** 2)
        kernel = (kernel / kernel.sum()).view(1, 1, *[-1 if a == axis else 1 for a in range(3)])
        padding = [radius if a == axis else 0 for a in range(3)]
        x = F.conv3d(x, kernel, padding=padding)
    return x[0, 0].numpy()


def augment_patch(
    image: np.ndarray, target: np.ndarray, rng: np.random.Generator, config: AugmentConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (C, X, Y, Z) float32 image and its (K, X, Y, Z) target; returns new arrays."""
    config = config or AugmentConfig()
    image, target = image.copy(), target.copy()
    for axis in (1, 2, 3):
        if rng.random() < config.p_flip:
            image, target = np.flip(image, axis), np.flip(target, axis)
    image, target = np.ascontiguousarray(image), np.ascontiguousarray(target)
    for c in range(image.shape[0]):
        channel = image[c]
        inside = channel != 0
        if not inside.any():
            continue
        if rng.random() < config.p_scale:
            channel[inside] *= 1.0 + rng.uniform(-config.scale, config.scale)
        if rng.random() < config.p_shift:
            channel[inside] += rng.uniform(-config.shift, config.shift)
        if rng.random() < config.p_contrast:
            values = channel[inside]
            lo, hi = float(values.min()), float(values.max())
            if hi > lo:
                gamma = rng.uniform(*config.gamma)
                channel[inside] = ((values - lo) / (hi - lo)) ** gamma * (hi - lo) + lo
        if rng.random() < config.p_noise:
            std = rng.uniform(0.0, config.noise_std)
            channel[inside] += rng.standard_normal(int(inside.sum()), dtype=np.float32) * np.float32(std)
        if rng.random() < config.p_smooth:
            sigmas = rng.uniform(*config.smooth_sigma, size=3)
            channel[inside] = _smooth(np.ascontiguousarray(channel), sigmas)[inside]
    return image, target
