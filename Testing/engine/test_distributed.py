"""Training and fine-tuning under torchrun: two CPU processes (gloo) train one model with averaged gradients.

The runs are real ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m glims ...`` launches on
small synthetic cases with a tiny network, one optimiser step per epoch and one torch thread per process. The
helpers that make the ranks agree are also run on their own in two processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glims.catalog import load_catalog
from glims.checkpoint import load_checkpoint, load_into_model
from glims.fileio import sha256_file
from glims.progress import parse_protocol_line
from glims.synth import generate_case, write_case
from glims.training.data import InputMatcher, discover_cases, load_case, split_cases
from glims.training.loss import deep_supervision_loss
from glims.training.trainer import TrainConfig, build_model, draw_batch, torch_seed, training_preprocessing

from tiny_models import TINY_ARCH, register_tiny_model

REPO = Path(__file__).resolve().parents[2]
SEED = 7
RUN_FILES = {"best.json", "best.safetensors", "config.json", "curves.png", "log.csv", "log.jsonl", "split.json",
             "state.pt"}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """Three small synthetic cases (40^3 voxels of 4 mm): two train, one validates."""
    root = tmp_path_factory.mktemp("synth")
    for index in range(3):
        write_case(generate_case(200 + index, (40, 40, 40), 4.0), root, f"SYN-{index}")
    return root


def torchrun(*args: str, home: Path | None = None) -> tuple[list[dict], str]:
    """Run ``glims ARGS`` as two gloo processes; (protocol events printed, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "GLIMSSegmenter"), "OMP_NUM_THREADS": "1"}
    if home is not None:
        env["GLIMS_HOME"] = str(home)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "glims", *args, "--progress", "json", "--threads", "1", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    events = [parse_protocol_line(line) for line in proc.stdout.splitlines()]
    assert all(e is not None for e in events), proc.stdout
    return events, proc.stderr


AGREEMENT_SCRIPT = """
import json, sys
from glims.training import distributed
with distributed.session("cpu") as parallel:
    me = distributed.rank()
    result = {"parallel": parallel, "world": distributed.world_size(), "main": distributed.is_main_process(),
              "stream": distributed.stream_key(5, 3), "mean": distributed.mean_across_ranks(1.0 + 2 * me),
              "any": distributed.any_rank(me == 1), "none": distributed.any_rank(False),
              "plan": distributed.from_main(10 + me)}
    distributed.barrier()
with open(f"{sys.argv[1]}/rank{me}.json", "w") as handle:
    json.dump(result, handle)
"""


def test_ranks_agree_on_what_steers_the_loop(tmp_path):
    script = tmp_path / "agree.py"
    script.write_text(AGREEMENT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO / "GLIMSSegmenter"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["main"] for r in ranks] == [True, False] and all(r["parallel"] and r["world"] == 2 for r in ranks)
    assert [r["stream"] for r in ranks] == [[5, 3, 0], [5, 3, 1]]  # ranks draw different windows
    assert all(r["mean"] == 2.0 and r["any"] is True and r["none"] is False and r["plan"] == 10 for r in ranks)
    # outside torchrun the helpers change nothing
    from glims.training import distributed

    assert distributed.stream_key(5, 3) == [5, 3] and distributed.from_main(11) == 11
    assert distributed.mean_across_ranks(3.0) == 3.0 and distributed.is_main_process()


def epochs_done(events: list[dict]) -> list[int]:
    return [e["data"]["epoch"] for e in events if e["type"] == "progress" and "done:" in e["message"]]


