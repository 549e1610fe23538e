"""Weights files: the authors' torch.save format loads safely, code-executing pickles are refused, ours round-trips."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch

from glims.checkpoint import (
    infer_architecture,
    load_checkpoint,
    load_into_model,
    load_state_dict,
    save_checkpoint,
)
from glims.errors import CheckpointError
from glims.fileio import sha256_file
from glims.network import GLIMS

TINY = dict(feature_size=6, img_size=32, num_heads=(1, 2, 2, 4), depths=(2, 2, 2, 2))


@pytest.fixture(scope="module")
def tiny_model() -> GLIMS:
    torch.manual_seed(0)
    return GLIMS(**TINY).eval()


def authors_checkpoint(path, model, prefix="", with_optimizer=True):
    """Write a checkpoint the way the authors' trainer does (numpy best_acc, optimizer and scheduler state)."""
    payload = {
        "epoch": 42,
        "best_acc": np.float64(0.8731),
        "state_dict": {prefix + k: v for k, v in model.state_dict().items()},
    }
    if with_optimizer:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        payload["optimizer"] = opt.state_dict()
        payload["scheduler"] = sched.state_dict()
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("prefix", ["", "module.", "backbone."])
def test_authors_format_loads_with_weights_only_and_prefixes_stripped(tmp_path, tiny_model, prefix):
    path = authors_checkpoint(tmp_path / "model_2_new.pt", tiny_model, prefix)
    loaded = load_checkpoint(path)
    assert loaded.source_format == "authors-torch"
    assert loaded.metadata == {"epoch": 42, "best_acc": pytest.approx(0.8731)}
    fresh = GLIMS(**TINY)
    load_into_model(fresh, load_state_dict(path))
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_numpy_1x_pickle_names_are_accepted(tmp_path, tiny_model):
    """Checkpoints written under numpy 1.x reference numpy.core.multiarray.scalar; those must load too."""
    src = authors_checkpoint(tmp_path / "new.pt", tiny_model, with_optimizer=False)
    old = tmp_path / "old.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(item, data)
    assert load_checkpoint(old).metadata["best_acc"] == pytest.approx(0.8731)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, tiny_model, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"state_dict": tiny_model.state_dict(), "epoch": 1, "hook": _Exploit(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match="refused to load evil.pt.*could run code"):
        load_state_dict(path)
    assert not marker.exists()


def test_our_format_round_trips_bit_exactly(tmp_path, tiny_model):
    arch = {"name": "GLIMS", **tiny_model.config.to_dict()}
    meta_path = save_checkpoint(tmp_path / "tiny", tiny_model.state_dict(), arch, extra={"preset": "brats"})
    weights = tmp_path / "tiny.safetensors"
    meta = json.loads(meta_path.read_text())
    assert meta["sha256"] == sha256_file(weights) and meta["preset"] == "brats" and meta["architecture"] == arch
    stored = {k for k in tiny_model.state_dict() if not k.endswith("relative_position_index")}
    for entry in (meta_path, weights):
        loaded = load_checkpoint(entry)
        assert loaded.metadata["architecture"] == arch
        # The attention index buffers are derived from the window size and not stored (17 MB at full size).
        assert set(loaded.state_dict) == stored
        fresh = GLIMS(**TINY)
        load_into_model(fresh, loaded.state_dict)
        for key, value in tiny_model.state_dict().items():
            assert fresh.state_dict()[key].dtype == value.dtype and torch.equal(fresh.state_dict()[key], value), key
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_fp16_storage_loads_into_an_fp32_model(tmp_path, tiny_model):
    meta_path = save_checkpoint(tmp_path / "half", tiny_model.state_dict(), {"name": "GLIMS"}, dtype=torch.float16)
    sd = load_state_dict(meta_path)
    assert sd["stem.conv.weight"].dtype == torch.float16
    assert "t3.layer.blocks.0.attn.relative_position_index" not in sd
    fresh = GLIMS(**TINY)
    load_into_model(fresh, sd)
    assert torch.allclose(fresh.stem.conv.weight, tiny_model.stem.conv.weight, atol=1e-3)


def test_tampered_weights_fail_the_checksum(tmp_path, tiny_model):
    meta_path = save_checkpoint(tmp_path / "m", tiny_model.state_dict(), {"name": "GLIMS"})
    weights = tmp_path / "m.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256 .* does not match"):
        load_checkpoint(meta_path)


def test_wrong_architecture_gives_one_clear_error(tmp_path, tiny_model):
    path = authors_checkpoint(tmp_path / "brats.pt", tiny_model, with_optimizer=False)
    ct_model = GLIMS(in_channels=1, out_channels=14, **TINY)
    with pytest.raises(CheckpointError) as info:
        load_into_model(ct_model, load_state_dict(path))
    message = str(info.value)
    assert "does not fit the model architecture" in message
    assert "wrong shape" in message and "stem.conv.weight (6, 4, 1, 1, 1) vs model (6, 1, 1, 1, 1)" in message
    bigger = GLIMS(feature_size=12, img_size=32, num_heads=(1, 2, 2, 4), depths=(2, 2, 2, 2))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_into_model(bigger, load_state_dict(path))
    deeper = GLIMS(**{**TINY, "depths": (2, 2, 4, 2)})
    with pytest.raises(CheckpointError, match="missing: t4_pre.layer.blocks.2"):
        load_into_model(deeper, load_state_dict(path))


def test_not_a_checkpoint_and_missing_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read junk.pt"):
        load_state_dict(junk)
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "absent.pt")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        load_state_dict(tmp_path / "other.pt")


def test_architecture_is_inferred_from_a_state_dict(tiny_model):
    arch = infer_architecture(tiny_model.state_dict())
    rebuilt = GLIMS(**arch)
    assert rebuilt.config == tiny_model.config
    with pytest.raises(CheckpointError, match="not a GLIMS checkpoint"):
        infer_architecture({"conv.weight": torch.zeros(1)})
