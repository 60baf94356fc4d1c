"""Hostile and broken checkpoints: refused with a message naming the file; nothing runs; the other runs
stay listed and usable.

Already covered elsewhere (not repeated here): load_weights on a pickle / torch.save file and on a
truncated file (tests/core/training/test_checkpoint.py), one clear CLI line for a pickle weights
file (tests/core/test_predict.py::test_cli_broken_run_is_one_clear_line). Here every bad run sits in
one runs folder next to a good one and goes through the whole-run entry points.
"""

from __future__ import annotations

import pytest
from PIL import Image

from core.analysis import compare
from core.predict import main as predict_main, predict_images
from core.training.checkpoint import CheckpointError, load_run_model
from core.training.run_folder import list_runs
from tests.security.conftest import BAD_RUNS, SideEffect


@pytest.mark.parametrize("run_id", sorted(BAD_RUNS))
def test_bad_checkpoint_refused_naming_the_file(hostile_root, run_id):
    root, marker = hostile_root
    with pytest.raises(CheckpointError) as info:
        load_run_model(root / run_id)
    msg = str(info.value)
    assert str(root / run_id / BAD_RUNS[run_id]) in msg, msg
    assert "Traceback" not in msg and len(msg) < 1200
    assert not marker.exists(), "unpickling ran the payload"


def test_reason_is_specific(hostile_root):
    root, _ = hostile_root
    reasons = {}
    for run_id in BAD_RUNS:
        try:
            load_run_model(root / run_id)
        except CheckpointError as exc:
            reasons[run_id] = str(exc)
    assert "never unpickles" in reasons["evil_pickle"] and "never unpickles" in reasons["evil_torch_save"]
    assert "truncated or corrupt" in reasons["truncated"]
    assert "do not match" in reasons["other_arch"] and "unexpected" in reasons["other_arch"]
    assert "fc.weight: file (7, 64) vs model (5, 64)" in reasons["other_classes"]
    assert "unknown model 'no_such_net'" in reasons["unknown_model"] and "cnn2" in reasons["unknown_model"]


def test_other_runs_still_listed_and_usable(hostile_root, tmp_path):
    root, marker = hostile_root
    runs = list_runs(root)
    assert sorted(r.run_id for r in runs) == sorted([*BAD_RUNS, "good"])
    # the dashboard's leaderboard (its cached summaries, then core's leaderboard table)
    from dashboard.components.runs import summaries

    rows, configs = summaries(root)
    board = compare.leaderboard(rows)
    assert sorted(board["run_id"]) == sorted([*BAD_RUNS, "good"])
    assert set(board["state"]) == {"done"}
    assert board.set_index("run_id").loc["unknown_model", "model"] == "no_such_net"
    # the good run loads and predicts after all the bad ones were tried
    for run_id in BAD_RUNS:
        with pytest.raises(CheckpointError):
            load_run_model(root / run_id)
    model, cfg = load_run_model(root / "good")
    assert cfg.model == "cnn2" and not model.training
    out = predict_images(root / "good", [Image.new("RGB", (40, 40), (200, 10, 10))], top_k=2)
    assert out[0]["ok"] and len(out[0]["top"]) == 2
    assert not marker.exists()


@pytest.mark.parametrize("run_id", sorted(BAD_RUNS))
def test_predict_cli_one_line_per_bad_run(hostile_root, run_id, tmp_path, capsys):
    root, marker = hostile_root
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    assert predict_main([str(root / run_id), str(img)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and BAD_RUNS[run_id] in err and "Traceback" not in err
    assert not marker.exists()


def test_evil_resume_state_stops_resume_without_running_it(tmp_path):
    """``--resume`` on a folder from a stranger: last_state.pt is a torch.save of an object whose
    unpickling has a side effect. The resume fails with the file named; the payload never runs."""
    import torch

    from core.train import main as train_main
    from core.training.run_folder import RunFolder

    marker = tmp_path / "PWNED"
    run = RunFolder(tmp_path / "stranger")
    run.write_config({"model": "cnn2", "dataset": "shapes", "image_size": 32, "max_train_samples": 64,
                      "epochs": 2, "batch_size": 32, "device": "cpu", "num_threads": 1, "eval_at_end": False,
                      "tensorboard": False})
    run.write_status("failed", message="killed", pid=None)
    torch.save({"epoch": 1, "model": {}, "x": SideEffect(str(marker))}, run.resume_state_path)
    code = train_main(["--resume", str(run.path), "--quiet"])
    assert code == 1
    status = run.read_status()
    assert status["state"] == "failed" and "last_state.pt" in status["message"]
    assert "NOT unpickled" in status["message"]
    assert not marker.exists()
    assert not run.lock_path.exists()
