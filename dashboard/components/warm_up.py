"""Importing the model code (torch, torchvision, every model family: about 3 s on 2 cores) in the
background, once per server process, shortly after the first page has run.

The Overview draws without the model code (its costs come from core.analysis.cost_cache). The
other pages need it: Compare's lessons name models, Predict, Explain, Train and Architecture build
them. A page that needs it while the warm-up is still sleeping or importing does not import beside
it (two threads importing the same modules on 2 cores took longer than one after the other): it
starts the warm-up at once and waits for it to finish.
"""

from __future__ import annotations

import logging
import threading

import streamlit as st

# Seconds the warm-up waits before importing: on 2 cores, importing torch beside Chromium drawing
# the first page delayed the leaderboard by about a second.
DELAY_S = 2.0
# A page waits at most this long for the warm-up, then goes on (importing what it needs itself).
WAIT_S = 60.0

_started = threading.Event()
_start_now = threading.Event()
_done = threading.Event()


def _import_model_code() -> None:
    _start_now.wait(timeout=DELAY_S)
    try:
        from core.models import registry

        registry.list_models()      # torch, torchvision and every model family, imported once
    except Exception:  # noqa: BLE001 - a warm-up only: the page that needs the models reports the error
        logging.getLogger(__name__).exception("warm-up import of the model code failed")
    finally:
        _done.set()


@st.cache_resource(show_spinner=False)
def start() -> bool:
    """Start the warm-up thread (once per server process). The thread only imports: it makes no
    Streamlit call."""
    _start_thread()
    return True


def _start_thread() -> None:
    threading.Thread(target=_import_model_code, name="archscope-warm-up", daemon=True).start()
    _started.set()


def wait() -> None:
    """Before a page that needs the model code: if the warm-up has started and not finished,
    let it import now and wait for it (no-op otherwise)."""
    if _started.is_set() and not _done.is_set():
        _start_now.set()
        _done.wait(timeout=WAIT_S)
