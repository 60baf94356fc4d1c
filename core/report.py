"""``python -m core.report RUN_DIR [RUN_DIR ...] --out report.html``: one self-contained HTML file a
student can hand in: the comparison the Compare page shows, for any set of run folders.

Sections: summary table (accuracy, macro F1, training time and speed), cost table (parameters,
MACs, FLOPs from ``core.analysis.complexity`` at the run's input shape), learning curves, the
channel-robustness heatmap (one row per run: the accuracy on each tested channel combination) and
confusion matrices (row-normalised, counts on hover). When runs of a lesson of the seeds suite
(``core.lessons``) are among them, a "Lessons" section gives each such lesson's question, the
report's finding, the verdict and its arms (``core.analysis.lesson_view``: the Compare page's text).

The rows come from ``core.analysis.compare`` and the figures from ``core.analysis.figures``: the
same functions the Compare page calls, so the report and the page cannot disagree.
plotly.js is inlined once (in the first figure), so the file opens offline, with no network.
A folder that holds run folders (e.g. ``checkpoints``) stands for all of them.

    from core.report import build_report_html
    html = build_report_html(["checkpoints/chan-cnn3-rgb", "checkpoints/chan-pca_cnn-random"])
"""

from __future__ import annotations

import html
import math
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from core import cli
from core.analysis import compare
from core.errors import FailedError, InvalidInputError
from core.training.run_folder import RunFolder, list_runs

MAX_CONFUSION_FIGURES = 40     # beyond this the file gets heavy; the rest are listed, not drawn


class ReportError(InvalidInputError):
    """Bad input for a report (no runs, a folder that is not a run); the message names the path."""


# ==== reading runs ===========================================================================
def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders from ``paths``: a run folder (config.json or status.json) as is, a folder of run
    folders expanded (sorted by name). Raises ReportError naming a path that is neither."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ReportError(f"{p}: no such folder")
        if (p / "config.json").exists() or (p / "status.json").exists():
            out.append(p)
            continue
        runs = list_runs(p)
        if not runs:
            raise ReportError(f"{p}: not a run folder (no config.json or status.json) and holds no run folders")
        out.extend(r.path for r in runs)
    if not out:
        raise ReportError("no run folders given")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def collect(run_dir: str | Path, *, with_cost: bool = True) -> dict:
    """Everything the report shows about one run folder (never raises for a broken run): its
    ``compare.run_summary`` row (with the cost when ``with_cost``), config, metrics and eval."""
    run = RunFolder(run_dir)
    config = run.read_config() or {}
    cost = compare.run_cost(run.path) if (with_cost and config) else {}
    return {"run_id": run.run_id, "path": str(run.path), "config": config, "metrics": run.read_metrics(),
            "eval": run.read_eval(), "problems": run.problems(), "row": compare.run_summary(run, cost=cost)}


# ==== formatting =============================================================================
def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not (isinstance(x, float) and math.isnan(x))


def _num(x: object, fmt: str = "{:.3f}") -> str:
    """A number formatted, or "–" for a missing one (None, NaN, text)."""
    return fmt.format(x) if _is_number(x) else "–"


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ==== sections ===============================================================================
def _summary_section(runs: list[dict]) -> str:
    rows = []
    for r in runs:
        row = r["row"]
        rows.append([
            f"<b>{_e(r['run_id'])}</b>", _e(row.get("model") or "?"), _e(row.get("dataset") or "?"),
            _e(f"{row.get('channels') or 'default'} / {row.get('strategy') or '?'}"),
            _e(f"{row['epochs_done']}/{row.get('epochs') or '?'}"), _e(row.get("state", "?")),
            _num(row.get("test_acc")), _num(row.get("macro_f1")), _num(row.get("best_val_acc")),
            _num(row.get("train_seconds"), "{:,.1f}"), _num(row.get("train_images_per_s"), "{:,.0f}"),
            _num(row.get("inference_images_per_s"), "{:,.0f}"),
        ])
    out = "<h2>Summary</h2>" + _table(["run", "model", "dataset", "channels / strategy", "epochs", "state", "test acc",
                                       "macro F1", "best val acc", "train time (s)", "train (img/s)", "inference (img/s)"], rows)
    broken = [r for r in runs if r["problems"]]
    if broken:
        out += "<p class='note'>" + "<br>".join(f"{_e(r['run_id'])}: {_e('; '.join(r['problems']))}"
                                                for r in broken) + "</p>"
    return out


def _cost_section(runs: list[dict], reference: str | None) -> str:
    """The Compare page's cost table (``figures.cost_table_frame`` through ``figures.readable_table``:
    the same headers, units and numbers as on screen) as HTML; with a reference, each run's
    accuracy, parameters and MACs as a percent of the reference's (seeds 000/001: reach 90 % of
    ResNet-34 at a fraction of its cost)."""
    from core.analysis.figures import ACC_PER_GMAC_DEFINITION, cost_table_frame, readable_table

    table = readable_table(cost_table_frame([r["row"] for r in runs], reference=reference))
    if reference is not None:
        table = table.rename(columns={"Accuracy (% of ref)": f"Accuracy (% of {reference})"})
    headers = list(table.columns)
    rows = [[f"<b>{_e(v)}</b>" if i == 0 else _e(v) for i, v in enumerate(rec)] for rec in table.itertuples(index=False)]
    return ("<h2>Cost</h2><p class='note'>Parameters and multiply-accumulates (MACs) for one image at the run's "
            "input shape (C x H x W), counted by core.analysis.complexity; FLOPs = 2 x MACs. "
            + _e(ACC_PER_GMAC_DEFINITION) + "</p>" + _table(headers, rows))


