"""Training under faults: a second launch, kill -9 at random moments, a read-only folder, NaN, cancel.

Already covered elsewhere (not repeated): a second trainer refused by a live train.lock and a stale
lock taken over (tests/core/training/test_trainer.py::test_second_trainer_is_refused_and_stale_lock_
taken_over), one kill -9 then resume (…::test_resume_after_sigkill_keeps_epochs_unique_and_contiguous),
NaN in the first epoch (…::test_diverging_loss_fails_naming_epoch_and_step), cancel through the
LaunchedRun handle (…::test_launch_and_cancel_keeps_last_checkpoint).
"""

from __future__ import annotations

import errno
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.train import main as train_main
from core.training import trainer
from core.training.checkpoint import load_resume_state, load_run_model, load_weights
from core.training.config import TrainConfig
from core.training.launch import cancel_run, launch_training
from core.training.run_folder import RunFolder, RunLockedError
from tests.core.training.helpers import QUICK, env, popen_train, run_cli, wait_for

TINY = dict(model="cnn2", dataset="shapes", image_size=32, max_train_samples=128, batch_size=32,
            device="cpu", num_threads=1, eval_at_end=False, log_every=1, tensorboard=False)


def _checkpoints_load(run: RunFolder) -> int:
    """Every checkpoint file present loads; returns the committed epoch (0 when none yet)."""
    if run.best_weights_path.exists():
        load_weights(run.best_weights_path)
    if run.last_weights_path.exists():
        load_weights(run.last_weights_path)
    if run.resume_state_path.exists():
        return int(load_resume_state(run.resume_state_path)["epoch"])
    return 0


@pytest.mark.slow
def test_second_launch_refused_then_cancel_run_keeps_last_checkpoint(tmp_path):
    """Two launches into one folder a moment apart (before the first trainer took train.lock): the
    second is refused and config.json stays the first one's. Then cancel_run(run_dir), as another
    dashboard session would (no process handle): status cancelled, last checkpoint kept and loadable."""
    out = tmp_path / "run"
    first = launch_training(TrainConfig(**TINY, epochs=200, seed=1), out)
    try:
        with pytest.raises(RunLockedError, match="is in use"):
            launch_training(TrainConfig(**TINY, epochs=200, seed=2), out)
        run = RunFolder(out)
        assert run.read_config()["seed"] == 1
        wait_for(lambda: run.resume_state_path.exists(), 120, first.process, "the first epoch")
        with pytest.raises(RunLockedError):                      # and still while it trains
            launch_training(TrainConfig(**TINY, epochs=200, seed=3), out)
        assert cancel_run(out, timeout=60)
        assert first.wait(timeout=30) == 143
    finally:
        if first.poll() is None:
            first.process.kill()
            first.wait()
    status = run.read_status()
    assert status["state"] == "cancelled" and "--resume" in status["message"], status
    assert run.read_config()["seed"] == 1 and not run.lock_path.exists()
    done = [m["epoch"] for m in run.read_metrics()]
    assert done and _checkpoints_load(run) == done[-1]
    model, cfg = load_run_model(out, "last")
    assert cfg.seed == 1 and all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_a_checkpoint(tmp_path):
    """kill -9 a trainer repeatedly, each time a few ms after a new metrics row appeared (the start of
    the checkpoint writes, the riskiest moment) or at a random time; after every kill each checkpoint
    file loads and the committed epoch never goes back; a final resume completes every epoch once."""
    out = tmp_path / "run"
    epochs = 16
    args = [*QUICK, "--max-train-samples", "64", "--batch-size", "32", "--epochs", str(epochs), "--log-every", "1",
            "--quiet", "--no-eval", "--no-tensorboard"]
    rng = random.Random(1234)
    run = RunFolder(out)
    committed = 0
    for attempt in range(4):
        cmd = [*args, "--out", str(out)] if attempt == 0 else ["--resume", str(out), "--quiet"]
        proc = popen_train(*cmd, log=tmp_path / f"log{attempt}")
        try:
            rows_at_start = len(run.read_metrics())
            wait_for(lambda: len(run.read_metrics()) > rows_at_start, 60, proc, "a new epoch row")
            if attempt % 2 == 0:
                time.sleep(rng.uniform(0.0, 0.05))            # inside the checkpoint writes
            else:
                time.sleep(rng.uniform(0.0, 1.0))             # anywhere
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        now = _checkpoints_load(run)
        assert now >= committed, (attempt, now, committed)
        committed = now
        assert run.read_status()["state"] == "failed"         # dead pid, not 'running' forever
    assert committed >= 1
    final = run_cli("core.train", "--resume", str(out), "--quiet", timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert [m["epoch"] for m in run.read_metrics()] == list(range(1, epochs + 1))
    assert _checkpoints_load(run) == epochs
    assert not list(out.glob(".*.tmp")), "temp files of killed writes are cleaned up"


def _read_only_mount_works(path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {path} {path} && "
                            f"mount -o remount,bind,ro {path} && ! touch {path}/probe"],
                           capture_output=True)
    return probe.returncode == 0


