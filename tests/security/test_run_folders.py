"""Broken and live run folders: listed with what is wrong, never an exception, never 'running' forever.

Already covered elsewhere: a dead pid reads as failed (tests/core/training/test_run_folder.py::
test_dead_pid_reads_as_failed), a config.json that is not JSON and a missing status.json reported by
RunFolder.problems (same file, test_broken_folders_are_listed_with_problems), read_jsonl skipping a
half-written line (tests/core/test_io.py). Here they are all in one folder next to a good run and go
through the dashboard's summaries + leaderboard, plus a writer racing a reader.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from core.analysis import compare
from core.io import append_jsonl, atomic_write_json
from core.training.checkpoint import load_weights, save_weights
from core.training.run_folder import RunFolder, list_runs
from tests.core.test_predict import make_run

ROW = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4, "lr": 0.001,
       "seconds": 2.0, "images_per_s": 100.0}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_broken_root(root: Path) -> Path:
    """good, no_status, half_line, garbage_status, garbage_config, garbage_eval, garbage_metrics, dead_pid."""
    good = RunFolder(make_run(root / "good"))
    good.write_status("done", pid=None, epoch=2, epochs=2)
    append_jsonl(good.metrics_path, ROW)
    append_jsonl(good.metrics_path, {**ROW, "epoch": 2, "val_acc": 0.6})

    make_run(root / "no_status")                                   # config + weights, no status.json

    half = RunFolder(make_run(root / "half_line"))
    half.write_status("done", pid=None)
    append_jsonl(half.metrics_path, ROW)
    with open(half.metrics_path, "a") as fh:                     # a writer killed mid-line
        fh.write('{"epoch": 2, "train_loss": 0.9, "val_a')

    gs = RunFolder(make_run(root / "garbage_status"))
    gs.status_path.write_bytes(b"\x00\xffnot json at all{{{")

    gc = RunFolder(root / "garbage_config")
    gc.path.mkdir(parents=True)
    gc.config_path.write_text("[1, 2, 3]")                        # valid JSON, not an object
    gc.write_status("done", pid=None)

    ge = RunFolder(make_run(root / "garbage_eval"))
    ge.write_status("done", pid=None)
    ge.eval_path.write_text('{"test_acc": 0.9,')

    gm = RunFolder(make_run(root / "garbage_metrics"))
    gm.write_status("done", pid=None)
    gm.metrics_path.write_bytes(b'not json\n["a list"]\n\xff\xfe\x00binary\n' + json.dumps(ROW).encode() + b"\n\n")

    dead = RunFolder(make_run(root / "dead_pid"))
    dead.write_status("running", pid=_dead_pid(), epoch=1, epochs=5)
    append_jsonl(dead.metrics_path, ROW)
    return root


def test_every_folder_is_listed_with_its_problem(tmp_path):
    root = make_broken_root(tmp_path / "runs")
    from dashboard.components.runs import summaries

    rows, _ = summaries(root)
    by_id = {r["run_id"]: r for r in rows}
    assert set(by_id) == {"good", "no_status", "half_line", "garbage_status", "garbage_config", "garbage_eval",
                          "garbage_metrics", "dead_pid"}
    board = compare.leaderboard(rows)
    assert len(board) == len(by_id)
    assert by_id["good"]["problems"] == "" and by_id["good"]["best_val_acc"] == 0.6
    assert "status.json is missing" in by_id["no_status"]["problems"]
    assert by_id["no_status"]["state"] == "unknown"
    assert by_id["half_line"]["epochs_done"] == 1 and by_id["half_line"]["problems"] == ""
    assert "status.json is not UTF-8" in by_id["garbage_status"]["problems"]
    assert "config.json does not hold a JSON object" in by_id["garbage_config"]["problems"]
    assert "eval.json is not valid JSON" in by_id["garbage_eval"]["problems"]
    assert by_id["garbage_eval"]["test_acc"] is None
    assert by_id["garbage_metrics"]["epochs_done"] == 1           # the one good row of four lines
    assert by_id["dead_pid"]["state"] == "failed"
    status = RunFolder(root / "dead_pid").read_status()
    assert "is gone" in status["message"] and "--resume" in status["message"]


def test_run_written_while_read_never_raises(tmp_path):
    """A writer thread does what the trainer does (append metrics and steps, sometimes a half line that
    it completes later, atomically replace status/config/eval/weights) while a reader loop reads the
    folder 200 times the way the dashboard does. No exception; metrics only ever grow, in order."""
    root = tmp_path / "runs"
    run = RunFolder(make_run(root / "live"))
    run.write_status("running", pid=None, epoch=0, epochs=10_000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        rng = random.Random(0)
        weights = {"w": torch.zeros(64, 64)}
        epoch = 0
        try:
            while not stop.is_set():
                epoch += 1
                row = json.dumps({**ROW, "epoch": epoch}, separators=(",", ":")) + "\n"
                cut = rng.randrange(1, len(row))
                with open(run.metrics_path, "a") as fh:          # a line in two writes: readers see half
                    fh.write(row[:cut])
                    fh.flush()
                    time.sleep(0.0005)
                    fh.write(row[cut:])
                append_jsonl(run.steps_path, {"epoch": epoch, "step": 1, "global_step": epoch, "loss": 1.0})
                run.write_status("running", epoch=epoch, message=f"epoch {epoch}")
                atomic_write_json(run.eval_path, {"test_acc": epoch / 1e6, "confusion_matrix": [[epoch]]})
                if epoch % 5 == 0:
                    weights["w"].fill_(float(epoch))
                    save_weights(run.last_weights_path, weights)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    save_weights(run.last_weights_path, {"w": torch.zeros(64, 64)})
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        last_epochs = 0
        for _ in range(200):
            runs = list_runs(root)
            assert [r.run_id for r in runs] == ["live"]
            status = run.read_status()
            assert status["state"] == "running", status
            rows = run.read_metrics()
            epochs = [r["epoch"] for r in rows]
            assert epochs == list(range(1, len(epochs) + 1))       # never a torn or reordered row
            assert len(epochs) >= last_epochs
            last_epochs = len(epochs)
            assert run.problems() == []
            summary = compare.run_summary(run)
            assert summary["problems"] == "" and summary["epochs_done"] >= len(epochs)
            w = load_weights(run.last_weights_path)["w"]
            assert float(w.min()) == float(w.max())                 # one epoch's tensor, not a mix
            run.read_steps()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not errors, errors
    assert last_epochs > 0, "the writer made progress during the reads"
