"""Start and cancel trainings as detached background processes; the one trainer command line.

    job = launch_training(config, "checkpoints/run7")      # returns at once
    job.poll()                                             # None while running, else the exit code
    cancel_run("checkpoints/run7")                         # SIGTERM -> status cancelled, checkpoint kept
    train_command(resume="checkpoints/run7", nproc=2)      # the argv, for anyone who starts a trainer

``train_command`` is the only place that spells ``python -m core.train ...`` (or the same under
torchrun for ``nproc > 1``); the job queue (core/training/queue.py), ``launch_resume`` and
core.suite all build their command with it, and their environment with ``child_env``. The child
runs in its own session, so a Streamlit rerun or a closed browser tab does not kill it; its
output goes to RUN_DIR/train.log. The run folder is the only channel back: poll it with
RunFolder.read_status / read_metrics.

Every pid written here goes with its ``host`` (and ``pgid``, the group the child leads), and the
ownership checks test a pid only on its own host (run_folder.owner_alive): a run owned by a
trainer on another machine counts as owned while its status says queued/running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from core.errors import FailedError, InvalidInputError
from core.training.config import ConfigError, TrainConfig
from core.training.run_folder import (WAITING_FOR_SLOT, RunFolder, RunLockedError, is_this_host, owner_alive,
                                      pid_alive, this_host)

_LAUNCH_LOCK = threading.Lock()

# torchrun with its own c10d rendezvous on a free port (port 0), not --standalone: --standalone
# always listens on 29500, so two multi-process trainings started side by side would collide.
TORCHRUN = ("-m", "torch.distributed.run", "--nnodes=1", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0")


def train_command(*, config: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                  resume: str | os.PathLike | None = None, nproc: int = 1, epochs: int | None = None,
                  device: str | None = None, num_threads: int | None = None, quiet: bool = True,
                  python: str = sys.executable) -> list[str]:
    """The argv of one trainer: ``--config CONFIG --out OUT`` for a new run, or ``--resume RUN_DIR``.

    ``nproc > 1`` runs it under torchrun (one process per GPU, DistributedDataParallel).
    ``epochs``, ``device`` and ``num_threads`` add the matching flags (the ones a resume may change).
    """
    if (resume is None) == (config is None or out is None) or (resume is not None and (config or out)):
        raise ValueError("train_command needs either config= and out=, or resume= alone")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise InvalidInputError(f"the number of training processes must be an integer >= 1, got {nproc!r}")
    args = ["--resume", str(resume)] if resume is not None else ["--config", str(config), "--out", str(out)]
    if epochs is not None:
        args += ["--epochs", str(int(epochs))]
    if device:
        args += ["--device", str(device)]
    if num_threads:
        args += ["--num-threads", str(int(num_threads))]
    if quiet:
        args.append("--quiet")
    if nproc == 1:
        return [python, "-m", "core.train", *args]
    return [python, *TORCHRUN, f"--nproc-per-node={nproc}", "-m", "core.train", *args]


def child_env(*, gpus: Sequence[str | int] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a child trainer: ``base`` (default os.environ) with unbuffered output and,
    when ``gpus`` is given, ``CUDA_VISIBLE_DEVICES`` set to exactly those GPUs (an empty list hides
    every GPU). ``core`` is an installed package, so nothing is added to PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONUNBUFFERED", "1")     # train.log shows each line when it is printed
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return env


def resume_nproc(run_dir: str | os.PathLike) -> int:
    """Processes a run was trained with: config.json ``run.world_size`` (written by the trainer),
    else the ``nproc`` the launcher recorded in status.json (a run stopped before training), else 1."""
    run = RunFolder(run_dir)
    recorded = ((run.read_config() or {}).get("run") or {}).get("world_size") or run.read_status().get("nproc")
    try:
        return max(1, int(recorded or 1))
    except (TypeError, ValueError):
        return 1


@dataclass
class LaunchedRun:
    """A trainer started in the background: its run folder and its process (the torchrun agent
    when ``nproc > 1``)."""

    run_dir: Path
    process: subprocess.Popen
    gpus: tuple[str, ...] | None = None     # CUDA_VISIBLE_DEVICES it was given (None: inherited)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """None while the trainer runs, else its exit code (also reaps it: no zombie left behind)."""
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the trainer to exit; its exit code."""
        return self.process.wait(timeout)

    def cancel(self, timeout: float = 30.0) -> bool:
        """SIGTERM the trainer (see cancel_run); True when it is gone."""
        return cancel_run(self.run_dir, timeout=timeout, process=self.process)


