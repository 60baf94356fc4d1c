"""The launcher interface without Ray: requests, handles, reconnecting, the local backend (real
trainings), the Ray backend's bookkeeping against a fake job server, and ray_entry."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.errors import FailedError, InvalidInputError
from core.training.config import ConfigError, TrainConfig
from core.training.launchers import (LocalLauncher, NoCapacityError, RunBusyError, check_request, launcher_for,
                                     make_launcher, read_handle, threads_per_process, write_handle)
from core.training.ray_jobs import RayJobsLauncher, job_submission_module
from core.training.run_folder import RunFolder
from tests.core.training.helpers import REPO, env, wait_for

TINY = dict(model="cnn2", dataset="shapes", image_size=32, max_train_samples=64, batch_size=32, seed=0)


# ---- requests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("gpus, cpus, nproc, device, expected", [
    (-1, 1, 1, "auto", "gpus must be an integer >= 0"),
    (0, 0, 1, "auto", "cpus must be an integer >= 1"),
    (0, 1, 0, "auto", "nproc must be an integer >= 1"),
    (1.0, 1, 1, "auto", "gpus must be an integer"),
    (True, 1, 1, "auto", "gpus must be an integer"),
    (2, 2, 1, "auto", "one process per GPU"),
    (1, 1, 1, "cpu", "device 'cpu'"),
    (0, 1, 1, "cuda", "asks for no GPU"),
])
def test_bad_requests_are_refused_with_the_reason(gpus, cpus, nproc, device, expected):
    with pytest.raises(InvalidInputError, match=expected):
        check_request(gpus, cpus, nproc, device)


def test_good_requests_pass_and_cpus_are_divided_between_processes():
    check_request(0, 1, 1, "auto")
    check_request(0, 4, 2, "cpu")          # CPU DDP
    check_request(2, 8, 2, "cuda")
    assert threads_per_process(8, 2) == 4
    assert threads_per_process(1, 2) == 1
    assert threads_per_process(8, 2, config_threads=3) == 3


# ---- handles and reconnecting ---------------------------------------------------------------------
def test_handle_round_trip_and_bad_handles(tmp_path):
    assert read_handle(tmp_path) is None
    write_handle(tmp_path, {"backend": "ray", "address": "http://h:8265", "submission_id": "s1"})
    assert read_handle(tmp_path) == {"backend": "ray", "address": "http://h:8265", "submission_id": "s1"}
    assert not list(tmp_path.glob(".*.tmp"))        # written through a temp file, renamed
    with pytest.raises(ValueError, match="backend"):
        write_handle(tmp_path, {"backend": "slurm"})
    (tmp_path / "launcher.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="launcher.json: not valid JSON"):
        read_handle(tmp_path)
    (tmp_path / "launcher.json").write_text(json.dumps({"backend": "k8s"}))
    with pytest.raises(InvalidInputError, match="'backend' must be one of local, ray, got 'k8s'"):
        read_handle(tmp_path)


def test_launcher_for_rebuilds_the_backend_from_the_handle(tmp_path):
    assert isinstance(launcher_for(tmp_path, gpu_ids=[], cpus=1), LocalLauncher)       # no handle: local
    write_handle(tmp_path, {"backend": "local", "pid": 1})
    assert isinstance(launcher_for(tmp_path, gpu_ids=[], cpus=1), LocalLauncher)
    write_handle(tmp_path, {"backend": "ray", "address": "http://head:8265/", "submission_id": "s"})
    ray = launcher_for(tmp_path)                       # no connection is made until it is used
    assert isinstance(ray, RayJobsLauncher) and ray.address == "http://head:8265"
    write_handle(tmp_path, {"backend": "ray", "submission_id": "s"})
    with pytest.raises(InvalidInputError, match="without 'address'"):
        launcher_for(tmp_path)


def test_make_launcher_reads_the_spec_or_the_environment(monkeypatch):
    monkeypatch.delenv("ARCHSCOPE_LAUNCHER", raising=False)
    assert isinstance(make_launcher(gpu_ids=[], cpus=1), LocalLauncher)
    assert isinstance(make_launcher("local", gpu_ids=[], cpus=1), LocalLauncher)
    monkeypatch.setenv("ARCHSCOPE_LAUNCHER", "http://head:8265")
    assert isinstance(make_launcher(), RayJobsLauncher)
    with pytest.raises(InvalidInputError, match="use 'local' or the address of a Ray cluster"):
        make_launcher("ray://head:10001")
    with pytest.raises(InvalidInputError, match="dashboard's address"):
        RayJobsLauncher("head:8265")


def test_missing_ray_is_a_clear_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)      # import ray -> ImportError
    with pytest.raises(InvalidInputError, match=r"needs Ray .*pip install -e '\.\[ray\]'"):
        job_submission_module()
    with pytest.raises(InvalidInputError, match="needs Ray"):
        RayJobsLauncher("http://head:8265").client   # noqa: B018 - the property makes the client


# ---- the local backend ------------------------------------------------------------------------------
def test_local_capacity_counts_runs_started_without_a_launcher(tmp_path):
    """A trainer the job queue or a script started (no launcher.json) still holds its GPUs; a run
    waiting in the queue (no process yet) and a finished one hold nothing."""
    import os
    RunFolder(tmp_path / "by-queue").write_status("running", pid=os.getpid(), gpus=["1"])
    RunFolder(tmp_path / "waiting").write_status("queued", pid=None, waiting_for_slot=True)
    RunFolder(tmp_path / "over").write_status("done", pid=os.getpid(), gpus=["0"])
    for name in ("by-queue", "waiting", "over"):
        (tmp_path / name / "config.json").write_text("{}")
    capacity = LocalLauncher(gpu_ids=["0", "1"], cpus=4, runs_root=tmp_path).capacity()
    assert capacity["free_gpu_ids"] == ["0"] and capacity["running"] == 1 and capacity["cpus_free"] == 4
    with pytest.raises(NoCapacityError, match=r"1 of 2 are free now \(GPUs 1 are in use\)"):
        LocalLauncher(gpu_ids=["0", "1"], cpus=4, runs_root=tmp_path).submit(
            TrainConfig(**TINY, epochs=1), tmp_path / "new", gpus=2, cpus=1, nproc=2)
    assert not (tmp_path / "new").exists()              # refused before anything was written


@pytest.mark.slow
def test_local_jobs_get_their_own_gpus_cancel_and_reconnect(tmp_path):
    """Two fake GPUs: two runs get one each (CUDA_VISIBLE_DEVICES recorded), a third must wait;
    a new launcher object finds both runs again from their folders, cancels one, reads logs."""
    launcher = LocalLauncher(gpu_ids=["0", "1"], cpus=2, runs_root=tmp_path)
    short, long = tmp_path / "short", tmp_path / "long"
    assert launcher.submit(TrainConfig(**TINY, epochs=1), short, gpus=1, cpus=1) == "short"
    assert launcher.submit(TrainConfig(**TINY, epochs=500), long, gpus=1, cpus=1) == "long"
    gpus = {read_handle(short)["gpus"][0], read_handle(long)["gpus"][0]}
    assert gpus == {"0", "1"}
    assert RunFolder(long).read_status()["gpus"] == read_handle(long)["gpus"]     # what the child was given
    capacity = launcher.capacity()
    assert (capacity["gpus"], capacity["cpus"]) == (2, 2)
    assert capacity["running"] == 2 and capacity["gpus_free"] == 0 and capacity["cpus_free"] == 0
    with pytest.raises(NoCapacityError, match="asks for 1 GPU.*0 of 2 are free"):
        launcher.submit(TrainConfig(**TINY, epochs=1), tmp_path / "third", gpus=1, cpus=1)
    with pytest.raises(InvalidInputError, match="this machine has 2"):
        launcher.submit(TrainConfig(**TINY, epochs=1), tmp_path / "big", gpus=3, cpus=1, nproc=3)

    # A restarted dashboard: a new object, nothing in memory but the folders.
    again = launcher_for(long, gpu_ids=["0", "1"], cpus=2, runs_root=tmp_path)
    assert again.capacity()["gpus_free"] == 0          # still sees both runs as live
    wait_for(lambda: again.status(long).get("state") == "running", 120, what="the long run to start")
    wait_for(lambda: again.status(short).get("state") == "done", 180, what="the short run to finish")
    assert again.cancel(long, timeout=30)
    assert again.status(long)["state"] == "cancelled"
    assert "cancelled" in again.status(long)["message"]
    assert again.capacity()["gpus_free"] == 2 and again.capacity()["running"] == 0
    assert isinstance(again.logs(short), str) and again.logs(tmp_path / "nothing") == ""
    with pytest.raises(ConfigError, match="already holds a run"):
        again.submit(TrainConfig(**TINY, epochs=1), short, gpus=1, cpus=1)


# ---- the Ray backend's bookkeeping, against a fake job server ---------------------------------------
class FakeJobServer:
    """What RayJobsLauncher uses of JobSubmissionClient; records calls, answers from ``jobs``."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.jobs: dict[str, SimpleNamespace] = {}
        self.submitted: list[dict] = []
        self.stopped: list[str] = []
        self.run_dir = run_dir
        self.reachable = True
        self.handle_at_submit = None

    def submit_job(self, **kwargs):
        if self.run_dir is not None:
            self.handle_at_submit = read_handle(self.run_dir)
        self.submitted.append(kwargs)
        self.jobs[kwargs["submission_id"]] = SimpleNamespace(status="PENDING", message="Job has not started yet.")
        return kwargs["submission_id"]

    def get_job_info(self, submission_id):
        if not self.reachable:
            raise ConnectionError("Failed to establish a new connection")
        if submission_id not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {submission_id} does not exist.")
        return self.jobs[submission_id]

    def stop_job(self, submission_id):
        self.stopped.append(submission_id)
        job = self.jobs[submission_id]
        if job.status == "RUNNING":
            job.status = "STOPPED"
        # A PENDING job stays pending until placed (ray-project/ray#58353), yet Ray answers True.
        return job.status in ("PENDING", "STOPPED")

    def get_job_logs(self, submission_id):
        return f"logs of {submission_id}"


