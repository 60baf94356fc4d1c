"""core.analysis.lesson_view: the lesson rows and verdict sentence the Compare page and the HTML
report share, from hand-made result dicts; and the report's Lessons section over a temporary suite."""

from __future__ import annotations

import html

from core.analysis.lesson_view import (ROW_HEADERS, lesson_result, lesson_results_for_runs, lesson_rows,
                                       verdict_sentence)
from core.report import build_report_html
from core.suite import load_suite
from tests.core.test_lessons import fake_run, lesson, write_suite


def arm(name: str, values: list[float], *, entry: str | None = None, low=None, high=None, metric="test_acc",
        scale=1.0, kind="run", plateau=None, budget="2,000 images x 8 epochs, cosine schedule to its end") -> dict:
    runs = [f"{entry}-s{i}" for i in range(len(values))] if kind == "run" else []
    mean = sum(values) / len(values) if values else None
    return {"name": name, "metric": metric, "scale": scale, "kind": kind, "budget": budget, "source": "",
            "runs": runs, "values": values, "n": len(values), "mean": mean, "ci_low": low, "ci_high": high,
            "plateau": plateau, "entry": entry, "run_ids": [f"{entry}-s{i}" for i in range(3)] if entry else []}


def result(arms: list[dict], verdict: str, diff: dict | None = None, metric: str = "test_acc") -> dict:
    return {"id": "spatial-attn-vs-resnet34", "seed_report": "001", "question": "q?", "finding": "f",
            "metric": metric, "arms": arms, "expected": f"{arms[0]['name']} > {arms[1]['name']}",
            "headline": True, "budget": "", "note": "",
            "difference": diff or {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "paired": False},
            "verdict": verdict}


def test_reproduced_rows_and_sentence():
    r = result([arm("spatial-attn", [0.30, 0.31, 0.32], entry="small-spatial_attn_cnn4", low=0.2852, high=0.3348,
                    plateau="3/3"),
                arm("0.9xResNet-34", [0.25, 0.26, 0.27], entry="small-resnet34", scale=0.9, low=0.2352,
                    high=0.2848, plateau="1/3")],
               "reproduced", {"mean": 0.0523, "ci_low": 0.0214, "ci_high": 0.0832, "n": 3, "paired": True})
    assert verdict_sentence(r) == ("Reproduced: spatial-attn - 0.9xResNet-34 = +0.052 [+0.021, +0.083], "
                                   "3 seeds, paired by seed.")
    rows = lesson_rows(r)
    assert [list(row) for row in rows] == [list(ROW_HEADERS)] * 2
    # the figures before the long run list: a 1000 px window shows them without scrolling sideways
    assert list(ROW_HEADERS)[:4] == ["Arm", "Mean", "95 % CI", "n"] and ROW_HEADERS[-1] == "Runs"
    assert rows[0] == {"Arm": "spatial-attn",
                       "Runs": "3: small-spatial_attn_cnn4-s0, small-spatial_attn_cnn4-s1, small-spatial_attn_cnn4-s2",
                       "Mean": "0.310", "95 % CI": "[0.285, 0.335]", "n": "3", "Measured": "test accuracy",
                       "Budget": "2,000 images x 8 epochs, cosine schedule to its end", "Plateau": "3/3"}
    assert rows[1]["Arm"] == "0.9xResNet-34 (x 0.9)" and rows[1]["Plateau"] == "1/3"


def test_not_run_names_the_arm_and_the_command():
    r = result([arm("a", [0.8, 0.7], entry="ra", low=0.1, high=1.4), arm("b", [], entry="rb")], "not run")
    text = verdict_sentence(r)
    assert text.startswith("Not run: arm 'b' has no finished run")
    assert "`python -m core.suite seeds --only rb` trains it." in text
    rows = lesson_rows(r)
    assert rows[0]["Runs"] == "2 of 3: ra-s0, ra-s1"
    assert rows[1] == {"Arm": "b", "Runs": "0 of 3: not run", "Mean": "–", "95 % CI": "–", "n": "0",
                       "Measured": "test accuracy", "Budget": "2,000 images x 8 epochs, cosine schedule to its end", "Plateau": "–"}
    both = result([arm("a", [], entry="ra"), arm("b", [], entry="rb")], "not run")
    assert "arm 'a' and 'b' have no finished run" in verdict_sentence(both, "my_suite.json")
    assert "`python -m core.suite my_suite.json --only ra,rb` trains them." in verdict_sentence(both, "my_suite.json")


