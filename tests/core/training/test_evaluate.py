"""evaluate_run's channel-robustness row for each kind of run (hand-made runs, untrained weights)."""

import pytest
import torch

from core.analysis.metrics import CHANNEL_COMBOS
from core.evaluate import evaluate_run
from core.training.checkpoint import build_model, save_weights
from core.training.config import TrainConfig
from core.training.run_folder import RunFolder


def make_run(path, *, dataset="shapes", channels="RGB", strategy="drop", in_channels=3, source_channels=3,
             size=32, classes=12):
    cfg = TrainConfig(model="cnn2", dataset=dataset, channels=channels, channel_strategy=strategy,
                      image_size=size, max_train_samples=64)
    run = {"num_classes": classes, "classes": [f"k{i}" for i in range(classes)], "in_channels": in_channels,
           "source_channels": source_channels, "image_size": size, "normalize_mean": None,
           "normalize_std": None}
    RunFolder(path).write_config({**cfg.to_dict(), "run": run})
    torch.manual_seed(0)
    save_weights(RunFolder(path).best_weights_path, build_model(cfg, run))
    return path


@pytest.mark.slow
def test_fill_strategy_tests_all_seven(tmp_path):
    ev = evaluate_run(make_run(tmp_path / "r", channels="random", strategy="zero-fill"), device="cpu")
    cr = ev["channel_robustness"]
    assert cr["trained"] == "random" and ev["test_channels"] == "RGB"
    assert list(cr["tested"]) == list(CHANNEL_COMBOS) and all(v is not None for v in cr["tested"].values())
    assert RunFolder(tmp_path / "r").read_eval()["test_acc"] == ev["test_acc"]


@pytest.mark.slow
def test_drop_two_channel_model_tests_only_two_channel_combos(tmp_path):
    ev = evaluate_run(make_run(tmp_path / "r", channels="GB", in_channels=2), device="cpu")
    t = ev["channel_robustness"]["tested"]
    assert {c for c, v in t.items() if v is not None} == {"RG", "RB", "GB"}
    assert "2 input channel" in ev["channel_robustness"]["untested"]["R"]
    assert t["GB"] == ev["test_acc"]


@pytest.mark.slow
def test_greyscale_row_is_just_L(tmp_path):
    ev = evaluate_run(make_run(tmp_path / "r", dataset="fashion-mnist", channels="L", in_channels=1,
                               source_channels=1, size=28, classes=10), device="cpu")
    assert ev["channel_robustness"]["tested"] == {"L": ev["test_acc"]}
    assert ev["n_test"] == sum(sum(r) for r in ev["confusion_matrix"]) == 10000


def test_out_of_memory_names_the_batch_size(tmp_path, monkeypatch):
    from core.training import trainer

    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer.LogitsAndEmbedding, "forward", boom)   # the forward used with ce+triplet
    cfg = TrainConfig(model="cnn2", max_train_samples=64, batch_size=32, epochs=1, loss="ce+triplet",
                      device="cpu", eval_at_end=False)
    status = trainer.train(cfg, tmp_path / "oom", quiet=True)
    assert status["state"] == "failed"
    msg = RunFolder(tmp_path / "oom").read_status()["message"]
    assert "out of memory with batch size 32" in msg and "--batch-size 16" in msg
