"""evaluate_run's channel-robustness row for each kind of run (hand-made runs, untrained weights);
run_batches' fp32 and warm-up timing; the python -m core.evaluate command line."""

import time

import pytest
import torch
from torch import nn

from core.data import CHANNEL_COMBOS
from core.evaluate import main as evaluate_main
from core.training.evaluation import evaluate_run, run_batches
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


def test_evaluation_is_fp32_and_recorded_so(tmp_path):
    ev = evaluate_run(make_run(tmp_path / "r", channels="RGB"), device="cpu", batch_size=64)
    assert ev["dtype"] == "float32" and RunFolder(tmp_path / "r").read_eval()["dtype"] == "float32"
    assert ev["n_test"] > 64 and ev["inference_images_per_s"] > 0


class _SlowFirstBatch(nn.Module):
    """A classifier whose first forward takes 0.6 s (as CUDA/cuDNN start-up does) and records dtypes."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.calls, self.dtypes = 0, set()

    def forward(self, x):
        self.calls += 1
        self.dtypes.add(x.dtype)
        if self.calls == 1:
            time.sleep(0.6)
        return self.linear(x.mean(dim=(2, 3)))


def _batches(n_batches, size=8):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 3, 4, 4, generator=g), torch.randint(0, 4, (size,), generator=g))
            for _ in range(n_batches)]


def test_inference_timing_leaves_the_warm_up_batch_out():
    model = _SlowFirstBatch()
    res = run_batches(model, _batches(5), collect=True)
    assert res["n"] == 40 and res["timed_images"] == 32          # batches 2..5 timed
    assert res["seconds"] < 0.6                                   # the slow first call is not in it
    assert model.dtypes == {torch.float32} and len(res["preds"]) == 40
    expected = sum(int((model(x).argmax(1) == y).sum()) for x, y in _batches(5)) / 40
    assert res["accuracy"] == pytest.approx(expected)


def test_single_batch_is_timed_on_a_second_warm_pass():
    model = _SlowFirstBatch()
    res = run_batches(model, _batches(1))
    assert res["n"] == res["timed_images"] == 8 and res["seconds"] < 0.6 and model.calls == 2


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert evaluate_main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'missing'}: no such run folder"]
    assert evaluate_main([str(tmp_path), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cli_cuda_without_gpu_is_refused_first(tmp_path, capsys):
    assert evaluate_main([str(tmp_path / "missing"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0] and "no CUDA GPU" in err[0]


def test_cli_unusable_run_folder_is_exit_1(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    assert evaluate_main([str(tmp_path / "r"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "config.json" in err[0]


def test_untimed_run_batches_makes_no_second_pass():
    """The trainer's validation does not need a throughput: one pass, even over a single batch."""
    model = _SlowFirstBatch()
    res = run_batches(model, _batches(1), timed=False)
    assert model.calls == 1 and res["n"] == 8
