"""The trainer: one readable loop, top to bottom (config, data, model, optimizer, loop, checkpoint).

    from core.training.config import TrainConfig
    from core.training.trainer import train
    status = train(TrainConfig(model="cnn2", dataset="shapes", epochs=2), "checkpoints/run1")

What it writes is the run folder (core/training/run_folder.py). Guarantees:
- The config is validated before any work (ConfigError); a folder another live trainer owns is
  refused (RunLockedError via train.lock).
- kill -9 at any moment, then ``train(..., resume=True)``: training continues after the last
  completed epoch. The commit point of an epoch is the atomic replacement of last_state.pt;
  metrics/steps rows of later epochs are dropped on resume, so no epoch is lost or duplicated.
- NaN/inf loss -> status failed naming epoch and step; CUDA OOM -> failed naming the batch size;
  SIGTERM -> status cancelled, last completed epoch kept.
- Determinism: same seed, device, config and CPU thread count give the same metrics on CPU (seeded
  init, seeded BatchLoader shuffling/augmentation per epoch, RNG state saved for resume). The thread
  count is recorded in config.json (run.cpu_threads) and reused on resume; pin it with
  --num-threads when comparing runs, since the default follows the idle cores. Not bit-exact: CUDA with
  cudnn.benchmark (algorithm choice varies; atomics in some backward kernels), torch.compile, and
  DDP runs with a different number of processes (different shards and gradient summation order).
- Speed (each trick one line with its reason): uint8 dataset tensors batched on the device, no
  .item() per step (loss/accuracy accumulate on the device; one sync per log interval), channels_last
  (CPU and CUDA), bf16 autocast + cudnn.benchmark on CUDA, optional torch.compile, CPU threads =
  idle cores per process (an oversubscribed core stalls every OpenMP op).
- Not handled: datasets larger than device memory (BatchLoader keeps the split on the device, so
  pinned-memory streaming is not needed for the small datasets this tool targets).
"""

from __future__ import annotations

import errno
import math
import os
import platform
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import FailedError
from core.io import append_jsonl
from core.training import checkpoint as ckpt
from core.training.config import ConfigError, TrainConfig, input_channels
from core.training.distributed import DistInfo, agree, all_reduce, barrier, init_distributed, shutdown
from core.training.run_folder import RunFolder, RunLockedError


class TrainingFailed(FailedError):
    """Training stopped on purpose with a user-facing message (divergence, out of memory)."""


class RunCancelled(BaseException):
    """Raised from the SIGTERM/SIGINT handler: the run stops as 'cancelled' (BaseException so that
    no ``except Exception`` on the way swallows it)."""


# ==== small helpers ===========================================================================
def resolve_device(name: str, dist_info: DistInfo | None = None) -> torch.device:
    """'auto' -> cuda when available, else cpu; under torchrun each rank takes cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("invalid training config:\n  - device 'cuda' requested but no CUDA GPU is available")
        return torch.device("cuda", dist_info.local_rank if dist_info else 0)
    return torch.device("cpu")


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store every 4-D parameter/buffer (conv weights) as NHWC, in place. ``Module.to(memory_format=)``
    would fail on models holding 5-D weights (dynamic convolution's kernel bank)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


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


def library_versions() -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("torchvision", "numpy", "safetensors", "PIL", "cv2"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:
            pass
    versions["cuda"] = torch.version.cuda
    return versions


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float, mining: str) -> torch.Tensor:
    """In-batch triplet loss (seed 002 part three), anchors = every sample that has a positive and a negative.

    embeddings: float [B, D]; labels: int64 [B]. mining 'batch-hard': the farthest positive and the
    nearest negative of each anchor; 'random': one random positive and one random negative.
    Returns a scalar (0 when no anchor has both).
    """
    dist = torch.cdist(embeddings, embeddings)                      # [B, B]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    if mining == "batch-hard":
        d_pos = dist.masked_fill(~pos_mask, float("-inf")).amax(1)
        d_neg = dist.masked_fill(~neg_mask, float("inf")).amin(1)
    else:
        # Uniform choice among positives/negatives: multinomial on the masks (torch RNG: seeded, resumable).
        pos_idx = torch.multinomial((pos_mask & valid[:, None]).float() + (~valid)[:, None].float(), 1).squeeze(1)
        neg_idx = torch.multinomial((neg_mask & valid[:, None]).float() + (~valid)[:, None].float(), 1).squeeze(1)
        rows = torch.arange(len(labels), device=labels.device)
        d_pos, d_neg = dist[rows, pos_idx], dist[rows, neg_idx]
    return F.relu(d_pos - d_neg + margin)[valid].mean()


class LogitsAndEmbedding(nn.Module):
    """forward(x) -> (logits [B, K], embedding [B, D]) so that DDP sees one module call.

    Models expose ``embed(x)``; the classifier is not separable in general, hence two passes.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x), self.model.embed(x)


