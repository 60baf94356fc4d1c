"""Shipping finished runs: fp16 best weights only, eval.json reproduced from what is shipped."""

import json

import pytest
import torch

from core.training.evaluation import evaluate_run
from core.ship import main as ship_main
from core.ship import ship_run
from core.training.checkpoint import load_weights
from core.training.config import TrainConfig
from core.training.run_folder import RunFolder
from core.training.trainer import train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    cfg = TrainConfig(model="cnn2", dataset="shapes", image_size=32, max_train_samples=256, epochs=1,
                      batch_size=64, num_threads=1, tensorboard=False)
    status = train(cfg, root / "tiny", quiet=True)
    assert status["state"] == "done", status
    return root / "tiny"


def test_ship_writes_fp16_best_only_and_a_reproducible_eval(finished_run, tmp_path):
    summary = ship_run(finished_run, tmp_path / "tiny")
    shipped = RunFolder(tmp_path / "tiny")
    names = sorted(p.name for p in shipped.path.iterdir())
    assert "last_state.pt" not in names and "last.safetensors" not in names
    assert {"config.json", "status.json", "metrics.jsonl", "eval.json", "model.safetensors"} <= set(names)
    state = load_weights(shipped.best_weights_path)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    shipped_eval = shipped.read_eval()
    again = evaluate_run(shipped.path, device="cpu")
    assert again["test_acc"] == shipped_eval["test_acc"]
    assert again["confusion_matrix"] == shipped_eval["confusion_matrix"]
    original = RunFolder(finished_run).read_eval()["test_acc"]
    assert shipped_eval["fp32_test_acc"] == original
    assert abs(shipped_eval["test_acc"] - original) <= 0.005
    assert summary["weights"] == "fp16"


def test_results_only_run_says_how_to_regenerate(finished_run, tmp_path, capsys):
    rc = ship_main([str(finished_run.parent), str(tmp_path), "--without-weights", "tin*"])
    assert rc == 0
    shipped = RunFolder(tmp_path / "tiny")
    assert not shipped.best_weights_path.exists()
    status = shipped.read_status()
    assert status["weights_shipped"] is False
    assert "python -m core.suite seeds --only tiny" in status["message"]
    assert json.loads(shipped.eval_path.read_text())["test_acc"] == RunFolder(finished_run).read_eval()["test_acc"]


def test_unfinished_runs_are_not_shipped(tmp_path, capsys):
    run = RunFolder(tmp_path / "src" / "half")
    run.write_config({"model": "cnn2"})
    run.write_status("failed", message="killed")
    assert ship_main([str(tmp_path / "src"), str(tmp_path / "dest")]) == 1
    assert "only finished, evaluated runs are shipped" in capsys.readouterr().err
