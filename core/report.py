"""``python -m core.report RUN_DIR [RUN_DIR ...] --out report.html``: one self-contained HTML file a
student can hand in: the comparison the Compare page shows, for any set of run folders.

Sections: summary table (accuracy, macro F1, training time and speed), cost table (parameters,
MACs, FLOPs from ``core.analysis.complexity`` at the run's input shape), learning curves, confusion
matrices (row-normalised, counts on hover), and the channel-robustness heatmap (one row per run:
the accuracy on each tested channel combination).

plotly.js is inlined once (in the first figure), so the file opens offline, with no network.
A folder that holds run folders (e.g. ``checkpoints``) stands for all of them.

    from core.report import build_report_html
    html = build_report_html(["checkpoints/chan-cnn3-rgb", "checkpoints/chan-pca_cnn-random"])
"""

from __future__ import annotations

import argparse
import html
import math
import sys
import time
from pathlib import Path
from typing import Sequence

from core.errors import InvalidInputError
from core.training.run_folder import RunFolder, list_runs

COMBO_ORDER = ("RGB", "RG", "RB", "GB", "R", "G", "B", "L", "ALL")
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


def run_cost(config: dict) -> dict:
    """{params, macs, flops, input} of the run's model at its input shape, or {error} when it cannot be
    counted (unknown model, missing run section). Uses core.analysis.complexity without cross-checks."""
    from core.analysis.complexity import model_complexity

    run = config.get("run") or {}
    try:
        shape = (int(run["in_channels"]), int(run["image_size"]), int(run["image_size"]))
        rep = model_complexity(str(config["model"]), shape, int(run["num_classes"]),
                               dict(config.get("model_options") or {}), cross_check=False)
    except KeyError as exc:
        return {"error": f"config.json lacks {exc} (no run section: training never started?)"}
    except Exception as exc:  # noqa: BLE001 - a cost that cannot be counted is shown as such
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"params": rep.params_total, "macs": rep.macs, "flops": rep.flops, "input": "x".join(map(str, shape))}


def collect(run_dir: str | Path, *, with_cost: bool = True) -> dict:
    """Everything the report shows about one run folder (never raises for a broken run)."""
    run = RunFolder(run_dir)
    config = run.read_config() or {}
    metrics = run.read_metrics()
    ev = run.read_eval()
    return {
        "run_id": run.run_id, "path": str(run.path), "config": config, "status": run.read_status(),
        "metrics": metrics, "eval": ev, "problems": run.problems(),
        "cost": run_cost(config) if (with_cost and config) else {},
    }


# ==== formatting =============================================================================
def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _num(x: object, fmt: str = "{:.4f}") -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return fmt.format(x)


def _big(x: object) -> str:
    if not isinstance(x, (int, float)):
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f} {unit}"
    return f"{x:.0f}"


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _summary_rows(runs: list[dict]) -> list[list[str]]:
    rows = []
    for r in runs:
        c, ev, m = r["config"], r["eval"] or {}, r["metrics"]
        vals = [x["val_acc"] for x in m if isinstance(x.get("val_acc"), (int, float))]
        secs = sum(x.get("seconds") or 0 for x in m)
        ips = [x["images_per_s"] for x in m if isinstance(x.get("images_per_s"), (int, float))]
        rows.append([
            f"<b>{_e(r['run_id'])}</b>", _e(c.get("model", "?")), _e(c.get("dataset", "?")),
            _e(f"{c.get('channels') or 'default'} / {c.get('channel_strategy', '?')}"),
            _e(f"{len(m)}/{c.get('epochs', '?')}"), _e(r["status"].get("state", "?")),
            _num(ev.get("test_acc")), _num((ev.get("macro") or {}).get("f1")), _num(max(vals) if vals else None),
            _num(secs, "{:.0f}") if m else "–", _num(sum(ips) / len(ips) if ips else None, "{:,.0f}"),
            _num(ev.get("inference_images_per_s"), "{:,.0f}"),
        ])
    return rows


def _pct(value: object, ref: object) -> str:
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, ref))
    return f"{100.0 * value / ref:.1f} %" if ok and ref else "–"


def _cost_rows(runs: list[dict], reference: dict | None = None) -> list[list[str]]:
    """One row per run; with ``reference`` (a collected run) also accuracy, parameters and MACs as a
    percent of the reference's (seeds 000/001: reach 90 % of ResNet-34 at a fraction of its cost)."""
    ref_acc = ((reference or {}).get("eval") or {}).get("test_acc")
    ref_cost = (reference or {}).get("cost") or {}
    rows = []
    for r in runs:
        cost, ev = r["cost"], r["eval"] or {}
        acc = ev.get("test_acc")
        extra = ([_pct(acc, ref_acc), _pct(cost.get("params"), ref_cost.get("params")),
                  _pct(cost.get("macs"), ref_cost.get("macs"))] if reference is not None else [])
        if "error" in cost or not cost:
            rows.append([f"<b>{_e(r['run_id'])}</b>", _e(r["config"].get("model", "?")), "–", "–", "–", "–",
                         _num(acc), _e(cost.get("error", "not counted"))] + extra)
            continue
        per_gmac = acc / (cost["macs"] / 1e9) if isinstance(acc, (int, float)) and cost["macs"] else None
        rows.append([f"<b>{_e(r['run_id'])}</b>", _e(r["config"].get("model", "?")), _e(cost["input"]),
                     f"{cost['params']:,}", f"{cost['macs']:,}", _big(cost["flops"]), _num(acc),
                     _num(per_gmac, "{:.2f}")] + extra)
    return rows


