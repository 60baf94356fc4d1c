"""Compare: curves, cost table vs a reference, confusion matrices and their difference, per-class
metrics, channel-robustness heatmaps, accuracy-versus-cost with the Pareto front, seed groups."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core.analysis import compare
from core.suite import SuiteError, suite_groups
from dashboard.components.runs import available_runs, eval_of, metrics_of, mtime_of, pick_runs, summaries
from dashboard.components.tables import show_table

st.title("Compare runs")


# One click loads a course experiment: the seeds suite's groups whose runs are in the runs folder.
@st.cache_data(show_spinner=False)
def _groups() -> dict[str, list[str]]:
    try:
        return suite_groups("seeds")
    except (SuiteError, OSError):
        return {}


present = {r.run_id for r in available_runs()}
course = {g: [i for i in ids if i in present] for g, ids in _groups().items()}
course = {g: ids for g, ids in course.items() if ids}


def _load_group() -> None:
    group = st.session_state.get("cmp_suite_group")
    if group in course:
        st.session_state["cmp_runs"] = course[group]


if course:
    st.selectbox("Load a course experiment (a group of the seeds suite)", list(course), index=None,
                 placeholder="choose a group to select its runs", key="cmp_suite_group", on_change=_load_group,
                 format_func=lambda g: f"{g} ({len(course[g])} runs)",
                 help="Sets the runs below to that group's runs, as trained by `python -m core.suite seeds`.")
chosen = pick_runs("cmp_runs", default_n=4)
if not chosen:
    st.stop()

all_rows, all_configs = summaries()
by_id = {r["run_id"]: (r, c) for r, c in zip(all_rows, all_configs)}
rows = [by_id[r.run_id][0] for r in chosen if r.run_id in by_id]
configs = [by_id[r.run_id][1] for r in chosen if r.run_id in by_id]
runs = {r.run_id: r for r in chosen}
group_seeds = st.toggle("Group runs that differ only in seed (mean ± std)", value=True, key="cmp_group")

# ---- seed groups ------------------------------------------------------------------------------------
groups: dict[str, list[str]] = {}
for row, cfg in zip(rows, configs):
    key = compare.seed_group_key(cfg) if group_seeds else row["run_id"]
    groups.setdefault(key, []).append(row["run_id"])
group_names = {k: (v[0] if len(v) == 1 else f"{v[0]} (+{len(v) - 1} seeds)") for k, v in groups.items()}
PALETTE = ["#3b6fd8", "#e4572e", "#17bebb", "#ffc914", "#76b041", "#8e44ad", "#2e282a", "#f18f01"]

# ---- curves -----------------------------------------------------------------------------------------
st.subheader("Training curves")
fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
any_curve = False
for gi, (key, members) in enumerate(groups.items()):
    colour = PALETTE[gi % len(PALETTE)]
    metric_lists = [metrics_of(runs[m]) for m in members]
    for col, (split, dash) in enumerate([("train", "dash"), ("val", "solid")]):
        for pos, what in enumerate(("loss", "acc")):
            df = compare.curves_mean_std(metric_lists, f"{split}_{what}")
            if df.empty:
                continue
            any_curve = True
            name = f"{group_names[key]} {split}"
            if len(members) > 1:
                upper, lower = df["mean"] + df["std"], df["mean"] - df["std"]
                fig.add_trace(go.Scatter(x=list(df["epoch"]) + list(df["epoch"])[::-1],
                                         y=list(upper) + list(lower)[::-1], fill="toself", line=dict(width=0),
                                         fillcolor=colour, opacity=0.15, showlegend=False, hoverinfo="skip"),
                              row=1, col=pos + 1)
            fig.add_trace(go.Scatter(x=df["epoch"], y=df["mean"], mode="lines+markers", name=name,
                                     line=dict(color=colour, dash=dash), legendgroup=name,
                                     showlegend=pos == 0), row=1, col=pos + 1)
fig.update_xaxes(title_text="epoch")
fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10))
if any_curve:
    st.plotly_chart(fig, key="cmp_curves")
    st.caption("Dashed: train, solid: validation. Bands: ± one standard deviation over seeds.")
else:
    st.info("The chosen runs have no finished epoch yet (metrics.jsonl is empty).")

# ---- cost table -------------------------------------------------------------------------------------
st.subheader("Cost and accuracy")
c1, c2 = st.columns([2, 1])
reference = c1.selectbox("Reference run", [r["run_id"] for r in rows], key="cmp_ref",
                         index=int(np.nanargmax([r["macs"] or 0 for r in rows])) if rows else 0)
target = c2.slider("Target (% of reference accuracy)", 50, 100, 90, key="cmp_target")
costs = compare.cost_table(rows, reference=reference, target=target / 100)
show_table(costs, key="cmp_costs", column_config={
    "test_acc": st.column_config.NumberColumn(format="%.4f"),
    "acc_per_gmac": st.column_config.NumberColumn("acc % per GMAC", format="%.2f"),
    "acc_pct_of_ref": st.column_config.NumberColumn("acc % of ref", format="%.1f"),
    "params_pct_of_ref": st.column_config.NumberColumn("params % of ref", format="%.1f"),
    "macs_pct_of_ref": st.column_config.NumberColumn("MACs % of ref", format="%.1f"),
})
if costs["test_acc"].isna().all():
    st.info("No chosen run has a test accuracy yet: eval.json is written when a training finishes.")
if group_seeds and any(len(v) > 1 for v in groups.values()):
    st.markdown("**Seed groups (mean ± std)**")
    show_table(compare.group_by_seed(rows, configs), key="cmp_seed_groups", hide_index=True)

# ---- accuracy versus cost ---------------------------------------------------------------------------
st.subheader("Accuracy versus cost")
axis = st.radio("Cost axis", ["MACs (one image)", "parameters", "latency (ms per image, measured)"],
                horizontal=True, key="cmp_axis")
cost_values = {
    "MACs (one image)": costs["macs"],
    "parameters": costs["params"],
    "latency (ms per image, measured)": 1000.0 / costs["inference_images_per_s"],
}[axis]
acc = costs["test_acc"]
ok = cost_values.notna() & acc.notna()
if ok.sum() == 0:
    st.info("Needs runs with both a test accuracy (eval.json) and this cost.")
else:
    front = compare.pareto_front(cost_values.where(ok), acc.where(ok))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=cost_values[ok], y=acc[ok], mode="markers+text", text=costs["run_id"][ok],
                             textposition="top center", name="runs", marker=dict(size=11, color="#3b6fd8")))
    pf = pd.DataFrame({"x": cost_values[front], "y": acc[front]}).sort_values("x")
    fig.add_trace(go.Scatter(x=pf["x"], y=pf["y"], mode="lines+markers", name="Pareto front",
                             line=dict(color="#e4572e", shape="hv"), marker=dict(size=14, symbol="circle-open")))
    ref_acc = costs.loc[costs["run_id"] == reference, "test_acc"]
    if not ref_acc.empty and pd.notna(ref_acc.iloc[0]):
        fig.add_hline(y=float(ref_acc.iloc[0]) * target / 100, line_dash="dot",
                      annotation_text=f"{target}% of {reference}")
    fig.update_layout(xaxis_title=axis, yaxis_title="test accuracy", height=420,
                      xaxis_type="log" if axis != "latency (ms per image, measured)" else "linear",
                      margin=dict(l=10, r=10, t=30, b=10))
    st.plotly_chart(fig, key="cmp_pareto")

def cell_text(n_classes: int, template: str) -> str | None:
    """Numbers in the cells only while they stay readable (and cheap to draw); hover always shows them."""
    return template if n_classes <= 10 else None


# ---- confusion matrices ------------------------------------------------------------------------------
evals = {r.run_id: eval_of(r) for r in chosen}
with_eval = [rid for rid, ev in evals.items() if ev and ev.get("confusion_matrix")]
st.subheader("Confusion matrices")
if not with_eval:
    st.info("None of the chosen runs has an eval.json yet (it is written at the end of a training, or by "
            "`python -m core.evaluate RUN_DIR`).")
else:
    normalised = st.toggle("Normalise rows (recall on the diagonal)", value=True, key="cmp_norm")
    mats = {rid: compare.normalize_confusion(evals[rid]["confusion_matrix"], "true" if normalised else "none")
            for rid in with_eval}
    zmax = 1.0 if normalised else max(float(m.max()) for m in mats.values())
    cols = st.columns(min(len(with_eval), 3))
    for i, rid in enumerate(with_eval):
        classes = evals[rid].get("classes") or [str(k) for k in range(len(mats[rid]))]
        f = go.Figure(go.Heatmap(z=mats[rid], x=classes, y=classes, zmin=0, zmax=zmax, colorscale="Blues",
                                 texttemplate=cell_text(len(classes), "%{z:.2f}" if normalised else "%{z:.0f}"),
                                 showscale=i == 0))
        f.update_layout(title=rid, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                        height=420, margin=dict(l=10, r=10, t=40, b=10))
        cols[i % len(cols)].plotly_chart(f, key=f"cmp_cm_{rid}")

    if len(with_eval) >= 2:
        st.subheader("Difference of two runs (A − B)")
        a_col, b_col = st.columns(2)
        run_a = a_col.selectbox("A", with_eval, index=0, key="cmp_a")
        run_b = b_col.selectbox("B", with_eval, index=1, key="cmp_b")
        classes = evals[run_a].get("classes") or []
        try:
            diff, change = compare.confusion_difference(evals[run_a]["confusion_matrix"],
                                                        evals[run_b]["confusion_matrix"], classes)
        except ValueError as exc:
            st.error(f"Cannot subtract these two runs' matrices: {exc}. Pick two runs on the same dataset.")
        else:
            lim = max(float(np.abs(diff).max()), 1e-9)
            d1, d2 = st.columns(2)
            f = go.Figure(go.Heatmap(z=diff, x=classes, y=classes, zmin=-lim, zmax=lim, colorscale="RdBu",
                                     texttemplate=cell_text(len(classes), "%{z:+.2f}")))
            f.update_layout(title=f"{run_a} − {run_b} (row-normalised)", xaxis_title="predicted",
                            yaxis_title="true", yaxis_autorange="reversed", height=420,
                            margin=dict(l=10, r=10, t=40, b=10))
            d1.plotly_chart(f, key="cmp_diff")
            f = go.Figure(go.Bar(x=change["class"], y=100 * change["change"],
                                 marker_color=np.where(change["change"] >= 0, "#17bebb", "#e4572e")))
            f.update_layout(title="Per-class accuracy change, A − B (percentage points)",
                            yaxis_title="points", height=420, margin=dict(l=10, r=10, t=40, b=10))
            d2.plotly_chart(f, key="cmp_change")
            show_table(change, key="cmp_change_table", hide_index=True)

    st.subheader("Per-class precision, recall and F1")
    pcs = []
    for rid in with_eval:
        t = compare.per_class_table(evals[rid])
        t.insert(0, "run", rid)
        pcs.append(t)
    per_class = pd.concat(pcs, ignore_index=True)
    f = go.Figure([go.Bar(name=rid, x=g["class"], y=g["f1"]) for rid, g in per_class.groupby("run", sort=False)])
    f.update_layout(barmode="group", yaxis_title="F1", height=340, margin=dict(l=10, r=10, t=30, b=10))
    st.plotly_chart(f, key="cmp_f1")
    show_table(per_class, key="cmp_per_class", hide_index=True)

# ---- channel robustness ------------------------------------------------------------------------------
st.subheader("Channel robustness (trained combination × tested combination)")
robust = [(rid, evals[rid]) for rid in evals if evals[rid] and (evals[rid].get("channel_robustness") or {}).get("tested")]
if not robust:
    st.info("No chosen run has a channel-robustness row in eval.json (greyscale datasets have none).")
else:
    cols = st.columns(min(len(robust), 3))
    for i, (rid, ev) in enumerate(robust):
        m = compare.channel_robustness_matrix([ev])
        f = go.Figure(go.Heatmap(z=m.values, x=list(m.columns), y=list(m.index), zmin=0, zmax=1,
                                 colorscale="Viridis", texttemplate="%{z:.2f}", showscale=i == 0))
        f.update_layout(title=f"{rid} ({ev['channel_robustness'].get('strategy', '')})", xaxis_title="tested",
                        yaxis_title="trained", height=220, margin=dict(l=10, r=10, t=40, b=10))
        cols[i % len(cols)].plotly_chart(f, key=f"cmp_cr_{rid}")
    matrix = compare.channel_robustness_matrix([ev for _, ev in robust])
    st.markdown("**All chosen runs, one row per trained combination** (runs on the same combination averaged)")
    show_table(matrix, key="cmp_robustness")

# ---- report -----------------------------------------------------------------------------------------
st.subheader("Report to hand in")
st.caption("One self-contained HTML file (plotly inlined, opens offline): curves, cost table against the "
           "reference run, confusion matrices and channel-robustness heatmaps of the chosen runs. "
           "Same as `python -m core.report RUN_DIR ... --out report.html`.")
report_key = (tuple(str(r.path) for r in chosen), tuple(mtime_of(r.eval_path) for r in chosen), reference)
if st.button("Build report", key="cmp_build_report"):
    from core.report import ReportError, build_report_html

    try:
        with st.spinner("Building the report (counts each model's cost once)..."):
            st.session_state["cmp_report"] = (report_key, build_report_html(list(report_key[0]), reference=reference))
    except ReportError as exc:
        st.error(f"Could not build the report: {exc}")
built = st.session_state.get("cmp_report")
if built and built[0] == report_key:
    st.download_button("Download report.html", built[1], file_name="archscope-report.html", mime="text/html",
                       key="cmp_report_download")
elif built:
    st.info("The chosen runs changed since the report was built: build it again.")
