"""The training queue: runs wait on disk while the machine is busy, start in order, each on its own GPUs."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from core.errors import InvalidInputError
from core.training.config import ConfigError, TrainConfig
from core.training.launcher_base import Launcher
from core.training.queue import QUEUED_MESSAGE, JobRegistry
from core.training.run_folder import RunFolder, waiting_for_slot

TINY = dict(model="cnn2", dataset="shapes", image_size=32, max_train_samples=256, epochs=1, tensorboard=False,
            num_threads=1)


def test_busy_machine_queues_then_cancel_from_the_queue(tmp_path):
    jobs = JobRegistry(start_thread=False, gpus=[])
    jobs.max_parallel = 0                      # every slot taken
    assert jobs.submit(TrainConfig(**TINY), tmp_path / "a") == "queued"
    assert jobs.submit(TrainConfig(**TINY, seed=1), tmp_path / "b") == "queued"
    st = RunFolder(tmp_path / "a").read_status()
    assert st["state"] == "queued" and st["message"] == QUEUED_MESSAGE and not st.get("pid")
    assert st["waiting_for_slot"] is True and waiting_for_slot(st)
    assert [r.run_id for r in jobs.queued()] == ["a", "b"]          # launch order
    assert jobs.cancel(tmp_path / "a")
    assert RunFolder(tmp_path / "a").read_status()["state"] == "cancelled"
    assert not waiting_for_slot(RunFolder(tmp_path / "a").read_status())
    assert [r.run_id for r in jobs.queued()] == ["b"]
    jobs.pump()                                 # still no free slot: nothing starts
    assert RunFolder(tmp_path / "b").read_status()["state"] == "queued"


def test_invalid_config_is_refused_at_submit_and_a_broken_queued_run_fails_clearly(tmp_path):
    jobs = JobRegistry(start_thread=False, gpus=[])
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        jobs.submit(TrainConfig(**{**TINY, "model": "nope"}), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    jobs.max_parallel = 0
    jobs.submit(TrainConfig(**TINY), tmp_path / "q")
    run = RunFolder(tmp_path / "q")
    cfg = run.read_config()
    cfg["model"] = "vanished_model"             # e.g. edited on disk while it waited
    run.write_config(cfg)
    jobs.max_parallel = 1
    jobs.pump()
    st = run.read_status()
    assert st["state"] == "failed" and "could not start from the queue" in st["message"]


@pytest.mark.slow
def test_queued_run_starts_when_a_slot_frees_and_cancel_stops_it(tmp_path):
    jobs = JobRegistry(start_thread=False, gpus=[])
    jobs.max_parallel = 0
    # far more epochs than the test waits for: it must still be running when cancelled, however fast the machine
    jobs.submit(TrainConfig(**{**TINY, "epochs": 100_000}), tmp_path / "long")
    jobs.max_parallel = 1
    jobs.pump()
    run = RunFolder(tmp_path / "long")
    assert run.read_status().get("pid"), "the pump launched the queued run"
    deadline = time.time() + 60
    while time.time() < deadline and run.read_status()["state"] != "running":
        time.sleep(0.2)
    assert run.read_status()["state"] == "running"
    assert jobs.active() == [str(run.path)]
    assert jobs.cancel(run.path, timeout=30)
    st = run.read_status()
    assert st["state"] == "cancelled", st
    assert jobs.active() == []


# ---------------------------------------------------------------------------------------------- GPU slots
# A stand-in for the Python interpreter: it records the command line and CUDA_VISIBLE_DEVICES it was
# started with into <run>/child.json, then waits until <run>/finish exists. The queue cannot tell it
# from a trainer (a real process that lives until it ends), and no GPU is needed to see the slots.
FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys, time
argv = sys.argv[1:]
run = argv[argv.index("--out") + 1] if "--out" in argv else argv[argv.index("--resume") + 1]
with open(os.path.join(run, "child.json"), "w") as fh:
    json.dump({{"argv": argv, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}}, fh)
deadline = time.time() + 120
while not os.path.exists(os.path.join(run, "finish")) and time.time() < deadline:
    time.sleep(0.02)
"""
CFG = dict(model="cnn2", dataset="shapes", image_size=32, max_train_samples=64, epochs=1, tensorboard=False)


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "fake-python"
    path.write_text(FAKE_PYTHON)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def child(run_dir: Path, timeout: float = 30) -> dict:
    """What the fake trainer of ``run_dir`` was started with (waits for it to write it)."""
    path = run_dir / "child.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.02)
    raise AssertionError(f"the fake trainer of {run_dir} did not start")