def test_read_only_run_folder_fails_clearly(tmp_path):
    """A real read-only file system (a private read-only bind mount, root only): exit 1, one line
    naming the folder and the cause, no traceback, nothing half-written."""
    ro = tmp_path / "ro"
    (ro / "run").mkdir(parents=True)
    if not _read_only_mount_works(ro):
        pytest.skip("needs root and mount namespaces (unshare -m) for a read-only bind mount")
    cmd = " ".join([sys.executable, "-m", "core.train", *QUICK, "--epochs", "1", "--quiet", "--no-tensorboard",
                    "--out", str(ro / "run")])
    proc = subprocess.run(["unshare", "-m", "sh", "-c",
                           f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec {cmd}"],
                          cwd=Path(__file__).resolve().parents[2], env=env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot write to ") and str(ro / "run") in line and "Read-only" in line
    assert not any((ro / "run").iterdir())


def test_folder_turning_read_only_mid_training_keeps_the_committed_epoch(tmp_path, monkeypatch, capsys):
    """Every write fails with EROFS from epoch 2 on (the disk was remounted read-only, or filled up):
    the trainer returns 'failed' with the file named and how to continue, does not raise, and epoch 1's
    checkpoints still load."""
    import core.io
    from core.training import checkpoint as ckpt

    broken = {"on": False}
    real_atomic, real_append = core.io.atomic_write, trainer.append_jsonl

    def atomic_write(path, write):
        if broken["on"]:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_atomic(path, write)

    def append_jsonl(path, obj):
        if broken["on"]:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_append(path, obj)

    real_state = ckpt.save_resume_state

    def save_resume_state(path, state):
        real_state(path, state)
        if state["epoch"] == 1:
            broken["on"] = True                     # epoch 1 is committed; then the disk goes away

    monkeypatch.setattr(core.io, "atomic_write", atomic_write)
    monkeypatch.setattr(ckpt, "atomic_write", atomic_write)
    monkeypatch.setattr(trainer, "append_jsonl", append_jsonl)
    monkeypatch.setattr(ckpt, "save_resume_state", save_resume_state)
    out = tmp_path / "run"
    status = trainer.train(TrainConfig(**TINY, epochs=3), out, quiet=True)
    assert status["state"] == "failed"
    msg = status["message"]
    assert "Read-only file system" in msg and str(out) in msg and "--resume" in msg
    assert "status.json could not be updated" in msg            # and it says the status is stale
    broken["on"] = False
    run = RunFolder(out)
    assert _checkpoints_load(run) == 1
    assert [m["epoch"] for m in run.read_metrics()] == [1]
    load_run_model(out, "last")


def test_nan_after_a_good_epoch_fails_and_keeps_that_epoch(tmp_path, monkeypatch, capsys):
    """The loss turns NaN in epoch 2: exit 1 with the epoch named; epoch 1's weights stay finite."""
    calls = {"n": 0}
    real = torch.nn.CrossEntropyLoss

    class NaNLater(real):
        def forward(self, input, target):
            calls["n"] += 1
            loss = super().forward(input, target)
            return loss * float("nan") if calls["n"] > 4 else loss    # 4 batches = epoch 1

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", NaNLater)
    out = tmp_path / "run"
    code = train_main(["--model", "cnn2", "--dataset", "shapes", "--image-size", "32", "--max-train-samples", "128",
                       "--batch-size", "32", "--epochs", "3", "--log-every", "1", "--num-threads", "1", "--quiet",
                       "--no-eval", "--no-tensorboard", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "epoch 2, step" in err and "lower learning rate" in err
    run = RunFolder(out)
    assert run.read_status()["state"] == "failed" and not run.lock_path.exists()
    assert [m["epoch"] for m in run.read_metrics()] == [1]
    for which in ("best", "last"):
        model, _ = load_run_model(out, which)
        assert all(torch.isfinite(p).all() for p in model.parameters())
    assert load_resume_state(run.resume_state_path)["epoch"] == 1
