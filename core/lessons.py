"""``python -m core.lessons SUITE``: what the course reports found, and whether our runs reproduce it.

    python -m core.lessons seeds                         # a table over checkpoints/
    python -m core.lessons seeds --runs-root runs/suite  # over a suite trained elsewhere
    python -m core.lessons seeds --json                  # one object per lesson
    python -m core.lessons seeds --markdown              # the table checkpoints/README.md embeds

A lesson is data in the suite file (``lessons``): the report (``seed_report``) and ``question`` it
comes from, the report's ``finding`` with its numbers, two or more ``arms``, the ``metric``, the
``expected`` relation between two arms (``"A > B"``, ``"A < B"`` or ``"A = B"``), and the config
keys the arms may differ in (``allowed_differences``). An arm is one of:

* ``{"name", "run"}``: a suite entry; its values are the metric of each of its seeds' runs;
* ``{"name", "model", "options", "input", "classes"}``: a model counted at an input (cost lessons);
* ``{"name", "value", "source"}``: a number the report states (e.g. a count done by hand).

Arms may override the metric (``"metric": "acc_on:R,G,B"``) and scale it (``"scale": 0.9``: the
"90 % of ResNet-34" line). Metrics: ``test_acc``; ``acc_on:C1,C2`` (the mean test accuracy on those
channel combinations, from eval.json's channel robustness); ``params`` and ``macs`` (exact counts).

The verdict rule, one for every lesson. d = mean(first arm) - mean(second arm) of ``expected``,
with its 95 % Student-t interval: over the per-seed differences when the arms share at least two
seeds (paired), else Welch's interval. For ``A > B``: **reproduced** when the interval lies above 0,
**contradicted** when it lies below 0, **inconclusive** when it contains 0 (or cannot be computed:
one seed). ``A < B`` mirrors it. For ``A = B``: reproduced when the whole interval lies within
+-``margin`` (default 0.02: two accuracy points), contradicted when it excludes 0, else
inconclusive. Exact counts (params, MACs, stated values) have no spread: the interval is the
difference itself. **not run**: an arm has no finished run.

Exit status: 0, or 2 for a bad suite file or runs folder (the message names the lesson and key).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from core import cli
from core.errors import EXIT_OK, InvalidInputError
from core.lesson_spec import (EXACT_METRICS, Arm, Lesson, LessonError, lessons_for_runs,  # noqa: F401 - the API
                              parse_lessons)

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not run")

# ==== values and verdicts ====================================================================
def _run_metric(run_dir: Path, metric: str) -> float | None:
    """The metric of one finished run folder, or None (missing, failed, not evaluated)."""
    from core.training.run_folder import RunFolder

    folder = RunFolder(run_dir)
    if not run_dir.is_dir() or folder.read_status().get("state") != "done":
        return None
    if metric in EXACT_METRICS:
        from core.analysis.compare import run_cost

        return _number(run_cost(run_dir).get(metric))
    ev = folder.read_eval()
    if not isinstance(ev, dict):
        return None
    if metric == "test_acc":
        return _number(ev.get("test_acc"))
    tested = ((ev.get("channel_robustness") or {}).get("tested") or {})
    vals = [_number(tested.get(c)) for c in metric[len("acc_on:"):].split(",") if c]
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _plateaued(run_dir: Path, tolerance: float = 0.01) -> bool | None:
    """Whether the last two epochs' validation accuracies are within ``tolerance`` (None: < 2 epochs)."""
    from core.training.run_folder import RunFolder

    rows = [r for r in RunFolder(run_dir).read_metrics() if isinstance(r.get("val_acc"), (int, float))]
    if len(rows) < 2:
        return None
    return abs(rows[-1]["val_acc"] - rows[-2]["val_acc"]) <= tolerance


def arm_values(arm: Arm, metric: str, runs_root: Path) -> dict:
    """{runs, seeds, values, plateau} of one arm: the runs that finished and their (scaled) metric."""
    metric = arm.metric or metric
    if arm.kind == "value":
        return {"runs": [], "seeds": [None], "values": [arm.value * arm.scale], "exact": True, "plateau": []}
    if arm.kind == "model":
        from core.analysis.complexity import model_complexity

        rep = model_complexity(arm.model, arm.input, arm.classes, arm.options, cross_check=False)
        value = {"params": rep.params_total, "macs": rep.macs}.get(metric)
        return {"runs": [], "seeds": [None], "values": [] if value is None else [float(value) * arm.scale],
                "exact": True, "plateau": []}
    runs, seeds, values, plateau = [], [], [], []
    for rid, seed in zip(arm.run_ids, arm.seeds):
        v = _run_metric(runs_root / rid, metric)
        if v is None:
            continue
        runs.append(rid)
        seeds.append(seed)
        values.append(v * arm.scale)
        plateau.append(_plateaued(runs_root / rid))
        if metric in EXACT_METRICS:
            break            # the count is the same for every seed: one run says it
    return {"runs": runs, "seeds": seeds, "values": values, "exact": metric in EXACT_METRICS, "plateau": plateau}


