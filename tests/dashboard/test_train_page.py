"""AppTest of the Train page: the form starts exactly what it shows, run names, the run list (order,
labels, resume and delete), students' own model files, the dataset preview, the upload limit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.models import registry
from core.training.run_folder import RUN_ID_RULE, WAITING_FOR_SLOT, RunFolder
from tests.dashboard.conftest import APP, goto, table_with

TINY = '''
from torch import nn
from core.models import register_model


@register_model("{name}", "{description}", source="a student's file")
def tiny(num_classes: int, in_channels: int = 3, width: int = {width}) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
'''

FFT = '''
import torch
from torch import nn
from core.models import register_model


class Spectral(nn.Module):
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        x = torch.fft.rfft2(self.conv(x)).abs()     # an op the counter has no rule for
        return self.fc(x.mean((2, 3)))


@register_model("spectral_e3", "conv + FFT magnitude", source="a student's file")
def spectral(num_classes: int, in_channels: int = 3) -> nn.Module:
    return Spectral(num_classes, in_channels)
'''


@pytest.fixture
def recorded_launches(monkeypatch):
    """JobRegistry.submit / resume replaced by recorders: what the page would start, without a trainer."""
    from core.training.queue import JobRegistry

    calls: list[tuple] = []

    def submit(self, config, run_dir, *, nproc=1):
        calls.append(("submit", config, Path(run_dir), nproc))
        return "queued"

    def resume(self, run_dir, *, epochs=None):
        calls.append(("resume", Path(run_dir)))
        return "queued"

    monkeypatch.setattr(JobRegistry, "submit", submit)
    monkeypatch.setattr(JobRegistry, "resume", resume)
    return calls


@pytest.fixture
def model_files(tmp_path, monkeypatch):
    """A folder of model files named by ARCHSCOPE_MODELS; the registry forgets them afterwards."""
    folder = tmp_path / "my_models"
    folder.mkdir()
    monkeypatch.setenv("ARCHSCOPE_MODELS", str(folder))
    registry.reload_user_models()
    yield folder
    monkeypatch.delenv("ARCHSCOPE_MODELS", raising=False)
    registry.reload_user_models("")


def _errors(at) -> list[str]:
    """The error messages as the user reads them (the page escapes markdown characters in core's messages)."""
    return [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]


def _launch(at):
    return at.button(key="tr_launch")


def test_train_page_form_preview_and_runs_table(app, runs_env):
    at = goto(app, "train")
    labels = {w.label for w in at.selectbox}
    assert {"Dataset", "Architecture", "Channel combination", "Strategy for missing channels", "Optimizer",
            "Device"} <= labels
    assert at.selectbox(key="tr_device").options == ["auto", "cpu"]      # no GPU on this machine
    # complexity shown before launching, equal to core's count
    from core.analysis.complexity import model_complexity
    rep = model_complexity("cnn2", (3, 32, 32), 12, {}, cross_check=False)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == f"{rep.params_total:,}" and metrics["MACs / image"] == f"{rep.macs:,}"
    table = table_with(at, "State")
    assert set(table["Run"]) == {"cnn2_rg", "deform"} and set(table["State"]) == {"done"}
    # a user error: bad JSON model options -> st.error, Launch disabled, no exception
    [opts] = [t for t in at.text_input if t.label == "Model options (JSON)"]
    opts.set_value("{not json").run()
    assert not at.exception
    assert any("JSON object" in e for e in _errors(at))
    assert _launch(at).disabled


def test_out_of_range_fields_disable_launch_with_the_reason(app, runs_env, recorded_launches):
    """Epochs 0 and batch 999999 (flagged red by a bounded widget, which then keeps sending the last
    valid value) reach the check: Launch is disabled and says why; valid values launch as shown."""
    at = goto(app, "train")
    at.number_input(key="tr_epochs").set_value(0).run()
    at.number_input(key="tr_bs").set_value(999999).run()
    errors = _errors(at)
    assert any(e.startswith("Epochs is 0: it must be between 1 and 1000") for e in errors), errors
    assert any(e.startswith("Batch size is 999999: it must be between 1 and 4096") for e in errors), errors
    assert not any("epochs must be" in e or "batch_size must be" in e for e in errors), "one message per mistake"
    assert _launch(at).disabled and not recorded_launches
    assert any("Launch is disabled" in c.value for c in at.caption)
    # the values the form shows are the values launched
    at.number_input(key="tr_epochs").set_value(3).run()
    at.number_input(key="tr_bs").set_value(32).run()
    at.text_input(key="tr_name").set_value("exact_values").run()
    assert not _errors(at) and not _launch(at).disabled
    _launch(at).click().run()
    [(kind, config, run_dir, nproc)] = recorded_launches
    assert (config.epochs, config.batch_size, config.device, nproc) == (3, 32, "auto", 1)
    assert run_dir == runs_env / "exact_values"


def test_bad_run_names_get_one_message_with_the_rule_and_the_page_stays_whole(app, runs_env, recorded_launches):
    at = goto(app, "train")
    before = sorted(p.name for p in runs_env.iterdir())
    for name in ("x" * 300, "../escape", ".hidden", "with space", "back\\slash", "c:colon", "star*", "what?"):
        at.text_input(key="tr_name").set_value(name).run()
        assert not at.exception, [e.value for e in at.exception]
        errors = [e.value for e in at.error if "run name" in e.value]
        assert len(errors) == 1, (name, _errors(at))
        # the message is shown as written: '_' in the rule is escaped, not turned into italics
        assert RUN_ID_RULE.replace("_", "\\_") in errors[0]
        assert _launch(at).disabled
        assert at.title[0].value == "Train a model" and table_with(at, "State") is not None   # the page stays whole
    at.text_input(key="tr_name").set_value("cnn2_rg").run()          # an existing run is never overwritten
    assert any("already exists" in e for e in _errors(at)) and _launch(at).disabled
    assert sorted(p.name for p in runs_env.iterdir()) == before and not recorded_launches


def test_runs_are_listed_by_state_and_a_run_cancelled_in_the_queue_resumes_or_is_deleted(
        app, runs_env, recorded_launches):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    made = {name: runs_env / name for name in ("zz_running", "aa_waiting", "mm_starting", "qq_cancelled")}
    try:
        RunFolder(made["zz_running"]).write_status("running", pid=sleeper.pid, epoch=1, epochs=3)
        RunFolder(made["aa_waiting"]).write_config({"model": "cnn2", "dataset": "shapes"})
        RunFolder(made["aa_waiting"]).write_status("queued", pid=None, queued_at=1.0, **{WAITING_FOR_SLOT: True})
        RunFolder(made["mm_starting"]).write_status("queued", pid=sleeper.pid, message="starting",
                                                    **{WAITING_FOR_SLOT: False})
        RunFolder(made["qq_cancelled"]).write_config({"model": "cnn2", "dataset": "shapes", "epochs": 1})
        RunFolder(made["qq_cancelled"]).write_status("cancelled", message="cancelled while waiting in the queue")
        at = goto(app, "train")
        table = table_with(at, "State")
        assert list(table["Run"])[:4] == ["zz_running", "mm_starting", "aa_waiting", "qq_cancelled"]
        states = dict(zip(table["Run"], table["State"]))
        assert states["zz_running"] == "running · epoch 1/3"
        assert states["mm_starting"].startswith("starting") and "queued" not in states["mm_starting"]
        assert states["aa_waiting"] == "queued · 1 of 1 in line"
        # a run cancelled while queued (no last_state.pt) can be resumed: it starts from epoch 0
        at.selectbox(key="tr_resume_pick").set_value("qq_cancelled").run()
        assert not at.button(key="tr_resume_any").disabled
        at.button(key="tr_resume_any").click().run()
        assert ("resume", made["qq_cancelled"]) in recorded_launches
        # ... or deleted, after a confirmation
        at.selectbox(key="tr_resume_pick").set_value("qq_cancelled").run()
        at.button(key="tr_delete").click().run()
        assert made["qq_cancelled"].exists()
        assert any("cannot be undone" in w.value for w in at.warning)
        at.button(key="tr_delete_no").click().run()
        assert made["qq_cancelled"].exists()
        at.button(key="tr_delete").click().run()
        at.button(key="tr_delete_yes").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert not made["qq_cancelled"].exists()
        assert "qq_cancelled" not in set(table_with(at, "State")["Run"])
        # a running run is not offered for deletion
        assert "zz_running" not in at.selectbox(key="tr_resume_pick").options
    finally:
        sleeper.kill()
        for path in made.values():
            shutil.rmtree(path, ignore_errors=True)


def test_the_sidebar_names_the_same_variable_as_core():
    from core.models.user_models import ENV_VAR
    from dashboard.components import user_models

    assert user_models.ENV_VAR == ENV_VAR


def test_train_page_lists_a_user_model_reloads_an_edit_and_survives_a_broken_file(runs_env, model_files):
    (model_files / "tiny.py").write_text(TINY.format(name="tiny_e3", description="version one", width=8))
    registry.reload_user_models()
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    at = goto(at, "train")
    ours = table_with(at, "sha256")
    assert list(ours["Model"]) == ["tiny_e3"] and list(ours["Description"]) == ["version one"]
    assert ours["File"][0] == str((model_files / "tiny.py").resolve())
    assert at.selectbox(key="tr_model").options[0] == "tiny_e3 (yours)"
    at.selectbox(key="tr_model").set_value("tiny_e3").run()
    params_v1 = {m.label: m.value for m in at.metric}["Parameters"]
    # edit the file: Reload picks it up without a restart, and the cost is counted anew
    (model_files / "tiny.py").write_text(TINY.format(name="tiny_e3", description="version two", width=16))
    at.button(key="tr_reload_models").click().run()
    assert not at.exception
    assert list(table_with(at, "sha256")["Description"]) == ["version two"]
    params_v2 = {m.label: m.value for m in at.metric}["Parameters"]
    assert params_v1 != params_v2 and int(params_v2.replace(",", "")) == 3 * 16 * 9 + 16 + 16 * 12 + 12
    # a broken file: its message names file and line; tiny_e3 and the built-ins stay
    (model_files / "broken.py").write_text("from torch import nn\n\n\ndef oops(:\n    pass\n")
    (model_files / "raises.py").write_text("import no_such_module_e3\n")
    (model_files / "dup.py").write_text(TINY.format(name="cnn2", description="takes a built-in's name", width=4))
    at.button(key="tr_reload_models").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = _errors(at)
    assert any("broken.py line 4: SyntaxError" in e for e in errors), errors
    assert any("raises.py line 1: ModuleNotFoundError" in e for e in errors), errors
    assert any("dup.py" in e and "cnn2" in e and "registered twice" in e for e in errors), errors
    options = at.selectbox(key="tr_model").options
    assert "tiny_e3 (yours)" in options and "cnn2" in options and "alexnet_seed" in options
    assert at.title[0].value == "Train a model" and table_with(at, "State") is not None


def test_sidebar_setting_loads_model_files_for_the_server(runs_env, tmp_path, monkeypatch):
    folder = tmp_path / "sidebar_models"
    folder.mkdir()
    (folder / "mine.py").write_text(TINY.format(name="sidebar_e3", description="from the sidebar", width=4))
    monkeypatch.setenv("ARCHSCOPE_MODELS", "")
    try:
        at = AppTest.from_file(str(APP), default_timeout=180)
        at.run()
        at = goto(at, "train")
        assert "sidebar_e3 (yours)" not in at.selectbox(key="tr_model").options
        at.sidebar.text_input(key="archscope_models_setting").set_value(str(folder)).run()
        assert not at.exception
        assert os.environ["ARCHSCOPE_MODELS"] == str(folder)     # trainers launched from now on inherit it
        assert "sidebar_e3 (yours)" in at.selectbox(key="tr_model").options
        at.sidebar.text_input(key="archscope_models_setting").set_value(str(tmp_path / "missing.py")).run()
        assert any("missing.py: no such file or folder" in e for e in _errors(at)), _errors(at)
        assert not at.exception and "sidebar_e3 (yours)" not in at.selectbox(key="tr_model").options
    finally:
        registry.reload_user_models("")


def test_complexity_preview_flags_what_the_counter_cannot_count(runs_env, model_files):
    (model_files / "spectral.py").write_text(FFT)
    registry.reload_user_models()
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    at = goto(at, "train")
    at.selectbox(key="tr_model").set_value("spectral_e3").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert "MACs / image (at least)" in metrics and int(metrics["MACs / image (at least)"].replace(",", "")) > 0
    assert any("_fft_r2c" in w.value and "never a zero" in w.value for w in at.warning)


def test_a_model_with_the_wrong_output_shape_cannot_be_launched(runs_env, model_files):
    (model_files / "wrong.py").write_text(TINY.format(name="wrong_e3", description="ten outputs", width=4)
                                          .replace("nn.Linear(width, num_classes)", "nn.Linear(width, 10)"))
    registry.reload_user_models()
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    at = goto(at, "train")
    at.selectbox(key="tr_model").set_value("wrong_e3").run()
    # TrainConfig.validate's check of a student's model (one forward of a batch of 2) names the file,
    # the model and both shapes; the page shows it and does not launch.
    assert any("wrong.py" in e and "wrong_e3" in e and "[2, 10]" in e and "[2, 12]" in e
               for e in _errors(at)), _errors(at)
    assert _launch(at).disabled


def test_dataset_preview_and_upload_limit_are_shown(app, runs_env):
    at = goto(app, "train")
    at.selectbox(key="tr_channels").set_value("RG").run()
    at.selectbox(key="tr_strategy").set_value("zero-fill").run()
    images = at.get("image")
    assert len(images) == 12          # one strip per class of `shapes`
    assert any(c.value.startswith("zero-fill: B set to 0") for c in at.caption)
    limit = at.file_uploader[0].label
    import streamlit as st
    assert f"at most {int(st.get_option('server.maxUploadSize'))} MB" in limit


def test_a_folder_dataset_asks_for_its_folder_and_a_missing_one_leaves_the_page_whole(app, runs_env, tmp_path):
    at = goto(app, "train")
    at.selectbox(key="tr_dataset").set_value("imagefolder").run()
    assert any("enter its path" in i.value for i in at.info)
    at.text_input(key="tr_folder_imagefolder").set_value(str(tmp_path / "no_such_folder")).run()
    assert not at.exception and any("is not available" in e for e in _errors(at)), _errors(at)
    assert table_with(at, "State") is not None and any(s.value == "Load runs" for s in at.subheader)


def test_device_and_torchrun_processes_on_a_two_gpu_server(app, runs_env, recorded_launches, monkeypatch):
    """A server with two GPUs (a JobRegistry given a fake GPU list): cuda is offered, the process count
    goes to JobRegistry.submit(nproc=...), and more processes than GPUs is refused with the reason."""
    from core.training.queue import JobRegistry
    from dashboard.components import jobs

    two_gpus = JobRegistry(start_thread=False, gpus=["0", "1"])
    monkeypatch.setattr(jobs, "job_registry", lambda: two_gpus)
    at = goto(app, "train")
    assert at.selectbox(key="tr_device").options == ["auto", "cpu", "cuda"]
    assert any("GPUs of this server: 0 (free), 1 (free)" in c.value for c in at.caption)
    at.selectbox(key="tr_device").set_value("cuda").run()
    at.number_input(key="tr_nproc").set_value(3).run()
    assert any("3 training processes need 3 GPUs" in e for e in _errors(at)) and _launch(at).disabled
    at.number_input(key="tr_nproc").set_value(2).run()
    at.text_input(key="tr_name").set_value("two_gpus").run()
    _launch(at).click().run()
    [(_, config, run_dir, nproc)] = recorded_launches
    assert (config.device, nproc, run_dir.name) == ("cuda", 2, "two_gpus")


# ---- in Chromium: what the user sees ------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


@pytest.fixture(scope="module")
def browser_train(fixture_runs, tmp_path_factory):
    """A real server on a copy of the fixture runs, and a Chromium page factory."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.dashboard.conftest import streamlit_server
    from tests.dashboard.test_browser import CHROMIUM_ARGS

    base = tmp_path_factory.mktemp("train-browser")
    root = base / "runs"
    shutil.copytree(fixture_runs, root)
    with streamlit_server(root, base / "streamlit.log") as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield url, root, browser
        browser.close()


def _idle(pg) -> None:
    pg.wait_for_timeout(400)     # let a rerun start before waiting for it to end
    pg.wait_for_selector(IDLE, timeout=120_000)


def _type(pg, role: str, label: str, value: str) -> None:
    box = pg.get_by_role(role, name=label, exact=True)
    box.fill(value)
    box.press("Enter")
    _idle(pg)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("width", [1400, 1000])
def test_in_the_browser_invalid_fields_and_names_disable_launch_and_the_page_stays_whole(browser_train, width):
    url, root, browser = browser_train
    before = sorted(p.name for p in root.iterdir())
    pg = browser.new_page(viewport={"width": width, "height": 1000})
    try:
        pg.goto(f"{url}/train")
        pg.get_by_role("heading", name="Train a model").wait_for(timeout=60_000)
        _idle(pg)
        # the cost metrics are numbers in full: no ellipsis, nothing clipped
        values = pg.locator("[data-testid='stMetricValue']")
        values.nth(3).wait_for(timeout=60_000)
        assert values.count() == 4
        for i in range(4):
            clipped = values.nth(i).evaluate("e => [e.scrollWidth > e.clientWidth, e.innerText]")
            assert not clipped[0] and "…" not in clipped[1], (width, clipped)
        launch = pg.get_by_role("button", name="Launch", exact=True)
        assert launch.is_enabled()
        _type(pg, "spinbutton", "Epochs", "0")
        _type(pg, "spinbutton", "Batch size", "999999")
        errors = pg.locator("[data-testid='stAlertContentError']").all_inner_texts()
        assert any(e.startswith("Epochs is 0") for e in errors) and any(e.startswith("Batch size is 999999")
                                                                       for e in errors), errors
        assert launch.is_disabled()
        _type(pg, "spinbutton", "Epochs", "2")
        _type(pg, "spinbutton", "Batch size", "64")
        for name in ("x" * 300, "bad name:*?"):
            _type(pg, "textbox", "Run name", name)
            errors = [e for e in pg.locator("[data-testid='stAlertContentError']").all_inner_texts() if "run name" in e]
            assert len(errors) == 1 and RUN_ID_RULE in errors[0], errors
            assert launch.is_disabled()
            assert pg.locator("[data-testid='stException']").count() == 0
            pg.get_by_role("heading", name="Trainings").wait_for()          # the page stays whole
            pg.get_by_role("heading", name="Load runs").wait_for()
        pg.screenshot(path=str(Path(tempfile.gettempdir()) / f"archscope-train-invalid-{width}.png"))
    finally:
        pg.close()
    assert sorted(p.name for p in root.iterdir()) == before, "nothing was started"
