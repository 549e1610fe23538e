"""Synthetic BraTS-like brain tumour cases with exact labels (domain randomisation for training and tests).

A case is four co-registered MR sequences of a skull-stripped brain, in the authors' channel order
``flair, t1ce, t1, t2``, and a label map with the BraTS 2023 convention (0 background, 1 necrotic / non-enhancing
tumour core NCR, 2 peritumoural oedema ED, 3 enhancing tumour ET). Every image is drawn from the same tissue
model as the label, so the label is exact for the images: a voxel gets a tumour label when that compartment
occupies at least half of it.

The anatomy is analytic (ellipsoidal cerebrum, cerebellum and brainstem; cortex, sulci, interhemispheric fissure,
tentorium, lateral and third ventricles, choroid plexus, thalamus and basal ganglia) perturbed by smooth random
fields; the tumour is a set of nested noise-perturbed ellipsoids (oedema that spreads through white matter and
spares cortex and CSF, an enhancing rim, a necrotic centre), or for a low-grade-like case a non-enhancing core
(label 1) without ET. The tumour pushes the surrounding anatomy away (mass effect). Tissue intensities are
drawn per case from ranges that keep each sequence's characteristic contrast (``DEFAULT_CONTRAST``; earlier
generator versions stay reproducible through ``synth_params``); then the acquisition is simulated per sequence:
intensity non-linearity, blur, thick slices, bias field, Rician noise, skull stripping (exact zeros outside the
brain) and integer intensities on a random scale.

Geometry is in millimetres; arrays are ``(z, y, x)`` (slices first, as SimpleITK returns them) and written in
LPS orientation like BraTS (x to the patient's left, y posterior, z superior). With the default 128³ at 1 mm the
brain is scaled down to fit the field of view; ``shape=(155, 240, 240)`` gives a BraTS-sized case at true scale.

Only numpy and torch are used. Everything random is drawn from ``numpy.random.Generator`` streams derived from
the case seed, so a seed always gives the same case.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, OutputError
from .progress import CancelToken, ProgressCallback, StagePlan

__all__ = [
    "MODALITIES",
    "TISSUES",
    "LABEL_NCR",
    "LABEL_ED",
    "LABEL_ET",
    "DEFAULT_CONTRAST",
    "GENERATOR_VERSIONS",
    "LATEST_GENERATOR",
    "synth_params",
    "SiteShift",
    "shifted_site",
    "SITE_PROFILES",
    "SynthParams",
    "SynthCase",
    "generate_case",
    "write_case",
    "generate_dataset",
    "dataset_case_seed",
]

log = logging.getLogger(__name__)

MODALITIES = ("flair", "t1ce", "t1", "t2")
"""Sequence names in the authors' channel order (also the BraTS 2021 file suffixes)."""

TISSUES = ("wm", "gm", "deep_gm", "csf", "plexus", "vessel", "edema", "enhancing", "necrosis", "nonenhancing")

LABEL_NCR, LABEL_ED, LABEL_ET = 1, 2, 3
"""BraTS 2023 label values (BraTS 2017-2021 used 4 for ET)."""

NORMAL_TISSUES = ("wm", "gm", "deep_gm", "csf", "plexus", "vessel")
"""Codes 1..6 of ``SynthCase.tissue`` (0 outside the brain)."""

DEFAULT_CONTRAST: dict[str, dict[str, tuple[float, float]]] = {
    # Mean intensity of each tissue relative to white matter (= 1) on each sequence, drawn uniformly per case.
    # The ranges keep what makes each sequence recognisable: WM brighter than GM on T1/T1ce and darker on
    # T2/FLAIR, CSF dark on T1/T1ce/FLAIR and bright on T2, oedema bright on FLAIR/T2, ET bright on T1ce only,
    # necrosis dark on T1/T1ce and bright on T2. Cortical vessels and the choroid plexus enhance on T1ce too
    # (so that brightness on T1ce alone does not make a tumour); vessels are flow voids on T2.
    # Checked against the real shared cases that are not held out (docs/SYNTHETIC_DATA.md, "Generator
    # versions"): in z-scores within the brain, the differences between the tumour compartments of the expert-
    # labelled BraTS 2015 case (FLAIR, T1ce) and of the two TCGA cases lie inside the ranges these tables give.
    # On FLAIR a necrotic or enhancing core can be as bright as the oedema or brighter (version 1 never drew that).
    "flair": {
        "wm": (1.0, 1.0), "gm": (1.05, 1.3), "deep_gm": (1.0, 1.2), "csf": (0.15, 0.45), "plexus": (0.3, 0.7),
        "vessel": (0.2, 0.6),
        "edema": (1.3, 2.3), "enhancing": (1.2, 2.6), "necrosis": (0.8, 2.8), "nonenhancing": (1.3, 2.2),
    },
    "t1ce": {
        "wm": (1.0, 1.0), "gm": (0.72, 0.9), "deep_gm": (0.8, 0.94), "csf": (0.25, 0.5), "plexus": (1.1, 1.6),
        "vessel": (1.2, 2.2),
        "edema": (0.65, 0.95), "enhancing": (1.05, 1.7), "necrosis": (0.4, 0.88), "nonenhancing": (0.5, 0.9),
    },
    "t1": {
        "wm": (1.0, 1.0), "gm": (0.68, 0.88), "deep_gm": (0.78, 0.93), "csf": (0.25, 0.45), "plexus": (0.3, 0.6),
        "vessel": (0.3, 0.8),
        "edema": (0.6, 0.92), "enhancing": (0.6, 0.95), "necrosis": (0.4, 0.9), "nonenhancing": (0.45, 0.85),
    },
    "t2": {
        "wm": (1.0, 1.0), "gm": (1.08, 1.3), "deep_gm": (1.0, 1.2), "csf": (2.4, 4.0), "plexus": (1.5, 2.5),
        "vessel": (0.3, 1.0),
        "edema": (1.55, 2.4), "enhancing": (1.3, 2.0), "necrosis": (1.4, 3.2), "nonenhancing": (1.6, 2.6),
    },
}
"""The contrast table of the latest generator version (``LATEST_GENERATOR``)."""

