"""Data-parallel runs under torchrun: which clips a rank answers, and the rendezvous around the merge.

    torchrun --nproc_per_node 4 -m roadbuddy --test-json ... --output out/submission.csv

Each rank answers whole clips (a clip's questions share its decode), balanced
by question count, appends to its own predictions shard, and resumes its own
shard after a crash. After a barrier rank 0 merges every shard into the CSVs.
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) is read by the CLI only.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Mapping, Sequence

from roadbuddy.data.questions import Question


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Shard":
        world = int(environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(rank=int(environ["RANK"]), world_size=world, local_rank=int(environ.get("LOCAL_RANK", "0")))


def assign_clips(clips: Sequence[tuple[Path, list[Question]]], world_size: int) -> list[int]:
    """The rank of each clip: largest clips first, each to the rank with the fewest questions so far.

    Deterministic for a given question file and world size, so a rerun gives
    every rank the clips it had before and it resumes its own shard.
    """
    order = sorted(range(len(clips)), key=lambda i: (-len(clips[i][1]), i))
    load = [(0, rank) for rank in range(world_size)]
    ranks = [0] * len(clips)
    for i in order:
        questions, rank = heapq.heappop(load)
        ranks[i] = rank
        heapq.heappush(load, (questions + len(clips[i][1]), rank))
    return ranks


def init(shard: Shard, device_type: str) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU. A long timeout, since ranks finish unevenly."""
    import torch.distributed as dist

    if shard.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=shard.rank,
                                world_size=shard.world_size, timeout=timedelta(hours=12))


def barrier(shard: Shard) -> None:
    import torch.distributed as dist

    if shard.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensors, shard: Shard) -> None:
    """Sum each tensor over the ranks, in place (fine-tuning's gradients and loss); nothing in one process."""
    import torch.distributed as dist

    if shard.distributed and dist.is_initialized():
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def finish(shard: Shard) -> None:
    import torch.distributed as dist

    if shard.distributed and dist.is_initialized():
        dist.destroy_process_group()
