"""Compare, in tabs drawn one at a time: Summary (the course lessons the chosen runs test, with
their verdicts; what differs; cost table vs a reference), curves, accuracy versus cost with the
Pareto front, confusion matrices with their gallery and difference, per-class metrics, the
channel-robustness heatmap, and the HTML report."""

import os
import re
import zlib

import numpy as np
import pandas as pd
import streamlit as st

from core.analysis import compare, figures
from core.analysis.lesson_view import lesson_result, lesson_rows, lesson_title, verdict_sentence
from core.errors import ArchScopeError
from core.lesson_spec import lessons_for_runs
from core.report import build_report_html
from core.suite import SuiteError, load_suite, suite_groups
from core.training.run_folder import RunFolder
from dashboard.components.runs import (available_runs, eval_of, metrics_of, mtime_of, pick_runs, run_signature,
                                       runs_root, summaries, weights_status)
from dashboard.components.tables import show_table
from dashboard.components.tabs import keep_settings, lazy_tabs

st.title("Compare runs")
# The settings inside tabs, kept while another tab is open (dashboard.components.tabs).
keep_settings(("cmp_norm", "cmp_cm_two", "cmp_a", "cmp_b", "cmp_axis", "cmp_gallery_run", "cmp_pc_run"),
              ("cmp_cm_runs_", "cmp_gallery_cell_"))
# Enough images to see a pattern in a confusion, few enough to draw at once.
GALLERY_SIZE = 12
# Confusion matrices drawn by default: each is a large figure; more on request.
DEFAULT_MATRICES = 4


def _open_clicked_confusion(rid: str, ev: dict, event) -> None:
    """A click on a confusion-matrix cell sets the gallery below to that run and cell (once per new
    click: choosing another cell in the gallery afterwards is not overridden by the old click)."""
    points = (getattr(event, "selection", None) or {}).get("points") or []
    classes = ev.get("classes") or [str(k) for k in range(len(ev["confusion_matrix"]))]
    cell = figures.clicked_confusion(points, classes)
    if cell is None or st.session_state.get(f"cmp_cm_applied_{rid}") == cell:
        return
    st.session_state[f"cmp_cm_applied_{rid}"] = cell
    match = [c for c in compare.confusions(ev["confusion_matrix"]) if c[:2] == cell]
    if match:
        st.session_state["cmp_gallery_run"] = rid
        st.session_state[f"cmp_gallery_cell_{rid}"] = match[0]


@st.fragment
def _misclassified_gallery(with_eval: list[str], evals: dict, runs: dict) -> None:
    """Choose a run and a (true, predicted) cell of its confusion matrix; see those test images.
    A fragment: choosing another cell reruns only this part of the page."""
    st.markdown("**Misclassified test images**: click a confusion in a matrix above, or choose a run and a "
                "confusion (a non-zero cell off the diagonal) here")
    g1, g2 = st.columns([1, 2])
    rid = g1.selectbox("Run", with_eval, key="cmp_gallery_run")
    ev = evals[rid]
    classes = ev.get("classes") or [str(k) for k in range(len(ev["confusion_matrix"]))]
    cells = compare.confusions(ev["confusion_matrix"])
    if not cells:
        g2.info(f"`{rid}` misclassifies no test image.")
        return
    cell = g2.selectbox("True → predicted (images)", cells, key=f"cmp_gallery_cell_{rid}", index=None,
                        placeholder="choose a confusion to see its images",
                        format_func=lambda c: f"{classes[c[0]]} → {classes[c[1]]} ({c[2]} images)")
    if cell is None:
        return          # nothing classified until asked: the page stays fast
    status = weights_status(runs[rid])
    if not status["has_weights"]:
        st.info(f"`{rid}` has {status['weights_note']}: its test images cannot be classified again. "
                f"Regenerate the weights with `{status['regenerate']}`.")
        return
    # Imported here: it loads torch, which the rest of this page does not need.
    from dashboard.components.models import confused_images

    try:
        hits, matrix = confused_images(str(runs[rid].path), mtime_of(runs[rid].best_weights_path), cell[0], cell[1],
                                       limit=GALLERY_SIZE)
    except (ArchScopeError, OSError) as exc:
        st.error(f"Cannot classify the test images of `{rid}`: {exc}")
        return
    same = np.array_equal(matrix, np.asarray(ev["confusion_matrix"]))
    st.caption(f"{len(hits)} of {cell[2]} image(s) shown, most confident first; p = the probability the model gives each class."
               + ("" if same else " Recomputed from the saved weights, the matrix differs slightly from eval.json's "
                                  "(evaluated in another precision or data order)."))
    if not hits:
        st.info("The saved weights classify no test image this way (see the note above).")
        return
    cols = st.columns(6)
    for i, h in enumerate(hits):
        cols[i % 6].image(h["image"], width=96,
                          caption=f"#{h['index']}: p({classes[cell[1]]}) = {h['p_predicted']:.2f}, "
                                  f"p({classes[cell[0]]}) = {h['p_true']:.2f}")



