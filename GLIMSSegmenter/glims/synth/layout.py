"""Where the brain sits: the anatomical layout of an average adult brain and its placement in the grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .geometry import Grid, ellipsoid_depth, rotate, small_rotation, uniform
from .params import SynthParams

_FIT_MARGIN = 0.92  # the brain's bounding box fills at most this fraction of the field of view per axis

# Anatomical layout of an average adult brain in mm, in a frame centred on the cerebrum: (z superior, y posterior,
# x left). Each entry: centre (z, y, x) and radii (z, y, x).
CEREBRUM_RADII = (58.0, 84.0, 70.0)
CEREBRUM_LOWER_RZ = 42.0
CEREBRUM_POWER = 2.2
SULCUS_SPACING_MM = 3.8  # correlation length of the field whose zero set draws the sulci
CEREBELLUM = ((-38.0, 48.0, 0.0), (22.0, 30.0, 52.0))
BRAINSTEM = ((-44.0, 16.0, 0.0), (32.0, 13.0, 14.0))
BRAIN_BOX = ((-76.0, 58.0), (-84.0, 84.0), (-70.0, 70.0))  # z, y, x extents of the union above
LATERAL_VENTRICLE = ((6.0, -2.0, 10.0), (10.0, 30.0, 7.0))
THIRD_VENTRICLE = ((-10.0, 6.0, 0.0), (8.0, 11.0, 1.4))
PLEXUS = ((4.0, 22.0, 11.0), (3.5, 7.0, 3.5))
THALAMUS = ((-4.0, 10.0, 11.0), (10.0, 15.0, 8.5))
LENTIFORM = ((0.0, -8.0, 23.0), (13.0, 17.0, 6.5))


@dataclass
class Layout:
    """Where the brain sits in the grid: world_mm = centre + scale * R @ brain_mm."""

    centre: np.ndarray  # (3,) world mm (z, y, x) of the brain frame's origin
    rotation: np.ndarray  # (3, 3) brain -> world
    scale: float
    size: np.ndarray  # (3,) per-axis individual size factors of the cerebrum
    ventricle_scale: float

    def to_brain(self, world: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Brain-frame coordinates (mm of a full-size brain) of world coordinates (each broadcastable)."""
        rt = torch.from_numpy((self.rotation.T / self.scale).astype(np.float32))
        return rotate(rt, [w - float(c) for w, c in zip(world, self.centre, strict=True)])


def draw_layout(rng: np.random.Generator, grid: Grid, params: SynthParams) -> Layout:
    overall = uniform(rng, params.brain_scale)
    size = overall * rng.uniform(0.94, 1.06, size=3)
    rotation = small_rotation(rng, params.rotation_deg)
    lows = np.array([b[0] for b in BRAIN_BOX]) * size
    highs = np.array([b[1] for b in BRAIN_BOX]) * size
    half = (highs - lows) / 2.0 * 1.05  # rotation slack
    fit = float(np.min(_FIT_MARGIN * grid.extent_mm / 2.0 / half))
    scale = min(1.0, fit)
    room = np.maximum(0.0, grid.extent_mm / 2.0 - half * scale)
    shift = rng.uniform(-0.3, 0.3, size=3) * room
    centre = -scale * (lows + highs) / 2.0 + shift  # the box's centre near the grid's centre
    return Layout(centre, rotation, scale, size, uniform(rng, params.ventricle_scale))


def brain_depth(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, size: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Signed depths (mm, positive inside) of cerebrum, cerebellum and brainstem at brain-frame coordinates."""
    sz, sy, sx = (float(v) for v in size)
    upper = torch.tensor(CEREBRUM_RADII[0] * sz)
    rz = torch.where(z > 0, upper, torch.tensor(CEREBRUM_LOWER_RZ * sz))
    cerebrum = ellipsoid_depth(z, y, x, (rz, CEREBRUM_RADII[1] * sy, CEREBRUM_RADII[2] * sx), CEREBRUM_POWER)
    (cz, cy, cx), radii = CEREBELLUM
    cerebellum = ellipsoid_depth(z - cz * sz, y - cy * sy, x - cx, (radii[0] * sz, radii[1] * sy, radii[2] * sx))
    (bz, by, bx), radii = BRAINSTEM
    brainstem = ellipsoid_depth(z - bz * sz, y - by * sy, x - bx, (radii[0] * sz, radii[1] * sy, radii[2] * sx))
    return cerebrum, cerebellum, brainstem


def union_depth(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, size: np.ndarray) -> torch.Tensor:
    return torch.stack(brain_depth(z, y, x, size)).amax(0)


def blob(
    z: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    centre: tuple[float, float, float],
    radii: tuple[float, float, float],
    scale: float = 1.0,
    mirror: bool = False,
) -> torch.Tensor:
    """Signed depth (mm) of an ellipsoid at ``centre`` (or the pair mirrored across the midline)."""
    (cz, cy, cx), (rz, ry, rx) = centre, radii
    r = (rz * scale, ry * scale, rx * scale)
    if mirror:
        return ellipsoid_depth(z - cz, y - cy, x.abs() - cx, r)
    return ellipsoid_depth(z - cz, y - cy, x - cx, r)
