"""Fixture runs for the dashboard tests: real, tiny trainings made once per test session.

Two runs on the built-in ``shapes`` data (256 training images, 32 px, 1 epoch), trained in
parallel through the real CLI (``python -m core.train``) so the folders are exactly what users get:
  cnn2_rg   cnn2 on channels RG with zero-fill (a channel-robustness row with values)
  deform    attn_deform_cnn4 on RGB (deformable conv + CBAM attention for the Explain page)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"

FIXTURE_RUNS = {
    "cnn2_rg": ["--model", "cnn2", "--channels", "RG", "--channel-strategy", "zero-fill"],
    "deform": ["--model", "attn_deform_cnn4", "--channels", "RGB"],
}
COMMON = ["--dataset", "shapes", "--image-size", "32", "--max-train-samples", "256", "--epochs", "1",
          "--batch-size", "64", "--seed", "0", "--quiet", "--no-tensorboard", "--num-threads", "1"]


@pytest.fixture(scope="session")
def fixture_runs():
    """A runs root holding the trained fixture runs (a failed training fails the tests, never skips them)."""
    # Our own temp folder, not tmp_path_factory's: pytest prunes old basetemp folders of the same
    # user, and a parallel pytest session could delete the runs while we read them.
    root = Path(tempfile.mkdtemp(prefix="archscope-fixture-runs-"))
    env = dict(os.environ)                 # the project is installed: `core` imports anywhere
    procs = {}
    for name, args in FIXTURE_RUNS.items():
        log = open(root / f"{name}.log", "wb")
        procs[name] = (subprocess.Popen([sys.executable, "-m", "core.train", *args, *COMMON, "--out", str(root / name)],
                                        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    for name, (proc, log) in procs.items():
        rc = proc.wait(timeout=600)
        log.close()
        if rc != 0:
            pytest.fail(f"fixture training {name} failed (exit {rc}):\n{(root / f'{name}.log').read_text()[-3000:]}")
    for name in FIXTURE_RUNS:
        (root / f"{name}.log").unlink()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def runs_env(fixture_runs, monkeypatch) -> Path:
    monkeypatch.setenv("ARCHSCOPE_RUNS", str(fixture_runs))
    return fixture_runs


@pytest.fixture
def app(runs_env):
    """An AppTest of the multipage app, already run once on the Overview page."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


# ---- helpers shared by the dashboard and security tests ------------------------------------------
def goto(at, page: str):
    """Switch an AppTest to dashboard/app_pages/<page>.py, run it, and fail on any exception."""
    at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table_with(at, column: str):
    """The first dataframe on the page that has ``column``, as a pandas DataFrame."""
    for d in at.dataframe:
        if column in d.value.columns:
            return d.value
    raise AssertionError(f"no table with column {column!r}; tables: {[list(d.value.columns) for d in at.dataframe]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(runs_root: Path, log_path: Path, timeout: float = 60.0, extra_args: tuple[str, ...] = ()):
    """A real ``streamlit run dashboard/app.py`` on a free local port, serving ``runs_root``.

    Yields its base URL once ``/_stcore/health`` answers; fails the test with the log's tail when the
    server exits or does not answer within ``timeout`` s. Terminated (then killed) on exit.
    ``extra_args``: more ``streamlit run`` flags, e.g. ("--server.maxUploadSize", "20")."""
    port = free_port()
    env = dict(os.environ, ARCHSCOPE_RUNS=str(runs_root))
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         *extra_args],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.flush()
                    pytest.fail(f"streamlit did not start (exit code {proc.poll()}): "
                                f"{Path(log_path).read_text(errors='replace')[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
