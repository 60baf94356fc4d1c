"""The trainer on real (tiny) runs: folder contents, eval.json, kill -9 + resume, NaN, lock, cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from core.data.channels import CHANNEL_COMBOS
from core.evaluate import main as evaluate_main
from core.train import main as train_main
from core.training.checkpoint import load_run_model, load_resume_state
from core.training.config import TrainConfig
from core.training.run_folder import RunFolder
from core.training import trainer
from core.training.trainer import train, triplet_loss
from tests.core.training.helpers import METRIC_KEYS, QUICK, jsonl, popen_train, run_cli, wait_for

TINY = dict(model="cnn2", dataset="shapes", image_size=32, max_train_samples=128, batch_size=32,
            device="cpu", num_threads=1, eval_at_end=False, log_every=1)


@pytest.mark.slow
def test_short_training_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    proc = run_cli("core.train", *QUICK, "--epochs", "2", "--checkpoint-every", "1", "--log-every", "2",
                   "--scheduler", "cosine", "--out", str(out), timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "ETA" in proc.stderr and "img/s" in proc.stderr          # the progress bar
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "status.json", "metrics.jsonl", "steps.jsonl", "model.safetensors",
            "last.safetensors", "last_state.pt", "eval.json", "epoch_0001.safetensors",
            "epoch_0002.safetensors"} <= names
    assert "train.lock" not in names
    run = RunFolder(out)
    status = run.read_status()
    assert status["state"] == "done" and "test_acc" in status["message"]
    cfg = run.read_config()
    assert cfg["model"] == "cnn2" and cfg["channels"] == "RGB"
    assert cfg["run"]["device"] == "cpu" and cfg["run"]["versions"]["torch"] == torch.__version__
    assert cfg["run"]["num_classes"] == 12 and len(cfg["run"]["normalize_mean"]) == 3
    metrics = run.read_metrics()
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(set(m) == METRIC_KEYS for m in metrics)
    assert metrics[1]["lr"] < metrics[0]["lr"]                      # cosine schedule stepped
    steps = run.read_steps()
    assert steps and {s["epoch"] for s in steps} == {1, 2}
    assert [s["global_step"] for s in steps] == sorted(s["global_step"] for s in steps)

    ev = run.read_eval()
    cm = torch.tensor(ev["confusion_matrix"])
    assert cm.shape == (12, 12) and int(cm.sum()) == ev["n_test"] > 0
    assert ev["test_acc"] == pytest.approx(float(cm.trace()) / float(cm.sum()))
    assert [c["support"] for c in ev["per_class"]] == cm.sum(1).tolist()
    for i, c in enumerate(ev["per_class"]):
        col = int(cm[:, i].sum())
        assert c["precision"] == pytest.approx(float(cm[i, i]) / col if col else 0.0)
    assert ev["macro"]["recall"] == pytest.approx(sum(c["recall"] for c in ev["per_class"]) / 12)
    cr = ev["channel_robustness"]
    assert cr["trained"] == "RGB" and cr["strategy"] == "drop"
    assert list(cr["tested"]) == list(CHANNEL_COMBOS)
    assert cr["tested"]["RGB"] == ev["test_acc"]
    # cnn2 with 'drop' was built for 3 channels: the 2- and 1-channel combinations cannot be fed to it
    assert all(cr["tested"][c] is None and c in cr["untested"] for c in CHANNEL_COMBOS if c != "RGB")
    assert ev["inference_images_per_s"] > 0 and ev["weights"] == "best"

    # evaluate CLI agrees with the file, and the best weights load
    assert evaluate_main([str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["confusion_matrix"] == ev["confusion_matrix"]
    model, config = load_run_model(out, "best")
    assert config.model == "cnn2" and not model.training


@pytest.mark.slow
def test_resume_after_sigkill_keeps_epochs_unique_and_contiguous(tmp_path):
    out = tmp_path / "run"
    args = [*QUICK, "--epochs", "3", "--log-every", "1", "--quiet", "--no-eval", "--out", str(out)]
    proc = popen_train(*args, log=tmp_path / "log1")
    steps = out / "steps.jsonl"
    try:
        wait_for(lambda: any(r.get("epoch") == 2 for r in jsonl(steps)), 120, proc, "epoch 2 to start")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = RunFolder(out)
    assert run.read_status()["state"] == "failed"                  # dead pid is not 'running'
    assert run.lock_path.exists()                                   # stale lock left by kill -9
    rows_before = jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows_before] in ([1], [1, 2])

    resumed = run_cli("core.train", "--resume", str(out), "--quiet", timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    metrics = run.read_metrics()
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[0] == rows_before[0]                             # the completed epoch was kept as is
    step_rows = run.read_steps()
    keys = [(s["epoch"], s["step"]) for s in step_rows]
    assert len(keys) == len(set(keys))                              # no duplicated steps either
    assert [s["global_step"] for s in step_rows] == list(range(1, len(step_rows) + 1))
    assert load_resume_state(run.resume_state_path)["epoch"] == 3
    assert run.read_status()["state"] == "done" and not run.lock_path.exists()


@pytest.mark.slow
def test_same_seed_same_metrics_and_resume_is_exact(tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY, epochs=2, optimizer="sgd", lr=0.05, scheduler="onecycle")
    assert train(cfg, tmp_path / "a", quiet=True)["state"] == "done"
    assert train(cfg, tmp_path / "b", quiet=True)["state"] == "done"
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]
    a = strip(RunFolder(tmp_path / "a").read_metrics())
    assert a == strip(RunFolder(tmp_path / "b").read_metrics())
    # Interrupted right after epoch 1's commit, then resumed: identical to the uninterrupted run
    # (model, optimizer, scheduler and RNG state restored; BatchLoader reseeded per epoch).
    original = trainer.ckpt.save_resume_state

    def save_then_stop(path, state):
        original(path, state)
        if state["epoch"] == 1:
            raise trainer.RunCancelled("test stop")

    monkeypatch.setattr(trainer.ckpt, "save_resume_state", save_then_stop)
    assert train(cfg, tmp_path / "c", quiet=True)["state"] == "cancelled"
    monkeypatch.undo()
    assert train(cfg, tmp_path / "c", resume=True, quiet=True)["state"] == "done"
    assert strip(RunFolder(tmp_path / "c").read_metrics()) == a
    # Extending a finished run: --epochs 3 on resume continues with epoch 3 only.
    assert train(cfg.replace(epochs=3), tmp_path / "c", resume=True, quiet=True)["state"] == "done"
    assert [m["epoch"] for m in RunFolder(tmp_path / "c").read_metrics()] == [1, 2, 3]


def test_diverging_loss_fails_naming_epoch_and_step(tmp_path):
    cfg = TrainConfig(**TINY, epochs=2, optimizer="sgd", lr=1e12, momentum=0.0)
    status = train(cfg, tmp_path / "nan", quiet=True)
    assert status["state"] == "failed"
    msg = RunFolder(tmp_path / "nan").read_status()["message"]
    assert "epoch 1, step" in msg and "lower learning rate" in msg and "--lr" in msg
    assert not (tmp_path / "nan" / "train.lock").exists()


def test_triplet_loss_values():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: pos 1 (d=1), nearest neg 2 (d=3) -> relu(1-3+m)
    loss = triplet_loss(emb, labels, margin=2.5, mining="batch-hard")
    d = [1 - 3 + 2.5, 1 - (10 ** 0.5) + 2.5, 1 - 3 + 2.5, 1 - (17 ** 0.5) + 2.5]
    assert loss.item() == pytest.approx(sum(max(v, 0) for v in d) / 4, rel=1e-5)
    assert triplet_loss(emb, torch.tensor([0, 1, 2, 3]), 1.0, "batch-hard").item() == 0.0   # no positives
    torch.manual_seed(0)
    r = triplet_loss(emb, labels, 2.5, "random")
    assert r.item() == pytest.approx(loss.item(), rel=1e-5)       # 2 per class: random = the only choice


def test_triplet_training_runs(tmp_path):
    cfg = TrainConfig(**TINY, epochs=1, loss="ce+triplet", triplet_mining="random", label_smoothing=0.1)
    assert train(cfg, tmp_path / "t", quiet=True)["state"] == "done"
    assert RunFolder(tmp_path / "t").read_metrics()[0]["train_loss"] > 0


def test_second_trainer_is_refused_and_stale_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = RunFolder(out)
        run.acquire_lock(pid=holder.pid)
        code = train_main(["--model", "cnn2", "--max-train-samples", "64", "--out", str(out), "--quiet"])
        assert code == 3
        assert f"process {holder.pid} is training into it" in capsys.readouterr().err
        assert not run.metrics_path.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is stale and is taken over
    run.acquire_lock()
    assert run.lock_owner() == os.getpid()
    run.release_lock()
    assert not run.lock_path.exists()


def test_existing_run_needs_resume(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert train_main(["--model", "cnn2", "--out", str(out), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_launch_and_cancel_keeps_last_checkpoint(tmp_path):
    from core.training.launch import launch_training

    cfg = TrainConfig(**{**TINY, "max_train_samples": 256, "log_every": 1}, epochs=50)
    job = launch_training(cfg, tmp_path / "bg")
    run = RunFolder(tmp_path / "bg")
    assert run.read_status()["state"] in ("queued", "running")
    wait_for(lambda: any(r["epoch"] >= 2 for r in run.read_steps()), 120, job.process, "epoch 2")
    assert job.cancel(timeout=60)
    assert job.poll() == 143
    status = run.read_status()
    assert status["state"] == "cancelled" and "--resume" in status["message"]
    assert run.last_weights_path.exists() and not run.lock_path.exists()
    epochs_done = [m["epoch"] for m in run.read_metrics()]
    assert epochs_done and load_resume_state(run.resume_state_path)["epoch"] == epochs_done[-1]
    assert (tmp_path / "bg" / "train.log").exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")   # the swallowed raise, on purpose
def test_sigterm_whose_raise_is_swallowed_still_cancels(tmp_path, monkeypatch):
    """A SIGTERM handled while Python runs a finalizer has its exception swallowed ("Exception
    ignored in ..."); the remembered signal must still stop the run at the next step."""
    import gc
    import time

    class Finalizer:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)     # the handler runs here, inside __del__
            time.sleep(0.05)

    calls = {"n": 0}
    original = trainer.make_optimizer

    def make_optimizer(config, params):
        opt = original(config, params)
        step = opt.step

        def step_then_signal(*a, **k):
            out = step(*a, **k)
            calls["n"] += 1
            if calls["n"] == 2:
                Finalizer()                          # dropped at once: __del__ sends the signal
                gc.collect()
            return out

        opt.step = step_then_signal
        return opt

    monkeypatch.setattr(trainer, "make_optimizer", make_optimizer)
    status = train(TrainConfig(**TINY, epochs=20), tmp_path / "run", quiet=True)
    assert status["state"] == "cancelled", status
    assert RunFolder(tmp_path / "run").read_status()["state"] == "cancelled"
    assert calls["n"] <= 3                           # stopped at the next step, not 20 epochs later


