"""The tumour: lesion shapes (oedema, enhancing rim or non-enhancing core, necrosis) and their memberships."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .geometry import Grid, ellipsoid_depth, random_orientation, rotate, soft, uniform
from .layout import CEREBRUM_LOWER_RZ, CEREBRUM_RADII, LATERAL_VENTRICLE, Layout
from .params import SynthParams

if TYPE_CHECKING:
    from .anatomy import Anatomy


@dataclass
class Lesion:
    centre: np.ndarray  # brain-frame mm (z, y, x)
    orientation: np.ndarray  # (3, 3)
    wt_radii: np.ndarray  # (3,) mm
    core_radii: np.ndarray
    necrosis_radii: np.ndarray | None
    necrosis_offset: np.ndarray
    rim_mm: float
    wt_roughness: tuple[float, float]  # (amplitude mm, correlation mm)
    core_roughness: tuple[float, float]
    gating_mm: float

    @property
    def core_radius(self) -> float:
        return float(np.cbrt(np.prod(self.core_radii)))


def draw_lesion(rng: np.random.Generator, params: SynthParams, layout: Layout, enhancing: bool) -> Lesion:
    """One lesion placed in a cerebral hemisphere, away from the midline and the ventricles."""
    size = layout.size
    radii = np.array(CEREBRUM_RADII) * size
    radii[0] = CEREBRUM_LOWER_RZ * size[0] * 0.5 + radii[0] * 0.5
    centre = np.zeros(3)
    for _ in range(200):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        candidate = direction * rng.uniform(0.0, 1.0) ** (1.0 / 3.0) * radii * 0.62
        candidate[0] += 6.0
        lat_c, lat_r = LATERAL_VENTRICLE
        in_ventricle = np.sum(((np.abs(candidate) - np.array(lat_c)) / (np.array(lat_r) * 1.3)) ** 2) < 1.0
        if abs(candidate[2]) > 12.0 and not in_ventricle:
            centre = candidate
            break
    wt_radius = uniform(rng, params.whole_tumour_radius_mm)
    core_fraction = uniform(rng, params.core_fraction if enhancing else params.lgg_core_fraction)
    orientation = random_orientation(rng)
    aspect = rng.uniform(0.75, 1.3, size=3)
    aspect /= np.cbrt(np.prod(aspect))
    wt_radii = wt_radius * aspect
    core_radii = wt_radii * core_fraction * rng.uniform(0.9, 1.1, size=3)
    necrosis = None
    # the enhancing rim takes at most 40 % of the core radius; what is inside it is (partly) necrotic
    rim = min(uniform(rng, params.rim_mm), 0.4 * float(core_radii.min()))
    if enhancing:
        solid = rng.random() < params.p_solid_enhancing
        inner = core_radii - rim
        fraction = uniform(rng, params.necrosis_fraction)
        if not solid and float(inner.min()) > 2.0:
            necrosis = inner * (0.5 + 0.7 * fraction) * rng.uniform(0.9, 1.1, size=3)
    elif rng.random() < params.p_lgg_cyst:
        necrosis = core_radii * rng.uniform(0.25, 0.6) * rng.uniform(0.85, 1.15, size=3)
    offset = rng.standard_normal(3) * 0.1 * core_radii
    return Lesion(
        centre=centre,
        orientation=orientation,
        wt_radii=wt_radii,
        core_radii=core_radii,
        necrosis_radii=necrosis,
        necrosis_offset=offset,
        rim_mm=rim,
        wt_roughness=(rng.uniform(2.0, 8.0), rng.uniform(4.0, 10.0)),
        core_roughness=(rng.uniform(1.0, 4.0), rng.uniform(3.0, 7.0)),
        gating_mm=rng.uniform(3.0, 12.0),
    )


@dataclass
class TumourMaps:
    whole: torch.Tensor  # membership (0..1) of the whole tumour (oedema + core)
    core: torch.Tensor
    necrosis: torch.Tensor


def tumour_maps(
    rng: np.random.Generator,
    grid: Grid,
    layout: Layout,
    lesions: Sequence[Lesion],
    anatomy: Anatomy,
    oedema_softness: float,
) -> TumourMaps:
    """Partial-volume memberships of the tumour compartments (output frame)."""
    z, y, x = layout.to_brain(grid.axes_mm())
    s = layout.scale
    sharp = 0.5 / s
    frac = anatomy.fractions
    brain = sum(frac.values())
    fluid = frac["csf"] + frac["plexus"] + frac["vessel"]
    not_white = (frac["gm"] + 0.3 * frac["deep_gm"] + 3.0 * fluid).clamp(0.0, 3.0)
    whole = torch.zeros(grid.shape)
    core, necrosis = torch.zeros(grid.shape), torch.zeros(grid.shape)
    for lesion in lesions:
        rot = torch.from_numpy(lesion.orientation.T.astype(np.float32))
        local = rotate(rot, [z - lesion.centre[0], y - lesion.centre[1], x - lesion.centre[2]])
        amp, corr = lesion.core_roughness
        core_out = -ellipsoid_depth(*local, lesion.core_radii) + amp * grid.smooth_noise(rng, corr * s)
        amp, corr = lesion.wt_roughness
        wt_out = -ellipsoid_depth(*local, lesion.wt_radii) + amp * grid.smooth_noise(rng, corr * s)
        core_member = soft(-core_out, sharp)
        # Oedema follows white matter: the cortex and CSF push its boundary inwards (not inside the core).
        wt_out = wt_out + lesion.gating_mm * not_white * (1.0 - core_member)
        whole = torch.maximum(whole, torch.maximum(soft(-wt_out, oedema_softness / s), core_member))
        core = torch.maximum(core, core_member)
        if lesion.necrosis_radii is not None:
            lz, ly, lx = (loc - float(o) for loc, o in zip(local, lesion.necrosis_offset, strict=True))
            nec_out = -ellipsoid_depth(lz, ly, lx, lesion.necrosis_radii)
            nec_out = nec_out + 0.5 * amp * grid.smooth_noise(rng, 4.0 * s)
            nec_out = torch.maximum(nec_out, core_out + lesion.rim_mm)  # keep a rim inside the core
            necrosis = torch.maximum(necrosis, soft(-nec_out, sharp))
    return TumourMaps(whole * brain, core * brain, torch.minimum(necrosis, core) * brain)
