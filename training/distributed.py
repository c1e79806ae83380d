"""Distributed data parallel under torchrun: who this process is, the process group, and the
shard of each epoch's examples it trains on.

`torchrun --standalone --nproc-per-node=N -m training ...` starts N processes with RANK, WORLD_SIZE
and LOCAL_RANK set; each trains on its shard of every epoch (a `DistributedSampler` reshuffled by
`set_epoch`) and DDP averages the gradients, so the effective batch is `batch_size * N` at the same
learning rate. Without torchrun (WORLD_SIZE unset or 1) nothing here changes the run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, TensorDataset


@dataclass(frozen=True)
class World:
    """This process's place: rank among world_size processes, and its local rank on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone evaluates, writes the version and prints."""
        return self.rank == 0


SINGLE = World()  # one process, no torchrun


def world_from_env() -> World:
    """The World torchrun describes in the environment (a single process when it does not)."""
    return World(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def device_for(world: World, device: torch.device) -> torch.device:
    """Under torchrun each process on a node takes its own GPU (cuda:LOCAL_RANK)."""
    if world.distributed and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the process group (NCCL on CUDA, gloo on CPU) for the block; always leave it, so a
    failing rank exits cleanly instead of hanging the others in a collective."""
    if not world.distributed:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def node_first(world: World) -> Iterator[None]:
    """The block runs on each node's first process (LOCAL_RANK 0) before the job's other processes run
    it, however it ended there: data fetched into a cache is fetched once per node, not once per
    process, and the others then read the cache (or fail as the first one did). Call it in the process
    group, on every rank."""
    if not world.distributed:
        yield
        return
    if world.local_rank != 0:
        dist.barrier()
        yield
        return
    try:
        yield
    finally:
        dist.barrier()


class EpochOrder:
    """The order of the examples each epoch: the whole seeded permutation in one process (as the
    single-process job always did), this rank's shard of a DistributedSampler under torchrun."""

    def __init__(self, count: int, world: World, seed: int, generator: torch.Generator):
        self.count, self.world, self.generator = count, world, generator
        self.sampler: DistributedSampler | None = (
            DistributedSampler(
                TensorDataset(torch.empty(count, 0)),
                num_replicas=world.world_size,
                rank=world.rank,
                shuffle=True,
                seed=seed,
            )
            if world.distributed
            else None
        )

    def __call__(self, epoch: int) -> torch.Tensor:
        """Indices (this rank's, equal in number on every rank) for one epoch."""
        if self.sampler is None:
            return torch.randperm(self.count, generator=self.generator)
        self.sampler.set_epoch(epoch)
        return torch.tensor(list(self.sampler), dtype=torch.long)


def all_sum(values: torch.Tensor, world: World, device: torch.device) -> torch.Tensor:
    """Element-wise sum over the ranks of a CPU tensor (the tensor itself in one process)."""
    if not world.distributed:
        return values
    total = values.to(device)  # NCCL reduces CUDA tensors only
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.cpu()
