"""torchrun with 2 CPU processes (gloo) vs one process: same run shape, sane values, rank 0 alone writes."""

import subprocess
import sys

import pytest
import torch

from core.training.checkpoint import load_run_model
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
