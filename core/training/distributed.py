"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node=N -m core.train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them (or with WORLD_SIZE=1) everything
here is a no-op, so the single-process trainer runs the same code. Backend: nccl on CUDA,
gloo on CPU. Each rank trains on its shard (BatchLoader rank/world_size); rank 0 alone writes
the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Rank/world size from torchrun's environment variables (defaults: one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun prepared (no-op for one process). Returns this rank's DistInfo."""
    info = env_dist_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum, min or max) across ranks; returns the tensor (no-op for one process)."""
    if info.enabled:
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def agree(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank only if ``flag`` is True on every rank (e.g. 'the lock was acquired')."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())
