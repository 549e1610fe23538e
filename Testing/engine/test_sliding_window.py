"""glims.sliding_window against MONAI's sliding_window_inference (same windows, same blending, same logits), and
its even window placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glims.errors import ConfigError
from glims.inference import InferenceOptions, count_windows
from glims.network import GLIMS
from glims.sliding_window import importance_map, sliding_window_logits, window_corners, window_starts

TINY = dict(feature_size=6, img_size=32, num_heads=(1, 2, 2, 4), depths=(2, 2, 2, 2))
ROI = (32, 32, 32)


@pytest.fixture(scope="module")
def net() -> GLIMS:
    torch.manual_seed(7)
    return GLIMS(**TINY).eval()


def _case(shape, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((4, *shape)).astype(np.float32))


def _monai(net, image, overlap, blend, batch):
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        out = sliding_window_inference(
            image[None], roi_size=ROI, sw_batch_size=batch, predictor=net, overlap=overlap, mode=blend
        )
    return out[0]


@pytest.mark.parametrize(
    ("shape", "overlap", "blend", "batch"),
    [
        ((41, 36, 45), 0.5, "gaussian", 3),
        ((41, 36, 45), 0.25, "gaussian", 4),
        ((41, 36, 45), 0.5, "constant", 1),
        ((40, 28, 33), 0.5, "gaussian", 2),  # one axis smaller than the window: zero-padded, then cropped back
    ],
)
def test_logits_match_monai(net, shape, overlap, blend, batch):
    image = _case(shape)
    expected = _monai(net, image, overlap, blend, batch)
    with torch.inference_mode():
        got = sliding_window_logits(image, ROI, net, overlap=overlap, blend=blend, batch_size=batch)
    assert got.shape == expected.shape == (3, *shape)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), float((got - expected).abs().max())


def test_windows_and_weights_are_monais():
    from monai.data.utils import compute_importance_map, dense_patch_slices

    for shape, overlap in (((73, 86, 65), 0.5), ((73, 86, 65), 0.25), ((33, 32, 90), 0.6)):
        interval = [max(1, int(r * (1 - overlap))) if r != s else r for s, r in zip(shape, ROI, strict=True)]
        monai_starts = [tuple(s.start for s in window) for window in dense_patch_slices(shape, ROI, interval)]
        assert window_corners(shape, ROI, overlap) == monai_starts
        assert count_windows(shape, ROI, overlap) == len(monai_starts)
    assert count_windows((73, 86, 65), ROI, 0.5) == 80 and count_windows((73, 86, 65), ROI, 0.25) == 36
    for blend in ("gaussian", "constant"):
        assert torch.equal(importance_map(ROI, blend), compute_importance_map(ROI, mode=blend).float())


def test_even_placement_spreads_the_windows_from_edge_to_edge():
    for overlap in (0.5, 0.25, 0.7):
        target = 32 * (1 - overlap)
        for size in range(33, 260):
            starts = window_starts(size, 32, overlap, "even")
            spacings = {b - a for a, b in zip(starts, starts[1:], strict=False)}
            assert starts[0] == 0 and starts[-1] == size - 32, (size, starts)
            assert max(spacings) - min(spacings) <= 1, (size, starts)  # even, to the voxel
            gaps, excess = len(starts) - 1, size - 32
            # as many windows as make the spacing nearest to the target (of two equally near, the fewer)
            for other in (gaps - 1, gaps + 1):
                if other >= 1:
                    assert abs(excess / gaps - target) <= abs(excess / other - target), (size, overlap, starts)
                    if other < gaps:
                        assert abs(excess / gaps - target) < abs(excess / other - target), (size, overlap, starts)
    # a brain cropped to 65 voxels: MONAI's step puts a fourth window one voxel from the third
    assert window_starts(65, 32, 0.5, "step") == [0, 16, 32, 33]
    assert window_starts(65, 32, 0.5, "even") == [0, 17, 33]
    assert window_starts(32, 32, 0.5, "even") == window_starts(20, 32, 0.5, "even") == [0]
    assert count_windows((73, 86, 65), ROI, 0.5, "even") == 48 < count_windows((73, 86, 65), ROI, 0.5) == 80
    assert count_windows((40, 28, 33), ROI, 0.5, "even") == 2 * 1 * 2  # the 28 axis padded to one window


def test_even_placement_blends_every_window_it_places(net):
    # the blended logits equal a plain sum over the windows window_corners names, each weighted by the
    # importance map, over the summed weights (the one-axis-short case is padded, then cropped back)
    for shape in ((41, 70, 45), (40, 28, 33)):
        image = _case(shape, seed=5)
        padded = torch.nn.functional.pad(image, (0, 0, 2, 2, 0, 0)) if shape[1] < 32 else image
        corners = window_corners(padded.shape[1:], ROI, 0.5, "even")
        weight = importance_map(ROI, "gaussian")
        total = torch.zeros((3, *padded.shape[1:]))
        weights = torch.zeros(padded.shape[1:])
        with torch.inference_mode():
            for x, y, z in corners:
                window = (slice(x, x + 32), slice(y, y + 32), slice(z, z + 32))
                total[(slice(None), *window)] += net(padded[(None, slice(None), *window)])[0] * weight
                weights[window] += weight
            got = sliding_window_logits(image, ROI, net, overlap=0.5, blend="gaussian", batch_size=1,
                                        placement="even")
        expected = (total / weights)[:, :, 2:30] if shape[1] < 32 else total / weights
        assert got.shape == (3, *shape)
        assert torch.allclose(got, expected, rtol=0, atol=1e-5), float((got - expected).abs().max())
        if shape == (41, 70, 45):  # 70 voxels: windows at 0, 19 and 38 (step: 0, 16, 32 and 38)
            with torch.inference_mode():
                step = sliding_window_logits(image, ROI, net, overlap=0.5, blend="gaussian", batch_size=1)
            assert len(corners) == 2 * 3 * 2 and not torch.allclose(step, got, rtol=0, atol=1e-5)


def test_an_unknown_placement_is_refused():
    with pytest.raises(ValueError, match="placement must be step or even, got 'random'"):
        window_starts(70, 32, 0.5, "random")
    with pytest.raises(ConfigError, match="placement must be step or even, got 'random'"):
        InferenceOptions(placement="random")


def test_batch_hooks_run_around_every_forward(net):
    image = _case((41, 36, 45), seed=1)
    events = []

    def forward(batch):
        events.append(("forward", batch.shape[0]))
        return net(batch)

    with torch.inference_mode():
        sliding_window_logits(
            image, ROI, forward, overlap=0.5, blend="gaussian", batch_size=3,
            before_batch=lambda: events.append("before"), after_batch=lambda: events.append("after"),
        )
    windows = count_windows(image.shape[1:], ROI, 0.5)
    sizes = [3] * (windows // 3) + ([windows % 3] if windows % 3 else [])
    assert events == [e for size in sizes for e in ("before", ("forward", size), "after")]


def test_streams_give_the_logits_of_one_stream(net):
    # two copies of the network on two threads; outputs are added in window order whatever finishes first
    image = _case((41, 36, 45), seed=2)
    twin = net.replica()
    with torch.inference_mode():
        one = sliding_window_logits(image, ROI, net, overlap=0.5, blend="gaussian", batch_size=3)
        done = []
        two = sliding_window_logits(image, ROI, [net, twin], overlap=0.5, blend="gaussian", batch_size=3,
                                    after_batch=lambda: done.append(1))
    assert torch.equal(one, two)
    assert len(done) == -(-count_windows(image.shape[1:], ROI, 0.5) // 3)
    assert twin is not net and twin._workspace is not net._workspace
    assert all(a is b for a, b in zip(twin.parameters(), net.parameters(), strict=True))  # shared weights


def test_a_free_stream_takes_the_batches_a_slowed_stream_cannot():
    # one stream sleeps in every batch (as on a core another program keeps busy): the other takes the next batches
    # instead of waiting for it, and the blend is still the one-stream result (outputs added in window order)
    import time

    image = _case((64, 64, 64), seed=3)
    calls = {"slow": 0, "free": 0}

    def doubled(batch):
        return batch[:, :2] * 2

    def slow(batch):
        calls["slow"] += 1
        time.sleep(0.3)
        return doubled(batch)

    def free(batch):
        calls["free"] += 1
        return doubled(batch)

    kwargs = dict(overlap=0.5, blend="gaussian", batch_size=1)
    one = sliding_window_logits(image, ROI, doubled, **kwargs)
    two = sliding_window_logits(image, ROI, [slow, free], **kwargs)
    assert torch.equal(one, two)
    windows = count_windows(image.shape[1:], ROI, 0.5)
    assert calls["slow"] + calls["free"] == windows == 27
    assert calls["free"] > 2 * calls["slow"], calls


def test_a_cancel_during_streams_stops_before_the_next_batch_is_added():
    from glims.errors import Cancelled
    from glims.progress import CancelToken

    image = _case((64, 64, 64), seed=4)
    token, added = CancelToken(), []

    def after():
        added.append(1)
        token.cancel("stop")

    with pytest.raises(Cancelled, match="stop"):
        sliding_window_logits(image, ROI, [lambda b: b[:, :2], lambda b: b[:, :2]], overlap=0.5, blend="gaussian",
                              batch_size=1, before_batch=token.check, after_batch=after)
    assert added == [1]
