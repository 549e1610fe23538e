"""Sliding-window inference: window counting, ensembles (logit mean), test-time flips, devices, precision."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from glims.errors import ConfigError, DeviceError
from glims.inference import InferenceOptions, count_windows, predict_logits, resolve_device
from glims.network import GLIMS

TINY = dict(feature_size=6, img_size=32, num_heads=(1, 2, 2, 4), depths=(2, 2, 2, 2))


def tiny(seed: int) -> GLIMS:
    torch.manual_seed(seed)
    return GLIMS(**TINY).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 40, 36, 33)).astype(np.float32)


def test_progress_counts_every_window_batch(image):
    calls = []
    opts = InferenceOptions(overlap=0.5, sw_batch_size=3)
    logits, device = predict_logits([tiny(0)], image, (32, 32, 32), opts, progress=lambda d, t: calls.append((d, t)))
    windows = count_windows(image.shape[1:], (32, 32, 32), 0.5)
    assert windows == 2 * 2 * 2
    assert calls == [(i, -(-windows // 3)) for i in range(1, -(-windows // 3) + 1)]
    assert logits.shape == (3, 40, 36, 33) and logits.dtype == np.float32 and device == "cpu"


def test_ensemble_is_the_mean_of_member_logits(image):
    opts = InferenceOptions(overlap=0.25)
    a, _ = predict_logits([tiny(1)], image, (32, 32, 32), opts)
    b, _ = predict_logits([tiny(2)], image, (32, 32, 32), opts)
    both, _ = predict_logits([tiny(1), tiny(2)], image, (32, 32, 32), opts)
    assert np.allclose(both, (a + b) / 2, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-3)


def test_flip_tta_averages_mirrored_predictions(image):
    net = tiny(3)
    opts = InferenceOptions(overlap=0.25)
    plain, _ = predict_logits([net], image, (32, 32, 32), opts)
    manual = [plain]
    for axis in (1, 2, 3):
        flipped, _ = predict_logits([net], np.flip(image, axis).copy(), (32, 32, 32), opts)
        manual.append(np.flip(flipped, axis))
    tta, _ = predict_logits([net], image, (32, 32, 32), InferenceOptions(overlap=0.25, tta=True))
    assert np.allclose(tta, np.mean(manual, axis=0), atol=1e-5)


def test_bf16_path_stays_close_to_fp32(image):
    net = tiny(4)
    fp32, _ = predict_logits([net], image, (32, 32, 32), InferenceOptions(overlap=0.25))
    bf16, _ = predict_logits([net], image, (32, 32, 32), InferenceOptions(overlap=0.25, precision="bf16"))
    # A random network amplifies rounding; the segmentation-level check (Dice vs fp32) is in the benchmarks.
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    assert np.abs(bf16 - fp32).mean() < 0.3 * fp32.std()
    assert np.corrcoef(bf16.ravel(), fp32.ravel())[0, 1] > 0.9


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")


def test_cancel_between_window_batches(image):
    from glims.errors import Cancelled
    from glims.progress import CancelToken

    token = CancelToken()
    seen = []

    def progress(done, total):
        seen.append(done)
        token.cancel("stop")

    with pytest.raises(Cancelled, match="stop"):
        predict_logits([tiny(5)], image, (32, 32, 32), InferenceOptions(overlap=0.5, sw_batch_size=1),
                       progress=progress, cancel=token)
    assert seen == [1]


def test_window_streams_change_no_logit(image):
    # small windows on the CPU run as one stream per core by default, or as many as asked for
    from glims.cpu_threads import available_cores
    from glims.inference import window_streams

    opts = InferenceOptions(overlap=0.5, sw_batch_size=2)
    cpu = torch.device("cpu")
    assert window_streams((32, 32, 32), cpu, opts) == available_cores()
    assert window_streams((32, 32, 32), cpu, dataclasses.replace(opts, streams=3)) == 3
    assert window_streams((96, 96, 96), cpu, opts) == 1
    assert window_streams((32, 32, 32), cpu, InferenceOptions(fast_path=False)) == 1
    with pytest.raises(ConfigError, match="streams must be at least 1"):
        InferenceOptions(streams=0)
    net = tiny(6)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two, _ = predict_logits([net], image, (32, 32, 32), dataclasses.replace(opts, streams=2))
        assert torch.get_num_threads() == 2  # restored after the streams' single-threaded run
        one, _ = predict_logits([net], image, (32, 32, 32), dataclasses.replace(opts, streams=1))
    finally:
        torch.set_num_threads(previous)
    assert np.array_equal(one, two)


def test_the_bundled_model_spreads_its_windows_evenly_on_a_real_case(shared_data, tmp_path):
    """The bundled BraTS model's catalog entry places its windows evenly: 48 windows on TCGA-FG-6692 where MONAI's
    step places 80, with nearly the same answer, and each run's report says which placement it used."""
    from glims.catalog import load_catalog
    from glims.cli import main
    from glims.metrics import score_regions

    from tiny_models import brats_case_paths

    spec = load_catalog().get("glims-brats-synth")
    assert spec.inference.placement == "even"
    inputs = [arg for path in brats_case_paths(shared_data, "tcga_fg_6692") for arg in ("-i", str(path))]
    labels, reports = {}, {}
    for placement in ("even", "step"):
        extra = [] if placement == "even" else ["--placement", "step"]  # even: the catalog's own
        out = tmp_path / placement
        assert main(["segment", "-m", "glims-brats-synth", "--home", str(tmp_path / "home"), *inputs,
                     "-o", str(out / "result.seg.nrrd"), "--labelmap", str(out / "labels.nii.gz"),
                     "--report", str(out / "report.json"), "--progress", "none", *extra]) == 0
        reports[placement] = json.loads((out / "report.json").read_text())
        labels[placement] = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels.nii.gz")))
    assert {p: (r["options"]["placement"], r["options"]["windows"]) for p, r in reports.items()} == {
        "even": ("even", 48), "step": ("step", 80)}
    agreement = score_regions(labels["even"], labels["step"], (1.0, 1.0, 1.0), ref_convention="brats2023")
    assert all(0.95 < agreement[region].dice < 1 for region in ("TC", "WT", "ET")), agreement
