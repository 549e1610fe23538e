"""Geometry and random-field helpers of the generator: the voxel grid, smooth noise, blur, soft shapes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

SPATIAL_DIMS = 3
MIN_SIZE_VOXELS = 32
"""Smallest case size on every axis: the brain model needs room for its structures."""


def uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    low, high = float(bounds[0]), float(bounds[1])
    return low if high <= low else float(rng.uniform(low, high))


def small_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation matrix (3, 3) with Euler angles uniform in ±max_deg about each axis."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_orientation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (3, 3)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _gaussian_kernel(sigma_vox: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma_vox)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma_vox) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(volume: torch.Tensor, sigma_vox: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of a (D, H, W) or (C, D, H, W) tensor; sigma per axis in voxels, edges replicated."""
    squeeze = volume.dim() == SPATIAL_DIMS
    x = volume[None] if squeeze else volume
    x = x[:, None] if x.dim() == 4 else x  # (C, 1, D, H, W)
    for axis, sigma in enumerate(sigma_vox):
        if sigma < 0.2:
            continue
        kernel = _gaussian_kernel(float(sigma))
        radius = (kernel.numel() - 1) // 2
        size = x.shape[2 + axis]
        if radius >= size:
            continue
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel.view(shape))
    x = x[:, 0]
    return x[0] if squeeze else x


class Grid:
    """Voxel grid geometry: shape (z, y, x), spacing in mm, voxel-centre coordinates relative to the centre."""

    def __init__(self, shape: Sequence[int], spacing: Sequence[float]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.extent_mm = np.array([n * s for n, s in zip(self.shape, self.spacing, strict=True)])

    def axes_mm(self) -> list[torch.Tensor]:
        """Per-axis coordinates (mm, 0 at the grid centre), shaped to broadcast: (D,1,1), (1,H,1), (1,1,W)."""
        out = []
        for axis, (n, s) in enumerate(zip(self.shape, self.spacing, strict=True)):
            coords = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0) * s
            view = [1, 1, 1]
            view[axis] = n
            out.append(coords.view(view))
        return out

    def smooth_noise(self, rng: np.random.Generator, sigma_mm: float) -> torch.Tensor:
        """A zero-mean, unit-variance Gaussian random field (D, H, W) with correlation length ``sigma_mm``.

        White noise on a grid about sigma/2 coarse, Gaussian-smoothed there and upsampled trilinearly: cheap for
        smooth fields, and the same for the same generator state.
        """
        step = [max(s, sigma_mm / 2.0) for s in self.spacing]
        coarse = [int(math.ceil(e / st)) + 3 for e, st in zip(self.extent_mm, step, strict=True)]
        white = torch.from_numpy(rng.standard_normal(coarse, dtype=np.float32))
        sigma_coarse = [sigma_mm / st for st in step]
        field_ = gaussian_blur(white, sigma_coarse)
        if field_.shape != self.shape:
            field_ = F.interpolate(field_[None, None], size=self.shape, mode="trilinear", align_corners=True)[0, 0]
        field_ = field_ - field_.mean()
        return field_ / field_.std().clamp_min(1e-6)


def ellipsoid_depth(
    z: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    radii: Sequence[float | torch.Tensor] | np.ndarray,
    power: float = 2.0,
) -> torch.Tensor:
    """Approximate signed distance (mm) to a (super-)ellipsoid's surface at centred coordinates: positive inside.

    ``rho = (|z/rz|^p + |y/ry|^p + |x/rx|^p)^(1/p)`` (p = 2: an ellipsoid; larger: boxier); the distance is the
    first-order ``(1 - rho) / |grad rho|``, exact on the surface and monotone along rays.
    """
    rz, ry, rx = radii
    q = [(z / rz).abs(), (y / ry).abs(), (x / rx).abs()]
    if power == 2.0:
        rho = torch.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).clamp_min(1e-6)
        grad = torch.sqrt((q[0] / rz) ** 2 + (q[1] / ry) ** 2 + (q[2] / rx) ** 2) / rho
    else:
        rho = (q[0] ** power + q[1] ** power + q[2] ** power).clamp_min(1e-12) ** (1.0 / power)
        scaled = [qi.clamp_min(1e-12) ** (power - 1.0) for qi in q]
        grad = torch.sqrt((scaled[0] / rz) ** 2 + (scaled[1] / ry) ** 2 + (scaled[2] / rx) ** 2)
        grad = grad * rho ** (1.0 - power)
    return (1.0 - rho) / grad.clamp_min(1e-6)


def spacing_zyx(spacing: float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(spacing, (int, float, np.number)):
        return (float(spacing),) * 3
    return tuple(float(v) for v in spacing)


def rotate(matrix: torch.Tensor, vector: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``matrix @ vector`` for a 3x3 ``matrix`` and a ``vector`` of three coordinate tensors (each broadcastable)."""
    z, y, x = (matrix[i, 0] * vector[0] + matrix[i, 1] * vector[1] + matrix[i, 2] * vector[2] for i in range(3))
    return z, y, x


def soft(distance_inside: torch.Tensor, width: float) -> torch.Tensor:
    """Partial-volume fraction from a signed distance (positive inside), transition ``width`` mm."""
    return torch.sigmoid(distance_inside / max(width, 1e-3))
