"""The trainer: one readable loop, top to bottom (config, data, model, resume, epochs, evaluation).

    from core.training.config import TrainConfig
    from core.training.trainer import train
    status = train(TrainConfig(model="cnn2", dataset="shapes", epochs=2), "checkpoints/run1")

``_train`` reads as the table of contents: build the data, build the model, restore the resume
state, write config.json, then per epoch train / validate / commit, then the final evaluation;
each stage is one named function below it. What it writes is the run folder
(core/training/run_folder.py). Guarantees:
- The config is validated before any work (ConfigError); a folder another live trainer owns is
  refused (RunLockedError via train.lock).
- kill -9 at any moment, then ``train(..., resume=True)``: training continues after the last
  completed epoch. The commit point of an epoch is the atomic replacement of last_state.pt;
  metrics/steps rows of later epochs are dropped on resume, so no epoch is lost or duplicated.
- NaN/inf loss -> status failed naming epoch and step; CUDA OOM -> failed naming the batch size;
  SIGTERM -> status cancelled, last completed epoch kept (a signal during an epoch's commit waits
  for the commit: _CancelGuard).
- Under torchrun: every rank stops together on a refusal; rank 0 evaluates while the others wait at
  a barrier; a failed rank aborts its process group and collectives time out
  (core/training/distributed.py), so the status ends failed or cancelled, never running.
- Determinism: same seed, device, config and CPU thread count give the same metrics on CPU (seeded
  init, seeded BatchLoader shuffling/augmentation per epoch, RNG state saved for resume). The thread
  count is recorded in config.json (run.cpu_threads) and reused on resume; pin it with
  --num-threads when comparing runs, since the default follows the idle cores. Not bit-exact: CUDA with
  cudnn.benchmark (algorithm choice varies; atomics in some backward kernels), torch.compile, and
  DDP runs with a different number of processes (different shards and gradient summation order).
- Speed (each trick one line with its reason): uint8 dataset tensors batched on the device, no
  host sync per step (loss/accuracy accumulate on the device; one sync per log interval), channels_last
  (CPU and CUDA), bf16 autocast on CUDA, cudnn.benchmark + TF32 matmuls on CUDA for the training
  only (core/training/device.py restores them), optional torch.compile (its compile time is reported
  apart, ``compile_seconds`` in that epoch's metrics row, and left out of images_per_s), CPU threads =
  idle cores per process (an oversubscribed core stalls every OpenMP op).
- Evaluation (per-epoch validation and the final test) runs in fp32 (core/training/evaluation.py).
- A logging extra (TensorBoard) never stops a run: any failure of it warns once and turns it off.
- Not handled: datasets larger than device memory (BatchLoader keeps the split on the device, so
  pinned-memory streaming is not needed for the small datasets this tool targets).
"""

from __future__ import annotations

import errno
import os
import platform
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import FailedError
from core.io import append_jsonl
from core.training import checkpoint as ckpt
from core.training.config import ConfigError, TrainConfig, input_channels
from core.training.device import (autocast_name, default_cpu_threads, resolve_device, speed_settings, synchronize,
                                  to_channels_last, to_channels_last_batch, train_autocast)
from core.training.distributed import (DistInfo, agree, all_reduce, backend_name, barrier, init_distributed,
                                       shutdown)
from core.training.evaluation import evaluate_run, run_batches
from core.training.run_folder import RunFolder, RunLockedError, this_host


class TrainingFailed(FailedError):
    """Training stopped on purpose with a user-facing message (divergence, out of memory)."""


class RunCancelled(BaseException):
    """Raised from the SIGTERM/SIGINT handler: the run stops as 'cancelled' (BaseException so that
    no ``except Exception`` on the way swallows it)."""