def _refuse_if_owned(run: RunFolder) -> None:
    """RunLockedError when a live trainer owns ``run``: by train.lock, or by the pid in status.json
    of a trainer launched a moment ago that has not taken train.lock yet (without this check a
    second launch would overwrite config.json under the first trainer)."""
    owner, host = run.lock_holder()
    if owner and owner_alive(owner, host):
        raise RunLockedError(run.path, owner, host)
    current = run.read_status()
    pid = current.get("pid")
    if current.get("state") in ("queued", "running") and pid and owner_alive(int(pid), current.get("host")):
        raise RunLockedError(run.path, int(pid), current.get("host"))


def _start(run: RunFolder, cmd: list[str], env: dict[str, str], nproc: int,
           gpus: Sequence[str | int] | None) -> LaunchedRun:
    """Popen ``cmd`` detached (own session, output to train.log) and record its pid, host and process
    group in status.json (the trainer later writes its own pid; the group stays the launcher's)."""
    with open(run.path / "train.log", "ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    shown = None if gpus is None else tuple(str(g) for g in gpus)
    # start_new_session: the child leads a new group whose id is its pid; torchrun workers join it,
    # so cancel_run signals the whole group even once rank 0 has written its own pid.
    run.write_status("queued", pid=process.pid, host=this_host(), pgid=process.pid, message="starting", nproc=nproc,
                     gpus=None if shown is None else list(shown), **{WAITING_FOR_SLOT: False})
    return LaunchedRun(run.path, process, shown)


def launch_training(config: TrainConfig, run_dir: str | os.PathLike, *, nproc: int = 1,
                    python: str = sys.executable, env: Mapping[str, str] | None = None,
                    gpus: Sequence[str | int] | None = None, num_threads: int | None = None) -> LaunchedRun:
    """Validate ``config`` (ConfigError at once, nothing started), write config.json and a 'queued'
    status into ``run_dir``, and start the trainer detached.

    ``env`` is the child's base environment (default os.environ); ``gpus`` its CUDA_VISIBLE_DEVICES;
    ``num_threads`` its ``--num-threads``. The process count is recorded in status.json (``nproc``)
    so that a resume uses the same. Raises RunLockedError if a live trainer owns the folder.
    """
    config.validate()
    run = RunFolder(run_dir)
    cmd = train_command(config=run.config_path.resolve(), out=run.path.resolve(), nproc=nproc,
                        num_threads=num_threads, python=python)
    # One launch at a time per server process: concurrent dashboard sessions are threads, and the
    # check below and the pid written after Popen must not interleave.
    with _LAUNCH_LOCK:
        _refuse_if_owned(run)
        if run.metrics_path.exists() or run.resume_state_path.exists():
            raise ConfigError(f"{run.path} already holds a run; continue it with launch_resume() or choose "
                              f"another folder")
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config.to_dict())
        run.write_status("queued", pid=None, message="starting", started=None, finished=None,
                         epoch=0, epochs=config.epochs)
        return _start(run, cmd, child_env(gpus=gpus, base=env), nproc, gpus)


