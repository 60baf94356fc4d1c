"""Trainings as Ray Jobs on a Ray cluster (optional extra ``ray``: ``pip install -e .[ray]``).

    launcher = RayJobsLauncher("http://head-node:8265")      # the Ray dashboard's address
    launcher.submit(config, "/shared/runs/run7", gpus=1, cpus=4)
    launcher.status("/shared/runs/run7")                     # status.json, reconciled with Ray
    launcher.cancel("/shared/runs/run7")                     # Ray: SIGTERM, SIGKILL 3 s later

Ray runs an existing engine's scheduling (which node, which GPUs); ArchScope only submits. Each
job asks for its GPUs and CPUs explicitly (``entrypoint_num_gpus`` / ``entrypoint_num_cpus``):
Ray sets CUDA_VISIBLE_DEVICES only for a job that asks for GPUs, and a job that asks for none
would see every GPU of its node (core/training/ray_entry.py hides them). The entrypoint is the
trainer's own command line (core.training.launch.train_command) behind that small wrapper.

Ray copies nothing back: run folders must live on storage that the dashboard and every Ray worker
see at the same absolute path (NFS, a shared disk). Ray Jobs is not a queue either: a job still
PENDING after ``RAY_JOB_START_TIMEOUT_SECONDS`` (15 min by default, set on the cluster) fails, so
the job queue submits only what capacity() says fits.

The handle ``{"backend": "ray", "address", "submission_id", ...}`` is saved as RUN_DIR/launcher.json
before the job is submitted, so that a dashboard killed in between still finds the job.
"""

from __future__ import annotations

import os
import shlex
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from core.errors import FailedError, InvalidInputError
from core.training.launcher_base import (FINAL_STATES, LIVE_STATES, Launcher, RunBusyError, check_request,
                                         current_user, read_handle, read_status_file, threads_per_process,
                                         write_handle)
from core.training.run_folder import WAITING_FOR_SLOT, RunFolder, is_this_host, waiting_for_slot

if TYPE_CHECKING:
    from core.training.config import TrainConfig

# Ray's job states -> the state a run shows when the trainer has not written a final one itself.
RAY_TERMINAL = {"SUCCEEDED": "failed", "FAILED": "failed", "STOPPED": "cancelled"}
RAY_LIVE = ("PENDING", "RUNNING")
# Job metadata keys (Ray's job list does not report entrypoint resources; capacity() reads these).
META_PREFIX = "archscope_"


def job_submission_module() -> Any:
    """``ray.job_submission``, or InvalidInputError saying how to install Ray when it is missing."""
    try:
        from ray import job_submission
    except ImportError as exc:
        raise InvalidInputError(
            f"the Ray Jobs launcher needs Ray ({exc}): install the optional extra with "
            f"pip install -e '.[ray]' (or pip install 'ray[default]'), or use the local launcher") from None
    return job_submission


def _ray_state(value: Any) -> str:
    """A JobStatus (a str enum) or a plain string, as 'PENDING' / 'RUNNING' / ..."""
    return str(getattr(value, "value", value)).upper()


