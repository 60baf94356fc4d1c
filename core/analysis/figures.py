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
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core.analysis import compare

# One palette for every multi-run chart, so a run keeps its colour from one chart to the next.
PALETTE = ("#3b6fd8", "#e4572e", "#17bebb", "#ffc914", "#76b041", "#8e44ad", "#2e282a", "#f18f01",
           "#bcbd22", "#8c564b")
# Numbers inside heatmap cells stay readable (and cheap to draw) up to this many classes; hover
# always shows them.
MAX_CLASSES_WITH_CELL_TEXT = 10
# Room for a title; axis labels get their room from automargin, never from a fixed margin.
_MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and not (isinstance(v, (float, np.floating)) and math.isnan(v))


def _finish(fig: go.Figure, *, height: int, title: str | None = None, **layout) -> go.Figure:
    """Shared layout: small margins, but automargin on every axis so tick labels (class names,
    run names) are never cut off."""
    fig.update_layout(height=height, margin=_MARGIN, **({"title": {"text": title, "font": {"size": 14}}}
                                                          if title else {}), **layout)
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def cell_text(n_classes: int, template: str) -> str | None:
    """A texttemplate for heatmap cells while there are few enough classes to read it, else None."""
    return template if n_classes <= MAX_CLASSES_WITH_CELL_TEXT else None