# ==== figures ================================================================================
def _curves_figure(runs: list[dict]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, subplot_titles=("train loss", "validation loss", "train accuracy",
                                                        "validation accuracy"), vertical_spacing=0.16)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    for i, r in enumerate(runs):
        m = [x for x in r["metrics"] if isinstance(x.get("epoch"), (int, float))]
        if not m:
            continue
        colour = palette[i % len(palette)]
        for k, (key, row, col) in enumerate((("train_loss", 1, 1), ("val_loss", 1, 2), ("train_acc", 2, 1),
                                             ("val_acc", 2, 2))):
            pts = [(x["epoch"], x.get(key)) for x in m if isinstance(x.get(key), (int, float))]
            if not pts:
                continue
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                     name=r["run_id"], legendgroup=r["run_id"], showlegend=(k == 0),
                                     line={"color": colour}), row=row, col=col)
    fig.update_xaxes(title_text="epoch", row=2)
    fig.update_layout(height=620, margin={"t": 40, "l": 40, "r": 20, "b": 40}, legend={"orientation": "h", "y": -0.12})
    return fig


def _confusion_figure(r: dict):
    import plotly.graph_objects as go

    ev = r["eval"]
    cm = ev.get("confusion_matrix") or []
    classes = [str(c) for c in (ev.get("classes") or range(len(cm)))]
    norm = []
    for row in cm:
        total = sum(row)
        norm.append([v / total if total else 0.0 for v in row])
    fig = go.Figure(go.Heatmap(z=norm, x=classes, y=classes, customdata=cm, zmin=0, zmax=1, colorscale="Blues",
                               text=[[str(v) for v in row] for row in cm], texttemplate="%{text}",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} images "
                                             "(%{z:.1%} of the row)<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="true")
    fig.update_xaxes(title_text="predicted", tickangle=-40)
    side = max(320, 34 * len(classes) + 160)
    fig.update_layout(title={"text": f"{r['run_id']}: test accuracy {_num(ev.get('test_acc'))}", "font": {"size": 13}},
                      height=side, width=side + 80, margin={"t": 40, "l": 10, "r": 10, "b": 10})
    return fig


def robustness_matrix(runs: list[dict]) -> tuple[list[str], list[str], list[list[float | None]]]:
    """(row labels, tested combinations, accuracies) of the runs whose eval.json has a
    channel-robustness row; None where a combination was not tested."""
    rows, labels, combos = [], [], []
    for r in runs:
        cr = (r["eval"] or {}).get("channel_robustness") or {}
        tested = cr.get("tested") or {}
        if not tested:
            continue
        for c in tested:
            if c not in combos:
                combos.append(c)
        labels.append(f"{r['run_id']} (trained {cr.get('trained')}, {cr.get('strategy')})")
        rows.append(tested)
    order = [c for c in COMBO_ORDER if c in combos] + [c for c in combos if c not in COMBO_ORDER]
    z = [[(t.get(c) if isinstance(t.get(c), (int, float)) else None) for c in order] for t in rows]
    return labels, order, z


def _robustness_figure(labels, combos, z):
    import plotly.graph_objects as go

    text = [["n/a" if v is None else f"{v:.3f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=combos, y=labels, zmin=0, zmax=1, colorscale="Viridis", text=text,
                               texttemplate="%{text}", hovertemplate="%{y}<br>tested %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="tested combination", side="top")
    fig.update_layout(height=max(260, 34 * len(labels) + 120), margin={"t": 60, "l": 10, "r": 10, "b": 10})
    return fig


# ==== the document ===========================================================================
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.6em} h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:.88em;margin:8px 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4} td:first-child,td:nth-child(2),td:nth-child(3),th:first-child,th:nth-child(2),th:nth-child(3){text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px} .note{color:#666;font-size:.9em} code{background:#f4f4f4;padding:1px 4px}
"""


def build_report_html(run_dirs: Sequence[str | Path], *, title: str | None = None, with_cost: bool = True,
                      reference: str | None = None) -> str:
    """The whole report as one HTML string (plotly.js inlined once; no network needed to view it).

    run_dirs: run folders, or folders of run folders. ``reference``: a run id among them; the cost
    table then shows every run's accuracy, parameters and MACs as a percent of that run's.
    Raises ReportError for a path that is neither, or a reference that is not among the runs.
    """
    import plotly
    import plotly.io as pio

    dirs = expand_run_dirs(run_dirs)
    runs = [collect(d, with_cost=with_cost) for d in dirs]
    ref = None
    if reference is not None:
        ref = next((r for r in runs if r["run_id"] == reference), None)
        if ref is None:
            raise ReportError(f"reference run {reference!r} is not among the runs: "
                              f"{', '.join(r['run_id'] for r in runs)}")
    title = title or f"ArchScope report: {len(runs)} run{'s' if len(runs) != 1 else ''}"
    parts: list[str] = []
    first = [True]

    def figure(fig) -> str:
        # plotly.js goes into the first figure only: one copy for the whole file
        out = pio.to_html(fig, full_html=False, include_plotlyjs=first[0], config={"displaylogo": False})
        first[0] = False
        return out

    parts.append(f"<h1>{_e(title)}</h1>")
    parts.append(f'<p class="note">Generated {_e(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))} by '
                 f"<code>python -m core.report</code> from {len(runs)} run folder(s). Test accuracy and confusion "
                 f"matrices come from each run's eval.json (its test split), curves from metrics.jsonl.</p>")
    parts.append("<h2>Summary</h2>")
    parts.append(_table(["run", "model", "dataset", "channels / strategy", "epochs", "state", "test acc",
                         "macro F1", "best val acc", "train s", "train img/s", "inference img/s"],
                        _summary_rows(runs)))
    broken = [r for r in runs if r["problems"]]
    if broken:
        parts.append("<p class='note'>" + "<br>".join(f"{_e(r['run_id'])}: {_e('; '.join(r['problems']))}"
                                                      for r in broken) + "</p>")
    if with_cost:
        parts.append("<h2>Cost</h2>")
        parts.append("<p class='note'>Parameters and multiply-accumulates (MACs) for one image at the run's input "
                     "shape (C x H x W), counted by core.analysis.complexity; FLOPs = 2 x MACs.</p>")
        ref_cols = [f"acc % of {reference}", "params %", "MACs %"] if ref is not None else []
        parts.append(_table(["run", "model", "input", "params", "MACs", "FLOPs", "test acc", "acc per GMAC"]
                            + ref_cols, _cost_rows(runs, ref)))
    parts.append("<h2>Learning curves</h2>")
    if any(r["metrics"] for r in runs):
        parts.append(figure(_curves_figure(runs)))
    else:
        parts.append("<p class='note'>No run has a completed epoch yet.</p>")
    labels, combos, z = robustness_matrix(runs)
    parts.append("<h2>Channel robustness</h2>")
    if labels:
        parts.append("<p class='note'>Test accuracy of each run (row) on each channel combination (column), "
                     "presented with the run's own strategy; n/a: not testable with that strategy (a fixed-input "
                     "model trained with 'drop' only takes its own channel count).</p>")
        parts.append(figure(_robustness_figure(labels, combos, z)))
    else:
        parts.append("<p class='note'>No run has an eval.json with a channel-robustness row.</p>")
    parts.append("<h2>Confusion matrices</h2>")
    with_cm = [r for r in runs if (r["eval"] or {}).get("confusion_matrix")]
    if with_cm:
        parts.append("<p class='note'>Rows: true class, columns: predicted; colour is the fraction of the row, "
                     "the number the count of test images.</p><div class='grid'>")
        for r in with_cm[:MAX_CONFUSION_FIGURES]:
            parts.append(f"<div>{figure(_confusion_figure(r))}</div>")
        parts.append("</div>")
        if len(with_cm) > MAX_CONFUSION_FIGURES:
            rest = ", ".join(_e(r["run_id"]) for r in with_cm[MAX_CONFUSION_FIGURES:])
            parts.append(f"<p class='note'>Not drawn (more than {MAX_CONFUSION_FIGURES}): {rest}</p>")
    else:
        parts.append("<p class='note'>No run has been evaluated yet (python -m core.evaluate RUN_DIR).</p>")
    parts.append("<h2>Runs</h2>")
    parts.append(_table(["run", "folder", "config"], [[
        f"<b>{_e(r['run_id'])}</b>", _e(r["path"]),
        "<code>" + _e(", ".join(f"{k}={v}" for k, v in r["config"].items() if k != "run")) + "</code>"]
        for r in runs]))
    parts.append(f"<p class='note'>plotly {plotly.__version__}</p>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.report", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or folders holding run folders")
    p.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--title", default=None)
    p.add_argument("--no-cost", action="store_true", help="skip the cost table (no model is built)")
    p.add_argument("--reference", metavar="RUN_ID", help="show accuracy and cost as a percent of this run's "
                   "(e.g. small-resnet34)")
    args = p.parse_args(argv)
    try:
        text = build_report_html(args.run_dirs, title=args.title, with_cost=not args.no_cost,
                                 reference=args.reference)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from core.io import atomic_write_text

    out = Path(args.out)
    try:
        atomic_write_text(out, text)
    except OSError as exc:
        print(f"error: cannot write {out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({len(text) / 1e6:.1f} MB, {len(expand_run_dirs(args.run_dirs))} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
