"""core.suite: the suite file, and train / skip / evaluate / resume on a 2-run toy suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import suite as suite_mod
from core.models.registry import get_spec
from core.suite import SuiteError, load_suite, plan_action, run_suite, select_runs
from core.training.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[2]
TOY_DEFAULTS = {"model": "cnn2", "dataset": "shapes", "max_train_samples": 128, "epochs": 1, "batch_size": 64,
                "device": "cpu", "num_threads": 1, "tensorboard": False, "seed": 0}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ARCHSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "archscope-cache"))
    monkeypatch.setenv("ARCHSCOPE_OFFLINE", "1")


def write_suite(path: Path, runs: list[dict], defaults: dict | None = None, **extra) -> Path:
    path.write_text(json.dumps({"name": "toy", "description": "two tiny runs", "defaults": defaults or TOY_DEFAULTS,
                                "runs": runs, **extra}))
    return path


def toy_suite(tmp_path: Path, **over) -> Path:
    runs = [{"id": "toy-rgb", "group": "a", "note": "cnn2 on RGB", "config": {}},
            {"id": "toy-rg", "group": "b", "note": "cnn2 on RG zero-fill",
             "config": {"channels": "RG", "channel_strategy": "zero-fill"}}]
    return write_suite(tmp_path / "toy.json", runs, {**TOY_DEFAULTS, **over})


# ---------------------------------------------------------------------------------------------- the seeds suite
def test_seeds_suite_parses_and_every_config_validates():
    s = load_suite("seeds", validate=True)          # TrainConfig.from_dict + validate() for every run
    ids = [r.run_id for r in s.runs]
    assert len(ids) == len(set(ids))
    groups = {r.group for r in s.runs}
    assert {"channel-robustness", "dynamic-conv", "small-vs-resnet34", "plain-vs-deformable", "separable",
            "resnet-families", "transformation-detection", "metric-learning", "linear-probe", "ciresan"} <= groups
    models = {r.config.model for r in s.runs}
    assert {"cnn3", "pca_cnn", "dyconv_resnet18", "resnet18", "attn_deform_cnn4", "spatial_attn_cnn4",
            "parallel_cnn", "resnet34", "cnn2", "deform_cnn2", "alexnet_seed", "ciresan", "ciresan_residual",
            "dwsep_cnn", "cifar_resnet"} <= models
    for r in s.runs:
        assert r.note, f"{r.run_id} has no note"
        assert r.speed.get("train") and r.speed.get("eval"), f"{r.run_id}: no measured speed for the estimate"
        get_spec(r.config.model)
        if r.seed is not None:
            assert r.run_id == f"{r.base_id}-s{r.seed}" and r.config.seed == r.seed
    # the experiments the issues name
    chan = {r.config.channels for r in s.runs if r.group == "channel-robustness" and r.config.model == "cnn3"
            and r.config.channel_strategy == "zero-fill"}
    assert chan == {"RGB", "RG", "RB", "GB", "R", "G", "B"}
    fills = {r.config.channel_strategy for r in s.runs if r.config.channels == "R"}
    assert fills == {"zero-fill", "sigmoid-fill", "mean-fill"}
    assert {r.config.loss for r in s.runs} == {"ce", "ce+triplet", "triplet"}
    assert any(r.config.dataset == "transform-pairs" for r in s.runs)
    assert any(r.config.dataset == "fashion-mnist" and r.config.augment == "elastic" for r in s.runs)
    assert any(r.config.augment == "crop-flip" for r in s.runs)
    probe = [r for r in s.runs if r.config.train_only == "head"]
    assert {r.depends_on.rsplit("-s", 1)[0] for r in probe} == {"probe-cnn3-pretrain", "metric-cnn3-embed"}
    assert {r.config.model_options["fc_layers"] for r in s.runs if r.config.model == "ciresan_residual"} == {2, 3, 4}


def test_epochs_scale_and_device_override():
    base = load_suite("seeds", strict=False)
    scaled = load_suite("seeds", epochs_scale=2.5, device="cuda", strict=False)
    for a, b in zip(base.runs, scaled.runs):
        assert b.config.epochs == max(1, round(a.config.epochs * 2.5)) and b.config.device == "cuda"
    tiny = load_suite("seeds", epochs_scale=0.01, strict=False)
    assert all(r.config.epochs == 1 for r in tiny.runs)
    with pytest.raises(SuiteError, match="epochs-scale"):
        load_suite("seeds", epochs_scale=0)


def test_select_runs_by_id_or_group():
    s = load_suite("seeds", strict=False)
    assert {r.run_id for r in select_runs(s.runs, "chan-cnn3-zf-*")} == {
        f"chan-cnn3-zf-{c}" for c in ("rg", "rb", "gb", "g", "b")} | {f"chan-cnn3-zf-r-s{i}" for i in range(3)}
    assert all(r.group == "resnet-families" for r in select_runs(s.runs, "resnet-families"))
    assert select_runs(s.runs, "nothing-like-this") == []


def test_seeds_expand_and_init_from_names_an_earlier_run(tmp_path):
    runs = [{"id": "pre", "seeds": [0, 2], "config": {}},
            {"id": "probe", "seeds": [0, 2], "config": {"init_from": "@pre", "train_only": "head"}}]
    s = load_suite(write_suite(tmp_path / "dep.json", runs))
    assert [(r.run_id, r.seed, r.config.seed, r.depends_on) for r in s.runs] == [
        ("pre-s0", 0, 0, None), ("pre-s2", 2, 2, None), ("probe-s0", 0, 0, "pre-s0"), ("probe-s2", 2, 2, "pre-s2")]
    assert suite_mod.suite_groups(tmp_path / "dep.json") == {"other": ["pre-s0", "pre-s2", "probe-s0", "probe-s2"]}
    later = [{"id": "probe", "config": {"init_from": "@pre"}}, {"id": "pre", "config": {}}]
    with pytest.raises(SuiteError, match="'@pre' must be listed before it"):
        load_suite(write_suite(tmp_path / "order.json", later))
    with pytest.raises(SuiteError, match="'@nope' names no run"):
        load_suite(write_suite(tmp_path / "none.json", [{"id": "x", "config": {"init_from": "@nope"}}]))
    with pytest.raises(SuiteError, match="'seeds' must be a list of distinct integers"):
        load_suite(write_suite(tmp_path / "seeds.json", [{"id": "x", "seeds": [1, 1], "config": {}}]))


def test_dependent_run_starts_from_its_dependency_and_waits_for_it(tmp_path):
    runs = [{"id": "pre", "config": {}},
            {"id": "probe", "config": {"init_from": "@pre", "train_only": "head"}}]
    s = load_suite(write_suite(tmp_path / "dep.json", runs))
    root = tmp_path / "runs"
    rows = run_suite(s, root, only="probe", in_process=True, echo=lambda *a, **k: None)
    assert rows[0]["state"] == "blocked" and "'pre', which is not done" in rows[0]["message"]
    assert not (root / "probe").exists()
    rows = run_suite(s, root, in_process=True, echo=lambda *a, **k: None)
    assert [r["state"] for r in rows] == ["done", "done"]
    cfg = json.loads((root / "probe" / "config.json").read_text())
    assert cfg["init_from"] == str((root / "pre").resolve()) and cfg["train_only"] == "head"


@pytest.mark.slow
def test_two_jobs_train_side_by_side_with_one_thread_each(tmp_path):
    root = tmp_path / "runs"
    s = load_suite(toy_suite(tmp_path, num_threads=None))
    lines: list[str] = []
    rows = run_suite(s, root, jobs=2, echo=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert [(r["run_id"], r["state"]) for r in rows] == [("toy-rgb", "done"), ("toy-rg", "done")]
    # both started before either finished
    starts = [i for i, line in enumerate(lines) if line.startswith("[")]
    ends = [i for i, line in enumerate(lines) if "->" in line]
    assert max(starts) < min(ends), lines
    threads = {json.loads((root / r / "config.json").read_text())["run"]["cpu_threads"] for r in ("toy-rgb", "toy-rg")}
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}
    with pytest.raises(suite_mod.InvalidInputError, match="--in-process"):
        run_suite(s, root, jobs=2, in_process=True)


def test_bad_suite_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"runs": [\n  {"id": "a",}\n]}')
    with pytest.raises(SuiteError, match=r"bad.json: not valid JSON .* line 2"):
        load_suite(bad)
    with pytest.raises(SuiteError, match="not found"):
        load_suite("no-such-suite")
    p = write_suite(tmp_path / "dup.json", [{"id": "x", "config": {}}, {"id": "x", "config": {}}])
    with pytest.raises(SuiteError, match="'x': id used twice"):
        load_suite(p)
    p = write_suite(tmp_path / "key.json", [{"id": "x", "config": {"epochz": 3}}])
    with pytest.raises(SuiteError, match=r"run 'x'.*unknown key\(s\) 'epochz'"):
        load_suite(p)
    p = write_suite(tmp_path / "id.json", [{"id": "../escape", "config": {}}])
    with pytest.raises(SuiteError, match="folder name"):
        load_suite(p)
    p = write_suite(tmp_path / "model.json", [{"id": "ok", "config": {}}, {"id": "m", "config": {"model": "nope"}}])
    with pytest.raises(SuiteError, match=r"(?s)run .m.*unknown model .nope."):
        load_suite(p, validate=True)
    lenient = load_suite(p, validate=True, strict=False)
    assert [r.problem == "" for r in lenient.runs] == [True, False]


def test_cli_dry_run_and_bad_only(tmp_path, capsys):
    p = toy_suite(tmp_path)
    assert suite_mod.main([str(p), "--dry-run", "--runs-root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "toy-rgb" in out and "toy-rg" in out and "train (new)" in out
    assert not (tmp_path / "runs" / "toy-rgb").exists()
    assert suite_mod.main([str(p), "--only", "zzz*", "--runs-root", str(tmp_path / "runs")]) == 2
    assert "matches no run" in capsys.readouterr().err
    assert suite_mod.main([str(tmp_path / "missing.json")]) == 2


# ---------------------------------------------------------------------------------------------- skip / resume
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_train_then_skip_then_resume_a_killed_run(tmp_path):
    root = tmp_path / "runs"
    s = load_suite(toy_suite(tmp_path))
    rows = run_suite(s, root, in_process=True, echo=lambda *a, **k: None)
    assert [(r["action"], r["state"]) for r in rows] == [("train", "done"), ("train", "done")]
    for r in rows:
        ev = RunFolder(root / r["run_id"]).read_eval()
        assert ev is not None and r["test_acc"] == ev["test_acc"]
    ev_rg = RunFolder(root / "toy-rg").read_eval()
    assert ev_rg["channel_robustness"]["trained"] == "RG"
    assert all(v is not None for v in ev_rg["channel_robustness"]["tested"].values())   # zero-fill: all 7
    summary = json.loads((root / "suite-toy.json").read_text())
    assert [r["run_id"] for r in summary["runs"]] == ["toy-rgb", "toy-rg"]

    # done + eval.json: skipped, nothing rewritten
    weights = root / "toy-rgb" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    rows = run_suite(s, root, in_process=True, echo=lambda *a, **k: None)
    assert [r["action"] for r in rows] == ["skip", "skip"]
    assert weights.stat().st_mtime_ns == mtime

    # done without eval.json: evaluated only
    (root / "toy-rg" / "eval.json").unlink()
    assert plan_action(root / "toy-rg")[0] == "evaluate"
    rows = run_suite(s, root, only="toy-rg", in_process=True, echo=lambda *a, **k: None)
    assert rows[0]["action"] == "evaluate" and rows[0]["state"] == "done"
    assert (root / "toy-rg" / "eval.json").exists()

    # what a kill -9 after epoch 1 of 2 leaves: status 'running' with a dead pid, resume state of epoch 1
    run = RunFolder(root / "toy-rgb")
    first_row = run.read_metrics()[0]
    run.write_status("running", pid=_dead_pid(), message="epoch 2", epoch=1, epochs=2)
    (root / "toy-rgb" / "eval.json").unlink()
    s2 = load_suite(toy_suite(tmp_path, epochs=2))
    action, why = plan_action(root / "toy-rgb")
    assert action == "resume" and "1 epoch(s) completed" in why
    rows = run_suite(s2, root, only="toy-rgb", in_process=True, echo=lambda *a, **k: None)
    assert rows[0]["action"] == "resume" and rows[0]["state"] == "done"
    metrics = run.read_metrics()
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert metrics[0] == first_row                   # epoch 1 kept, not retrained
    assert run.read_eval() is not None


def test_folder_states(tmp_path):
    assert plan_action(tmp_path / "none") == ("train", "new")
    shipped = tmp_path / "results-only"           # what core.ship --without-weights leaves
    RunFolder(shipped).write_status("done", weights_shipped=False)
    (shipped / "eval.json").write_text('{"test_acc": 0.5}')
    (shipped / "config.json").write_text("{}")
    assert plan_action(shipped)[0] == "train"     # the regenerate command in its status trains it
    d = tmp_path / "early"
    RunFolder(d).write_status("failed", message="dataset missing")
    assert plan_action(d)[0] == "train"              # no config.json: it never started training
    live = tmp_path / "live"
    live.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (live / "train.lock").write_text(f"{proc.pid}\n")
        assert plan_action(live)[0] == "busy"
    finally:
        proc.kill()
        proc.wait()


def test_invalid_run_is_reported_and_others_run(tmp_path):
    runs = [{"id": "bad", "config": {"model": "nope"}}, {"id": "good", "config": {}}]
    s = load_suite(write_suite(tmp_path / "mixed.json", runs), validate=True, strict=False)
    rows = run_suite(s, tmp_path / "runs", in_process=True, echo=lambda *a, **k: None)
    assert rows[0]["state"] == "invalid" and "unknown model 'nope'" in rows[0]["message"]
    assert rows[1]["state"] == "done"
    assert not (tmp_path / "runs" / "bad").exists()


@pytest.mark.slow
def test_subprocess_suite_survives_a_real_kill(tmp_path):
    """The real thing: `python -m core.suite` trains in a subprocess; kill -9 the trainer after its first
    epoch; the suite reports it failed and goes on; the next call resumes it after epoch 1."""
    p = toy_suite(tmp_path, epochs=3, max_train_samples=512)
    root = tmp_path / "runs"
    env = dict(os.environ)                     # core is installed: no PYTHONPATH needed
    cmd = [sys.executable, "-m", "core.suite", str(p), "--runs-root", str(root), "--only", "toy-rgb"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = RunFolder(root / "toy-rgb")
    deadline = time.time() + 120
    while time.time() < deadline and not (run.metrics_path.exists() and len(run.read_metrics()) >= 1
                                          and run.resume_state_path.exists()):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    pid = int(json.loads(run.status_path.read_text())["pid"])
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out                  # the run did not finish
    assert plan_action(root / "toy-rgb")[0] == "resume"
    done_before = len(run.read_metrics())
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resume" in proc.stdout
    metrics = run.read_metrics()
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and done_before >= 1
    assert run.read_status()["state"] == "done" and run.read_eval() is not None


def test_results_only_run_is_trained_again_for_its_weights(tmp_path):
    """The regenerate command core.ship writes into a results-only run's status works: the folder is
    trained again (the old results kept aside until the new run is done)."""
    root = tmp_path / "runs"
    s = load_suite(toy_suite(tmp_path))
    run_suite(s, root, only="toy-rgb", in_process=True, echo=lambda *a, **k: None)
    run = RunFolder(root / "toy-rgb")
    for f in ("model.safetensors", "last.safetensors", "last_state.pt"):
        (run.path / f).unlink(missing_ok=True)
    run.write_status("done", weights_shipped=False, message="Results only")
    rows = run_suite(s, root, only="toy-rgb", in_process=True, echo=lambda *a, **k: None)
    assert (rows[0]["action"], rows[0]["state"]) == ("train", "done")
    assert run.best_weights_path.exists() and run.read_eval() is not None
    assert not (root / ".toy-rgb.previous").exists()
