import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_data_cache(tmp_path_factory):
    """Generated datasets (shapes) are cached under ARCHSCOPE_CACHE: use a private cache so that a
    concurrent session regenerating the shared cache cannot change the data between a training
    subprocess and the evaluation that checks it. Subprocesses inherit the variable."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHSCOPE_CACHE", str(tmp_path_factory.mktemp("archscope-cache")))
    yield
    mp.undo()
