"""Data-parallel training under ``torchrun``: PyTorch's own engine, unchanged.

``torchrun --nproc-per-node N -m headstart train ...`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set; :func:`init_from_env` joins them into one process
group (gloo on CPUs, NCCL on CUDA GPUs, one GPU per process). Then:

- ``--batch-size`` is the global batch: each process takes ``batch / N`` images a step, so
  N processes take the same steps with the same learning rates as one, and reach the same
  accuracy (measured in ``benchmarks/ddp.py``); a process's shard of each epoch's order is
  :class:`~headstart.training.order.SeededOrder`'s permutation, padded and strided as
  ``DistributedSampler`` does, from a generator every process advances identically.
- The model trains wrapped in ``DistributedDataParallel``, wrapped again whenever a phase
  changes the trainable set (gradual unfreezing, LP-FT): DDP only synchronises the
  parameters that required gradients when it was built.
- Evaluation is exact: each process scores a strided shard of the validation images, and
  the logits are gathered with their indices and de-duplicated, so the samples padding
  adds never count twice, and every process takes the same early-stopping decision.
- Only rank 0 writes the run folder, prints and shows progress bars. Cached features are
  filled shard by shard (cache writes are atomic), then every process reads them all.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from headstart.errors import ConfigError

TIMEOUT = timedelta(hours=2)  # a cold feature pass on a CPU can keep the others waiting


@dataclass(frozen=True)
class World:
    """This process's place among the ranks."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def active(self) -> bool:
        """Whether more than one process trains."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """Whether this process writes, prints and shows progress."""
        return self.rank == 0

    def describe(self, batch: int, bn_policy: str) -> str:
        """The console line of a distributed run."""
        line = (
            f"ddp: {self.size} processes ({self.backend}), global batch {batch} = {self.size} x "
            f"{batch // self.size} per process; learning rates as for one process (same "
            "global batch, same steps)"
        )
        if bn_policy == "train":
            line += (
                "; BatchNorm statistics synchronised across processes (SyncBatchNorm)"
                if self.backend == "nccl"
                else f"; BatchNorm normalises by each process's {batch // self.size} images "
                "(SyncBatchNorm needs NCCL)"
            )
        return line

    def to_dict(self, batch: int) -> dict:
        """For the manifest."""
        return {"processes": self.size, "backend": self.backend, "global_batch": batch,
                "per_process_batch": batch // self.size}  # fmt: skip


def world() -> World:
    """The current process group's view (a single process when none was started)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                 dist.get_backend())  # fmt: skip


def init_from_env(device: str = "auto") -> World:
    """Join the process group ``torchrun`` describes in the environment (no-op for one
    process): NCCL with one GPU per process when the run's ``device`` resolves to CUDA, else
    gloo. Every process decides alike, so a machine with fewer GPUs than processes is
    refused up front rather than left to hang with NCCL on some ranks and gloo on others."""
    from headstart.training.device import resolve_device

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise ConfigError("ConfigError: WORLD_SIZE > 1, but this torch has no distributed support.")
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        here = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        gpus = torch.cuda.device_count()
        if gpus < here:
            raise ConfigError(
                f"ConfigError: torchrun started {here} processes on this machine, but it has "
                f"{gpus} CUDA GPU{'s' if gpus != 1 else ''}, and NCCL trains with one GPU per "
                f"process. Use --nproc-per-node {gpus}, or train on the CPUs with gloo "
                "(--device cpu)."
            )
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return world()


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op for one)."""
    if world().active:
        dist.barrier()


def per_process_batch(batch: int) -> int:
    """Each process's share of the global ``batch``."""
    w = world()
    if batch % w.size:
        raise ConfigError(
            f"ConfigError: --batch-size {batch} is the global batch and must divide among the "
            f"{w.size} processes; use a multiple of {w.size}."
        )
    return batch // w.size


def shard(items: list, w: World | None = None) -> list:
    """This process's strided share of ``items``, padded by wrapping around to a multiple
    of the world size (as ``DistributedSampler`` pads).

    >>> shard(list(range(5)), World(1, 2))
    [1, 3, 0]
    """
    w = w or world()
    if not w.active or not items:
        return items
    total = -(-len(items) // w.size) * w.size
    padded = items + items[: total - len(items)]
    while len(padded) < total:  # fewer items than processes
        padded += items[: total - len(padded)]
    return padded[w.rank :: w.size]


class ShardSampler(torch.utils.data.Sampler[int]):
    """This process's strided, padded share of ``range(n)`` in order (evaluation)."""

    def __init__(self, n: int) -> None:
        self.indices = shard(list(range(n)))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def gather_rows(tensors: dict[str, torch.Tensor], indices: list[int]) -> dict[str, torch.Tensor]:
    """Every process's rows of ``tensors`` (CPU, first dimension = ``indices``) in index
    order, each index once: padded duplicates are dropped."""
    if not world().active:
        return tensors
    parts: list = [None] * world().size
    dist.all_gather_object(parts, (indices, {k: v.cpu() for k, v in tensors.items()}))
    seen: dict[int, tuple[int, int]] = {}
    for p, (idx, _) in enumerate(parts):
        for row, i in enumerate(idx):
            seen.setdefault(i, (p, row))
    order = sorted(seen)
    return {k: torch.stack([parts[seen[i][0]][1][k][seen[i][1]] for i in order]) for k in tensors}


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the processes (itself for one), on the device it came from
    (NCCL reduces GPU tensors only: a CPU count goes through the GPU and back)."""
    if world().active:
        there = value.device
        value = _reducible(value)
        dist.all_reduce(value)
        value = value.to(there)
    return value


def _reducible(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` where the backend reduces: the GPU for NCCL, as it is for gloo."""
    return t.to("cuda", copy=True) if world().backend == "nccl" else t.clone()


def from_main(value: float) -> float:
    """The main process's ``value`` on every process (``value`` itself for one)."""
    if not world().active:
        return value
    t = _reducible(torch.tensor([value], dtype=torch.float64))
    dist.broadcast(t, src=0)
    return float(t.item())


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (Ctrl-C reaches them at different steps)."""
    if not world().active:
        return flag
    t = _reducible(torch.tensor([1.0 if flag else 0.0]))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sync_batchnorm(model: torch.nn.Module, bn_policy: str) -> None:
    """Where BatchNorm layers train (``--bn train``) on NCCL, make them synchronise their
    batch statistics across processes (timm's conversion, which keeps its fused
    BatchNorm+activation layers). gloo cannot (each process then normalises by its own
    share of the batch, as the console says); frozen and ``eval`` BatchNorm are unchanged."""
    w = world()
    if not w.active or bn_policy != "train" or w.backend != "nccl":
        return
    from timm.layers import convert_sync_batchnorm

    for name, child in list(model.named_children()):
        setattr(model, name, convert_sync_batchnorm(child))


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel over its parameters that require gradients now
    (call again after a phase change), or itself for one process."""
    if not world().active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # buffers (BatchNorm statistics) are not re-sent before every forward: frozen and eval
    # BatchNorm never change them, and SyncBatchNorm keeps them equal itself
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    quiet = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=ids, **quiet)
