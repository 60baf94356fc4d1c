"""ArchScope dashboard entry point: ``streamlit run dashboard/app.py``."""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `core` importable from any cwd

st.set_page_config(page_title="ArchScope", layout="wide")
st.title("ArchScope")
st.info("The dashboard pages are being built (see the dashboard issue). The command line works: `python -m core.models`.")
