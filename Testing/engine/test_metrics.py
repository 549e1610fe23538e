"""Dice, HD95 and the BraTS label conventions, on hand-made masks whose answers are worked out by hand, and the
exact distance transform against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from glims.errors import ConfigError, InputError
from glims.metrics import (
    BRATS_HD95_PENALTY,
    check_labels,
    dice,
    get_convention,
    hd95,
    label_values,
    region_masks,
    score_regions,
    squared_distance_map,
    surface_mask,
)


def box(shape, lo, hi) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_dice_of_a_mask_with_itself_is_one_and_hand_made_pair_is_exact():
    a = box((10, 10, 10), (2, 2, 2), (4, 4, 4))  # 2x2x2 = 8 voxels
    b = box((10, 10, 10), (2, 2, 2), (4, 4, 5))  # 2x2x3 = 12 voxels, contains a
    assert dice(a, a) == 1.0
    assert dice(a, b) == pytest.approx(2 * 8 / (8 + 12))  # 0.8
    c = box((10, 10, 10), (3, 3, 3), (5, 5, 5))  # overlaps a in 1x1x1
    assert dice(a, c) == pytest.approx(2 * 1 / 16)
    assert dice(a, ~a) == 0.0


def test_empty_regions_follow_brats_rules():
    empty = np.zeros((6, 6, 6), dtype=bool)
    some = box((6, 6, 6), (1, 1, 1), (3, 3, 3))
    assert dice(empty, empty) == 1.0 and hd95(empty, empty) == 0.0
    assert dice(some, empty) == 0.0 and dice(empty, some) == 0.0
    assert hd95(some, empty) == BRATS_HD95_PENALTY == pytest.approx(np.sqrt(240**2 + 240**2 + 155**2), abs=0.01)
    assert hd95(empty, some, empty_penalty=100.0) == 100.0


def test_surface_of_a_cube_is_its_shell():
    cube = box((12, 12, 12), (1, 1, 1), (11, 11, 11))
    assert surface_mask(cube).sum() == 10**3 - 8**3
    edge = box((4, 4, 4), (0, 0, 0), (4, 4, 4))  # the whole array: the outside counts as background
    assert surface_mask(edge).sum() == 4**3 - 2**3


def test_hd95_between_parallel_planes_uses_the_anisotropic_spacing():
    shape = (12, 6, 7)
    a = box(shape, (2, 0, 0), (3, 6, 7))  # the plane z = 2
    b = box(shape, (5, 0, 0), (6, 6, 7))  # the plane z = 5: every voxel 3 slices away
    assert hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(3.0)
    assert hd95(a, b, (2.5, 0.7, 0.9)) == pytest.approx(7.5)
    assert hd95(b, a, (2.5, 0.7, 0.9)) == pytest.approx(7.5)
    # along x with 0.5 mm voxels: two single voxels 6 columns apart are 3 mm apart
    c, d = box((3, 3, 12), (1, 1, 2), (2, 2, 3)), box((3, 3, 12), (1, 1, 8), (2, 2, 9))
    assert hd95(c, d, (4.0, 4.0, 0.5)) == pytest.approx(3.0)


def test_hd95_is_a_percentile_not_the_maximum():
    shape = (30, 14, 14)
    cube = box(shape, (2, 2, 2), (12, 12, 12))  # 488 surface voxels
    with_outlier = cube.copy()
    with_outlier[27, 6, 6] = True  # one voxel 16 mm below the cube's face: 1 of 489 surface voxels
    assert hd95(with_outlier, cube) == 0.0
    # a slab of 9x9 = 81 stray voxels (about 14 % of the prediction's surface) is above the 95th percentile
    slab = cube | box(shape, (27, 3, 3), (28, 12, 12))
    distances_from_slab = 27 - 11  # every slab voxel is straight below the cube's last slice (z = 11)
    assert hd95(slab, cube) == pytest.approx(distances_from_slab)


def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    pa = np.argwhere(surface_mask(a)) * np.asarray(spacing)
    pb = np.argwhere(surface_mask(b)) * np.asarray(spacing)
    dist = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(dist.min(1), 95), np.percentile(dist.min(0), 95))


def test_hd95_matches_brute_force_on_random_blobs():
    rng = np.random.default_rng(0)
    zz, yy, xx = np.indices((16, 18, 15))
    for _ in range(8):
        masks = []
        for _ in range(2):
            c, r = rng.uniform(4, 11, 3), rng.uniform(2, 5)
            masks.append((zz - c[0]) ** 2 + ((yy - c[1]) / 1.3) ** 2 + (xx - c[2]) ** 2 < r * r)
        spacing = tuple(rng.uniform(0.5, 3.0, 3))
        assert hd95(*masks, spacing) == pytest.approx(brute_force_hd95(*masks, spacing), abs=1e-4)


def test_distance_transform_is_exact():
    rng = np.random.default_rng(1)
    for _ in range(10):
        shape = tuple(int(n) for n in rng.integers(3, 12, 3))
        features = rng.random(shape) < 0.05
        features.flat[rng.integers(features.size)] = True
        spacing = tuple(rng.uniform(0.4, 3.0, 3))
        points = np.argwhere(features) * spacing
        grid = np.argwhere(np.ones(shape, dtype=bool)) * spacing
        expected = ((grid[:, None, :] - points[None]) ** 2).sum(-1).min(1).reshape(shape)
        assert np.allclose(squared_distance_map(features, spacing), expected, rtol=1e-6, atol=1e-4)
    assert np.isinf(squared_distance_map(np.zeros((3, 3, 3), bool), (1, 1, 1))).all()


def test_region_definitions_of_each_convention():
    label = np.array([0, 1, 2, 3, 4])
    regions = {name: region_masks(label[label <= max(get_convention(name).labels)], name)
               for name in ("brats2023", "brats2017", "brats2013")}
    assert regions["brats2023"]["ET"].tolist() == [False, False, False, True]
    assert regions["brats2023"]["TC"].tolist() == [False, True, False, True]
    assert regions["brats2023"]["WT"].tolist() == [False, True, True, True]
    assert regions["brats2017"]["ET"].tolist() == [False, False, False, False, True]
    assert regions["brats2017"]["TC"].tolist() == [False, True, False, False, True]
    # 2013/2015: 3 is non-enhancing tumour: core and whole tumour, not enhancing
    assert regions["brats2013"]["ET"].tolist() == [False, False, False, False, True]
    assert regions["brats2013"]["TC"].tolist() == [False, True, False, True, True]
    assert regions["brats2013"]["WT"].tolist() == [False, True, True, True, True]
    assert get_convention("BraTS-2021") is get_convention("brats2017")
    assert get_convention("brats2015").name == "brats2013"
    with pytest.raises(ConfigError):
        get_convention("brats1999")


def test_et3_and_et4_maps_agree_when_each_is_read_with_its_convention():
    rng = np.random.default_rng(2)
    labels_2023 = rng.choice([0, 1, 2, 3], size=(12, 12, 12), p=[0.7, 0.1, 0.1, 0.1]).astype(np.uint8)
    labels_2021 = np.where(labels_2023 == 3, 4, labels_2023).astype(np.uint8)
    scores = score_regions(labels_2021, labels_2023, pred_convention="brats2017", ref_convention="brats2023")
    assert all(s.dice == 1.0 and s.hd95 == 0.0 for s in scores.values())
    assert scores["ET"].ref_voxels == int((labels_2023 == 3).sum())
    # read with the wrong convention, label 4 is refused rather than silently ignored
    with pytest.raises(InputError, match=r"\[4\].*brats2023"):
        score_regions(labels_2021, labels_2023)
    # a 2023 map read as 2013: its ET (3) becomes non-enhancing core, so ET is empty and TC is unchanged
    as_2013 = score_regions(labels_2023, labels_2023, pred_convention="brats2013")
    assert as_2013["ET"].pred_voxels == 0 and as_2013["ET"].dice == 0.0
    assert as_2013["ET"].hd95 == BRATS_HD95_PENALTY
    assert as_2013["TC"].dice == 1.0


def test_hand_made_label_pair_scores_by_region():
    ref = np.zeros((8, 8, 8), dtype=np.uint8)
    ref[2:6, 2:6, 2:6] = 2  # 64 voxels of oedema ...
    ref[3:5, 3:5, 3:5] = 3  # ... around 8 voxels of ET
    pred = ref.copy()
    pred[3:5, 3:5, 3:5] = 1  # the core called necrosis instead of enhancing
    pred[2, 2:6, 2:6] = 0  # and one face of the oedema (16 voxels) missed
    scores = score_regions(pred, ref, (1.0, 1.0, 1.0))
    assert scores["TC"].dice == 1.0  # 1 and 3 are both core
    assert scores["WT"].dice == pytest.approx(2 * 48 / (48 + 64))
    assert scores["ET"].dice == 0.0 and scores["ET"].pred_voxels == 0 and scores["ET"].ref_voxels == 8
    assert scores["ET"].hd95 == BRATS_HD95_PENALTY
    # WT surfaces: the missing face lies 1 mm from the prediction's new top face
    assert scores["WT"].hd95 == pytest.approx(1.0)


def test_label_values_and_checks():
    assert label_values(np.array([[0.0, 2.0], [4.0, 4.0]], dtype=np.float32)) == [0, 2, 4]
    with pytest.raises(InputError, match="non-integer"):
        label_values(np.array([0.0, 0.5]))
    with pytest.raises(InputError, match="NaN"):
        label_values(np.array([0.0, np.nan]))
    check_labels(np.array([0, 1, 2, 3, 4]), "brats2013")
    with pytest.raises(InputError, match="brats2017"):
        check_labels(np.array([0, 3]), "brats2017")
    with pytest.raises(InputError, match="shape"):
        dice(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool))
