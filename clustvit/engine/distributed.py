"""DDP setup from torchrun's environment, and the few collectives training and bulk prediction need."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> DistInfo:
    """Initialises the process group when launched by torchrun (gloo on CPU, NCCL on CUDA)."""
    rank, world, local = env_ranks()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, world, local, device)


def teardown() -> None:
    """Free the process group while the interpreter is fully alive (train.py calls it on exit)."""
    if dist.is_initialized():
        # A DDP module left in a reference cycle keeps the gloo group and its threads alive until
        # interpreter shutdown, where destroying them aborted 2 of 25 torchrun runs ("terminate called
        # without an active exception"); collected first, 0 of 30 did.
        gc.collect()
        dist.destroy_process_group()


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (identity in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if `flag` is True on any rank: every rank then takes the same branch (no DDP hang)."""
    return any_rank_flags([flag], device)[0]


def any_rank_flags(flags: list[bool], device: torch.device) -> list[bool]:
    """`any_rank` for several flags in one all-reduce: element i is True if flags[i] is True on any rank."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def env_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) in a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), \
        int(os.environ.get("LOCAL_RANK", "0"))


def init_cpu_group(timeout: timedelta) -> None:
    """A gloo group over torchrun's rendezvous, for gathering small Python objects whatever the device.

    ``timeout`` bounds every collective: give one as long as the slowest rank may trail the fastest.
    """
    if env_ranks()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timeout)


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's `obj`, in rank order, on every rank (``[obj]`` in a single process)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