def launch_resume(run_dir: str | os.PathLike, *, epochs: int | None = None, nproc: int | None = None,
                  python: str = sys.executable, env: Mapping[str, str] | None = None,
                  gpus: Sequence[str | int] | None = None, num_threads: int | None = None) -> LaunchedRun:
    """Continue a killed/cancelled run in the background (``--resume RUN_DIR``).

    ``nproc`` defaults to the run's own process count (resume_nproc). A run stopped before its
    first epoch (e.g. cancelled while queued) starts from epoch 0. Raises RunLockedError if a live
    trainer owns the folder and ConfigError if the folder has no config.json.
    """
    run = RunFolder(run_dir)
    if not run.config_path.exists():
        raise ConfigError(f"{run.config_path}: missing; cannot resume that folder")
    nproc = resume_nproc(run.path) if nproc is None else nproc
    cmd = train_command(resume=run.path.resolve(), nproc=nproc, epochs=epochs, num_threads=num_threads,
                        python=python)
    with _LAUNCH_LOCK:
        _refuse_if_owned(run)
        return _start(run, cmd, child_env(gpus=gpus, base=env), nproc, gpus)


def _signal_trainer(pid: int, pgid: int | None) -> None:
    """SIGTERM the trainer ``pid``: its whole process group when it belongs to the group the launcher
    created (``pgid``, or a group it leads itself), else that process alone."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return
    try:
        if group == pid or (pgid and group == int(pgid)):
            # A trainer we launched leads its own group (start_new_session): torchrun workers get it too.
            os.killpg(group, signal.SIGTERM)
        else:
            # Started from someone's shell: signal that process only, never its shell's group.
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _record_cancel_if_unrecorded(run: RunFolder) -> None:
    """After a trainer we signalled is gone: a status.json still queued/running means it could not
    record the cancel itself (SIGTERM before it installed its handler, or a torchrun agent that took
    its workers down). Write 'cancelled', so that such a run never reads as running, nor as failed."""
    current = run.read_raw_status()
    if current.get("state") not in ("queued", "running"):
        return        # the trainer's own final word (or a folder without status) stays
    if current.get("state") == "queued" or not current.get("started"):
        message = "cancelled before the trainer was running"
    else:
        message = f"cancelled; the trainer stopped without recording it; continue with --resume {run.path}"
    run.write_status("cancelled", message=message, finished=time.time(), **{WAITING_FOR_SLOT: False})


def cancel_run(run_dir: str | os.PathLike, *, timeout: float = 30.0,
               process: subprocess.Popen | None = None) -> bool:
    """Ask the trainer of ``run_dir`` to stop (SIGTERM to its process group); wait up to ``timeout`` s.

    The trainer records status 'cancelled' and keeps its last completed epoch. Returns True when the
    trainer is gone. A trainer that never started (still 'queued' without a pid), or one that was
    gone before it could record the cancel (SIGTERM during its first imports), is marked cancelled
    here. Raises FailedError for a trainer on another host: its pid cannot be signalled from here.
    """
    run = RunFolder(run_dir)
    status = run.read_status()
    if process is not None:
        pid, host = process.pid, None
    else:
        pid, host = run.lock_holder()
        if not pid:
            pid, host = status.get("pid"), status.get("host")
    if pid and not is_this_host(host):
        raise FailedError(f"{run.path} is trained by process {pid} on host {host}: cancel it there, or through "
                          f"the launcher that started it (launcher_for(run_dir).cancel)")
    if not pid or not pid_alive(int(pid)):
        if not pid and run.read_raw_status().get("state") in ("queued", "running"):
            # Never launched (no pid). A dead pid is left alone: read_status reports that crash as failed.
            run.write_status("cancelled", message="cancelled before the trainer was running", finished=time.time(),
                             **{WAITING_FOR_SLOT: False})
        return True
    pid = int(pid)
    _signal_trainer(pid, status.get("pgid"))
    deadline = time.time() + timeout
    while time.time() < deadline:
        gone = process.poll() is not None if process is not None else not pid_alive(pid)
        if gone:
            _record_cancel_if_unrecorded(run)
            return True
        time.sleep(0.1)
    return False
