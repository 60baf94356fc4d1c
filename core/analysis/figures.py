"""Every plotly figure ArchScope draws, built once: the dashboard pages and the HTML report
(core/report.py) call these functions, so a chart on a page and the same chart in a report can
never differ (labels, colours, margins).

Pure functions: numbers, lists, numpy arrays or DataFrames in, a ``plotly.graph_objects.Figure``
out (or a DataFrame, for tables both screens show). No Streamlit here; no file is read here.

    fig = confusion_figure(ev["confusion_matrix"], ev["classes"], run_id="cnn2_rg", test_acc=0.81)
    fig = robustness_heatmap(*compare.robustness_by_run([("cnn2_rg", ev)]))
    fig = curves_figure([("cnn2 (+2 seeds)", [metrics_a, metrics_b, metrics_c])])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.analysis import compare

# One palette for every multi-run chart, so a run keeps its colour from one chart to the next.
PALETTE = ("#3b6fd8", "#e4572e", "#17bebb", "#ffc914", "#76b041", "#8e44ad", "#2e282a", "#f18f01",
           "#bcbd22", "#8c564b")
# Beyond the palette a run keeps a palette colour but gets the next dash and marker, so no two of
# up to len(PALETTE) x len(RUN_DASHES) runs look alike.
RUN_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
RUN_MARKERS = ("circle", "square", "diamond", "triangle-up", "x")
# Numbers inside heatmap cells stay readable (and cheap to draw) up to this many classes; hover
# always shows them.
MAX_CLASSES_WITH_CELL_TEXT = 20
# Room for a title below plotly's mode bar (which floats over the top ~30 px of the figure); axis
# labels get their room from automargin, never from a fixed margin.
_MARGIN = {"l": 10, "r": 10, "t": 64, "b": 10}
MISSING = "–"


@dataclass(frozen=True)
class RunStyle:
    """How one run is drawn in every figure of a page and of the report."""

    colour: str
    dash: str
    marker: str


def run_styles(run_ids: Sequence[str]) -> dict[str, RunStyle]:
    """One style per run, in the order given: palette colours first, then the same colours with the
    next dash and marker. Pass the page's whole selection once and look runs up by id, so a run has
    the same style in every figure even when a figure leaves some runs out."""
    out: dict[str, RunStyle] = {}
    for i, rid in enumerate(dict.fromkeys(str(r) for r in run_ids)):
        cycle = i // len(PALETTE)
        out[rid] = RunStyle(PALETTE[i % len(PALETTE)], RUN_DASHES[cycle % len(RUN_DASHES)],
                            RUN_MARKERS[cycle % len(RUN_MARKERS)])
    return out


def _style_of(styles: dict[str, RunStyle] | None, name: str, index: int) -> RunStyle:
    if styles and name in styles:
        return styles[name]
    return list(run_styles([str(k) for k in range(index + 1)]).values())[index]


# ---- numbers as text -------------------------------------------------------------------------
def format_count(value: object) -> str:
    """An integer count in full with thousands separators ("21,290,828"); "–" when missing.

    The one convention for params, MACs and FLOPs on every page and in the report: formatted as
    text, a table cell cannot drop leading digits and the CSV still holds the exact integer."""
    return f"{int(round(float(value))):,}" if _is_number(value) else MISSING


def format_number(value: object, fmt: str = "{:.3f}") -> str:
    """``value`` through ``fmt``, or "–" when missing (None, NaN, text)."""
    return fmt.format(value) if _is_number(value) else MISSING


def decimals_frame(table: pd.DataFrame, fmt: str = "{:.3f}") -> pd.DataFrame:
    """``table`` with every float column as text through ``fmt`` ("0.150", never "0.15" beside
    "0.437"), missing values as "–"; other columns as they are. For the screen: a CSV keeps the
    numbers."""
    out = table.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = [format_number(v, fmt) for v in out[col]]
    return out


def text_column_width(values: Sequence[object], header: str, px_per_char: int = 8, padding: int = 28) -> int:
    """Pixels a table column needs to show its longest formatted value (or header) in full."""
    longest = max([len(str(v)) for v in values] + [len(header)])
    return longest * px_per_char + padding


def chance_accuracy(n_classes: object) -> float | None:
    """1 / number of classes: the accuracy of guessing (None when the count is unknown)."""
    return 1.0 / int(n_classes) if _is_number(n_classes) and int(n_classes) > 0 else None


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and not (isinstance(v, (float, np.floating)) and math.isnan(v))


# One row of a horizontal legend under a figure, in px.
LEGEND_ROW_PX = 26
# The curves figure's height (four panels) without its legend.
CURVES_PLOT_PX = 500


def with_legend(plot_px: int, entries: int, per_row: int) -> int:
    """A figure's height with a horizontal legend of ``entries`` below its plot: the legend takes
    its rows from the figure's height, so the figure grows by them and 20 runs keep a plot as
    tall as 4 do (at a fixed height, 20 runs squashed the plot to about 100 px at 1000 px)."""
    return plot_px + LEGEND_ROW_PX * -(-max(entries, 1) // per_row)


def _finish(fig: go.Figure, *, height: int, title: str | None = None, **layout) -> go.Figure:
    """Shared layout: small margins, but automargin on every axis so tick labels (class names,
    run names) are never cut off."""
    # The title sits just above the plot area, below the mode bar's strip, so the bar never covers it.
    title_layout = {"title": {"text": title, "font": {"size": 14}, "x": 0, "xanchor": "left", "xref": "paper",
                              "y": 1, "yref": "paper", "yanchor": "bottom", "pad": {"b": 8}}} if title else {}
    fig.update_layout(height=height, margin=_MARGIN, **title_layout, **layout)
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def cell_text(n_classes: int, template: str) -> str | None:
    """A texttemplate for heatmap cells while there are few enough classes to read it, else None."""
    return template if n_classes <= MAX_CLASSES_WITH_CELL_TEXT else None


# ---- learning curves --------------------------------------------------------------------------
def curves_figure(groups: Sequence[tuple[str, Sequence[list[dict]]]],
                  styles: dict[str, RunStyle] | None = None) -> go.Figure:
    """Loss and accuracy per epoch, train (top row) and validation (bottom row): one style per group.

    groups: (name, [metrics.jsonl rows of each run in the group]). A group of several runs (runs
    that differ only in seed) is drawn as its mean with a band of ± one standard deviation.
    styles: ``run_styles`` of the page (looked up by group name, else by the group's first run
    when the name is "run (+2 seeds)"); default: ``run_styles`` of the group names. Train and
    validation sit in separate rows, so a run's line keeps one colour and dash in all four panels.
    The figure has no trace when no run has a finished epoch (check ``fig.data``).
    """
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("Train loss", "Train accuracy", "Validation loss", "Validation accuracy"))
    for gi, (name, metric_lists) in enumerate(groups):
        style = _style_of(styles, name.split(" (+")[0] if styles and name not in styles else name, gi)
        first = True
        for row, split in ((1, "train"), (2, "val")):
            for col, what in ((1, "loss"), (2, "acc")):
                df = compare.curves_mean_std(metric_lists, f"{split}_{what}")
                if df.empty:
                    continue
                if len(metric_lists) > 1:
                    _add_band(fig, df, style.colour, row=row, col=col)
                fig.add_trace(go.Scatter(x=df["epoch"], y=df["mean"], mode="lines+markers", name=name,
                                         line={"color": style.colour, "dash": style.dash},
                                         marker={"symbol": style.marker, "size": 7},
                                         legendgroup=name, showlegend=first), row=row, col=col)
                first = False
    fig.update_xaxes(title_text="epoch", row=2)
    fig.update_yaxes(title_text="loss", col=1)
    fig.update_yaxes(title_text="accuracy", col=2)
    # two names per legend row at 1000 px ("run (+2 seeds)" is long)
    return _finish(fig, height=with_legend(CURVES_PLOT_PX, len(groups), per_row=2),
                   legend={"orientation": "h", "y": -0.15})


def _add_band(fig: go.Figure, df: pd.DataFrame, colour: str, row: int, col: int) -> None:
    upper, lower = df["mean"] + df["std"], df["mean"] - df["std"]
    fig.add_trace(go.Scatter(x=list(df["epoch"]) + list(df["epoch"])[::-1], y=list(upper) + list(lower)[::-1],
                             fill="toself", line={"width": 0}, fillcolor=colour, opacity=0.15, showlegend=False,
                             hoverinfo="skip"), row=row, col=col)


def live_curves_figure(metrics: list[dict], steps: list[dict]) -> go.Figure:
    """The Train page's live chart of one run: per-batch train loss (steps.jsonl), per-epoch train
    and validation loss, and validation accuracy on a second axis, all against the global step.
    No trace when the run has logged nothing yet (check ``fig.data``)."""
    fig = go.Figure()
    if steps:
        fig.add_trace(go.Scatter(x=[s.get("global_step", i) for i, s in enumerate(steps)],
                                 y=[s.get("loss") for s in steps], mode="lines", name="train loss (batches)",
                                 line={"color": "#9db4e8"}))
    if metrics:
        # Epochs are placed on the step axis so batch and epoch points share one x scale.
        per_epoch = (steps[-1].get("global_step", len(steps)) / max(1, len(metrics))) if steps else 1
        xs = [m.get("epoch", i + 1) * per_epoch for i, m in enumerate(metrics)]
        for col, colour in (("train_loss", "#3b6fd8"), ("val_loss", "#e4572e")):
            fig.add_trace(go.Scatter(x=xs, y=[m.get(col) for m in metrics], mode="lines+markers", name=col,
                                     line={"color": colour}))
        fig.add_trace(go.Scatter(x=xs, y=[m.get("val_acc") for m in metrics], mode="lines+markers",
                                 name="val_acc", yaxis="y2", line={"color": "#17bebb", "dash": "dot"}))
    return _finish(fig, height=300, xaxis_title="step", yaxis_title="loss",
                   yaxis2={"title": "accuracy", "overlaying": "y", "side": "right", "range": [0, 1],
                           "showgrid": False},
                   legend={"orientation": "h", "y": 1.15})


# ---- confusion matrices -----------------------------------------------------------------------
CONFUSION_CLICK_TRACE = "click a confusion"


def confusion_figure(cm: Sequence[Sequence[float]] | np.ndarray, classes: Sequence[str] | None, *,
                     run_id: str, test_acc: float | None = None, normalise: bool = True,
                     zmax: float | None = None, show_scale: bool = True, clickable: bool = False) -> go.Figure:
    """One run's confusion matrix [K, K] (rows true, columns predicted), class names on both axes.

    normalise: colour and numbers are each row's fraction (recall on the diagonal), else counts.
    Every class gets its tick label; up to ``MAX_CLASSES_WITH_CELL_TEXT`` classes each cell shows
    its number; hover always shows the count and the fraction. The height depends only on the
    number of classes, so panels of runs on one dataset are the same size. The title names the run
    and its test accuracy. zmax: the colour scale's top (pass the largest count to share one scale).
    clickable: each confusion also gets a clickable marker (see ``clicked_confusion``).
    """
    counts = np.asarray(cm, dtype=float)
    fractions = compare.normalize_confusion(counts, "true")
    names = [str(c) for c in classes] if classes else [str(k) for k in range(len(counts))]
    z = fractions if normalise else counts
    top = zmax if zmax is not None else (1.0 if normalise else float(counts.max() or 1.0))
    title = f"{run_id}: test accuracy {test_acc:.3f}" if _is_number(test_acc) else run_id
    # Empty cells stay blank: the few confusions stand out instead of a sea of "0.00".
    text = [["" if c == 0 else (f"{v:.2f}" if normalise else f"{v:.0f}") for c, v in zip(crow, zrow)]
            for crow, zrow in zip(counts, z)]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, zmin=0, zmax=top, colorscale="Blues", showscale=show_scale,
        customdata=np.dstack([counts, fractions]), text=text,
        texttemplate=cell_text(len(names), "%{text}"),
        textfont={"size": 12 if len(names) <= 10 else 9},
        colorbar={"title": "fraction" if normalise else "images", "thickness": 12},
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata[0]:.0f} images "
                      "(%{customdata[1]:.1%} of the row)<extra></extra>"))
    if clickable:
        # Plotly heatmaps send no selection events to Streamlit (streamlit/streamlit#8760): an almost
        # transparent square marker over each confusion (off the diagonal, non-zero) takes the click.
        cells = compare.confusions(counts)
        fig.add_trace(go.Scatter(
            x=[names[p] for _, p, _ in cells], y=[names[t] for t, _, _ in cells], mode="markers",
            marker={"symbol": "square", "size": 18, "opacity": 0.01, "color": "#000000"}, showlegend=False,
            name=CONFUSION_CLICK_TRACE, customdata=[[n, fractions[t][p]] for t, p, n in cells],
            hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata[0]:.0f} images "
                          "(%{customdata[1]:.1%} of the row)<br>click: show these images<extra></extra>"))
    # Categorical axes skip labels when crowded: list every class explicitly.
    fig.update_yaxes(autorange="reversed", title_text="true", tickmode="array", tickvals=names, ticktext=names)
    fig.update_xaxes(title_text="predicted", tickangle=-45, tickmode="array", tickvals=names, ticktext=names)
    return _finish(fig, height=max(420, 26 * len(names) + 260), title=title)


def clicked_confusion(points: Sequence[dict], classes: Sequence[str]) -> tuple[int, int] | None:
    """(true, predicted) class indices of the confusion a user clicked in ``confusion_figure(...,
    clickable=True)`` (Streamlit's selection points carry the marker's x = predicted, y = true
    names), or None when nothing, or something else, was clicked."""
    names = [str(c) for c in classes]
    for pt in points or []:
        x, y = pt.get("x"), pt.get("y")
        if x in names and y in names and x != y:
            return names.index(y), names.index(x)
    return None


def confusion_difference_figure(diff: np.ndarray, classes: Sequence[str], *, run_a: str, run_b: str) -> go.Figure:
    """Row-normalised confusion difference A − B [K, K] on a diverging scale centred on 0."""
    names = [str(c) for c in classes]
    lim = max(float(np.abs(diff).max()), 1e-9)
    fig = go.Figure(go.Heatmap(z=diff, x=names, y=names, zmin=-lim, zmax=lim, colorscale="RdBu",
                               texttemplate=cell_text(len(names), "%{z:+.2f}"),
                               hovertemplate="true %{y}<br>predicted %{x}<br>A − B: %{z:+.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="true")
    fig.update_xaxes(title_text="predicted", tickangle=-40)
    return _finish(fig, height=max(420, 30 * len(names) + 180), title=f"{run_a} − {run_b} (row-normalised)")


def class_change_figure(change: pd.DataFrame) -> go.Figure:
    """Per-class accuracy change A − B in percentage points (``confusion_difference``'s table)."""
    fig = go.Figure(go.Bar(x=change["class"].astype(str), y=100 * change["change"],
                           marker_color=np.where(change["change"] >= 0, "#17bebb", "#e4572e")))
    return _finish(fig, height=420, title="Per-class accuracy change, A − B (percentage points)",
                   xaxis_title="class", yaxis_title="points")


F1_BARS_MAX_RUNS = 6     # beyond this, grouped bars are a few pixels wide: a runs x classes heatmap


# Cell text of the robustness and many-run F1 heatmaps, in px: plotly's own size shrinks to fit
# the cell, down to 6-7 px at 1000 px wide (unreadable); a fixed 10 px still fits "≈ chance" in a
# 7-column heatmap's cell there.
HEATMAP_TEXT_PX = 10


def per_class_f1_figure(per_class: pd.DataFrame, styles: dict[str, RunStyle] | None = None) -> go.Figure:
    """F1 per class; ``per_class`` has columns run, class, f1. Up to ``F1_BARS_MAX_RUNS`` runs:
    grouped bars, one style per run (its colour; beyond the palette a hatch pattern). More runs
    (a 20-run course group gave 240 bars of 2 px): a heatmap, one row per run, its F1 written in
    each cell."""
    run_ids = list(dict.fromkeys(per_class["run"].astype(str)))
    if len(run_ids) > F1_BARS_MAX_RUNS:
        table = per_class.assign(run=per_class["run"].astype(str), cls=per_class["class"].astype(str)) \
            .pivot_table(index="run", columns="cls", values="f1", aggfunc="first", sort=False)
        table = table.reindex(index=run_ids, columns=list(dict.fromkeys(per_class["class"].astype(str))))
        values = [[float(v) if _is_number(v) else None for v in row] for row in table.to_numpy()]
        fig = go.Figure(go.Heatmap(z=values, x=list(table.columns), y=run_ids, zmin=0, zmax=1, colorscale="Blues",
                                   text=[["–" if v is None else f"{v:.2f}" for v in row] for row in values],
                                   texttemplate="%{text}", xgap=1, ygap=1, colorbar={"title": "F1", "thickness": 14},
                                   textfont={"size": HEATMAP_TEXT_PX},
                                   hovertemplate="%{y}<br>class %{x}: F1 %{z:.3f}<extra></extra>"))
        fig.update_yaxes(autorange="reversed", title_text="run")
        fig.update_xaxes(title_text="class")       # plotly turns the labels as far as they need (30 or 90 degrees)
        return _finish(fig, height=max(300, 26 * len(run_ids) + 160))
    patterns = ("", "/", ".", "x", "-")
    bars = []
    for i, (rid, g) in enumerate(per_class.groupby("run", sort=False)):
        style = _style_of(styles, str(rid), i)
        hatch = patterns[RUN_DASHES.index(style.dash) % len(patterns)]
        bars.append(go.Bar(name=str(rid), x=g["class"].astype(str), y=g["f1"], legendgroup=str(rid),
                           marker={"color": style.colour, "pattern": {"shape": hatch}}))
    return _finish(go.Figure(bars), height=340, barmode="group", xaxis_title="class", yaxis_title="F1")


# ---- channel robustness -----------------------------------------------------------------------
def robustness_heatmap(rows: Sequence[str], tested: Sequence[str], z: Sequence[Sequence[float | None]], *,
                       title: str | None = None, row_title: str = "trained on", chance: float | None = None,
                       not_tested: str = "not testable (see the note)") -> go.Figure:
    """Accuracy of each row (a run: its model and trained combination) on each tested combination.

    z: [len(rows), len(tested)] accuracies in [0, 1]; None / NaN cells read "n/a" and hover
    ``not_tested``. chance: 1 / number of classes: the colour scale is grey from 0 to chance (so a
    cell at or below guessing is visibly grey, whatever its exact value), marked "chance" on the
    colour bar, and cells within ``compare.AT_CHANCE_MARGIN`` of it read "≈ chance".
    Feed it ``compare.robustness_by_run(...)``.
    """
    values = [[float(v) if _is_number(v) else None for v in row] for row in z]
    at_chance = (chance + compare.AT_CHANCE_MARGIN) if chance is not None else None

    def label(v: float | None) -> str:
        if v is None:
            return "n/a"
        # the note in a smaller line under the number: it fits a cell of a 7-column heatmap at 1000 px
        return f"{v:.2f}" + (f"<br><span style='font-size:{HEATMAP_TEXT_PX - 2}px'>≈ chance</span>"
                             if at_chance is not None and v <= at_chance else "")

    text = [[label(v) for v in row] for row in values]
    hover = [[not_tested if v is None else f"{v:.3f}" for v in row] for row in values]
    colorbar = {"title": "accuracy", "thickness": 14}
    scale: str | list = "Viridis"
    if chance is not None and 0 < chance < 1:
        scale = _scale_grey_below(chance)
        colorbar.update(tickmode="array", tickvals=[0, chance, 0.25, 0.5, 0.75, 1.0],
                        ticktext=["0", f"chance {chance:.2f}", "0.25", "0.50", "0.75", "1"])
    fig = go.Figure(go.Heatmap(z=values, x=list(tested), y=[str(r) for r in rows], zmin=0, zmax=1,
                               colorscale=scale, text=text, texttemplate="%{text}", customdata=hover,
                               colorbar=colorbar, xgap=1, ygap=1, textfont={"size": HEATMAP_TEXT_PX},
                               hovertemplate="%{y}<br>tested on %{x}: %{customdata}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text=row_title)
    fig.update_xaxes(title_text="tested on")
    return _finish(fig, height=max(300, 44 * len(values) + 170), title=title)


def _scale_grey_below(chance: float) -> list:
    """A colour scale on [0, 1]: grey up to ``chance``, then Viridis from chance to 1."""
    from plotly.colors import sequential

    viridis = sequential.Viridis
    steps = [[chance + (1 - chance) * i / (len(viridis) - 1), c] for i, c in enumerate(viridis)]
    return [[0.0, "#bdbdbd"], [chance, "#bdbdbd"], *steps]


# ---- cost ------------------------------------------------------------------------------------
def cost_table_frame(rows: Sequence[dict], reference: str | None = None, target: float | None = None) -> pd.DataFrame:
    """The cost-and-accuracy table both the Compare page and the report show: ``compare.cost_table``
    plus the input shape each cost was counted at and, for a run whose cost cannot be counted,
    why (column ``cost_note``). ``rows`` are ``compare.run_summary`` rows."""
    table = compare.cost_table(rows, reference=reference, target=target)
    by_id = {r.get("run_id"): r for r in rows}
    table.insert(2, "input", [by_id.get(rid, {}).get("input") for rid in table["run_id"]])
    table["cost_note"] = [by_id.get(rid, {}).get("cost_error") for rid in table["run_id"]]
    return table


# What a person reads for each cost-table column: (header with unit, how the value is written).
COST_COLUMNS: dict[str, tuple[str, object]] = {
    "run_id": ("Run", str),
    "model": ("Model", str),
    "input": ("Input (C x H x W)", str),
    "params": ("Params", format_count),
    "macs": ("MACs", format_count),
    "flops": ("FLOPs", format_count),
    "train_seconds": ("Train time (s)", lambda v: format_number(v, "{:,.1f}")),
    "inference_images_per_s": ("Inference (img/s)", lambda v: format_number(v, "{:,.0f}")),
    "test_acc": ("Test accuracy", lambda v: format_number(v, "{:.3f}")),
    "acc_per_gmac": ("Accuracy points per GMAC", lambda v: format_number(v, "{:,.1f}")),
    "acc_pct_of_ref": ("Accuracy (% of ref)", lambda v: format_number(v, "{:.1f}")),
    "params_pct_of_ref": ("Params (% of ref)", lambda v: format_number(v, "{:.1f}")),
    "macs_pct_of_ref": ("MACs (% of ref)", lambda v: format_number(v, "{:.1f}")),
    "reaches_target": ("Reaches target", lambda v: MISSING if v is None or v != v else ("yes" if v else "no")),
    "cost_note": ("Why no cost", lambda v: v or ""),
}
LEADERBOARD_DISPLAY: dict[str, tuple[str, object]] = {
    **{k: COST_COLUMNS[k] for k in ("run_id", "model", "params", "macs", "train_seconds", "inference_images_per_s",
                                    "test_acc")},
    "dataset": ("Dataset", str),
    "chance_acc": ("Chance accuracy", lambda v: format_number(v, "{:.3f}")),
    "channels": ("Channels", lambda v: v or MISSING),
    "strategy": ("Strategy", lambda v: v or MISSING),
    "state": ("State", str),
    "weights": ("Weights", str),
    "best_val_acc": ("Best val accuracy", lambda v: format_number(v, "{:.3f}")),
    "train_images_per_s": ("Train (img/s)", lambda v: format_number(v, "{:,.0f}")),
}
# The Architecture page's per-layer table (core.analysis.complexity's layer records).
LAYER_COLUMNS: dict[str, tuple[str, object]] = {
    "name": ("Layer", str), "type": ("Type", str), "output_shape": ("Output shape", str),
    "params": ("Params", format_count), "macs": ("MACs", format_count),
    "elementwise_ops": ("Element-wise ops", format_count), "flagged": ("Flagged", lambda v: "yes" if v else ""),
    "counted_by": ("Counted by", lambda v: v or ""), "formula": ("Formula", lambda v: v or ""),
    "note": ("Note", lambda v: v or ""),
}
ACC_PER_GMAC_DEFINITION = ("Accuracy points per GMAC = 100 x test accuracy / (MACs of one image / 10^9): "
                           "the test-accuracy percentage bought per billion multiply-accumulates.")


def readable_table(table: pd.DataFrame, columns: dict[str, tuple[str, object]] = COST_COLUMNS) -> pd.DataFrame:
    """``table`` (e.g. ``cost_table_frame``) as the text a person reads: human headers with units,
    counts in full with thousands separators, sensible decimals. Counts become text on purpose: a
    text cell is never clipped to its last digits, and the CSV of the raw table keeps the integers.
    Columns not in ``columns`` are kept as they are."""
    out = pd.DataFrame(index=table.index)
    for col in table.columns:
        header, fmt = columns.get(col, (col, None))
        out[header] = [fmt(v) for v in table[col]] if fmt is not None else table[col]
    return out


def format_si(value: float) -> str:
    """1.5e7 -> '15M', 2e9 -> '2G', 950 -> '950': up to 3 significant digits and an SI suffix."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


LOG_TICK_MANTISSAS = ((1,), (1, 2, 5), (1, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9))


def log_ticks(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Tick values and the log10 axis range for positive ``values`` on a log axis: the coarsest of
    1 / 1-2-5 / 1-2-3-5-7 / finer steps per decade that puts at least three ticks in the padded
    range; on a narrower range (costs a few percent apart, e.g. 10.3M and 10.4M MACs) an even
    1-2-5 step across it; for a single cost, that cost."""
    logs = [math.log10(float(v)) for v in values]
    lo, hi = min(logs), max(logs)
    pad = max(0.06 * (hi - lo), 0.05)
    a, b = lo - pad, hi + pad
    for mantissas in LOG_TICK_MANTISSAS:
        ticks = [m * 10.0 ** k for k in range(math.floor(a), math.ceil(b) + 1) for m in mantissas
                 if a <= math.log10(m * 10.0 ** k) <= b]
        if len(ticks) >= 3:
            return ticks, [a, b]
    if lo == hi:
        return [float(values[0])], [a, b]
    # Writing the costs themselves would put their labels on top of each other: ~5 even steps.
    low, high = 10.0 ** a, 10.0 ** b
    raw = (high - low) / 5
    step = next(m * 10.0 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)
                if m * 10.0 ** math.floor(math.log10(raw)) >= raw)
    return [k * step for k in range(math.ceil(low / step), math.floor(high / step) + 1)], [a, b]


# The accuracy-versus-cost figure's height without its legend.
PARETO_PLOT_PX = 400


def pareto_figure(run_ids: Sequence[str], costs: Sequence[float], accuracies: Sequence[float], *,
                  cost_label: str, log_x: bool = True, target: tuple[float, str] | None = None,
                  styles: dict[str, RunStyle] | None = None) -> go.Figure:
    """Test accuracy against a cost, one marker per run in its ``run_styles`` style, named in the
    legend and on hover (labels written on the plot would pile up and be cut at the edges), the
    Pareto front as a step line. Runs missing either value are left out. target: (accuracy,
    label) drawn as a dotted line, e.g. 90 % of the reference run's accuracy.
    """
    df = pd.DataFrame({"run": [str(r) for r in run_ids],
                       "cost": pd.to_numeric(pd.Series(list(costs)), errors="coerce"),
                       "acc": pd.to_numeric(pd.Series(list(accuracies)), errors="coerce")}).dropna()
    df["front"] = compare.pareto_front(df["cost"], df["acc"]) if len(df) else []
    styles = styles or run_styles(list(df["run"]))
    fig = go.Figure()
    for i, r in enumerate(df.itertuples()):
        style = _style_of(styles, r.run, i)
        fig.add_trace(go.Scatter(x=[r.cost], y=[r.acc], mode="markers", name=r.run, legendgroup=r.run,
                                 marker={"size": 12, "color": style.colour, "symbol": style.marker,
                                         "line": {"color": "white", "width": 1}},
                                 hovertemplate=f"<b>{r.run}</b><br>{cost_label}: %{{x:,.4g}}<br>"
                                               "test accuracy: %{y:.3f}<extra></extra>"))
    front = df[df["front"]].sort_values("cost")
    fig.add_trace(go.Scatter(x=front["cost"], y=front["acc"], mode="lines", name="Pareto front",
                             line={"color": "#888888", "shape": "hv", "width": 1.5}, hoverinfo="skip"))
    if target is not None and _is_number(target[0]):
        fig.add_hline(y=float(target[0]), line_dash="dot", annotation_text=target[1],
                      annotation_position="bottom right")
    if log_x and len(df) and (df["cost"] > 0).all():
        # Plotly's own log ticks either label every digit (collisions in a narrow window) or, with
        # dtick "D2", none at all when the costs span less than a decade (10.3M to 18M): a student
        # then reads no number on the axis. Explicit ticks, at least two on any span.
        ticks, axis_range = log_ticks(df["cost"])
        fig.update_xaxes(tickvals=ticks, ticktext=[format_si(t) for t in ticks], range=axis_range)
    # three run names fit a legend row at 1000 px (+1 entry: the Pareto front)
    return _finish(fig, height=with_legend(PARETO_PLOT_PX, len(df) + 1, per_row=3), xaxis_title=cost_label,
                   yaxis_title="test accuracy", xaxis_type="log" if log_x else "linear",
                   # below the plot: a legend at the side takes half the width of a narrow window
                   legend={"orientation": "h", "y": -0.22, "title": {"text": "run"}})


def largest_layers_figure(layers: pd.DataFrame, n: int = 15) -> go.Figure | None:
    """Horizontal bars of the ``n`` layers with the most MACs (a per-layer complexity table with
    columns name, macs); None when no layer has MACs."""
    top = layers[layers["macs"] > 0].nlargest(n, "macs")
    if top.empty:
        return None
    fig = go.Figure(go.Bar(x=top["macs"], y=top["name"], orientation="h", marker_color=PALETTE[0],
                           hovertemplate="%{y}: %{x:,} MACs<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickformat="~s")
    return _finish(fig, height=360, title="Largest layers by MACs (one image)", xaxis_title="MACs")


# ---- predictions -----------------------------------------------------------------------------
def top_k_figure(top: Sequence[dict], truth: str | None = None) -> go.Figure:
    """Horizontal probability bars of one image's top-k classes (``top``: [{class, prob}], best
    first). With the true label: a wrong first guess is red, the true class teal."""
    wrong = truth is not None and top and top[0]["class"] != truth
    colours = ["#e4572e" if (wrong and j == 0) else ("#17bebb" if t["class"] == truth else PALETTE[0])
               for j, t in enumerate(top)]
    fig = go.Figure(go.Bar(x=[t["prob"] for t in top], y=[str(t["class"]) for t in top], orientation="h",
                           marker_color=colours, text=[f"{t['prob']:.1%}" for t in top]))
    fig.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10})
    fig.update_xaxes(range=[0, 1], title_text="probability", automargin=True)
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_layout(height=60 + 28 * len(top))
    return fig


# ---- explanations ----------------------------------------------------------------------------
def channel_attention_figure(weights: np.ndarray, name: str) -> go.Figure:
    """Bars of one channel-attention tap's weight per channel."""
    v = np.asarray(weights).reshape(-1)
    fig = go.Figure(go.Bar(x=list(range(len(v))), y=v))
    return _finish(fig, height=260, title=f"channel attention in {readable_layer_name(name)}", xaxis_title="channel",
                   yaxis_title="weight")


def kernel_attention_figure(rows: Sequence[dict], run_id: str) -> go.Figure:
    """Softmax weight of each kernel of each dynamic-convolution layer, per channel combination.

    rows: ``explain.kernel_attention_by_combo`` records (combo, layer, kernel, weight); one panel
    per layer, one bar colour per kernel."""
    df = pd.DataFrame(list(rows))
    layers = list(dict.fromkeys(df["layer"]))
    kernels = list(dict.fromkeys(df["kernel"]))
    # One layer: its name goes in the title (a panel title would sit on top of the figure's own).
    titles = [readable_layer_name(x) for x in layers] if len(layers) > 1 else None
    fig = make_subplots(rows=1, cols=len(layers), subplot_titles=titles, shared_yaxes=True)
    for li, layer in enumerate(layers):
        for ki, kernel in enumerate(kernels):
            part = df[(df["layer"] == layer) & (df["kernel"] == kernel)]
            fig.add_trace(go.Bar(x=part["combo"], y=part["weight"], name=f"kernel {kernel}", legendgroup=str(kernel),
                                 marker_color=PALETTE[ki % len(PALETTE)], showlegend=li == 0), row=1, col=li + 1)
    fig.update_xaxes(title_text="channel combination")
    fig.update_yaxes(title_text="softmax weight", col=1)
    if len(layers) == 1:
        return _finish(fig, height=340, title=f"{run_id}: kernel attention in {readable_layer_name(layers[0])}",
                       barmode="group")
    fig = _finish(fig, height=360, title=f"{run_id}: kernel attention", barmode="group")
    # the panels' titles take the line just above the plots: the figure's title goes one line higher
    fig.update_layout(title_pad_b=30, margin_t=_MARGIN["t"] + 24)
    return fig


def deform_points_figure(seen: np.ndarray, regular: np.ndarray, deformed: np.ndarray,
                         scale: tuple[float, float], title: str) -> go.Figure:
    """Where one output location of a deformable layer samples, drawn on the image it looked at.

    seen: [S, S, 3] uint8 image as the model sees it; regular / deformed: [K, 2] (y, x) sampling
    points on the layer's input grid without / with the learned offsets; scale: (sy, sx) from that
    grid to image pixels (the layer's input may be downsampled), mapped through pixel centres.
    """
    sy, sx = scale

    def on_image(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (pts[:, 1] + 0.5) * sx - 0.5, (pts[:, 0] + 0.5) * sy - 0.5

    fig = go.Figure(go.Image(z=seen))
    x, y = on_image(regular)
    fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name="regular grid",
                             marker={"symbol": "x", "color": "white", "size": 9,
                                     # the dark outline keeps the white cross visible in the legend
                                     "line": {"color": "#2e282a", "width": 1}}))
    x, y = on_image(deformed)
    fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name="deformed sampling points",
                             marker={"color": "red", "size": 9, "line": {"color": "white", "width": 1}}))
    return _finish(fig, height=380, title=title, legend={"orientation": "h"})


