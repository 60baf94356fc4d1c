"""dashboard/components/jobs.py: one core JobRegistry per Streamlit server (the queue's own tests are
tests/core/training/test_queue.py)."""

from __future__ import annotations

from core.training.queue import JobRegistry


def test_job_registry_is_one_shared_core_registry():
    from dashboard.components.jobs import job_registry

    first = job_registry()
    assert isinstance(first, JobRegistry)
    assert job_registry() is first          # st.cache_resource: every session shares the queue and GPU slots


def test_job_registry_is_configured_by_the_environment(monkeypatch):
    from core.training.launchers import LocalLauncher
    from dashboard.components.jobs import job_registry

    monkeypatch.delenv("ARCHSCOPE_LAUNCHER", raising=False)
    monkeypatch.setenv("ARCHSCOPE_MAX_RUNS_PER_USER", "3")
    job_registry.clear()
    try:
        registry = job_registry()
        assert isinstance(registry.launcher, LocalLauncher) and registry.max_runs_per_user == 3
    finally:
        job_registry.clear()        # the next user of the cache gets a registry without this cap
