"""The launcher interface and what every backend shares: the handle file, request checks.

Backends: core/training/launchers.py (LocalLauncher; ``launcher_for`` / ``make_launcher`` choose
one) and core/training/ray_jobs.py (RayJobsLauncher). This module imports neither torch nor ray,
so a Ray job's entrypoint (core/training/ray_entry.py) that reads the handle starts in milliseconds.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from core.errors import EXIT_FAILED, EXIT_LOCKED, ArchScopeError, InvalidInputError
from core.io import atomic_write_json, parse_json
from core.training.run_folder import RunFolder

if TYPE_CHECKING:
    from core.training.config import TrainConfig

LAUNCHER_FILE = "launcher.json"
BACKENDS = ("local", "ray")
# Environment variable naming the default backend for the dashboard and scripts: unset or "local"
# for this machine, or a Ray dashboard address (http://head:8265) for Ray Jobs.
LAUNCHER_ENV = "ARCHSCOPE_LAUNCHER"
FINAL_STATES = ("done", "failed", "cancelled")
LIVE_STATES = ("queued", "running")


class RunBusyError(ArchScopeError, RuntimeError):
    """The run already has a live job (exit code 3, like a locked run folder)."""

    exit_code = EXIT_LOCKED


class NoCapacityError(ArchScopeError, RuntimeError):
    """Not enough free GPUs / CPUs for the job right now: queue it and try again later (exit 1)."""

    exit_code = EXIT_FAILED


# ---- the handle: RUN_DIR/launcher.json -----------------------------------------------------------
def handle_path(run_dir: str | os.PathLike) -> Path:
    """RUN_DIR/launcher.json."""
    return Path(run_dir) / LAUNCHER_FILE


def read_handle(run_dir: str | os.PathLike) -> dict | None:
    """The saved handle of ``run_dir``; None when the run has none (started from a shell, or by an
    ArchScope older than launchers). Raises InvalidInputError for a file that is not a handle."""
    path = handle_path(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot be read ({exc})") from None
    handle = parse_json(text, path, InvalidInputError)
    if not isinstance(handle, dict) or handle.get("backend") not in BACKENDS:
        found = handle.get("backend") if isinstance(handle, dict) else type(handle).__name__
        raise InvalidInputError(f"{path}: 'backend' must be one of {', '.join(BACKENDS)}, got {found!r}")
    return handle


def write_handle(run_dir: str | os.PathLike, handle: Mapping[str, Any]) -> None:
    """Save ``handle`` (must name a known ``backend``) as RUN_DIR/launcher.json, atomically."""
    if handle.get("backend") not in BACKENDS:
        raise ValueError(f"a launcher handle needs 'backend' in {BACKENDS}, got {handle.get('backend')!r}")
    atomic_write_json(handle_path(run_dir), dict(handle))


def read_status_file(run_dir: str | os.PathLike) -> dict:
    """status.json as written, without RunFolder.read_status's pid check (a pid recorded by a
    trainer on another machine says nothing about this one); {"state": "unknown", ...} if unreadable."""
    path = RunFolder(run_dir).status_path
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"state": "unknown", "message": "status.json is missing"}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"state": "unknown", "message": f"status.json cannot be read: {exc}"}
    return status if isinstance(status, dict) else {"state": "unknown", "message": "status.json is not an object"}


# ---- this machine's resources (the local backend's pool; the job queue's defaults) ---------------------
def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as CUDA_VISIBLE_DEVICES entries.

    When this process itself runs under a CUDA_VISIBLE_DEVICES list, its entries are the ids to pass
    on (a child's index 0 is the parent's first visible card, not physical GPU 0). Imports torch
    (here, not at module load: a Ray entrypoint reading handles must start in milliseconds)."""
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        return []
    parent = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return parent[:count] if parent else [str(i) for i in range(count)]


