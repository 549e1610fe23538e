"""Appearance and acquisition: tissue contrasts, labels, and each sequence's simulated scan of the tissue maps."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .anatomy import Anatomy
from .geometry import Grid, gaussian_blur, uniform
from .layout import Layout
from .lesions import TumourMaps
from .params import SynthParams
from .vocabulary import LABEL_ED, LABEL_ET, LABEL_NCR, MODALITIES, TISSUES


def draw_contrast(rng: np.random.Generator, params: SynthParams) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for modality in MODALITIES:
        table[modality] = {}
        for tissue in TISSUES:
            value = uniform(rng, params.contrast[modality][tissue])
            if params.site is not None:
                value *= params.site.contrast_factor(modality, tissue)
            table[modality][tissue] = value
    return table


def thick_slices(volume: torch.Tensor, axis: int, factor: int, offset: int) -> torch.Tensor:
    """Average ``factor`` voxels along ``axis`` (a thick slice), then interpolate linearly back to the grid."""
    size = volume.shape[axis]
    moved = volume.movedim(axis, -1)
    lead = moved.shape[:-1]
    flat = moved.reshape(1, -1, size)
    total = int(math.ceil((size + offset) / factor)) * factor
    flat = F.pad(flat, (offset, total - size - offset), mode="replicate")
    pooled = F.avg_pool1d(flat, factor)
    # slice centres in original voxel units, then linear interpolation at every original voxel
    centres = torch.arange(pooled.shape[-1], dtype=torch.float32) * factor + (factor - 1) / 2.0 - offset
    positions = torch.arange(size, dtype=torch.float32)
    idx = torch.searchsorted(centres, positions).clamp(1, pooled.shape[-1] - 1)
    left, right = centres[idx - 1], centres[idx]
    weight = ((positions - left) / (right - left)).clamp(0.0, 1.0)
    out = pooled[..., idx - 1] * (1.0 - weight) + pooled[..., idx] * weight
    return out.reshape(*lead, size).movedim(-1, axis)


def acquire(
    rng: np.random.Generator,
    clean: torch.Tensor,
    grid: Grid,
    layout: Layout,
    params: SynthParams,
    modality: str,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Simulate one sequence's acquisition of a clean image (white matter = 1): returns intensities and what was
    drawn."""
    site = params.site
    gamma = uniform(rng, params.gamma) * (site.gamma.get(modality, 1.0) if site else 1.0)
    image = clean.clamp_min(0.0) ** gamma
    blur = uniform(rng, params.blur_mm) + (site.extra_blur_mm if site else 0.0)
    if blur > 0.05:
        image = gaussian_blur(image, [blur / sp for sp in grid.spacing])
    thick: float | None = None
    axis = 0
    if site is not None and modality in site.thick_slices:
        thick, axis = float(site.thick_slices[modality]), site.slice_axis
    elif rng.random() < params.p_thick_slices:
        thick = uniform(rng, params.slice_thickness_mm)
        axis = int(rng.choice(3, p=[0.6, 0.2, 0.2]))  # mostly axial 2-D acquisitions
    factor = 1
    if thick is not None:
        factor = int(round(thick / grid.spacing[axis]))
        if factor >= 2:
            image = thick_slices(image, axis, factor, int(rng.integers(0, factor)))
    bias_strength = uniform(rng, params.bias) * (site.bias_scale if site else 1.0)
    bias_field = grid.smooth_noise(rng, rng.uniform(30.0, 60.0) * layout.scale)
    image = image * torch.exp(bias_strength * bias_field)
    low, high = params.wm_intensity
    scale = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if high > low else float(low)
    sigma = uniform(rng, params.noise) * (site.noise_scale if site else 1.0)
    real = image * scale + torch.from_numpy(rng.standard_normal(grid.shape, dtype=np.float32)) * (sigma * scale)
    imag = torch.from_numpy(rng.standard_normal(grid.shape, dtype=np.float32)) * (sigma * scale)
    image = torch.sqrt(real * real + imag * imag)
    info = {
        "gamma": round(gamma, 3),
        "blur_mm": round(blur, 3),
        "slice_factor": factor,
        "slice_axis": axis,
        "bias": round(bias_strength, 3),
        "noise": round(sigma, 4),
        "wm_intensity": round(scale, 1),
    }
    return image, info


def render(
    rng: np.random.Generator,
    grid: Grid,
    layout: Layout,
    params: SynthParams,
    anatomy: Anatomy,
    tumour: TumourMaps,
    enhancing: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray], torch.Tensor, dict[str, Any]]:
    """Labels, the four acquired images and the skull-stripping mask, from the tissue and tumour maps."""
    s = layout.scale
    contrast = draw_contrast(rng, params)
    texture = grid.smooth_noise(rng, 1.0 * s)
    tumour_texture = grid.smooth_noise(rng, 2.5 * s)
    texture_amp = {m: uniform(rng, params.texture) for m in MODALITIES}
    tumour_amp = {m: uniform(rng, params.tumour_texture) for m in MODALITIES}
    strip = uniform(rng, params.strip_offset_mm)
    frac = anatomy.fractions
    brain_mask = anatomy.depth > -strip / s

    whole, core, necrosis = tumour.whole, tumour.core, tumour.necrosis
    label = torch.zeros(grid.shape, dtype=torch.uint8)
    label[whole >= 0.5] = LABEL_ED
    if enhancing:
        label[core >= 0.5] = LABEL_ET
        label[necrosis >= 0.5] = LABEL_NCR
    else:
        label[core >= 0.5] = LABEL_NCR
    label[~brain_mask] = 0
    core_tissue = "enhancing" if enhancing else "nonenhancing"

    images: dict[str, np.ndarray] = {}
    acquisition: dict[str, Any] = {}
    brain = sum(frac.values(), torch.zeros(()))  # the brain fraction (a tensor start value: typed as a tensor)
    normal_weight = 1.0 - whole / brain.clamp_min(1e-6)
    for modality in MODALITIES:
        mu = contrast[modality]
        normal = sum(frac[t] * mu[t] for t in frac) * (1.0 + texture_amp[modality] * texture)
        lesion_tex = 1.0 + tumour_amp[modality] * tumour_texture
        clean = (
            normal * normal_weight.clamp(0.0, 1.0)
            + (whole - core) * mu["edema"] * lesion_tex
            + (core - necrosis) * mu[core_tissue] * lesion_tex
            + necrosis * mu["necrosis"] * (1.0 + 0.5 * tumour_amp[modality] * tumour_texture)
        )
        image, acquisition[modality] = acquire(rng, clean, grid, layout, params, modality)
        image = torch.where(brain_mask, image, torch.zeros(()))
        if params.integer_intensities:
            image = torch.round(image)
        images[modality] = image.numpy().astype(np.float32, copy=False)
    info = {
        "contrast": {m: {t: round(v, 3) for t, v in table.items()} for m, table in contrast.items()},
        "acquisition": acquisition,
    }
    return label.numpy(), images, brain_mask, info
