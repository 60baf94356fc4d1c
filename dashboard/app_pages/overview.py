"""Overview: what ArchScope is, a leaderboard of the runs present, links into the other pages."""

import streamlit as st

from core.analysis import compare
from dashboard.components.runs import FIRST_RUN_HELP, runs_root, summaries
from dashboard.components.tables import show_table

st.title("ArchScope")
st.markdown(
    "ArchScope trains small CNN image classifiers and puts them side by side. "
    "It compares their accuracy with their cost (parameters, MACs, FLOPs) and their robustness "
    "when colour channels are missing. "
    "It also shows what each network looks at: class activation maps, attention maps and "
    "deformable-convolution sampling points."
)

cols = st.columns(5)
cols[0].page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
cols[1].page_link("app_pages/compare.py", label="Compare runs", icon=":material/compare_arrows:")
cols[2].page_link("app_pages/predict.py", label="Predict on images", icon=":material/image_search:")
cols[3].page_link("app_pages/explain.py", label="Explain predictions", icon=":material/visibility:")
cols[4].page_link("app_pages/architecture.py", label="Architecture & cost", icon=":material/account_tree:")

st.subheader("Leaderboard")
root = runs_root()
rows, _ = summaries(root)
if not rows:
    st.info(FIRST_RUN_HELP)
else:
    board = compare.leaderboard(rows)
    st.caption(f"{len(board)} run(s) in `{root}`. Test accuracy from eval.json; params and MACs of one "
               "image at the run's input size; train time summed over epochs; images/s at inference.")
    show_table(board, key="leaderboard", hide_index=True, column_config={
        "test_acc": st.column_config.NumberColumn("test acc", format="%.4f"),
        "best_val_acc": st.column_config.NumberColumn("best val acc", format="%.4f"),
        "params": st.column_config.NumberColumn("params", format="%d"),
        "macs": st.column_config.NumberColumn("MACs", format="%d"),
        "train_seconds": st.column_config.NumberColumn("train s", format="%.1f"),
        "train_images_per_s": st.column_config.NumberColumn("train img/s", format="%.0f"),
        "inference_images_per_s": st.column_config.NumberColumn("infer img/s", format="%.0f"),
    })
    broken = [r for r in rows if r["problems"]]
    for r in broken:
        st.warning(f"Run `{r['run_id']}` is incomplete or broken: {r['problems']}. "
                   "It is listed but cannot be compared until its files are fixed or it finishes.")