# The course suite whose groups and lessons this page offers: $ARCHSCOPE_SUITE, a suite name
# (core/suites/NAME.json) or a path to a suite file; default "seeds" (tests point it at their own file).
SUITE = os.environ.get("ARCHSCOPE_SUITE") or "seeds"
VERDICT_BOX = {"reproduced": st.success, "contradicted": st.error, "inconclusive": st.warning, "not run": st.info}


# One click loads a course experiment: the seeds suite's groups whose runs are in the runs folder.
@st.cache_data(show_spinner=False)
def _groups(suite: str) -> dict[str, list[str]]:
    """(The suite is an argument, never a default: st.cache_data keys on the arguments passed, so a
    default would serve one suite's groups for another after $ARCHSCOPE_SUITE changes.)"""
    try:
        return suite_groups(suite)
    except (SuiteError, OSError):
        return {}


@st.cache_data(show_spinner=False)
def _suite_lessons(suite: str) -> list:
    """The suite's lessons (core.lessons), read once; none when the file cannot be loaded."""
    try:
        return load_suite(suite, strict=False).lessons
    except (ArchScopeError, OSError):
        return []


@st.cache_data(show_spinner=False, max_entries=128)
def _lesson_result(suite: str, lesson_id: str, root: str, signature: tuple) -> dict:
    """A lesson evaluated over the runs root; ``signature`` (its runs' ids and file mtimes) is the
    cache key: it is evaluated again only when one of its runs changes."""
    lesson = next(les for les in _suite_lessons(suite) if les.id == lesson_id)
    return lesson_result(lesson, root)


def _md(text: str) -> str:
    """Text shown as is in markdown (a finding's ``Dk*Dk*M`` is no emphasis, ``$`` no formula)."""
    return re.sub(r"([\\`*_\[\]<>$~|#])", r"\\\1", text)


@st.cache_resource(max_entries=256, show_spinner=False)
def _figure(key: tuple, _build):
    """``_build()``, built once per ``key`` (the figure's inputs: run ids, file mtimes, options).

    Building plotly figures (validation of every property) was most of the server's work in a
    Compare rerun (py-spy: the script's samples fell about threefold with this cache). It saves
    server CPU, which a classroom shares; the wall time in the browser, which draws the figures,
    did not measurably change. Shared between reruns and sessions and never changed afterwards:
    st.plotly_chart sends a copy (``Figure.to_dict``)."""
    return _build()


def _show_lessons(run_ids: list[str]) -> None:
    """One block per course lesson whose arms use one of the chosen runs: question, finding, verdict, arms."""
    suite_ids = {rid for ids in _groups(SUITE).values() for rid in ids}
    if not suite_ids & set(run_ids):
        return          # no run of the suite chosen: no lesson to show (and the suite is not loaded)
    root = runs_root()
    for lesson in lessons_for_runs(_suite_lessons(SUITE), run_ids):
        signature = tuple(run_signature(RunFolder(root / rid)) for rid in lesson.run_ids())
        try:
            res = _lesson_result(SUITE, lesson.id, str(root), signature)
        except (ArchScopeError, OSError) as exc:
            st.error(f"Cannot evaluate lesson `{lesson.id}`: {exc}")
            continue
        st.subheader(lesson_title(res))
        st.markdown(f"**Question:** {_md(res['question'])}")
        st.markdown(f"**The report found:** {_md(res['finding'])}")
        VERDICT_BOX[res["verdict"]](verdict_sentence(res, SUITE))
        if res.get("note"):
            st.caption(_md(res["note"]))
        show_table(pd.DataFrame(lesson_rows(res)), key=f"cmp_lesson_{lesson.id}", hide_index=True)