def _triplet_loss_with_host_syncs(embeddings, labels, margin, mining):
    """The implementation before the masked mean (bool(valid.any()) + [valid].mean()): the reference."""
    dist = torch.cdist(embeddings, embeddings)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    if mining == "batch-hard":
        d_pos = dist.masked_fill(~pos_mask, float("-inf")).amax(1)
        d_neg = dist.masked_fill(~neg_mask, float("inf")).amin(1)
    else:
        pos_idx = torch.multinomial((pos_mask & valid[:, None]).float() + (~valid)[:, None].float(), 1).squeeze(1)
        neg_idx = torch.multinomial((neg_mask & valid[:, None]).float() + (~valid)[:, None].float(), 1).squeeze(1)
        rows = torch.arange(len(labels), device=labels.device)
        d_pos, d_neg = dist[rows, pos_idx], dist[rows, neg_idx]
    return torch.nn.functional.relu(d_pos - d_neg + margin)[valid].mean()


@pytest.mark.parametrize("mining", ["batch-hard", "random"])
@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 3, 3, 0], [0, 1, 2, 3, 4, 5, 6, 7], [1] * 8, [0, 0, 0, 1, 1, 5, 5, 5]])
def test_masked_triplet_loss_equals_the_indexed_mean_with_its_gradient(mining, labels):
    labels = torch.tensor(labels)
    g = torch.Generator().manual_seed(3)
    base = torch.randn(8, 5, generator=g)
    results = []
    for fn in (triplet_loss, _triplet_loss_with_host_syncs):
        emb = base.clone().requires_grad_()
        torch.manual_seed(7)                       # the same draws for random mining
        loss = fn(emb, labels, 0.8, mining)
        loss.backward()
        results.append((loss.detach(), emb.grad))
    (ours, ours_grad), (ref, ref_grad) = results
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-6, atol=1e-7)
    assert torch.isfinite(ours_grad).all()


