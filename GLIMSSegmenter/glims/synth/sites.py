"""Site profiles: systematic protocol differences of an acquisition site (``SiteShift``, ``shifted_site``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError
from .vocabulary import MODALITIES, TISSUES

__all__ = ["SiteShift", "SITE_PROFILES", "shifted_site"]


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
