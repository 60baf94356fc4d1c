"""Overview: what ArchScope is, a leaderboard of the runs present, links into the other pages."""

import streamlit as st

from core.analysis import compare, figures
from dashboard.components.runs import FIRST_RUN_HELP, runs_root, summaries
from dashboard.components.tables import show_table, table_height

st.title("ArchScope")
st.markdown(
    "ArchScope trains small CNN image classifiers and puts them side by side. "
    "It compares their accuracy with their cost (parameters, MACs, FLOPs) and their robustness "
    "when colour channels are missing. "
    "It also shows what each network looks at: class activation maps, attention maps and "
    "deformable-convolution sampling points."
)

LINKS = [("app_pages/train.py", "Train a model", ":material/model_training:"),
         ("app_pages/compare.py", "Compare runs", ":material/compare_arrows:"),
         ("app_pages/predict.py", "Predict on images", ":material/image_search:"),
         ("app_pages/explain.py", "Explain predictions", ":material/visibility:"),
         ("app_pages/architecture.py", "Architecture & cost", ":material/account_tree:")]
# Three links per row: five in one row cut their labels at 1000 px.
for start in range(0, len(LINKS), 3):
    for col, (target, label, icon) in zip(st.columns(3), LINKS[start:start + 3]):
        col.page_link(target, label=label, icon=icon)

st.subheader("Leaderboard")
root = runs_root()
# Accuracies first (no model is built, so torch is not even imported), costs filled in after:
# the leaderboard is readable while params and MACs are still being counted on a cold start.
rows, _ = summaries(root, with_cost=False)
if not rows:
    st.info(FIRST_RUN_HELP)
    st.stop()

datasets = sorted({str(r["dataset"]) for r in rows})
chosen = st.segmented_control("Dataset", ["all datasets", *datasets], default="all datasets", key="ov_dataset",
                              help="Accuracies on datasets with different numbers of classes are not one ranking: "
                                   "compare each with its chance accuracy (1 / number of classes).")
chosen = chosen or "all datasets"
chance_lines = []
for name in datasets:
    here = [r for r in rows if str(r["dataset"]) == name]
    chance = next((r["chance_acc"] for r in here if r["chance_acc"]), None)
    classes = next((r["num_classes"] for r in here if r["num_classes"]), None)
    chance_lines.append(f"**{name}**: {len(here)} run(s), {classes or '?'} classes, chance accuracy "
                        f"{figures.format_number(chance, '{:.3f}')}")
st.caption(" · ".join(chance_lines))
table_slot = st.empty()


def _board(summary_rows: list[dict]):
    visible = [r for r in summary_rows if chosen == "all datasets" or str(r["dataset"]) == chosen]
    board = compare.leaderboard(visible, by_dataset=True)
    weights = {r["run_id"]: r for r in visible}
    board.insert(board.columns.get_loc("state") + 1, "weights", ["yes" if weights[rid]["has_weights"] else "⚠ results only"
                                for rid in board["run_id"]])
    return board, figures.readable_table(board, figures.LEADERBOARD_DISPLAY)


board, shown = _board(rows)
pinned = {"Run": st.column_config.TextColumn("Run", pinned=True,
                                             width=figures.text_column_width(shown["Run"].tolist(), "Run"))}
with table_slot:
    st.dataframe(shown, hide_index=True, column_config=pinned, height=table_height(len(shown), 800))
rows, _ = summaries(root)          # now with params and MACs (cached per architecture)
board, shown = _board(rows)
with table_slot.container():
    show_table(shown, key="leaderboard", hide_index=True, csv_frame=board, column_config=pinned,
               height=table_height(len(shown), 800))
st.caption(f"{len(board)} run(s) in `{root}`, grouped by dataset, best test accuracy first. Test accuracy from "
           "eval.json; params and MACs of one image at the run's input size; train time summed over epochs; "
           "images/s at inference. The CSV holds the exact numbers.")
results_only = [r for r in rows if not r["has_weights"]]
if results_only:
    with st.expander(f"⚠ {len(results_only)} run(s) ship results only (no weights): Predict and Explain cannot "
                     "use them"):
        for r in results_only:
            st.markdown(f"- `{r['run_id']}`: {r['weights_note']}. Regenerate: `{r['regenerate']}`")
broken = [r for r in rows if r["problems"]]
for r in broken:
    st.warning(f"Run `{r['run_id']}` is incomplete or broken: {r['problems']}. "
               "It is listed but cannot be compared until its files are fixed or it finishes.")