def verdict(relation: str, low: float | None, high: float | None, margin: float) -> str:
    """The rule of the module docstring, for an interval [low, high] of first - second arm."""
    if low is None or high is None:
        return "inconclusive"
    if relation == "=":
        if -margin <= low and high <= margin:
            return "reproduced"
        return "contradicted" if (low > 0 or high < 0) else "inconclusive"
    above, below = low > 0, high < 0
    if relation == "<":
        above, below = below, above
    return "reproduced" if above else "contradicted" if below else "inconclusive"


def evaluate_lesson(lesson: Lesson, runs_root: str | Path) -> dict:
    """The lesson's result object (see the module docstring; the --json keys)."""
    from core.analysis.stats import difference_ci, mean_ci

    root = Path(runs_root)
    first, rel, second = lesson.relation
    arms_out, got = [], {}
    for arm in lesson.arms:
        vals = arm_values(arm, lesson.metric, root)
        got[arm.name] = vals
        ci = mean_ci(vals["values"]) if vals["values"] else None
        exact = vals["exact"]
        arms_out.append({"name": arm.name, "metric": arm.metric or lesson.metric, "scale": arm.scale,
                         "kind": arm.kind, "budget": arm.budget, "source": arm.source,
                         "runs": vals["runs"], "values": vals["values"], "n": len(vals["values"]),
                         "mean": None if ci is None else ci.mean,
                         "ci_low": None if ci is None else (ci.mean if exact else ci.low),
                         "ci_high": None if ci is None else (ci.mean if exact else ci.high),
                         "plateau": f"{sum(1 for p in vals['plateau'] if p)}/{len(vals['plateau'])}"
                         if vals["plateau"] else None})
    out = {"id": lesson.id, "seed_report": lesson.seed_report, "question": lesson.question,
           "finding": lesson.finding, "metric": lesson.metric, "arms": arms_out, "expected": lesson.expected,
           "headline": lesson.headline, "budget": lesson.budget or _shared_budget(lesson), "note": lesson.note,
           "difference": {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "paired": False},
           "verdict": "not run"}
    a, b = got[first], got[second]
    if not a["values"] or not b["values"]:
        return out
    exact = a["exact"] and b["exact"]
    shared = [s for s in a["seeds"] if s is not None and s in b["seeds"]]
    if not exact and (a["exact"] or b["exact"]):
        # one side is a count or a stated number: the spread is the other side's alone
        fixed = (a if a["exact"] else b)["values"][0]
        diffs = [x - fixed for x in a["values"]] if b["exact"] else [fixed - x for x in b["values"]]
        d, paired = mean_ci(diffs), False
    elif not exact and len(shared) >= 2:
        xa = [a["values"][a["seeds"].index(s)] for s in shared]
        xb = [b["values"][b["seeds"].index(s)] for s in shared]
        d, paired = difference_ci(xa, xb, paired=True), True
    else:
        d, paired = difference_ci(a["values"], b["values"], paired=False), False
    low, high = (d.mean, d.mean) if exact else (d.low, d.high)
    margin = 0.0 if exact else lesson.margin
    out["difference"] = {"mean": d.mean, "ci_low": low, "ci_high": high, "n": d.n, "paired": paired}
    out["verdict"] = verdict(rel, low, high, margin)
    return out


def _shared_budget(lesson: Lesson) -> str:
    budgets = list(dict.fromkeys(a.budget for a in lesson.arms if a.budget))
    return budgets[0] if len(budgets) == 1 else "; ".join(f"{a.name}: {a.budget}" for a in lesson.arms if a.budget)


def evaluate_suite_lessons(suite_name: str | Path, runs_root: str | Path) -> list[dict]:
    """Every lesson of a suite evaluated over ``runs_root``. Raises InvalidInputError (exit 2) for a
    bad suite file or a runs folder that does not exist."""
    from core.suite import load_suite

    root = Path(runs_root)
    if not root.is_dir():
        raise InvalidInputError(f"runs folder {str(root)!r} does not exist")
    suite = load_suite(suite_name, strict=False)
    if not suite.lessons:
        raise InvalidInputError(f"suite {suite.name!r} ({suite.path}) has no 'lessons'")
    return [evaluate_lesson(lesson, root) for lesson in suite.lessons]