def test_speed_settings_are_restored_after_train(tmp_path, monkeypatch):
    """On CUDA the trainer turns cudnn.benchmark and TF32 matmuls on for the training only. The CUDA
    branch of speed_settings runs here on the CPU (the switches need no GPU): on while training,
    the previous values back afterwards, for a finished and for a failed run."""
    real = trainer.speed_settings
    monkeypatch.setattr(trainer, "speed_settings", lambda device: real(torch.device("cuda", 0)))
    seen = []
    original = trainer.make_optimizer

    def make_optimizer(config, params):
        opt = original(config, params)
        step = opt.step

        def record(*a, **k):
            seen.append((torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()))
            return step(*a, **k)

        opt.step = record
        return opt

    monkeypatch.setattr(trainer, "make_optimizer", make_optimizer)
    before = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    assert train(TrainConfig(**TINY, epochs=1), tmp_path / "ok", quiet=True)["state"] == "done"
    assert seen and set(seen) == {(True, "high")}
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
    cfg = TrainConfig(**TINY, epochs=1, optimizer="sgd", lr=1e12, momentum=0.0)
    assert train(cfg, tmp_path / "nan", quiet=True)["state"] == "failed"
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before


def test_broken_tensorboard_warns_once_and_the_run_goes_on(tmp_path, monkeypatch):
    """A tensorboard/protobuf mismatch raises TypeError at import, not ImportError."""
    import types

    class BrokenTensorBoard(types.ModuleType):
        def __getattr__(self, name):
            raise TypeError("Descriptors cannot be created directly.")

    # Load the model families first: torchvision's import walks sys.modules and would trip over the
    # stand-in (in a full run they are loaded already; alone, this test must not depend on that).
    from core.models.registry import list_models
    list_models()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", BrokenTensorBoard("torch.utils.tensorboard"))
    with pytest.warns(RuntimeWarning, match="TensorBoard logging is off.*TypeError") as record:
        status = train(TrainConfig(**{**TINY, "tensorboard": True}, epochs=2), tmp_path / "tb", quiet=True)
    assert status["state"] == "done", status
    assert len([w for w in record if "TensorBoard" in str(w.message)]) == 1
    assert [m["epoch"] for m in RunFolder(tmp_path / "tb").read_metrics()] == [1, 2]


