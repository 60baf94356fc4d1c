"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node=N -m core.train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and TORCHELASTIC_RUN_ID); a process it started
joins a process group even when it is the only one (``--nproc_per_node=1``: the same code path as
N processes, a real NCCL group on a GPU server). Without torchrun everything here is a no-op, so
the plain single-process trainer runs the same code. Backend: nccl on CUDA, gloo on CPU. Each rank
trains on its shard (BatchLoader rank/world_size); rank 0 alone writes the run folder.

A collective that waits for a rank that died or hangs gives up after ``ARCHSCOPE_DIST_TIMEOUT_S``
seconds (default 1800) instead of blocking forever, so the run ends ``failed``, never ``running``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from core.training.config import ConfigError

TIMEOUT_ENV = "ARCHSCOPE_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0   # rank 0's final evaluation runs while the others wait at a barrier


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1, not launched, without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False        # started by torchrun: join a process group even with one process

    @property
    def enabled(self) -> bool:
        """True when collectives run (any torchrun process, or several processes)."""
        return self.launched or self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise ConfigError(f"invalid distributed environment:\n  - {name}={raw!r} is not an integer") from None


def env_dist_info() -> DistInfo:
    """Rank/world size from torchrun's environment variables (defaults: one process, not launched)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    # torchrun always sets TORCHELASTIC_RUN_ID; LOCAL_RANK + WORLD_SIZE covers other launchers
    # that follow its convention. A bare WORLD_SIZE=1 (left in a shell) does not count.
    launched = "TORCHELASTIC_RUN_ID" in os.environ or ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)
    return DistInfo(rank=rank, world_size=world, local_rank=local, launched=launched)


def process_group_timeout() -> timedelta:
    """How long a collective waits for the other ranks (ARCHSCOPE_DIST_TIMEOUT_S, seconds)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"invalid distributed environment:\n  - {TIMEOUT_ENV}={raw!r}: expected a positive "
                          f"number of seconds")
    return timedelta(seconds=seconds)


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun prepared (no-op without torchrun). Returns this rank's DistInfo.

    On CUDA a rank whose LOCAL_RANK has no GPU gets a ConfigError (more processes than GPUs).
    """
    info = env_dist_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            count = torch.cuda.device_count()
            if count == 0:
                raise ConfigError("invalid training config:\n  - device 'cuda' requested but no CUDA GPU is available")
            if info.local_rank >= count:
                raise ConfigError(f"invalid training config:\n  - LOCAL_RANK {info.local_rank} has no GPU: this "
                                  f"machine has {count} CUDA GPU(s); start at most {count} process(es) per node "
                                  f"(torchrun --nproc_per_node={count})")
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, timeout=process_group_timeout())
    return info


def backend_name(info: DistInfo) -> str | None:
    """The process group's backend ("nccl", "gloo"), None when this process has none (config.json records it)."""
    return str(dist.get_backend()) if info.enabled and dist.is_initialized() else None


def shutdown(info: DistInfo, *, failed: bool = False) -> None:
    """Leave the process group. ``failed``: abort it instead (pending collectives of this rank are
    cancelled rather than waited for; the other ranks' collectives then fail or time out)."""
    if not (info.enabled and dist.is_initialized()):
        return
    if failed:
        # torch has no public abort; destroy_process_group alone may wait on a stuck NCCL kernel.
        abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
        if abort is not None:
            try:
                abort()
                return
            except Exception:  # noqa: BLE001 - best effort; fall back to a plain destroy
                pass
    dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum, min or max) across ranks; returns the tensor (no-op for one process)."""
    if info.enabled:
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def agree(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank only if ``flag`` is True on every rank (e.g. 'the lock was acquired')."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())