GENERATOR_VERSIONS = (1, 2)
"""Generator versions ``synth_params`` can reproduce. 1: the data of the bundled model 1.1.0 and of the fine-tuning
experiments (docs/FINETUNING.md); 2: FLAIR cores as bright as the oedema or brighter, more T2 overlap of necrosis and
oedema, fainter enhancement possible, larger tumours (BraTS-like core volumes of tens of cm³)."""
LATEST_GENERATOR = 2

_VERSION_1 = {
    # what version 2 changed, as version 1 had it
    "contrast": {
        "flair": {"edema": (1.45, 2.3), "enhancing": (1.2, 2.0), "necrosis": (0.8, 2.0)},
        "t1ce": {"enhancing": (1.12, 1.7)},
        "t2": {"necrosis": (1.8, 3.2)},
    },
    "whole_tumour_radius_mm": (12.0, 35.0),
    "core_fraction": (0.35, 0.8),
    "rim_mm": (1.5, 5.0),
}

_SPATIAL_DIMS = 3
MIN_SIZE_VOXELS = 32
"""Smallest case size on every axis: the brain model needs room for its structures."""
_FIT_MARGIN = 0.92  # the brain's bounding box fills at most this fraction of the field of view per axis


@dataclass(frozen=True)
class SiteShift:
    """A systematic protocol difference of one acquisition site, applied on top of the per-case randomisation.

    Attributes:
        contrast: multipliers of tissue means, ``{modality: {tissue: factor}}`` (tissues from ``TISSUES``).
        gamma: exponent applied to each sequence's intensities relative to white matter, ``{modality: g}``.
        noise_scale: multiplier of the Rician noise level.
        bias_scale: multiplier of the bias-field strength.
        extra_blur_mm: Gaussian blur sigma (mm) added to every sequence.
        thick_slices: ``{modality: thickness_mm}`` sequences always acquired with thick slices along ``slice_axis``.
        slice_axis: array axis of the thick slices (0 = z, axial acquisition).
        name: a label for reports.
    """

    contrast: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    gamma: Mapping[str, float] = field(default_factory=dict)
    noise_scale: float = 1.0
    bias_scale: float = 1.0
    extra_blur_mm: float = 0.0
    thick_slices: Mapping[str, float] = field(default_factory=dict)
    slice_axis: int = 0
    name: str = "site"

    def __post_init__(self) -> None:
        for modality in {*self.contrast, *self.gamma, *self.thick_slices}:
            if modality not in MODALITIES:
                raise ConfigError(f"site shift names unknown sequence {modality!r}; expected one of {MODALITIES}")
        for modality, table in self.contrast.items():
            unknown = set(table) - set(TISSUES)
            if unknown:
                raise ConfigError(f"site shift for {modality} names unknown tissues {sorted(unknown)}")
        if self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"slice_axis must be 0, 1 or 2, not {self.slice_axis}")

    def contrast_factor(self, modality: str, tissue: str) -> float:
        return float(self.contrast.get(modality, {}).get(tissue, 1.0))


SITE_PROFILES = ("low-contrast", "other-scanner")


def shifted_site(strength: float = 1.0, profile: str = "low-contrast") -> SiteShift:
    """A plausible "other scanner" protocol outside the default randomisation, for fine-tuning experiments.

    Both profiles, at ``strength=1``: FLAIR with incomplete CSF suppression (CSF x 2.6), a flatter T1 grey/white
    contrast, 5 mm axial FLAIR and T2, and twice the bias field. Then

    * ``low-contrast``: weak gadolinium enhancement (enhancing rim x 0.8, necrosis x 1.25 and a compressive
      intensity curve on T1ce), lower FLAIR and T2 lesion contrast, twice the noise. It removes information: at
      strength 1.5 the enhancing rim is barely brighter than the necrosis on T1ce (0.0-0.3 standard deviations
      of the brain's intensities in the cases we measured), so a model can hardly tell them apart.
    * ``other-scanner``: the diagnostic contrasts are kept (enhancement, lesion on FLAIR and T2) but every
      sequence has another intensity curve (gamma 1.4 on T1ce, 1.25 on T1, 1.2 on T2, 0.8 on FLAIR) and 1.5 times
      the noise: what a model must relearn, not what it cannot know.

    Factors are interpolated geometrically (``factor ** strength``); ``strength=0`` is no shift.

    Args:
        strength: 0 (none) to 3; 1.5 is severe, and at 2.0 the bundled model loses about 0.3 Dice on the
            ``other-scanner`` profile (docs/FINETUNING.md).
        profile: one of ``SITE_PROFILES``.

    Returns:
        The site shift to put in ``SynthParams.site``.
    """
    if not 0.0 <= strength <= 3.0:
        raise ConfigError(f"site shift strength must be between 0 and 3, not {strength}")
    if profile not in SITE_PROFILES:
        raise ConfigError(f"unknown site profile {profile!r}; choose from {', '.join(SITE_PROFILES)}")

    def s(factor: float) -> float:
        return float(factor**strength)

    thickness = 1.0 + 4.0 * min(strength, 1.0)
    if profile == "low-contrast":
        contrast = {
            "t1ce": {"enhancing": s(0.8), "necrosis": s(1.25), "gm": s(1.08)},
            "flair": {"csf": s(2.6), "edema": s(0.85), "nonenhancing": s(0.85), "gm": s(0.92)},
            "t1": {"gm": s(1.12), "deep_gm": s(1.06)},
            "t2": {"csf": s(0.75), "edema": s(0.9)},
        }
        gamma, noise = {"t1ce": s(0.75), "t2": s(1.2)}, s(2.0)
    else:
        contrast = {
            "t1ce": {"gm": s(1.08)},
            "flair": {"csf": s(2.6), "gm": s(0.92)},
            "t1": {"gm": s(1.12), "deep_gm": s(1.06)},
            "t2": {"csf": s(0.75)},
        }
        gamma, noise = {"t1ce": s(1.4), "t1": s(1.25), "t2": s(1.2), "flair": s(0.8)}, s(1.5)
    return SiteShift(
        contrast=contrast,
        gamma=gamma,
        noise_scale=noise,
        bias_scale=s(2.0),
        extra_blur_mm=0.4 * strength,
        thick_slices={"flair": thickness, "t2": thickness} if strength > 0 else {},
        slice_axis=0,
        name=f"shifted-site-{strength:g}" if profile == "low-contrast" else f"{profile}-{strength:g}",
    )


