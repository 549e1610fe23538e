"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by DistributedDataParallel.

``torchrun`` (``python -m torch.distributed.run``) starts the processes and tells each its place through the
environment: ``WORLD_SIZE`` (processes in all), ``RANK`` (this process, 0 … WORLD_SIZE-1) and ``LOCAL_RANK`` (its
index on this node, which picks its GPU). ``session`` joins the process group when those are set (NCCL for CUDA,
gloo for the CPU) and leaves it at the end; without them, or with a world of one, nothing is set up and every
helper here is a no-op, so a single-process run behaves exactly as before.

The division of labour (see ``docs/DISTRIBUTED.md``): every rank loads the cases, draws its own batches (its
random stream is seeded by ``(seed, epoch, rank)``) and trains a replica of the model; DDP averages the gradients,
so the replicas stay equal. Only rank 0 validates, writes files and reports progress; the decisions that steer
the loop (the epoch plan of a time budget, running out of time, early stopping) are taken on rank 0 or agreed by
all ranks, so every rank runs the same number of steps.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = [
    "world_size",
    "rank",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "session",
    "local_device",
    "wrap_model",
    "stream_key",
    "mean_across_ranks",
    "any_rank",
    "from_main",
    "barrier",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

COLLECTIVE_TIMEOUT = timedelta(minutes=60)
"""How long a rank waits at a collective (e.g. while rank 0 validates) before the run is declared hung."""


def launched_by_torchrun() -> bool:
    """True when the environment says this process is one of several started by ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0, and in a single-process run: the one process that writes files and reports progress."""
    return rank() == 0


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


@contextmanager
def session(device: str = "auto") -> Iterator[bool]:
    """Join the ``torchrun`` process group for the duration of the block (no-op outside ``torchrun``).

    Args:
        device: the user's device choice (``auto``, ``cpu``, ``cuda`` …): NCCL when it resolves to CUDA (each
            process then uses GPU ``LOCAL_RANK``), else gloo.

    Yields:
        True when running distributed.

    Raises:
        ConfigError: torchrun started more processes on a node than it has GPUs.
    """
    if not launched_by_torchrun() or is_distributed():
        yield is_distributed()
        return
    from ..inference import resolve_device

    use_cuda = resolve_device(device).type == "cuda"
    if use_cuda:
        if _local_rank() >= torch.cuda.device_count():
            raise ConfigError(
                f"process LOCAL_RANK={_local_rank()} has no GPU (this node has "
                f"{torch.cuda.device_count()}); start at most that many processes per node"
            )
        torch.cuda.set_device(_local_rank())
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    logger.info("rank %d of %d (local rank %d, %s backend)", rank(), world_size(), _local_rank(), backend)
    try:
        yield True
    finally:
        # DistributedDataParallel wrappers sit in reference cycles (their hooks point back at them), so they can
        # outlive the block until the interpreter shuts down; their reducers then destroy gloo state while C++
        # threads still run, and the process aborts after its work is done ("terminate called without an active
        # exception", about one run in 15 here). Collect them while the group and the interpreter are whole.
        gc.collect()
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's device: CUDA device ``LOCAL_RANK`` when distributed on GPUs, else ``device`` unchanged."""
    if is_distributed() and device.type == "cuda":
        return torch.device("cuda", _local_rank())
    return device


def wrap_model(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``net`` in DistributedDataParallel when distributed (weights broadcast from rank 0), else ``net`` itself.

    Train through the returned module; validate and save ``net`` (its state_dict carries no ``module.`` prefix).
    GLIMS holds parameters its forward pass never uses (kept from the reference architecture so that its
    checkpoints load), hence ``find_unused_parameters``: without it the second step would fail.
    """
    if not is_distributed():
        return net
    device_ids: list[int] | None = None
    if device.type == "cuda":
        # torch's stubs say int, but a device named without an index ("cuda") has index None.
        device_ids = [device.index if device.index is not None else _local_rank()]  # type: ignore[redundant-expr]
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=True)


def stream_key(seed: int, epoch: int) -> list[int]:
    """Seed of an epoch's data/augmentation stream: ``(seed, epoch)`` alone, ``(seed, epoch, rank)`` when
    distributed, so that ranks draw different windows."""
    return [seed, epoch, rank()] if is_distributed() else [seed, epoch]


def _collective_device() -> torch.device:
    """Where small tensors for collectives must live: the process's GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_across_ranks(value: float) -> float:
    """Mean of ``value`` over all ranks (``value`` itself when not distributed). A collective: call on every rank."""
    if not is_distributed():
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / world_size()


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (e.g. one rank ran out of time). A collective: call on every rank."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (picklable values). A collective: call on every rank."""
    if not is_distributed():
        return value
    holder: list[Any] = [value if is_main_process() else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    """Wait until every rank arrives (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()