def cpu_cores() -> int:
    """CPU cores this process may use (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS / Windows
        return os.cpu_count() or 1


# ---- request checks shared by every backend -------------------------------------------------------
def check_request(gpus: int, cpus: int, nproc: int, device: str = "auto") -> None:
    """InvalidInputError unless ``gpus`` >= 0, ``cpus`` >= 1 and ``nproc`` >= 1 are integers that fit
    together: a GPU job runs one process per GPU (``gpus == nproc``), and ``device`` agrees."""
    for name, value, low in (("gpus", gpus, 0), ("cpus", cpus, 1), ("nproc", nproc, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    if gpus and gpus != nproc:
        # One trainer process drives one GPU (torchrun for more): more GPUs than processes would sit
        # idle, fewer would make two processes share a card.
        raise InvalidInputError(f"a GPU job runs one process per GPU: ask for gpus={nproc} with nproc={nproc} "
                                f"(got gpus={gpus}), or gpus=0 for a CPU job")
    if gpus and device == "cpu":
        raise InvalidInputError(f"the config says device 'cpu' but the job asks for {gpus} GPU(s): ask for gpus=0")
    if not gpus and device == "cuda":
        raise InvalidInputError("the config says device 'cuda' but the job asks for no GPU: ask for gpus >= 1 "
                                "(a job that asks for none must not use any)")


def threads_per_process(cpus: int, nproc: int, config_threads: int | None = None) -> int:
    """``--num-threads`` for each trainer process: the job's CPUs divided between its processes
    (a config that pins num_threads keeps it)."""
    return int(config_threads) if config_threads else max(1, cpus // nproc)


def current_user() -> str:
    """The login name that submits (for per-user caps); '?' when the platform cannot say."""
    try:
        import getpass
        return getpass.getuser()
    except (ImportError, KeyError, OSError):
        return "?"


# ---- the interface --------------------------------------------------------------------------------
class Launcher(ABC):
    """Starts, watches and stops trainings somewhere. The job id is the run id (the folder name)."""

    backend: ClassVar[str]

    @abstractmethod
    def submit(self, config: "TrainConfig", run_dir: str | os.PathLike, *, gpus: int, cpus: int,
               nproc: int = 1, user: str | None = None) -> str:
        """Start a new training of ``config`` into ``run_dir`` (config.json, status 'queued' and the
        handle are written first) with exactly ``gpus`` GPUs and ``cpus`` CPU cores; returns the run id.
        ``user`` (default current_user()) is recorded with the job: capacity()'s ``by_user`` counts it.

        Raises ConfigError / InvalidInputError for a bad request, RunBusyError when the run has a
        live job, NoCapacityError when the resources cannot be had now (LocalLauncher)."""

    @abstractmethod
    def resume(self, run_dir: str | os.PathLike, *, gpus: int, cpus: int, nproc: int | None = None,
               epochs: int | None = None, user: str | None = None) -> str:
        """Continue a stopped run (``--resume``) with the same promises as submit; returns the run id."""

    @abstractmethod
    def status(self, run_dir: str | os.PathLike) -> dict:
        """status.json of the run with its ``state`` reconciled with what the backend knows; always
        has ``state`` (queued, running, done, failed, cancelled, or unknown) and ``message``."""

    @abstractmethod
    def cancel(self, run_dir: str | os.PathLike, *, timeout: float = 15.0) -> bool:
        """Stop the run (SIGTERM: the trainer records 'cancelled' and keeps its last completed epoch);
        True once it is stopped, False if it still runs after ``timeout`` seconds."""

    @abstractmethod
    def logs(self, run_dir: str | os.PathLike) -> str:
        """The trainer's output so far (stdout and stderr)."""

    @abstractmethod
    def capacity(self) -> dict:
        """What the backend could run now: ``gpus`` / ``cpus`` (total), ``gpus_free`` / ``cpus_free``,
        ``running`` (live jobs) and ``by_user`` (live jobs per user), plus backend details.
        ``cpus_reserved`` False says the CPUs are a thread-count hint, not a reservation (this machine:
        the OS shares cores), so a queue need not wait for them."""

    def watch(self, root: str | os.PathLike) -> None:
        """Also count the live runs under ``root`` (a runs folder) in capacity(): runs another process
        started. Backends that see every job themselves (a cluster's job list) need nothing here."""