def _ray(tmp_path, **kw):
    server = FakeJobServer(tmp_path / "run")
    return RayJobsLauncher("http://head:8265", client=server, **kw), server, tmp_path / "run"


def test_ray_submit_asks_for_gpus_and_cpus_and_saves_the_handle_first(tmp_path):
    launcher, server, run_dir = _ray(tmp_path, env={"ARCHSCOPE_CACHE": "/shared/cache"})
    assert launcher.submit(TrainConfig(**TINY, epochs=3), run_dir, gpus=0, cpus=2) == "run"
    (call,) = server.submitted
    assert call["entrypoint_num_gpus"] == 0 and call["entrypoint_num_cpus"] == 2     # explicit, even 0
    assert call["runtime_env"] == {"env_vars": {"ARCHSCOPE_CACHE": "/shared/cache"}}
    entry = call["entrypoint"].split()
    # The wrapper, then exactly the trainer's own command line (absolute run folder).
    assert entry[:3] == ["python3", "-m", "core.training.ray_entry"]
    trainer = entry[entry.index("--") + 1:]
    assert trainer == ["python3", "-m", "core.train", "--config", str(run_dir.resolve() / "config.json"),
                       "--out", str(run_dir.resolve()), "--num-threads", "2", "--quiet"]
    handle = read_handle(run_dir)
    assert server.handle_at_submit == handle        # on disk before the job server heard of it
    assert handle["backend"] == "ray" and handle["address"] == "http://head:8265"
    assert handle["submission_id"] == call["submission_id"] and "run" in handle["submission_id"]
    assert call["metadata"]["archscope_gpus"] == "0" and call["metadata"]["archscope_run_id"] == "run"
    assert TrainConfig.from_json(run_dir / "config.json").epochs == 3
    assert RunFolder(run_dir).read_status()["state"] == "queued"
    with pytest.raises(RunBusyError, match="already has Ray job .* \\(pending\\)"):
        launcher.submit(TrainConfig(**TINY, epochs=3), run_dir, gpus=0, cpus=2)


