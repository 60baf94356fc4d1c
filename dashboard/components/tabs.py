"""Pages in tabs of which only the open one runs and is drawn.

``st.tabs(..., on_change="rerun")`` makes tabs lazy: a tab's ``open`` says whether it is the one
shown, so the others neither compute nor send anything to the browser (Compare drew 10 plotly
charts and 7 grids for a course group at every visit; Explain computed every explanation of every
run). A widget that is not drawn in a run loses its state, so the settings inside tabs are
re-stored on every run (``keep_settings``, before the page's widgets) and are still there when
their tab is opened again.
"""

from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st


def keep_settings(names: Sequence[str] = (), prefixes: Sequence[str] = ()) -> None:
    """Keep these widgets' values (keys ``names``, or starting with one of ``prefixes``) while
    their tab is closed: a value set through session_state survives a run without its widget."""
    for key in [k for k in st.session_state if k in names or k.startswith(tuple(prefixes))]:
        st.session_state[key] = st.session_state[key]


def lazy_tabs(sections: dict[str, Callable[[], None]], key: str) -> None:
    """One tab per section (label -> function drawing it); only the open tab's function runs."""
    for tab, section in zip(st.tabs(list(sections), key=key, on_change="rerun"), sections.values()):
        if tab.open:
            with tab:
                section()