def offset_magnitude_figure(magnitude: np.ndarray) -> go.Figure:
    """Heatmap [Ho, Wo] of a deformable layer's mean offset length in pixels."""
    fig = go.Figure(go.Heatmap(z=magnitude, colorscale="Magma", colorbar={"title": "px"}))
    fig.update_yaxes(autorange="reversed", title_text="output row")
    fig.update_xaxes(title_text="output column")
    return _finish(fig, height=380, title="mean offset length")


def modulation_figure(mask: np.ndarray) -> go.Figure:
    """Heatmap [Ho, Wo] of a modulated deformable layer's mask, averaged over its kernel taps
    (``mask``: [K, Ho, Wo])."""
    fig = go.Figure(go.Heatmap(z=np.asarray(mask).mean(0), colorscale="Viridis", colorbar={"title": "mask"}))
    fig.update_yaxes(autorange="reversed", title_text="output row")
    fig.update_xaxes(title_text="output column")
    return _finish(fig, height=380, title="mean modulation mask")


def embedding_frame(points: np.ndarray, labels: Sequence[int], class_names: Sequence[str]) -> pd.DataFrame:
    """The PCA points [N, 2] with their class names: columns pc1, pc2, class."""
    return pd.DataFrame({"pc1": points[:, 0], "pc2": points[:, 1], "class": [class_names[y] for y in labels]})