@dataclass(frozen=True)
class SynthParams:
    """Ranges the generator draws from (uniformly unless said otherwise). Lengths are millimetres of a
    full-size brain; they shrink with the brain when it is scaled to fit the field of view.
    """

    contrast: Mapping[str, Mapping[str, tuple[float, float]]] = field(default_factory=lambda: DEFAULT_CONTRAST)
    site: SiteShift | None = None
    # anatomy
    brain_scale: tuple[float, float] = (0.92, 1.05)
    rotation_deg: float = 6.0
    ventricle_scale: tuple[float, float] = (0.6, 1.6)
    cortex_thickness_mm: tuple[float, float] = (2.2, 3.4)
    sulcus_width_mm: tuple[float, float] = (0.5, 2.2)
    sulcus_depth_mm: tuple[float, float] = (12.0, 22.0)
    vessel_density: tuple[float, float] = (0.0, 1.0)
    outer_csf_mm: tuple[float, float] = (0.2, 1.8)
    # tumour
    p_no_tumour: float = 0.0
    p_second_lesion: float = 0.1
    p_no_enhancement: float = 0.2
    p_solid_enhancing: float = 0.15
    p_lgg_cyst: float = 0.3
    whole_tumour_radius_mm: tuple[float, float] = (14.0, 40.0)
    core_fraction: tuple[float, float] = (0.4, 0.85)
    lgg_core_fraction: tuple[float, float] = (0.4, 0.95)
    necrosis_fraction: tuple[float, float] = (0.0, 1.0)
    """Size of the necrosis within the rim: 0 small, 1 filling it."""
    rim_mm: tuple[float, float] = (2.0, 6.0)
    oedema_softness_mm: tuple[float, float] = (0.8, 3.0)
    mass_effect: tuple[float, float] = (0.0, 0.55)
    # appearance and acquisition
    texture: tuple[float, float] = (0.015, 0.05)
    tumour_texture: tuple[float, float] = (0.04, 0.15)
    gamma: tuple[float, float] = (0.85, 1.15)
    blur_mm: tuple[float, float] = (0.0, 0.8)
    p_thick_slices: float = 0.3
    slice_thickness_mm: tuple[float, float] = (2.0, 5.0)
    bias: tuple[float, float] = (0.0, 0.25)
    noise: tuple[float, float] = (0.01, 0.05)
    wm_intensity: tuple[float, float] = (150.0, 4000.0)
    """White-matter intensity of the written image, drawn log-uniformly per sequence."""
    strip_offset_mm: tuple[float, float] = (-0.8, 0.8)
    """Skull-stripping mask boundary relative to the brain surface (positive: a little outside)."""
    integer_intensities: bool = True

    def __post_init__(self) -> None:
        for modality in MODALITIES:
            if modality not in self.contrast:
                raise ConfigError(f"contrast table lacks sequence {modality!r}")
            missing = set(TISSUES) - set(self.contrast[modality])
            if missing:
                raise ConfigError(f"contrast table for {modality} lacks tissues {sorted(missing)}")
        for name in ("p_no_tumour", "p_second_lesion", "p_no_enhancement", "p_solid_enhancing", "p_lgg_cyst",
                     "p_thick_slices"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], not {value}")

    def with_site(self, site: SiteShift | None) -> SynthParams:
        """A copy with another site shift."""
        return replace(self, site=site)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for a dataset's provenance file)."""
        out = asdict(self)
        out["contrast"] = {m: {t: list(r) for t, r in table.items()} for m, table in self.contrast.items()}
        return out


def synth_params(generator: int = LATEST_GENERATOR, **changes: Any) -> SynthParams:
    """The ranges of generator version ``generator`` (see ``GENERATOR_VERSIONS``), with ``changes`` applied.

    ``SynthParams()`` is the latest version; an older one reproduces the data that was made with it.

    Raises:
        ConfigError: an unknown version.
    """
    if generator not in GENERATOR_VERSIONS:
        raise ConfigError(f"unknown synthetic-data generator version {generator!r}; known: {list(GENERATOR_VERSIONS)}")
    if generator == 1:
        contrast = {m: {**table, **_VERSION_1["contrast"].get(m, {})} for m, table in DEFAULT_CONTRAST.items()}
        sizes = {k: v for k, v in _VERSION_1.items() if k != "contrast"}
        changes = {"contrast": contrast, **sizes, **changes}
    return SynthParams(**changes)


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


# ----------------------------------------------------------------------------------------------------- helpers


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    low, high = float(bounds[0]), float(bounds[1])
    return low if high <= low else float(rng.uniform(low, high))


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation matrix (3, 3) with Euler angles uniform in ±max_deg about each axis."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _random_orientation(rng: np.random.Generator) -> np.ndarray:
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