class Progress:
    """A one-line console progress bar (plain stderr writes, so it works in any terminal/log)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr is not None

    def update(self, epoch: int, epochs: int, step: int, steps: int, loss: float, images_per_s: float,
               epoch_start: float) -> None:
        if not self.enabled:
            return
        done = step / max(steps, 1)
        elapsed = time.time() - epoch_start
        eta = elapsed / done - elapsed if done > 0 else 0.0
        bar = "#" * int(done * 24) + "." * (24 - int(done * 24))
        sys.stderr.write(
            f"\repoch {epoch}/{epochs} [{bar}] {step}/{steps} loss {loss:.4f} "
            f"{images_per_s:,.0f} img/s ETA {int(eta) // 60}:{int(eta) % 60:02d}  "
        )
        sys.stderr.flush()

    def end_epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        val = "" if row["val_acc"] is None else f" val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f}"
        sys.stderr.write(
            f"\repoch {row['epoch']}: train_loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f}"
            f"{val} ({row['seconds']:.1f} s, {row['images_per_s']:,.0f} img/s)" + " " * 12 + "\n"
        )
        sys.stderr.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


class _CancelGuard:
    """Defers a SIGTERM/SIGINT that arrives while an epoch is being committed (metrics row, weights,
    resume state), so that 'cancelled' always means 'the last completed epoch is fully saved'."""

    def __init__(self) -> None:
        self.deferring = False
        self.pending: str | None = None

    def __enter__(self) -> "_CancelGuard":
        self.deferring = True
        return self

    def __exit__(self, *exc) -> None:
        self.deferring = False
        if self.pending and exc[0] is None:
            raise RunCancelled(self.pending)


_guard = _CancelGuard()


def check_cancelled() -> None:
    """Raise RunCancelled if a SIGTERM/SIGINT arrived whose raise did not get through."""
    if _guard.pending and not _guard.deferring:
        raise RunCancelled(_guard.pending)


def _install_signal_handlers() -> dict:
    """SIGTERM/SIGINT -> RunCancelled in the main thread (the dashboard's cancel sends SIGTERM)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _guard.deferring, _guard.pending = False, None

    def handler(signum, frame):  # noqa: ARG001
        name = signal.Signals(signum).name
        # Remembered as well as raised: a raise that lands inside a finalizer (__del__, a weakref
        # callback) is swallowed by Python ("Exception ignored in ..."), and the training loop's
        # check_cancelled() then stops the run at the next step instead of letting it finish.
        _guard.pending = name
        if not _guard.deferring:
            raise RunCancelled(name)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        old[sig] = signal.signal(sig, handler)
    return old


def _restore_signal_handlers(old: dict) -> None:
    for sig, h in old.items():
        signal.signal(sig, h)


def augment_config(augment: dict | str):
    """AugmentConfig from config.augment: a dict of its fields, or a preset name ("crop-flip", ...)."""
    from core.data import AugmentConfig

    if isinstance(augment, str):
        return AugmentConfig.preset(augment)
    return AugmentConfig.from_dict(augment) if augment else None


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.resolved_weight_decay())
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.resolved_weight_decay())


def make_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    """(scheduler or None, True when it steps per batch)."""
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.resolved_step_size(),
                                               gamma=config.gamma), False
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs), False
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=config.epochs * max(1, steps_per_epoch)), True
    return None, False


