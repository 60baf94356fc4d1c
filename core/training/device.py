"""Where and how tensors run: device choice, precision, memory layout, CPU threads, speed settings.

The trainer, the evaluation and the benchmarks all import these, so that "auto" means the same
device, "channels_last" the same layout and "bf16 on CUDA" the same autocast everywhere.

    device = resolve_device("auto")                 # cuda:0 when a GPU is visible, else cpu
    with speed_settings(device):                    # cudnn.benchmark + TF32 matmuls, restored after
        with train_autocast(device):                # bf16 on CUDA, nothing on the CPU
            loss = model(to_channels_last_batch(x))
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

import torch
from torch import nn

from core.training.config import ConfigError
from core.training.distributed import DistInfo


def resolve_device(name: str, dist_info: DistInfo | None = None, *,
                   problem: str = "invalid training config") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' -> cuda:LOCAL_RANK under torchrun (else cuda:0);
    'cuda:N' and 'cpu' as given.

    Raises ConfigError (``problem`` starts its message) when CUDA is asked for and no GPU is
    visible, or when the GPU index (e.g. this rank's LOCAL_RANK: more processes per node than GPUs)
    does not exist.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{problem}:\n  - unknown device {name!r}: expected auto, cpu or cuda") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ConfigError(f"{problem}:\n  - unsupported device {name!r}: expected auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise ConfigError(f"{problem}:\n  - device 'cuda' requested but no CUDA GPU is available")
    index = device.index if device.index is not None else (dist_info.local_rank if dist_info else 0)
    count = torch.cuda.device_count()
    if index >= count:
        source = f"LOCAL_RANK {index}" if device.index is None and dist_info else f"cuda:{index}"
        raise ConfigError(f"{problem}:\n  - {source} asks for GPU {index} but this machine has {count} "
                          f"CUDA GPU(s): start at most {count} process(es) per node "
                          f"(torchrun --nproc_per_node={count})")
    return torch.device("cuda", index)


def train_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The training forward's precision: bf16 autocast on CUDA (tensor cores, no loss scaling
    needed), none on the CPU (bf16 convolutions fall back to slow paths without AMX/AVX-512-BF16).
    Evaluation never uses it: it runs in fp32 (core/training/evaluation.py)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def autocast_name(device: torch.device) -> str | None:
    """What train_autocast uses on ``device``, as recorded in config.json (run.amp): 'bf16' or None."""
    return "bf16" if device.type == "cuda" else None


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store every 4-D parameter/buffer (conv weights) as NHWC, in place. ``Module.to(memory_format=)``
    would fail on models holding 5-D weights (dynamic convolution's kernel bank)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def to_channels_last_batch(x: torch.Tensor) -> torch.Tensor:
    """x: [B, C, H, W] -> the same values stored NHWC (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): call before reading a timer."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def speed_settings(device: torch.device) -> Iterator[None]:
    """On CUDA, for the duration of the block: ``cudnn.benchmark`` (fixed input shapes: pick the
    fastest conv kernels once) and TF32 matmuls (``set_float32_matmul_precision("high")``, the
    non-deprecated switch); both restored afterwards, even on an exception, so that a caller in the
    same process (a benchmark's fp32 baseline, a notebook) gets the settings it had. Nothing on the CPU.
    TF32 convolutions are cuDNN's default already (torch.backends.cudnn.conv.fp32_precision)."""
    if device.type != "cuda":
        yield
        return
    old_benchmark = torch.backends.cudnn.benchmark
    old_precision = torch.get_float32_matmul_precision()
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
        torch.set_float32_matmul_precision(old_precision)


# ==== CPU threads =============================================================================
def busy_cores(interval: float = 0.25) -> float | None:
    """Cores busy right now: non-idle jiffies over ``interval`` s from /proc/stat (Linux; None elsewhere).

    Why not the load average: it decays over a minute, so right after another training ends it
    still reads ~1 on an idle 2-core machine and a new run would start with half the threads."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
        return sum(fields[:8]), idle                                   # guest time is inside user
    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / (total1 - total0))


def default_cpu_threads(world_size: int = 1) -> int:
    """Threads per process: the cores per process, but no more than the cores that are idle now.

    Why: OpenMP threads that must wait for a busy core stall every parallel op; on a shared 2-core
    machine with load 4, one thread trained cnn3 2.5x faster than two. ``--num-threads`` overrides.
    "Idle now" is measured over a quarter second (busy_cores); the 1-min load average is the fallback.
    """
    cores = os.cpu_count() or 1
    per_process = max(1, cores // max(1, world_size))
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
    idle = cores - busy
    return max(1, min(per_process, int(round(idle))))