def finish(jobs: JobRegistry, *run_dirs: Path) -> None:
    for d in run_dirs:
        (d / "finish").touch()
    for d in run_dirs:
        job = jobs.processes.get(str(d))
        if job is not None:
            job.wait(30)


def test_two_trainings_get_different_gpus_a_third_waits_until_one_finishes(tmp_path, fake_python):
    jobs = JobRegistry(start_thread=False, gpus=["0", "1"], cores=8, python=fake_python)
    assert jobs.max_parallel == 2                          # one training per GPU by default
    jobs.max_parallel = 3                                  # the GPUs, not the count, are the limit now
    a, b, c = (tmp_path / n for n in "abc")
    try:
        assert jobs.submit(TrainConfig(**CFG), a) == "started"
        assert jobs.submit(TrainConfig(**CFG, seed=1), b) == "started"
        assert jobs.submit(TrainConfig(**CFG, seed=2), c) == "queued"
        assert waiting_for_slot(RunFolder(c).read_status())
        given = {child(a)["gpus"], child(b)["gpus"]}
        assert given == {"0", "1"}
        assert RunFolder(a).read_status()["gpus"] == [child(a)["gpus"]]
        argv = child(a)["argv"]
        assert argv[argv.index("--num-threads") + 1] == "2"   # 8 cores shared by 3 slots
        jobs.pump()
        assert waiting_for_slot(RunFolder(c).read_status())   # no GPU free yet
        finish(jobs, a)
        assert str(a) not in jobs.active() and jobs.free_gpus() == [child(a)["gpus"]]
        jobs.pump()
        assert child(c)["gpus"] == child(a)["gpus"]           # the freed card, and only that one
        assert not waiting_for_slot(RunFolder(c).read_status())
        assert sorted(jobs.active()) == sorted([str(b), str(c)])
    finally:
        finish(jobs, a, b, c)


def test_torchrun_job_takes_nproc_gpus_and_its_own_rendezvous(tmp_path, fake_python):
    jobs = JobRegistry(start_thread=False, gpus=["0", "1"], cores=8, python=fake_python)
    ddp, cpu, later = tmp_path / "ddp", tmp_path / "cpu", tmp_path / "later"
    try:
        assert jobs.submit(TrainConfig(**CFG), ddp, nproc=2) == "started"
        started = child(ddp)
        assert started["gpus"] == "0,1"
        argv = started["argv"]
        assert argv[:2] == ["-m", "torch.distributed.run"] and "--standalone" not in argv
        assert "--rdzv-backend=c10d" in argv and "--rdzv-endpoint=localhost:0" in argv   # no fixed port 29500
        assert "--nproc-per-node=2" in argv
        assert RunFolder(ddp).read_status()["nproc"] == 2
        jobs.max_parallel = 3
        assert jobs.submit(TrainConfig(**CFG), later) == "queued"             # both cards are taken
        assert jobs.submit(TrainConfig(**CFG, device="cpu"), cpu) == "started"  # a CPU run needs no card...
        assert child(cpu)["gpus"] == ""                                         # ...and sees none
        with pytest.raises(InvalidInputError, match="need 3 GPUs; this machine has 2"):
            jobs.submit(TrainConfig(**CFG), tmp_path / "big", nproc=3)
        assert not (tmp_path / "big").exists()
    finally:
        finish(jobs, ddp, cpu, later)
    # resume keeps the process count the run was launched with
    RunFolder(ddp).write_status("cancelled", pid=None)
    (ddp / "finish").unlink()
    (ddp / "child.json").unlink()
    try:
        assert jobs.resume(ddp) == "started"
        argv = child(ddp)["argv"]
        assert "--nproc-per-node=2" in argv and argv[argv.index("--resume") + 1] == str(ddp.resolve())
    finally:
        finish(jobs, ddp)


