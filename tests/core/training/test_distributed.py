"""torchrun with 2 CPU processes (gloo) vs one process: same run shape, sane values, rank 0 alone writes.
A one-process torchrun creates a real process group too; a failure under torchrun ends 'failed'."""

import subprocess
import sys
from datetime import timedelta

import pytest
import torch

from core.training import distributed
from core.training.checkpoint import load_run_model
from core.training.config import ConfigError
from core.training.run_folder import RunFolder
from tests.core.training.helpers import METRIC_KEYS, QUICK, REPO, env


@pytest.mark.slow
def test_torchrun_two_cpu_processes_matches_single_process_shape(tmp_path):
    args = [*QUICK, "--max-train-samples", "256", "--epochs", "1", "--quiet", "--no-eval"]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "core.train", *args, "--out", str(tmp_path / "ddp")],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=240)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "core.train", *args, "--out", str(tmp_path / "one")],
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]

    a, b = RunFolder(tmp_path / "ddp"), RunFolder(tmp_path / "one")
    assert a.read_config()["run"]["world_size"] == 2 and b.read_config()["run"]["world_size"] == 1
    ma, mb = a.read_metrics(), b.read_metrics()
    assert len(ma) == len(mb) == 1                       # rank 0 alone wrote one row
    assert set(ma[0]) == set(mb[0]) == METRIC_KEYS
    for m in (ma[0], mb[0]):
        assert 0.0 <= m["train_acc"] <= 1.0 and 0.0 <= m["val_acc"] <= 1.0
        assert torch.isfinite(torch.tensor([m["train_loss"], m["val_loss"]])).all()
    # every train image seen once per epoch in both runs: 2 ranks x 2 steps x 64 vs 4 x 64
    assert len(a.read_steps()) >= 1 and a.read_steps()[-1]["step"] * 2 == b.read_steps()[-1]["step"]
    assert a.read_status()["state"] == b.read_status()["state"] == "done"
    ka, _ = load_run_model(a.path, "best")
    kb, _ = load_run_model(b.path, "best")
    assert {k: v.shape for k, v in ka.state_dict().items()} == {k: v.shape for k, v in kb.state_dict().items()}
    assert not any(k.startswith("module.") for k in ka.state_dict())


TORCHRUN_ENV = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "WORLD_SIZE", "RANK", distributed.TIMEOUT_ENV)


@pytest.fixture
def clean_env(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_only_a_torchrun_process_is_distributed(clean_env):
    assert not distributed.env_dist_info().enabled                     # plain python -m core.train
    clean_env.setenv("WORLD_SIZE", "1")                                # a stray variable in a shell
    assert not distributed.env_dist_info().enabled
    clean_env.setenv("TORCHELASTIC_RUN_ID", "abc")                     # torchrun --nproc_per_node=1
    info = distributed.env_dist_info()
    assert info.enabled and info.launched and info.world_size == 1 and info.is_main
    clean_env.delenv("TORCHELASTIC_RUN_ID")
    clean_env.setenv("LOCAL_RANK", "0")                                # another torchrun-style launcher
    assert distributed.env_dist_info().enabled
    clean_env.setenv("LOCAL_RANK", "x")
    with pytest.raises(ConfigError, match="LOCAL_RANK='x'"):
        distributed.env_dist_info()


def test_process_group_timeout_from_the_environment(clean_env):
    assert distributed.process_group_timeout() == timedelta(seconds=distributed.DEFAULT_TIMEOUT_S)
    clean_env.setenv(distributed.TIMEOUT_ENV, "90")
    assert distributed.process_group_timeout() == timedelta(seconds=90)
    for bad in ("0", "-5", "soon"):
        clean_env.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=distributed.TIMEOUT_ENV):
            distributed.process_group_timeout()


def test_cuda_rank_without_a_gpu_is_refused_before_joining(clean_env, monkeypatch):
    clean_env.setenv("TORCHELASTIC_RUN_ID", "abc")
    clean_env.setenv("WORLD_SIZE", "3")
    clean_env.setenv("RANK", "2")
    clean_env.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"LOCAL_RANK 2 has no GPU.*2 CUDA GPU\(s\)"):
        distributed.init_distributed("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        distributed.init_distributed("cuda")
    assert not torch.distributed.is_initialized()


def _torchrun_one(args, out, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
         "-m", "core.train", *args, "--out", str(out)],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_one_process_torchrun_creates_a_process_group_and_fails_cleanly(tmp_path):
    args = [*QUICK, "--max-train-samples", "128", "--epochs", "1", "--quiet", "--no-eval"]
    proc = _torchrun_one(args, tmp_path / "one")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = RunFolder(tmp_path / "one")
    cfg = run.read_config()["run"]
    assert cfg["world_size"] == 1 and cfg["process_group"] == "gloo"    # a real group, not the no-op path
    assert run.read_status()["state"] == "done" and len(run.read_metrics()) == 1
    # A failure inside the group (diverged loss): the status ends failed, never running, and
    # torchrun reports the failure.
    bad = _torchrun_one([*QUICK, "--epochs", "1", "--quiet", "--no-eval", "--log-every", "1", "--optimizer", "sgd",
                         "--lr", "1e12", "--momentum", "0"], tmp_path / "nan")
    assert bad.returncode != 0
    status = RunFolder(tmp_path / "nan").read_status()
    assert status["state"] == "failed" and "lower learning rate" in status["message"], status