# ==== text ===================================================================================
def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "-"
    if metric in EXACT_METRICS or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3f}"


def _interval_text(mean: float | None, low: float | None, high: float | None, metric: str) -> str:
    if mean is None:
        return "-"
    if low is None or high is None:
        return f"{_fmt(mean, metric)} (no interval)"
    if low == high:
        return _fmt(mean, metric)
    return f"{_fmt(mean, metric)} [{_fmt(low, metric)}, {_fmt(high, metric)}]"


def arm_text(arm: dict) -> str:
    """``name: mean [low, high], n=3`` of one arm result."""
    return f"{arm['name']}: {_interval_text(arm['mean'], arm['ci_low'], arm['ci_high'], arm['metric'])}, n={arm['n']}"


def difference_text(result: dict) -> str:
    d = result["difference"]
    metric = result["metric"]
    text = _interval_text(d["mean"], d["ci_low"], d["ci_high"], metric)
    if d["mean"] is not None and metric not in EXACT_METRICS:
        text = ("+" if d["mean"] >= 0 else "") + text
    return text


def markdown_table(results: Sequence[dict]) -> str:
    """The lessons table of checkpoints/README.md (generated; a test keeps the file in sync)."""
    lines = ["| lesson (report) | expected | verdict | difference, 95 % CI | n | arms: mean [95 % CI] | budget | "
             "plateau (runs whose last two validation accuracies are within 1 point) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        star = " **(headline)**" if r["headline"] else ""
        d = r["difference"]
        n = f"{d['n']} {'pairs' if d['paired'] else 'per arm'}" if d["mean"] is not None else "0"
        if r["metric"] in EXACT_METRICS or all(a["metric"] in EXACT_METRICS for a in r["arms"]):
            n = "exact count"
        arms = "<br>".join(arm_text(a) for a in r["arms"])
        plateau = ", ".join(f"{a['name']} {a['plateau']}" for a in r["arms"] if a["plateau"]) or "-"
        lines.append(f"| `{r['id']}` ({r['seed_report']}){star} | {r['expected']} | **{r['verdict']}** | "
                     f"{difference_text(r)} | {n} | {arms} | {r['budget'] or '-'} | {plateau} |")
    return "\n".join(lines)


def text_report(results: Sequence[dict]) -> str:
    out = []
    for r in results:
        out.append(f"{r['id']} (report {r['seed_report']}): {r['verdict'].upper()}  expected {r['expected']}, "
                   f"difference {difference_text(r)} ({r['metric']})")
        out.extend(f"    {arm_text(a)}" for a in r["arms"])
    counts = {v: sum(1 for r in results if r["verdict"] == v) for v in VERDICTS}
    out.append(", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(out)


README_BEGIN = "<!-- lessons table: generated by `python -m core.lessons seeds --markdown`; do not edit -->"
README_END = "<!-- end of lessons table -->"


def readme_block(results: Sequence[dict]) -> str:
    return f"{README_BEGIN}\n{markdown_table(results)}\n{README_END}"


def replace_readme_block(text: str, block: str) -> str:
    """``text`` with its generated lessons block replaced by ``block`` (InvalidInputError if absent)."""
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        raise InvalidInputError("the README has no generated lessons block (the begin/end markers)")
    return text[:i] + block + text[j + len(README_END):]


# ==== CLI ====================================================================================
def build_parser():
    p = cli.parser("python -m core.lessons", __doc__)
    p.add_argument("suite", help="a suite name (core/suites/NAME.json) or a path to a suite file")
    p.add_argument("--runs-root", default="checkpoints", help="folder of the suite's run folders")
    cli.add_json(p)
    p.add_argument("--markdown", action="store_true", help="print the markdown table (checkpoints/README.md)")
    p.add_argument("--write-readme", metavar="FILE",
                   help="replace the generated lessons block of FILE (e.g. checkpoints/README.md)")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    results = evaluate_suite_lessons(args.suite, args.runs_root)
    if args.write_readme:
        path = Path(args.write_readme)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
        path.write_text(replace_readme_block(text, readme_block(results)), encoding="utf-8")
        print(f"wrote the lessons table of {len(results)} lessons into {path}")
    elif args.json:
        print(json.dumps(results, indent=1))
    elif args.markdown:
        print(markdown_table(results))
    else:
        print(text_report(results))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
