"""Cropping to the foreground: the box, its margin, the way back, and what it saves in windows on a real case."""

from __future__ import annotations

import numpy as np
import pytest

from glims.catalog import load_presets
from glims.catalog_sections import PreprocessingSpec
from glims.inference import count_windows
from glims.preprocessing import prepare_case
from glims.synth import generate_case, write_case

PRESET = load_presets()["brats"]["preprocessing"]
BRATS = PreprocessingSpec.from_dict(PRESET)
TITLES = ["FLAIR", "T1ce", "T1", "T2"]


@pytest.fixture(scope="module")
def synth_case(tmp_path_factory):
    """A 64^3 synthetic case at 2 mm (brain surrounded by zeros), written as glims synth writes it."""
    root = tmp_path_factory.mktemp("crop")
    files = write_case(generate_case(11, (64, 64, 64), 2.0), root, "CROP-0")
    return [files[key] for key in ("flair", "t1ce", "t1", "t2")]


def _brain_box(array: np.ndarray) -> list[tuple[int, int]]:
    mask = (array != 0).any(axis=0)
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(hit[0]), int(hit[-1]) + 1))
    return box


def test_brats_crop_is_the_tight_brain_box_and_loses_nothing(synth_case):
    roi = [16, 16, 16]
    full = prepare_case(synth_case, TITLES, BRATS, roi, crop=False)
    tight = prepare_case(synth_case, TITLES, BRATS, roi)
    assert BRATS.crop_margin == 0
    expected = _brain_box(full.array)
    assert [(s.start, s.stop) for s in tight.box] == expected
    assert tight.array.shape[1:] == tuple(hi - lo for lo, hi in expected)
    # Normalisation ignores zeros, so the crop holds exactly the uncropped input's values...
    np.testing.assert_array_equal(tight.array, full.array[(slice(None), *tight.box)])
    # ...and nothing non-zero is left outside it.
    outside = full.array.copy()
    outside[(slice(None), *tight.box)] = 0
    assert not outside.any()
    # The way back puts every voxel where it came from.
    np.testing.assert_array_equal(tight.uncrop(tight.array), full.array)


def test_crop_margin_grows_the_box_and_stays_inside_the_grid(synth_case):
    roi = [16, 16, 16]
    tight = prepare_case(synth_case, TITLES, BRATS, roi)
    wide = prepare_case(synth_case, TITLES, PreprocessingSpec.from_dict({**PRESET, "crop_margin": 5}), roi)
    size = tight.processing.GetSize()
    for t, w, n in zip(tight.box, wide.box, size):
        assert w.start == max(0, t.start - 5) and w.stop == min(n, t.stop + 5)
    # Without crop_margin the engine's default margin (8) applies.
    default = PreprocessingSpec.from_dict({k: v for k, v in PRESET.items() if k != "crop_margin"})
    eight = prepare_case(synth_case, TITLES, default, roi)
    assert all(e.start == max(0, t.start - 8) for e, t in zip(eight.box, tight.box))
    # A box smaller than the window grows to the window.
    big = prepare_case(synth_case, TITLES, BRATS, [60, 60, 60])
    assert all(s.stop - s.start == 60 for s in big.box)


def test_tight_crop_of_a_real_brats_case_needs_18_windows_instead_of_27(shared_data):
    case = shared_data / "brats" / "tcga_fg_6692"
    if not case.is_dir():
        pytest.skip("TCGA-FG-6692 not in the shared data")
    paths = [next(case.glob(f"*_{key}_sri24_bet.nii.gz")) for key in ("fla", "t1c", "t1", "t2")]
    roi = [96, 96, 96]
    tight = prepare_case(paths, TITLES, BRATS, roi)
    margin8 = prepare_case(paths, TITLES, PreprocessingSpec.from_dict({**PRESET, "crop_margin": 8}), roi)
    assert count_windows(tight.array.shape[1:], roi, 0.5) == 18
    assert count_windows(margin8.array.shape[1:], roi, 0.5) == 27
    assert tight.foreground[tuple(tight.box)].sum() == tight.foreground.sum()
