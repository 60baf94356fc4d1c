"""Lessons: the verdict rule against hand computations, the confounding refusal, bad input, and the
shipped README's lessons table against its generator."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from core import lessons as lessons_mod
from core import suite as suite_mod
from core.analysis.stats import difference_ci, mean_ci, t975
from core.lessons import evaluate_lesson, evaluate_suite_lessons, readme_block, verdict
from core.suite import SuiteError, load_suite

REPO = Path(__file__).resolve().parents[2]


def write_suite(path: Path, runs: list[dict], lessons: list[dict], defaults: dict | None = None) -> Path:
    path.write_text(json.dumps({"name": path.stem, "defaults": defaults or {"model": "cnn2", "epochs": 1},
                                "runs": runs, "lessons": lessons}))
    return path


def lesson(arms: list[dict], expected: str, allowed: list[str], **extra) -> dict:
    return {"id": "l1", "seed_report": "001", "question": "q?", "finding": "f 0.29 vs 0.02", "arms": arms,
            "expected": expected, "allowed_differences": allowed, **extra}


def fake_run(root: Path, run_id: str, acc: float | None, *, state: str = "done", tested: dict | None = None,
             val: list[float] | None = None) -> None:
    d = root / run_id
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"state": state}))
    if acc is not None:
        ev = {"test_acc": acc}
        if tested:
            ev["channel_robustness"] = {"trained": "RGB", "tested": tested}
        (d / "eval.json").write_text(json.dumps(ev))
    if val:
        (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "val_acc": v}) + "\n"
                                                 for i, v in enumerate(val)))


def two_arm_suite(tmp_path: Path, expected: str = "a > b", **extra) -> Path:
    runs = [{"id": "ra", "seeds": [0, 1, 2], "config": {"model": "cnn3"}},
            {"id": "rb", "seeds": [0, 1, 2], "config": {"model": "cnn2"}}]
    return write_suite(tmp_path / "s.json", runs,
                       [lesson([{"name": "a", "run": "ra"}, {"name": "b", "run": "rb"}], expected, ["model"], **extra)])


# ==== statistics against hand computations ===================================================
def test_t_interval_matches_hand_computation():
    # diffs 0.10, 0.07, 0.13: mean 0.10, sd 0.03, t(2) = 4.303 -> half width 4.303 * 0.03 / sqrt(3) = 0.07453
    iv = difference_ci([0.80, 0.78, 0.82], [0.70, 0.71, 0.69], paired=True)
    assert iv.mean == pytest.approx(0.10)
    assert iv.low == pytest.approx(0.10 - 0.074530, abs=1e-5)
    assert iv.high == pytest.approx(0.10 + 0.074530, abs=1e-5)
    assert iv.n == 3
    # one value: no interval
    assert mean_ci([0.5]).low is None
    assert t975(1) == 12.706 and t975(2.7) == 4.303 and t975(200) == 1.96


def test_welch_interval_matches_hand_computation():
    # a = 1,2,3 (var 1, n 3), b = 2,4 (var 2, n 2): se^2 = 1/3 + 1 = 4/3; df = (4/3)^2 / ((1/3)^2/2 + 1^2/1)
    # = 1.7778 / 1.0556 = 1.684 -> t(1) = 12.706 (rounded down: conservative)
    iv = difference_ci([1, 2, 3], [2, 4], paired=False)
    half = 12.706 * math.sqrt(4 / 3)
    assert iv.mean == pytest.approx(-1.0)
    assert (iv.low, iv.high) == (pytest.approx(-1 - half), pytest.approx(-1 + half))


@pytest.mark.parametrize("relation, low, high, margin, expected", [
    (">", 0.01, 0.2, 0.02, "reproduced"),
    (">", -0.2, -0.01, 0.02, "contradicted"),
    (">", -0.01, 0.2, 0.02, "inconclusive"),
    ("<", -0.2, -0.01, 0.02, "reproduced"),
    ("<", 0.01, 0.2, 0.02, "contradicted"),
    ("=", -0.015, 0.019, 0.02, "reproduced"),
    ("=", 0.03, 0.05, 0.02, "contradicted"),
    ("=", -0.01, 0.05, 0.02, "inconclusive"),
    (">", None, None, 0.02, "inconclusive"),
])
def test_verdict_rule(relation, low, high, margin, expected):
    assert verdict(relation, low, high, margin) == expected


# ==== lessons over run folders ===============================================================
def test_paired_lesson_verdict_from_run_folders(tmp_path):
    suite = load_suite(two_arm_suite(tmp_path))
    root = tmp_path / "runs"
    for seed, (a, b) in enumerate([(0.80, 0.70), (0.78, 0.71), (0.82, 0.69)]):
        fake_run(root, f"ra-s{seed}", a, val=[0.5, 0.795, 0.80])
        fake_run(root, f"rb-s{seed}", b, val=[0.5, 0.6, 0.7])
    r = evaluate_lesson(suite.lessons[0], root)
    assert r["verdict"] == "reproduced"
    assert r["difference"]["paired"] is True and r["difference"]["n"] == 3
    assert r["difference"]["ci_low"] == pytest.approx(0.10 - 0.074530, abs=1e-5)
    arm_a = r["arms"][0]
    assert arm_a["runs"] == ["ra-s0", "ra-s1", "ra-s2"] and arm_a["mean"] == pytest.approx(0.80)
    assert arm_a["plateau"] == "3/3" and r["arms"][1]["plateau"] == "0/3"
    assert r["budget"] == "all images x 1 epochs, constant lr"
    # the same data read the other way round is contradicted
    flipped = load_suite(two_arm_suite(tmp_path, "a < b"))
    assert evaluate_lesson(flipped.lessons[0], root)["verdict"] == "contradicted"


def test_missing_and_failed_runs_are_not_run_or_counted(tmp_path):
    suite = load_suite(two_arm_suite(tmp_path))
    root = tmp_path / "runs"
    root.mkdir()
    assert evaluate_lesson(suite.lessons[0], root)["verdict"] == "not run"
    fake_run(root, "ra-s0", 0.8)
    fake_run(root, "ra-s1", 0.9, state="failed")       # a failed run does not count
    fake_run(root, "rb-s0", 0.7)
    fake_run(root, "rb-s1", 0.6)
    r = evaluate_lesson(suite.lessons[0], root)
    assert [a["n"] for a in r["arms"]] == [1, 2]
    assert r["difference"]["paired"] is False and r["verdict"] == "inconclusive"   # n = 1: no interval


def test_metric_on_combinations_scale_and_stated_value(tmp_path):
    runs = [{"id": "rgb", "seeds": [0, 1], "config": {"model": "cnn3"}}]
    arms = [{"name": "on-RGB", "run": "rgb", "metric": "acc_on:RGB"},
            {"name": "on-one", "run": "rgb", "metric": "acc_on:R,G,B", "scale": 2.0},
            {"name": "chance", "value": 0.1}]
    p = write_suite(tmp_path / "c.json", runs, [lesson(arms, "on-RGB > on-one", []),
                                                 {**lesson(arms, "on-RGB > chance", []), "id": "l2"}])
    root = tmp_path / "runs"
    fake_run(root, "rgb-s0", 0.8, tested={"RGB": 0.8, "R": 0.1, "G": 0.2, "B": 0.3})
    fake_run(root, "rgb-s1", 0.7, tested={"RGB": 0.7, "R": 0.1, "G": 0.1, "B": 0.1})
    suite = load_suite(p)
    r = evaluate_lesson(suite.lessons[0], root)
    assert r["arms"][1]["values"] == [pytest.approx(0.4), pytest.approx(0.2)]    # 2 x mean(R, G, B)
    assert r["difference"]["mean"] == pytest.approx(((0.8 - 0.4) + (0.7 - 0.2)) / 2)
    r2 = evaluate_lesson(suite.lessons[1], root)
    # against a stated number, the interval is the run arm's: diffs 0.7, 0.6 -> mean 0.65, sd 0.0707
    half = 12.706 * math.sqrt(0.005) / math.sqrt(2)
    assert (r2["difference"]["ci_low"], r2["difference"]["ci_high"]) == (pytest.approx(0.65 - half),
                                                                        pytest.approx(0.65 + half))


def test_exact_count_lesson_needs_no_runs(tmp_path):
    arms = [{"name": "separable", "model": "dwsep_cnn", "options": {"separable": True}, "input": [3, 32, 32],
             "classes": 12},
            {"name": "plain", "model": "dwsep_cnn", "options": {"separable": False}, "input": [3, 32, 32],
             "classes": 12}]
    p = write_suite(tmp_path / "cost.json", [{"id": "x", "config": {}}],
                    [lesson(arms, "separable < plain", [], metric="params")])
    (tmp_path / "runs").mkdir()
    r = evaluate_lesson(load_suite(p).lessons[0], tmp_path / "runs")
    sep, plain = r["arms"][0]["mean"], r["arms"][1]["mean"]
    assert sep < plain and r["verdict"] == "reproduced"
    assert r["difference"]["ci_low"] == r["difference"]["ci_high"] == sep - plain


# ==== refusals: exit 2, nothing trained ======================================================
def test_confounded_lesson_is_refused_naming_lesson_and_key(tmp_path, capsys):
    runs = [{"id": "ra", "config": {"model": "cnn3", "lr": 0.01}}, {"id": "rb", "config": {"model": "cnn2"}}]
    p = write_suite(tmp_path / "conf.json", runs,
                    [lesson([{"name": "a", "run": "ra"}, {"name": "b", "run": "rb"}], "a > b", ["model"])])
    with pytest.raises(SuiteError, match=r"lesson 'l1'.*\['lr'\].*confounded"):
        load_suite(p)
    assert suite_mod.main([str(p), "--runs-root", str(tmp_path / "runs")]) == 2
    assert "lesson 'l1'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("arms, message", [
    ([{"name": "a", "run": "ra"}, {"name": "b", "run": "nope"}], r"lesson 'l1', arm 'b'.*'run' names 'nope'"),
    ([{"name": "a", "run": "ra"}], r"lesson 'l1': key 'arms'"),
    ([{"name": "a", "run": "ra"}, {"name": "b", "model": "no_such_net", "input": [3, 8, 8], "classes": 2}],
     r"lesson 'l1', arm 'b'.*unknown model 'no_such_net'"),
    ([{"name": "a", "run": "ra"}, {"name": "b", "run": "ra", "metric": "acc_on:XY"}],
     r"lesson 'l1', arm 'b'.*unknown combination"),
])
def test_bad_lessons_exit_2(tmp_path, capsys, arms, message):
    p = write_suite(tmp_path / "bad.json", [{"id": "ra", "config": {}}], [lesson(arms, "a > b", [])])
    with pytest.raises(SuiteError, match=message):
        load_suite(p)
    assert lessons_mod.main([str(p), "--runs-root", str(tmp_path)]) == 2
    assert "lesson 'l1'" in capsys.readouterr().err


def test_suite_with_unknown_model_trains_nothing(tmp_path, capsys):
    p = write_suite(tmp_path / "m.json", [{"id": "ok", "config": {}}, {"id": "m", "config": {"model": "nope"}}], [])
    assert suite_mod.main([str(p), "--runs-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "run 'm'" in err and "nope" in err and "nothing trained" in err
    assert not (tmp_path / "runs").exists()


def test_lessons_cli_on_missing_runs_folder_exits_2(tmp_path, capsys):
    assert lessons_mod.main(["seeds", "--runs-root", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ==== the seeds suite ========================================================================
def test_seed_suite_lessons_are_complete_and_fair():
    suite = load_suite("seeds")
    by_id = {lesson.id: lesson for lesson in suite.lessons}
    runs = {r.run_id: r for r in suite.runs}
    for lid in ("channel-collapse", "zero-fill-per-combination", "fill-strategies", "dyconv-vs-resnet18",
                "spatial-attn-vs-resnet34", "attn-deform-vs-resnet34", "plain-vs-deformable",
                "separable-accuracy", "ciresan-residual", "resnet-v1-vs-v2", "triplet-joint",
                "triplet-two-stage", "linear-probe"):
        lesson = by_id[lid]
        assert lesson.headline, lid
        for arm in lesson.arms:
            if arm.kind == "run":
                assert len(arm.run_ids) >= 3, (lid, arm.name)
                assert all(runs[r].config.scheduler == "cosine" for r in arm.run_ids)
    reports = {lesson.seed_report for lesson in suite.lessons}
    assert reports == {"000", "001", "002", "003", "004"}


def test_each_course_group_shows_its_own_lessons_and_every_lesson_has_a_group():
    """Compare shows the lessons whose arm under study is chosen: the channel group does not bring in
    the triplet or separable lessons that merely reuse its RGB baseline, and the cost lessons (model
    arms, no runs) come with the group that trains that model."""
    from core.lesson_spec import lessons_for_runs
    from core.suite import suite_groups

    suite, groups = load_suite("seeds"), suite_groups("seeds")
    shown = {g: [lesson.id for lesson in lessons_for_runs(suite.lessons, ids)] for g, ids in groups.items()}
    assert shown["channel-robustness"] == ["channel-collapse", "zero-fill-per-combination", "fill-strategies",
                                           "channel-attention"]
    assert shown["metric-learning"] == ["triplet-joint", "triplet-two-stage"]
    assert {"separable-cost-params", "separable-cost-macs", "alexnet-count-params"} <= set(shown["separable"])
    assert {lid for ids in shown.values() for lid in ids} == {lesson.id for lesson in suite.lessons}
    assert lessons_for_runs(suite.lessons, ["chan-cnn3-rgb-s0"])[0].id == "channel-collapse"
    assert lessons_for_runs(suite.lessons, ["no-such-run"]) == []


def test_checkpoints_readme_lessons_table_matches_generator():
    readme = (REPO / "checkpoints" / "README.md").read_text(encoding="utf-8")
    block = readme_block(evaluate_suite_lessons("seeds", REPO / "checkpoints"))
    assert block in readme, ("checkpoints/README.md is out of date: run "
                             "python -m core.lessons seeds --write-readme checkpoints/README.md")