# ---- learning curves --------------------------------------------------------------------------
def curves_figure(groups: Sequence[tuple[str, Sequence[list[dict]]]]) -> go.Figure:
    """Loss and accuracy per epoch: one colour per group, dashed train, solid validation.

    groups: (name, [metrics.jsonl rows of each run in the group]). A group of several runs (runs
    that differ only in seed) is drawn as its mean with a band of ± one standard deviation. The
    figure has no trace when no run has a finished epoch (check ``fig.data``).
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    for gi, (name, metric_lists) in enumerate(groups):
        colour = PALETTE[gi % len(PALETTE)]
        for split, dash in (("train", "dash"), ("val", "solid")):
            for pos, what in enumerate(("loss", "acc")):
                df = compare.curves_mean_std(metric_lists, f"{split}_{what}")
                if df.empty:
                    continue
                if len(metric_lists) > 1:
                    _add_band(fig, df, colour, col=pos + 1)
                label = f"{name} {split}"
                fig.add_trace(go.Scatter(x=df["epoch"], y=df["mean"], mode="lines+markers", name=label,
                                         line={"color": colour, "dash": dash}, legendgroup=label,
                                         showlegend=pos == 0), row=1, col=pos + 1)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="loss", col=1)
    fig.update_yaxes(title_text="accuracy", col=2)
    return _finish(fig, height=400, legend={"orientation": "h", "y": -0.2})


def _add_band(fig: go.Figure, df: pd.DataFrame, colour: str, col: int) -> None:
    upper, lower = df["mean"] + df["std"], df["mean"] - df["std"]
    fig.add_trace(go.Scatter(x=list(df["epoch"]) + list(df["epoch"])[::-1], y=list(upper) + list(lower)[::-1],
                             fill="toself", line={"width": 0}, fillcolor=colour, opacity=0.15, showlegend=False,
                             hoverinfo="skip"), row=1, col=col)


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
def confusion_figure(cm: Sequence[Sequence[float]] | np.ndarray, classes: Sequence[str] | None, *,
                     run_id: str, test_acc: float | None = None, normalise: bool = True,
                     zmax: float | None = None, show_scale: bool = True) -> go.Figure:
    """One run's confusion matrix [K, K] (rows true, columns predicted), class names on both axes.

    normalise: colour and numbers are each row's fraction (recall on the diagonal), else counts.
    Hover always shows the count and the fraction. The title names the run and its test accuracy.
    zmax: the colour scale's top (pass the largest count to share one scale across runs).
    """
    counts = np.asarray(cm, dtype=float)
    fractions = compare.normalize_confusion(counts, "true")
    names = [str(c) for c in classes] if classes else [str(k) for k in range(len(counts))]
    z = fractions if normalise else counts
    top = zmax if zmax is not None else (1.0 if normalise else float(counts.max() or 1.0))
    title = f"{run_id}: test accuracy {test_acc:.4f}" if _is_number(test_acc) else run_id
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, zmin=0, zmax=top, colorscale="Blues", showscale=show_scale,
        customdata=np.dstack([counts, fractions]),
        texttemplate=cell_text(len(names), "%{z:.2f}" if normalise else "%{z:.0f}"),
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata[0]:.0f} images "
                      "(%{customdata[1]:.1%} of the row)<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="true")
    fig.update_xaxes(title_text="predicted", tickangle=-40)
    return _finish(fig, height=max(380, 30 * len(names) + 180), title=title)


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


def per_class_f1_figure(per_class: pd.DataFrame) -> go.Figure:
    """Grouped bars of F1 per class, one colour per run; ``per_class`` has columns run, class, f1."""
    bars = [go.Bar(name=str(rid), x=g["class"].astype(str), y=g["f1"], marker_color=PALETTE[i % len(PALETTE)])
            for i, (rid, g) in enumerate(per_class.groupby("run", sort=False))]
    return _finish(go.Figure(bars), height=340, barmode="group", xaxis_title="class", yaxis_title="F1")


# ---- channel robustness -----------------------------------------------------------------------
def robustness_heatmap(rows: Sequence[str], tested: Sequence[str], z: Sequence[Sequence[float | None]], *,
                       title: str | None = None, row_title: str = "run") -> go.Figure:
    """Accuracy of each row (a run, or a trained combination) on each tested channel combination.

    z: [len(rows), len(tested)] accuracies in [0, 1]; None / NaN cells (not testable) read "n/a".
    Feed it ``compare.robustness_by_run(...)`` or a ``channel_robustness_matrix`` DataFrame's
    (index, columns, values).
    """
    values = [[float(v) if _is_number(v) else None for v in row] for row in z]
    text = [["n/a" if v is None else f"{v:.2f}" for v in row] for row in values]
    fig = go.Figure(go.Heatmap(z=values, x=list(tested), y=[str(r) for r in rows], zmin=0, zmax=1,
                               colorscale="Viridis", text=text, texttemplate="%{text}",
                               colorbar={"title": "accuracy"},
                               hovertemplate="%{y}<br>tested %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text=row_title)
    fig.update_xaxes(title_text="tested combination", side="top")
    return _finish(fig, height=max(240, 40 * len(values) + 140), title=title)


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


def pareto_figure(run_ids: Sequence[str], costs: Sequence[float], accuracies: Sequence[float], *,
                  cost_label: str, log_x: bool = True, target: tuple[float, str] | None = None) -> go.Figure:
    """Test accuracy against a cost, every run a labelled point, the Pareto front as a step line.

    Runs missing either value are left out. target: (accuracy, label) drawn as a dotted line,
    e.g. 90 % of the reference run's accuracy.
    """
    df = pd.DataFrame({"run": list(run_ids), "cost": pd.to_numeric(pd.Series(list(costs)), errors="coerce"),
                       "acc": pd.to_numeric(pd.Series(list(accuracies)), errors="coerce")}).dropna()
    df["front"] = compare.pareto_front(df["cost"], df["acc"]) if len(df) else []
    fig = go.Figure(go.Scatter(x=df["cost"], y=df["acc"], mode="markers+text", text=df["run"],
                               textposition="top center", name="runs", marker={"size": 11, "color": PALETTE[0]}))
    front = df[df["front"]].sort_values("cost")
    fig.add_trace(go.Scatter(x=front["cost"], y=front["acc"], mode="lines+markers", name="Pareto front",
                             line={"color": PALETTE[1], "shape": "hv"},
                             marker={"size": 14, "symbol": "circle-open"}))
    if target is not None and _is_number(target[0]):
        fig.add_hline(y=float(target[0]), line_dash="dot", annotation_text=target[1])
    return _finish(fig, height=420, xaxis_title=cost_label, yaxis_title="test accuracy",
                   xaxis_type="log" if log_x else "linear")


def largest_layers_figure(layers: pd.DataFrame, n: int = 15) -> go.Figure | None:
    """Horizontal bars of the ``n`` layers with the most MACs (a per-layer complexity table with
    columns name, macs); None when no layer has MACs."""
    top = layers[layers["macs"] > 0].nlargest(n, "macs")
    if top.empty:
        return None
    fig = go.Figure(go.Bar(x=top["macs"], y=top["name"], orientation="h"))
    fig.update_yaxes(autorange="reversed")
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
    return _finish(fig, height=240, title=f"channel attention: {name}", xaxis_title="channel",
                   yaxis_title="weight")


def kernel_attention_figure(rows: Sequence[dict], run_id: str) -> go.Figure:
    """Softmax weight of each kernel of each dynamic-convolution layer, per channel combination.

    rows: ``explain.kernel_attention_by_combo`` records (combo, layer, kernel, weight); one panel
    per layer, one bar colour per kernel."""
    df = pd.DataFrame(list(rows))
    layers = list(dict.fromkeys(df["layer"]))
    kernels = list(dict.fromkeys(df["kernel"]))
    fig = make_subplots(rows=1, cols=len(layers), subplot_titles=[str(x) for x in layers], shared_yaxes=True)
    for li, layer in enumerate(layers):
        for ki, kernel in enumerate(kernels):
            part = df[(df["layer"] == layer) & (df["kernel"] == kernel)]
            fig.add_trace(go.Bar(x=part["combo"], y=part["weight"], name=f"kernel {kernel}", legendgroup=str(kernel),
                                 marker_color=PALETTE[ki % len(PALETTE)], showlegend=li == 0), row=1, col=li + 1)
    fig.update_xaxes(title_text="channel combination")
    fig.update_yaxes(title_text="weight", col=1)
    return _finish(fig, height=340, title=f"{run_id}: softmax weight of each kernel", barmode="group")


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


def embedding_figure(frame: pd.DataFrame, explained: Sequence[float], run_id: str) -> go.Figure:
    """Scatter of ``embedding_frame`` coloured by class; the title gives each axis's share of variance."""
    colours = qualitative.Dark24      # datasets have up to ~20 classes: one colour each
    fig = go.Figure([go.Scatter(x=g["pc1"], y=g["pc2"], mode="markers", name=str(cls),
                                marker={"size": 6, "color": colours[i % len(colours)]})
                     for i, (cls, g) in enumerate(frame.groupby("class", sort=True))])
    return _finish(fig, height=440, title=f"{run_id}: PC1 {explained[0]:.0%}, PC2 {explained[1]:.0%} of variance",
                   xaxis_title="PC1", yaxis_title="PC2")


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

    rows = [[draw(np.asarray(m["values"]), f"spatial attention: {m['name']}") for m in maps
             if m["kind"] == "spatial_attention" and np.asarray(m["values"]).ndim == 2]]
    for m in maps:
        fmap = np.asarray(m["values"])
        if m["kind"] == "feature" and fmap.ndim == 3:
            rows.append([draw(_unit_range(fmap[ch]), f"{m['name']} map {ch}")
                         for ch in range(min(len(fmap), max_feature_maps))])
    centre_rows = []
    for m in maps:
        a = np.asarray(m["values"])
        side = int(round(np.sqrt(a.shape[-1]))) if m["kind"] == "self_attention" and a.ndim == 2 else 0
        if side and side * side == a.shape[-1]:
            centre = a[(side // 2) * side + side // 2].reshape(side, side)
            centre_rows.append(draw(centre / max(float(centre.max()), 1e-12),
                                    f"self-attention of the centre position: {m['name']}"))
    rows.append(centre_rows)
    return [row for row in rows if row]


def _unit_range(values: np.ndarray) -> np.ndarray:
    """``values`` shifted and scaled to [0, 1] (all zeros when constant)."""
    v = values - values.min()
    return v / v.max() if v.max() > 0 else v