def _gaussian_blur(volume: torch.Tensor, sigma_vox: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of a (D, H, W) or (C, D, H, W) tensor; sigma per axis in voxels, edges replicated."""
    squeeze = volume.dim() == _SPATIAL_DIMS
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


class _Grid:
    """Voxel grid geometry: shape (z, y, x), spacing in mm, voxel-centre coordinates relative to the centre."""

    def __init__(self, shape: Sequence[int], spacing: Sequence[float]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.extent_mm = np.array([n * s for n, s in zip(self.shape, self.spacing)])

    def axes_mm(self) -> list[torch.Tensor]:
        """Per-axis coordinates (mm, 0 at the grid centre), shaped to broadcast: (D,1,1), (1,H,1), (1,1,W)."""
        out = []
        for axis, (n, s) in enumerate(zip(self.shape, self.spacing)):
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
        coarse = [int(math.ceil(e / st)) + 3 for e, st in zip(self.extent_mm, step)]
        white = torch.from_numpy(rng.standard_normal(coarse, dtype=np.float32))
        sigma_coarse = [sigma_mm / st for st in step]
        field_ = _gaussian_blur(white, sigma_coarse)
        if field_.shape != self.shape:
            field_ = F.interpolate(field_[None, None], size=self.shape, mode="trilinear", align_corners=True)[0, 0]
        field_ = field_ - field_.mean()
        return field_ / field_.std().clamp_min(1e-6)


def _ellipsoid_depth(
    z: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    radii: Sequence[float | torch.Tensor],
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


def _spacing3(spacing: float | Sequence[float]) -> tuple[float, ...]:
    if np.isscalar(spacing):
        return (float(spacing),) * 3  # type: ignore[arg-type]
    return tuple(float(v) for v in spacing)  # type: ignore[union-attr]


def _soft(distance_inside: torch.Tensor, width: float) -> torch.Tensor:
    """Partial-volume fraction from a signed distance (positive inside), transition ``width`` mm."""
    return torch.sigmoid(distance_inside / max(width, 1e-3))


# ------------------------------------------------------------------------------------------------- the anatomy

# Anatomical layout of an average adult brain in mm, in a frame centred on the cerebrum: (z superior, y posterior,
# x left). Each entry: centre (z, y, x) and radii (z, y, x).
_CEREBRUM_RADII = (58.0, 84.0, 70.0)
_CEREBRUM_LOWER_RZ = 42.0
_CEREBRUM_POWER = 2.2
_SULCUS_SPACING_MM = 3.8  # correlation length of the field whose zero set draws the sulci
_CEREBELLUM = ((-38.0, 48.0, 0.0), (22.0, 30.0, 52.0))
_BRAINSTEM = ((-44.0, 16.0, 0.0), (32.0, 13.0, 14.0))
_BRAIN_BOX = ((-76.0, 58.0), (-84.0, 84.0), (-70.0, 70.0))  # z, y, x extents of the union above
_LATERAL_VENTRICLE = ((6.0, -2.0, 10.0), (10.0, 30.0, 7.0))
_THIRD_VENTRICLE = ((-10.0, 6.0, 0.0), (8.0, 11.0, 1.4))
_PLEXUS = ((4.0, 22.0, 11.0), (3.5, 7.0, 3.5))
_THALAMUS = ((-4.0, 10.0, 11.0), (10.0, 15.0, 8.5))
_LENTIFORM = ((0.0, -8.0, 23.0), (13.0, 17.0, 6.5))


@dataclass
class _Layout:
    """Where the brain sits in the grid: world_mm = centre + scale * R @ brain_mm."""

    centre: np.ndarray  # (3,) world mm (z, y, x) of the brain frame's origin
    rotation: np.ndarray  # (3, 3) brain -> world
    scale: float
    size: np.ndarray  # (3,) per-axis individual size factors of the cerebrum
    ventricle_scale: float

    def to_brain(self, world: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Brain-frame coordinates (mm of a full-size brain) of world coordinates (each broadcastable)."""
        rt = torch.from_numpy((self.rotation.T / self.scale).astype(np.float32))
        rel = [w - float(c) for w, c in zip(world, self.centre)]
        return [rt[i, 0] * rel[0] + rt[i, 1] * rel[1] + rt[i, 2] * rel[2] for i in range(3)]


def _draw_layout(rng: np.random.Generator, grid: _Grid, params: SynthParams) -> _Layout:
    overall = _uniform(rng, params.brain_scale)
    size = overall * rng.uniform(0.94, 1.06, size=3)
    rotation = _rotation(rng, params.rotation_deg)
    lows = np.array([b[0] for b in _BRAIN_BOX]) * size
    highs = np.array([b[1] for b in _BRAIN_BOX]) * size
    half = (highs - lows) / 2.0 * 1.05  # rotation slack
    fit = float(np.min(_FIT_MARGIN * grid.extent_mm / 2.0 / half))
    scale = min(1.0, fit)
    room = np.maximum(0.0, grid.extent_mm / 2.0 - half * scale)
    shift = rng.uniform(-0.3, 0.3, size=3) * room
    centre = -scale * (lows + highs) / 2.0 + shift  # the box's centre near the grid's centre
    return _Layout(centre, rotation, scale, size, _uniform(rng, params.ventricle_scale))


def _brain_depth(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, size: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Signed depths (mm, positive inside) of cerebrum, cerebellum and brainstem at brain-frame coordinates."""
    sz, sy, sx = (float(v) for v in size)
    upper = torch.tensor(_CEREBRUM_RADII[0] * sz)
    rz = torch.where(z > 0, upper, torch.tensor(_CEREBRUM_LOWER_RZ * sz))
    cerebrum = _ellipsoid_depth(z, y, x, (rz, _CEREBRUM_RADII[1] * sy, _CEREBRUM_RADII[2] * sx), _CEREBRUM_POWER)
    (cz, cy, cx), radii = _CEREBELLUM
    cerebellum = _ellipsoid_depth(z - cz * sz, y - cy * sy, x - cx, (radii[0] * sz, radii[1] * sy, radii[2] * sx))
    (bz, by, bx), radii = _BRAINSTEM
    brainstem = _ellipsoid_depth(z - bz * sz, y - by * sy, x - bx, (radii[0] * sz, radii[1] * sy, radii[2] * sx))
    return cerebrum, cerebellum, brainstem


def _union_depth(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, size: np.ndarray) -> torch.Tensor:
    return torch.stack(_brain_depth(z, y, x, size)).amax(0)


def _blob(z, y, x, centre, radii, scale: float = 1.0, mirror: bool = False) -> torch.Tensor:
    """Signed depth (mm) of an ellipsoid at ``centre`` (or the pair mirrored across the midline)."""
    (cz, cy, cx), (rz, ry, rx) = centre, radii
    r = (rz * scale, ry * scale, rx * scale)
    if mirror:
        return _ellipsoid_depth(z - cz, y - cy, x.abs() - cx, r)
    return _ellipsoid_depth(z - cz, y - cy, x - cx, r)


@dataclass
class _Anatomy:
    fractions: dict[str, torch.Tensor]  # wm, gm, deep_gm, csf, plexus, vessel; they sum to the brain fraction
    depth: torch.Tensor  # signed depth (brain-frame mm) to the brain's outer surface, as drawn in the fractions
    midline_shift_mm: float = 0.0


def _anatomy(
    rng: np.random.Generator,
    grid: _Grid,
    layout: _Layout,
    params: SynthParams,
    lesions: Sequence[_Lesion],
    mass_effect: float,
) -> _Anatomy:
    """Tissue fractions of the normal brain, deformed by the lesions' mass effect."""
    world = grid.axes_mm()
    z0, y0, x0 = layout.to_brain(world)
    s = layout.scale
    width = 0.6 / s  # partial-volume transition in brain-frame mm
    surface_depth = _union_depth(z0, y0, x0, layout.size)

    # Random fields, drawn on the output grid (correlation lengths in world mm), then carried by the deformation.
    noise = {
        "surface": grid.smooth_noise(rng, 10.0 * s),
        "sulci": grid.smooth_noise(rng, _SULCUS_SPACING_MM * s),
        "folia": grid.smooth_noise(rng, 1.8 * s),
        "thickness": grid.smooth_noise(rng, 8.0 * s),
        "vessel_a": grid.smooth_noise(rng, 6.0 * s),
        "vessel_b": grid.smooth_noise(rng, 6.0 * s),
    }
    thickness = _uniform(rng, params.cortex_thickness_mm)
    sulcus_half = _uniform(rng, params.sulcus_width_mm) / 2.0
    outer_csf = _uniform(rng, params.outer_csf_mm)
    surface_amp = rng.uniform(1.0, 3.5)
    sulcus_depth = _uniform(rng, params.sulcus_depth_mm)
    vessel_radius = 1.2 * _uniform(rng, params.vessel_density)
    fissure_half = rng.uniform(0.6, 1.6) + 0.4 * (layout.ventricle_scale - 1.0)
    callosum_top = rng.uniform(12.0, 20.0)

    # Mass effect: brain-frame points near a lesion sample the anatomy from closer to its centre, i.e. the
    # anatomy is pushed outward; damped near the brain surface (the skull holds it).
    z, y, x = z0, y0, x0
    midline_shift = 0.0
    if mass_effect > 0 and lesions:
        damp = (surface_depth / 12.0).clamp(0.0, 1.0)
        dz = torch.zeros_like(z0 * y0 * x0)
        dy, dx = torch.zeros_like(dz), torch.zeros_like(dz)
        for lesion in lesions:
            rel = [z0 - lesion.centre[0], y0 - lesion.centre[1], x0 - lesion.centre[2]]
            reach = lesion.core_radius * 1.6 + 6.0
            r2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2
            pull = mass_effect * min(1.0, lesion.core_radius / 15.0) * torch.exp(-0.5 * r2 / reach**2) * damp
            dz, dy, dx = dz + rel[0] * pull, dy + rel[1] * pull, dx + rel[2] * pull
        z, y, x = z0 - dz, y0 - dy, x0 - dx
        septum = ((z0.abs() < 20) & (y0.abs() < 30) & (x0.abs() < 2)).expand_as(dx)
        midline_shift = float(dx[septum].abs().max()) * s if bool(septum.any()) else 0.0
        # displacement of the sampling position, brain frame -> world voxels -> grid_sample coordinates
        rot = torch.from_numpy((layout.rotation * s).astype(np.float32))
        disp_world = [rot[i, 0] * -dz + rot[i, 1] * -dy + rot[i, 2] * -dx for i in range(3)]
        base = [torch.linspace(-1.0, 1.0, n).view([n if a == i else 1 for a in range(3)])
                for i, n in enumerate(grid.shape)]
        norm = [disp_world[i] / grid.spacing[i] * (2.0 / max(grid.shape[i] - 1, 1)) for i in range(3)]
        sample = torch.stack([(base[2] + norm[2]).expand(grid.shape), (base[1] + norm[1]).expand(grid.shape),
                              (base[0] + norm[0]).expand(grid.shape)], dim=-1)
        stacked = torch.stack(list(noise.values()))[None]
        warped = F.grid_sample(stacked, sample[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
        noise = dict(zip(noise.keys(), warped))

    cerebrum, cerebellum, brainstem = _brain_depth(z, y, x, layout.size)
    depth = torch.stack((cerebrum, cerebellum, brainstem)).amax(0) + surface_amp * noise["surface"]
    in_cerebrum = cerebrum >= torch.maximum(cerebellum, brainstem)
    in_cerebellum = (cerebellum > brainstem) & ~in_cerebrum

    # Distance (mm) to the nearest CSF space: outer CSF, sulci (cerebral or cerebellar folia), fissure, tentorium.
    to_csf = depth - outer_csf
    sulci = torch.where(
        in_cerebellum,
        noise["folia"].abs() * 1.8 - 0.35 + (depth - 14.0).clamp_min(0) * 0.8,
        noise["sulci"].abs() * _SULCUS_SPACING_MM - sulcus_half + (depth - sulcus_depth).clamp_min(0) * 0.6,
    )
    sulci = torch.where(brainstem > torch.maximum(cerebrum, cerebellum), torch.full_like(sulci, 50.0), sulci)
    to_csf = torch.minimum(to_csf, sulci)
    fissure = (x - 0.8 * torch.tanh(y / 40.0)).abs() - fissure_half + (callosum_top - z).clamp_min(0) * 2.0
    fissure = torch.where(in_cerebrum, fissure, torch.full_like(fissure, 50.0))
    tentorium = (cerebrum - cerebellum).abs() / 2.0 - 0.7 + (-torch.minimum(cerebrum, cerebellum)).clamp_min(0)
    to_csf = torch.minimum(torch.minimum(to_csf, fissure), tentorium)

    brain = _soft(depth, width)
    cortex_csf = 1.0 - _soft(to_csf, width)
    local_thickness = torch.where(
        in_cerebrum, thickness * (1.0 + 0.2 * noise["thickness"]), torch.full_like(depth, thickness * 0.6)
    )
    local_thickness = torch.where(brainstem > torch.maximum(cerebrum, cerebellum), torch.full_like(depth, 0.4),
                                  local_thickness)
    in_white = _soft(to_csf - local_thickness, width)
    cerebellar_core = _soft(cerebellum - 16.0 * float(layout.size[0]), 3.0 * width)
    in_white = torch.where(in_cerebellum, torch.maximum(in_white * 0.35, cerebellar_core), in_white)

    vs = layout.ventricle_scale
    lateral = _blob(z + 0.004 * y * y, y, x, _LATERAL_VENTRICLE[0],
                    (_LATERAL_VENTRICLE[1][0] * vs, _LATERAL_VENTRICLE[1][1], _LATERAL_VENTRICLE[1][2] * vs),
                    mirror=True)
    third = _blob(z, y, x, _THIRD_VENTRICLE[0], (_THIRD_VENTRICLE[1][0], _THIRD_VENTRICLE[1][1],
                                                  _THIRD_VENTRICLE[1][2] * vs))
    ventricles = _soft(torch.maximum(lateral, third), width)
    plexus = _soft(_blob(z, y, x, _PLEXUS[0], _PLEXUS[1], scale=min(vs, 1.2), mirror=True), width) * ventricles
    deep = torch.maximum(_blob(z, y, x, *_THALAMUS, mirror=True), _blob(z, y, x, *_LENTIFORM, mirror=True))
    deep_gm = _soft(deep, 1.5 / s)

    # Vessels: tubes along the intersection curves of two random fields, within the sulcal and outer CSF.
    tube = torch.sqrt(noise["vessel_a"] ** 2 + noise["vessel_b"] ** 2) * 6.0
    vessel = _soft(vessel_radius - tube, width) * cortex_csf * (1.0 - ventricles) if vessel_radius > 0.05 else None

    csf = torch.maximum(cortex_csf, ventricles)
    tissue = (1.0 - csf).clamp_min(0.0)
    wm = tissue * in_white
    gm = tissue - wm
    deep_part = wm * deep_gm
    wm = wm - deep_part
    frac = {
        "wm": wm * brain,
        "gm": gm * brain,
        "deep_gm": deep_part * brain,
        "csf": (csf - plexus) * brain,
        "plexus": plexus * brain,
        "vessel": torch.zeros(()) if vessel is None else vessel * brain,
    }
    frac["csf"] = frac["csf"] - frac["vessel"]
    return _Anatomy(frac, depth, midline_shift)


# -------------------------------------------------------------------------------------------------- the tumour


@dataclass
class _Lesion:
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


def _draw_lesion(rng: np.random.Generator, params: SynthParams, layout: _Layout, enhancing: bool) -> _Lesion:
    """One lesion placed in a cerebral hemisphere, away from the midline and the ventricles."""
    size = layout.size
    radii = np.array(_CEREBRUM_RADII) * size
    radii[0] = _CEREBRUM_LOWER_RZ * size[0] * 0.5 + radii[0] * 0.5
    centre = np.zeros(3)
    for _ in range(200):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        candidate = direction * rng.uniform(0.0, 1.0) ** (1.0 / 3.0) * radii * 0.62
        candidate[0] += 6.0
        lat_c, lat_r = _LATERAL_VENTRICLE
        in_ventricle = np.sum(((np.abs(candidate) - np.array(lat_c)) / (np.array(lat_r) * 1.3)) ** 2) < 1.0
        if abs(candidate[2]) > 12.0 and not in_ventricle:
            centre = candidate
            break
    wt_radius = _uniform(rng, params.whole_tumour_radius_mm)
    core_fraction = _uniform(rng, params.core_fraction if enhancing else params.lgg_core_fraction)
    orientation = _random_orientation(rng)
    aspect = rng.uniform(0.75, 1.3, size=3)
    aspect /= np.cbrt(np.prod(aspect))
    wt_radii = wt_radius * aspect
    core_radii = wt_radii * core_fraction * rng.uniform(0.9, 1.1, size=3)
    necrosis = None
    # the enhancing rim takes at most 40 % of the core radius; what is inside it is (partly) necrotic
    rim = min(_uniform(rng, params.rim_mm), 0.4 * float(core_radii.min()))
    if enhancing:
        solid = rng.random() < params.p_solid_enhancing
        inner = core_radii - rim
        fraction = _uniform(rng, params.necrosis_fraction)
        if not solid and float(inner.min()) > 2.0:
            necrosis = inner * (0.5 + 0.7 * fraction) * rng.uniform(0.9, 1.1, size=3)
    elif rng.random() < params.p_lgg_cyst:
        necrosis = core_radii * rng.uniform(0.25, 0.6) * rng.uniform(0.85, 1.15, size=3)
    offset = rng.standard_normal(3) * 0.1 * core_radii
    return _Lesion(
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
class _TumourMaps:
    whole: torch.Tensor  # membership (0..1) of the whole tumour (oedema + core)
    core: torch.Tensor
    necrosis: torch.Tensor


def _tumour_maps(
    rng: np.random.Generator,
    grid: _Grid,
    layout: _Layout,
    lesions: Sequence[_Lesion],
    anatomy: _Anatomy,
    oedema_softness: float,
) -> _TumourMaps:
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
        rel = [z - lesion.centre[0], y - lesion.centre[1], x - lesion.centre[2]]
        rot = torch.from_numpy(lesion.orientation.T.astype(np.float32))
        local = [rot[i, 0] * rel[0] + rot[i, 1] * rel[1] + rot[i, 2] * rel[2] for i in range(3)]
        amp, corr = lesion.core_roughness
        core_out = -_ellipsoid_depth(*local, lesion.core_radii) + amp * grid.smooth_noise(rng, corr * s)
        amp, corr = lesion.wt_roughness
        wt_out = -_ellipsoid_depth(*local, lesion.wt_radii) + amp * grid.smooth_noise(rng, corr * s)
        core_member = _soft(-core_out, sharp)
        # Oedema follows white matter: the cortex and CSF push its boundary inwards (not inside the core).
        wt_out = wt_out + lesion.gating_mm * not_white * (1.0 - core_member)
        whole = torch.maximum(whole, torch.maximum(_soft(-wt_out, oedema_softness / s), core_member))
        core = torch.maximum(core, core_member)
        if lesion.necrosis_radii is not None:
            shifted = [loc - float(o) for loc, o in zip(local, lesion.necrosis_offset)]
            nec_out = -_ellipsoid_depth(*shifted, lesion.necrosis_radii)
            nec_out = nec_out + 0.5 * amp * grid.smooth_noise(rng, 4.0 * s)
            nec_out = torch.maximum(nec_out, core_out + lesion.rim_mm)  # keep a rim inside the core
            necrosis = torch.maximum(necrosis, _soft(-nec_out, sharp))
    return _TumourMaps(whole * brain, core * brain, torch.minimum(necrosis, core) * brain)


# ---------------------------------------------------------------------------------------------- the appearance


def _draw_contrast(rng: np.random.Generator, params: SynthParams) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for modality in MODALITIES:
        table[modality] = {}
        for tissue in TISSUES:
            value = _uniform(rng, params.contrast[modality][tissue])
            if params.site is not None:
                value *= params.site.contrast_factor(modality, tissue)
            table[modality][tissue] = value
    return table


def _thick_slices(volume: torch.Tensor, axis: int, factor: int, offset: int) -> torch.Tensor:
    """Average ``factor`` voxels along ``axis`` (a thick slice), then interpolate linearly back to the grid."""
    size = volume.shape[axis]
    moved = volume.movedim(axis, -1)
    lead = moved.shape[:-1]
    flat = moved.reshape(1, -1, size)
    total = int(math.ceil((size + offset) / factor)) * factor
    flat = F.pad(flat, (offset, total - size - offset), mode="replicate")
    pooled = F.avg_pool1d(flat, factor)
    # slice centres in original voxel units, then linear interpolation at every original voxel
    centres = (torch.arange(pooled.shape[-1], dtype=torch.float32) * factor + (factor - 1) / 2.0 - offset)
    positions = torch.arange(size, dtype=torch.float32)
    idx = torch.searchsorted(centres, positions).clamp(1, pooled.shape[-1] - 1)
    left, right = centres[idx - 1], centres[idx]
    weight = ((positions - left) / (right - left)).clamp(0.0, 1.0)
    out = pooled[..., idx - 1] * (1.0 - weight) + pooled[..., idx] * weight
    return out.reshape(*lead, size).movedim(-1, axis)


def _acquire(
    rng: np.random.Generator,
    clean: torch.Tensor,
    grid: _Grid,
    layout: _Layout,
    params: SynthParams,
    modality: str,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Simulate one sequence's acquisition of a clean image (white matter = 1): returns intensities and what was
    drawn."""
    site = params.site
    gamma = _uniform(rng, params.gamma) * (site.gamma.get(modality, 1.0) if site else 1.0)
    image = clean.clamp_min(0.0) ** gamma
    blur = _uniform(rng, params.blur_mm) + (site.extra_blur_mm if site else 0.0)
    if blur > 0.05:
        image = _gaussian_blur(image, [blur / sp for sp in grid.spacing])
    thick: float | None = None
    axis = 0
    if site is not None and modality in site.thick_slices:
        thick, axis = float(site.thick_slices[modality]), site.slice_axis
    elif rng.random() < params.p_thick_slices:
        thick = _uniform(rng, params.slice_thickness_mm)
        axis = int(rng.choice(3, p=[0.6, 0.2, 0.2]))  # mostly axial 2-D acquisitions
    factor = 1
    if thick is not None:
        factor = int(round(thick / grid.spacing[axis]))
        if factor >= 2:
            image = _thick_slices(image, axis, factor, int(rng.integers(0, factor)))
    bias_strength = _uniform(rng, params.bias) * (site.bias_scale if site else 1.0)
    bias_field = grid.smooth_noise(rng, rng.uniform(30.0, 60.0) * layout.scale)
    image = image * torch.exp(bias_strength * bias_field)
    low, high = params.wm_intensity
    scale = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if high > low else float(low)
    sigma = _uniform(rng, params.noise) * (site.noise_scale if site else 1.0)
    real = image * scale + torch.from_numpy(rng.standard_normal(grid.shape, dtype=np.float32)) * (sigma * scale)
    imag = torch.from_numpy(rng.standard_normal(grid.shape, dtype=np.float32)) * (sigma * scale)
    image = torch.sqrt(real * real + imag * imag)
    info = {"gamma": round(gamma, 3), "blur_mm": round(blur, 3), "slice_factor": factor, "slice_axis": axis,
            "bias": round(bias_strength, 3), "noise": round(sigma, 4), "wm_intensity": round(scale, 1)}
    return image, info


# ------------------------------------------------------------------------------------------------------- public


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
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
    if len(shape) != _SPATIAL_DIMS or min(shape) < MIN_SIZE_VOXELS:
        raise ConfigError(f"shape must be three sizes of at least {MIN_SIZE_VOXELS} voxels, not {tuple(shape)}")
    spacing3 = _spacing3(spacing)
    if len(spacing3) != _SPATIAL_DIMS or min(spacing3) <= 0:
        raise ConfigError(f"spacing must be one positive number or three, not {spacing}")
    if int(seed) < 0:
        raise ConfigError(f"seed must be non-negative, not {seed}")
    grid = _Grid(shape, spacing3)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5)]
    layout_rng, lesion_rng, anatomy_rng, tumour_rng, appearance_rng = streams

    with torch.no_grad(), _torch_threads(threads):
        layout = _draw_layout(layout_rng, grid, params)
        has_tumour = lesion_rng.random() >= params.p_no_tumour
        enhancing = lesion_rng.random() >= params.p_no_enhancement
        count = (2 if lesion_rng.random() < params.p_second_lesion else 1) if has_tumour else 0
        lesions = [_draw_lesion(lesion_rng, params, layout, enhancing) for _ in range(count)]
        mass_effect = _uniform(lesion_rng, params.mass_effect)
        oedema_softness = _uniform(lesion_rng, params.oedema_softness_mm)
        anatomy = _anatomy(anatomy_rng, grid, layout, params, lesions, mass_effect)
        tumour = _tumour_maps(tumour_rng, grid, layout, lesions, anatomy, oedema_softness)
        label, images, brain_mask, info = _render(appearance_rng, grid, layout, params, anatomy, tumour, enhancing)
        dominant = torch.stack([anatomy.fractions[t].expand(grid.shape) for t in NORMAL_TISSUES]).argmax(0) + 1
        tissue = torch.where(brain_mask, dominant, torch.zeros((), dtype=torch.long))

    info.update({
        "tumour": "none" if not lesions else ("enhancing" if enhancing else "non-enhancing"),
        "lesions": len(lesions),
        "whole_tumour_radius_mm": [round(float(np.cbrt(np.prod(les.wt_radii))) * layout.scale, 1)
                                   for les in lesions],
        "brain_scale": round(layout.scale, 3),
        "mass_effect": round(mass_effect, 3),
        "midline_shift_mm": round(anatomy.midline_shift_mm, 2),
        "site": params.site.name if params.site else None,
        "voxels": {name: int((label == value).sum()) for name, value in
                   (("NCR", LABEL_NCR), ("ED", LABEL_ED), ("ET", LABEL_ET))},
    })
    return SynthCase(images, label, spacing3, int(seed), tissue.to(torch.uint8).numpy(), info)


def _render(
    rng: np.random.Generator,
    grid: _Grid,
    layout: _Layout,
    params: SynthParams,
    anatomy: _Anatomy,
    tumour: _TumourMaps,
    enhancing: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray], torch.Tensor, dict[str, Any]]:
    """Labels, the four acquired images and the skull-stripping mask, from the tissue and tumour maps."""
    s = layout.scale
    contrast = _draw_contrast(rng, params)
    texture = grid.smooth_noise(rng, 1.0 * s)
    tumour_texture = grid.smooth_noise(rng, 2.5 * s)
    texture_amp = {m: _uniform(rng, params.texture) for m in MODALITIES}
    tumour_amp = {m: _uniform(rng, params.tumour_texture) for m in MODALITIES}
    strip = _uniform(rng, params.strip_offset_mm)
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
    normal_weight = 1.0 - whole / (sum(frac.values()).clamp_min(1e-6))
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
        image, acquisition[modality] = _acquire(rng, clean, grid, layout, params, modality)
        image = torch.where(brain_mask, image, torch.zeros(()))
        if params.integer_intensities:
            image = torch.round(image)
        images[modality] = image.numpy().astype(np.float32, copy=False)
    info = {
        "contrast": {m: {t: round(v, 3) for t, v in table.items()} for m, table in contrast.items()},
        "acquisition": acquisition,
    }
    return label.numpy(), images, brain_mask, info


def _write_nifti(array: np.ndarray, spacing: Sequence[float], path: Path, integer: bool) -> None:
    """Write a (z, y, x) array as NIfTI in BraTS geometry (LPS, identity direction), atomically."""
    import SimpleITK as sitk

    from .imageio import write_image

    if integer and array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        array = array.astype(np.int16 if -32768 <= low and high <= 32767 else np.int32)
    image = sitk.GetImageFromArray(array)
    sz, sy, sx = (float(v) for v in spacing)
    image.SetSpacing((sx, sy, sz))
    image.SetOrigin((0.0, -(array.shape[1] - 1) * sy, 0.0))
    write_image(image, path)


def write_case(case: SynthCase, out_dir: str | os.PathLike, case_id: str) -> dict[str, Path]:
    """Write a case in BraTS 2021 naming: ``<out>/<ID>/<ID>_{flair,t1ce,t1,t2,seg}.nii.gz``.

    The label file keeps the BraTS 2023 values (ET = 3), not BraTS 2021's ET = 4. Images are int16 when their
    values are integers that fit, else float32. Each file is written to a temporary name and renamed.

    Returns:
        ``{modality or "seg": path}``.
    """
    if not case_id or any(c in case_id for c in "/\\") or case_id in (".", ".."):
        raise ConfigError(f"invalid case id {case_id!r}")
    folder = Path(out_dir) / case_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {folder}: {err.strerror}") from None
    paths: dict[str, Path] = {}
    integer = all(np.array_equal(img, np.round(img)) for img in case.images.values())
    try:
        for modality in MODALITIES:
            paths[modality] = folder / f"{case_id}_{modality}.nii.gz"
            _write_nifti(case.images[modality], case.spacing, paths[modality], integer)
        paths["seg"] = folder / f"{case_id}_seg.nii.gz"
        _write_nifti(case.label.astype(np.uint8), case.spacing, paths["seg"], True)
    except OSError as err:
        raise OutputError(f"cannot write case {case_id} in {folder}: {err}") from None
    return paths


def dataset_case_seed(dataset_seed: int, index: int) -> int:
    """The seed of case ``index`` of a dataset: independent streams for every (dataset seed, index) pair."""
    return int(np.random.SeedSequence([int(dataset_seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def generate_dataset(
    out_dir: str | os.PathLike,
    count: int,
    seed: int,
    shape: Sequence[int] = (128, 128, 128),
    spacing: float | Sequence[float] = 1.0,
    params: SynthParams | None = None,
    prefix: str = "GLIMS-SYN",
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[Path]:
    """Generate and write ``count`` cases plus ``dataset.json`` (seeds, shape, spacing, params, per-case info).

    Case ``i`` is ``<prefix>-<seed>-<i:04d>`` generated from ``dataset_case_seed(seed, i)``, so a dataset is
    reproducible and can be extended with the same seed.

    Returns:
        The case folders.
    """
    if count < 1:
        raise ConfigError(f"the number of cases must be at least 1, not {count}")
    params = params or SynthParams()
    plan = StagePlan([("synthesise", 1.0)], progress)
    folders: list[Path] = []
    cases: list[dict[str, Any]] = []
    out = Path(out_dir)
    for index in range(count):
        if cancel is not None:
            cancel.check()
        case_seed = dataset_case_seed(seed, index)
        case_id = f"{prefix}-{seed}-{index:04d}"
        case = generate_case(case_seed, shape, spacing, params)
        paths = write_case(case, out, case_id)
        folders.append(paths["seg"].parent)
        cases.append({"id": case_id, "seed": case_seed, **case.info})
        log.info("wrote %s (%s)", case_id, case.info["tumour"])
        plan.report("synthesise", index + 1, count, case_id)
    manifest = {
        "generator": "glims.synth",
        "label_convention": "BraTS 2023 (1 NCR, 2 ED, 3 ET)",
        "file_naming": "BraTS 2021 (<ID>_flair, _t1ce, _t1, _t2, _seg .nii.gz)",
        "seed": int(seed),
        "shape_zyx": [int(n) for n in shape],
        "spacing_zyx_mm": list(_spacing3(spacing)),
        "params": params.to_dict(),
        "cases": cases,
    }
    from .checkpoint import atomic_write

    with atomic_write(out / "dataset.json", "w") as handle:
        json.dump(manifest, handle, indent=1)
    return folders
