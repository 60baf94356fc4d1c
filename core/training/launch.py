"""Start and cancel trainings as detached background processes (used by the dashboard).

    job = launch_training(config, "checkpoints/run7")      # returns at once
    job.poll()                                             # None while running, else the exit code
    cancel_run("checkpoints/run7")                         # SIGTERM -> status cancelled, checkpoint kept

The child is ``python -m core.train --config RUN_DIR/config.json --out RUN_DIR --quiet`` (or the
same under torchrun for ``nproc > 1``) in its own session, so a Streamlit rerun or a closed browser
tab does not kill it; its output goes to RUN_DIR/train.log. The run folder is the only channel
back: poll it with RunFolder.read_status / read_metrics.
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

from core.training.config import ConfigError, TrainConfig
from core.training.run_folder import RunFolder, RunLockedError, pid_alive

REPO_ROOT = Path(__file__).resolve().parents[2]
_LAUNCH_LOCK = threading.Lock()


@dataclass
class LaunchedRun:
    run_dir: Path
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """None while the trainer runs, else its exit code (also reaps it: no zombie left behind)."""
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def cancel(self, timeout: float = 30.0) -> bool:
        return cancel_run(self.run_dir, timeout=timeout, process=self.process)


def launch_training(config: TrainConfig, run_dir: str | os.PathLike, *, nproc: int = 1,
                    python: str = sys.executable, env: dict | None = None) -> LaunchedRun:
    """Validate ``config`` (ConfigError at once, nothing started), write config.json and a 'queued'
    status into ``run_dir``, and start the trainer detached. Raises RunLockedError if a live trainer
    owns the folder."""
    config.validate()
    run = RunFolder(run_dir)
    # One launch at a time per server process: concurrent dashboard sessions are threads, and the
    # check below and the pid written after Popen must not interleave.
    with _LAUNCH_LOCK:
        owner = run.lock_owner()
        if owner and pid_alive(owner):
            raise RunLockedError(run.path, owner)
        # A trainer launched a moment ago has not taken train.lock yet, but its pid is in status.json:
        # without this check a second launch would overwrite config.json under the first trainer.
        current = run.read_status()
        pid = current.get("pid")
        if current.get("state") in ("queued", "running") and pid and pid_alive(int(pid)):
            raise RunLockedError(run.path, int(pid))
        if run.metrics_path.exists() or run.resume_state_path.exists():
            raise ConfigError(f"{run.path} already holds a run; continue it with launch_resume() or choose "
                              f"another folder")
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config.to_dict())
        run.write_status("queued", pid=None, message="starting", started=None, finished=None,
                         epoch=0, epochs=config.epochs)
        cmd = [python, "-m", "core.train", "--config", str(run.config_path), "--out", str(run.path), "--quiet"]
        if nproc > 1:
            cmd = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "core.train", *cmd[3:]]
        child_env = dict(os.environ if env is None else env)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), child_env.get("PYTHONPATH", "")) if p)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        with open(run.path / "train.log", "ab") as log:
            process = subprocess.Popen(cmd, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=child_env, start_new_session=True)
        run.write_status("queued", pid=process.pid, message="starting")
    return LaunchedRun(run.path, process)


def launch_resume(run_dir: str | os.PathLike, *, epochs: int | None = None, python: str = sys.executable) -> LaunchedRun:
    """Continue a killed/cancelled run in the background (``--resume RUN_DIR``)."""
    run = RunFolder(run_dir)
    owner = run.lock_owner()
    if owner and pid_alive(owner):
        raise RunLockedError(run.path, owner)
    current = run.read_status()
    if current.get("state") in ("queued", "running") and current.get("pid") and pid_alive(int(current["pid"])):
        raise RunLockedError(run.path, int(current["pid"]))
    cmd = [python, "-m", "core.train", "--resume", str(run.path), "--quiet"]
    if epochs:
        cmd += ["--epochs", str(int(epochs))]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(run.path / "train.log", "ab") as log:
        process = subprocess.Popen(cmd, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return LaunchedRun(run.path, process)


def cancel_run(run_dir: str | os.PathLike, *, timeout: float = 30.0,
               process: subprocess.Popen | None = None) -> bool:
    """Ask the trainer of ``run_dir`` to stop (SIGTERM to its process group); wait up to ``timeout`` s.

    The trainer records status 'cancelled' and keeps its last completed epoch. Returns True when the
    trainer is gone. A trainer that never started (still 'queued' without a pid) is marked cancelled.
    """
    run = RunFolder(run_dir)
    pid = process.pid if process is not None else (run.lock_owner() or run.read_status().get("pid"))
    if not pid or not pid_alive(int(pid)):
        if run.read_status().get("state") in ("queued", "running"):
            run.write_status("cancelled", message="cancelled before the trainer was running", finished=time.time())
        return True
    pid = int(pid)
    try:
        if os.getpgid(pid) == pid:
            # A trainer we launched leads its own group (start_new_session): torchrun workers get it too.
            os.killpg(pid, signal.SIGTERM)
        else:
            # Started from someone's shell: signal that process only, never its shell's group.
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            return True
        if process is None and not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False
