"""Direct tests of ``glims.postprocessing`` on small hand-built arrays whose right answer can be stated exactly:
activation, thresholds, painting of the BraTS overlapping regions into labels, the arg-max of softmax models, the
authors' clean-up rules and hole filling."""

from __future__ import annotations

import numpy as np
import pytest

from glims.catalog import load_presets
from glims.catalog_sections import CleanupRule, OutputSpec, PostprocessingSpec
from glims.errors import ConfigError
from glims.postprocessing import activate, apply_cleanup_rules, check_thresholds, fill_holes, probabilities_to_labels

BRATS_OUTPUT = OutputSpec.from_dict(load_presets()["brats"]["output"])  # channels TC, WT, ET; thresholds .6 .5 .6
SOFTMAX_OUTPUT = OutputSpec.from_dict({"activation": "softmax", "channels": ["background", "spleen", "liver"]})
TC, WT, ET = (BRATS_OUTPUT.channels.index(name) for name in ("TC", "WT", "ET"))


# ---- activate ------------------------------------------------------------------------------------------------


def test_sigmoid_maps_zero_to_one_half_and_is_monotonic():
    logits = np.array([[[-20.0, -1.0, 0.0, 1.0, 20.0]]])
    probs = activate(logits, "sigmoid")
    assert probs.dtype == np.float32
    assert probs.shape == logits.shape
    assert probs[0, 0, 2] == pytest.approx(0.5)
    assert probs[0, 0, 3] == pytest.approx(1.0 / (1.0 + np.exp(-1.0)), rel=1e-6)
    assert np.all(np.diff(probs[0, 0]) > 0)


def test_softmax_sums_to_one_per_voxel_and_survives_huge_logits():
    logits = np.array([[0.0, 1000.0], [np.log(3.0), 1000.0], [-np.inf, 0.0]])  # (K=3, 2 voxels)
    probs = activate(logits, "softmax")
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[:, 0], [0.25, 0.75, 0.0], rtol=1e-6)
    np.testing.assert_allclose(probs[:, 1], [0.5, 0.5, 0.0], atol=1e-6)  # no overflow to NaN
    assert np.isfinite(probs).all()


# ---- check_thresholds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("thresholds", [None, {}, {"ET": 0.3}, {"TC": 0.01, "WT": 0.99, "ET": 0.5}])
def test_valid_threshold_overrides_pass(thresholds):
    check_thresholds(BRATS_OUTPUT, thresholds)


def test_a_threshold_for_an_unknown_channel_names_it_and_the_model_channels():
    with pytest.raises(ConfigError) as err:
        check_thresholds(BRATS_OUTPUT, {"ET": 0.5, "NCR": 0.5, "ED": 0.4})
    expected = "threshold for unknown channel(s) ['ED', 'NCR']; this model's channels are ['TC', 'WT', 'ET']"
    assert str(err.value) == expected


@pytest.mark.parametrize("value", [0.0, 1.0, -0.2, 1.5])
def test_a_threshold_outside_the_open_unit_interval_is_refused(value):
    with pytest.raises(ConfigError, match=f"threshold of WT must lie strictly between 0 and 1, got {value}"):
        check_thresholds(BRATS_OUTPUT, {"WT": value})


def test_any_threshold_for_a_softmax_model_is_refused():
    with pytest.raises(ConfigError, match="thresholds apply to models with sigmoid outputs"):
        check_thresholds(SOFTMAX_OUTPUT, {"liver": 0.5})
    check_thresholds(SOFTMAX_OUTPUT, None)  # no override: nothing to refuse


# ---- probabilities_to_labels ---------------------------------------------------------------------------------


def _brats_probs(tc: list[float], wt: list[float], et: list[float]) -> np.ndarray:
    """(3, N, 1, 1) probabilities in the catalog's channel order from per-voxel lists."""
    probs = np.zeros((3, len(tc), 1, 1), dtype=np.float32)
    probs[TC, :, 0, 0], probs[WT, :, 0, 0], probs[ET, :, 0, 0] = tc, wt, et
    return probs