def test_ray_status_follows_ray_until_the_trainer_writes_a_final_state(tmp_path):
    launcher, server, run_dir = _ray(tmp_path)
    launcher.submit(TrainConfig(**TINY, epochs=3), run_dir, gpus=1, cpus=1)
    job = server.jobs[read_handle(run_dir)["submission_id"]]
    status = launcher.status(run_dir)
    assert (status["state"], status["ray_state"]) == ("queued", "PENDING")
    assert "waiting on the Ray cluster for 1 GPU(s) and 1 CPU(s)" in status["message"]

    job.status = "RUNNING"
    assert launcher.status(run_dir)["state"] == "queued"       # placed; the trainer is still importing
    assert launcher.status(run_dir)["message"].startswith("starting on")
    # The trainer on a worker writes 'running' with ITS pid: not checked against this machine.
    RunFolder(run_dir).write_status("running", pid=999_999_999, message="epoch 1/3 done", started=time.time())
    assert launcher.status(run_dir)["state"] == "running"

    server.reachable = False
    status = launcher.status(run_dir)
    assert status["state"] == "running" and status["ray_state"] == "UNREACHABLE"
    assert "cannot reach the Ray job server at http://head:8265" in status["message"]
    server.reachable = True

    # Killed (SIGKILL after the stop grace time): Ray says FAILED, status.json still says running.
    job.status, job.message = "FAILED", "Job entrypoint command failed with exit code -9"
    status = launcher.status(run_dir)
    assert status["state"] == "failed" and "exit code -9" in status["message"] and "resume(" in status["message"]
    assert RunFolder(run_dir).read_status()["state"] == "failed"     # written down for every reader

    # The trainer's own final word wins over Ray's.
    RunFolder(run_dir).write_status("cancelled", message="cancelled (SIGTERM) during epoch 2")
    job.status = "STOPPED"
    assert launcher.status(run_dir)["message"] == "cancelled (SIGTERM) during epoch 2"


