"""The CPU fast path computes the same function as the reference path, block by block and end to end."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from glims.network import GLIMS
from glims.network.conv_blocks import CSAB, DACB, DMSU, ConvNormAct, DepthwiseUnit, OutputHead
from glims.network import fast_cpu
from glims.network.fast_cpu import (
    Moments,
    Workspace,
    channel_moments,
    column_max,
    depthwise_conv,
    grouped_conv,
    natural_blocks,
    norm_act_block_,
    normalize_,
    to_channels_last,
    wide_broadcast,
)

TINY = dict(feature_size=6, num_heads=(1, 2, 2, 4), depths=(2, 2, 2, 2))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-default weights everywhere (PReLU slopes and norm affines included), so every parameter matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (0.2 if p.numel() == 1 else 0.0))
    return module.eval()


def _both_paths(module: torch.nn.Module, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        for m in module.modules():
            if hasattr(m, "fast"):
                m.fast = False
        reference = module(*inputs)
        for m in module.modules():
            if hasattr(m, "fast"):
                m.fast = True
        fast = module(*inputs)
    return reference, fast


@pytest.mark.parametrize(
    "make, shapes",
    [
        (lambda: DepthwiseUnit(6, 1), [(2, 6, 12, 12, 12)]),
        (lambda: DepthwiseUnit(6, 2), [(2, 6, 12, 12, 12)]),
        (lambda: DepthwiseUnit(6, 3), [(2, 6, 12, 12, 12)]),
        (lambda: DepthwiseUnit(6, 3), [(1, 6, 10, 8, 7)]),  # sizes the phases do not divide: generic kernel
        (lambda: ConvNormAct(6, 12, 1), [(2, 6, 8, 8, 8)]),
        (lambda: ConvNormAct(6, 12, 2, stride=2), [(2, 6, 8, 8, 8)]),
        (lambda: ConvNormAct(12, 6, 2, stride=2, transposed=True), [(2, 12, 4, 4, 4)]),
        (lambda: DACB(6, 12), [(2, 6, 12, 12, 12)]),
        (lambda: DMSU(12, 6), [(2, 12, 6, 6, 6), (2, 6, 12, 12, 12)]),
        (lambda: CSAB(6), [(2, 6, 8, 8, 8)]),
        (lambda: OutputHead(6, 3), [(2, 6, 8, 8, 8)]),
    ],
)
def test_each_block_fast_path_equals_its_reference_forward(make, shapes):
    torch.manual_seed(0)
    block = _randomize(make(), seed=1)
    inputs = [torch.randn(s) * 2 + 0.5 for s in shapes]
    reference, fast = _both_paths(block, *inputs)
    assert fast.shape == reference.shape
    assert fast.is_contiguous(memory_format=torch.channels_last_3d)
    scale = reference.abs().max().item()
    assert (fast - reference).abs().max().item() <= 2e-6 * max(scale, 1.0), (fast - reference).abs().max()


@pytest.mark.parametrize("dilation", [2, 3])
def test_space_to_batch_depthwise_convolution_equals_the_dilated_convolution(dilation):
    torch.manual_seed(dilation)
    x = to_channels_last(torch.randn(2, 5, 12, 18, 6))
    weight = torch.randn(5, 1, 3, 3, 3)
    expected = F.conv3d(x.contiguous(), weight, padding=dilation, dilation=dilation, groups=5)
    flat, natural = depthwise_conv(x, weight, dilation, Workspace())
    assert flat.shape == (2, 12 * 18 * 6, 5) and flat.is_contiguous()
    out = torch.empty(2, 12, 18, 6, 5)
    out.view(natural.shape).copy_(natural)
    assert torch.allclose(out.permute(0, 4, 1, 2, 3), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dilation", [2, 3])
def test_depthwise_convolution_on_sizes_the_dilation_does_not_divide(dilation):
    # 32^3 windows at dilation 3: zero-padded to a multiple, space-to-batch, the padding's outputs dropped
    torch.manual_seed(10 + dilation)
    x = to_channels_last(torch.randn(2, 5, 13, 16, 7))
    weight = torch.randn(5, 1, 3, 3, 3)
    expected = F.conv3d(x.contiguous(), weight, padding=dilation, dilation=dilation, groups=5)
    ws = Workspace()
    for _ in range(2):  # the second call reuses the workspace's buffers (their padding must be zero again)
        flat, natural = depthwise_conv(x, weight, dilation, ws)
        assert flat.shape == (2, 13 * 16 * 7, 5) and flat.is_contiguous()
        dest = torch.full((2, 13 * 16 * 7, 5), float("nan"))
        for i, start, stop, block in natural_blocks(natural):
            dest[i, start:stop].view(block.shape).copy_(block)
        got = dest.view(2, 13, 16, 7, 5).permute(0, 4, 1, 2, 3)
        assert torch.allclose(got, expected, atol=1e-5, rtol=0)
        assert torch.allclose(flat.view(2, 13, 16, 7, 5).permute(0, 4, 1, 2, 3), expected, atol=1e-5, rtol=0)
        padded = [-(-n // dilation) * dilation for n in (13, 16, 7)]  # the phases' padding must be zero again
        ws.get("depthwise.phases", (2 * math.prod(padded) * 5,), torch.float32, x.device).fill_(7.0)


def test_channel_moments_are_float64_accurate_even_with_a_large_mean():
    torch.manual_seed(4)
    x = torch.randn(2, 300_000, 3) * torch.tensor([1.0, 0.01, 5.0]) + torch.tensor([1000.0, -3.0, 0.0])
    mean, var = channel_moments(x, Workspace())
    x64 = x.double()
    assert mean.shape == var.shape == (2, 1, 3)
    assert torch.allclose(mean.double(), x64.mean(1, keepdim=True), rtol=1e-7, atol=1e-6)
    assert torch.allclose(var.double(), x64.var(1, keepdim=True, unbiased=False), rtol=1e-5, atol=0)
    bf16_mean, bf16_var = channel_moments(x[..., 1:].bfloat16(), Workspace())
    ref = x[..., 1:].bfloat16().double()
    assert torch.allclose(bf16_mean.double(), ref.mean(1, keepdim=True), rtol=1e-6, atol=1e-6)
    assert torch.allclose(bf16_var.double(), ref.var(1, keepdim=True, unbiased=False), rtol=1e-5)


def test_moments_of_blocks_in_any_order_and_size_equal_float64():
    torch.manual_seed(7)
    x = torch.randn(2, 5000, 24) * torch.linspace(0.01, 4.0, 24) + torch.linspace(-300.0, 50.0, 24)
    moments = Moments(2, 24, Workspace())
    # Uneven blocks in shuffled order: some fold into wide rows (multiples of 16 rows), some do not.
    bounds = [0, 160, 161, 1000, 2331, 4096, 5000]
    pieces = [(i, a, b) for i in range(2) for a, b in zip(bounds, bounds[1:])]
    for k in torch.randperm(len(pieces)).tolist():
        i, a, b = pieces[k]
        moments.add(i, x[i, a:b])
    mean, var = moments.result()
    x64 = x.double()
    assert torch.allclose(mean.double(), x64.mean(1, keepdim=True), rtol=1e-7, atol=1e-6)
    assert torch.allclose(var.double(), x64.var(1, keepdim=True, unbiased=False), rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="no rows"):
        Moments(1, 24, Workspace()).result()


def test_column_max_is_the_exact_maximum_over_voxels():
    torch.manual_seed(8)
    x3 = torch.randn(2, 4096, 24)
    assert torch.equal(column_max(x3), x3.amax(1))
    odd = torch.randn(1, 999, 5)  # cannot fold into wide rows
    assert torch.equal(column_max(odd), odd.amax(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("into_buffer", [True, False])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_grouped_convolution_equals_conv3d_bit_for_bit(monkeypatch, into_buffer, dilation, dtype):
    if into_buffer and not fast_cpu._conv_into_buffer_works(dtype):
        pytest.skip("this PyTorch cannot write a convolution into a given buffer")
    monkeypatch.setitem(fast_cpu._into_buffer_works, dtype, into_buffer)
    monkeypatch.setattr(fast_cpu, "_INTO_BUFFER_MIN_ELEMENTS", 0)  # this small case stands for a large output
    torch.manual_seed(dilation)
    x = to_channels_last(torch.randn(2, 6, 9, 10, 11).to(dtype))
    weight = torch.randn(6, 1, 3, 3, 3).to(dtype)
    ws = Workspace()
    out = grouped_conv(x, weight, dilation, dilation, 6, ws, "test.out")
    expected = F.conv3d(x, weight, None, padding=dilation, dilation=dilation, groups=6)
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    # Written into the workspace (no fresh memory) exactly when the in-place form is used.
    assert (ws.nbytes() > 0) == into_buffer
    again = grouped_conv(x, weight * 2, dilation, dilation, 6, ws, "test.out")
    assert torch.equal(again, 2 * expected)  # the buffer is cleared, not accumulated into
    monkeypatch.setattr(fast_cpu, "_INTO_BUFFER_MIN_ELEMENTS", expected.numel() + 1)
    small = Workspace()  # an output below the threshold comes from fresh memory, with the same values
    assert torch.equal(grouped_conv(x, weight, dilation, dilation, 6, small, "test.out"), expected)
    assert small.nbytes() == 0


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_natural_blocks_cover_every_voxel_once_in_natural_order(dilation):
    torch.manual_seed(9)
    x = to_channels_last(torch.randn(2, 5, 12, 18, 6))
    weight = torch.randn(5, 1, 3, 3, 3)
    flat, natural = depthwise_conv(x, weight, dilation, Workspace())
    expected = F.conv3d(x.contiguous(), weight, padding=dilation, dilation=dilation, groups=5)
    dest = torch.full((2, 12 * 18 * 6, 5), float("nan"))
    stops = []
    for i, start, stop, block in natural_blocks(natural):
        assert torch.isnan(dest[i, start:stop]).all()  # never written twice
        dest[i, start:stop].view(block.shape).copy_(block)
        stops.append(stop)
    assert stops[-1] == 12 * 18 * 6
    got = dest.view(2, 12, 18, 6, 5).permute(0, 4, 1, 2, 3)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_normalize_in_place_equals_group_norm_then_prelu():
    torch.manual_seed(5)
    x = torch.randn(2, 4, 6, 7, 8) * 3 + 1
    weight, bias, slope = torch.randn(4), torch.randn(4), 0.3
    expected = F.prelu(F.group_norm(x, 4, weight, bias, eps=1e-5), torch.tensor([slope]))
    x3 = to_channels_last(x).permute(0, 2, 3, 4, 1).reshape(2, -1, 4).clone()
    mean, var = channel_moments(x3, Workspace())
    out = normalize_(x3, mean, var, 1e-5, weight, bias, slope)
    assert out.data_ptr() == x3.data_ptr()
    assert torch.allclose(out.view(2, 6, 7, 8, 4).permute(0, 4, 1, 2, 3), expected, atol=2e-6)


@pytest.mark.parametrize(
    "shape, per_sample",
    [
        ((3, 4096, 12), True),  # several samples' rows, (B', 1, C) values: widened
        ((4096, 24), False),  # one sample's rows, (C,) values: widened
        ((2, 8, 16, 16, 12), True),  # a natural block, (B', 1, 1, 1, C) values: widened
        ((2, 100, 12), True),  # 100 rows are not a multiple of the fold (32): left narrow
        ((2, 64, 7), True),  # 7 channels: fold 54 does not divide 64 rows: left narrow
    ],
)
def test_norm_act_on_wide_rows_equals_the_per_channel_broadcast_bit_for_bit(shape, per_sample):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(shape, generator=gen) * 2 + 0.5
    c = shape[-1]
    values_shape = (shape[0], *([1] * (len(shape) - 2)), c) if per_sample else (c,)
    scale, shift = torch.randn(values_shape, generator=gen), torch.randn(values_shape, generator=gen)
    expected = F.leaky_relu(torch.addcmul(shift, x, scale), 0.2)
    widened = wide_broadcast(x, x, scale, shift)
    fold = 384 // c
    rows_per_sample = x.numel() // (c * (shape[0] if per_sample else 1))
    assert (widened is not None) == (rows_per_sample % fold == 0)
    if widened is not None:
        assert widened[0].shape[-1] == fold * c and widened[2].shape[-1] == fold * c
    out = torch.empty_like(x)
    assert norm_act_block_(x, out, scale, shift, 0.2) is out
    assert torch.equal(out, expected)
    norm_act_block_(x, x, scale, shift, 0.2)  # in place
    assert torch.equal(x, expected)


def test_wide_rows_are_refused_for_strided_blocks_and_mismatched_values():
    x = torch.randn(2, 64, 12)
    assert wide_broadcast(x[:, ::2], torch.empty(2, 32, 12), torch.randn(12)) is None  # not contiguous
    assert wide_broadcast(x, x, torch.randn(3, 1, 12)) is None  # values for another number of samples
    assert wide_broadcast(x, x, torch.randn(2, 64, 12)) is None  # not per channel
    assert wide_broadcast(x, x, torch.randn(2, 12)) is None  # broadcasts over samples, not over rows


def _fast_and_reference_and_float64(net: GLIMS, x: torch.Tensor):
    with torch.no_grad():
        net.fast_path = False
        reference = net(x)
        net.fast_path = True
        fast = net(x)
        exact = copy.deepcopy(net).double()
        exact.fast_path = False
        exact = exact(x.double())
    return reference, fast, exact


def test_whole_network_fast_path_is_as_accurate_as_the_reference_path():
    torch.manual_seed(6)
    net = GLIMS(in_channels=4, out_channels=3, img_size=32, **TINY).eval()
    x = torch.randn(2, 4, 32, 32, 32)
    reference, fast, exact = _fast_and_reference_and_float64(net, x)
    assert fast.shape == (2, 3, 32, 32, 32) and fast.dtype == torch.float32 and fast.is_contiguous()
    ref_error = (reference.double() - exact).abs().max().item()
    fast_error = (fast.double() - exact).abs().max().item()
    # Both are float32 roundings of the same function: the fast path is no further from float64 than ~2x the
    # reference's own rounding error, and both are far inside the 1e-3 contract on the logits.
    assert fast_error <= 2 * ref_error + 1e-6, (fast_error, ref_error)
    assert (fast - reference).abs().max().item() < 1e-3
    assert net._workspace.nbytes() > 0
    net.release_workspace()
    assert net._workspace.nbytes() == 0


def test_workspace_made_in_inference_mode_is_usable_under_no_grad_and_back():
    torch.manual_seed(10)
    net = GLIMS(in_channels=4, out_channels=3, img_size=32, **TINY).eval()
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.inference_mode():
        first = net(x)
    with torch.no_grad():
        second = net(x)
    with torch.inference_mode():
        third = net(x)
    assert torch.equal(first, second) and torch.equal(second, third)


def test_fast_path_in_training_mode_without_autograd_returns_the_four_heads():
    torch.manual_seed(7)
    net = GLIMS(in_channels=2, out_channels=2, img_size=32, **TINY).train()
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        net.fast_path = False
        reference = net(x)
        net.fast_path = True
        fast = net(x)
    assert [o.shape for o in fast] == [o.shape for o in reference]
    for f, r in zip(fast, reference):
        assert f.is_contiguous() and (f - r).abs().max().item() < 1e-3


def test_autograd_takes_the_reference_path_so_training_gradients_are_the_reference_ones():
    torch.manual_seed(8)
    net = GLIMS(in_channels=4, out_channels=3, img_size=32, **TINY).train()
    x = torch.randn(1, 4, 32, 32, 32)
    grads = {}
    for fast in (False, True):
        net.zero_grad()
        net.fast_path = fast
        outputs = net(x)
        sum(o.square().mean() for o in outputs).backward()
        grads[fast] = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) > 100
    for name, g in grads[False].items():
        assert torch.equal(grads[True][name], g), name


def test_switches_do_not_touch_the_state_dict_and_bad_precisions_are_refused():
    net = GLIMS(img_size=32, **TINY)
    keys = list(net.state_dict())
    assert net.fast_path is True and net.precision == "float32"
    net.fast_path = False
    assert not any(m.fast for m in net.modules() if hasattr(m, "fast"))
    net.precision = "bfloat16"
    assert list(net.state_dict()) == keys
    with pytest.raises(ValueError, match="precision"):
        net.precision = "float16"


def test_bfloat16_is_opt_in_and_the_same_under_cpu_autocast():
    torch.manual_seed(9)
    net = GLIMS(in_channels=4, out_channels=3, img_size=32, **TINY).eval()
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        fp32 = net(x)
        net.precision = "bfloat16"
        bf16 = net(x)
        net.precision = "float32"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = net(x)
    assert bf16.dtype == autocast.dtype == torch.float32
    assert torch.equal(bf16, autocast)
    assert not torch.equal(bf16, fp32)
    assert torch.corrcoef(torch.stack([bf16.flatten(), fp32.flatten()]))[0, 1] > 0.9