def _curves_section(runs: list[dict], figure: Callable) -> str:
    from core.analysis.figures import curves_figure

    out = "<h2>Learning curves</h2>"
    if not any(r["metrics"] for r in runs):
        return out + "<p class='note'>No run has a completed epoch yet.</p>"
    # One group per run: a report lists runs; the page's seed bands are an on-screen option.
    fig = curves_figure([(r["run_id"], [r["metrics"]]) for r in runs if r["metrics"]])
    return out + "<p class='note'>Dashed: train, solid: validation.</p>" + figure(fig)


def _robustness_section(runs: list[dict], figure: Callable) -> str:
    from core.analysis.figures import robustness_heatmap

    out = "<h2>Channel robustness</h2>"
    pairs = [(r["run_id"], r["eval"]) for r in runs]
    labels, combos, z = compare.robustness_by_run(pairs)
    if not labels:
        return out + "<p class='note'>No run has an eval.json with a channel-robustness row.</p>"
    chances = {compare.chance_level(r["eval"]) for r in runs if (r["eval"] or {}).get("channel_robustness")}
    chance = chances.pop() if len(chances) == 1 else None
    notes = "".join(f"<br>{_e(n)}" for n in compare.robustness_notes(pairs))
    return (out + "<p class='note'>Test accuracy of each run (row) on each channel combination (column), "
            "presented with the run's own strategy; grey: at or below chance (1 / number of classes); n/a: not "
            "testable with that strategy." + notes + "</p>"
            + figure(robustness_heatmap(labels, combos, z, chance=chance)))


def _confusion_section(runs: list[dict], figure: Callable) -> str:
    from core.analysis.figures import confusion_figure

    out = "<h2>Confusion matrices</h2>"
    with_cm = [r for r in runs if (r["eval"] or {}).get("confusion_matrix")]
    if not with_cm:
        return out + "<p class='note'>No run has been evaluated yet (python -m core.evaluate RUN_DIR).</p>"
    out += ("<p class='note'>Rows: true class, columns: predicted; colour: the fraction of the row (recall on the "
            "diagonal), written in the cells up to 10 classes; hover for the count of test images.</p>"
            "<div class='grid'>")
    for r in with_cm[:MAX_CONFUSION_FIGURES]:
        ev = r["eval"]
        fig = confusion_figure(ev["confusion_matrix"], ev.get("classes"), run_id=r["run_id"],
                               test_acc=ev.get("test_acc"))
        # A page column gives the figure its width; a flex grid in a file does not: fix it.
        fig.update_layout(width=fig.layout.height + 80)
        out += f"<div>{figure(fig)}</div>"
    out += "</div>"
    if len(with_cm) > MAX_CONFUSION_FIGURES:
        rest = ", ".join(_e(r["run_id"]) for r in with_cm[MAX_CONFUSION_FIGURES:])
        out += f"<p class='note'>Not drawn (more than {MAX_CONFUSION_FIGURES}): {rest}</p>"
    return out


def _lessons_section(runs: list[dict], suite: str | Path | None) -> str:
    """The course lessons (core.lessons) whose arms use one of the runs, each evaluated over the
    folder holding the run folders (the runs root): the Compare page's lesson blocks, as HTML.
    Empty when no run belongs to a lesson, or when the suite file cannot be loaded."""
    from core.analysis.lesson_view import ROW_HEADERS, lesson_results_for_runs, lesson_rows, lesson_title, \
        verdict_sentence

    if suite is None:
        return ""
    by_root: dict[Path, list[str]] = {}
    for r in runs:
        by_root.setdefault(Path(r["path"]).resolve().parent, []).append(r["run_id"])
    results, seen = [], set()
    try:
        for root, run_ids in by_root.items():
            for res in lesson_results_for_runs(suite, run_ids, root):
                if res["id"] not in seen:
                    seen.add(res["id"])
                    results.append(res)
    except (InvalidInputError, OSError):
        return ""
    if not results:
        return ""
    out = ("<h2>Lessons</h2><p class='note'>Findings of the course reports that these runs test "
           "(<code>python -m core.lessons</code>): the difference of the two arms the report compares, "
           "with its 95 % interval over seeds.</p>")
    for res in results:
        out += (f"<h3>{_e(lesson_title(res))}</h3><p><b>Question:</b> {_e(res['question'])}</p>"
                f"<p><b>The report found:</b> {_e(res['finding'])}</p>"
                f"<p class='verdict {_e(res['verdict'].replace(' ', '-'))}'><b>{_e(verdict_sentence(res, str(suite)))}</b></p>")
        if res.get("note"):
            out += f"<p class='note'>{_e(res['note'])}</p>"
        out += _table(list(ROW_HEADERS), [[_e(row[h]) for h in ROW_HEADERS] for row in lesson_rows(res)])
    return out


