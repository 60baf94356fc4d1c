"""Background trainings started from the dashboard, with a queue when the machine is busy.

The queue lives in the run folders themselves: a run the user launched while ``max_parallel``
trainings were already running gets config.json and a status ``queued`` with no pid and the
message ``QUEUED_MESSAGE``. A daemon thread (plain Python, no Streamlit calls) starts queued runs
in launch order when a slot frees. Because the state is on disk, a Streamlit restart loses
nothing: the thread picks the queue up again. Trainers are detached processes
(core.training.launch), so reloading the page or closing the tab does not stop them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import streamlit as st

from core.training.run_folder import RunFolder, list_runs, pid_alive

QUEUED_MESSAGE = "waiting for a free training slot"


class JobRegistry:
    """One per server process (st.cache_resource): launched processes + the queue pump."""

    def __init__(self, start_thread: bool = True) -> None:
        self.lock = threading.RLock()
        self.processes: dict[str, object] = {}     # run path -> LaunchedRun (reaped by poll())
        self.roots: set[str] = set()
        self.max_parallel = 1
        self.last_error: dict[str, str] = {}
        if start_thread:  # tests drive pump() themselves
            threading.Thread(target=self._pump_forever, name="archscope-job-queue", daemon=True).start()

    # ---- bookkeeping --------------------------------------------------------------------------
    def active(self) -> list[str]:
        """Run folders whose trainer is alive (launched here, or found running under a watched root)."""
        with self.lock:
            alive = set()
            for path, job in list(self.processes.items()):
                if job.poll() is None:
                    alive.add(path)
                else:
                    del self.processes[path]
            for root in self.roots:
                for run in list_runs(root):
                    st_ = run.read_status()
                    if st_.get("state") in ("running", "queued") and st_.get("pid") and pid_alive(int(st_["pid"])):
                        alive.add(str(run.path))
            return sorted(alive)

    def queued(self) -> list[RunFolder]:
        """Runs waiting for a slot, oldest first."""
        out = []
        with self.lock:
            for root in self.roots:
                for run in list_runs(root):
                    st_ = run.read_status()
                    if st_.get("state") == "queued" and not st_.get("pid") and st_.get("message") == QUEUED_MESSAGE:
                        out.append((st_.get("queued_at", 0), run))
        return [r for _, r in sorted(out, key=lambda t: t[0])]

    # ---- actions ------------------------------------------------------------------------------
    def submit(self, config, run_dir: Path) -> str:
        """Start now when a slot is free, else queue. Returns 'started' or 'queued'.

        Raises ConfigError / RunLockedError from core.training.launch with their own messages.
        """
        from core.training.launch import launch_training

        config = config.validate()    # ConfigError now, not later in the queue
        with self.lock:
            self.roots.add(str(Path(run_dir).parent))
            if len(self.active()) < self.max_parallel:
                self.processes[str(run_dir)] = launch_training(config, run_dir)
                return "started"
            run = RunFolder(run_dir)
            if run.path.exists() and (run.metrics_path.exists() or run.config_path.exists()):
                raise FileExistsError(f"{run.path} already holds a run; choose another run name")
            run.write_config(config.to_dict())
            run.write_status("queued", pid=None, message=QUEUED_MESSAGE, queued_at=time.time(),
                             started=None, finished=None, epoch=0, epochs=config.epochs)
            return "queued"

    def cancel(self, run_dir: Path, timeout: float = 15.0) -> bool:
        from core.training.launch import cancel_run

        with self.lock:
            job = self.processes.get(str(run_dir))
            run = RunFolder(run_dir)
            if job is None and run.read_status().get("message") == QUEUED_MESSAGE:
                run.write_status("cancelled", message="cancelled while waiting in the queue", finished=time.time())
                return True
        ok = cancel_run(run_dir, timeout=timeout, process=getattr(job, "process", None))
        return ok

    def resume(self, run_dir: Path) -> None:
        from core.training.launch import launch_resume

        with self.lock:
            self.roots.add(str(Path(run_dir).parent))
            self.processes[str(run_dir)] = launch_resume(run_dir)

    def watch(self, root: Path) -> None:
        with self.lock:
            self.roots.add(str(root))

    # ---- the pump -----------------------------------------------------------------------------
    def pump(self) -> None:
        """Start queued runs while slots are free (called by the daemon thread every 2 s)."""
        from core.training.config import TrainConfig
        from core.training.launch import launch_training

        with self.lock:
            for run in self.queued():
                if len(self.active()) >= self.max_parallel:
                    return
                try:
                    cfg = TrainConfig.from_dict(run.read_config() or {}, source=str(run.config_path))
                    self.processes[str(run.path)] = launch_training(cfg, run.path)
                except Exception as exc:  # noqa: BLE001 - recorded in the run's status for the user
                    run.write_status("failed", message=f"could not start from the queue: {exc}",
                                     finished=time.time())

    def _pump_forever(self) -> None:
        while True:
            time.sleep(2.0)
            try:
                self.pump()
            except Exception:  # noqa: BLE001 - the pump must never die; the next tick retries
                pass


@st.cache_resource
def job_registry() -> JobRegistry:
    return JobRegistry()
