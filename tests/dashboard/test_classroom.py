"""Issue 14, as a teacher sees it: the shipped runs (checkpoints/) in the real dashboard.

AppTest checks (what a page lists and says) and browser checks (Playwright + Debian chromium,
asserting what is drawn): nothing overlaps on Predict at 1400 and 1000 px, every run of a 9-run
Compare selection has its own (colour, dash) in every figure, the zero-fill group's robustness
heatmap is 7 x 7, and a count in the cost table is written in full. Screenshots go to
test-output/classroom/ for a human to look at.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.dashboard.conftest import APP, REPO, goto, streamlit_server, table_with

SHIPPED = REPO / "checkpoints"
SHOTS = REPO / "test-output" / "classroom"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
needs_shipped = pytest.mark.skipif(not (SHIPPED / "small-resnet34-s0").is_dir(), reason="shipped runs are missing")


# ---- AppTest: what the pages list --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_app():
    from streamlit.testing.v1 import AppTest

    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHSCOPE_RUNS", str(SHIPPED))
    try:
        at = AppTest.from_file(str(APP), default_timeout=300)
        at.run()
        assert not at.exception, at.exception
        yield at
    finally:
        mp.undo()


@needs_shipped
@pytest.mark.slow
def test_overview_badges_results_only_runs_and_shows_chance(shipped_app):
    board = table_with(shipped_app, "Weights").set_index("Run")
    assert board.loc["small-resnet34-s1", "Weights"] == "⚠ results only"
    assert board.loc["small-resnet34-s0", "Weights"] == "yes"
    assert board.loc["small-resnet34-s0", "Params"] == "21,290,828"
    assert board.loc["ciresan-residual-fc2", "Chance accuracy"] == "0.100"
    assert any("python -m core.suite seeds --only small-resnet34-s1" in m.value for m in shipped_app.markdown)


@needs_shipped
@pytest.mark.slow
@pytest.mark.parametrize("page, key", [("predict", "pr_runs"), ("explain", "ex_runs")])
def test_runs_without_weights_are_listed_flagged_with_the_command(shipped_app, page, key):
    at = goto(shipped_app, page)
    picker = at.multiselect(key=key)
    flagged = [o for o in picker.options if "small-resnet34-s1" in o]
    assert flagged and flagged[0].startswith("⚠") and "no weights" in flagged[0]     # a search finds it
    pairs = [o for o in picker.options if "transform-cnn3-pairs-s0" in o]
    assert pairs and "takes image pairs" in pairs[0]
    picker.set_value([*picker.value, "small-resnet34-s1", "transform-cnn3-pairs-s0"]).run()
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "python -m core.suite seeds --only small-resnet34-s1" in warnings
    assert any("again for its weights" in b.label for b in at.button)           # one click queues it
    assert "image pairs" in warnings and "python -m core.evaluate" in warnings
    assert not any("cannot be loaded" in e.value for e in at.error)          # never offered to the model


def test_fitted_columns_are_as_wide_as_their_longest_formatted_value():
    import pandas as pd

    from core.analysis import figures
    from dashboard.components.tables import fitted_column_config, table_height

    shown = figures.readable_table(figures.cost_table_frame(
        [{"run_id": "small-resnet34", "model": "resnet34", "params": 21290828, "macs": 1160537088, "test_acc": 0.7},
         {"run_id": "tiny", "model": "cnn2", "params": 864, "macs": 884736, "test_acc": 0.5}]))
    config = fitted_column_config(shown)
    assert config["Params"]["width"] >= 8 * len("21,290,828") and config["MACs"]["width"] >= 8 * len("1,160,537,088")
    assert "Params" in config and config["Run"]["width"] >= 8 * len("small-resnet34")
    assert fitted_column_config(pd.DataFrame({"n": [1, 2]})) == {}      # numbers keep Streamlit's own column
    assert table_height(3) == 35 * 4 + 3 and table_height(300) == 600   # sized to its rows, up to a cap


# ---- browser ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(SHIPPED, SHOTS / "streamlit.log", timeout=120) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _page(browser, width: int):
    pg = browser.new_page(viewport={"width": width, "height": 1000})
    pg.set_default_timeout(240_000)
    return pg


def _settle(pg, extra: float = 0.8) -> None:
    time.sleep(extra)       # let a rerun start before waiting for it to end
    pg.wait_for_selector(IDLE, timeout=240_000)
    pg.wait_for_function("() => !document.querySelector(\"[data-testid='stSkeleton']\")", timeout=240_000)


def _open(pg, url: str, path: str) -> None:
    pg.goto(f"{url}/{path}")
    pg.wait_for_selector("h1")
    _settle(pg, 1.5)
    assert pg.locator("[data-testid='stException']").count() == 0


def _load_group(pg, group: str) -> None:
    pg.get_by_test_id("stSelectbox").filter(has_text="Load a course experiment").click()
    pg.get_by_role("option").filter(has_text=group).click()
    _settle(pg, 1.5)


def _tab(pg, name: str) -> None:
    """Open one of Compare's tabs (only the open tab is drawn) and wait for its charts' data."""
    pg.get_by_role("tab", name=name, exact=True).click()
    _settle(pg, 1.0)
    pg.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].every(d => d.data)", timeout=120_000)
    assert pg.locator("[data-testid='stException']").count() == 0


def _wait_for_value(select, text: str, timeout: float = 120) -> None:
    """Wait until a selectbox shows ``text`` as its value."""
    deadline = time.time() + timeout
    while text not in select.aria_snapshot():
        assert time.time() < deadline, select.aria_snapshot()
        time.sleep(0.5)


def _overlaps(boxes: list[dict]) -> list[tuple[str, str]]:
    def hit(a, b):
        return a["x"] < b["x"] + b["width"] - 1 and b["x"] < a["x"] + a["width"] - 1 \
            and a["y"] < b["y"] + b["height"] - 1 and b["y"] < a["y"] + a["height"] - 1
    return [(a["what"], b["what"]) for i, a in enumerate(boxes) for b in boxes[i + 1:] if hit(a, b)]


@needs_shipped
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("width", [1400, 1000])
def test_predict_images_and_headings_do_not_overlap(server, browser, width):
    pg = _page(browser, width)
    _open(pg, server, "predict")
    pg.get_by_test_id("stRadioGroup").get_by_text("test images", exact=True).click()
    _settle(pg, 1.5)
    boxes = pg.evaluate("""() => {
        const main = document.querySelector('[data-testid=stMain]');
        const els = [...main.querySelectorAll('[data-testid=stImage] img, h4, [data-testid=stMarkdownContainer] strong,'
                                              + ' [data-testid=stImage] [data-testid=stImageCaption]')];
        // a heading's own bold words are part of it, not a separate box
        return els.filter(e => e.tagName === 'H4' || !e.closest('h4')).map((e, i) => { const r = e.getBoundingClientRect();
            return {what: `${e.tagName}#${i} ${(e.innerText || e.alt || '').slice(0, 30)}`,
                    x: r.x, y: r.y + window.scrollY, width: r.width, height: r.height}; })
                  .filter(b => b.width > 0 && b.height > 0);
    }""")
    images = [b for b in boxes if b["what"].startswith("IMG")]
    assert len(images) >= 4 * 3, boxes          # 4 test images, each shown once and as 2 models see it
    pg.screenshot(path=str(SHOTS / f"predict_{width}.png"), full_page=True)
    assert not _overlaps(boxes), _overlaps(boxes)[:5]
    pg.close()


@needs_shipped
@pytest.mark.browser
@pytest.mark.slow
def test_compare_group_runs_have_one_distinct_style_each_in_every_figure(server, browser):
    """The channel-robustness group, seeds not grouped: every run (20 of them) keeps one colour in
    every figure, and no two runs share a (colour, dash)."""
    from core.suite import suite_groups

    pg = _page(browser, 1400)
    _open(pg, server, "compare")
    _load_group(pg, "channel-robustness")
    pg.get_by_test_id("stCheckbox").filter(has_text="Group runs that differ only in seed").click()
    _settle(pg, 1.5)
    traces, rows = [], []
    for tab in ("Curves", "Accuracy vs cost", "Per class"):        # the tabs whose figures name runs
        _tab(pg, tab)
        traces += pg.evaluate("""tab => [...document.querySelectorAll('.js-plotly-plot')].map((d, fi) =>
            (d.data || []).filter(t => t.name && t.type !== 'heatmap' && t.fill !== 'toself').map(t => ({
                figure: `${tab} ${fi}`, name: t.name,
                colour: (t.line && t.line.color) || (t.marker && t.marker.color) || null,
                dash: (t.line && t.line.dash) || (t.marker && t.marker.pattern && t.marker.pattern.shape) || 'solid'})))
            .flat()""", tab)
        rows += pg.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(d => (d.data || [])
            .filter(t => t.type === 'heatmap' && t.colorbar && t.colorbar.title
                    && (t.colorbar.title.text || t.colorbar.title) === 'F1')
            .map(t => t.y))""")
    runs = suite_groups("seeds")["channel-robustness"]
    assert len(runs) >= 9
    per_run = {}
    for t in traces:
        if t["name"] in runs:
            per_run.setdefault(t["name"], set()).add((t["colour"], t["dash"]))
    figures_with_all = {t["figure"] for t in traces if t["name"] == runs[-1]}
    assert len(figures_with_all) >= 2, traces[:5]           # curves and Pareto at least
    # per-class F1 of 20 runs: one heatmap row per run (grouped bars would be 2 px wide)
    assert len(rows) == 1 and list(rows[0]) == runs
    assert set(per_run) == set(runs)
    # one colour per run in every figure, and no two runs alike
    assert all(len({c for c, _ in styles}) == 1 for styles in per_run.values()), per_run
    firsts = {name: sorted(styles)[0] for name, styles in per_run.items()}
    assert len(set(firsts.values())) == len(runs), firsts
    pg.close()


