"""The normal brain: tissue fractions of white and grey matter, CSF, deep grey matter, plexus and vessels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import Grid, soft, uniform
from .layout import (
    LATERAL_VENTRICLE,
    LENTIFORM,
    PLEXUS,
    SULCUS_SPACING_MM,
    THALAMUS,
    THIRD_VENTRICLE,
    Layout,
    blob,
    brain_depth,
    union_depth,
)
from .params import SynthParams

if TYPE_CHECKING:
    from .lesions import Lesion


Coords = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Brain-frame coordinates (z, y, x) in mm of a full-size brain, each broadcastable to the grid."""


@dataclass
class Anatomy:
    """The normal brain of one case, in the output grid."""

    fractions: dict[str, torch.Tensor]  # wm, gm, deep_gm, csf, plexus, vessel; they sum to the brain fraction
    depth: torch.Tensor  # signed depth (brain-frame mm) to the brain's outer surface, as drawn in the fractions
    midline_shift_mm: float = 0.0


@dataclass(frozen=True)
class _Shape:
    """The anatomy's random sizes of one case (mm of a full-size brain)."""

    cortex_thickness: float
    sulcus_half_width: float
    outer_csf: float
    surface_amplitude: float
    sulcus_depth: float
    vessel_radius: float
    fissure_half_width: float
    callosum_top: float


@dataclass(frozen=True)
class _Regions:
    """Signed depths (mm, positive inside) of the brain's parts and which part each voxel belongs to."""

    depth: torch.Tensor  # of the whole brain, with its surface perturbed
    cerebrum: torch.Tensor
    cerebellum: torch.Tensor
    brainstem: torch.Tensor
    in_cerebrum: torch.Tensor
    in_cerebellum: torch.Tensor

    @property
    def in_brainstem(self) -> torch.Tensor:
        return self.brainstem > torch.maximum(self.cerebrum, self.cerebellum)


@dataclass(frozen=True)
class _DeepStructures:
    """Memberships (0..1) of the ventricles, the choroid plexus within them, and the deep grey matter."""

    ventricles: torch.Tensor
    plexus: torch.Tensor
    deep_gm: torch.Tensor


def draw_anatomy(
    rng: np.random.Generator,
    grid: Grid,
    layout: Layout,
    params: SynthParams,
    lesions: Sequence[Lesion],
    mass_effect: float,
) -> Anatomy:
    """Tissue fractions of the normal brain, deformed by the lesions' mass effect."""
    undeformed = layout.to_brain(grid.axes_mm())
    width = 0.6 / layout.scale  # partial-volume transition in brain-frame mm
    surface_depth = union_depth(*undeformed, layout.size)
    fields = _draw_fields(rng, grid, layout.scale)
    shape = _draw_shape(rng, params, layout)
    coords, fields, midline_shift = _push_by_lesions(
        grid, layout, undeformed, surface_depth, fields, lesions, mass_effect
    )
    regions = _regions(coords, layout, shape, fields)
    to_csf = _distance_to_csf(coords, regions, shape, fields)
    cortex_csf = 1.0 - soft(to_csf, width)
    in_white = _white_matter(regions, to_csf, shape, fields, layout, width)
    deep = _deep_structures(coords, layout, width)
    vessel = _vessels(shape, fields, cortex_csf, deep.ventricles, width)
    fractions = _fractions(soft(regions.depth, width), cortex_csf, in_white, deep, vessel)
    return Anatomy(fractions, regions.depth, midline_shift)


def _draw_fields(rng: np.random.Generator, grid: Grid, scale: float) -> dict[str, torch.Tensor]:
    """Random fields, drawn on the output grid (correlation lengths in world mm), then carried by the deformation."""
    return {
        "surface": grid.smooth_noise(rng, 10.0 * scale),
        "sulci": grid.smooth_noise(rng, SULCUS_SPACING_MM * scale),
        "folia": grid.smooth_noise(rng, 1.8 * scale),
        "thickness": grid.smooth_noise(rng, 8.0 * scale),
        "vessel_a": grid.smooth_noise(rng, 6.0 * scale),
        "vessel_b": grid.smooth_noise(rng, 6.0 * scale),
    }


