"""The real thing: `streamlit run dashboard/app.py` driven by headless Chromium through Playwright.

Opens every page, launches a one-epoch training from the Train page and waits for its curve,
uploads an image on Predict and sees two runs' predictions, opens Explain and sees CAM images.
Screenshots go to test-output/browser/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from core.training.run_folder import RunFolder
from tests.dashboard.conftest import REPO, streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
SHOTS = REPO / "test-output" / "browser"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


@pytest.fixture(scope="module")
def server(fixture_runs):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    pytest.importorskip("playwright.sync_api")
    # A copy: the training launched from the browser must not change the other tests' fixture.
    base = Path(tempfile.mkdtemp(prefix="archscope-browser-"))
    root = base / "runs"
    shutil.copytree(fixture_runs, root)
    try:
        with streamlit_server(root, base / "streamlit.log") as url:
            yield url, root
    finally:
        # any training the browser started and that is still running
        for run in root.iterdir():
            st = RunFolder(run).read_status() if run.is_dir() else {}
            if st.get("state") in ("running", "queued") and st.get("pid"):
                try:
                    os.killpg(int(st["pid"]), 15)
                except OSError:
                    pass
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def _settle(pg, extra: float = 0.4) -> None:
    time.sleep(extra)   # let a rerun start before waiting for it to end
    pg.wait_for_selector(IDLE, timeout=120_000)


def _open(pg, url: str, path: str) -> None:
    pg.goto(f"{url}/{path}")
    pg.wait_for_selector("[data-testid='stApp']")
    _settle(pg, 1.0)


def _shot(pg, name: str) -> None:
    """Streamlit scrolls inside its own container, so full_page alone shows one screen: grow the
    viewport to the content's height first."""
    height = pg.evaluate("() => Math.max(...[...document.querySelectorAll('section, [data-testid=stMain]')]"
                         ".map(e => e.scrollHeight), 1000)")
    pg.set_viewport_size({"width": 1400, "height": min(int(height) + 100, 8000)})
    time.sleep(0.5)
    pg.screenshot(path=str(SHOTS / name), full_page=True)
    pg.set_viewport_size({"width": 1400, "height": 1000})


def _no_exception(pg) -> None:
    assert pg.locator("[data-testid='stException']").count() == 0, pg.locator("[data-testid='stException']").first.inner_text()


def test_every_page_opens(server, page):
    url, _ = server
    for path, heading in [("", "ArchScope"), ("train", "Train a model"), ("compare", "Compare runs"),
                          ("predict", "Predict"), ("explain", "Explain"), ("architecture", "Architecture and cost")]:
        _open(page, url, path)
        page.get_by_role("heading", name=heading).first.wait_for()
        _no_exception(page)
        if path in ("compare", "architecture", ""):
            page.locator("[data-testid='stDataFrame']").first.wait_for()
        if path == "compare":           # its figures are in tabs, drawn when opened
            page.get_by_role("tab", name="Curves", exact=True).click()
            _settle(page)
            _no_exception(page)
        if path in ("compare", "architecture"):
            page.locator(".js-plotly-plot").first.wait_for()
        _shot(page, f"page_{path or 'overview'}.png")


def _set_number(pg, label: str, value: str) -> None:
    box = pg.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    _settle(pg)


def test_launch_training_and_see_its_curve(server, page):
    url, root = server
    _open(page, url, "train")
    _set_number(page, "Epochs", "1")
    _set_number(page, "Max train images (0 = all)", "256")
    name = page.get_by_label("Run name", exact=True)
    name.fill("browser_run")
    name.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Launch").click()
    _settle(page)
    page.get_by_text("in the background", exact=False).first.wait_for(timeout=30_000)
    run = RunFolder(root / "browser_run")
    deadline = time.time() + 150
    while time.time() < deadline and run.read_status().get("state") not in ("done", "failed", "cancelled"):
        time.sleep(1)
    log = run.path / "train.log"
    assert run.read_status().get("state") == "done", (run.read_status(), log.read_text()[-3000:] if log.exists() else "")
    # the live fragment draws the run's curve (plotly renders lazily: wait for the plot itself)
    page.locator(".st-key-tr_curve_browser_run .js-plotly-plot").first.wait_for(timeout=60_000)
    page.get_by_text("browser_run — done", exact=False).first.wait_for(timeout=30_000)
    _no_exception(page)
    _shot(page, "train_curve.png")


def test_predict_upload_shows_two_runs(server, page, tmp_path):
    from PIL import Image, ImageDraw

    url, _ = server
    img = Image.new("RGB", (64, 64), (30, 30, 30))
    ImageDraw.Draw(img).ellipse((16, 16, 48, 48), fill=(230, 40, 40))
    path = tmp_path / "red_circle.png"
    img.save(path)
    _open(page, url, "predict")
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
    _settle(page, 1.0)
    page.get_by_text("red_circle.png").first.wait_for()
    charts = page.locator("[class*='st-key-pr_bar_0_'] .js-plotly-plot")   # top-k bars of image 1, per run
    charts.nth(1).wait_for(timeout=60_000)
    assert charts.count() == 2
    assert page.get_by_text("as the model sees it", exact=False).count() >= 2
    _no_exception(page)
    assert page.locator("[data-testid='stAlertContentError']").count() == 0
    _shot(page, "predict.png")


def test_explain_shows_cam_images(server, page):
    url, _ = server
    _open(page, url, "explain")
    page.get_by_text("Grad-CAM for", exact=False).first.wait_for(timeout=90_000)
    imgs = page.locator("[data-testid='stImage'] img, [data-testid='stFullScreenFrame'] img")
    assert imgs.count() >= 3     # the input + one CAM per selected run
    _no_exception(page)
    _shot(page, "explain.png")