def test_no_gpu_machine_refuses_cuda_and_leaves_cuda_visible_devices_alone(tmp_path, fake_python, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "inherited")
    jobs = JobRegistry(start_thread=False, gpus=[], cores=2, python=fake_python)
    with pytest.raises(InvalidInputError, match="no CUDA GPU"):
        jobs.submit(TrainConfig(**CFG, device="cuda"), tmp_path / "gpu")
    try:
        assert jobs.submit(TrainConfig(**CFG), tmp_path / "cpu") == "started"
        started = child(tmp_path / "cpu")
        assert started["gpus"] == "inherited" and "--num-threads" not in started["argv"]   # one slot: trainer decides
    finally:
        finish(jobs, tmp_path / "cpu")


@pytest.mark.slow
def test_run_cancelled_while_queued_resumes_from_epoch_zero(tmp_path):
    jobs = JobRegistry(start_thread=False, gpus=[])
    jobs.max_parallel = 0
    run = RunFolder(tmp_path / "q")
    assert jobs.submit(TrainConfig(**TINY), run.path) == "queued"
    assert jobs.cancel(run.path)
    assert run.read_status()["state"] == "cancelled" and not run.resume_state_path.exists()
    jobs.max_parallel = 1
    assert jobs.resume(run.path) == "started"
    assert jobs.processes[str(run.path)].wait(120) == 0, (run.path / "train.log").read_text()
    assert run.read_status()["state"] == "done"
    assert [m["epoch"] for m in run.read_metrics()] == [1]


# ---------------------------------------------------------------------------------------------- command lines
def test_one_trainer_command_line_and_environment(tmp_path, monkeypatch):
    from core.training.launch import child_env, resume_nproc, train_command

    assert train_command(config="c.json", out="runs/a", python="py") == [
        "py", "-m", "core.train", "--config", "c.json", "--out", "runs/a", "--quiet"]
    cmd = train_command(resume="runs/a", nproc=4, epochs=20, device="cuda", num_threads=3, quiet=False, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nnodes=1", "--rdzv-backend=c10d",
                   "--rdzv-endpoint=localhost:0", "--nproc-per-node=4", "-m", "core.train", "--resume", "runs/a",
                   "--epochs", "20", "--device", "cuda", "--num-threads", "3"]
    with pytest.raises(ValueError, match="either config= and out=, or resume="):
        train_command(config="c.json", out="o", resume="r")
    with pytest.raises(ValueError):
        train_command(config="c.json")
    with pytest.raises(InvalidInputError, match=">= 1"):
        train_command(resume="r", nproc=0)

    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = child_env(gpus=["2", "3"])
    assert env["PYTHONPATH"] == "/somewhere" and env["CUDA_VISIBLE_DEVICES"] == "2,3"   # nothing injected
    assert "CUDA_VISIBLE_DEVICES" not in child_env(base={})

    run = RunFolder(tmp_path / "r")
    run.write_config({"model": "cnn2"})
    assert resume_nproc(run.path) == 1                          # nothing recorded: one process
    run.write_status("cancelled", nproc=2)
    assert resume_nproc(run.path) == 2                          # recorded by the launcher
    run.write_config({"model": "cnn2", "run": {"world_size": 4}})
    assert resume_nproc(run.path) == 4                          # what the trainer really ran with


def test_resume_waits_for_a_slot_like_a_launch(tmp_path, fake_python):
    jobs = JobRegistry(start_thread=False, gpus=["7"], cores=4, python=fake_python)
    busy, stopped = tmp_path / "busy", tmp_path / "stopped"
    RunFolder(stopped).write_config(TrainConfig(**CFG).to_dict())
    RunFolder(stopped).write_status("cancelled", pid=None, message="cancelled while waiting in the queue")
    try:
        assert jobs.submit(TrainConfig(**CFG), busy) == "started"
        assert jobs.resume(stopped) == "queued"
        assert waiting_for_slot(RunFolder(stopped).read_status())
        finish(jobs, busy)
        jobs.pump()
        started = child(stopped)
        assert "--resume" in started["argv"] and started["gpus"] == "7"
    finally:
        finish(jobs, busy, stopped)
    with pytest.raises(ConfigError, match="cannot resume"):
        jobs.resume(tmp_path / "never-trained")


