"""What the generator draws from: the contrast tables and ranges of each generator version (``SynthParams``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import ConfigError
from .sites import SiteShift
from .vocabulary import MODALITIES, TISSUES

__all__ = ["DEFAULT_CONTRAST", "GENERATOR_VERSIONS", "LATEST_GENERATOR", "SynthParams", "synth_params"]


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
        "wm": (1.0, 1.0),
        "gm": (1.05, 1.3),
        "deep_gm": (1.0, 1.2),
        "csf": (0.15, 0.45),
        "plexus": (0.3, 0.7),
        "vessel": (0.2, 0.6),
        "edema": (1.3, 2.3),
        "enhancing": (1.2, 2.6),
        "necrosis": (0.8, 2.8),
        "nonenhancing": (1.3, 2.2),
    },
    "t1ce": {
        "wm": (1.0, 1.0),
        "gm": (0.72, 0.9),
        "deep_gm": (0.8, 0.94),
        "csf": (0.25, 0.5),
        "plexus": (1.1, 1.6),
        "vessel": (1.2, 2.2),
        "edema": (0.65, 0.95),
        "enhancing": (1.05, 1.7),
        "necrosis": (0.4, 0.88),
        "nonenhancing": (0.5, 0.9),
    },
    "t1": {
        "wm": (1.0, 1.0),
        "gm": (0.68, 0.88),
        "deep_gm": (0.78, 0.93),
        "csf": (0.25, 0.45),
        "plexus": (0.3, 0.6),
        "vessel": (0.3, 0.8),
        "edema": (0.6, 0.92),
        "enhancing": (0.6, 0.95),
        "necrosis": (0.4, 0.9),
        "nonenhancing": (0.45, 0.85),
    },
    "t2": {
        "wm": (1.0, 1.0),
        "gm": (1.08, 1.3),
        "deep_gm": (1.0, 1.2),
        "csf": (2.4, 4.0),
        "plexus": (1.5, 2.5),
        "vessel": (0.3, 1.0),
        "edema": (1.55, 2.4),
        "enhancing": (1.3, 2.0),
        "necrosis": (1.4, 3.2),
        "nonenhancing": (1.6, 2.6),
    },
}
"""The contrast table of the latest generator version (``LATEST_GENERATOR``)."""

GENERATOR_VERSIONS = (1, 2)
"""Generator versions ``synth_params`` can reproduce. 1: the data of the bundled model 1.1.0 and of the fine-tuning
experiments (docs/FINETUNING.md); 2: FLAIR cores as bright as the oedema or brighter, more T2 overlap of necrosis and
oedema, fainter enhancement possible, larger tumours (BraTS-like core volumes of tens of cm³)."""
LATEST_GENERATOR = 2

# What version 2 changed, as version 1 had it: contrasts, and other SynthParams fields.
_VERSION_1_CONTRAST: dict[str, dict[str, tuple[float, float]]] = {
    "flair": {"edema": (1.45, 2.3), "enhancing": (1.2, 2.0), "necrosis": (0.8, 2.0)},
    "t1ce": {"enhancing": (1.12, 1.7)},
    "t2": {"necrosis": (1.8, 3.2)},
}
_VERSION_1: dict[str, tuple[float, float]] = {
    "whole_tumour_radius_mm": (12.0, 35.0),
    "core_fraction": (0.35, 0.8),
    "rim_mm": (1.5, 5.0),
}


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
        for name in (
            "p_no_tumour",
            "p_second_lesion",
            "p_no_enhancement",
            "p_solid_enhancing",
            "p_lgg_cyst",
            "p_thick_slices",
        ):
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
        contrast = {m: {**table, **_VERSION_1_CONTRAST.get(m, {})} for m, table in DEFAULT_CONTRAST.items()}
        changes = {"contrast": contrast, **_VERSION_1, **changes}
    return SynthParams(**changes)