def test_ray_cancel_of_a_pending_job_and_a_job_the_cluster_forgot(tmp_path):
    launcher, server, run_dir = _ray(tmp_path)
    launcher.submit(TrainConfig(**TINY, epochs=3), run_dir, gpus=1, cpus=1)
    sid = read_handle(run_dir)["submission_id"]
    assert launcher.cancel(run_dir, timeout=1) is True and server.stopped == [sid]
    assert server.jobs[sid].status == "PENDING"          # Ray cannot stop it before placing it...
    status = launcher.status(run_dir)
    assert status["state"] == "cancelled" and "while waiting for resources" in status["message"]
    assert launcher.logs(run_dir) == f"logs of {sid}"

    # ...so it is not live for ArchScope: resuming is a new Ray job (Ray refuses a reused submission
    # id) under the same run id, and the old one will find launcher.json naming another job.
    assert launcher.resume(run_dir, gpus=1, cpus=1, epochs=5) == "run"
    new_sid = read_handle(run_dir)["submission_id"]
    assert new_sid != sid and "--resume" in server.submitted[-1]["entrypoint"]
    assert "--epochs 5" in server.submitted[-1]["entrypoint"]
    assert launcher.status(run_dir)["state"] == "queued"

    server.jobs[new_sid].status = "RUNNING"
    RunFolder(run_dir).write_status("running", pid=123, started=time.time())
    assert launcher.cancel(run_dir, timeout=1) is True     # stopped: Ray says STOPPED at once here
    status = launcher.status(run_dir)
    assert status["state"] == "cancelled" and "stopped while training" in status["message"]

    launcher.resume(run_dir, gpus=1, cpus=1)
    server.jobs.clear()                                  # the cluster was restarted
    status = launcher.status(run_dir)
    assert status["state"] == "failed" and "no longer knows job" in status["message"]