# ---------------------------------------------------------------------------------------------- any backend
class FakeLauncher(Launcher):
    """A backend with ``gpus`` GPUs and ``cpus`` CPUs that reserves them (like a cluster): it records
    what the queue asks for and "runs" a job until the test calls end(). No process is started."""

    backend = "fake"

    def __init__(self, gpus: int = 2, cpus: int = 4) -> None:
        self.gpus, self.cpus = gpus, cpus
        self.jobs: dict[str, dict] = {}          # run path -> {"gpus", "cpus", "user", "live"}
        self.calls: list[tuple] = []
        self.cancelled: list[str] = []

    def _start(self, run_dir, gpus, cpus, user, kind):
        self.calls.append((kind, Path(run_dir).name, gpus, cpus, user))
        self.jobs[str(run_dir)] = {"gpus": gpus, "cpus": cpus, "user": user or "?", "live": True}
        RunFolder(run_dir).write_status("running", pid=None, message="on the fake backend", waiting_for_slot=False)
        return Path(run_dir).name

    def submit(self, config, run_dir, *, gpus, cpus, nproc=1, user=None):
        RunFolder(run_dir).write_config(config.to_dict())
        return self._start(run_dir, gpus, cpus, user, "submit")

    def resume(self, run_dir, *, gpus, cpus, nproc=None, epochs=None, user=None):
        return self._start(run_dir, gpus, cpus, user, "resume")

    def status(self, run_dir):
        return RunFolder(run_dir).read_status()

    def cancel(self, run_dir, *, timeout=15.0):
        self.cancelled.append(Path(run_dir).name)
        self.end(run_dir, "cancelled")
        return True

    def logs(self, run_dir):
        return ""

    def end(self, run_dir, state="done"):
        self.jobs[str(run_dir)]["live"] = False
        RunFolder(run_dir).write_status(state, message=f"{state} on the fake backend")

    def capacity(self):
        live = [j for j in self.jobs.values() if j["live"]]
        by_user: dict[str, int] = {}
        for job in live:
            by_user[job["user"]] = by_user.get(job["user"], 0) + 1
        return {"backend": self.backend, "gpus": self.gpus, "cpus": self.cpus,
                "gpus_free": self.gpus - sum(j["gpus"] for j in live),
                "cpus_free": self.cpus - sum(j["cpus"] for j in live), "running": len(live), "by_user": by_user}


def test_a_run_leaves_the_queue_only_when_the_backend_has_room(tmp_path):
    fake = FakeLauncher(gpus=1, cpus=2)
    jobs = JobRegistry(start_thread=False, launcher=fake, user="alice")
    a, b, c = (tmp_path / n for n in "abc")
    assert jobs.submit(TrainConfig(**CFG), a) == "started"
    assert fake.calls == [("submit", "a", 1, 1, "alice")]        # one GPU, one CPU per process on a cluster
    assert jobs.submit(TrainConfig(**CFG), b) == "queued"        # the only GPU is taken
    status = RunFolder(b).read_status()
    assert waiting_for_slot(status) and status["message"] == QUEUED_MESSAGE
    assert status["waiting_because"] == "needs 1 GPU(s), 0 free" and status["user"] == "alice"
    assert jobs.submit(TrainConfig(**CFG, device="cpu"), c) == "started"  # needs no GPU: fits now
    assert [r.run_id for r in jobs.queued()] == ["b"]
    assert jobs.active() == [str(a), str(c)]

    jobs.pump()
    assert len(fake.calls) == 2                                  # nothing freed: nothing submitted
    fake.end(a)
    jobs.pump()
    assert fake.calls[-1][:3] == ("submit", "b", 1)
    assert jobs.queued() == [] and jobs.active() == [str(b), str(c)]

    # CPUs count too where the backend reserves them: both are taken by b and c now.
    d = tmp_path / "d"
    assert jobs.submit(TrainConfig(**CFG, device="cpu"), d) == "queued"
    assert RunFolder(d).read_status()["waiting_because"] == "needs 1 CPU(s), 0 free"
    # Cancel goes to the launcher that started the run; a waiting run just leaves the queue.
    assert jobs.cancel(b) and fake.cancelled == ["b"]
    assert jobs.cancel(d) and fake.cancelled == ["b"] and RunFolder(d).read_status()["state"] == "cancelled"
    with pytest.raises(InvalidInputError, match="need 2 GPUs; the cluster at .* has 1"):
        jobs.submit(TrainConfig(**CFG), tmp_path / "wide", nproc=2)


