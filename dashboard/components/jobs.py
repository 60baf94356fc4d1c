"""The dashboard's one training queue per server process (the queue itself is core.training.queue).

``st.cache_resource`` keeps a single JobRegistry, and so a single queue pump thread and one view of
the backend's capacity, for every browser session of this Streamlit server. The backend comes from
$ARCHSCOPE_LAUNCHER (unset: this machine, one GPU slot per training; a Ray dashboard address: Ray
Jobs), the per-user cap from $ARCHSCOPE_MAX_RUNS_PER_USER (unset: none).
"""

from __future__ import annotations

import streamlit as st

from core.training.queue import QUEUED_MESSAGE, JobRegistry  # noqa: F401 - re-exported for pages

__all__ = ["JobRegistry", "QUEUED_MESSAGE", "job_registry"]


@st.cache_resource
def job_registry() -> JobRegistry:
    """The server's JobRegistry (created on first use, configured by the environment; on this
    machine the GPUs come from torch.cuda.device_count())."""
    return JobRegistry.from_environment()
