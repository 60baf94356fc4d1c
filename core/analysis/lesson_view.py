"""What the Compare page and the HTML report show of a lesson (core.lessons): one table row per arm
and one verdict sentence, formatted here once so that the page and the report cannot disagree.

    from core.analysis.lesson_view import lesson_results_for_runs, lesson_rows, verdict_sentence
    for result in lesson_results_for_runs("seeds", ["chan-cnn3-rgb-s0"], "checkpoints"):
        print(verdict_sentence(result))

Every number comes from the result dict of ``core.lessons.evaluate_lesson``; ``lesson_result``
adds to each arm the suite entry it trains (``entry``) and the run ids it expects (``run_ids``),
so that a lesson that is not run can say which command trains the missing arm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from core.lesson_spec import EXACT_METRICS, Lesson, lessons_for_runs, parse_expected

VERDICT_WORDS = {"reproduced": "Reproduced", "contradicted": "Contradicted", "inconclusive": "Inconclusive",
                 "not run": "Not run"}
ROW_HEADERS = ("Arm", "Mean", "95 % CI", "n", "Measured", "Budget", "Plateau", "Runs")


# ==== evaluating =============================================================================
def lesson_result(lesson: Lesson, runs_root: str | Path) -> dict:
    """``core.lessons.evaluate_lesson`` plus, per arm, ``entry`` (the suite entry id of a run arm,
    else None) and ``run_ids`` (the runs it expects, finished or not)."""
    from core.lessons import evaluate_lesson

    result = evaluate_lesson(lesson, runs_root)
    for arm in result["arms"]:
        spec = lesson.arm(arm["name"])
        arm["entry"], arm["run_ids"] = spec.run, list(spec.run_ids)
    return result


def lesson_results_for_runs(suite: str | os.PathLike, run_ids: Sequence[str], runs_root: str | Path) -> list[dict]:
    """``lesson_result`` of every lesson of ``suite`` one of whose arms uses one of ``run_ids``.
    Raises core.errors.InvalidInputError (or OSError) for a suite file that cannot be loaded."""
    from core.suite import load_suite, suite_groups

    suite_ids = {rid for ids in suite_groups(suite).values() for rid in ids}
    if not suite_ids & set(run_ids):
        return []        # no run of the suite: no lesson can use one (and no suite configs are built)
    lessons = load_suite(suite, strict=False).lessons
    return [lesson_result(lesson, runs_root) for lesson in lessons_for_runs(lessons, run_ids)]


# ==== numbers as text ========================================================================
def _exact(metric: str) -> bool:
    return metric in EXACT_METRICS


def number_text(v: float | None, metric: str, signed: bool = False) -> str:
    """An accuracy to 3 decimals, a count with thousands separators; "–" for a missing one."""
    if v is None:
        return "–"
    sign = "+" if signed and v > 0 else ""      # an exact 0 reads "0", not "+0"
    if _exact(metric) or abs(v) >= 1000:
        return f"{sign}{v:,.0f}"
    return f"{sign}{v:.3f}"


def metric_words(metric: str) -> str:
    """What a lesson metric means, in words: ``acc_on:R,G,B`` -> "test accuracy on R, G, B (mean)"."""
    if metric.startswith("acc_on:"):
        combos = [c for c in metric[len("acc_on:"):].split(",") if c]
        return f"test accuracy on {', '.join(combos)}" + (" (mean)" if len(combos) > 1 else "")
    return {"test_acc": "test accuracy", "params": "parameters", "macs": "MACs"}.get(metric, metric)


def _arm_label(arm: dict) -> str:
    """The arm's name, with its scale when the lesson compares against a fraction of it."""
    return f"{arm['name']} (x {arm['scale']:g})" if arm.get("scale", 1.0) != 1.0 else arm["name"]


def _runs_text(arm: dict) -> str:
    if arm["kind"] == "model":
        return "counted from the model"
    if arm["kind"] == "value":
        return f"stated: {arm['source']}" if arm.get("source") else "stated in the report"
    expected = arm.get("run_ids") or []
    of = f" of {len(expected)}" if expected and len(expected) != len(arm["runs"]) else ""
    return f"{len(arm['runs'])}{of}: {', '.join(arm['runs'])}" if arm["runs"] else f"0{of}: not run"


