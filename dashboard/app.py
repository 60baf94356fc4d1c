"""ArchScope dashboard entry point: ``streamlit run dashboard/app.py``.

Multipage via st.navigation; one file per page in dashboard/app_pages/. Pages stay thin: they
read run folders, call ``core`` and draw with plotly.
"""

from pathlib import Path

import streamlit as st

# `core` and `dashboard` are importable from any folder: the project is installed (pyproject.toml).
from dashboard.components import warm_up
from dashboard.components.runs import sidebar_runs_root
from dashboard.components.user_models import sidebar_model_files

st.set_page_config(page_title="ArchScope", layout="wide")

PAGES = Path(__file__).resolve().parent / "app_pages"
pages = [
    st.Page(str(PAGES / "overview.py"), title="Overview", icon=":material/home:", default=True),
    st.Page(str(PAGES / "train.py"), title="Train", icon=":material/model_training:"),
    st.Page(str(PAGES / "compare.py"), title="Compare", icon=":material/compare_arrows:"),
    st.Page(str(PAGES / "predict.py"), title="Predict", icon=":material/image_search:"),
    st.Page(str(PAGES / "explain.py"), title="Explain", icon=":material/visibility:"),
    st.Page(str(PAGES / "architecture.py"), title="Architecture", icon=":material/account_tree:"),
]
nav = st.navigation(pages)
sidebar_runs_root()
sidebar_model_files()
if nav.title != "Overview":
    warm_up.wait()          # the model code, imported by the warm-up rather than beside it
try:
    nav.run()
finally:
    warm_up.start()         # once per server process, after the first page has run
