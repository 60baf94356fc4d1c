"""Fixture runs for the dashboard tests: real, tiny trainings made once per test session.

Two runs on the built-in ``shapes`` data (256 training images, 32 px, 1 epoch), trained in
parallel through the real CLI (``python -m core.train``) so the folders are exactly what users get:
  cnn2_rg   cnn2 on channels RG with zero-fill (a channel-robustness row with values)
  deform    attn_deform_cnn4 on RGB (deformable conv + CBAM attention for the Explain page)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import sys
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
    env = dict(os.environ, PYTHONPATH=str(REPO))
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