def _runs_section(runs: list[dict]) -> str:
    return "<h2>Runs</h2>" + _table(["run", "folder", "config"], [[
        f"<b>{_e(r['run_id'])}</b>", _e(r["path"]),
        "<code>" + _e(", ".join(f"{k}={v}" for k, v in r["config"].items() if k != "run")) + "</code>"]
        for r in runs])


# ==== the document ===========================================================================
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.6em} h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:.88em;margin:8px 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4} td:first-child,td:nth-child(2),td:nth-child(3),th:first-child,th:nth-child(2),th:nth-child(3){text-align:left}
.verdict{padding:6px 10px;border-left:4px solid #999} .verdict.reproduced{border-color:#2a9d2a;background:#eef8ee}
.verdict.contradicted{border-color:#c33;background:#fbeeee} .verdict.inconclusive{border-color:#d90;background:#fdf6e6}
.verdict.not-run{border-color:#37c;background:#eef3fb}
.grid{display:flex;flex-wrap:wrap;gap:12px} .note{color:#666;font-size:.9em} code{background:#f4f4f4;padding:1px 4px}
"""


def _figure_writer() -> Callable:
    """A function figure -> HTML fragment that inlines plotly.js in its first call only: one copy
    of the library for the whole file."""
    import plotly.io as pio

    first = [True]

    def figure(fig) -> str:
        out = pio.to_html(fig, full_html=False, include_plotlyjs=first[0], config={"displaylogo": False})
        first[0] = False
        return out

    return figure


def build_report_html(run_dirs: Sequence[str | Path], *, title: str | None = None, with_cost: bool = True,
                      reference: str | None = None, lessons_suite: str | Path | None = "seeds") -> str:
    """The whole report as one HTML string (plotly.js inlined once; no network needed to view it).

    run_dirs: run folders, or folders of run folders. ``reference``: a run id among them; the cost
    table then shows every run's accuracy, parameters and MACs as a percent of that run's.
    ``lessons_suite``: the suite (name or file) whose lessons get a "Lessons" section when one of
    their arms uses one of the runs (None: no such section).
    Raises ReportError for a path that is neither, or a reference that is not among the runs.
    """
    import plotly

    runs = [collect(d, with_cost=with_cost) for d in expand_run_dirs(run_dirs)]
    if reference is not None and reference not in {r["run_id"] for r in runs}:
        raise ReportError(f"reference run {reference!r} is not among the runs: "
                          f"{', '.join(r['run_id'] for r in runs)}")
    title = title or f"ArchScope report: {len(runs)} run{'s' if len(runs) != 1 else ''}"
    figure = _figure_writer()
    parts = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">Generated {_e(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))} by '
        f"<code>python -m core.report</code> from {len(runs)} run folder(s). Test accuracy and confusion "
        f"matrices come from each run's eval.json (its test split), curves from metrics.jsonl.</p>",
        _summary_section(runs),
        _lessons_section(runs, lessons_suite),
        _cost_section(runs, reference) if with_cost else "",
        _curves_section(runs, figure),
        _robustness_section(runs, figure),
        _confusion_section(runs, figure),
        _runs_section(runs),
        f"<p class='note'>plotly {plotly.__version__}</p>",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(p for p in parts if p) + "\n</body></html>\n")


# ==== command line ===========================================================================
def _main(argv: Sequence[str] | None) -> int:
    p = cli.parser("python -m core.report", __doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or folders holding run folders")
    p.add_argument("--out", default="report.html", help="HTML file to write")
    p.add_argument("--title", default=None, help="the report's heading (default: the number of runs)")
    p.add_argument("--no-cost", action="store_true", help="skip the cost table (no model is built)")
    p.add_argument("--reference", metavar="RUN_ID", help="show accuracy and cost as a percent of this run's "
                   "(e.g. small-resnet34)")
    p.add_argument("--lessons-suite", default="seeds", metavar="SUITE",
                   help="suite (name or file) whose lessons get a Lessons section when they use these runs "
                        "(default: seeds; 'none': no section)")
    args = p.parse_args(argv)
    suite = None if args.lessons_suite.lower() == "none" else args.lessons_suite
    text = build_report_html(args.run_dirs, title=args.title, with_cost=not args.no_cost, reference=args.reference,
                             lessons_suite=suite)
    from core.io import atomic_write_text

    out = Path(args.out)
    try:
        atomic_write_text(out, text)
    except OSError as exc:
        raise FailedError(f"cannot write {out}: {exc}") from None
    print(f"wrote {out} ({len(text) / 1e6:.1f} MB, {len(expand_run_dirs(args.run_dirs))} runs)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.report``: 0 written, 2 bad input (a path that is no run), 1 the file cannot be written."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