def one_step_by_hand(config: TrainConfig, ranks: list[int]) -> dict[str, torch.Tensor]:
    """The weights after the first step of ``config`` when the gradients of the streams of ``ranks`` are averaged
    (the trainer's own data, loss and optimiser; computed here in one process)."""
    torch.manual_seed(torch_seed(config.seed, 0, purpose=0))
    preset, preprocessing = training_preprocessing(config)
    matcher = InputMatcher.from_preset(preset)
    net, _ = build_model(config, len(matcher.inputs), len(preset["output"]["channels"]))
    titles = [i.title.split(" (")[0] for i in matcher.inputs]
    train_files, _ = split_cases(discover_cases(config.cases, matcher, config.label_convention), config.val_fraction,
                                 config.seed)
    train_cases = [load_case(c, preprocessing, list(net.img_size), titles) for c in train_files]
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    grads = []
    for rank in ranks:
        rng = np.random.default_rng([config.seed, 0, rank])
        torch.manual_seed(torch_seed(config.seed, 0))
        images, targets = draw_batch(train_cases, list(net.img_size), config.batch_size, rng, config)
        net.zero_grad(set_to_none=True)
        deep_supervision_loss(net(images), targets, config.ce).backward()
        grads.append([None if p.grad is None else p.grad.clone() for p in net.parameters()])
    for index, parameter in enumerate(net.parameters()):  # parameters the forward pass never uses have none
        if grads[0][index] is not None:
            parameter.grad = sum(g[index] for g in grads) / len(grads)
    optimizer.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def share_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Share of weight elements equal to 1e-6 (Adam's first step is nearly ±lr, so only ties in sign agree)."""
    same = sum(int(torch.isclose(a[k].float(), b[k].float(), rtol=0, atol=1e-6).sum()) for k in a)
    return same / sum(v.numel() for v in a.values())


def test_train_under_torchrun_averages_gradients_writes_once_and_resumes(cases, tmp_path, one_torch_thread):
    out = tmp_path / "run"
    arguments = ["train", "--cases", str(cases), "--out", str(out), "--steps-per-epoch", "1", "--batch-size", "1",
                 "--feature-size", str(TINY_ARCH["feature_size"]), "--num-heads", *map(str, TINY_ARCH["num_heads"]),
                 "--seed", str(SEED)]
    events, _ = torchrun(*arguments, "--epochs", "1")
    # only rank 0 reported: one result, each epoch once, progress in order
    assert [e["type"] for e in events].count("result") == 1 and epochs_done(events) == [1]
    assert {p.name for p in out.iterdir()} == RUN_FILES | {"last-e0001.json", "last-e0001.safetensors"}

    # both ranks trained: the first step applied the mean of rank 0's and rank 1's gradients
    config = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    saved = load_checkpoint(out / "last-e0001.safetensors").state_dict
    assert not any(k.startswith("module.") for k in saved)
    averaged, rank0_alone = one_step_by_hand(config, [0, 1]), one_step_by_hand(config, [0])
    assert share_equal(saved, averaged) > 0.999
    assert share_equal(saved, rank0_alone) < 0.95  # a single process would have stepped elsewhere

    # --resume under torchrun continues from rank 0's state
    events, _ = torchrun(*arguments, "--epochs", "2", "--resume")
    assert epochs_done(events) == [2]
    history = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2] and all("val_dice_mean" in row for row in history)
    assert {p.name for p in out.iterdir()} == RUN_FILES | {"last-e0002.json", "last-e0002.safetensors"}
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 2 and state["best_epoch"] in (1, 2)
    assert json.loads((out / "best.json").read_text())["training"]["epoch"] == state["best_epoch"]


def test_finetune_under_torchrun_registers_exactly_one_version(cases, tmp_path):
    home = tmp_path / "home"
    base = register_tiny_model(home, "brats", model_id="base")
    base_sha = sha256_file(base.weights[0].path)
    before = load_catalog(home).ids()
    # two steps (the second fails if DDP mishandles a parameter); with --minutes each step agrees on the budget
    events, _ = torchrun("finetune", "-m", "base", "--name", "site-ddp", "--cases", str(cases), "--epochs", "2",
                         "--steps-per-epoch", "1", "--minutes", "60", "--patience", "0", home=home)
    results = [e for e in events if e["type"] == "result"]
    assert len(results) == 1 and results[0]["outputs"]["model"] == "site-ddp@1.0.0"
    assert epochs_done(events) == [1, 2]

    catalog = load_catalog(home)  # valid
    assert set(catalog.ids()) - set(before) == {"site-ddp"}
    versions = [m for m in catalog.models if m.id == "site-ddp"]
    assert len(versions) == 1 and versions[0].version == "1.0.0"
    tuned = versions[0]
    assert sha256_file(tuned.weights[0].path) == tuned.weights[0].sha256
    assert tuned.provenance["base_model"] == "base@1.0.0" and len(tuned.provenance["train_cases"]) == 2
    assert sha256_file(base.weights[0].path) == base_sha
    runs = [r for r in (home / "finetune").iterdir() if not r.name.startswith(".")]  # not glims's marker and lock
    assert [r.name for r in runs] == ["site-ddp-1.0.0"] and (runs[0] / "registered.json").is_file()
    net = load_checkpoint(tuned.weights[0].path)
    assert not any(k.startswith("module.") for k in net.state_dict)
    from glims.network import GLIMS

    load_into_model(GLIMS(in_channels=4, out_channels=3, **TINY_ARCH), net.state_dict)
