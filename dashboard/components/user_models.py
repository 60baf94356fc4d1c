"""Students' own model files (ARCHSCOPE_MODELS) in the dashboard: the sidebar setting, the list, reload.

Model files are code: they are read only from paths on the server (the environment variable, or
the sidebar's text field, which holds paths, never an upload). The setting is the server's: it
changes os.environ, so every session sees the same models and the trainers the Train page starts
(child processes inheriting the environment) can register them too.

    sidebar_model_files()                   # dashboard/app.py: the ARCHSCOPE_MODELS text field
    ours, built_in = split_models(registry.list_models())
    show_model_problems()                   # one st.error per file that could not be loaded
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import streamlit as st

from core import MODEL_FILES_ENV

if TYPE_CHECKING:
    from core.models.registry import ModelSpec

# core.models.user_models.ENV_VAR, taken from the package root: importing core.models imports torch, and
# the sidebar is drawn on every page, Overview included, which must not wait for torch (issue 14's
# first visit under 3 s). tests/dashboard/test_train_page.py checks the two are equal.
ENV_VAR = MODEL_FILES_ENV
SETTING_KEY = "archscope_models_setting"
RESULT_KEY = "archscope_models_result"


def split_models(specs: Sequence["ModelSpec"]) -> tuple[list["ModelSpec"], list["ModelSpec"]]:
    """(the models of ARCHSCOPE_MODELS files, the built-ins), each in the given order."""
    return [s for s in specs if s.source_file], [s for s in specs if not s.source_file]


def reload_model_files(value: str | None = None) -> int:
    """Load the model files again (``value``: a new ARCHSCOPE_MODELS for this server process; None:
    the current one). Returns the number of problems. Cached model costs are keyed by the model
    files' sizes and times (core.analysis.cost_cache), so an edited file is counted anew; loaded
    Predictors are dropped."""
    from core.models import registry

    from dashboard.components.models import load_predictor

    if value is not None:
        os.environ[ENV_VAR] = value       # trainers launched from now on inherit it
    problems = registry.reload_user_models(value)
    # Loaded runs hold instances of the classes the files defined before: Predict and Explain must
    # rebuild them from the files as they are now (weights load again on the next use).
    load_predictor.clear()
    return len(problems)


def _apply_setting() -> None:
    problems = reload_model_files(st.session_state.get(SETTING_KEY, "").strip())
    st.session_state[RESULT_KEY] = problems


def sidebar_model_files() -> None:
    """The sidebar's copy of ARCHSCOPE_MODELS: paths on the server, separated by os.pathsep."""
    # The field always shows the server's value: an edit is applied (on_change, before this run)
    # to os.environ, so a value another session set is shown here too, never a stale one.
    st.session_state[SETTING_KEY] = os.environ.get(ENV_VAR, "")
    st.sidebar.text_input(
        f"Model files ({ENV_VAR})", key=SETTING_KEY, on_change=_apply_setting,
        placeholder=f"/home/me/my_models{os.pathsep}/srv/course/cool_model.py",
        help=f".py files or folders on the server, separated by '{os.pathsep}'. Their @register_model models "
             "join the built-ins on every page and in the trainings launched from here. One setting for "
             "this server and every session; nothing is uploaded (model files are code).")
    problems = st.session_state.get(RESULT_KEY)
    if problems:
        st.sidebar.error(f"{problems} model file problem(s): the Train page names each file and line.")


def show_model_problems() -> None:
    """One message per model file that could not be loaded (file, line, what went wrong); the other
    models stay available."""
    from core.models import registry
    from dashboard.components.train_form import plain_markdown

    for problem in registry.user_model_problems():
        st.error(f"Model file skipped: {plain_markdown(str(problem))}. The other models are still available; "
                 "fix the file and press **Reload model files**.")


def user_models_table(specs: Sequence["ModelSpec"]) -> pd.DataFrame:
    """Name, description, file and the first 12 hex digits of its sha256, one row per user model."""
    return pd.DataFrame([{"Model": s.name, "Description": s.description, "File": s.source_file,
                          "sha256": (s.source_sha256 or "")[:12]} for s in specs],
                        columns=["Model", "Description", "File", "sha256"])
