"""Where a training runs: one launcher interface, two backends (this machine, a Ray cluster).

    launcher = LocalLauncher()                                # default: a detached process here
    launcher = RayJobsLauncher("http://head:8265")            # optional extra `ray` (core/training/ray_jobs.py)
    run_id = launcher.submit(config, "runs/run7", gpus=1, cpus=4)   # the job id is the run id
    launcher.status("runs/run7")["state"]                     # queued | running | done | failed | cancelled
    launcher_for("runs/run7").cancel("runs/run7")             # from a new process: reads runs/run7/launcher.json

Each backend saves its handle (which backend, and what it needs to find the job again: a pid, a
Ray address and submission id) in RUN_DIR/launcher.json, written atomically, so a restarted
dashboard reconnects with ``launcher_for(run_dir)``. The run folder stays the only channel back
from the trainer: a final state the trainer wrote in status.json is the truth; the backend is
asked only what the trainer cannot say itself (still waiting for resources, killed before it
could write).

A launcher is not a queue. Ray Jobs fails a job that waits for resources longer than
``RAY_JOB_START_TIMEOUT_SECONDS`` (15 min by default), so the job queue (core/training/queue.py)
stays in front of any backend: it submits only what ``capacity()`` says fits, and caps the runs
of each user.

The interface itself, the handle file and the request checks are in core/training/launcher_base.py
(re-exported here). Neither module imports torch or ray at load time: core.training.launch and ray
are imported where they are used, so a machine without Ray imports this module.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from core.errors import InvalidInputError
from core.training.launcher_base import (BACKENDS, FINAL_STATES, LAUNCHER_ENV, LAUNCHER_FILE, LIVE_STATES,
                                         Launcher, NoCapacityError, RunBusyError, check_request, cpu_cores,
                                         current_user, handle_path, read_handle, read_status_file,
                                         threads_per_process, visible_gpus, write_handle)
from core.training.ray_jobs import RayJobsLauncher
from core.training.run_folder import RunFolder, is_this_host, list_runs, this_host

if TYPE_CHECKING:
    from core.training.config import TrainConfig

__all__ = ["BACKENDS", "FINAL_STATES", "LAUNCHER_ENV", "LAUNCHER_FILE", "LIVE_STATES", "Launcher", "LocalLauncher",
           "NoCapacityError", "RayJobsLauncher", "RunBusyError", "check_request", "current_user", "handle_path",
           "launcher_for", "make_launcher", "read_handle", "read_status_file", "reconnect", "threads_per_process",
           "cpu_cores", "visible_gpus", "write_handle"]


# ---- this machine -----------------------------------------------------------------------------------
class LocalLauncher(Launcher):
    """Detached ``python -m core.train`` processes on this machine (core/training/launch.py), each with
    its own GPUs through CUDA_VISIBLE_DEVICES; a CPU job gets none (an empty list) when the machine has GPUs."""

    backend = "local"

    def __init__(self, *, gpu_ids: Sequence[str | int] | None = None, cpus: int | None = None,
                 runs_root: str | os.PathLike | None = None, python: str = sys.executable,
                 env: Mapping[str, str] | None = None) -> None:
        """``gpu_ids``: the GPUs to hand out (default: those this process sees); ``cpus``: cores to
        hand out (default: this process's cores); ``runs_root``: a runs folder whose live runs also
        count as busy (runs started by another dashboard; watch() adds more); ``python`` / ``env``:
        the trainers' interpreter and base environment."""
        self.gpu_ids = [str(g) for g in (visible_gpus() if gpu_ids is None else gpu_ids)]
        self.cpus = int(cpus if cpus is not None else cpu_cores())
        self.roots: set[Path] = {Path(runs_root)} if runs_root is not None else set()
        self.python, self.env = python, env
        self._launched: dict[str, Any] = {}     # run path -> LaunchedRun (reaped by _live_runs)

    @property
    def launched(self) -> dict[str, Any]:
        """Run path -> LaunchedRun (its Popen) of the trainers this object started and has not seen end."""
        return self._launched

    def watch(self, root: str | os.PathLike) -> None:
        self.roots.add(Path(root))

    # -- bookkeeping --
    def _live_runs(self) -> dict[str, dict]:
        """Run path -> its local handle, for every live local job this launcher knows of."""
        paths = set(self._launched)
        for root in sorted(self.roots):
            paths.update(str(run.path) for run in list_runs(root))
        live = {}
        for path in sorted(paths):
            job = self._launched.get(path)
            if job is not None and job.poll() is not None:
                del self._launched[path]
            try:
                handle = read_handle(path)
            except InvalidInputError:
                continue
            if handle is not None and (handle["backend"] != "local" or not is_this_host(handle.get("host"))):
                continue          # another backend's job, or a trainer of another machine: not our resources
            status = RunFolder(path).read_status()      # a dead pid (of this machine) reads as failed
            if status.get("state") not in LIVE_STATES or not status.get("pid") \
                    or not is_this_host(status.get("host")):
                continue          # over, waiting in the job queue (no process yet), or placed elsewhere
            # A run without a handle was started by core.training.launch directly (the job queue, a
            # script): its status.json says which GPUs it was given; its CPUs are not recorded.
            live[path] = handle or {"gpus": status.get("gpus"), "cpus": 0, "user": "?"}
        return live

    def _threads(self, cpus: int, nproc: int, config_threads: int | None) -> int | None:
        """``--num-threads`` for a job given ``cpus`` cores: None (the trainer's own default: the idle
        cores, divided between its processes) when the job has the whole machine, else its share."""
        if cpus >= self.cpus and not config_threads:
            return None
        return threads_per_process(cpus, nproc, config_threads)

    def _pick_gpus(self, gpus: int, run_dir: Path) -> list[str]:
        busy = {str(g) for handle in self._live_runs().values() for g in handle.get("gpus") or ()}
        free = [g for g in self.gpu_ids if g not in busy]
        if gpus > len(self.gpu_ids):
            raise InvalidInputError(f"{run_dir.name} asks for {gpus} GPU(s); this machine has {len(self.gpu_ids)}")
        if gpus > len(free):
            raise NoCapacityError(f"{run_dir.name} asks for {gpus} GPU(s); {len(free)} of {len(self.gpu_ids)} "
                                  f"are free now (GPUs {', '.join(sorted(busy)) or '-'} are in use)")
        return free[:gpus]

    def _handle(self, run: RunFolder, launched: Any, granted: list[str], cpus: int, nproc: int,
                user: str | None) -> dict:
        return {"backend": "local", "run_id": run.run_id, "host": this_host(), "pid": launched.pid,
                "gpus": granted, "cpus": cpus, "nproc": nproc, "user": user or current_user(),
                "submitted": time.time()}

    # -- the interface --
    def submit(self, config: "TrainConfig", run_dir: str | os.PathLike, *, gpus: int, cpus: int,
               nproc: int = 1, user: str | None = None) -> str:
        from core.training.launch import launch_training

        config.validate()
        check_request(gpus, cpus, nproc, config.device)
        run = RunFolder(run_dir)
        granted = self._pick_gpus(gpus, run.path)
        # With GPUs on the machine, always set CUDA_VISIBLE_DEVICES (empty for a CPU job): a job
        # that asks for none must not see the cards other jobs hold.
        launched = launch_training(config, run.path, nproc=nproc, python=self.python, env=self.env,
                                   gpus=granted if self.gpu_ids else None,
                                   num_threads=self._threads(cpus, nproc, config.num_threads))
        self._launched[str(run.path)] = launched
        write_handle(run.path, self._handle(run, launched, granted, cpus, nproc, user))
        return run.run_id

    def resume(self, run_dir: str | os.PathLike, *, gpus: int, cpus: int, nproc: int | None = None,
               epochs: int | None = None, user: str | None = None) -> str:
        from core.training.launch import launch_resume, resume_nproc

        run = RunFolder(run_dir)
        nproc = resume_nproc(run.path) if nproc is None else nproc
        device = (run.read_config() or {}).get("device", "auto")
        check_request(gpus, cpus, nproc, device)
        granted = self._pick_gpus(gpus, run.path)
        recorded = ((run.read_config() or {}).get("run") or {}).get("cpu_threads")
        # A run that trained already keeps its thread count (float reductions may split by thread).
        threads = None if recorded else self._threads(cpus, nproc, None)
        launched = launch_resume(run.path, epochs=epochs, nproc=nproc, python=self.python, env=self.env,
                                 gpus=granted if self.gpu_ids else None, num_threads=threads)
        self._launched[str(run.path)] = launched
        write_handle(run.path, self._handle(run, launched, granted, cpus, nproc, user))
        return run.run_id

    def status(self, run_dir: str | os.PathLike) -> dict:
        status = RunFolder(run_dir).read_status()    # a dead pid reads as failed
        status.setdefault("message", "")
        return status

    def cancel(self, run_dir: str | os.PathLike, *, timeout: float = 15.0) -> bool:
        from core.training.launch import cancel_run

        job = self._launched.get(str(Path(run_dir)))
        return cancel_run(run_dir, timeout=timeout, process=getattr(job, "process", None))

    def logs(self, run_dir: str | os.PathLike) -> str:
        try:
            return (Path(run_dir) / "train.log").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def capacity(self) -> dict:
        live = self._live_runs()
        busy = {str(g) for handle in live.values() for g in handle.get("gpus") or ()}
        used_cpus = sum(int(handle.get("cpus") or 0) for handle in live.values())
        by_user: dict[str, int] = {}
        for handle in live.values():
            by_user[handle.get("user", "?")] = by_user.get(handle.get("user", "?"), 0) + 1
        return {"backend": self.backend, "gpus": len(self.gpu_ids),
                "gpus_free": len([g for g in self.gpu_ids if g not in busy]),
                "free_gpu_ids": [g for g in self.gpu_ids if g not in busy],
                "cpus": self.cpus, "cpus_free": max(0, self.cpus - used_cpus),
                # The OS shares this machine's cores: a job's CPUs set its thread count, they are
                # not held for it, so a queue waits for GPUs and slots here, not for cores.
                "cpus_reserved": False, "running": len(live), "by_user": by_user}


# ---- choosing and reconnecting --------------------------------------------------------------------
def make_launcher(spec: str | None = None, **options: Any) -> Launcher:
    """The launcher named by ``spec`` (default: $ARCHSCOPE_LAUNCHER): None, "" or "local" for this
    machine; a Ray dashboard address (``http://head:8265``, ``ray://...`` is not the Jobs API) for
    Ray Jobs. ``options`` go to the backend's constructor."""
    spec = (os.environ.get(LAUNCHER_ENV, "") if spec is None else spec).strip()
    if spec in ("", "local"):
        return LocalLauncher(**options)
    if spec.startswith(("http://", "https://")):
        return RayJobsLauncher(spec, **options)
    raise InvalidInputError(f"launcher {spec!r}: use 'local' or the address of a Ray cluster's dashboard, "
                            f"e.g. http://head-node:8265")


def launcher_for(run_dir: str | os.PathLike, **options: Any) -> Launcher:
    """The launcher that started ``run_dir``, rebuilt from its launcher.json (a new object: this is
    how a restarted dashboard reconnects). A run without a handle is a local one."""
    handle = read_handle(run_dir)
    if handle is None or handle["backend"] == "local":
        return LocalLauncher(**options)
    if not handle.get("address"):
        raise InvalidInputError(f"{handle_path(run_dir)}: a Ray handle without 'address'")
    return RayJobsLauncher(handle["address"], **options)


reconnect = launcher_for