def _draw_shape(rng: np.random.Generator, params: SynthParams, layout: Layout) -> _Shape:
    """The anatomy's random sizes, drawn in a fixed order (the order is part of what a seed reproduces)."""
    thickness = uniform(rng, params.cortex_thickness_mm)
    sulcus_half = uniform(rng, params.sulcus_width_mm) / 2.0
    outer_csf = uniform(rng, params.outer_csf_mm)
    surface_amp = rng.uniform(1.0, 3.5)
    sulcus_depth = uniform(rng, params.sulcus_depth_mm)
    vessel_radius = 1.2 * uniform(rng, params.vessel_density)
    fissure_half = rng.uniform(0.6, 1.6) + 0.4 * (layout.ventricle_scale - 1.0)
    callosum_top = rng.uniform(12.0, 20.0)
    return _Shape(
        thickness, sulcus_half, outer_csf, surface_amp, sulcus_depth, vessel_radius, fissure_half, callosum_top
    )


def _push_by_lesions(
    grid: Grid,
    layout: Layout,
    undeformed: Coords,
    surface_depth: torch.Tensor,
    fields: dict[str, torch.Tensor],
    lesions: Sequence[Lesion],
    mass_effect: float,
) -> tuple[Coords, dict[str, torch.Tensor], float]:
    """Mass effect: brain-frame points near a lesion sample the anatomy from closer to its centre, i.e. the
    anatomy is pushed outward; damped near the brain surface (the skull holds it).

    Returns:
        The deformed coordinates, the random fields carried along, and the midline shift in world mm.
    """
    if not (mass_effect > 0 and lesions):
        return undeformed, fields, 0.0
    z0, y0, x0 = undeformed
    s = layout.scale
    damp = (surface_depth / 12.0).clamp(0.0, 1.0)
    dz = torch.zeros_like(z0 * y0 * x0)
    dy, dx = torch.zeros_like(dz), torch.zeros_like(dz)
    for lesion in lesions:
        rel = [z0 - lesion.centre[0], y0 - lesion.centre[1], x0 - lesion.centre[2]]
        reach = lesion.core_radius * 1.6 + 6.0
        r2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2
        pull = mass_effect * min(1.0, lesion.core_radius / 15.0) * torch.exp(-0.5 * r2 / reach**2) * damp
        dz, dy, dx = dz + rel[0] * pull, dy + rel[1] * pull, dx + rel[2] * pull
    septum = ((z0.abs() < 20) & (y0.abs() < 30) & (x0.abs() < 2)).expand_as(dx)
    midline_shift = float(dx[septum].abs().max()) * s if bool(septum.any()) else 0.0
    # displacement of the sampling position, brain frame -> world voxels -> grid_sample coordinates
    rot = torch.from_numpy((layout.rotation * s).astype(np.float32))
    disp_world = [rot[i, 0] * -dz + rot[i, 1] * -dy + rot[i, 2] * -dx for i in range(3)]
    base = [torch.linspace(-1.0, 1.0, n).view([n if a == i else 1 for a in range(3)]) for i, n in enumerate(grid.shape)]
    norm = [disp_world[i] / grid.spacing[i] * (2.0 / max(grid.shape[i] - 1, 1)) for i in range(3)]
    sample = torch.stack(
        [
            (base[2] + norm[2]).expand(grid.shape),
            (base[1] + norm[1]).expand(grid.shape),
            (base[0] + norm[0]).expand(grid.shape),
        ],
        dim=-1,
    )
    stacked = torch.stack(list(fields.values()))[None]
    warped = F.grid_sample(stacked, sample[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
    return (z0 - dz, y0 - dy, x0 - dx), dict(zip(fields.keys(), warped, strict=True)), midline_shift


def _regions(coords: Coords, layout: Layout, shape: _Shape, fields: dict[str, torch.Tensor]) -> _Regions:
    """Cerebrum, cerebellum and brainstem at the (deformed) coordinates, and the perturbed brain surface."""
    cerebrum, cerebellum, brainstem = brain_depth(*coords, layout.size)
    depth = torch.stack((cerebrum, cerebellum, brainstem)).amax(0) + shape.surface_amplitude * fields["surface"]
    in_cerebrum = cerebrum >= torch.maximum(cerebellum, brainstem)
    in_cerebellum = (cerebellum > brainstem) & ~in_cerebrum
    return _Regions(depth, cerebrum, cerebellum, brainstem, in_cerebrum, in_cerebellum)


def _distance_to_csf(coords: Coords, regions: _Regions, shape: _Shape, fields: dict[str, torch.Tensor]) -> torch.Tensor:
    """Distance (mm) to the nearest CSF space: outer CSF, sulci (cerebral or cerebellar folia), fissure, tentorium."""
    z, y, x = coords
    depth, cerebrum, cerebellum = regions.depth, regions.cerebrum, regions.cerebellum
    to_csf = depth - shape.outer_csf
    sulci = torch.where(
        regions.in_cerebellum,
        fields["folia"].abs() * 1.8 - 0.35 + (depth - 14.0).clamp_min(0) * 0.8,
        fields["sulci"].abs() * SULCUS_SPACING_MM
        - shape.sulcus_half_width
        + (depth - shape.sulcus_depth).clamp_min(0) * 0.6,
    )
    sulci = torch.where(regions.in_brainstem, torch.full_like(sulci, 50.0), sulci)
    to_csf = torch.minimum(to_csf, sulci)
    fissure = (
        (x - 0.8 * torch.tanh(y / 40.0)).abs() - shape.fissure_half_width + (shape.callosum_top - z).clamp_min(0) * 2.0
    )
    fissure = torch.where(regions.in_cerebrum, fissure, torch.full_like(fissure, 50.0))
    tentorium = (cerebrum - cerebellum).abs() / 2.0 - 0.7 + (-torch.minimum(cerebrum, cerebellum)).clamp_min(0)
    return torch.minimum(torch.minimum(to_csf, fissure), tentorium)


def _white_matter(
    regions: _Regions,
    to_csf: torch.Tensor,
    shape: _Shape,
    fields: dict[str, torch.Tensor],
    layout: Layout,
    width: float,
) -> torch.Tensor:
    """Membership of white matter: deeper than the local cortical thickness from CSF; a core in the cerebellum."""
    depth, thickness = regions.depth, shape.cortex_thickness
    local_thickness = torch.where(
        regions.in_cerebrum, thickness * (1.0 + 0.2 * fields["thickness"]), torch.full_like(depth, thickness * 0.6)
    )
    local_thickness = torch.where(regions.in_brainstem, torch.full_like(depth, 0.4), local_thickness)
    in_white = soft(to_csf - local_thickness, width)
    cerebellar_core = soft(regions.cerebellum - 16.0 * float(layout.size[0]), 3.0 * width)
    return torch.where(regions.in_cerebellum, torch.maximum(in_white * 0.35, cerebellar_core), in_white)


def _deep_structures(coords: Coords, layout: Layout, width: float) -> _DeepStructures:
    """Lateral and third ventricles (scaled by the case's ventricle size), choroid plexus, thalamus and lentiform."""
    z, y, x = coords
    vs = layout.ventricle_scale
    lateral = blob(
        z + 0.004 * y * y,
        y,
        x,
        LATERAL_VENTRICLE[0],
        (LATERAL_VENTRICLE[1][0] * vs, LATERAL_VENTRICLE[1][1], LATERAL_VENTRICLE[1][2] * vs),
        mirror=True,
    )
    third = blob(
        z, y, x, THIRD_VENTRICLE[0], (THIRD_VENTRICLE[1][0], THIRD_VENTRICLE[1][1], THIRD_VENTRICLE[1][2] * vs)
    )
    ventricles = soft(torch.maximum(lateral, third), width)
    plexus = soft(blob(z, y, x, PLEXUS[0], PLEXUS[1], scale=min(vs, 1.2), mirror=True), width) * ventricles
    deep = torch.maximum(blob(z, y, x, *THALAMUS, mirror=True), blob(z, y, x, *LENTIFORM, mirror=True))
    return _DeepStructures(ventricles, plexus, soft(deep, 1.5 / layout.scale))


def _vessels(
    shape: _Shape,
    fields: dict[str, torch.Tensor],
    cortex_csf: torch.Tensor,
    ventricles: torch.Tensor,
    width: float,
) -> torch.Tensor | None:
    """Vessels: tubes along the intersection curves of two random fields, within the sulcal and outer CSF.

    None when the case has (almost) no vessels.
    """
    if shape.vessel_radius <= 0.05:
        return None
    tube = torch.sqrt(fields["vessel_a"] ** 2 + fields["vessel_b"] ** 2) * 6.0
    return soft(shape.vessel_radius - tube, width) * cortex_csf * (1.0 - ventricles)


def _fractions(
    brain: torch.Tensor,
    cortex_csf: torch.Tensor,
    in_white: torch.Tensor,
    deep: _DeepStructures,
    vessel: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Tissue fractions from the memberships; they sum to the brain's partial-volume fraction ``brain``."""
    csf = torch.maximum(cortex_csf, deep.ventricles)
    tissue = (1.0 - csf).clamp_min(0.0)
    wm = tissue * in_white
    gm = tissue - wm
    deep_part = wm * deep.deep_gm
    wm = wm - deep_part
    frac = {
        "wm": wm * brain,
        "gm": gm * brain,
        "deep_gm": deep_part * brain,
        "csf": (csf - deep.plexus) * brain,
        "plexus": deep.plexus * brain,
        "vessel": torch.zeros(()) if vessel is None else vessel * brain,
    }
    frac["csf"] = frac["csf"] - frac["vessel"]
    return frac