def test_per_user_cap_holds_only_that_users_runs(tmp_path):
    fake = FakeLauncher(gpus=4, cpus=8)
    jobs = JobRegistry(start_thread=False, launcher=fake, user="alice", max_runs_per_user=1)
    a1, a2, b1 = tmp_path / "a1", tmp_path / "a2", tmp_path / "b1"
    assert jobs.submit(TrainConfig(**CFG), a1) == "started"
    assert jobs.submit(TrainConfig(**CFG), a2) == "queued"                 # alice is at her cap...
    assert "alice has 1 live run(s), the most one user may have (1)" in RunFolder(a2).read_status()["waiting_because"]
    jobs.max_parallel = 1
    assert jobs.submit(TrainConfig(**CFG), b1, user="bob") == "queued"     # (the slots are full here)
    jobs.max_parallel = 8
    jobs.pump()
    # ...which does not hold bob back, although his run came later.
    assert [(call[1], call[4]) for call in fake.calls] == [("a1", "alice"), ("b1", "bob")]
    assert waiting_for_slot(RunFolder(a2).read_status())
    fake.end(a1)
    jobs.pump()
    assert fake.calls[-1][1] == "a2" and fake.capacity()["by_user"] == {"alice": 1, "bob": 1}
    with pytest.raises(InvalidInputError, match="max_runs_per_user must be an integer >= 1"):
        JobRegistry(start_thread=False, launcher=fake, max_runs_per_user=0)


def test_the_default_backend_comes_from_the_environment(monkeypatch):
    from core.training.launchers import LocalLauncher, RayJobsLauncher
    from core.training.queue import REMOTE_MAX_PARALLEL, USER_CAP_ENV

    monkeypatch.delenv("ARCHSCOPE_LAUNCHER", raising=False)
    local = JobRegistry(start_thread=False, gpus=["0", "1"], cores=4)
    assert isinstance(local.launcher, LocalLauncher) and local.launcher.gpu_ids == ["0", "1"]
    assert local.max_parallel == 2 and local.max_runs_per_user is None
    monkeypatch.setenv("ARCHSCOPE_LAUNCHER", "http://head:8265")
    monkeypatch.setenv(USER_CAP_ENV, "2")
    remote = JobRegistry.from_environment(start_thread=False)       # no connection until it is used
    assert isinstance(remote.launcher, RayJobsLauncher) and remote.launcher.address == "http://head:8265"
    assert remote.max_parallel == REMOTE_MAX_PARALLEL and remote.max_runs_per_user == 2
    monkeypatch.setenv(USER_CAP_ENV, "two")
    with pytest.raises(InvalidInputError, match="ARCHSCOPE_MAX_RUNS_PER_USER='two': give a whole number"):
        JobRegistry.from_environment(start_thread=False)


def test_a_live_run_of_another_host_holds_its_slot(tmp_path):
    """A trainer on another machine (its pid means nothing here) counts as live while its status says so."""
    jobs = JobRegistry(start_thread=False, gpus=[], cores=2)
    elsewhere = RunFolder(tmp_path / "elsewhere")
    elsewhere.write_config(TrainConfig(**CFG).to_dict())
    elsewhere.write_status("running", pid=999_999_999, host="some-other-host")
    jobs.watch(tmp_path)
    assert jobs.active() == [str(elsewhere.path)]
    elsewhere.write_status("running", pid=999_999_999, host=None)      # no host: this machine, and it is gone
    assert jobs.active() == []
