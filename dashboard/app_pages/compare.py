"""Compare: curves, cost table vs a reference, confusion matrices and their difference, per-class
metrics, channel-robustness heatmaps, accuracy-versus-cost with the Pareto front, seed groups."""

import numpy as np
import pandas as pd
import streamlit as st

from core.analysis import compare, figures
from core.errors import ArchScopeError
from core.report import build_report_html
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

# ---- curves -----------------------------------------------------------------------------------------
st.subheader("Training curves")
groups = compare.group_runs([r["run_id"] for r in rows], configs, by_seed=group_seeds)
fig = figures.curves_figure([(name, [metrics_of(runs[m]) for m in members]) for name, members in groups.items()])
if fig.data:
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
costs = figures.cost_table_frame(rows, reference=reference, target=target / 100)
show_table(costs, key="cmp_costs", column_config={
    "test_acc": st.column_config.NumberColumn(format="%.4f"),
    "acc_per_gmac": st.column_config.NumberColumn("acc % per GMAC", format="%.2f"),
    "acc_pct_of_ref": st.column_config.NumberColumn("acc % of ref", format="%.1f"),
    "params_pct_of_ref": st.column_config.NumberColumn("params % of ref", format="%.1f"),
    "macs_pct_of_ref": st.column_config.NumberColumn("MACs % of ref", format="%.1f"),
    "cost_note": st.column_config.TextColumn("why no cost"),
})
if costs["test_acc"].isna().all():
    st.info("No chosen run has a test accuracy yet: eval.json is written when a training finishes.")
if group_seeds and any(len(v) > 1 for v in groups.values()):
    st.markdown("**Seed groups (mean ± std)**")
    show_table(compare.group_by_seed(rows, configs), key="cmp_seed_groups", hide_index=True)

# ---- accuracy versus cost ---------------------------------------------------------------------------
st.subheader("Accuracy versus cost")
COST_AXES = {"MACs (one image)": costs["macs"], "parameters": costs["params"],
             "latency (ms per image, measured)": 1000.0 / costs["inference_images_per_s"]}
axis = st.radio("Cost axis", list(COST_AXES), horizontal=True, key="cmp_axis")
if (COST_AXES[axis].notna() & costs["test_acc"].notna()).sum() == 0:
    st.info("Needs runs with both a test accuracy (eval.json) and this cost.")
else:
    ref_acc = costs.loc[costs["run_id"] == reference, "test_acc"]
    target_line = (float(ref_acc.iloc[0]) * target / 100, f"{target}% of {reference}") \
        if not ref_acc.empty and pd.notna(ref_acc.iloc[0]) else None
    st.plotly_chart(figures.pareto_figure(costs["run_id"], COST_AXES[axis], costs["test_acc"], cost_label=axis,
                                          log_x=not axis.startswith("latency"), target=target_line),
                    key="cmp_pareto")

# ---- confusion matrices ------------------------------------------------------------------------------
evals = {r.run_id: eval_of(r) for r in chosen}
with_eval = [rid for rid, ev in evals.items() if ev and ev.get("confusion_matrix")]
st.subheader("Confusion matrices")
if not with_eval:
    st.info("None of the chosen runs has an eval.json yet (it is written at the end of a training, or by "
            "`python -m core.evaluate RUN_DIR`).")
else:
    normalised = st.toggle("Normalise rows (recall on the diagonal)", value=True, key="cmp_norm")
    # Raw counts share one colour scale across runs, so a darker cell means more images everywhere.
    zmax = None if normalised else max(float(np.max(evals[rid]["confusion_matrix"])) for rid in with_eval)
    cols = st.columns(min(len(with_eval), 3))
    for i, rid in enumerate(with_eval):
        ev = evals[rid]
        cols[i % len(cols)].plotly_chart(
            figures.confusion_figure(ev["confusion_matrix"], ev.get("classes"), run_id=rid,
                                     test_acc=ev.get("test_acc"), normalise=normalised, zmax=zmax,
                                     show_scale=i == 0), key=f"cmp_cm_{rid}")

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
            d1, d2 = st.columns(2)
            d1.plotly_chart(figures.confusion_difference_figure(diff, classes, run_a=run_a, run_b=run_b),
                            key="cmp_diff")
            d2.plotly_chart(figures.class_change_figure(change), key="cmp_change")
            show_table(change, key="cmp_change_table", hide_index=True)

    st.subheader("Per-class precision, recall and F1")
    per_class = pd.concat([compare.per_class_table(evals[rid]).assign(run=rid) for rid in with_eval],
                          ignore_index=True)
    per_class = per_class[["run"] + [c for c in per_class.columns if c != "run"]]
    st.plotly_chart(figures.per_class_f1_figure(per_class), key="cmp_f1")
    show_table(per_class, key="cmp_per_class", hide_index=True)

# ---- channel robustness ------------------------------------------------------------------------------
st.subheader("Channel robustness (trained combination × tested combination)")
labels, tested, z = compare.robustness_by_run(list(evals.items()))
if not labels:
    st.info("No chosen run has a channel-robustness row in eval.json (greyscale datasets have none).")
else:
    st.plotly_chart(figures.robustness_heatmap(labels, tested, z), key="cmp_cr")
    matrix = compare.channel_robustness_matrix([ev for ev in evals.values() if ev])
    st.markdown("**All chosen runs, one row per trained combination** (runs on the same combination averaged)")
    show_table(matrix, key="cmp_robustness")

# ---- report -----------------------------------------------------------------------------------------
st.subheader("Report to hand in")
st.caption("One self-contained HTML file (plotly inlined, opens offline): curves, cost table against the "
           "reference run, confusion matrices and channel-robustness heatmaps of the chosen runs. "
           "Same as `python -m core.report RUN_DIR ... --out report.html`.")
report_key = (tuple(str(r.path) for r in chosen), tuple(mtime_of(r.eval_path) for r in chosen), reference)
if st.button("Build report", key="cmp_build_report"):
    try:
        with st.spinner("Building the report (counts each model's cost once)..."):
            st.session_state["cmp_report"] = (report_key, build_report_html(list(report_key[0]), reference=reference))
    except ArchScopeError as exc:
        st.error(f"Could not build the report: {exc}")
built = st.session_state.get("cmp_report")
if built and built[0] == report_key:
    st.download_button("Download report.html", built[1], file_name="archscope-report.html", mime="text/html",
                       key="cmp_report_download")
elif built:
    st.info("The chosen runs changed since the report was built: build it again.")