class RayJobsLauncher(Launcher):
    """Submit, watch and stop trainings as Ray Jobs through ``ray.job_submission.JobSubmissionClient``."""

    backend = "ray"

    def __init__(self, address: str, *, python: str = "python3", env: Mapping[str, str] | None = None,
                 client: Any = None, agent_wait_s: float = 60.0) -> None:
        """``address``: the Ray dashboard (job server), e.g. ``http://head-node:8265``. ``python``: the
        interpreter as the workers' PATH names it (it must import core, i.e. archscope installed
        there). ``env``: extra environment variables for the trainers (e.g. ARCHSCOPE_CACHE).
        ``client``: an existing JobSubmissionClient (default: one is made on first use).
        ``agent_wait_s``: how long a submit waits for a just-started head's job agent."""
        if not isinstance(address, str) or not address.startswith(("http://", "https://")):
            raise InvalidInputError(f"Ray address {address!r}: give the Ray dashboard's address, "
                                    f"e.g. http://head-node:8265")
        self.address = address.rstrip("/")
        self.python = python
        self.env = dict(env or {})
        self._client = client
        self.agent_wait_s = agent_wait_s

    @property
    def client(self) -> Any:
        """The JobSubmissionClient, made on first use; FailedError when the job server does not answer."""
        if self._client is None:
            module = job_submission_module()
            try:
                self._client = module.JobSubmissionClient(self.address)
            except Exception as exc:  # noqa: BLE001 - requests/ConnectionError/RuntimeError all mean "not reachable"
                raise FailedError(f"cannot reach the Ray job server at {self.address}: {exc}") from None
        return self._client

    # ---- handle and job lookups -----------------------------------------------------------------
    def _handle(self, run_dir: str | os.PathLike) -> dict:
        handle = read_handle(run_dir)
        if handle is None or handle["backend"] != "ray" or not handle.get("submission_id"):
            raise InvalidInputError(f"{run_dir} was not submitted to Ray (no Ray handle in launcher.json); "
                                    f"use launcher_for(run_dir)")
        return handle

    def _job_info(self, submission_id: str) -> Any:
        """Ray's JobDetails, None when the cluster does not know the job (restarted since: Ray
        keeps jobs only for the cluster's lifetime); FailedError when the cluster does not answer."""
        try:
            return self.client.get_job_info(submission_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return None
            raise FailedError(f"the Ray job server at {self.address} failed on job {submission_id}: {exc}") from None
        except OSError as exc:   # requests' ConnectionError is an OSError
            raise FailedError(f"cannot reach the Ray job server at {self.address}: {exc}") from None

    def _refuse_if_live(self, run: RunFolder) -> None:
        """RunBusyError when the run has a live job: a Ray job still pending or running, or a trainer
        alive on this machine (a run the job queue holds back for a slot is not live)."""
        handle = read_handle(run.path)
        if handle and handle["backend"] == "ray" and handle.get("submission_id"):
            info = self._job_info(handle["submission_id"])
            # A pending job cancelled by cancel() stays PENDING in Ray but will never train (ray_entry).
            cancelled = read_status_file(run.path).get("state") == "cancelled"
            if info is not None and _ray_state(info.status) in RAY_LIVE \
                    and not (cancelled and _ray_state(info.status) == "PENDING"):
                raise RunBusyError(f"{run.path} already has Ray job {handle['submission_id']} "
                                   f"({_ray_state(info.status).lower()}) at {self.address}; cancel it first")
            return
        status = run.read_status()
        if status.get("state") in LIVE_STATES and not waiting_for_slot(status):
            raise RunBusyError(f"{run.path} is {status['state']} (pid {status.get('pid')}); cancel it first")

    # ---- submitting ---------------------------------------------------------------------------------
    def _submit_job_when_an_agent_answers(self, **job: Any) -> None:
        """``client.submit_job(**job)``, tried again while the head says it has no job agent yet.

        A head that has just started answers list_jobs() before its dashboard agent has registered;
        until then submit_job fails with HTTP 500 "No available agent to submit job, please try again
        later" and nothing is created, so the same submission id can be sent again. Any other error,
        or the same one after ``agent_wait_s`` seconds, goes to the caller.
        """
        deadline = time.monotonic() + self.agent_wait_s
        while True:
            try:
                self.client.submit_job(**job)
                return
            except Exception as exc:  # noqa: BLE001 - only the one transient answer is retried
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def _submit(self, run: RunFolder, command: list[str], *, gpus: int, cpus: int, nproc: int,
                fields: Mapping[str, Any], user: str | None = None) -> str:
        """Write status 'queued' and the handle, then submit ``command`` behind core.training.ray_entry."""
        submission_id = f"archscope-{run.run_id}-{uuid.uuid4().hex[:8]}"   # a resume is a new Ray job
        user = user or current_user()
        entrypoint = shlex.join([self.python, "-m", "core.training.ray_entry", "--run-dir", str(run.path),
                                 "--submission-id", submission_id, "--gpus", str(gpus), "--", *command])
        run.write_status("queued", pid=None, message=f"submitted to the Ray cluster at {self.address}; waiting "
                         f"for {gpus} GPU(s) and {cpus} CPU(s)", nproc=nproc, host=None,
                         **{WAITING_FOR_SLOT: False}, **fields)
        # The handle first: a dashboard killed right after submit_job still finds the job.
        write_handle(run.path, {"backend": "ray", "run_id": run.run_id, "address": self.address,
                                "submission_id": submission_id, "gpus": gpus, "cpus": cpus, "nproc": nproc,
                                "user": user, "submitted": time.time()})
        metadata = {f"{META_PREFIX}run_id": run.run_id, f"{META_PREFIX}run_dir": str(run.path),
                    f"{META_PREFIX}gpus": str(gpus), f"{META_PREFIX}cpus": str(cpus), f"{META_PREFIX}user": user}
        try:
            self._submit_job_when_an_agent_answers(
                entrypoint=entrypoint, submission_id=submission_id, entrypoint_num_gpus=gpus,
                entrypoint_num_cpus=cpus, metadata=metadata,
                runtime_env={"env_vars": dict(self.env)} if self.env else None)
        except FailedError as exc:
            run.write_status("failed", message=str(exc), finished=time.time())
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the job server says, the run must not stay 'queued'
            message = f"the Ray job server at {self.address} refused the job: {exc}"
            run.write_status("failed", message=message, finished=time.time())
            raise FailedError(message) from None
        return run.run_id

    def submit(self, config: "TrainConfig", run_dir: str | os.PathLike, *, gpus: int, cpus: int,
               nproc: int = 1, user: str | None = None) -> str:
        from core.training.config import ConfigError
        from core.training.launch import train_command

        config.validate()
        check_request(gpus, cpus, nproc, config.device)
        # Absolute: the worker opens the same path (shared storage), whatever its working directory.
        run = RunFolder(Path(run_dir).resolve())
        self._refuse_if_live(run)
        if run.metrics_path.exists() or run.resume_state_path.exists():
            raise ConfigError(f"{run.path} already holds a run; continue it with resume() or choose another folder")
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config.to_dict())
        command = train_command(config=run.config_path, out=run.path, nproc=nproc, python=self.python,
                                num_threads=threads_per_process(cpus, nproc, config.num_threads))
        return self._submit(run, command, gpus=gpus, cpus=cpus, nproc=nproc, user=user,
                            fields={"started": None, "finished": None, "epoch": 0, "epochs": config.epochs})

    def resume(self, run_dir: str | os.PathLike, *, gpus: int, cpus: int, nproc: int | None = None,
               epochs: int | None = None, user: str | None = None) -> str:
        from core.training.config import ConfigError
        from core.training.launch import resume_nproc, train_command

        run = RunFolder(Path(run_dir).resolve())
        if not run.config_path.exists():
            raise ConfigError(f"{run.config_path}: missing; cannot resume that folder")
        nproc = resume_nproc(run.path) if nproc is None else nproc
        saved = run.read_config() or {}
        check_request(gpus, cpus, nproc, saved.get("device", "auto"))
        self._refuse_if_live(run)
        self._drop_lock_of_an_ended_job(run)
        # A run that trained already keeps its thread count (float reductions may split by thread).
        threads = None if (saved.get("run") or {}).get("cpu_threads") else threads_per_process(cpus, nproc)
        command = train_command(resume=run.path, nproc=nproc, epochs=epochs, num_threads=threads, python=self.python)
        return self._submit(run, command, gpus=gpus, cpus=cpus, nproc=nproc, user=user, fields={"finished": None})

    @staticmethod
    def _drop_lock_of_an_ended_job(run: RunFolder) -> None:
        """Remove a train.lock left on another host by a trainer whose Ray job is over (SIGKILLed after
        the stop grace time, a lost node): its pid cannot be tested from here, and without this the
        resumed trainer would refuse the folder forever. Called only once _refuse_if_live found no
        live Ray job for the run, which is the proof that the lock's owner is gone."""
        owner, host = run.lock_holder()
        handle = read_handle(run.path)
        if owner and not is_this_host(host) and handle and handle["backend"] == "ray":
            run.lock_path.unlink(missing_ok=True)

    # ---- watching -----------------------------------------------------------------------------------
    def status(self, run_dir: str | os.PathLike) -> dict:
        """status.json, plus ``job`` (the Ray submission id), ``ray_state``, and the ``host`` / ``gpus``
        the job landed on. A final state the trainer wrote is the truth. Otherwise Ray's view decides:
        PENDING -> queued; RUNNING -> the trainer's state; a job Ray ended without the trainer
        recording it (pending timeout, SIGKILL, the trainer never started) -> failed or cancelled,
        written into status.json so that every reader of the folder sees it."""
        handle = self._handle(run_dir)
        submission_id = handle["submission_id"]
        status = read_status_file(run_dir)
        worker = handle.get("worker") or {}
        status.update({"job": submission_id, "host": worker.get("host"), "gpus": worker.get("gpus")})
        status.setdefault("message", "")
        if status.get("state") in FINAL_STATES:
            return status
        try:
            info = self._job_info(submission_id)
        except FailedError as exc:
            status["ray_state"] = "UNREACHABLE"
            status["message"] = f"{exc}; last recorded: {status.get('message') or status.get('state')}"
            return status
        if info is None:
            ray_state, ray_message = "UNKNOWN", (f"the Ray cluster at {self.address} no longer knows job "
                                                 f"{submission_id} (restarted?)")
        else:
            ray_state, ray_message = _ray_state(info.status), info.message or ""
        status["ray_state"] = ray_state
        if ray_state == "PENDING":
            status["state"] = "queued"
            status["message"] = (f"waiting on the Ray cluster for {handle.get('gpus')} GPU(s) and "
                                 f"{handle.get('cpus')} CPU(s) ({ray_message})")
            return status
        if ray_state == "RUNNING":
            if status.get("state") != "running":
                # Placed, but the trainer has not written 'running' yet (it is importing torch):
                # 'queued' as for a local trainer that is starting.
                status["state"] = "queued"
                status["message"] = f"starting on {worker.get('host') or 'a Ray worker'}"
            return status
        # Ray says the job is over, the trainer did not say so: re-read (it may have just written).
        fresh = read_status_file(run_dir)
        if fresh.get("state") in FINAL_STATES:
            return {**status, **fresh}
        state = RAY_TERMINAL.get(ray_state, "failed")
        # ray_entry records its pid (the trainer's, after exec) before the trainer starts: only
        # 'started' or a 'running' state say the trainer was training.
        started = fresh.get("started") or fresh.get("state") == "running"
        when = "while training" if started else "before the trainer was running"
        message = f"Ray job {submission_id} {ray_state.lower()} {when}: {ray_message}".rstrip(": ")
        if started:
            message += f"; continue with resume({str(run_dir)!r})"
        RunFolder(run_dir).write_status(state, message=message, finished=time.time(), **{WAITING_FOR_SLOT: False})
        return {**status, **read_status_file(run_dir), "ray_state": ray_state}

    def cancel(self, run_dir: str | os.PathLike, *, timeout: float = 15.0) -> bool:
        """Ask Ray to stop the job (SIGTERM to the trainer, SIGKILL after 3 s unless the cluster sets
        RAY_JOB_STOP_WAIT_TIME_S); True once it is stopped, with status.json final.

        A job still PENDING cannot be stopped by Ray until it gets its resources (ray-project/ray#58353:
        stop_job answers True and the job stays pending): the run is marked 'cancelled' at once, and
        when Ray does place the job, core.training.ray_entry sees that and exits without training."""
        handle = self._handle(run_dir)
        submission_id = handle["submission_id"]
        info = self._job_info(submission_id)
        if info is None:
            self.status(run_dir)      # records why it is gone
            return True
        pending = _ray_state(info.status) == "PENDING"
        try:
            self.client.stop_job(submission_id)   # False for a job already over: nothing to stop
        except OSError as exc:
            raise FailedError(f"cannot reach the Ray job server at {self.address}: {exc}") from None
        if pending:
            if read_status_file(run_dir).get("state") not in FINAL_STATES:
                RunFolder(run_dir).write_status(
                    "cancelled", finished=time.time(), **{WAITING_FOR_SLOT: False},
                    message=f"cancelled while waiting for resources on the Ray cluster (Ray lists job "
                            f"{submission_id} as pending until it is placed, then it ends without training)")
            return True
        deadline = time.monotonic() + timeout
        while True:
            info = self._job_info(submission_id)
            if info is None or _ray_state(info.status) not in RAY_LIVE:
                self.status(run_dir)  # a job stopped before the trainer wrote anything becomes 'cancelled'
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def logs(self, run_dir: str | os.PathLike) -> str:
        submission_id = self._handle(run_dir)["submission_id"]
        try:
            return self.client.get_job_logs(submission_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return ""
            raise FailedError(f"the Ray job server at {self.address} failed on job {submission_id}: {exc}") from None

    def capacity(self) -> dict:
        """Cluster totals from the live nodes, minus what ArchScope's live jobs reserved (read from
        their metadata; a job submitted by something else shows in ``other_jobs`` only)."""
        try:
            from ray.util.state import list_nodes
            nodes = list_nodes(address=self.address, filters=[("state", "=", "ALIVE")], detail=True)
            jobs = self.client.list_jobs()
        except FailedError:
            raise
        except Exception as exc:  # noqa: BLE001 - any transport error means the same to the queue
            raise FailedError(f"cannot read the Ray cluster's resources at {self.address}: {exc}") from None
        gpus = sum(float(node.resources_total.get("GPU", 0)) for node in nodes)
        cpus = sum(float(node.resources_total.get("CPU", 0)) for node in nodes)
        used_gpus = used_cpus = 0.0
        running = pending = other = 0
        by_user: dict[str, int] = {}
        for job in jobs:
            state = _ray_state(job.status)
            if state not in RAY_LIVE:
                continue
            meta = job.metadata or {}
            if f"{META_PREFIX}run_id" not in meta:
                other += 1
                continue
            run_dir = meta.get(f"{META_PREFIX}run_dir")
            if state == "PENDING" and run_dir and read_status_file(run_dir).get("state") in FINAL_STATES:
                continue          # cancelled while pending: Ray ends it without training once placed
            running += state == "RUNNING"
            pending += state == "PENDING"
            used_gpus += float(meta.get(f"{META_PREFIX}gpus", 0))
            used_cpus += float(meta.get(f"{META_PREFIX}cpus", 0))
            user = meta.get(f"{META_PREFIX}user", "?")
            by_user[user] = by_user.get(user, 0) + 1
        return {"backend": self.backend, "address": self.address, "nodes": len(nodes),
                "gpus": int(gpus), "cpus": int(cpus),
                "gpus_free": max(0, int(gpus - used_gpus)), "cpus_free": max(0, int(cpus - used_cpus)),
                "running": running, "pending": pending, "other_jobs": other, "by_user": by_user}
