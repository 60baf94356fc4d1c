"""Ray Jobs launcher against a real local Ray head (optional extra `ray`; skipped without it).

One head per test session: ``ray start --head --num-cpus=2 --num-gpus=2`` (fake GPUs: Ray hands
out the ids through CUDA_VISIBLE_DEVICES whether or not the cards exist), in its own temp dir and
on free ports so that it collides with nothing else on the machine, stopped with
``ray stop --force`` at the end. (``ray stop`` takes no address: it stops every Ray process of
this user on the machine, so do not run these tests on a machine that is itself a Ray node.)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

pytest.importorskip("ray.job_submission", reason="Ray is not installed (optional extra: pip install -e '.[ray]')")

from core.training.config import TrainConfig  # noqa: E402
from core.training.launchers import launcher_for, read_handle  # noqa: E402
from core.training.queue import JobRegistry  # noqa: E402
from core.training.ray_jobs import RayJobsLauncher  # noqa: E402
from core.training.run_folder import RunFolder, waiting_for_slot  # noqa: E402
from tests.core.training.helpers import env, wait_for  # noqa: E402

pytestmark = pytest.mark.slow

TINY = dict(model="cnn2", dataset="shapes", image_size=32, max_train_samples=64, batch_size=32, seed=0)
RAY = [sys.executable, "-m", "ray.scripts.scripts"]     # the ray CLI of this interpreter, whatever PATH says


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head():
    """The Ray dashboard address of a fresh local head with 2 CPUs and 2 (fake) GPUs."""
    # Token authentication is on by default for new clusters when a token exists in ~/.ray; say
    # explicitly that this throwaway, localhost-only head runs without (Ray 2.60 knows "disabled"
    # and "token"), for the head and for this process's client alike.
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")
    # Short path: Ray's unix sockets live under it and must stay within 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    dashboard_port = _free_port()
    environ = {**env(), "RAY_AUTH_MODE": "disabled"}
    started = subprocess.run(
        [*RAY, "start", "--head", "--num-cpus=2", "--num-gpus=2", "--disable-usage-stats",
         f"--temp-dir={temp_dir}", f"--port={_free_port()}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={_free_port()}",
         f"--dashboard-agent-listen-port={_free_port()}", "--include-dashboard=true"],
        env=environ, capture_output=True, text=True, timeout=120)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        assert started.returncode == 0, f"ray start failed:\n{started.stdout}\n{started.stderr}"
        from ray.job_submission import JobSubmissionClient
        deadline = time.time() + 60
        while True:       # the job server answers a moment after `ray start` returns
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        subprocess.run([*RAY, "stop", "--force"], env=environ, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)
        mp.undo()


def test_two_jobs_get_their_own_gpu_one_is_cancelled_and_a_new_launcher_reconnects(ray_head, tmp_path):
    launcher = RayJobsLauncher(ray_head, env={"ARCHSCOPE_CACHE": os.environ["ARCHSCOPE_CACHE"]})
    short, long = tmp_path / "short", tmp_path / "long"
    assert launcher.submit(TrainConfig(**TINY, epochs=1), short, gpus=1, cpus=1) == "short"
    assert launcher.submit(TrainConfig(**TINY, epochs=500), long, gpus=1, cpus=1) == "long"
    capacity = launcher.capacity()
    assert (capacity["gpus"], capacity["cpus"], capacity["nodes"]) == (2, 2, 1)
    assert capacity["gpus_free"] == 0 and capacity["running"] + capacity["pending"] == 2

    # A job that cannot fit (2 GPUs while `long` holds one) waits in Ray: queued. Ray cannot stop a
    # pending job (ray-project/ray#58353): the run reads cancelled at once and never trains.
    wait_for(lambda: launcher.status(long).get("ray_state") == "RUNNING", 60, what="Ray to start the long job")
    launcher.submit(TrainConfig(**TINY, epochs=1), tmp_path / "wide", gpus=2, cpus=1, nproc=2)
    wide = launcher.status(tmp_path / "wide")
    assert (wide["state"], wide["ray_state"]) == ("queued", "PENDING")
    assert launcher.cancel(tmp_path / "wide", timeout=30)
    wide = launcher.status(tmp_path / "wide")
    assert wide["state"] == "cancelled" and "while waiting for resources" in wide["message"]

    # Each job saw only the GPU Ray gave it (recorded by core.training.ray_entry).
    wait_for(lambda: launcher.status(long).get("state") == "running", 90, what="the long run's trainer")
    seen = [read_handle(run)["worker"]["gpus"] for run in (short, long)]
    assert all(len(g) == 1 for g in seen) and {g[0] for g in seen} == {"0", "1"}, seen

    # A restarted dashboard: new launcher objects, rebuilt from launcher.json.
    again = launcher_for(long)
    assert isinstance(again, RayJobsLauncher) and again is not launcher
    started = time.time()
    assert again.cancel(long, timeout=30)
    status = again.status(long)
    # Written by the trainer itself on SIGTERM (Ray kills it 3 s later: a SIGKILLed trainer would
    # read as "Ray job ... stopped while training" instead).
    assert status["state"] == "cancelled" and "SIGTERM" in status["message"], status
    assert time.time() - started < 15

    wait_for(lambda: launcher_for(short).status(short).get("state") == "done", 120, what="the short run")
    logs = RayJobsLauncher(ray_head).logs(short)
    assert "ray_entry: host" in logs and "CUDA_VISIBLE_DEVICES=" in logs
    # Once both GPUs are free Ray places `wide`, whose entrypoint ends without training.
    wait_for(lambda: RayJobsLauncher(ray_head).capacity()["gpus_free"] == 2, 60, what="every GPU to be free")
    wide_job = read_handle(tmp_path / "wide")["submission_id"]
    wait_for(lambda: launcher.client.get_job_status(wide_job).is_terminal(), 60, what="the cancelled pending job to end")
    # Ended by the stop request Ray delivers once the job is placed, or by ray_entry refusing to
    # start a cancelled run, whichever comes first: either way it never trained.
    assert launcher.status(tmp_path / "wide")["state"] == "cancelled"
    assert not (tmp_path / "wide" / "metrics.jsonl").exists()


def test_a_run_that_does_not_fit_waits_in_archscopes_queue_not_in_ray(ray_head, tmp_path):
    """Ray Jobs is not a queue (a job pending past RAY_JOB_START_TIMEOUT_SECONDS fails): through the
    JobRegistry a third run waits on disk, unknown to Ray, until a GPU frees, then goes to Ray."""
    cache = {"ARCHSCOPE_CACHE": os.environ["ARCHSCOPE_CACHE"]}
    jobs = JobRegistry(start_thread=False, launcher=RayJobsLauncher(ray_head, env=cache), user="alice")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    try:
        assert jobs.submit(TrainConfig(**TINY, epochs=500), a) == "started"
        assert jobs.submit(TrainConfig(**TINY, epochs=500), b) == "started"
        assert jobs.submit(TrainConfig(**TINY, epochs=1), c) == "queued"        # both (fake) GPUs are taken
        assert read_handle(c) is None and RunFolder(c).read_status()["waiting_because"] == "needs 1 GPU(s), 0 free"
        ray_runs = {(job.metadata or {}).get("archscope_run_id") for job in jobs.launcher.client.list_jobs()}
        assert "c" not in ray_runs and {"a", "b"} <= ray_runs                  # nothing of c pending in Ray
        assert jobs.launcher.capacity()["by_user"] == {"alice": 2}
        jobs.pump()
        assert waiting_for_slot(RunFolder(c).read_status())

        # A restarted dashboard cancels `a` through the launcher that started it (its launcher.json).
        again = JobRegistry(start_thread=False, launcher=RayJobsLauncher(ray_head, env=cache), user="alice")
        again.watch(tmp_path)
        assert again.launcher_of(a) is again.launcher and sorted(again.active()) == [str(a), str(b)]
        assert again.cancel(a, timeout=30)
        assert again.launcher.status(a)["state"] == "cancelled"
        wait_for(lambda: again.pump() or not waiting_for_slot(RunFolder(c).read_status()), 30,
                 what="the queue to hand c to Ray once a GPU is free")
        assert read_handle(c)["backend"] == "ray"
        wait_for(lambda: again.launcher.status(c).get("ray_state") in ("RUNNING", "SUCCEEDED"), 30,
                 what="Ray to place c at once (it fits)")
    finally:
        for run in (a, b, c):
            if read_handle(run) is not None and launcher_for(run).status(run)["state"] in ("queued", "running"):
                launcher_for(run).cancel(run, timeout=30)
