"""One generated case: ``SynthCase`` and ``generate_case``, which runs the steps on the case seed's streams."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .acquisition import render
from .anatomy import draw_anatomy
from .geometry import MIN_SIZE_VOXELS, SPATIAL_DIMS, Grid, spacing_zyx, uniform
from .layout import draw_layout
from .lesions import draw_lesion, tumour_maps
from .params import SynthParams
from .vocabulary import LABEL_ED, LABEL_ET, LABEL_NCR, MODALITIES, NORMAL_TISSUES

__all__ = ["SynthCase", "generate_case"]


@dataclass
class SynthCase:
    """One generated case.

    Attributes:
        images: ``{modality: float32 array (z, y, x)}`` in ``MODALITIES`` order; exactly 0 outside the brain.
        label: uint8 array (z, y, x) with 0, 1 (NCR), 2 (ED), 3 (ET).
        spacing: voxel size (z, y, x) in mm.
        seed: the seed that produced it.
        tissue: uint8 array (z, y, x): the dominant normal tissue under each voxel (the anatomy the tumour sits
            in), ``NORMAL_TISSUES[code - 1]``, 0 outside the brain.
        info: what was drawn (tumour type and size, contrasts, acquisition), JSON-ready.
    """

    images: dict[str, np.ndarray]
    label: np.ndarray
    spacing: tuple[float, float, float]
    seed: int
    tissue: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def stack(self) -> np.ndarray:
        """The four images as one float32 array (4, z, y, x) in the authors' channel order."""
        return np.stack([self.images[m] for m in MODALITIES])


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: unchanged), then restore the setting."""
    previous = torch.get_num_threads()
    if threads is not None and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def generate_case(
    seed: int,
    shape: Sequence[int] = (128, 128, 128),
    spacing: float | Sequence[float] = 1.0,
    params: SynthParams | None = None,
    *,
    threads: int | None = 1,
) -> SynthCase:
    """Generate one synthetic BraTS-like case.

    Args:
        seed: any non-negative integer; the same seed, shape, spacing and params give the same case.
        shape: array shape (z, y, x); each at least 32.
        spacing: voxel size in mm, one number or (z, y, x).
        params: ranges to draw from; ``SynthParams()`` by default.
        threads: torch intra-op threads while generating, restored afterwards (torch's setting is process-wide).
            Default 1: generation is many small operations that gain little from threads and lose a lot on a
            busy CPU; generate several cases in parallel processes instead. None leaves the setting alone.

    Returns:
        The case: four float32 images (z, y, x) with integer values (unless ``params.integer_intensities`` is
        False) and exact zeros outside the brain, and a uint8 label map (0, 1 NCR, 2 ED, 3 ET).
    """
    params = params or SynthParams()
    if len(shape) != SPATIAL_DIMS or min(shape) < MIN_SIZE_VOXELS:
        raise ConfigError(f"shape must be three sizes of at least {MIN_SIZE_VOXELS} voxels, not {tuple(shape)}")
    spacing3 = spacing_zyx(spacing)
    if len(spacing3) != SPATIAL_DIMS or min(spacing3) <= 0:
        raise ConfigError(f"spacing must be one positive number or three, not {spacing}")
    sz, sy, sx = spacing3
    if int(seed) < 0:
        raise ConfigError(f"seed must be non-negative, not {seed}")
    grid = Grid(shape, spacing3)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5)]
    layout_rng, lesion_rng, anatomy_rng, tumour_rng, appearance_rng = streams

    with torch.no_grad(), torch_threads(threads):
        layout = draw_layout(layout_rng, grid, params)
        has_tumour = lesion_rng.random() >= params.p_no_tumour
        enhancing = lesion_rng.random() >= params.p_no_enhancement
        count = (2 if lesion_rng.random() < params.p_second_lesion else 1) if has_tumour else 0
        lesions = [draw_lesion(lesion_rng, params, layout, enhancing) for _ in range(count)]
        mass_effect = uniform(lesion_rng, params.mass_effect)
        oedema_softness = uniform(lesion_rng, params.oedema_softness_mm)
        anatomy = draw_anatomy(anatomy_rng, grid, layout, params, lesions, mass_effect)
        tumour = tumour_maps(tumour_rng, grid, layout, lesions, anatomy, oedema_softness)
        label, images, brain_mask, info = render(appearance_rng, grid, layout, params, anatomy, tumour, enhancing)
        dominant = torch.stack([anatomy.fractions[t].expand(grid.shape) for t in NORMAL_TISSUES]).argmax(0) + 1
        tissue = torch.where(brain_mask, dominant, torch.zeros((), dtype=torch.long))

    info.update(
        {
            "tumour": "none" if not lesions else ("enhancing" if enhancing else "non-enhancing"),
            "lesions": len(lesions),
            "whole_tumour_radius_mm": [
                round(float(np.cbrt(np.prod(les.wt_radii))) * layout.scale, 1) for les in lesions
            ],
            "brain_scale": round(layout.scale, 3),
            "mass_effect": round(mass_effect, 3),
            "midline_shift_mm": round(anatomy.midline_shift_mm, 2),
            "site": params.site.name if params.site else None,
            "voxels": {
                name: int((label == value).sum())
                for name, value in (("NCR", LABEL_NCR), ("ED", LABEL_ED), ("ET", LABEL_ET))
            },
        }
    )
    return SynthCase(images, label, (sz, sy, sx), int(seed), tissue.to(torch.uint8).numpy(), info)