# Class names that are colours are drawn in that colour; other classes then avoid these hues.
NAMED_COLOURS = {"red": "#d62728", "green": "#2ca02c", "blue": "#1f4fd8", "yellow": "#e6c619",
                 "orange": "#ff7f0e", "purple": "#8e44ad", "pink": "#e377c2", "brown": "#8c564b",
                 "black": "#222222", "grey": "#7f7f7f", "gray": "#7f7f7f", "white": "#d0d0d0", "cyan": "#17becf"}
# 20 well separated colours (Kelly's list without white), for classes whose names are not colours.
CLASS_PALETTE = ("#222222", "#f3c300", "#875692", "#f38400", "#a1caf1", "#be0032", "#c2b280", "#848482",
                 "#008856", "#e68fac", "#0067a5", "#f99379", "#604e97", "#f6a600", "#b3446c", "#dcd300",
                 "#882d17", "#8db600", "#654522", "#e25822")
# When some class names are colours, the others take hues that none of those names suggests.
NEUTRAL_PALETTE = ("#222222", "#848482", "#875692", "#654522", "#e68fac", "#17becf", "#c2b280", "#882d17",
                   "#b3446c", "#604e97", "#a1caf1", "#8db600")
CLASS_MARKERS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "triangle-down",
                 "pentagon", "hexagon", "circle-open", "square-open", "diamond-open", "triangle-up-open",
                 "star-open", "hexagram", "bowtie", "hourglass", "triangle-left", "triangle-right")