present = {r.run_id for r in available_runs()}
course = {g: [i for i in ids if i in present] for g, ids in _groups(SUITE).items()}
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
# One style per run for every figure on this page, decided once from the whole selection.
styles = figures.run_styles([r.run_id for r in chosen])
models = {r["run_id"]: r.get("model") for r in rows}
group_seeds = st.toggle("Group runs that differ only in seed (mean ± std)", value=True, key="cmp_group")
groups = compare.group_runs([r["run_id"] for r in rows], configs, by_seed=group_seeds)
evals = {r.run_id: eval_of(r) for r in chosen}
with_eval = [rid for rid, ev in evals.items() if ev and ev.get("confusion_matrix")]

# The reference and target serve the cost table, the accuracy-versus-cost plot and the report.
c1, c2 = st.columns([2, 1])
reference = c1.selectbox("Reference run (cost table, accuracy versus cost, report)", [r["run_id"] for r in rows],
                         key="cmp_ref", index=int(np.nanargmax([r["macs"] or 0 for r in rows])) if rows else 0)
target = c2.slider("Target (% of reference accuracy)", 50, 100, 90, key="cmp_target")
costs = figures.cost_table_frame(rows, reference=reference, target=target / 100)


def _summary() -> None:
    # ---- course lessons these runs test ------------------------------------------------------------
    _show_lessons([r.run_id for r in chosen])
    # ---- what differs --------------------------------------------------------------------------------
    st.subheader("What differs between these runs")
    differs = compare.config_differences([r["run_id"] for r in rows], configs)
    if len(rows) < 2:
        st.info("Choose two or more runs to see the settings that differ between them.")
    elif differs.empty:
        st.info("The chosen runs have identical settings (they differ in nothing a config records).")
    else:
        st.caption("Only the settings whose values differ; a comparison of runs that differ in more than the "
                   "setting under study is confounded.")
        show_table(differs.reset_index(), key="cmp_differs", hide_index=True)
    # ---- cost table ----------------------------------------------------------------------------------
    st.subheader("Cost and accuracy")
    cost_view = figures.readable_table(costs)
    show_table(cost_view, key="cmp_costs", hide_index=True, csv_frame=costs,
               column_config={"Run": st.column_config.TextColumn(
                   "Run", pinned=True, width=figures.text_column_width(cost_view["Run"].tolist(), "Run"))})
    st.caption(f"Params and MACs of one image at the run's input (C x H x W); FLOPs = 2 x MACs. "
               f"{figures.ACC_PER_GMAC_DEFINITION} The CSV holds the exact numbers.")
    if costs["test_acc"].isna().all():
        st.info("No chosen run has a test accuracy yet: eval.json is written when a training finishes.")
    if group_seeds and any(len(v) > 1 for v in groups.values()):
        st.markdown("**Seed groups (mean ± std)**")
        show_table(compare.group_by_seed(rows, configs), key="cmp_seed_groups", hide_index=True)


def _curves() -> None:
    group_styles = {name: styles[members[0]] for name, members in groups.items()}
    fig = _figure(("curves", tuple((name, tuple(members), tuple(mtime_of(runs[m].metrics_path) for m in members),
                                      group_styles[name]) for name, members in groups.items())),
                  lambda: figures.curves_figure([(name, [metrics_of(runs[m]) for m in members])
                                                 for name, members in groups.items()], styles=group_styles))
    if fig.data:
        st.plotly_chart(fig, key="cmp_curves")
        st.caption("Top: train, bottom: validation. Each run keeps its colour and line style in every figure of "
                   "this page. Bands: ± one standard deviation over seeds.")
    else:
        st.info("The chosen runs have no finished epoch yet (metrics.jsonl is empty).")