def test_nested_brats_regions_become_ncr_ed_et_labels():
    # voxel:            background, oedema only, core (no ET), enhancing (all three)
    probs = _brats_probs(tc=[0.0, 0.1, 0.9, 0.9], wt=[0.0, 0.9, 0.9, 0.9], et=[0.0, 0.0, 0.1, 0.9])
    labels = probabilities_to_labels(probs, BRATS_OUTPUT)
    assert labels.dtype == np.uint8
    assert labels.shape == (4, 1, 1)
    assert labels[:, 0, 0].tolist() == [0, 2, 1, 3]


def test_later_paint_steps_win_where_regions_disagree():
    # ET without WT or TC is still painted ET (painted last); TC without WT is NCR (painted after WT)
    probs = _brats_probs(tc=[0.0, 0.9], wt=[0.0, 0.0], et=[0.9, 0.0])
    assert probabilities_to_labels(probs, BRATS_OUTPUT)[:, 0, 0].tolist() == [3, 1]


def test_catalog_thresholds_are_strict_and_per_channel():
    # exactly at the threshold is not above it; TC and ET need > 0.6, WT > 0.5
    probs = _brats_probs(tc=[0.6, 0.61, 0.0, 0.0], wt=[0.55, 0.55, 0.5, 0.51], et=[0.0, 0.0, 0.0, 0.0])
    assert probabilities_to_labels(probs, BRATS_OUTPUT)[:, 0, 0].tolist() == [2, 1, 0, 2]


def test_threshold_overrides_replace_only_the_channels_they_name():
    probs = _brats_probs(tc=[0.9, 0.9], wt=[0.9, 0.9], et=[0.3, 0.7])
    assert probabilities_to_labels(probs, BRATS_OUTPUT)[:, 0, 0].tolist() == [1, 3]
    assert probabilities_to_labels(probs, BRATS_OUTPUT, {"ET": 0.2})[:, 0, 0].tolist() == [3, 3]
    assert probabilities_to_labels(probs, BRATS_OUTPUT, {"ET": 0.8})[:, 0, 0].tolist() == [1, 1]


def test_a_channel_without_a_threshold_uses_one_half():
    output = OutputSpec.from_dict({"activation": "sigmoid", "channels": ["A"], "paint": [{"channel": "A", "label": 7}]})
    probs = np.array([0.5, 0.500001, 0.9], dtype=np.float32).reshape(1, 3, 1, 1)
    assert probabilities_to_labels(probs, output)[:, 0, 0].tolist() == [0, 7, 7]


def test_softmax_models_take_the_arg_max_channel_index():
    logits = np.zeros((3, 2, 2, 1))
    logits[1, 0, 0, 0] = 5.0  # spleen
    logits[2, 1, 1, 0] = 5.0  # liver
    logits[2, 0, 1, 0] = 0.1  # slightly liver
    labels = probabilities_to_labels(activate(logits, "softmax"), SOFTMAX_OUTPUT)
    assert labels.dtype == np.uint8
    assert labels[..., 0].tolist() == [[1, 2], [0, 2]]


# ---- apply_cleanup_rules -------------------------------------------------------------------------------------


def test_a_small_unconfident_component_is_relabelled_and_a_large_one_kept():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[1:5, 1:5, 1:5] = 3  # 64 voxels
    labels[8, 8, 8] = 3  # 1 voxel, not touching the block
    probs = np.full((3, 10, 10, 10), 0.5, dtype=np.float32)
    rule = CleanupRule(label=3, min_voxels=10, max_mean_prob=0.9, channel="ET", relabel=1)
    result = apply_cleanup_rules(labels, probs, BRATS_OUTPUT.channels, [rule])
    assert result is labels  # in place
    assert labels[8, 8, 8] == 1
    assert (labels[1:5, 1:5, 1:5] == 3).all()
    assert np.count_nonzero(labels) == 65


