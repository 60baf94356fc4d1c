"""The dashboard's training queue: runs wait on disk while the machine is busy, start in order."""

from __future__ import annotations

import time

import pytest

from core.training.config import ConfigError, TrainConfig
from core.training.run_folder import RunFolder
from dashboard.components.jobs import QUEUED_MESSAGE, JobRegistry

TINY = dict(model="cnn2", dataset="shapes", image_size=32, max_train_samples=256, epochs=1, tensorboard=False,
            num_threads=1)


def test_busy_machine_queues_then_cancel_from_the_queue(tmp_path):
    jobs = JobRegistry(start_thread=False)
    jobs.max_parallel = 0                      # every slot taken
    assert jobs.submit(TrainConfig(**TINY), tmp_path / "a") == "queued"
    assert jobs.submit(TrainConfig(**TINY, seed=1), tmp_path / "b") == "queued"
    st = RunFolder(tmp_path / "a").read_status()
    assert st["state"] == "queued" and st["message"] == QUEUED_MESSAGE and not st.get("pid")
    assert [r.run_id for r in jobs.queued()] == ["a", "b"]          # launch order
    assert jobs.cancel(tmp_path / "a")
    assert RunFolder(tmp_path / "a").read_status()["state"] == "cancelled"
    assert [r.run_id for r in jobs.queued()] == ["b"]
    jobs.pump()                                 # still no free slot: nothing starts
    assert RunFolder(tmp_path / "b").read_status()["state"] == "queued"


def test_invalid_config_is_refused_at_submit_and_a_broken_queued_run_fails_clearly(tmp_path):
    jobs = JobRegistry(start_thread=False)
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
    jobs = JobRegistry(start_thread=False)
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