def test_tensorboard_failing_while_writing_is_switched_off(tmp_path):
    class FailingWriter:
        def add_scalar(self, *a):
            raise OSError(28, "No space left on device")

    log = trainer.TensorBoardLog(tmp_path, enabled=False)
    log.writer = FailingWriter()
    with pytest.warns(RuntimeWarning, match="No space left"):
        log.scalar("x", 1.0, 1)
    assert log.writer is None
    log.scalar("x", 2.0, 2)                         # no second warning, no error
    log.flush()
    log.close()


def test_compile_time_is_reported_apart_from_images_per_s(tmp_path, monkeypatch):
    """A stand-in for torch.compile whose first call takes 1.5 s (as compiling does): the epoch-1 row
    carries compile_seconds and its images_per_s leaves that step out; epoch 2 has no compile_seconds."""
    import time as _time

    compiled = []

    class SlowFirstCall(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.calls = net, 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 1:
                _time.sleep(1.5)
            return self.net(x)

    def fake_compile(net, **kwargs):
        compiled.append(net)
        return SlowFirstCall(net)

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = TrainConfig(**{**TINY, "max_train_samples": 256}, epochs=2, compile=True)
    assert train(cfg, tmp_path / "c", quiet=True)["state"] == "done"
    assert compiled
    first, second = RunFolder(tmp_path / "c").read_metrics()
    assert first["compile_seconds"] >= 1.5 and "compile_seconds" not in second
    n_train = RunFolder(tmp_path / "c").read_config()["run"]["n_train"]
    # With the 1.5 s counted, images_per_s could not exceed n_train / 1.5; left out, it is far above.
    assert first["images_per_s"] > n_train / 1.5
    assert first["seconds"] >= first["compile_seconds"]


@pytest.mark.parametrize("rank", [0, 1])
def test_per_rank_batches_follow_the_loader_shard_rule(rank):
    """129 images, 2 ranks, batch 65: 64 images per rank (rounded down by the loader), so one
    partial batch each; rounding up (65) would ask for drop_last and give 0 steps."""
    from core.data import TensorSplit
    from core.training.distributed import DistInfo

    split = TensorSplit(torch.zeros(129, 3, 8, 8, dtype=torch.uint8), torch.zeros(129, dtype=torch.int64))
    cfg = TrainConfig(**{**TINY, "batch_size": 65, "channels": "RGB"})
    loader = trainer.build_train_loader(cfg, split, None, torch.device("cpu"), DistInfo(rank, 2, rank, True))
    assert len(loader) == 1
    (x, y), = list(loader)
    assert x.shape[0] == 64