def _accuracy_vs_cost() -> None:
    cost_axes = {"MACs (one image)": costs["macs"], "parameters": costs["params"],
                 "latency (ms per image, measured)": 1000.0 / costs["inference_images_per_s"]}
    axis = st.radio("Cost axis", list(cost_axes), horizontal=True, key="cmp_axis")
    if (cost_axes[axis].notna() & costs["test_acc"].notna()).sum() == 0:
        st.info("Needs runs with both a test accuracy (eval.json) and this cost.")
        return
    ref_acc = costs.loc[costs["run_id"] == reference, "test_acc"]
    target_line = (float(ref_acc.iloc[0]) * target / 100, f"{target}% of {reference}") \
        if not ref_acc.empty and pd.notna(ref_acc.iloc[0]) else None
    pareto_key = ("pareto", axis, tuple(costs["run_id"]), tuple(cost_axes[axis].astype(float)),
                  tuple(costs["test_acc"].astype(float)), target_line, tuple(styles.get(r) for r in costs["run_id"]))
    st.plotly_chart(_figure(pareto_key, lambda: figures.pareto_figure(
        costs["run_id"], cost_axes[axis], costs["test_acc"], cost_label=axis, log_x=not axis.startswith("latency"),
        target=target_line, styles=styles)), key="cmp_pareto")
    st.caption("Hover a point for its run and numbers; the legend names each run's marker. The dashed line: "
               "the target accuracy (the reference run and target above the tabs).")


def _no_eval() -> bool:
    if not with_eval:
        st.info("None of the chosen runs has an eval.json yet (it is written at the end of a training, or by "
                "`python -m core.evaluate RUN_DIR`).")
    return not with_eval


def _confusions() -> None:
    if _no_eval():
        return
    normalised = st.toggle("Normalise rows (recall on the diagonal)", value=True, key="cmp_norm")
    # Raw counts share one colour scale across runs, so a darker cell means more images everywhere.
    zmax = None if normalised else max(float(np.max(evals[rid]["confusion_matrix"])) for rid in with_eval)
    # Keyed by the selection: a new set of runs (e.g. a course experiment loaded) starts from the
    # default again instead of keeping an old choice that no longer matches (which left it empty).
    drawn = st.multiselect("Matrices of", with_eval, default=with_eval[:DEFAULT_MATRICES],
                           key=f"cmp_cm_runs_{zlib.crc32(' '.join(with_eval).encode())}",
                           help=f"The first {DEFAULT_MATRICES} runs by default: each matrix is a large figure.")
    # One per row by default: a 12-class matrix needs the page's width for its labels and cell
    # numbers (two per row were unreadable at 1000 px). Two per row suit a wide screen. Every panel
    # has its colour bar, so all panels are the same size.
    per_row = 2 if st.toggle("Two matrices per row (wide screens)", value=False, key="cmp_cm_two") else 1
    for start in range(0, len(drawn), per_row):
        cols = st.columns(per_row)
        for col, rid in zip(cols, drawn[start:start + per_row]):
            ev = evals[rid]
            cm_key = ("confusion", str(runs[rid].path), mtime_of(runs[rid].eval_path), normalised, zmax)
            event = col.plotly_chart(
                _figure(cm_key, lambda: figures.confusion_figure(
                    ev["confusion_matrix"], ev.get("classes"), run_id=rid, test_acc=ev.get("test_acc"),
                    normalise=normalised, zmax=zmax, clickable=True)),
                key=f"cmp_cm_{rid}", on_select="rerun", selection_mode="points")
            _open_clicked_confusion(rid, ev, event)
    st.caption("Click a confusion (a cell off the diagonal) to see its test images below.")
    _misclassified_gallery(with_eval, evals, runs)

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
            # Full width, one under the other: the difference heatmap has as many labels as a matrix.
            st.plotly_chart(figures.confusion_difference_figure(diff, classes, run_a=run_a, run_b=run_b),
                            key="cmp_diff")
            st.plotly_chart(figures.class_change_figure(change), key="cmp_change")
            show_table(figures.decimals_frame(change), key="cmp_change_table", hide_index=True, csv_frame=change)


