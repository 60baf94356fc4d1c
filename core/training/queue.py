"""ArchScope's training queue, in front of any launcher backend (this machine, a Ray cluster).

    jobs = JobRegistry()                          # the dashboard keeps one per server process
    jobs.submit(config, Path("checkpoints/run7"))  # 'started' or 'queued'
    jobs.cancel(Path("checkpoints/run7"))
    jobs.resume(Path("checkpoints/run7"))          # 'started' or 'queued' (same rules)

Why a queue of our own. A launcher (core/training/launchers.py) starts a training somewhere; it
is not a queue: Ray Jobs fails a job that waits for resources longer than
RAY_JOB_START_TIMEOUT_SECONDS (15 min by default), and the local backend refuses a job whose GPUs
are taken. So a run leaves this queue only when ``launcher.capacity()`` says it fits now: a free
slot (``max_parallel`` trainings at once), its GPUs (``gpus_free``), its CPUs (``cpus_free``, where
the backend reserves them), and its user under ``max_runs_per_user`` (``by_user``).

The backend is the ``launcher`` argument, by default make_launcher() from $ARCHSCOPE_LAUNCHER
(unset: this machine). On this machine each training gets GPUs of its own through
``CUDA_VISIBLE_DEVICES``: one, or ``nproc`` for a torchrun job, so two trainings never share a
card; a CPU-only run (``device: cpu``) on a GPU machine gets none (an empty list). The GPU list comes
from ``torch.cuda.device_count()`` or the ``gpus`` argument (tests use a fake list). When several
trainings may run side by side the CPU cores are divided between the slots (``--num-threads``),
unless a config pins ``num_threads``.

The queue lives in the run folders themselves: a run that cannot start yet gets config.json and
a status ``queued`` with ``waiting_for_slot: true`` (run_folder.WAITING_FOR_SLOT), ``queued_at``,
the ``nproc`` it asks for, its ``user`` and ``waiting_because`` (why it waits, for people). A daemon
thread (plain Python) starts waiting runs in launch order when they fit. Because the state is on
disk, a restart of the dashboard loses nothing: the thread picks the queue up again, and a run is
cancelled through the launcher that started it (launchers.launcher_for reads RUN_DIR/launcher.json).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from core.errors import FailedError, InvalidInputError
from core.training.config import ConfigError, TrainConfig
from core.training.launch import resume_nproc
from core.training.launcher_base import (LAUNCHER_ENV, LIVE_STATES, Launcher, NoCapacityError, cpu_cores,
                                         current_user, read_handle, visible_gpus)
from core.training.launchers import LocalLauncher, launcher_for, make_launcher
from core.training.run_folder import WAITING_FOR_SLOT, RunFolder, list_runs, waiting_for_slot

__all__ = ["JobRegistry", "QUEUED_MESSAGE", "REMOTE_MAX_PARALLEL", "USER_CAP_ENV", "cpu_cores", "visible_gpus"]

QUEUED_MESSAGE = "waiting for a free training slot"   # shown to the user; never parsed
# Trainings one dashboard keeps in flight on a cluster by default: the cluster's free resources are
# the real limit there; this only bounds what one queue submits at once (the Train page offers 1-8).
REMOTE_MAX_PARALLEL = 8
# Environment variable with the most live runs one user may have (the dashboard's registry reads it).
USER_CAP_ENV = "ARCHSCOPE_MAX_RUNS_PER_USER"
# Why a run must wait: for its user's cap (the runs behind it may still start) or for resources
# (it holds the runs behind it back, so a big job is not starved by small ones).
WAIT_USER, WAIT_RESOURCES = "user", "resources"


class JobRegistry:
    """The queue of waiting runs and the launched trainings of one server process, on one launcher."""

    def __init__(self, start_thread: bool = True, *, launcher: Launcher | None = None,
                 gpus: list[str | int] | None = None, cores: int | None = None, max_parallel: int | None = None,
                 max_runs_per_user: int | None = None, user: str | None = None, cpus_per_run: int | None = None,
                 python: str = sys.executable) -> None:
        """``launcher``: where trainings run (default make_launcher() from $ARCHSCOPE_LAUNCHER; for this
        machine a LocalLauncher with ``gpus`` (default visible_gpus()), ``cores`` (default cpu_cores())
        and ``python``, the trainers' interpreter). ``max_parallel``: trainings at once (default: one
        per GPU, or 1, on this machine; REMOTE_MAX_PARALLEL on a cluster). ``max_runs_per_user``: live
        runs per user (None: no cap). ``user``: who submits (default getpass.getuser()).
        ``cpus_per_run``: CPUs a training asks for (default: this machine's cores divided between the
        slots; one per process on a cluster). ``start_thread=False`` leaves calling pump() to the
        caller (tests)."""
        self.lock = threading.RLock()
        self.launcher = launcher if launcher is not None else _default_launcher(gpus, cores, python)
        self.local = isinstance(self.launcher, LocalLauncher)
        self.gpus: list[str] = list(self.launcher.gpu_ids) if self.local else []
        self.cores = max(1, int(self.launcher.cpus if self.local else (cores or cpu_cores())))
        if max_parallel is None:
            max_parallel = max(1, len(self.gpus)) if self.local else REMOTE_MAX_PARALLEL
        self.max_parallel = max_parallel
        for name, value in (("max_runs_per_user", max_runs_per_user), ("cpus_per_run", cpus_per_run)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInputError(f"{name} must be an integer >= 1 (or None), got {value!r}")
        self.max_runs_per_user = max_runs_per_user
        self.cpus_per_run = cpus_per_run
        self.user = user or current_user()
        self.roots: set[str] = set()
        self._submitted: set[str] = set()     # run paths this registry handed to self.launcher
        if start_thread:
            threading.Thread(target=self._pump_forever, name="archscope-job-queue", daemon=True).start()

    @classmethod
    def from_environment(cls, start_thread: bool = True, **options: Any) -> "JobRegistry":
        """A registry configured by the environment: the backend from $ARCHSCOPE_LAUNCHER and the
        per-user cap from $ARCHSCOPE_MAX_RUNS_PER_USER (unset or empty: no cap). ``options`` go to
        the constructor (and win over the environment)."""
        text = os.environ.get(USER_CAP_ENV, "").strip()
        if text and "max_runs_per_user" not in options:
            if not text.isdigit() or int(text) < 1:
                raise InvalidInputError(f"{USER_CAP_ENV}={text!r}: give a whole number >= 1, or leave it unset "
                                        f"for no cap")
            options["max_runs_per_user"] = int(text)
        return cls(start_thread, **options)

    # ---- bookkeeping --------------------------------------------------------------------------
    @property
    def processes(self) -> dict[str, Any]:
        """Run path -> LaunchedRun of the trainers this registry started on this machine and that have
        not been seen ending (empty on a cluster backend)."""
        return getattr(self.launcher, "launched", {})

    def launcher_of(self, run_dir: str | os.PathLike) -> Launcher:
        """The launcher that started ``run_dir`` (launchers.launcher_for, from its launcher.json): this
        registry's own when it is that one (it holds the local processes to reap, the Ray client)."""
        if str(Path(run_dir)) in self._submitted:
            return self.launcher
        handle = read_handle(run_dir)
        backend = handle["backend"] if handle else "local"
        if backend == self.launcher.backend and (
                backend == "local" or handle.get("address", "").rstrip("/") == getattr(self.launcher, "address", None)):
            return self.launcher
        # No GPU detection for a launcher rebuilt only to watch or stop a run.
        return launcher_for(run_dir, **({"gpu_ids": [], "cpus": 1} if backend == "local" else {}))

    def active(self) -> list[str]:
        """Run folders with a live training: started here, or found under a watched root (a pid alive
        on this machine, a trainer on another host whose status says queued/running, or a job a
        cluster still holds). A trainer started here that has exited is forgotten, freeing its slot."""
        with self.lock:
            alive = {path for path, job in list(self.processes.items()) if job.poll() is None}
            for root in self.roots:
                for run in list_runs(root):
                    if str(run.path) not in alive and self._is_live(run):
                        alive.add(str(run.path))
            return sorted(alive)

    def _is_live(self, run: RunFolder) -> bool:
        status = run.read_status()            # a dead pid of this machine reads as failed
        if status.get("state") not in LIVE_STATES or waiting_for_slot(status):
            return False
        try:
            handle = read_handle(run.path)
        except InvalidInputError:
            handle = None
        if str(run.path) not in self._submitted and (handle is None or handle["backend"] == "local"):
            return bool(status.get("pid"))
        try:   # a cluster job: ask its backend, which also records a job it ended without the trainer
            return self.launcher_of(run.path).status(run.path).get("state") in LIVE_STATES
        except (FailedError, InvalidInputError):
            return True                        # cannot ask now: as its status says

    def busy_gpus(self) -> set[str]:
        """GPUs of this machine's pool held by live trainings (empty on a cluster backend)."""
        return set(self.gpus) - set(self.free_gpus())

    def free_gpus(self) -> list[str]:
        """GPUs of this machine's pool no live training holds, in pool order (empty on a cluster)."""
        with self.lock:
            return list(self.launcher.capacity().get("free_gpu_ids", []))

    def queued(self) -> list[RunFolder]:
        """Runs waiting in this queue, oldest first."""
        out = []
        with self.lock:
            for root in self.roots:
                for run in list_runs(root):
                    status = run.read_status()
                    if waiting_for_slot(status):
                        out.append((status.get("queued_at", 0), run))
        return [r for _, r in sorted(out, key=lambda t: t[0])]

    def gpus_needed(self, config: TrainConfig, nproc: int = 1, total: int | None = None) -> int:
        """GPUs a training takes: none for ``device: cpu`` or where there are none (``total``: the
        backend's GPUs, default this machine's pool or the cluster's), else one per process. Raises
        InvalidInputError when the backend cannot give that many."""
        if config.device == "cpu":
            return 0
        total = (len(self.gpus) if self.local else int(self.launcher.capacity()["gpus"])) if total is None else total
        where = "this machine has" if self.local else f"the cluster at {getattr(self.launcher, 'address', '?')} has"
        if not total:
            if config.device == "cuda":
                place = "on this machine" if self.local else f"on the cluster at {getattr(self.launcher, 'address', '?')}"
                raise InvalidInputError(f"device 'cuda': no CUDA GPU is available {place} (use cpu or auto)")
            return 0
        if nproc > total:
            raise InvalidInputError(f"{nproc} training processes need {nproc} GPUs; {where} {total}")
        return nproc

    def request(self, config: TrainConfig, nproc: int = 1, capacity: dict | None = None) -> tuple[int, int]:
        """(GPUs, CPUs) a training asks its launcher for. CPUs: ``cpus_per_run``, else this machine's
        cores divided between the slots (a job given every core runs with the trainer's own thread
        default), else one per process on a cluster."""
        capacity = self.launcher.capacity() if capacity is None else capacity
        gpus = self.gpus_needed(config, nproc, total=len(self.gpus) if self.local else int(capacity.get("gpus", 0)))
        if self.cpus_per_run is not None:
            cpus = self.cpus_per_run
        elif self.local:
            cpus = self.cores // max(1, self.max_parallel)
        else:
            cpus = nproc
        return gpus, max(nproc, cpus)

    def why_wait(self, gpus: int, cpus: int, user: str, capacity: dict) -> tuple[str, str] | None:
        """(WAIT_USER or WAIT_RESOURCES, why for people) when a training of ``user`` asking for
        ``gpus`` / ``cpus`` cannot start now according to ``capacity``; None when it fits."""
        in_flight = int(capacity.get("running", 0)) + int(capacity.get("pending", 0))
        mine = int((capacity.get("by_user") or {}).get(user, 0))
        if self.max_runs_per_user is not None and mine >= self.max_runs_per_user:
            return WAIT_USER, f"{user} has {mine} live run(s), the most one user may have ({self.max_runs_per_user})"
        if in_flight >= self.max_parallel:
            return WAIT_RESOURCES, f"{in_flight} training(s) in flight, the most at once ({self.max_parallel})"
        if gpus > int(capacity.get("gpus_free", 0)):
            return WAIT_RESOURCES, f"needs {gpus} GPU(s), {capacity.get('gpus_free', 0)} free"
        if capacity.get("cpus_reserved", True) and cpus > int(capacity.get("cpus_free", 0)):
            return WAIT_RESOURCES, f"needs {cpus} CPU(s), {capacity.get('cpus_free', 0)} free"
        return None

    # ---- actions ------------------------------------------------------------------------------
    def submit(self, config: TrainConfig, run_dir: Path, *, nproc: int = 1, user: str | None = None) -> str:
        """Start now when the backend has room (and ``user`` is under the cap), else queue. Returns
        'started' or 'queued'.

        Raises ConfigError / RunLockedError / RunBusyError (the launcher), InvalidInputError (more
        GPUs than the backend has, or a folder that already holds a run) and FailedError (a cluster
        that does not answer) with their own messages.
        """
        config = config.validate()    # ConfigError now, not later in the queue
        run_dir, user = Path(run_dir), user or self.user
        with self.lock:
            wait = self._start_now_or_why_not(run_dir, config, nproc, user, lambda gpus, cpus: self.launcher.submit(
                config, run_dir, gpus=gpus, cpus=cpus, nproc=nproc, user=user))
            if wait is None:
                return "started"
            run = RunFolder(run_dir)
            if run.path.exists() and (run.metrics_path.exists() or run.config_path.exists()):
                raise InvalidInputError(f"{run.path} already holds a run; choose another run name")
            run.write_config(config.to_dict())
            run.write_status("queued", pid=None, host=None, message=QUEUED_MESSAGE, waiting_because=wait[1],
                             queued_at=time.time(), nproc=nproc, user=user, resume=False, started=None, finished=None,
                             epoch=0, epochs=config.epochs, **{WAITING_FOR_SLOT: True})
            return "queued"

    def cancel(self, run_dir: Path, timeout: float = 15.0) -> bool:
        """Cancel a run: a waiting one leaves the queue as 'cancelled' (resumable: it starts from
        epoch 0); a started one is stopped by the launcher that started it (SIGTERM: the trainer
        records 'cancelled'). True when it is stopped."""
        with self.lock:
            run = RunFolder(run_dir)
            if waiting_for_slot(run.read_status()):
                run.write_status("cancelled", message="cancelled while waiting in the queue", finished=time.time(),
                                 **{WAITING_FOR_SLOT: False})
                return True
            launcher = self.launcher_of(run_dir)
        return launcher.cancel(run_dir, timeout=timeout)

    def resume(self, run_dir: Path, *, epochs: int | None = None, user: str | None = None) -> str:
        """Continue a stopped run with its own process count when the backend has room, else queue it.
        Returns 'started' or 'queued'. Raises ConfigError (no config.json), RunLockedError / RunBusyError."""
        run_dir, user = Path(run_dir), user or self.user
        run = RunFolder(run_dir)
        stored = run.read_config()
        if stored is None:
            raise ConfigError(f"{run.config_path}: missing or unreadable; cannot resume that folder")
        config = TrainConfig.from_dict(stored, source=str(run.config_path))
        nproc = resume_nproc(run_dir)
        with self.lock:
            wait = self._start_now_or_why_not(run_dir, config, nproc, user, lambda gpus, cpus: self.launcher.resume(
                run_dir, gpus=gpus, cpus=cpus, nproc=nproc, epochs=epochs, user=user))
            if wait is None:
                return "started"
            # pid None: the pid of the trainer that stopped is not this run's trainer.
            run.write_status("queued", pid=None, host=None, message=QUEUED_MESSAGE, waiting_because=wait[1],
                             queued_at=time.time(), nproc=nproc, user=user, resume=True, resume_epochs=epochs,
                             **{WAITING_FOR_SLOT: True})
            return "queued"

    def _start_now_or_why_not(self, run_dir: Path, config: TrainConfig, nproc: int, user: str,
                              start: Callable[[int, int], object]) -> tuple[str, str] | None:
        """Call ``start(gpus, cpus)`` when the backend has room for this run now (None: started), else
        return why it must wait ((reason, message)). Caller holds ``self.lock``."""
        self.watch(run_dir.parent)
        capacity = self.launcher.capacity()
        gpus, cpus = self.request(config, nproc, capacity)
        wait = self.why_wait(gpus, cpus, user, capacity)
        if wait is None:
            try:
                start(gpus, cpus)
                self._submitted.add(str(run_dir))
                return None
            except NoCapacityError as exc:   # taken in between by another process: wait in line
                wait = (WAIT_RESOURCES, str(exc))
        return wait

    def watch(self, root: Path) -> None:
        """Also count the live and waiting runs under ``root`` (a runs folder)."""
        with self.lock:
            self.roots.add(str(root))
            self.launcher.watch(root)

    # ---- the pump -----------------------------------------------------------------------------
    def pump(self) -> None:
        """Start waiting runs, oldest first, while the backend has room (the daemon thread calls it
        every 2 s). The oldest run that does not fit yet (e.g. wants two GPUs, one is free) holds the
        ones behind it back, so a big job is not starved by small ones; a run held only by its user's
        cap does not hold back the runs of other users."""
        with self.lock:
            queued = self.queued()
            if not queued:
                return
            try:
                capacity = self.launcher.capacity()
            except FailedError:
                return                      # the cluster does not answer: the next tick retries
            for run in queued:
                outcome = self._start_waiting(run, capacity)
                if outcome == "stop":
                    return
                if outcome == "started":
                    capacity = self.launcher.capacity()

    def _start_waiting(self, run: RunFolder, capacity: dict) -> str:
        """Start one waiting run if it fits: 'started'; 'stop' when it must wait for resources (the
        runs behind it wait too); 'next' when it is held by its user's cap or failed for good."""
        status = run.read_status()
        user = status.get("user") or self.user
        try:
            cfg = TrainConfig.from_dict(run.read_config() or {}, source=str(run.config_path))
            nproc = int(status.get("nproc") or 1)
            gpus, cpus = self.request(cfg, nproc, capacity)
            wait = self.why_wait(gpus, cpus, user, capacity)
            if wait is not None:
                if wait[1] != status.get("waiting_because"):
                    run.write_status("queued", waiting_because=wait[1])
                return "next" if wait[0] == WAIT_USER else "stop"
            if status.get("resume"):
                self.launcher.resume(run.path, gpus=gpus, cpus=cpus, nproc=nproc, epochs=status.get("resume_epochs"),
                                     user=user)
            else:
                self.launcher.submit(cfg, run.path, gpus=gpus, cpus=cpus, nproc=nproc, user=user)
            self._submitted.add(str(run.path))
            return "started"
        except (NoCapacityError, FailedError):
            return "stop"                   # taken in between, or the cluster is unreachable: next tick
        except Exception as exc:  # noqa: BLE001 - recorded in the run's status for the user
            run.write_status("failed", message=f"could not start from the queue: {exc}",
                             finished=time.time(), **{WAITING_FOR_SLOT: False})
            return "next"

    def _pump_forever(self) -> None:
        while True:
            time.sleep(2.0)
            try:
                self.pump()
            except Exception:  # noqa: BLE001 - the pump must never die; the next tick retries
                pass


def _default_launcher(gpus: list[str | int] | None, cores: int | None, python: str) -> Launcher:
    """make_launcher() from $ARCHSCOPE_LAUNCHER; this machine's gets the GPU pool, cores and interpreter."""
    spec = os.environ.get(LAUNCHER_ENV, "").strip()
    if spec in ("", "local"):
        return LocalLauncher(gpu_ids=gpus, cpus=cores, python=python)
    return make_launcher(spec)