# ==== the trainer =============================================================================
def train(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    quiet: bool = False,
) -> dict:
    """Train ``config`` into ``run_dir`` (or continue the run there with ``resume=True``).

    Returns the final status dict ({"state": done|failed|cancelled, "message", ...}).
    Raises ConfigError (invalid config, nothing written) and RunLockedError (folder in use) before
    any work; every later failure is recorded in status.json and returned, not raised.
    Under torchrun every rank calls this; rank 0 alone writes the folder.
    """
    run = RunFolder(run_dir)

    # ---- config -----------------------------------------------------------------------------
    config = config.validate()                    # ConfigError before any work
    dist_info = init_distributed("cuda" if config.device == "cuda" or (
        config.device == "auto" and torch.cuda.is_available()) else "cpu")
    device = resolve_device(config.device, dist_info)
    main = dist_info.is_main
    progress = Progress(enabled=main and not quiet)

    # ---- ownership of the folder (rank 0 decides; every rank stops together) ----------------
    refusal: Exception | None = None
    if main:
        try:
            run.acquire_lock()
        except RunLockedError as exc:
            refusal = exc
        else:
            existing = run.read_status().get("state")
            if not resume and (run.metrics_path.exists() or run.resume_state_path.exists()) and existing != "queued":
                run.release_lock()
                refusal = ConfigError(
                    f"invalid training config:\n  - {run.path} already holds a run ({existing}); "
                    f"use --resume {run.path} to continue it, or choose another --out folder"
                )
    if not agree(refusal is None, dist_info, device if device.type == "cuda" else torch.device("cpu")):
        shutdown(dist_info)
        raise refusal or RunLockedError(run.path, None)

    if main:
        for stale in run.path.glob(".*.tmp"):   # temp files of atomic writes cut short by a kill -9
            stale.unlink(missing_ok=True)

    old_handlers = _install_signal_handlers()
    state = {"epoch": 0, "step": 0}
    try:
        if main:
            run.write_status("running", pid=os.getpid(), message="loading data", started=time.time(),
                             finished=None, epoch=0, epochs=config.epochs)
        result = _train(config, run, device, dist_info, resume, progress, state)
        return result
    except RunCancelled as exc:
        msg = (f"cancelled ({exc}) during epoch {state['epoch']}; the last completed epoch is kept in "
               f"last.safetensors; continue with --resume {run.path}")
        if main:
            msg += _final_status(run, "cancelled", msg)
            progress.message(msg)
        return {"state": "cancelled", "message": msg}
    except (TrainingFailed, ConfigError, ckpt.CheckpointError) as exc:
        msg = str(exc)
        if main:
            msg += _final_status(run, "failed", msg)
            progress.message(f"failed: {msg}")
        return {"state": "failed", "message": msg}
    except Exception as exc:  # noqa: BLE001 - recorded in status.json; traceback on stderr
        if _is_oom(exc):
            msg = (f"out of memory with batch size {config.batch_size} (epoch {state['epoch']}); "
                   f"try --batch-size {max(1, config.batch_size // 2)} or a smaller --image-size")
        elif _is_disk_write_error(exc, run):
            # Read-only folder, full disk, permissions: say which file, and that completed epochs are safe.
            msg = (f"writing the run folder failed during epoch {state['epoch']}: {exc}; the last completed "
                   f"epoch is kept (every checkpoint is written to a temp file, then renamed); make "
                   f"{run.path} writable and continue with --resume {run.path}")
        else:
            msg = f"{type(exc).__name__}: {exc}"
        if main:
            msg += _final_status(run, "failed", msg)
        if not _is_disk_write_error(exc, run):
            traceback.print_exc(file=sys.stderr)
        return {"state": "failed", "message": msg}
    finally:
        _restore_signal_handlers(old_handlers)
        if main:
            try:
                run.release_lock()
            except OSError:   # read-only folder: the lock is stale once this process exits anyway
                pass
        shutdown(dist_info)