@needs_shipped
@pytest.mark.browser
@pytest.mark.slow
def test_zero_fill_group_has_a_7x7_robustness_heatmap_with_chance_marked(server, browser):
    """Seeds grouped (the default): one heatmap row per model, trained combination and fill; the
    seven zero-fill rows of cnn3 test on all seven combinations."""
    pg = _page(browser, 1400)
    _open(pg, server, "compare")
    _load_group(pg, "channel-robustness")
    _tab(pg, "Robustness")
    heat = pg.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(d => d.data && d.data[0])
        .filter(t => t && t.type === 'heatmap' && String(t.hovertemplate || '').includes('tested on'))
        .map(t => ({x: t.x, y: t.y, ticktext: t.colorbar && t.colorbar.ticktext, text: t.text}))""")
    assert len(heat) == 1, heat
    [h] = heat
    zero_fill = [i for i, label in enumerate(h["y"]) if label.startswith("cnn3 ·") and "(zero-fill)" in label]
    assert len(zero_fill) == 7 and h["x"] == ["RGB", "RG", "RB", "GB", "R", "G", "B"], h["y"]
    assert len(h["y"]) == len(set(h["y"]))                  # sigmoid and mean fills on R are rows of their own
    assert any(str(t).startswith("chance 0.08") for t in h["ticktext"])
    assert any("≈ chance" in h["text"][i][j] for i in zero_fill for j in range(7))   # e.g. B on an RG model
    assert all(cell != "n/a" for i in zero_fill for cell in h["text"][i])
    pg.locator(".js-plotly-plot").filter(has_text="tested on").first.screenshot(path=str(SHOTS / "robustness.png"))
    pg.close()


@needs_shipped
@pytest.mark.browser
@pytest.mark.slow
def test_cost_table_shows_counts_in_full(server, browser):
    """The grid draws on a canvas; its accessible DOM holds the cell value, which is the formatted
    text: the full count with separators (the column's width is tested in test_fitted_columns...)."""
    pg = _page(browser, 1000)
    _open(pg, server, "compare")
    _load_group(pg, "small-vs-resnet34")
    grid = pg.get_by_test_id("stDataFrame").filter(has=pg.locator("th", has_text="Input (C x H x W)")).first
    grid.scroll_into_view_if_needed()
    # The grid renders only the columns in view into its accessible table: scroll Params into view.
    grid.locator(".dvn-scroller").evaluate("e => { e.scrollLeft = 250; }")
    pg.wait_for_timeout(800)
    cells = grid.locator("td[role='gridcell']").all_inner_texts()
    assert "21,290,828" in cells, cells                    # ResNet-34's params in full, not "1290828"
    grid.screenshot(path=str(SHOTS / "cost_table_1000.png"))
    pg.close()


@needs_shipped
@pytest.mark.browser
@pytest.mark.slow
def test_compare_draws_only_the_open_tab_and_keeps_its_settings(server, browser):
    """Switching to Compare draws the Summary tab only (no chart); a tab's settings survive opening
    another tab and coming back (a widget that is not drawn would otherwise lose its state)."""
    pg = _page(browser, 1400)
    _open(pg, server, "compare")
    _load_group(pg, "plain-vs-deformable")
    assert pg.locator(".js-plotly-plot").count() == 0
    assert pg.get_by_test_id("stDataFrame").count() >= 2                 # what differs, the cost table
    _tab(pg, "Confusions")
    assert pg.locator(".js-plotly-plot").count() >= 2
    pg.get_by_test_id("stCheckbox").filter(has_text="Normalise rows").click()
    _settle(pg, 1.0)
    _tab(pg, "Curves")
    assert pg.get_by_test_id("stCheckbox").filter(has_text="Normalise rows").count() == 0
    _tab(pg, "Confusions")
    assert not pg.get_by_test_id("stCheckbox").filter(has_text="Normalise rows").locator("input").is_checked()
    pg.close()


@needs_shipped
@pytest.mark.browser
@pytest.mark.slow
def test_clicking_a_confusion_opens_its_images(server, browser):
    """A click on a cell off the diagonal of a confusion matrix sets the gallery to that run and cell."""
    pg = _page(browser, 1400)
    _open(pg, server, "compare")
    _load_group(pg, "plain-vs-deformable")
    _tab(pg, "Confusions")
    graph = pg.locator(".js-plotly-plot").filter(has_text="predicted").first
    graph.scroll_into_view_if_needed()
    target = graph.evaluate("""d => {
        const t = d.data.find(t => t.name === 'click a confusion');
        const L = d._fullLayout, x = t.x[0], y = t.y[0];
        return {x: L.xaxis._offset + L.xaxis.d2p(x), y: L.yaxis._offset + L.yaxis.d2p(y), true_: y, pred: x,
                run: (L.title.text || '').replace(/<[^>]*>/g, '').split(':')[0]};
    }""")
    box = graph.bounding_box()
    pg.mouse.click(box["x"] + target["x"], box["y"] + target["y"])
    # a selectbox shows its value in its combobox (the accessible tree), not as the element's text
    _wait_for_value(pg.get_by_test_id("stSelectbox").filter(has_text="True → predicted"),
                    f"{target['true_']} → {target['pred']}")
    _wait_for_value(pg.get_by_test_id("stSelectbox").filter(has=pg.get_by_role("combobox", name="Run", exact=True)),
                    target["run"])
    _settle(pg, 1.5)
    assert pg.locator("[data-testid='stImage']").count() > 0                   # its test images are drawn
    pg.screenshot(path=str(SHOTS / "confusion_click.png"), full_page=False)
    pg.close()


@needs_shipped
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("path", ["compare", "explain"])
def test_every_tab_label_is_visible_at_1000_px(server, browser, path):
    """The tab bar fits the page at 1000 px: no tab hidden behind a scroll arrow."""
    pg = _page(browser, 1000)
    _open(pg, server, path)
    bar = pg.get_by_role("tablist").first
    bar.wait_for()
    fit = bar.evaluate("e => ({scroll: e.scrollWidth, client: e.clientWidth})")
    assert fit["scroll"] <= fit["client"] + 1, fit
    labels = pg.get_by_role("tab").all_inner_texts()
    assert len(labels) >= 5 and all(pg.get_by_role("tab", name=t, exact=True).is_visible() for t in labels)
    pg.close()
