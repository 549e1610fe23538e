"""Training: label conventions, case discovery, augmentation, the loss decreasing, one short CLI run with its log,
exact resume after an interruption, the resume state loaded weights-only, and the bundled default model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from glims.catalog import load_catalog, load_presets
from glims.catalog_sections import PreprocessingSpec
from glims.checkpoint import load_checkpoint
from glims.cli import main
from glims.errors import Cancelled, CheckpointError, ConfigError, InputError
from glims.fileio import sha256_file
from glims.network import GLIMS
from glims.progress import CancelToken, parse_protocol_line
from glims.synth import generate_case, write_case
from glims.training.augment import AugmentConfig, augment_patch
from glims.training.averaging import WeightAverage
from glims.training.data import InputMatcher, discover_cases, load_case, sample_patch
from glims.training.labels import detect_convention, regions_from_labels
from glims.training.loss import deep_supervision_loss
from glims.training.state import load_state
from glims.training.trainer import TrainConfig, cosine_lr, train

TINY = {"feature_size": 6, "img_size": [32, 32, 32], "num_heads": [1, 2, 2, 4], "depths": [2, 2, 2, 2]}
PRESET = load_presets()["brats"]
PREPROCESSING = PreprocessingSpec.from_dict(PRESET["preprocessing"])


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    """Three small synthetic cases (40^3 voxels of 4 mm) in BraTS 2021 naming, as ``glims synth`` writes them."""
    root = tmp_path_factory.mktemp("synth")
    for index in range(3):
        write_case(generate_case(100 + index, (40, 40, 40), 4.0), root, f"SYN-{index}")
    (root / "dataset.json").write_text(json.dumps({"generator": "glims.synth",
                                                   "label_convention": "BraTS 2023 (1 NCR, 2 ED, 3 ET)"}))
    return root


# ------------------------------------------------------------------------------------------- label conventions


def test_label_conventions_give_exact_regions():
    tc, wt, et = 0, 1, 2
    brats2023 = np.array([[[0, 1, 2, 3]]])
    regions = regions_from_labels(brats2023, "brats2023")
    assert regions.shape == (3, 1, 1, 4) and regions.dtype == np.uint8
    assert regions[tc].ravel().tolist() == [0, 1, 0, 1]
    assert regions[wt].ravel().tolist() == [0, 1, 1, 1]
    assert regions[et].ravel().tolist() == [0, 0, 0, 1]
    brats2017 = np.array([[[0, 1, 2, 4]]])
    regions = regions_from_labels(brats2017, "brats2017")
    assert regions[tc].ravel().tolist() == [0, 1, 0, 1]
    assert regions[wt].ravel().tolist() == [0, 1, 1, 1]
    assert regions[et].ravel().tolist() == [0, 0, 0, 1]
    brats2013 = np.array([[[0, 1, 2, 3, 4]]])  # 3 = non-enhancing tumour: core, not enhancing
    regions = regions_from_labels(brats2013, "brats2013")
    assert regions[tc].ravel().tolist() == [0, 1, 0, 1, 1]
    assert regions[wt].ravel().tolist() == [0, 1, 1, 1, 1]
    assert regions[et].ravel().tolist() == [0, 0, 0, 0, 1]


def test_label_convention_detection_and_refusal():
    assert detect_convention(np.array([0, 1, 2, 3])) == "brats2023"
    assert detect_convention(np.array([0, 1, 2, 4])) == "brats2017"
    assert detect_convention(np.array([0, 1, 2, 3, 4])) == "brats2013"
    assert regions_from_labels(np.array([0, 2, 4]), "auto")[2].tolist() == [0, 0, 1]
    with pytest.raises(InputError, match="brats2023"):
        regions_from_labels(np.array([0, 1, 4]), "brats2023")
    with pytest.raises(InputError):
        regions_from_labels(np.array([0, 5]), "auto")


# ----------------------------------------------------------------------------------------------- data, augment


def _write(path: Path, array: np.ndarray) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def test_discovery_understands_brats_2021_and_2023_names(tmp_path):
    image = np.random.default_rng(0).integers(1, 100, (8, 8, 8)).astype(np.int16)
    label = np.zeros((8, 8, 8), np.uint8)
    old = tmp_path / "old" / "BraTS2021_00001"
    new = tmp_path / "new" / "BraTS-GLI-00002-000"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    for suffix in ("flair", "t1ce", "t1", "t2"):
        _write(old / f"BraTS2021_00001_{suffix}.nii.gz", image)
    _write(old / "BraTS2021_00001_seg.nii.gz", label)
    _write(old / "BraTS2021_00001_seg_pred_silver.nii.gz", label)
    for suffix in ("t2f", "t1c", "t1n", "t2w"):
        _write(new / f"BraTS-GLI-00002-000-{suffix}.nii.gz", image)
    _write(new / "BraTS-GLI-00002-000-seg.nii.gz", label)
    matcher = InputMatcher.from_preset(PRESET)
    (old_case,) = discover_cases([tmp_path / "old"], matcher)
    assert [p.name.split("_")[-1] for p in old_case.images] == ["flair.nii.gz", "t1ce.nii.gz", "t1.nii.gz",
                                                                "t2.nii.gz"]
    assert old_case.label.name == "BraTS2021_00001_seg.nii.gz"  # a reference label wins over a prediction
    assert old_case.convention == "auto" and old_case.label_quality == "reference"
    (new_case,) = discover_cases([new], matcher)
    assert [p.name[-10:-7] for p in new_case.images] == ["t2f", "t1c", "t1n", "t2w"]
    assert new_case.convention == "brats2023"
    (new / "BraTS-GLI-00002-000-seg.nii.gz").unlink()
    with pytest.raises(InputError, match="no label"):
        discover_cases([new], matcher)


def test_loading_matches_inference_preprocessing(synth_root):
    matcher = InputMatcher.from_preset(PRESET)
    cases = discover_cases([synth_root], matcher)
    assert [c.case_id for c in cases] == ["SYN-0", "SYN-1", "SYN-2"]
    assert all(c.convention == "brats2023" and c.label_quality == "exact" for c in cases)
    loaded = load_case(cases[0], PREPROCESSING, [32, 32, 32])
    assert loaded.image.shape[0] == 4 and loaded.target.shape == (3, *loaded.image.shape[1:])
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(cases[0].label)))
    expected = regions_from_labels(label, "brats2023").sum(axis=(1, 2, 3))
    assert loaded.target.sum(axis=(1, 2, 3)).tolist() == expected.tolist()  # same grid: nothing lost by cropping
    inside = loaded.image[0] != 0
    assert abs(float(loaded.image[0][inside].mean())) < 1e-3  # z-scored over the brain, as inference does
    patch, target = sample_patch(loaded, (32, 32, 32), np.random.default_rng(0), tumour_fraction=1.0)
    assert patch.shape == (4, 32, 32, 32) and target.shape == (3, 32, 32, 32) and target[1].any()


def test_augmentation_keeps_image_and_target_aligned():
    rng = np.random.default_rng(3)
    image = np.zeros((2, 16, 16, 16), np.float32)
    image[:, 2:6, 3:9, 4:12] = 1.0
    target = (image[:1] > 0).astype(np.uint8)
    flips_only = AugmentConfig(p_flip=1.0, p_scale=0, p_shift=0, p_contrast=0, p_noise=0, p_smooth=0)
    out, out_target = augment_patch(image, target, rng, flips_only)
    assert np.array_equal(out[0] > 0, out_target[0] > 0)
    assert np.array_equal(out[0], image[0, ::-1, ::-1, ::-1])
    everything = AugmentConfig(p_scale=1, p_shift=1, p_contrast=1, p_noise=1, p_smooth=1)
    out, out_target = augment_patch(image, target, rng, everything)
    assert np.all(out[image_flip_mask(out_target)] == 0)  # background stays exactly 0
    assert np.array_equal(augment_patch(image, target, np.random.default_rng(9))[0],
                          augment_patch(image, target, np.random.default_rng(9))[0])


def image_flip_mask(target: np.ndarray) -> np.ndarray:
    return np.broadcast_to(target[0] == 0, (2, *target.shape[1:]))


# ------------------------------------------------------------------------------------------- loss and training


def test_cosine_schedule():
    assert cosine_lr(0, 100, 1e-3, 0.0) == pytest.approx(1e-3)
    assert cosine_lr(50, 100, 1e-3, 0.0) == pytest.approx(5e-4)
    assert cosine_lr(100, 100, 1e-3, 1e-5) == pytest.approx(1e-5)
    assert cosine_lr(7, None, 1e-3, 0.0) == 1e-3
    # Linear warm-up: step s < W runs at (s + 1) / W of the cosine rate, then the cosine alone.
    assert cosine_lr(0, 100, 1e-3, 0.0, warmup_steps=10) == pytest.approx(1e-4)
    assert cosine_lr(4, 100, 1e-3, 0.0, warmup_steps=10) == pytest.approx(0.5 * cosine_lr(4, 100, 1e-3, 0.0))
    assert cosine_lr(10, 100, 1e-3, 0.0, warmup_steps=10) == cosine_lr(10, 100, 1e-3, 0.0)
    assert cosine_lr(2, None, 1e-3, 0.0, warmup_steps=4) == pytest.approx(7.5e-4)
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig(out_dir="x", cases=("a",), epochs=1, warmup_steps=-1)


def test_case_weights_set_how_often_each_folder_is_sampled(synth_root, tmp_path):
    from glims.training.trainer import draw_batch, sampling_weights

    single = tmp_path / "single"
    write_case(generate_case(200, (40, 40, 40), 4.0), single, "SYN-ONE")
    case_dir = single / "SYN-ONE"
    matcher = InputMatcher.from_preset(PRESET)
    files = discover_cases([synth_root, case_dir], matcher)
    config = TrainConfig(out_dir=str(tmp_path / "run"), cases=(str(synth_root), str(case_dir)), epochs=1,
                         case_weights=(1.0, 3.0))
    weights = sampling_weights(config, files)
    assert [c.case_id for c in files][-1] == "SYN-ONE"
    np.testing.assert_allclose(weights, [1 / 6, 1 / 6, 1 / 6, 1 / 2])

    # A weight of zero: that folder's cases are never drawn.
    config = TrainConfig(out_dir=str(tmp_path / "run"), cases=(str(synth_root), str(case_dir)), epochs=1,
                         case_weights=(0.0, 1.0), augment=False, tumour_fraction=0.0)
    weights = sampling_weights(config, files)
    loaded = [load_case(f, PREPROCESSING, [32] * 3, ["FLAIR", "T1ce", "T1", "T2"]) for f in files]
    marker = [np.full_like(c.image, float(i)) for i, c in enumerate(loaded)]
    for case, image in zip(loaded, marker):
        case.image = image
    images, _ = draw_batch(loaded, [32] * 3, 16, np.random.default_rng(0), config, weights)
    assert set(images.reshape(16, -1)[:, 0].tolist()) == {3.0}

    with pytest.raises(ConfigError, match="one case weight per"):
        TrainConfig(out_dir="x", cases=("a", "b"), epochs=1, case_weights=(1.0,))
    with pytest.raises(ConfigError, match="not all zero"):
        TrainConfig(out_dir="x", cases=("a",), epochs=1, case_weights=(0.0,))


def test_loss_decreases_on_a_fixed_batch(synth_root):
    torch.manual_seed(0)
    cases = discover_cases([synth_root], InputMatcher.from_preset(PRESET))
    loaded = load_case(cases[0], PREPROCESSING, [32, 32, 32])
    image, target = sample_patch(loaded, (32, 32, 32), np.random.default_rng(1), tumour_fraction=1.0)
    x, y = torch.from_numpy(image[None]), torch.from_numpy(target[None])
    net = GLIMS(**TINY).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-5)
    losses = []
    for _ in range(8):
        loss = deep_supervision_loss(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.05, losses


def test_bf16_training_step_matches_fp32_to_bf16_rounding():
    from glims.training.trainer import optimizer_step, training_precision

    torch.manual_seed(3)
    nets = [GLIMS(in_channels=4, out_channels=3, **TINY) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    images = torch.randn(1, 4, 32, 32, 32)
    targets = (torch.rand(1, 3, 32, 32, 32) > 0.7).float()
    losses = {}
    for net, precision in zip(nets, ("fp32", "bf16")):
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        losses[precision] = float(optimizer_step(net.train(), optimizer, images, targets, precision=precision))
        assert all(p.dtype == torch.float32 for p in net.parameters()), "weights stay float32"
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2) and losses["bf16"] != losses["fp32"]
    assert training_precision("auto", torch.device("cpu")) == "fp32"
    assert training_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(out_dir="x", cases=("a",), epochs=1, precision="fp16")


def test_loss_has_a_floor_on_windows_without_tumour():
    from glims.training.loss import dice_ce_loss

    empty = torch.zeros(1, 3, 8, 8, 8)
    # The more confidently right about an empty window, the closer the loss gets to 0, never below it (with the
    # authors' smooth_dr = 0 the Dice term was 1 - 1e-6 / sum(p^2): about -1e43 at logit -60, unbounded below).
    values = [float(dice_ce_loss(torch.full((1, 3, 8, 8, 8), logit), empty)) for logit in (-5.0, -20.0, -60.0, -200.0)]
    assert all(0.0 <= v < 2.0 for v in values) and values == sorted(values, reverse=True), values
    assert float(dice_ce_loss(torch.full((1, 3, 8, 8, 8), -60.0), empty)) < 1e-3
    # Where there is tumour the Dice term is the authors' to float32 precision.
    target = torch.zeros(1, 3, 8, 8, 8)
    target[:, :, 2:6, 2:6, 2:6] = 1
    logits = torch.where(target > 0, 3.0, -3.0)
    p = torch.sigmoid(logits)
    authors = 1 - (2 * (p * target).sum((2, 3, 4)) + 1e-6) / ((p * p).sum((2, 3, 4)) + target.sum((2, 3, 4)))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(dice_ce_loss(logits, target)) == pytest.approx(float(authors.mean() + bce), rel=1e-6)


def _config(synth_root: Path, out: Path, **changes) -> TrainConfig:
    values = dict(out_dir=str(out), cases=(str(synth_root),), architecture=TINY, epochs=2, steps_per_epoch=2,
                  batch_size=1, val_fraction=0.34, seed=5, device="cpu")
    values.update(changes)
    return TrainConfig(**values)


def test_cli_trains_one_short_epoch_with_log_and_json_progress(synth_root, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--cases", str(synth_root), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "1", "--feature-size", "6", "--num-heads", "1", "2", "2", "4", "--img-size", "32",
                 "--val-fraction", "0.34", "--device", "cpu", "--progress", "json"])
    assert code == 0
    lines = [parse_protocol_line(line) for line in capsys.readouterr().out.splitlines()]
    assert all(lines), "every stdout line is a protocol v1 object"
    steps = [m for m in lines if m["type"] == "progress" and m["stage"] == "train" and "lr" in m.get("data", {})]
    assert len(steps) == 2 and all(math.isfinite(m["data"]["loss"]) for m in steps)
    assert lines[-1]["type"] == "result" and Path(lines[-1]["outputs"]["best"]).is_file()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and {"train_loss", "val_dice_TC", "val_dice_WT", "val_dice_ET"} <= set(rows[0])
    assert (out / "log.csv").read_text().startswith("epoch,")
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = load_checkpoint(out / "best.json")
    split = json.loads((out / "split.json").read_text())
    assert best.metadata["training"]["epoch"] == 1
    assert best.metadata["training"]["val_cases"] == [c["id"] for c in split["validation"]]


@pytest.mark.parametrize("ema_decay", [0.0, 0.9], ids=["raw-weights", "weight-average"])
def test_resume_after_interruption_matches_an_uninterrupted_run(synth_root, tmp_path, ema_decay):
    straight = train(_config(synth_root, tmp_path / "straight", ema_decay=ema_decay))
    assert straight.epochs_done == 2 and straight.steps_done == 4

    token = CancelToken()

    def stop_after_first_epoch(event):
        if event.stage == "train" and "done" in event.message and event.data.get("epoch") == 1:
            token.cancel("test interruption")

    with pytest.raises(Cancelled):
        train(_config(synth_root, tmp_path / "split", ema_decay=ema_decay), progress=stop_after_first_epoch,
              cancel=token)
    state, _ = load_state(tmp_path / "split")
    assert state["epoch"] == 1 and state["step"] == 2 and state["optimizer"]["state"]
    resumed = train(_config(synth_root, tmp_path / "split", ema_decay=ema_decay), resume=True)
    assert resumed.epochs_done == 2 and resumed.steps_done == 4
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    assert [r["val_dice_mean"] for r in resumed.history] == [r["val_dice_mean"] for r in straight.history]
    (state_a, a), (state_b, b) = load_state(tmp_path / "straight"), load_state(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if ema_decay:
        assert state_a["ema_updates"] == state_b["ema_updates"] == 4
        assert all(torch.equal(state_a["ema"][k], state_b["ema"][k]) for k in a)


def test_weight_average_is_what_is_validated_and_kept(synth_root, tmp_path):
    run = tmp_path / "run"
    result = train(_config(synth_root, run, epochs=1, steps_per_epoch=3, ema_decay=0.9))
    state, raw = load_state(run)
    best = load_checkpoint(run / "best.json").state_dict
    assert result.best_epoch == 1 and state["ema_updates"] == 3
    assert all(torch.equal(best[k], state["ema"][k]) for k in raw)
    assert not all(torch.equal(best[k], raw[k]) for k in raw)


def test_weight_average_follows_the_update_rule_and_converges():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3), torch.nn.InstanceNorm3d(3, affine=True))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    average = WeightAverage(net, decay=0.9)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(1.0)
    average.update(net)  # first update: decay min(0.9, 1/10) = 0.1
    for name, value in average.model.state_dict().items():
        torch.testing.assert_close(value, 0.1 * start[name] + 0.9 * (start[name] + 1.0))
    for _ in range(200):  # constant weights: the average converges to them, the network is untouched
        average.update(net)
    assert average.updates == 201 and average.current_decay() == 0.9
    for name, value in average.model.state_dict().items():
        torch.testing.assert_close(value, start[name] + 1.0, atol=1e-5, rtol=0)
        torch.testing.assert_close(net.state_dict()[name], start[name] + 1.0)
    assert not any(p.requires_grad for p in average.model.parameters()) and not average.model.training
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, decay=1.0)


def test_trainable_early_updates_only_the_intensity_layers_and_norms(synth_root, tmp_path):
    start = train(_config(synth_root, tmp_path / "start", epochs=1, steps_per_epoch=1))
    run = tmp_path / "adapt"
    train(_config(synth_root, run, epochs=1, steps_per_epoch=2, init_weights=str(start.best_checkpoint),
                  trainable="early", lr=1e-2))
    before = load_checkpoint(start.best_checkpoint).state_dict
    _, after = load_state(run)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "the selected parameters were updated"
    assert all(k.startswith(("stem.", "dmsf_1.", "dmsf_2.", "csab1.", "csab2.")) or ".norm" in k for k in changed)
    assert any(k.startswith("t4.") and "norm" in k for k in changed)  # normalisations everywhere adapt
    frozen = [k for k in before if k.startswith(("t4.", "dmsu_3.", "out1.")) and "norm" not in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    with pytest.raises(ConfigError, match="trainable"):
        _config(synth_root, run, trainable="decoder")


def test_validation_thresholds_the_channels_as_configured(synth_root, tmp_path):
    def initial_dice(run: str, **changes) -> dict[str, float]:
        result = train(_config(synth_root, tmp_path / run, epochs=1, steps_per_epoch=1, validate_initial=True,
                               **changes))
        row = next(r for r in result.history if r["epoch"] == 0)
        return {region: row[f"val_dice_{region}"] for region in ("TC", "WT", "ET")}

    preset = initial_dice("preset")
    lowered = initial_dice("lowered", val_thresholds={"WT": 1e-6})
    assert lowered["TC"] == preset["TC"] and lowered["ET"] == preset["ET"]  # same weights, same thresholds there
    assert lowered["WT"] != preset["WT"]


def test_keep_last_keeps_the_end_of_the_schedule(synth_root, tmp_path):
    run = tmp_path / "run"
    result = train(_config(synth_root, run, epochs=2, steps_per_epoch=1, keep="last", validate_initial=True))
    _, last = load_state(run)
    kept = load_checkpoint(run / "best.json")
    assert result.best_epoch == 2 and kept.metadata["training"]["epoch"] == 2
    assert all(torch.equal(kept.state_dict[k], last[k]) for k in last)
    assert result.best_metric == pytest.approx(result.history[-1]["val_dice_mean"], abs=1e-4)
    with pytest.raises(ConfigError, match="early stopping"):
        _config(synth_root, run, keep="last", early_stop_patience=2)
    with pytest.raises(ConfigError, match="keep"):
        _config(synth_root, run, keep="median")


def test_resume_state_is_loaded_weights_only(synth_root, tmp_path):
    run = tmp_path / "run"
    train(_config(synth_root, run, epochs=1, steps_per_epoch=1))
    state, weights = load_state(run)
    assert state["format"] == "glims-train-state" and weights
    # A state carrying an arbitrary Python object must be refused, not unpickled.
    payload = torch.load(run / "state.pt", weights_only=True)
    payload["history"] = [Path("/etc/passwd")]
    torch.save(payload, run / "state.pt")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_state(run)


# ------------------------------------------------------------------------------------------ bundled model


def test_bundled_default_model_loads_and_matches_its_sha256():
    catalog = load_catalog(home=Path("/nonexistent-glims-home"))
    bundled = [m for m in catalog.models if m.builtin and m.default and m.preset == "brats"]
    if not bundled:
        pytest.skip("no bundled default BraTS model in the catalog yet")
    spec = bundled[0]
    for weights in spec.weights:
        assert weights.path.is_file() and weights.path.stat().st_size <= 25 * 1024 * 1024
        assert sha256_file(weights.path) == weights.sha256
    from glims.inference import load_models

    (net,) = load_models(spec)
    x = torch.zeros(1, 4, *spec.roi_size)
    assert net(x).shape == (1, 3, *spec.roi_size)
    assert spec.model_card and (Path(__file__).resolve().parents[2] / spec.model_card).is_file()


# ------------------------------------------------------------------------------------------- real shared cases


def test_shared_real_cases_are_found_with_their_label_conventions(shared_data):
    brats = shared_data / "brats"
    matcher = InputMatcher.from_preset(PRESET)
    gli, fg, du = discover_cases([brats / "brats_gli_00001", brats / "tcga_fg_6692", brats / "tcga_du_7294"], matcher)
    assert gli.label.name == "BraTS-GLI-00001-000-seg_BraTS23_1_pred_silver.nii.gz"
    assert gli.convention == "brats2023" and gli.label_quality == "silver"  # BraTS 2023 names: ET = 3
    assert [p.name for p in gli.images] == [f"BraTS-GLI-00001-000-{s}.nii.gz" for s in ("t2f", "t1c", "t1n", "t2w")]
    assert fg.label.name == "TCGA-FG-6692_fusion_mav_silver.nii.gz" and fg.convention == "auto"
    assert [p.name.split("_")[1] for p in fg.images] == ["fla", "t1c", "t1", "t2"]
    assert du.label_quality == "silver"
    # On a coarse 4 mm grid the region volumes stay those of the 1 mm label (partial-volume rule: >= half).
    coarse = PreprocessingSpec.from_dict({**PRESET["preprocessing"], "spacing": [4.0, 4.0, 4.0]})
    for case, convention, values in ((gli, "brats2023", (1, 2, 3)), (fg, "brats2017", (1, 2, 4))):
        loaded = load_case(case, coarse, [32, 32, 32])
        assert loaded.convention == convention
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        assert set(np.unique(label).tolist()) == {0, *values}
        expected_ml = regions_from_labels(label, convention).sum(axis=(1, 2, 3)) / 1000.0
        got_ml = loaded.target.sum(axis=(1, 2, 3)) * 64 / 1000.0
        assert np.allclose(got_ml, expected_ml, rtol=0.2, atol=1.0), (case.case_id, got_ml, expected_ml)
        assert loaded.target[2].any() == (expected_ml[2] > 0)


def test_two_modality_brats2015_case_is_refused_and_its_labels_read_as_brats2013(shared_data):
    folder = shared_data / "brats" / "brats2015_deepmedic_pat0001_2mod"
    with pytest.raises(InputError, match="no image found for T1"):
        discover_cases([folder], InputMatcher.from_preset(PRESET))
    label_file = next(p for p in folder.iterdir() if "OTMultiClass" in p.name)
    label = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))).astype(np.int16)
    assert detect_convention(label) == "brats2013"
    regions = regions_from_labels(label, "auto")
    assert regions[0].sum() == np.isin(label, (1, 3, 4)).sum()  # non-enhancing (3) is tumour core, not ET
    assert regions[2].sum() == (label == 4).sum()
