import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every data test writes caches under one session temp folder and never downloads."""
    monkeypatch.setenv("ARCHSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "archscope-cache"))
    monkeypatch.setenv("ARCHSCOPE_OFFLINE", "1")