def _is_disk_write_error(exc: BaseException, run: RunFolder) -> bool:
    """An OSError about the run folder itself (a file in it) or about the disk being read-only/full;
    not e.g. a missing dataset file, which keeps its own message and traceback."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
        return True
    name = exc.filename or ""
    try:
        return bool(name) and Path(os.fsdecode(name)).resolve().is_relative_to(run.path.resolve())
    except (OSError, ValueError, TypeError):
        return False


def _final_status(run: RunFolder, state: str, message: str) -> str:
    """Write the final status; on a read-only or full disk return a note instead of raising, so the
    caller still reports ``message`` (a traceback from the handler would hide the real cause)."""
    try:
        run.write_status(state, message=message, finished=time.time())
        return ""
    except OSError as exc:
        return f" (and {run.status_path} could not be updated: {exc})"


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def _train(config: TrainConfig, run: RunFolder, device: torch.device, dist_info: DistInfo, resume: bool,
           progress: Progress, state: dict) -> dict:
    from core.data import BatchLoader, PreprocessConfig, compute_normalization, load_dataset
    from core.models.registry import create_model, get_spec

    main = dist_info.is_main
    on_cuda = device.type == "cuda"

    # ---- determinism and speed knobs ----------------------------------------------------------
    torch.manual_seed(config.seed)                # same init on every rank; DDP also broadcasts rank 0's
    if device.type == "cpu":
        # On resume keep the thread count of the run (float reductions may split by thread).
        recorded = ((run.read_config() or {}).get("run") or {}).get("cpu_threads") if resume else None
        threads = config.num_threads or recorded or default_cpu_threads(dist_info.world_size)
        torch.set_num_threads(int(threads))
    else:
        threads = torch.get_num_threads()
        torch.backends.cudnn.benchmark = True     # fixed input shapes: pick the fastest conv kernels once
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- data ---------------------------------------------------------------------------------
    data = load_dataset(
        config.dataset,
        image_size=config.image_size,
        root=config.data_root,
        seed=config.seed,
        preprocess=PreprocessConfig.from_dict(config.preprocess) if config.preprocess else None,
        max_train_samples=config.max_train_samples,
    )
    info = data.info
    source_channels = int(data.train.images.shape[1])
    normalize = compute_normalization(data.train) if config.normalize else None
    spec = get_spec(config.model)
    in_ch = input_channels(config.channels, config.channel_strategy, spec.variable_input, source_channels)
    eval_combo = ("L" if source_channels == 1 else "RGB") if config.channels == "random" else config.channels

    shard = math.ceil(len(data.train.labels) / dist_info.world_size)
    train_loader = BatchLoader(
        data.train, config.batch_size, shuffle=True,
        # A last batch of 1 sample breaks BatchNorm in train mode: drop the remainder when there is a full batch.
        drop_last=shard >= config.batch_size,
        augment=augment_config(config.augment),
        channels=config.channels, strategy=config.channel_strategy, normalize=normalize,
        device=str(device), seed=config.seed, rank=dist_info.rank, world_size=dist_info.world_size,
    )
    # Validation: the whole split on every rank (small; avoids uneven shards), one fixed combination.
    val_loader = BatchLoader(
        data.val, max(256, config.batch_size), shuffle=False, channels=eval_combo,
        strategy=config.channel_strategy, normalize=normalize, device=str(device), seed=config.seed,
    ) if len(data.val.labels) else None
    # DDP needs the same number of steps on every rank, or the last all-reduce waits forever.
    steps_per_epoch = int(all_reduce(torch.tensor([len(train_loader)], device=device), dist_info, "min").item())
    if steps_per_epoch < 1:
        raise TrainingFailed(f"the train split has {len(data.train.labels)} images: not one batch per process")

    # ---- model --------------------------------------------------------------------------------
    model = create_model(config.model, num_classes=info.num_classes, in_channels=in_ch, **config.model_options)
    model.to(device)
    if config.channels_last:
        # NHWC: tensor-core friendly on CUDA; on this CPU oneDNN's NHWC convolutions trained cnn3
        # 1.3-1.9x faster than NCHW at 32 px (benchmarks/bench_trainer.py). --no-channels-last turns it off.
        to_channels_last(model)
    use_triplet = config.loss == "ce+triplet"
    if use_triplet and not hasattr(model, "embed"):
        raise ConfigError(f"invalid training config:\n  - model {config.model!r} has no embed(); "
                          f"loss 'ce+triplet' needs one")
    net: nn.Module = LogitsAndEmbedding(model) if use_triplet else model
    if dist_info.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if on_cuda else None)
    if config.compile:
        net = torch.compile(net)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else torch.autocast("cpu", enabled=False)

    # ---- optimizer, scheduler, loss -------------------------------------------------------------
    optimizer = make_optimizer(config, model.parameters())
    scheduler, per_batch = make_scheduler(config, optimizer, steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    # ---- config.json / resume -------------------------------------------------------------------
    start_epoch, best_val, best_epoch, global_step = 1, -1.0, 0, 0
    run_section = {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if on_cuda else platform.processor() or "cpu",
        "world_size": dist_info.world_size, "cpu_threads": threads, "versions": library_versions(),
        "num_classes": info.num_classes, "classes": list(info.classes), "in_channels": in_ch,
        "source_channels": source_channels, "image_size": int(data.train.images.shape[-1]),
        "normalize_mean": list(normalize[0]) if normalize else None,
        "normalize_std": list(normalize[1]) if normalize else None,
        "eval_channels": eval_combo, "n_train": len(data.train.labels), "n_val": len(data.val.labels),
        "n_test": len(data.test.labels), "batch_size_global": config.batch_size * dist_info.world_size,
        "amp": "bf16" if on_cuda else None, "command": " ".join(sys.argv),
    }
    if resume and run.resume_state_path.exists():
        saved = ckpt.load_resume_state(run.resume_state_path)
        ckpt.load_into(model, saved["model"], run.resume_state_path)
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") and int(saved.get("epochs", -1)) == config.epochs:
            scheduler.load_state_dict(saved["scheduler"])
        elif scheduler is not None:
            # --epochs changed on resume: the schedule is the one of the new length, fast-forwarded.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # "scheduler.step() before optimizer.step()"
                for _ in range(int(saved["global_step"]) if per_batch else int(saved["epoch"])):
                    scheduler.step()
        torch.set_rng_state(saved["rng_cpu"])
        if on_cuda and saved.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(saved["rng_cuda"], device)
        start_epoch = int(saved["epoch"]) + 1
        best_val, best_epoch = float(saved["best_val_acc"]), int(saved["best_epoch"])
        global_step = int(saved["global_step"])
    if main:
        if resume:
            run.truncate_rows_after(start_epoch - 1)   # drop rows of the epoch that was interrupted
        prior = run.read_config() or {}
        full = {**config.to_dict(), "run": {**(prior.get("run") or {}), **run_section,
                                            "created": (prior.get("run") or {}).get("created", time.time())}}
        run.write_config(full)
    barrier(dist_info)

    tb = None
    if main and config.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter   # optional: only when tensorboard is installed
            tb = SummaryWriter(log_dir=str(run.path / "tensorboard"), purge_step=global_step or None)
        except ImportError:
            tb = None

    if main:
        run.write_status("running", message=f"epoch {start_epoch}", epoch=start_epoch - 1, epochs=config.epochs)
    progress.message(f"training {config.model} on {config.dataset} ({len(data.train.labels)} images, "
                     f"channels {config.channels}/{config.channel_strategy}) on {device} -> {run.path}")

    # ---- the loop -------------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs + 1):
        state["epoch"] = epoch
        net.train()
        train_loader.set_epoch(epoch)
        epoch_start = time.time()
        loss_sum = torch.zeros((), device=device)          # accumulated on the device: no sync per step
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        interval_losses: list[torch.Tensor] = []
        interval_start, interval_images = time.time(), 0
        lr_in_epoch = optimizer.param_groups[0]["lr"]

        for step, (x, y) in enumerate(train_loader, start=1):
            if step > steps_per_epoch:
                break
            check_cancelled()
            state["step"] = step
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                out = net(x)
                logits, emb = out if use_triplet else (out, None)
                loss = criterion(logits.float(), y)
                if use_triplet:
                    loss = loss + config.triplet_weight * triplet_loss(
                        emb.float(), y, config.triplet_margin, config.triplet_mining)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_in_epoch = optimizer.param_groups[0]["lr"]
            if per_batch:
                scheduler.step()
            global_step += 1

            batch = y.shape[0]
            loss_d = loss.detach()
            loss_sum += loss_d * batch
            correct += (logits.detach().argmax(1) == y).sum()
            seen += batch
            interval_losses.append(loss_d)
            interval_images += batch

            if step % config.log_every == 0 or step == steps_per_epoch:
                # The one sync per interval: check every step's loss for NaN/inf, then log.
                losses = torch.stack(interval_losses).float().cpu()
                bad = (~torch.isfinite(losses)).nonzero()
                if len(bad):
                    bad_step = step - len(losses) + 1 + int(bad[0])
                    raise TrainingFailed(
                        f"loss became {losses[int(bad[0])].item()} at epoch {epoch}, step {bad_step} "
                        f"(lr {lr_in_epoch:g}); the training diverged: try a lower learning rate "
                        f"(e.g. --lr {config.lr / 10:g})"
                    )
                now = time.time()
                ips = interval_images * dist_info.world_size / max(now - interval_start, 1e-9)
                mean_loss = float(losses.mean())
                if main:
                    append_jsonl(run.steps_path, {"epoch": epoch, "step": step, "global_step": global_step,
                                                  "loss": mean_loss, "images_per_s": ips})
                    if tb is not None:
                        tb.add_scalar("train/step_loss", mean_loss, global_step)
                progress.update(epoch, config.epochs, step, steps_per_epoch, mean_loss, ips, epoch_start)
                interval_losses, interval_start, interval_images = [], now, 0

        train_seconds = time.time() - epoch_start
        totals = all_reduce(torch.stack([loss_sum.float(), correct.float(),
                                         torch.tensor(float(seen), device=device)]), dist_info)
        loss_total, correct_total, seen_total = (float(v) for v in totals.cpu())
        if scheduler is not None and not per_batch:
            scheduler.step()

        val_loss = val_acc = None
        if val_loader is not None:
            from core.evaluate import run_batches

            res = run_batches(ckpt.unwrap_model(model), val_loader, device=device,
                              channels_last=config.channels_last)
            val_loss, val_acc = res["loss"], res["accuracy"]

        row = {
            "epoch": epoch,
            "train_loss": loss_total / max(seen_total, 1),
            "train_acc": correct_total / max(seen_total, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr_in_epoch,
            "seconds": time.time() - epoch_start,
            "images_per_s": seen_total / max(train_seconds, 1e-9),
        }
        score = val_acc if val_acc is not None else row["train_acc"]
        is_best = score > best_val
        if is_best:
            best_val, best_epoch = score, epoch

        # ---- checkpoint (rank 0). Order matters: last_state.pt is the commit point -------------
        if main:
            with _guard:   # a cancel request waits until this epoch is committed
                append_jsonl(run.metrics_path, row)
                meta = {"epoch": epoch, "model": config.model, "val_acc": val_acc}
                if is_best:
                    ckpt.save_weights(run.best_weights_path, model, {**meta, "which": "best"})
                if config.checkpoint_every and epoch % config.checkpoint_every == 0:
                    ckpt.save_weights(run.epoch_weights_path(epoch), model, {**meta, "which": f"epoch {epoch}"})
                ckpt.save_weights(run.last_weights_path, model, {**meta, "which": "last"})
                ckpt.save_resume_state(run.resume_state_path, {
                    "epoch": epoch,
                    "epochs": config.epochs,
                    "global_step": global_step,
                    "best_val_acc": best_val,
                    "best_epoch": best_epoch,
                    "model": ckpt.state_dict_for_saving(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(device) if on_cuda else None,
                })
                run.write_status("running", epoch=epoch, message=f"epoch {epoch}/{config.epochs} done",
                                 best_epoch=best_epoch, best_val_acc=best_val)
                if tb is not None:
                    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
                        if row[key] is not None:
                            tb.add_scalar(f"epoch/{key}", row[key], epoch)
                    tb.flush()
                progress.end_epoch(row)
        barrier(dist_info)

    if tb is not None:
        tb.close()

    # ---- evaluation (rank 0, plain model) -------------------------------------------------------
    message = f"done: {config.epochs} epochs, best val_acc {best_val:.4f} at epoch {best_epoch}"
    if main and config.eval_at_end:
        run.write_status("running", message="evaluating on the test split", epoch=config.epochs)
        try:
            from core.evaluate import evaluate_run

            result = evaluate_run(run.path, device=str(device))
            message += f"; test_acc {result['test_acc']:.4f}"
        except Exception as exc:  # noqa: BLE001 - training itself succeeded; say why eval did not
            message += f"; evaluation failed: {type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
    if main:
        run.write_status("done", message=message, finished=time.time(), epoch=config.epochs)
        progress.message(message)
    return {"state": "done", "message": message, "best_epoch": best_epoch, "best_val_acc": best_val}


def load_config_for_resume(run_dir: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """The TrainConfig stored in a run's config.json, with ``overrides`` (e.g. epochs=20) applied."""
    path = Path(run_dir) / "config.json"
    config = TrainConfig.from_json(path)
    return config.replace(**overrides) if overrides else config
