"""The GLIMS network: size, state_dict contract with the reference, shapes, and numerics of the quirky parts."""

from __future__ import annotations

import re

import pytest
import torch

from glims.network import GLIMS
from glims.network.conv_blocks import CSAB
from glims.network.swin import PatchExpanding, PatchMerging, SwinStage, relative_position_index

TINY = dict(feature_size=6, img_size=32, num_heads=(1, 2, 2, 4), depths=(2, 2, 2, 2))


def n_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_parameter_counts_match_the_reference():
    assert n_trainable(GLIMS(in_channels=4, out_channels=3, feature_size=24)) == 47_163_349
    assert n_trainable(GLIMS(in_channels=1, out_channels=14)) == 47_167_281


def test_state_dict_keys_shapes_and_order_equal_the_reference_listing(spec_keys_file):
    expected = [tuple(line.split()) for line in spec_keys_file.read_text().splitlines() if line.strip()]
    ours = [(k, "[" + ",".join(map(str, v.shape)) + "]") for k, v in GLIMS().state_dict().items()]
    assert len(expected) == 739
    assert ours == expected
    buffers = [k for k in GLIMS().state_dict() if k.endswith("relative_position_index")]
    assert len(buffers) == 18


def test_eval_forward_returns_logits_and_train_forward_returns_deep_supervision():
    torch.manual_seed(0)
    net = GLIMS(in_channels=4, out_channels=3, **TINY)
    x = torch.randn(2, 4, 32, 32, 32)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 32, 32, 32)
    assert torch.isfinite(out).all()
    net.train()
    outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(2, 3, 32, 32, 32), (2, 3, 16, 16, 16), (2, 3, 8, 8, 8), (2, 3, 4, 4, 4)]
    # At 64^3 the bottleneck still has 2^3 tokens, so its attention (and bias table) gets gradients.
    big = GLIMS(in_channels=4, out_channels=3, **{**TINY, "img_size": 64}).train()
    sum(o.mean() for o in big(torch.randn(1, 4, 64, 64, 64))).backward()
    net = big
    # Parameters that the reference never uses in a forward pass (documented quirks) get no gradient; all others do.
    dead = {n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()}
    # (the unused DACB PReLU and the degenerate CSAB spatial gate, see the spec's section 6).
    unused = re.compile(r"(\.l[12]\.prelu\.weight|\.SpatialGate\.spatial\.\w+\.weight)$")
    assert dead and all(unused.search(n) for n in dead), sorted(n for n in dead if not unused.search(n))[:5]
    assert not any(n.endswith("SpatialGate.spatial.norm.bias") for n in dead)


def test_input_of_the_wrong_size_is_refused_with_a_clear_message():
    net = GLIMS(**TINY).eval()
    with pytest.raises(ValueError, match="expects input"):
        net(torch.zeros(1, 4, 64, 64, 64))
    with pytest.raises(ValueError, match="divisible by 32"):
        GLIMS(img_size=100)
    with pytest.raises(ValueError, match="num_heads and depths must be 4 numbers each"):
        GLIMS(**{**TINY, "num_heads": (1, 2)})


def test_swin_stage_matches_monai_swin_blocks_with_padding_shift_and_small_windows():
    monai_swin = pytest.importorskip("monai.networks.nets.swin_unetr")
    torch.manual_seed(1)
    for size in (12, 8, 6, 3):  # padded + shifted windows (12, 8), global attention with truncated bias (6, 3)
        stage = SwinStage(dim=48, depth=2, num_heads=3, grid=(size,) * 3).eval()
        for p in stage.parameters():
            torch.nn.init.normal_(p, std=0.2)
        blocks = [
            monai_swin.SwinTransformerBlock(48, 3, (7, 7, 7), shift, act_layer="PRELU").eval()
            for shift in ((0, 0, 0), (3, 3, 3))
        ]
        for i, blk in enumerate(blocks):
            blk.load_state_dict(stage.layer.blocks[i].state_dict())
        x = torch.randn(1, 48, size, size, size)
        with torch.no_grad():
            ours = stage(x)
            ref = (x.flatten(2) + stage.layer.position_embeddings).view_as(x).permute(0, 2, 3, 4, 1)
            win, sft = monai_swin.get_window_size((size,) * 3, (7, 7, 7), (3, 3, 3))
            padded = [-(-size // w) * w for w in win]
            mask = monai_swin.compute_mask(padded, win, sft, x.device)
            for blk in blocks:
                ref = blk(ref, mask)
            ref = torch.nn.functional.layer_norm(ref, [48]).permute(0, 4, 1, 2, 3)
        assert torch.allclose(ours, ref, atol=1e-5), (size, (ours - ref).abs().max())


def test_relative_position_index_is_the_7_cubed_table():
    idx = relative_position_index((7, 7, 7))
    assert idx.shape == (343, 343)
    assert idx.min() == 0 and idx.max() == 13**3 - 1
    assert idx[0, 0] == idx[171, 171] == 6 * 169 + 6 * 13 + 6  # zero offset sits in the middle of the table


def test_patch_merging_uses_the_reference_sub_voxel_order():
    merge = PatchMerging(dim=1)
    # Each voxel holds its own offset code 4d + 2h + w inside its 2x2x2 cell.
    d, h, w = torch.meshgrid(torch.arange(4), torch.arange(4), torch.arange(4), indexing="ij")
    x = ((d % 2) * 4 + (h % 2) * 2 + (w % 2)).float()[None, ..., None]
    captured = {}
    merge.norm.register_forward_hook(lambda m, inp, out: captured.setdefault("cat", inp[0]))
    merge(x)
    assert captured["cat"][0, 0, 0, 0].tolist() == [0, 4, 2, 1, 5, 2, 1, 7]


def test_patch_expanding_places_sub_voxels_h_w_d():
    expand = PatchExpanding(dim=16)
    with torch.no_grad():
        expand.expand.weight.zero_()
        for k in range(8):  # output channel block k (of size 8) carries the value k
            expand.expand.weight[k * 8 : (k + 1) * 8, 0] = k
        expand.norm_layer.weight.fill_(1)
        expand.norm_layer.bias.zero_()
    captured = {}
    expand.norm_layer.register_forward_hook(lambda m, inp, out: captured.setdefault("y", inp[0]))
    x = torch.zeros(1, 1, 1, 1, 16)
    x[..., 0] = 1
    expand(x)
    y = captured["y"][0, ..., 0]  # (2, 2, 2) indexed (d, h, w)
    for p1 in range(2):
        for p2 in range(2):
            for p3 in range(2):
                assert y[p3, p1, p2] == p1 * 4 + p2 * 2 + p3


def test_csab_constant_spatial_gate_equals_the_literal_computation():
    torch.manual_seed(2)
    gate = CSAB(8)
    with torch.no_grad():
        for p in gate.parameters():
            torch.nn.init.normal_(p)
    x = torch.randn(2, 8, 10, 10, 10) * 3
    literal = gate.SpatialGate.spatial.literal_gate(x)
    assert torch.equal(literal, gate.SpatialGate.spatial.constant_gate().expand_as(literal))
    expected = (x * gate.ChannelGate(x)) * literal
    assert torch.equal(gate(x), expected)


def test_full_size_network_runs_a_96_cubed_window():
    torch.manual_seed(3)
    net = GLIMS().eval()
    with torch.no_grad():
        out = net(torch.randn(1, 4, 96, 96, 96))
    assert out.shape == (1, 3, 96, 96, 96) and torch.isfinite(out).all()