def _ci_text(arm: dict) -> str:
    if arm["mean"] is None:
        return "–"
    if arm["ci_low"] is None or arm["ci_high"] is None:
        return "none (one run)"
    if arm["ci_low"] == arm["ci_high"]:
        return "exact"
    return f"[{number_text(arm['ci_low'], arm['metric'])}, {number_text(arm['ci_high'], arm['metric'])}]"


def lesson_rows(result: dict) -> list[dict]:
    """One row per arm, every value text: Arm, Mean, 95 % CI, n, Measured (the arm's metric in
    words), Budget, Plateau, Runs (count and ids).

    Short arm names and the numbers come first, the long texts last, so that a narrow window
    (1000 px) shows the figures without scrolling the table sideways."""
    rows = []
    for arm in result["arms"]:
        rows.append({"Arm": _arm_label(arm),
                     "Mean": number_text(arm["mean"], arm["metric"]), "95 % CI": _ci_text(arm),
                     "n": f"{arm['n']:,}", "Measured": metric_words(arm["metric"]), "Budget": arm.get("budget") or "–",
                     "Plateau": arm.get("plateau") or "–", "Runs": _runs_text(arm)})
    return rows


# ==== the verdict sentence ===================================================================
def _relation(result: dict) -> tuple[str, str, str]:
    relation = parse_expected(result["expected"])
    if relation is None:        # (core.lesson_spec refuses such a lesson; a hand-made dict may have one)
        names = [a["name"] for a in result["arms"]]
        return names[0], ">", names[-1]
    return relation


def _not_run_sentence(result: dict, names: tuple[str, str], suite: str) -> str:
    arms = [a for a in result["arms"] if a["name"] in names and not a["n"]]
    which = " and ".join(f"'{a['name']}'" for a in arms) or "an arm"
    has = "have" if len(arms) > 1 else "has"
    entries = [a["entry"] for a in arms if a.get("entry")]
    if entries:
        how = f"`python -m core.suite {suite} --only {','.join(entries)}` trains {'them' if len(arms) > 1 else 'it'}."
    else:
        how = f"`python -m core.suite {suite}` trains the suite's runs."
    return f"Not run: arm {which} {has} no finished run in this runs folder; {how}"


def verdict_sentence(result: dict, suite: str = "seeds") -> str:
    """``Reproduced: A - B = +0.052 [+0.021, +0.083], 3 seeds, paired by seed.`` (numbers from ``result``)."""
    first, _, second = _relation(result)
    if result["verdict"] == "not run":
        return _not_run_sentence(result, (first, second), suite)
    d, metric = result["difference"], result["metric"]
    exact = _exact(metric) or all(_exact(a["metric"]) for a in result["arms"] if a["name"] in (first, second))
    head = f"{VERDICT_WORDS.get(result['verdict'], result['verdict'])}: {first} - {second} = "
    if exact:
        return head + f"{number_text(d['mean'], metric, signed=True)}, exact counts (no spread)."
    value = number_text(d["mean"], metric, signed=True)
    if d["ci_low"] is None or d["ci_high"] is None:
        return (head + f"{value}, from one seed: no 95 % interval can be computed, so the difference "
                       "cannot be told apart from seed noise; train more seeds.")
    interval = f"[{number_text(d['ci_low'], metric, True)}, {number_text(d['ci_high'], metric, True)}]"
    if d["paired"]:
        how = f"{d['n']} seeds, paired by seed"
    else:
        counts = {a["name"]: a["n"] for a in result["arms"]}
        how = f"{counts.get(first, '?')} vs {counts.get(second, '?')} runs, unpaired (Welch)"
    return head + f"{value} {interval}, {how}."


def lesson_title(result: dict) -> str:
    return f"Lesson: {result['id']} (report {result['seed_report']})"