def test_one_seed_says_no_interval_and_counts_have_separators():
    r = result([arm("a", [0.8], entry="ra"), arm("b", [0.75], entry="rb")], "inconclusive",
               {"mean": 0.05, "ci_low": None, "ci_high": None, "n": 1, "paired": False})
    text = verdict_sentence(r)
    assert text.startswith("Inconclusive: a - b = +0.050, from one seed: no 95 % interval can be computed")
    assert lesson_rows(r)[0]["95 % CI"] == "none (one run)"
    counts = result([arm("separable", [12345.0], kind="model", metric="params", low=12345.0, high=12345.0),
                     arm("plain", [98765.0], kind="model", metric="params", low=98765.0, high=98765.0)],
                    "contradicted", {"mean": -86420.0, "ci_low": -86420.0, "ci_high": -86420.0, "n": 1,
                                     "paired": False}, metric="params")
    assert verdict_sentence(counts) == "Contradicted: separable - plain = -86,420, exact counts (no spread)."
    row = lesson_rows(counts)[0]
    assert (row["Runs"], row["Mean"], row["95 % CI"]) == ("counted from the model", "12,345", "exact")
    assert row["Measured"] == "parameters" and row["Arm"] == "separable"      # the metric beside, not in, the name


# ==== over run folders: the result helper and the report's Lessons section ===================
def _suite(tmp_path):
    runs = [{"id": "ra", "seeds": [0, 1, 2], "config": {"model": "cnn3"}},
            {"id": "rb", "seeds": [0, 1, 2], "config": {"model": "cnn2"}},
            {"id": "other", "config": {"model": "cnn2"}}]
    spec = lesson([{"name": "deep<er>", "run": "ra"}, {"name": "b", "run": "rb"}], "deep<er> > b", ["model"],
                  note="Both arms <same> data.")
    return write_suite(tmp_path / "mini.json", runs, [spec])


def test_lesson_result_and_report_section(tmp_path):
    suite_path = _suite(tmp_path)
    root = tmp_path / "runs"
    for seed, (a, b) in enumerate([(0.80, 0.70), (0.78, 0.71), (0.82, 0.69)]):
        fake_run(root, f"ra-s{seed}", a, val=[0.5, 0.795, 0.80])
        fake_run(root, f"rb-s{seed}", b, val=[0.5, 0.6, 0.7])
    fake_run(root, "other", 0.5)
    r = lesson_result(load_suite(suite_path).lessons[0], root)
    assert r["verdict"] == "reproduced" and r["arms"][0]["entry"] == "ra"
    sentence = "Reproduced: deep<er> - b = +0.100 [+0.025, +0.175], 3 seeds, paired by seed."
    assert verdict_sentence(r) == sentence
    assert lesson_results_for_runs(suite_path, ["other"], root) == []
    text = build_report_html([root / "ra-s0", root / "rb-s1"], with_cost=False, lessons_suite=suite_path)
    assert "<h2>Lessons</h2>" in text and "Lesson: l1 (report 001)" in text
    assert html.escape(sentence) in text and "deep<er>" not in text              # every text escaped
    assert "<b>The report found:</b> f 0.29 vs 0.02" in text and html.escape("Both arms <same> data.") in text
    assert "<td>3: ra-s0, ra-s1, ra-s2</td>" in text and "<td>0.800</td>" in text
    # runs of no lesson: no section; a suite that cannot be loaded: no section, no error
    assert "<h2>Lessons</h2>" not in build_report_html([root / "other"], with_cost=False, lessons_suite=suite_path)
    assert "<h2>Lessons</h2>" not in build_report_html([root / "ra-s0"], with_cost=False,
                                                       lessons_suite=tmp_path / "missing.json")


def test_report_lessons_say_not_run(tmp_path):
    suite_path = _suite(tmp_path)
    root = tmp_path / "runs"
    fake_run(root, "ra-s0", 0.8)
    text = build_report_html([root / "ra-s0"], with_cost=False, lessons_suite=suite_path)
    assert html.escape(f"`python -m core.suite {suite_path} --only rb` trains it.") in text
    assert "class='verdict not-run'" in text