def test_ray_submit_failure_leaves_the_run_failed_not_queued(tmp_path):
    launcher, server, run_dir = _ray(tmp_path)

    def refuse(**kwargs):
        raise RuntimeError("Request failed with status code 500: no such entrypoint resources")
    server.submit_job = refuse
    with pytest.raises(FailedError, match="refused the job: .*status code 500"):
        launcher.submit(TrainConfig(**TINY, epochs=3), run_dir, gpus=1, cpus=1)
    assert RunFolder(run_dir).read_status()["state"] == "failed"


def test_ray_submit_waits_for_a_just_started_heads_job_agent(tmp_path):
    """A fresh head answers 500 "No available agent" until its agent registers: the same job is sent
    again (nothing was created), and the run queues; past agent_wait_s the answer is a failed run."""
    launcher, server, run_dir = _ray(tmp_path)
    real, answers = server.submit_job, []

    def agent_not_yet(**kwargs):
        answers.append(kwargs["submission_id"])
        if len(answers) < 3:
            raise RuntimeError("Request failed with status code 500: No available agent to submit job, "
                               "please try again later..")
        return real(**kwargs)
    server.submit_job = agent_not_yet
    assert launcher.submit(TrainConfig(**TINY, epochs=3), run_dir, gpus=1, cpus=1) == "run"
    assert len(answers) == 3 and len(set(answers)) == 1 and len(server.submitted) == 1
    assert RunFolder(run_dir).read_status()["state"] == "queued"

    never, _, other = _ray(tmp_path / "b", agent_wait_s=0)
    never.client.submit_job = lambda **kw: (_ for _ in ()).throw(
        RuntimeError("Request failed with status code 500: No available agent to submit job"))
    with pytest.raises(FailedError, match="No available agent"):
        never.submit(TrainConfig(**TINY, epochs=3), other, gpus=1, cpus=1)
    assert RunFolder(other).read_status()["state"] == "failed"


def test_ray_resume_of_a_folder_without_config_is_refused(tmp_path):
    launcher, _, run_dir = _ray(tmp_path)
    with pytest.raises(ConfigError, match="config.json: missing"):
        launcher.resume(run_dir, gpus=0, cpus=1)
    with pytest.raises(InvalidInputError, match="was not submitted to Ray"):
        launcher.status(tmp_path)


# ---- ray_entry: what a Ray job runs first -----------------------------------------------------------
def _entry(run_dir: Path, gpus: int, extra_env: dict, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.training.ray_entry", "--run-dir", str(run_dir),
                           "--submission-id", "sub-1", "--gpus", str(gpus), "--", *command],
                          cwd=REPO, env={**env(), **extra_env}, capture_output=True, text=True, timeout=60)


SHOW_GPUS = (sys.executable, "-c", "import os, sys; print('seen', repr(os.environ.get('CUDA_VISIBLE_DEVICES'))); "
             "sys.exit(7)")


def test_ray_entry_records_the_placement_then_becomes_the_command(tmp_path):
    write_handle(tmp_path, {"backend": "ray", "address": "http://h:8265", "submission_id": "sub-1"})
    done = _entry(tmp_path, 1, {"CUDA_VISIBLE_DEVICES": "3"}, *SHOW_GPUS)
    assert done.returncode == 7, done.stderr                 # the command's exit code is the job's
    assert "seen '3'" in done.stdout
    worker = read_handle(tmp_path)["worker"]
    assert worker["gpus"] == ["3"] and worker["host"] and worker["pid"] > 0


def test_ray_entry_hides_every_gpu_from_a_job_that_asked_for_none(tmp_path):
    write_handle(tmp_path, {"backend": "ray", "address": "http://h:8265", "submission_id": "sub-1"})
    done = _entry(tmp_path, 0, {"CUDA_VISIBLE_DEVICES": "0,1"}, *SHOW_GPUS)
    assert "seen ''" in done.stdout and read_handle(tmp_path)["worker"]["gpus"] == []


