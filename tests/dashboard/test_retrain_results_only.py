"""A run shipped without its weights can be trained again from Predict with one click (issue 14)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.dashboard.conftest import APP, goto


@pytest.mark.slow
def test_results_only_run_is_queued_again_from_predict(fixture_runs, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "runs"
    shutil.copytree(fixture_runs / "cnn2_rg", root / "cnn2_rg")
    run = root / "cnn2_rg"
    for name in ("model.safetensors", "last.safetensors", "last_state.pt"):
        (run / name).unlink(missing_ok=True)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "weights_shipped": False,
                                                  "message": "Results only: python -m core.suite seeds --only cnn2_rg"}))
    monkeypatch.setenv("ARCHSCOPE_RUNS", str(root))
    monkeypatch.delenv("ARCHSCOPE_LAUNCHER", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    at = goto(at, "predict")
    picker = at.multiselect(key="pr_runs_unusable")          # no usable run: the flagged ones only
    assert picker.value == [] and any("no weights" in o for o in picker.options)
    picker.set_value(["cnn2_rg"]).run()
    button = next(b for b in at.button if "again for its weights" in b.label)
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("cnn2_rg" in s.value and "previous results are kept" in s.value for s in at.success), \
        [e.value for e in at.error]
    assert (root / ".cnn2_rg.previous" / "eval.json").exists()          # nothing lost
    deadline = time.time() + 180
    while time.time() < deadline and not (run / "model.safetensors").exists():
        time.sleep(1)
    assert (run / "model.safetensors").exists(), (run / "status.json").read_text()
    assert json.loads((run / "config.json").read_text())["channels"] == "RG"
