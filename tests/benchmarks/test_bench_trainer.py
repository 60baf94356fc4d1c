"""benchmarks/bench_trainer.py: the paired accuracy summary is right, a tiny two-seed run works (the
plain baseline with the process defaults), and --device cuda without a GPU stops at once."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_trainer.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_trainer", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_summary_matches_a_hand_t_interval():
    ours, plain = [0.70, 0.66, 0.61], [0.69, 0.63, 0.63]
    s = _bench().paired_summary(ours, plain)
    diffs = [0.01, 0.03, -0.02]
    half = 4.303 * statistics.stdev(diffs) / 3 ** 0.5          # t(0.975, df=2) = 4.303
    assert s["n"] == 3 and s["diff_mean"] == pytest.approx(sum(diffs) / 3)
    assert s["diff_ci95"] == pytest.approx([sum(diffs) / 3 - half, sum(diffs) / 3 + half])
    assert s["equal_within_noise"] is True
    # a consistent gap is not "equal within noise"
    far = _bench().paired_summary([0.60, 0.61, 0.62, 0.60], [0.70, 0.70, 0.71, 0.69])
    assert far["equal_within_noise"] is False and far["diff_ci95"][1] < 0
    # one seed: no interval claimed
    assert "diff_ci95" not in _bench().paired_summary([0.5], [0.6])


def test_two_seed_run_writes_every_trial(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "cnn2", "--samples", "256", "--epochs", "1", "--batch-size", "64",
         "--threads", "1", "--seeds", "0", "1", "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert [t["seed"] for t in summary["trials"]] == [0, 1]
    for t in summary["trials"]:
        assert t["ours"]["images"] == t["plain"]["images"] > 0     # the same steps on both sides
        for side in ("ours", "plain"):
            assert 0.0 <= t[side]["test_acc"] <= 1.0 and t[side]["images_per_s"] > 0
        # plain fp32 ran with the process defaults, not with settings left behind by our trainer
        assert t["plain"]["cudnn_benchmark"] is False and t["plain"]["matmul_precision"] == "highest"
    assert summary["accuracy"]["n"] == 2 and "diff_ci95" in summary["accuracy"]
    assert "95% interval" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --device cuda: no CUDA GPU is available on this machine (use --device cpu or auto)"]
    assert proc.stdout == ""