def test_a_small_but_confident_component_is_kept():
    labels = np.zeros((6, 6, 6), dtype=np.uint8)
    labels[2, 2, 2] = 3
    probs = np.zeros((3, 6, 6, 6), dtype=np.float32)
    probs[ET, 2, 2, 2] = 0.95
    rule = CleanupRule(label=3, min_voxels=75, max_mean_prob=0.9, channel="ET", relabel=1)
    apply_cleanup_rules(labels, probs, BRATS_OUTPUT.channels, [rule])
    assert labels[2, 2, 2] == 3
    probs[ET, 2, 2, 2] = 0.85  # the rule reads the named channel's probability
    apply_cleanup_rules(labels, probs, BRATS_OUTPUT.channels, [rule])
    assert labels[2, 2, 2] == 1


def test_diagonal_neighbours_are_one_component():
    # two voxels touching only at a corner: 26-connectivity makes them one component of 2 voxels
    labels = np.zeros((5, 5, 5), dtype=np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 2
    probs = np.zeros((3, 5, 5, 5), dtype=np.float32)
    keep_pairs = CleanupRule(label=2, min_voxels=2, max_mean_prob=0.9, channel="WT", relabel=0)
    apply_cleanup_rules(labels, probs, BRATS_OUTPUT.channels, [keep_pairs])
    assert labels[1, 1, 1] == labels[2, 2, 2] == 2


def test_rules_run_in_order_so_a_relabelled_component_meets_the_next_rule():
    labels = np.zeros((6, 6, 6), dtype=np.uint8)
    labels[3, 3, 3] = 3
    probs = np.zeros((3, 6, 6, 6), dtype=np.float32)
    rules = PostprocessingSpec.from_dict(load_presets()["brats"]["postprocessing"]).rules  # ET -> NCR -> ED -> 0
    apply_cleanup_rules(labels, probs, BRATS_OUTPUT.channels, rules)
    assert not labels.any()


def test_a_rule_for_an_absent_label_changes_nothing():
    labels = np.zeros((4, 4, 4), dtype=np.uint8)
    labels[0, 0, 0] = 2
    before = labels.copy()
    rule = CleanupRule(label=3, min_voxels=75, max_mean_prob=0.9, channel="ET", relabel=1)
    apply_cleanup_rules(labels, np.zeros((3, 4, 4, 4), dtype=np.float32), BRATS_OUTPUT.channels, [rule])
    np.testing.assert_array_equal(labels, before)


# ---- fill_holes ----------------------------------------------------------------------------------------------


def test_a_hole_enclosed_by_enhancing_tumour_becomes_necrosis():
    labels = np.zeros((7, 7, 7), dtype=np.uint8)
    labels[1:6, 1:6, 1:6] = 3
    labels[2:5, 2:5, 2:5] = 0  # a 27-voxel cavity, fully enclosed
    labels[3, 3, 3] = 2  # another label inside the cavity is enclosed too
    result = fill_holes(labels, label=3, fill_with=1)
    assert result is labels
    assert (labels[2:5, 2:5, 2:5] == 1).all()
    assert (labels[1:6, 1:6, 1:6] != 0).all()
    assert (labels == 0).sum() == 7**3 - 5**3  # outside untouched


def test_a_cavity_open_to_the_outside_is_not_filled():
    labels = np.zeros((7, 7, 7), dtype=np.uint8)
    labels[1:6, 1:6, 1:6] = 3
    labels[2:5, 2:5, 2:5] = 0
    labels[3, 3, 5] = 0  # a tunnel from the cavity through the wall
    before = labels.copy()
    fill_holes(labels, label=3, fill_with=1)
    np.testing.assert_array_equal(labels, before)


def test_fill_holes_without_the_label_changes_nothing():
    labels = np.full((3, 3, 3), 2, dtype=np.uint8)
    labels[1, 1, 1] = 0
    fill_holes(labels, label=3, fill_with=1)
    assert labels[1, 1, 1] == 0