# Shape words in class names (the shapes dataset) get their own marker.
_SHAPE_MARKERS = {"circle": "circle", "square": "square", "triangle": "triangle-up", "cross": "cross",
                  "ring": "circle-open", "star": "star", "diamond": "diamond"}


def class_styles(class_names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """class name -> (colour, marker), pairwise distinct for up to 20 classes (and beyond, as long
    as colour x marker pairs last). A class named after a colour ("red circle") is drawn in that
    colour; when any class is, the other classes take neutral hues, so no class is drawn in a
    colour its name contradicts. Shape words pick the marker (a "star" is a star)."""
    names = [str(c) for c in class_names]

    def colour_word(name: str) -> str | None:
        return next((w for w in name.lower().replace("-", " ").split() if w in NAMED_COLOURS), None)

    named = any(colour_word(n) for n in names)
    others = NEUTRAL_PALETTE if named else CLASS_PALETTE
    out: dict[str, tuple[str, str]] = {}
    used: set[tuple[str, str]] = set()
    k = 0
    for i, name in enumerate(names):
        word = colour_word(name)
        if word:
            colour = NAMED_COLOURS[word]
        else:
            colour = others[k % len(others)]
            k += 1
        shape = next((m for w, m in _SHAPE_MARKERS.items() if w in name.lower().split()), None)
        candidates = ([shape] if shape else []) + [CLASS_MARKERS[(i + j) % len(CLASS_MARKERS)]
                                                   for j in range(len(CLASS_MARKERS))]
        marker = next((m for m in candidates if (colour, m) not in used), candidates[0])
        used.add((colour, marker))
        out[name] = (colour, marker)
    return out


def embedding_figure(frame: pd.DataFrame, explained: Sequence[float], run_id: str,
                     class_names: Sequence[str] | None = None) -> go.Figure:
    """Scatter of ``embedding_frame``, one ``class_styles`` colour and marker per class (in the
    order of ``class_names`` when given); the title gives each axis's share of variance."""
    order = [str(c) for c in class_names] if class_names else sorted(frame["class"].astype(str).unique())
    styles = class_styles(order)
    fig = go.Figure()
    for cls in order:
        g = frame[frame["class"].astype(str) == cls]
        if g.empty:
            continue
        colour, marker = styles[cls]
        fig.add_trace(go.Scatter(x=g["pc1"], y=g["pc2"], mode="markers", name=cls,
                                 marker={"size": 7, "color": colour, "symbol": marker,
                                         "line": {"color": "white", "width": 0.5}}))
    return _finish(fig, height=480, title=f"{run_id}: PC1 {explained[0]:.0%}, PC2 {explained[1]:.0%} of variance",
                   xaxis_title="PC1", yaxis_title="PC2")


def readable_layer_name(name: str) -> str:
    """A module path as words: "cbam.spatial.tap" -> "cbam › spatial", "layer1.0.conv1" ->
    "layer1 › block 0 › conv1" (observation taps are an implementation detail, not a layer)."""
    parts = [p for p in str(name).split(".") if p and not p.startswith("tap")]
    return " › ".join(f"block {p}" if p.isdigit() else p.replace("_", " ") for p in parts) or "model input"


KIND_WORDS = {"spatial_attention": "spatial attention", "channel_attention": "channel attention",
              "self_attention": "self-attention", "feature": "feature map", "kernel_attention": "kernel attention"}


def colour_scale_strip(width: int = 240, height: int = 14) -> np.ndarray:
    """[height, width, 3] uint8: the overlays' colour map from 0 (left) to 1 (right), to show as
    the colour scale of CAM and attention overlays (each map is scaled to its own maximum)."""
    from core.analysis.explain import colormap

    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    return np.clip(colormap(ramp), 0, 255).astype(np.uint8)


def attention_overlays(image: np.ndarray, maps: Sequence[dict], max_feature_maps: int = 4,
                       alpha: float = 0.6) -> list[list[tuple[np.ndarray, str]]]:
    """The attention taps of one forward pass drawn on the image: rows of (overlay [H, W, 3] uint8,
    caption), one row for the spatial-attention maps, one per feature tap (its first
    ``max_feature_maps`` channels, each scaled to [0, 1]), one for the self-attention maps (the
    attention of the centre position over a square grid). Channel attention is a bar chart
    (``channel_attention_figure``), not an overlay.

    image: [H, W, 3] uint8; maps: ``explain.record_taps`` records as dicts {name, kind, values}.
    """
    from core.analysis.explain import overlay_heatmap

    def draw(values: np.ndarray, caption: str) -> tuple[np.ndarray, str]:
        return overlay_heatmap(image, values, alpha=alpha), caption

    rows = [[draw(np.asarray(m["values"]), f"spatial attention in {readable_layer_name(m['name'])}") for m in maps
             if m["kind"] == "spatial_attention" and np.asarray(m["values"]).ndim == 2]]
    for m in maps:
        fmap = np.asarray(m["values"])
        if m["kind"] == "feature" and fmap.ndim == 3:
            rows.append([draw(_unit_range(fmap[ch]), f"{readable_layer_name(m['name'])}: feature map {ch}")
                         for ch in range(min(len(fmap), max_feature_maps))])
    centre_rows = []
    for m in maps:
        a = np.asarray(m["values"])
        side = int(round(np.sqrt(a.shape[-1]))) if m["kind"] == "self_attention" and a.ndim == 2 else 0
        if side and side * side == a.shape[-1]:
            centre = a[(side // 2) * side + side // 2].reshape(side, side)
            centre_rows.append(draw(centre / max(float(centre.max()), 1e-12),
                                    f"self-attention of the centre position in {readable_layer_name(m['name'])}"))
    rows.append(centre_rows)
    return [row for row in rows if row]


def _unit_range(values: np.ndarray) -> np.ndarray:
    """``values`` shifted and scaled to [0, 1] (all zeros when constant)."""
    v = values - values.min()
    return v / v.max() if v.max() > 0 else v