# ==== small helpers ===========================================================================
def library_versions() -> dict:
    """Versions of the libraries a run depends on, for config.json (run.versions)."""
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
    Returns a scalar: the mean over valid anchors (0 when no anchor has both).
    """
    dist = torch.cdist(embeddings, embeddings)                      # [B, B]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if mining == "batch-hard":
        d_pos = dist.masked_fill(~pos_mask, float("-inf")).amax(1)
        d_neg = dist.masked_fill(~neg_mask, float("inf")).amin(1)
    else:
        # Uniform choice among positives/negatives: multinomial on the masks (torch RNG: seeded, resumable).
        pos_idx = torch.multinomial((pos_mask & valid[:, None]).float() + (~valid)[:, None].float(), 1).squeeze(1)
        neg_idx = torch.multinomial((neg_mask & valid[:, None]).float() + (~valid)[:, None].float(), 1).squeeze(1)
        rows = torch.arange(len(labels), device=labels.device)
        d_pos, d_neg = dist[rows, pos_idx], dist[rows, neg_idx]
    per_anchor = F.relu(d_pos - d_neg + margin)                     # [B]
    # A masked mean, not `if valid.any()` + `per_anchor[valid].mean()`: both of those read a value
    # on the host, a blocking sync at every training step on CUDA. Invalid anchors count as 0.
    return torch.where(valid, per_anchor, 0.0).sum() / valid.sum().clamp(min=1).to(per_anchor.dtype)


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
    """The optimiser the config names (adam or sgd with momentum), with its weight decay."""
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


class TensorBoardLog:
    """Scalars to ``log_dir`` when TensorBoard works, else nothing (optional: not installed is normal).

    A logging extra must never stop a run: a broken install (e.g. a protobuf mismatch raises
    TypeError at import), a writer that fails later (full disk) — any Exception warns once and turns
    TensorBoard off for the rest of the run.
    """

    def __init__(self, log_dir: Path, *, purge_step: int | None = None, enabled: bool = True) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        except ImportError:
            pass                                   # tensorboard not installed: nothing to say
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            self._give_up(exc)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Log one scalar (no-op when TensorBoard is off)."""
        self._call("add_scalar", tag, value, step)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")
        self.writer = None

    def _call(self, method: str, *args: Any) -> None:
        """writer.<method>(*args); any failure turns TensorBoard off for the run, never stops it."""
        if self.writer is not None:
            try:
                getattr(self.writer, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a logging extra must never kill a run
                self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        self.writer = None                          # so the warning is given once
        warnings.warn(f"TensorBoard logging is off for this run ({type(exc).__name__}: {exc}); "
                      f"training goes on", RuntimeWarning, stacklevel=3)


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
    # ConfigError before any work; a resumed run does not read init_from again (its file may be gone).
    config = config.validate(check_init_from=not (resume and run.resume_state_path.exists()))
    dist_info = init_distributed("cuda" if config.device == "cuda" or (
        config.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        device = resolve_device(config.device, dist_info)
    except ConfigError:
        shutdown(dist_info)
        raise
    main = dist_info.is_main
    progress = Progress(enabled=main and not quiet)

    _claim_folder(run, resume, dist_info, device)
    old_handlers = _install_signal_handlers()
    state = {"epoch": 0, "step": 0}
    failed = True          # until _train returns: a failed rank aborts its process group
    try:
        if main:
            run.write_status("running", pid=os.getpid(), host=this_host(), message="loading data", started=time.time(),
                             finished=None, epoch=0, epochs=config.epochs)
        result = _train(config, run, device, dist_info, resume, progress, state)
        failed = False
        return result
    except RunCancelled as exc:
        msg = (f"cancelled ({exc}) during epoch {state['epoch']}; the last completed epoch is kept in "
               f"last.safetensors; continue with --resume {run.path}")
        if main:
            msg += _final_status(run, "cancelled", msg, signal=str(exc))   # core.train: 130 or 143
            progress.message(msg)
        return {"state": "cancelled", "message": msg}
    except (TrainingFailed, ConfigError, ckpt.CheckpointError) as exc:
        msg = str(exc)
        if main:
            msg += _final_status(run, "failed", msg)
            progress.message(f"failed: {msg}")
        return {"state": "failed", "message": msg}
    except Exception as exc:  # noqa: BLE001 - recorded in status.json; traceback on stderr
        msg = _failure_message(exc, config, run, state)
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
        shutdown(dist_info, failed=failed)


def _claim_folder(run: RunFolder, resume: bool, dist_info: DistInfo, device: torch.device) -> None:
    """Take train.lock (rank 0 decides; every rank stops together) and clear stale temp files.

    Raises RunLockedError (another live trainer owns the folder) or ConfigError (the folder holds a
    run and ``resume`` is off) on every rank, after leaving the process group.
    """
    refusal: Exception | None = None
    if dist_info.is_main:
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
    if dist_info.is_main:
        for stale in run.path.glob(".*.tmp"):   # temp files of atomic writes cut short by a kill -9
            stale.unlink(missing_ok=True)


def _failure_message(exc: Exception, config: TrainConfig, run: RunFolder, state: dict) -> str:
    """The status message of an unexpected failure: OOM and disk errors say what to do next."""
    if _is_oom(exc):
        return (f"out of memory with batch size {config.batch_size} (epoch {state['epoch']}); "
                f"try --batch-size {max(1, config.batch_size // 2)} or a smaller --image-size")
    if _is_disk_write_error(exc, run):
        # Read-only folder, full disk, permissions: say which file, and that completed epochs are safe.
        return (f"writing the run folder failed during epoch {state['epoch']}: {exc}; the last completed "
                f"epoch is kept (every checkpoint is written to a temp file, then renamed); make "
                f"{run.path} writable and continue with --resume {run.path}")
    return f"{type(exc).__name__}: {exc}"


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


def _final_status(run: RunFolder, state: str, message: str, **fields: Any) -> str:
    """Write the final status; on a read-only or full disk return a note instead of raising, so the
    caller still reports ``message`` (a traceback from the handler would hide the real cause)."""
    try:
        run.write_status(state, message=message, finished=time.time(), **fields)
        return ""
    except OSError as exc:
        return f" (and {run.status_path} could not be updated: {exc})"


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


# ==== the stages of one run ===================================================================
@dataclass
class _Context:
    """What every stage of one training process shares."""

    config: TrainConfig
    run: RunFolder
    device: torch.device
    dist: DistInfo
    progress: Progress
    state: dict                                  # epoch/step, read by train()'s failure messages
    tb: TensorBoardLog = field(default_factory=lambda: TensorBoardLog(Path(), enabled=False))

    @property
    def main(self) -> bool:
        return self.dist.is_main


@dataclass
class _Data:
    """The loaders and what config.json records about the data."""

    train_loader: Any                            # BatchLoader over this rank's shard
    val_loader: Any | None                       # BatchLoader over the whole validation split
    steps_per_epoch: int                         # the same on every rank
    num_classes: int
    classes: list[str]
    in_channels: int                             # channels the model's first layer takes
    source_channels: int                         # channels of the dataset's images
    image_size: int
    normalize: tuple[list[float], list[float]] | None
    eval_combo: str                              # the combination validation and test use
    sizes: dict[str, int]                        # n_train, n_val, n_test


@dataclass
class _Parts:
    """The model and what trains it."""

    model: nn.Module                             # the plain model (saved, validated)
    net: nn.Module                               # what the loop calls: + embedding, DDP, compile
    use_triplet: bool                            # net returns (logits, embedding)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    per_batch: bool                              # the scheduler steps per batch (onecycle)
    criterion: nn.Module
    compile_pending: bool                        # torch.compile compiles on the next step
    head: nn.Module | None = None                # train_only 'head': the one module left in train mode
    facts: dict = field(default_factory=dict)    # for config.json's run section (init_from, trainable_params)


@dataclass
class _Book:
    """The counters the resume state carries from epoch to epoch."""

    start_epoch: int = 1
    best_val: float = -1.0
    best_epoch: int = 0
    global_step: int = 0


def _train(config: TrainConfig, run: RunFolder, device: torch.device, dist_info: DistInfo, resume: bool,
           progress: Progress, state: dict) -> dict:
    """The run, top to bottom; returns the final status dict (errors propagate to train())."""
    ctx = _Context(config, run, device, dist_info, progress, state)
    torch.manual_seed(config.seed)                # same init on every rank; DDP also broadcasts rank 0's
    threads = _set_cpu_threads(ctx, resume)
    data = _build_data(ctx)
    continuing = resume and run.resume_state_path.exists()
    parts = _build_model(ctx, data, fresh=not continuing)
    book = _restore_resume_state(ctx, parts) if continuing else _Book()
    _write_run_config(ctx, data, threads, resume, book, parts.facts)
    ctx.tb = TensorBoardLog(run.path / "tensorboard", purge_step=book.global_step or None,
                            enabled=ctx.main and config.tensorboard)
    if ctx.main:
        run.write_status("running", message=f"epoch {book.start_epoch}", epoch=book.start_epoch - 1,
                         epochs=config.epochs)
    progress.message(f"training {config.model} on {config.dataset} ({data.sizes['n_train']} images, "
                     f"channels {config.channels}/{config.channel_strategy}) on {device} -> {run.path}")
    try:
        with speed_settings(device):              # cudnn.benchmark + TF32 for the training only
            for epoch in range(book.start_epoch, config.epochs + 1):
                state["epoch"] = epoch
                row = _train_epoch(ctx, data, parts, book, epoch)
                is_best = _track_best(book, row, last_wins=config.loss == "triplet")
                if ctx.main:
                    _commit_epoch(ctx, parts, book, row, is_best)
                barrier(dist_info)
    finally:
        ctx.tb.close()
    return _finish(ctx, book)


def _set_cpu_threads(ctx: _Context, resume: bool) -> int:
    """Pick (and set) the CPU thread count; on resume keep the run's (float reductions may split by thread)."""
    if ctx.device.type != "cpu":
        return torch.get_num_threads()
    recorded = ((ctx.run.read_config() or {}).get("run") or {}).get("cpu_threads") if resume else None
    threads = ctx.config.num_threads or recorded or default_cpu_threads(ctx.dist.world_size)
    torch.set_num_threads(int(threads))
    return int(threads)


def _build_data(ctx: _Context) -> _Data:
    """Load the dataset (as the run's config describes it) and build this rank's loaders."""
    from core.data import BatchLoader, compute_normalization
    from core.models.registry import get_spec
    from core.training.run_info import load_dataset_for

    config, device = ctx.config, ctx.device
    data = load_dataset_for(config)
    source_channels = int(data.train.images.shape[1])
    normalize = compute_normalization(data.train) if config.normalize else None
    in_ch = input_channels(config.channels, config.channel_strategy, get_spec(config.model).variable_input,
                           source_channels)
    eval_combo = ("L" if source_channels == 1 else "RGB") if config.channels == "random" else config.channels
    train_loader = build_train_loader(config, data.train, normalize, device, ctx.dist)
    # Validation: the whole split on every rank (small; avoids uneven shards), one fixed combination.
    val_loader = BatchLoader(
        data.val, max(256, config.batch_size), shuffle=False, channels=eval_combo,
        strategy=config.channel_strategy, normalize=normalize, device=str(device), seed=config.seed,
    ) if len(data.val.labels) else None
    # DDP needs the same number of steps on every rank, or the last all-reduce waits forever.
    steps = int(all_reduce(torch.tensor([len(train_loader)], device=device), ctx.dist, "min").item())
    if steps < 1:
        raise TrainingFailed(f"the train split has {len(data.train.labels)} images: not one batch per process")
    return _Data(train_loader=train_loader, val_loader=val_loader, steps_per_epoch=steps,
                 num_classes=data.info.num_classes, classes=list(data.info.classes), in_channels=in_ch,
                 source_channels=source_channels,
                 image_size=int(data.train.images.shape[-1]), normalize=normalize, eval_combo=eval_combo,
                 sizes={"n_train": len(data.train.labels), "n_val": len(data.val.labels),
                        "n_test": len(data.test.labels)})


def build_train_loader(config: TrainConfig, split, normalize, device: torch.device, dist_info: DistInfo):
    """The shuffled, augmented BatchLoader over this rank's shard of ``split`` (a TensorSplit).

    The shard size comes from the loader's own rule (core.data.loader.shard_size, rounded down),
    so the drop_last decision matches the batches the loader will really produce.
    """
    from core.data import BatchLoader
    from core.data.loader import shard_size

    shard = shard_size(len(split.labels), dist_info.world_size)
    return BatchLoader(
        split, config.batch_size, shuffle=True,
        # A last batch of 1 sample breaks BatchNorm in train mode: drop the remainder when there is a full batch.
        drop_last=shard >= config.batch_size,
        augment=augment_config(config.augment),
        channels=config.channels, strategy=config.channel_strategy, normalize=normalize,
        device=str(device), seed=config.seed, rank=dist_info.rank, world_size=dist_info.world_size,
    )


def _build_model(ctx: _Context, data: _Data, fresh: bool = True) -> _Parts:
    """The model on the device, wrapped for the loop (embedding, DDP, compile), and its optimiser.

    ``fresh`` (not a resume): ``init_from`` weights are loaded first. Freezing (train_only 'head',
    loss 'triplet') comes before DDP, so DDP only ever sees the parameters that train.
    """
    from core.models.registry import create_model

    config, device = ctx.config, ctx.device
    model = create_model(config.model, num_classes=data.num_classes, in_channels=data.in_channels,
                         **config.model_options)
    use_triplet = config.loss in ("ce+triplet", "triplet")
    if use_triplet and not hasattr(model, "embed"):
        raise ConfigError(f"invalid training config:\n  - model {config.model!r} has no embed(); "
                          f"loss {config.loss!r} needs one")
    head, facts = _prepare_transfer(ctx, model, fresh)
    model.to(device)
    if config.channels_last:
        # NHWC: tensor-core friendly on CUDA; on this CPU oneDNN's NHWC convolutions trained cnn3
        # 1.3-1.9x faster than NCHW at 32 px (benchmarks/bench_trainer.py). --no-channels-last turns it off.
        to_channels_last(model)
    net: nn.Module = LogitsAndEmbedding(model) if use_triplet else model
    if ctx.dist.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    # Only what trains goes to the optimiser when this run froze something; otherwise every parameter,
    # as before (a resumed run's optimiser state must keep its parameter groups).
    frozen_here = config.train_only == "head" or config.loss == "triplet"
    params = [p for p in model.parameters() if p.requires_grad] if frozen_here else model.parameters()
    optimizer = make_optimizer(config, params)
    scheduler, per_batch = make_scheduler(config, optimizer, data.steps_per_epoch)
    return _Parts(model=model, net=net, use_triplet=use_triplet, optimizer=optimizer, scheduler=scheduler,
                  per_batch=per_batch, criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
                  compile_pending=config.compile, head=head, facts=facts)


# ---- transfer: init_from, train_only, loss 'triplet' ------------------------------------------
def classifier_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """(name, module) of the model's classification head, defined generically as the LAST ``nn.Linear``
    in ``model.named_modules()`` order (registration order): ``fc`` of the ResNets and of the plain
    CNNs (cnn2/3/4). Raises ConfigError for a model without an nn.Linear."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ConfigError(f"invalid training config:\n  - model {type(model).__name__} has no nn.Linear "
                          f"classification head, which train_only 'head' and loss 'triplet' need")
    return found[-1]


def load_init_weights(model: nn.Module, path: str | os.PathLike) -> dict:
    """Copy the tensors of the safetensors file ``path`` whose name and shape match into ``model``.

    Tensors of the model that differ in shape (e.g. a head of another class count) or are absent
    from the file keep their fresh values. Returns {"init_from", "loaded": n, "skipped": [names]};
    raises CheckpointError when no tensor matched (another architecture)."""
    state = ckpt.load_weights(path)
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not loaded:
        raise ckpt.CheckpointError(
            f"{path}: init_from weights share no tensor (same name and shape) with model "
            f"{type(model).__name__} (file e.g. {', '.join(list(state)[:3]) or 'empty'}; "
            f"model e.g. {', '.join(list(own)[:3])}); was it trained with another model or model_options?")
    model.load_state_dict(loaded, strict=False)
    return {"init_from": str(path), "loaded": len(loaded), "skipped": sorted(k for k in own if k not in loaded)}


def _prepare_transfer(ctx: _Context, model: nn.Module, fresh: bool) -> tuple[nn.Module | None, dict]:
    """init_from (new runs only), then freezing: train_only 'head' leaves only the classifier head
    trainable (the rest also stays in eval mode: _set_train_modes); loss 'triplet' freezes the head
    (embedding-only training). Returns (the head for train_only 'head', else None; run-section facts)."""
    config, facts = ctx.config, {}
    if fresh and config.init_from:
        facts["init_from"] = load_init_weights(model, config.init_from_weights())
        ctx.progress.message(f"init_from {facts['init_from']['init_from']}: loaded {facts['init_from']['loaded']} "
                             f"tensors, skipped {facts['init_from']['skipped']}")
    head = None
    if config.train_only == "head" or config.loss == "triplet":
        name, module = classifier_head(model)
        head_params = {id(p) for p in module.parameters()}
        for p in model.parameters():   # freeze what this run does not train (never unfreezes a model option's)
            if (id(p) in head_params) != (config.train_only == "head"):
                p.requires_grad_(False)
        facts["head"] = name
        head = module if config.train_only == "head" else None
    facts["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    facts["total_params"] = sum(p.numel() for p in model.parameters())
    if facts["trainable_params"] == 0:
        raise ConfigError(f"invalid training config:\n  - no parameter of model {config.model!r} would train")
    return head, facts


def _set_train_modes(parts: _Parts) -> None:
    """Train mode for the loop; with train_only 'head', every module but the head stays in eval mode
    (frozen BatchNorm keeps its running statistics, dropout before the head is off)."""
    parts.net.train()
    if parts.head is not None:
        parts.model.train(False)
        parts.head.train(True)


def _restore_resume_state(ctx: _Context, parts: _Parts) -> _Book:
    """Load last_state.pt into the model, optimiser, scheduler and RNGs; the counters to go on with."""
    path = ctx.run.resume_state_path
    saved = ckpt.load_resume_state(path)
    ckpt.load_into(parts.model, saved["model"], path)
    parts.optimizer.load_state_dict(saved["optimizer"])
    scheduler = parts.scheduler
    if scheduler is not None and saved.get("scheduler") and int(saved.get("epochs", -1)) == ctx.config.epochs:
        scheduler.load_state_dict(saved["scheduler"])
    elif scheduler is not None:
        # --epochs changed on resume: the schedule is the one of the new length, fast-forwarded.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "scheduler.step() before optimizer.step()"
            for _ in range(int(saved["global_step"]) if parts.per_batch else int(saved["epoch"])):
                scheduler.step()
    torch.set_rng_state(saved["rng_cpu"])
    if ctx.device.type == "cuda" and saved.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(saved["rng_cuda"], ctx.device)
    return _Book(start_epoch=int(saved["epoch"]) + 1, best_val=float(saved["best_val_acc"]),
                 best_epoch=int(saved["best_epoch"]), global_step=int(saved["global_step"]))


def _write_run_config(ctx: _Context, data: _Data, threads: int, resume: bool, book: _Book,
                      facts: dict | None = None) -> None:
    """config.json = the TrainConfig + a ``run`` section of what this start found out (rank 0); ``facts``:
    trainable_params / total_params, head, and (a new run only) init_from {init_from, loaded, skipped}."""
    from core.training.run_info import model_source_section

    config, device, run = ctx.config, ctx.device, ctx.run
    if ctx.main:
        on_cuda = device.type == "cuda"
        run_section = {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if on_cuda else platform.processor() or "cpu",
            "world_size": ctx.dist.world_size, "process_group": backend_name(ctx.dist),
            "cpu_threads": threads, "versions": library_versions(),
            "num_classes": data.num_classes, "classes": data.classes, "in_channels": data.in_channels,
            "source_channels": data.source_channels, "image_size": data.image_size,
            "normalize_mean": list(data.normalize[0]) if data.normalize else None,
            "normalize_std": list(data.normalize[1]) if data.normalize else None,
            "eval_channels": data.eval_combo, **data.sizes,
            "batch_size_global": config.batch_size * ctx.dist.world_size,
            "amp": autocast_name(device), "command": " ".join(sys.argv),
            **model_source_section(config.model),   # a student's model: its file and sha256
            **(facts or {}),
        }
        if resume:
            run.truncate_rows_after(book.start_epoch - 1)   # drop rows of the epoch that was interrupted
        prior = (run.read_config() or {}).get("run") or {}
        run.write_config({**config.to_dict(),
                          "run": {**prior, **run_section, "created": prior.get("created", time.time())}})
    barrier(ctx.dist)


@dataclass
class _Interval:
    """The steps since the last log line: their losses (on the device) and images."""

    start: float
    losses: list[torch.Tensor] = field(default_factory=list)
    images: int = 0


def _train_epoch(ctx: _Context, data: _Data, parts: _Parts, book: _Book, epoch: int) -> dict:
    """Train one epoch on this rank's shard, then validate; returns the epoch's metrics row.

    No host sync per step: loss and accuracy accumulate on the device; the one sync per log
    interval (_log_interval) checks every step's loss for NaN/inf.
    """
    config, device = ctx.config, ctx.device
    _set_train_modes(parts)
    data.train_loader.set_epoch(epoch)
    epoch_start = time.time()
    loss_sum = torch.zeros((), device=device)          # accumulated on the device: no sync per step
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    interval = _Interval(start=time.time())
    compile_seconds, compile_images = None, 0
    lr_in_epoch = parts.optimizer.param_groups[0]["lr"]

    for step, (x, y) in enumerate(data.train_loader, start=1):
        if step > data.steps_per_epoch:
            break
        check_cancelled()
        ctx.state["step"] = step
        compiling = parts.compile_pending
        if compiling:
            synchronize(device)
            compile_start = time.perf_counter()
        loss, logits = _train_step(ctx, parts, x, y)
        lr_in_epoch = parts.optimizer.param_groups[0]["lr"]
        if parts.per_batch:
            parts.scheduler.step()
        book.global_step += 1

        batch = y.shape[0]
        loss_sum += loss * batch
        correct += (logits.argmax(1) == y).sum()
        seen += batch
        interval.losses.append(loss)
        interval.images += batch
        if compiling:
            # torch.compile compiles during its first forward and backward: that step's time is
            # compile time, reported apart and left out of the epoch's images_per_s.
            synchronize(device)
            compile_seconds, compile_images = time.perf_counter() - compile_start, batch
            parts.compile_pending = False

        if step % config.log_every == 0 or step == data.steps_per_epoch:
            _log_interval(ctx, book, interval, epoch, step, data.steps_per_epoch, lr_in_epoch, epoch_start)
            interval = _Interval(start=time.time())

    train_seconds = time.time() - epoch_start
    totals = all_reduce(torch.stack([loss_sum.float(), correct.float(),
                                     torch.tensor(float(seen), device=device)]), ctx.dist)
    loss_total, correct_total, seen_total = (float(v) for v in totals.cpu())
    if parts.scheduler is not None and not parts.per_batch:
        parts.scheduler.step()
    images_per_s = seen_total / max(train_seconds, 1e-9)
    if compile_seconds is not None:
        timed_images = seen_total - compile_images * ctx.dist.world_size
        timed_seconds = train_seconds - compile_seconds
        if timed_images > 0 and timed_seconds > 0:   # else the compiled step was the whole epoch
            images_per_s = timed_images / timed_seconds

    val_loss, val_acc = _validate(ctx, data, parts)
    row = {
        "epoch": epoch,
        "train_loss": loss_total / max(seen_total, 1),
        "train_acc": correct_total / max(seen_total, 1),
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": lr_in_epoch,
        "seconds": time.time() - epoch_start,
        "images_per_s": images_per_s,
    }
    if compile_seconds is not None:
        row["compile_seconds"] = compile_seconds
    return row


def _train_step(ctx: _Context, parts: _Parts, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss, backward, optimiser step for one batch (x float [B, C, H, W], y int64 [B]).

    Returns (loss: 0-d, logits [B, K]), both detached and still on the device.
    """
    config = ctx.config
    if config.channels_last:
        x = to_channels_last_batch(x)
    with train_autocast(ctx.device):
        out = parts.net(x)
        logits, emb = out if parts.use_triplet else (out, None)
        if config.loss == "triplet":               # embedding only: no cross-entropy, the head is frozen
            loss = triplet_loss(emb.float(), y, config.triplet_margin, config.triplet_mining)
        else:
            loss = parts.criterion(logits.float(), y)
            if parts.use_triplet:
                loss = loss + config.triplet_weight * triplet_loss(
                    emb.float(), y, config.triplet_margin, config.triplet_mining)
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parts.optimizer.step()
    return loss.detach(), logits.detach()


def _log_interval(ctx: _Context, book: _Book, interval: _Interval, epoch: int, step: int, steps: int,
                  lr: float, epoch_start: float) -> None:
    """The one sync per interval: check every step's loss for NaN/inf, then log (steps.jsonl, progress)."""
    losses = torch.stack(interval.losses).float().cpu()
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        bad_step = step - len(losses) + 1 + int(bad[0])
        raise TrainingFailed(
            f"loss became {losses[int(bad[0])].item()} at epoch {epoch}, step {bad_step} "
            f"(lr {lr:g}); the training diverged: try a lower learning rate "
            f"(e.g. --lr {ctx.config.lr / 10:g})"
        )
    now = time.time()
    ips = interval.images * ctx.dist.world_size / max(now - interval.start, 1e-9)
    mean_loss = float(losses.mean())
    if ctx.main:
        append_jsonl(ctx.run.steps_path, {"epoch": epoch, "step": step, "global_step": book.global_step,
                                          "loss": mean_loss, "images_per_s": ips})
        ctx.tb.scalar("train/step_loss", mean_loss, book.global_step)
    ctx.progress.update(epoch, ctx.config.epochs, step, steps, mean_loss, ips, epoch_start)


def _validate(ctx: _Context, data: _Data, parts: _Parts) -> tuple[float | None, float | None]:
    """(val_loss, val_acc) of the plain model on the validation split, in fp32; (None, None) without one."""
    if data.val_loader is None:
        return None, None
    res = run_batches(ckpt.unwrap_model(parts.model), data.val_loader, device=ctx.device,
                      channels_last=ctx.config.channels_last, timed=False)
    return res["loss"], res["accuracy"]


def _track_best(book: _Book, row: dict, last_wins: bool = False) -> bool:
    """Update the best epoch (by val_acc, or train_acc without a validation split); True if this is it.

    ``last_wins`` (loss 'triplet'): the head is not trained, so accuracy is near chance and says
    nothing about the embedding; the LAST epoch is the best one (model.safetensors = the last weights).
    """
    score = row["val_acc"] if row["val_acc"] is not None else row["train_acc"]
    if last_wins or score > book.best_val:
        book.best_val, book.best_epoch = score, row["epoch"]
        return True
    return False


def _commit_epoch(ctx: _Context, parts: _Parts, book: _Book, row: dict, is_best: bool) -> None:
    """Rank 0: record the epoch (metrics row, weights, resume state, status). Order matters:
    last_state.pt is the commit point; a cancel request waits until it is written."""
    config, run, model, epoch = ctx.config, ctx.run, parts.model, row["epoch"]
    with _guard:
        append_jsonl(run.metrics_path, row)
        meta = {"epoch": epoch, "model": config.model, "val_acc": row["val_acc"]}
        if is_best:
            ckpt.save_weights(run.best_weights_path, model, {**meta, "which": "best"})
        if config.checkpoint_every and epoch % config.checkpoint_every == 0:
            ckpt.save_weights(run.epoch_weights_path(epoch), model, {**meta, "which": f"epoch {epoch}"})
        ckpt.save_weights(run.last_weights_path, model, {**meta, "which": "last"})
        ckpt.save_resume_state(run.resume_state_path, {
            "epoch": epoch,
            "epochs": config.epochs,
            "global_step": book.global_step,
            "best_val_acc": book.best_val,
            "best_epoch": book.best_epoch,
            "model": ckpt.state_dict_for_saving(model),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None,
        })
        run.write_status("running", epoch=epoch, message=f"epoch {epoch}/{config.epochs} done",
                         best_epoch=book.best_epoch, best_val_acc=book.best_val)
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
            if row[key] is not None:
                ctx.tb.scalar(f"epoch/{key}", row[key], epoch)
        ctx.tb.flush()
        ctx.progress.end_epoch(row)


def _finish(ctx: _Context, book: _Book) -> dict:
    """Rank 0 evaluates on the test split (fp32) while the other ranks wait, then the run is done."""
    config, run = ctx.config, ctx.run
    message = f"done: {config.epochs} epochs, best val_acc {book.best_val:.4f} at epoch {book.best_epoch}"
    if ctx.main and config.eval_at_end:
        run.write_status("running", message="evaluating on the test split", epoch=config.epochs)
        try:
            result = evaluate_run(run.path, device=str(ctx.device))
            message += f"; test_acc {result['test_acc']:.4f}"
        except Exception as exc:  # noqa: BLE001 - training itself succeeded; say why eval did not
            message += f"; evaluation failed: {type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
    # No rank leaves (and tears the process group down) while rank 0 is still evaluating.
    barrier(ctx.dist)
    if ctx.main:
        run.write_status("done", message=message, finished=time.time(), epoch=config.epochs)
        ctx.progress.message(message)
    return {"state": "done", "message": message, "best_epoch": book.best_epoch, "best_val_acc": book.best_val}


def load_config_for_resume(run_dir: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """The TrainConfig stored in a run's config.json, with ``overrides`` (e.g. epochs=20) applied."""
    path = Path(run_dir) / "config.json"
    config = TrainConfig.from_json(path)
    return config.replace(**overrides) if overrides else config
