"""Test helpers: tiny randomly initialised GLIMS models registered in a temporary user catalog, and small copies of
the real shared cases (resampled to a coarser grid so that tests stay fast on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk
import torch

from glims.catalog import ModelSpec
from glims.checkpoint import save_checkpoint
from glims.network import GLIMS
from glims.registry import register_model

TINY_ARCH = {"feature_size": 6, "img_size": [32, 32, 32], "num_heads": [1, 2, 2, 4], "depths": [2, 2, 2, 2]}
BRATS_CASES = {
    # case folder -> file name per model input key (flair, t1ce, t1, t2)
    "tcga_fg_6692": ("TCGA-FG-6692_fla_sri24_bet", "TCGA-FG-6692_t1c_sri24_bet", "TCGA-FG-6692_t1_sri24_bet",
                     "TCGA-FG-6692_t2_sri24_bet"),
    "tcga_du_7294": ("TCGA-DU-7294_fla_sri24_bet", "TCGA-DU-7294_t1c_sri24_bet", "TCGA-DU-7294_t1_sri24_bet",
                     "TCGA-DU-7294_t2_sri24_bet"),
    "brats_gli_00001": ("BraTS-GLI-00001-000-t2f", "BraTS-GLI-00001-000-t1c", "BraTS-GLI-00001-000-t1n",
                        "BraTS-GLI-00001-000-t2w"),
}


def register_tiny_model(home: Path, preset: str = "brats", model_id: str | None = None, seed: int = 0,
                        overrides: dict | None = None) -> ModelSpec:
    """A tiny random GLIMS (feature_size 6, 32^3 windows) registered as a user model in ``home``."""
    torch.manual_seed(seed)
    channels = {"brats": (4, 3), "btcv": (1, 14)}[preset]
    net = GLIMS(in_channels=channels[0], out_channels=channels[1], **TINY_ARCH)
    arch = {"name": "GLIMS", **net.config.to_dict()}
    staging = Path(home) / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    meta = save_checkpoint(staging / f"tiny-{preset}-{seed}", net.state_dict(), arch)
    return register_model(
        meta, model_id or f"tiny-{preset}", preset, title=f"Tiny random {preset} test model", home=home,
        license_text="Test weights (random), no licence needed", overrides=overrides,
    )


def register_tiny_ct(home: Path) -> ModelSpec:
    """``tiny-btcv`` in ``home``, at 3 mm processing spacing so that tests stay fast."""
    return register_tiny_model(home, "btcv", overrides={"preprocessing": {"spacing": [3.0, 3.0, 3.0]}})


def register_tiny_brats_and_ct(home: Path) -> Path:
    """``home`` with ``tiny-brats`` and ``tiny-btcv`` (the CT one at 3 mm processing spacing, so tests stay fast)."""
    register_tiny_model(home, "brats")
    register_tiny_ct(home)
    return home


def brats_case_paths(shared_data: Path, case: str) -> list[Path]:
    folder = shared_data / "brats" / case
    return [folder / f"{name}.nii.gz" for name in BRATS_CASES[case]]


def coarse_copy(paths: list[Path], out_dir: Path, spacing: float = 3.0) -> list[Path]:
    """Copies of real images resampled to ``spacing`` mm (same physical extent, direction and origin corner)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = []
    for path in paths:
        image = sitk.ReadImage(str(path))
        old_spacing = image.GetSpacing()
        size = [max(2, round(n * s / spacing)) for n, s in zip(image.GetSize(), old_spacing)]
        out = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (spacing,) * 3,
                            image.GetDirection(), 0.0, image.GetPixelID())
        target = out_dir / path.name
        sitk.WriteImage(out, str(target))
        result.append(target)
    return result