def _per_class() -> None:
    if _no_eval():
        return
    per_class = pd.concat([compare.per_class_table(evals[rid]).assign(run=rid) for rid in with_eval],
                          ignore_index=True)
    per_class = per_class[["run"] + [c for c in per_class.columns if c != "run"]]
    st.plotly_chart(figures.per_class_f1_figure(per_class, styles), key="cmp_f1")
    # One run's table at a time: with a run column the f1 and support columns fell past the right
    # edge at 1000 px. The figure above compares the runs; the CSV holds every run's rows.
    shown = st.selectbox("Precision, recall and F1 per class of", with_eval, key="cmp_pc_run")
    one = per_class[per_class["run"] == shown].drop(columns="run")
    show_table(figures.decimals_frame(one), key="cmp_per_class", hide_index=True, csv_frame=per_class)
    st.caption(f"The CSV holds the rows of all {len(with_eval)} runs.")


def _robustness() -> None:
    # With seed grouping, one row per condition (its seeds averaged), named like the curves' groups.
    rob_evals = compare.seed_mean_evals(evals, groups) if group_seeds else evals
    rob_models = {name: models.get(members[0]) for name, members in groups.items()} if group_seeds else models
    labels, tested, z = compare.robustness_by_run(list(rob_evals.items()), rob_models)
    if not labels:
        st.info("No chosen run has a channel-robustness row in eval.json (greyscale datasets have none).")
        return
    chances = {compare.chance_level(ev) for ev in evals.values() if (ev or {}).get("channel_robustness")}
    chance = chances.pop() if len(chances) == 1 else None
    st.plotly_chart(figures.robustness_heatmap(labels, tested, z, chance=chance), key="cmp_cr")
    st.caption("Rows: each run's model and the combination it was trained on"
               + (" (runs differing only in seed averaged into one row)" if group_seeds else "")
               + "; columns: the combination it was tested on. "
               + (f"Grey: at or below chance ({chance:.3f} = 1 / number of classes); cells up to "
                  f"{compare.AT_CHANCE_MARGIN:.2f} above it read '≈ chance'." if chance else
                  "The runs are on datasets with different numbers of classes: no single chance level."))
    for note in compare.robustness_notes(list(evals.items())):
        st.markdown(f"- {note}")
    matrix = compare.channel_robustness_matrix(list(evals.values()), [models.get(rid) for rid in evals])
    st.markdown("**One row per model and trained combination** (seeds of the same model averaged)")
    matrix = matrix.reset_index()
    show_table(figures.decimals_frame(matrix), key="cmp_robustness", hide_index=True, csv_frame=matrix)


def _report() -> None:
    st.caption("One self-contained HTML file (plotly inlined, opens offline): curves, cost table against the "
               "reference run, confusion matrices and channel-robustness heatmaps of the chosen runs. "
               "Same as `python -m core.report RUN_DIR ... --out report.html`.")
    report_key = (tuple(str(r.path) for r in chosen), tuple(mtime_of(r.eval_path) for r in chosen), reference)
    if st.button("Build report", key="cmp_build_report"):
        try:
            with st.spinner("Building the report (counts each model's cost once)..."):
                st.session_state["cmp_report"] = (report_key, build_report_html(
                    list(report_key[0]), reference=reference, lessons_suite=SUITE))
        except ArchScopeError as exc:
            st.error(f"Could not build the report: {exc}")
    built = st.session_state.get("cmp_report")
    if built and built[0] == report_key:
        st.download_button("Download report.html", built[1], file_name="archscope-report.html", mime="text/html",
                           key="cmp_report_download")
    elif built:
        st.info("The chosen runs changed since the report was built: build it again.")


# One tab at a time: only the open tab's part of the page runs and is drawn. Drawing every figure
# at once (10 plotly charts and 7 grids for a course group) took Chromium 1.5-2 s on 2 cores at
# each visit; a tab is drawn when it is opened.
lazy_tabs({"Summary": _summary, "Curves": _curves, "Accuracy vs cost": _accuracy_vs_cost,
           "Confusions": _confusions, "Per class": _per_class, "Robustness": _robustness, "Report": _report},
          key="cmp_tab")
