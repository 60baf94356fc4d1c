"""The dashboard under hostile files: AppTest of Predict / Explain / Overview / Train, and one real
browser session (Playwright + Chromium) uploading hostile files, including one over the upload limit.

Already covered elsewhere (not repeated): one broken upload on Predict and Explain, a broken config
and a pickle-as-safetensors run on every page, a '../' zip on the Train page
(tests/dashboard/test_pages.py).
"""

from __future__ import annotations

import io
import re
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import APP, goto, streamlit_server, table_with
from tests.security.conftest import BAD_RUNS, hostile_uploads, make_hostile_root, odd_but_valid_uploads
from tests.security.test_run_folders import make_broken_root


def _app(root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("ARCHSCOPE_RUNS", str(root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_predict_page_bad_runs_and_hostile_uploads(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    root = make_hostile_root(tmp_path / "runs", marker)
    at = goto(_app(root, monkeypatch), "predict")
    at.multiselect(key="pr_runs").set_value(sorted([*BAD_RUNS, "good"])).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    for run_id, fname in BAD_RUNS.items():
        assert any(f"`{run_id}` cannot be loaded" in e and fname in e for e in errors), (run_id, errors)
    files = {**hostile_uploads(), **odd_but_valid_uploads()}
    t = time.perf_counter()
    at.file_uploader(key="pr_upload").set_value([(n, d, "image/png") for n, d in files.items()]).run()
    seconds = time.perf_counter() - t
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    for name in hostile_uploads():
        assert any(e.startswith(f"{name}: ") for e in errors), (name, errors)
    table = table_with(at, "prob")
    assert set(table["image"]) == set(odd_but_valid_uploads()) and set(table["run"]) == {"good"}
    assert seconds < 60, seconds
    assert not marker.exists()


def test_explain_page_hostile_upload_then_a_good_one(tmp_path, monkeypatch):
    root = make_hostile_root(tmp_path / "runs", tmp_path / "PWNED")
    at = goto(_app(root, monkeypatch), "explain")
    at.multiselect(key="ex_runs").set_value(["good"]).run()
    at.radio(key="ex_source").set_value("upload").run()
    for name, data in hostile_uploads().items():
        at.file_uploader(key="ex_upload").upload(name, data, "image/png").run()
        assert not at.exception
        assert any(e.value.startswith(f"{name}: ") for e in at.error), name
    at.file_uploader(key="ex_upload").upload("anim.gif", odd_but_valid_uploads()["anim.gif"], "image/gif").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(c.startswith("Grad-CAM for") for im in at.image for c in im.captions)
    for tab in ("Attention", "Dynamic conv", "Deformable conv", "Embeddings"):
        at.session_state["ex_tab"] = tab        # the uploaded image, explained in each tab
        at.run()
        assert not at.exception, (tab, [e.value for e in at.exception])


def test_overview_and_train_pages_on_broken_run_folders(tmp_path, monkeypatch):
    root = make_broken_root(tmp_path / "runs")
    at = _app(root, monkeypatch)
    board = table_with(at, "Test accuracy").set_index("Run")
    assert len(board) == 8 and board.loc["dead_pid", "State"] == "failed"
    warned = " ".join(w.value for w in at.warning)
    for run_id in ("no_status", "garbage_status", "garbage_config", "garbage_eval"):
        assert f"`{run_id}`" in warned, run_id
    assert "`good`" not in warned and "`half_line`" not in warned
    at = goto(at, "train")
    table = table_with(at, "State").set_index("Run")
    assert len(table) == 8 and table.loc["dead_pid", "State"] == "failed"
    for page in ("compare", "predict", "explain", "architecture"):
        goto(at, page)
    for page, key, tabs in (("compare", "cmp_tab", ("Curves", "Accuracy vs cost", "Confusions", "Per class",
                                                    "Robustness", "Report")),
                            ("explain", "ex_tab", ("Attention", "Dynamic conv", "Deformable conv",
                                                   "Embeddings"))):
        for tab in tabs:
            goto(at, page)              # each tab runs only when open
            at.session_state[key] = tab
            at.run()
            assert not at.exception, (page, tab, [e.value for e in at.exception])


def _zip(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def test_train_page_refuses_zip_slip_forms_and_writes_nothing(tmp_path, monkeypatch):
    from safetensors.torch import save
    import torch

    root = tmp_path / "runs"
    root.mkdir()
    at = goto(_app(root, monkeypatch), "train")
    link = zipfile.ZipInfo("run/eval.json")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    good = [("run/config.json", b'{"model": "cnn2"}'), ("run/model.safetensors", save({"w": torch.zeros(2)}))]
    cases = {
        "abs.zip": (good + [("/tmp/evil.json", b"{}")], "absolute path"),
        "back.zip": (good + [("run/..\\..\\evil.json", b"{}")], ".."),
        "link.zip": (good + [(link, b"/etc/passwd")], "symbolic link"),
        "..zip": (good, "run name"),                        # the upload's name becomes the run name '.'
    }
    before = {str(p) for p in tmp_path.rglob("*")}
    for name, (entries, why) in cases.items():
        at.file_uploader(key="tr_zip").upload(name, _zip(entries), "application/zip").run()
        assert not at.exception
        assert any(f"`{name}` was not imported" in e.value and why in e.value for e in at.error), \
            (name, [e.value for e in at.error])
    assert {str(p) for p in tmp_path.rglob("*")} == before
    at.file_uploader(key="tr_zip").upload("fine.zip", _zip(good), "application/zip").run()
    assert any("Imported `fine`" in s.value for s in at.success)
    assert (root / "fine" / "model.safetensors").exists()


# ---- the real browser -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_server():
    from tests.dashboard.test_browser import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    pytest.importorskip("playwright.sync_api")
    base = Path(tempfile.mkdtemp(prefix="archscope-hostile-"))
    root = make_hostile_root(base / "runs", base / "PWNED")
    for run in root.iterdir():        # Predict selects the first two runs: one pickle, one good
        if run.name not in ("evil_pickle", "good"):
            shutil.rmtree(run)
    try:
        # The shipped limit is 200 MB (.streamlit/config.toml); this server runs with 20 MB so that the
        # over-the-limit uploads below stay small. The mechanism tested is the same.
        with streamlit_server(root, base / "streamlit.log", extra_args=("--server.maxUploadSize", "20")) as url:
            yield url, base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.browser
@pytest.mark.slow
def test_browser_hostile_uploads_and_upload_limit(hostile_server, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_ARGS, SHOTS, _no_exception, _open, _settle

    url, base = hostile_server
    files = {}
    for name, data in {**hostile_uploads(), "anim.gif": odd_but_valid_uploads()["anim.gif"]}.items():
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    big = tmp_path / "huge.png"                     # 21 MB: over this server's maxUploadSize = 20
    with open(big, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(21 * 1024 * 1024)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            _open(page, url, "predict")
            page.get_by_role("heading", name="Predict").first.wait_for()
            # the pickle run is refused by name; the good one stays usable
            page.get_by_text("cannot be loaded", exact=False).first.wait_for()
            refusal = page.locator("[data-testid='stAlertContentError']").first.inner_text()
            assert "evil_pickle" in refusal and "model.safetensors" in refusal, refusal
            _no_exception(page)
            drop = page.get_by_test_id("stFileUploaderDropzoneInput")
            drop.set_input_files([str(p) for p in files.values()])
            _settle(page, 1.5)
            for name in hostile_uploads():
                page.get_by_text(f"{name}: ", exact=False).first.wait_for(timeout=60_000)
            page.locator("[class*='st-key-pr_bar_'] .js-plotly-plot").first.wait_for(timeout=60_000)
            _no_exception(page)
            # Over the limit, as the browser sends it: the uploader refuses it client side.
            drop.set_input_files(str(big))
            _settle(page, 1.0)
            page.get_by_text(re.compile(r"20(\.0)? ?MB")).first.wait_for(timeout=30_000)
            # Over the limit, as a hostile client sends it (the JS check bypassed): the server answers 413.
            statuses = []
            page.on("response", lambda r: statuses.append(r.status) if "/_stcore/upload_file/" in r.url else None)

            def inflate(route):
                if route.request.method == "PUT":
                    route.continue_(post_data=b"\0" * (21 * 1024 * 1024))
                else:
                    route.continue_()

            page.route("**/_stcore/upload_file/**", inflate)
            drop.set_input_files(str(files["anim.gif"]))
            deadline = time.time() + 60
            while 413 not in statuses and time.time() < deadline:
                page.wait_for_timeout(200)
            assert 413 in statuses, statuses
            page.unroute("**/_stcore/upload_file/**")
            # the page still works: a good upload is predicted
            _open(page, url, "predict")
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(files["anim.gif"]))
            _settle(page, 1.0)
            page.locator("[class*='st-key-pr_bar_'] .js-plotly-plot").first.wait_for(timeout=60_000)
            _no_exception(page)
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "hostile_uploads.png"), full_page=True)
        finally:
            browser.close()
    assert not (base / "PWNED").exists()