def test_ray_entry_refuses_to_run_without_the_gpus_it_asked_for(tmp_path):
    write_handle(tmp_path, {"backend": "ray", "address": "http://h:8265", "submission_id": "sub-1"})
    environ = {k: v for k, v in env().items() if k != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run([sys.executable, "-m", "core.training.ray_entry", "--run-dir", str(tmp_path),
                           "--submission-id", "sub-1", "--gpus", "1", "--", *SHOW_GPUS],
                          cwd=REPO, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "seen" not in done.stdout
    assert "asked for 1 GPU(s) but runs with CUDA_VISIBLE_DEVICES=None" in done.stderr
    assert RunFolder(tmp_path).read_status()["state"] == "failed"


def test_ray_entry_does_not_train_for_a_superseded_or_cancelled_job(tmp_path):
    write_handle(tmp_path, {"backend": "ray", "address": "http://h:8265", "submission_id": "sub-2"})
    (tmp_path / "config.json").write_text("{}")
    done = _entry(tmp_path, 0, {}, *SHOW_GPUS)
    assert done.returncode == 0 and "seen" not in done.stdout and "names job 'sub-2'" in done.stdout
    assert "worker" not in read_handle(tmp_path)

    write_handle(tmp_path, {"backend": "ray", "address": "http://h:8265", "submission_id": "sub-1"})
    RunFolder(tmp_path).write_status("cancelled", message="cancelled while waiting")
    done = _entry(tmp_path, 0, {}, *SHOW_GPUS)
    assert done.returncode == 0 and "seen" not in done.stdout and "cancelled while this job waited" in done.stdout


def test_ray_entry_says_when_the_run_folder_is_not_shared(tmp_path):
    done = _entry(tmp_path / "elsewhere", 0, {}, *SHOW_GPUS)
    assert done.returncode == 2 and "seen" not in done.stdout
    assert "is not visible on" in done.stderr and "storage that the dashboard and every Ray worker share" in done.stderr


# ---- no lost cancel, runs of other hosts -------------------------------------------------------------
def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (bit 15 of SigCgt in /proc/PID/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        caught = next(line for line in fh if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (15 - 1) & 1)


@pytest.mark.parametrize("delay", [0.0, 0.2])
def test_sigterm_right_after_popen_ends_cancelled_never_running_or_failed(tmp_path, delay):
    """A cancel during the trainer's first imports (before its own handler): core.train's first
    handler records it (exit 143), or, sent before Python even runs, cancel_run does."""
    import os
    import signal

    from core.training.launch import cancel_run, launch_training

    job = launch_training(TrainConfig(**TINY, epochs=100, num_threads=1), tmp_path / "r")
    time.sleep(delay)
    if delay:
        # On a loaded machine Python may need longer than `delay` to reach core.train's first line;
        # a signal before that is cancel_run's case (delay 0). Here: once the handler is in place.
        wait_for(lambda: _catches_sigterm(job.pid), 30, what="core.train to install its first handler")
        os.kill(job.pid, signal.SIGTERM)                  # the signal alone: the trainer must record it
        assert job.wait(60) == 143, (tmp_path / "r" / "train.log").read_text()[-2000:]
    else:
        assert cancel_run(tmp_path / "r", process=job.process, timeout=60)
    status = RunFolder(tmp_path / "r").read_status()
    assert status["state"] == "cancelled", status
    assert "before the trainer was running" in status["message"]
    assert not (tmp_path / "r" / "train.lock").exists()
    if delay:
        assert status["signal"] == "SIGTERM"


def test_a_run_owned_by_another_host_is_neither_relaunched_nor_signalled_from_here(tmp_path):
    from core.training.launch import cancel_run, launch_resume
    from core.training.run_folder import RunLockedError

    run = RunFolder(tmp_path / "r")
    run.write_config(TrainConfig(**TINY, epochs=1).to_dict())
    run.write_status("running", pid=999_999_999, host="worker-7", started=time.time())
    with pytest.raises(RunLockedError, match="on host worker-7"):
        launch_resume(run.path)
    with pytest.raises(FailedError, match="on host worker-7: cancel it there"):
        cancel_run(run.path)
    assert run.read_status()["state"] == "running"
    # Local capacity: another machine's trainer holds none of this machine's GPUs.
    run.write_status("running", pid=999_999_999, host="worker-7", gpus=["0"])
    launcher = LocalLauncher(gpu_ids=["0"], cpus=1)
    assert launcher.capacity()["gpus_free"] == 1
    launcher.watch(tmp_path)
    assert launcher.capacity()["running"] == 0


def test_local_launcher_records_the_user_and_pins_threads_only_for_a_share(tmp_path):
    launcher = LocalLauncher(gpu_ids=[], cpus=4, python=sys.executable)
    assert launcher._threads(4, 1, None) is None            # the whole machine: the trainer's own default
    assert launcher._threads(4, 1, 3) == 3                  # a config that pins it keeps it
    assert launcher._threads(2, 2, None) == 1               # a share, divided between processes
    run_dir = tmp_path / "r"
    launcher.submit(TrainConfig(**TINY, epochs=1, num_threads=1), run_dir, gpus=0, cpus=1, user="alice")
    try:
        handle = read_handle(run_dir)
        assert handle["user"] == "alice" and handle["host"]
        status = RunFolder(run_dir).read_raw_status()
        assert status["pid"] == handle["pid"] == status["pgid"] and status["host"] == handle["host"]
        assert launcher.capacity()["by_user"] == {"alice": 1}
    finally:
        assert launcher.cancel(run_dir, timeout=60)
    assert RunFolder(run_dir).read_status()["state"] == "cancelled"


def test_ray_records_the_user_and_the_workers_pid_with_its_host(tmp_path):
    from core.training.run_folder import this_host

    launcher, server, run_dir = _ray(tmp_path)
    launcher.submit(TrainConfig(**TINY, epochs=3), run_dir, gpus=0, cpus=1, user="alice")
    assert server.submitted[-1]["metadata"]["archscope_user"] == "alice" and read_handle(run_dir)["user"] == "alice"
    sid = read_handle(run_dir)["submission_id"]
    # What a Ray job runs first: ray_entry puts its pid (the trainer's, after exec) and host into status.json.
    done = subprocess.run([sys.executable, "-m", "core.training.ray_entry", "--run-dir", str(run_dir.resolve()),
                           "--submission-id", sid, "--gpus", "0", "--", sys.executable, "-c", "pass"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    status = RunFolder(run_dir).read_raw_status()
    assert status["state"] == "queued" and status["pid"] == read_handle(run_dir)["worker"]["pid"]
    assert status["host"] == this_host()
    # The job ended without the trainer ever writing 'running': not "while training".
    server.jobs[sid].status, server.jobs[sid].message = "FAILED", "exit code 1"
    assert "failed before the trainer was running" in launcher.status(run_dir)["message"]


def test_ray_resume_removes_the_lock_of_a_trainer_whose_job_is_over(tmp_path):
    launcher, server, run_dir = _ray(tmp_path)
    launcher.submit(TrainConfig(**TINY, epochs=3), run_dir, gpus=0, cpus=1)
    sid = read_handle(run_dir)["submission_id"]
    server.jobs[sid].status = "RUNNING"
    (run_dir / "train.lock").write_text("4242 worker-7\n")      # its trainer on a worker, SIGKILLed
    with pytest.raises(RunBusyError, match="running"):
        launcher.resume(run_dir, gpus=0, cpus=1)                # the job is live: the lock stays
    assert (run_dir / "train.lock").exists()
    server.jobs[sid].status = "FAILED"
    launcher.resume(run_dir, gpus=0, cpus=1)                    # Ray says it is over: the lock is stale
    assert not (run_dir / "train.lock").exists()
