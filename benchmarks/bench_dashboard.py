"""How long each dashboard page takes to render with N runs present (target: < 2 s on the CPU).

    python benchmarks/bench_dashboard.py [--runs ROOT] [--n 10] [--repeats 3] [--browser]

Without --runs it trains two tiny real runs (cnn2 and attn_deform_cnn4 on shapes, 256 images,
32 px, 1 epoch) and clones them into N run folders with different seeds (so Compare also draws
seed groups). Each page is rendered headless with streamlit.testing.v1.AppTest (the page
script's own time, as the server spends it; the browser's drawing is not included):
  cold  the first render in a fresh process (empty st.cache_data / st.cache_resource: loads models,
        counts MACs, computes CAMs),
  warm  the median of ``--repeats`` later renders (what a user waits for on every click).
With --browser it also starts ``streamlit run`` and times, in headless Chromium, until the app is
idle with no placeholder left (script, websocket, drawing included): "browser 1st" = loading the
page's URL in a fresh session (reload / new tab), "browser later" = the median of arriving at it
by clicking the sidebar (what a user does between pages); then issue 14's measures: a fresh
session's Overview until its leaderboard is drawn and until idle, Compare loading the course
group closest to 9 runs and the largest one (20 runs on the shipped checkpoints/), and each run
added on Predict and Explain. Chromium draws on the same CPU.
Compare's warm renders have every run selected (its cold render the default first 4). Prints a table, the machine's load average (this
machine is shared: a high load inflates every number) and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]   # core and dashboard are importable: the project is installed

PAGES = ["overview", "train", "compare", "predict", "explain", "architecture"]
HEADINGS = {"overview": "ArchScope", "train": "Train a model", "compare": "Compare runs", "predict": "Predict",
            "explain": "Explain", "architecture": "Architecture and cost"}
BASE_RUNS = {
    "cnn2": ["--model", "cnn2", "--channels", "RG", "--channel-strategy", "zero-fill"],
    "deform": ["--model", "attn_deform_cnn4"],
}
COMMON = ["--dataset", "shapes", "--image-size", "32", "--max-train-samples", "256", "--epochs", "1", "--quiet",
          "--no-tensorboard", "--num-threads", "1"]


def make_runs(root: Path, n: int) -> None:
    """Train the base runs, then clone them up to n folders (seed changed in config.json)."""
    base = root / "_base"
    base.mkdir(parents=True)
    procs = [subprocess.Popen([sys.executable, "-m", "core.train", *args, *COMMON, "--out", str(base / name)],
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO))) for name, args in BASE_RUNS.items()]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("training the base runs failed")
    names = list(BASE_RUNS)
    for i in range(n):
        src = base / names[i % len(names)]
        dst = root / f"{names[i % len(names)]}_s{i:02d}"
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("last_state.pt", "train.lock", "train.log"))
        cfg = json.loads((dst / "config.json").read_text())
        cfg["seed"] = i
        (dst / "config.json").write_text(json.dumps(cfg))
    shutil.rmtree(base)


@contextlib.contextmanager
def dashboard_server(root: Path, **env: str):
    """A ``streamlit run`` of the dashboard on a free port over the runs in ``root`` (plus ``env``),
    yielded as its URL once it answers its health check; stopped afterwards."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=REPO, env=dict(os.environ, ARCHSCOPE_RUNS=str(root), PYTHONPATH=str(REPO), **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)


def browser_times(root: Path, repeats: int) -> dict:
    """Seconds from page.goto to an idle app without skeletons, per page: first load and median of later ones."""
    from playwright.sync_api import sync_playwright

    out = {}
    with dashboard_server(root) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--headless", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            titles = {"overview": "Overview", "train": "Train", "compare": "Compare", "predict": "Predict",
                      "explain": "Explain", "architecture": "Architecture"}

            def settle(t0: float) -> float:
                time.sleep(0.2)   # let the script run start before waiting for its end
                page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)
                page.wait_for_function("() => !document.querySelector(\"[data-testid='stSkeleton']\")",
                                       timeout=120_000)
                return time.perf_counter() - t0

            for name in PAGES:
                t = time.perf_counter()
                page.goto(f"{url}/{'' if name == 'overview' else name}")   # a fresh session: reload / new tab
                page.wait_for_selector("h1", timeout=120_000)
                if name == "overview":
                    # a useful Overview: the leaderboard is drawn (costs may still be counting)
                    page.wait_for_selector("[data-testid='stDataFrame']", timeout=120_000)
                    out["first_overview_useful_s"] = round(time.perf_counter() - t, 3)
                first = settle(t)
                clicks = []
                for i in range(repeats):
                    other = "predict" if name != "predict" else "train"
                    page.get_by_test_id("stSidebarNav").get_by_text(titles[other], exact=True).click()
                    settle(time.perf_counter())
                    t = time.perf_counter()
                    page.get_by_test_id("stSidebarNav").get_by_text(titles[name], exact=True).click()
                    page.wait_for_selector(f"h1:has-text('{HEADINGS[name]}')", timeout=120_000)
                    clicks.append(settle(t))
                out[name] = {"first_s": round(first, 3), "later_s": round(statistics.median(clicks), 3)}
            out["classroom"] = classroom_times(page, url, settle, repeats)
            out["added_run"] = added_run_times(page, url, settle, root)
            browser.close()
    return out


def added_run_times(page, url: str, settle, root: Path, n: int = 4) -> dict:
    """Issue 14's "each added run on Predict / Explain < 1.5 s": on each page, its default runs
    removed, add ``n`` runs with weights, each of another architecture, one at a time (type the id
    in the run picker, click its option) and time each until idle. Each page's runs are new to it,
    so every added run also loads its model (a cold cache)."""
    from core.training.run_folder import list_runs

    # one run per architecture (a mix of small nets and ResNets on the shipped runs), not 8 cnn3 seeds
    with_weights, models = [], set()
    for r in list_runs(root):
        model = (r.read_config() or {}).get("model")
        if r.best_weights_path.exists() and model not in models:
            models.add(model)
            with_weights.append(r.run_id)
    out = {}
    for name in ("predict", "explain"):
        runs, with_weights = with_weights[:n], with_weights[n:]
        if len(runs) < 2:
            continue
        page.goto(f"{url}/{name}")
        page.wait_for_selector("h1", timeout=120_000)
        settle(time.perf_counter())
        if name == "predict":       # predictions on test images (Explain opens on a test image)
            page.get_by_test_id("stRadio").get_by_text("test images", exact=True).click()
            settle(time.perf_counter())
        picker = page.get_by_test_id("stMultiSelect").first
        remove = picker.get_by_role("button", name=re.compile("^Remove "))     # each chosen run's "x"
        while remove.count():                                                # the page's default runs
            remove.first.click()
            settle(time.perf_counter())
        times = []
        for rid in runs:
            picker.locator("input").click()
            page.keyboard.type(rid)
            option = page.get_by_role("option").filter(has_text=f"{rid} (").first   # "ID (model · data · combo)"
            option.wait_for(timeout=60_000)
            t = time.perf_counter()
            option.click()
            times.append(round(settle(t), 3))
            page.keyboard.press("Escape")
        out[name] = {"runs": runs, "each_s": times, "median_s": round(statistics.median(times), 3)}
        if name == "explain":   # then each other tab with those runs, opened from the CAMs (computed once)
            tabs = {}
            for tab in ("Attention", "Dynamic conv", "Deformable conv"):
                took = []
                for into in (None, took, None, took):
                    t = time.perf_counter()
                    page.get_by_role("tab", name=tab if into is not None else "CAMs",
                                     exact=True).click()
                    elapsed = settle(t)
                    if into is not None:
                        into.append(round(elapsed, 3))
                tabs[tab] = took
            out[name]["tabs_s"] = tabs
    return out


def classroom_times(page, url: str, settle, repeats: int) -> dict:
    """Issue 14's targets, medians over ``repeats``: a fresh session's Overview until the leaderboard
    is drawn ("useful", the page may still be counting costs) and until idle; on Compare, choosing
    the course group closest to 9 runs (the issue's target) and the largest one until idle, each
    chosen after the smallest group, so the page really changes."""
    useful, idle, group = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("[data-testid='stDataFrame']", timeout=120_000)
        useful.append(time.perf_counter() - t)
        idle.append(settle(t))
    page.goto(f"{url}/compare")
    page.wait_for_selector("h1", timeout=120_000)
    settle(time.perf_counter())
    picker = page.get_by_test_id("stSelectbox").filter(has_text="Load a course experiment")
    if picker.count() == 0:
        return {"overview_useful_s": round(statistics.median(useful), 3),
                "overview_idle_s": round(statistics.median(idle), 3)}
    picker.click()
    options = page.get_by_role("option").all_inner_texts()
    picker.click()
    def size(option: str) -> int:
        return int(option.rsplit("(", 1)[-1].split()[0]) if "(" in option else 0

    biggest = max(options, key=size)
    smallest = min(options, key=size)
    nine = min(options, key=lambda o: (abs(size(o) - 9), options.index(o)))     # the 9-run target
    group_nine = []
    for _ in range(repeats):
        for choice, into in ((smallest, None), (nine, group_nine), (smallest, None), (biggest, group)):
            picker.click()
            t = time.perf_counter()
            page.get_by_role("option").filter(has_text=choice).first.click()
            took = settle(t)
            if into is not None:
                into.append(took)
    # Each Compare tab of the 9-run group, opened from Summary, median over ``repeats`` (the first
    # chart of a browser tab also loads plotly.js, about 2 s here: the median leaves that try out).
    picker.click()
    page.get_by_role("option").filter(has_text=nine).first.click()
    settle(time.perf_counter())
    tabs = {}
    for name in ("Curves", "Accuracy vs cost", "Confusions", "Per class", "Robustness"):
        took = []
        for _ in range(repeats):
            for choice, into in (("Summary", None), (name, took)):
                t = time.perf_counter()
                page.get_by_role("tab", name=choice, exact=True).click()
                page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].every(d => d.data)",
                                       timeout=120_000)
                if into is not None:
                    into.append(settle(t))
                else:
                    settle(t)
        tabs[name] = round(statistics.median(took), 3)
    return {"overview_useful_s": round(statistics.median(useful), 3), "overview_idle_s": round(statistics.median(idle), 3),
            "compare_group": biggest, "compare_group_s": round(statistics.median(group), 3),
            "compare_group_nine": nine, "compare_group_nine_s": round(statistics.median(group_nine), 3),
            "compare_tabs_nine_s": tabs}



def apptest_render_times(pages: list[str], repeats: int, after_first=None) -> dict[str, list[float]]:
    """Seconds per render of each page in one fresh AppTest of the app (ARCHSCOPE_RUNS set): the
    first render of a page (cold; the Overview's is the app's first run) then ``repeats`` warm ones.
    ``after_first(at, page)`` may change widgets after a page's first render."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=600)
    t = time.perf_counter()
    at.run()
    first = time.perf_counter() - t
    out: dict[str, list[float]] = {}
    for page in pages:
        times = [first] if page == "overview" else []
        while len(times) < repeats + 1:
            at.switch_page(f"app_pages/{page}.py")
            t = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t)
            if at.exception:
                raise SystemExit(f"{page}: {at.exception[0].value}")
            if len(times) == 1 and after_first is not None:
                after_first(at, page)
        out[page] = times
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, help="an existing runs folder (default: make --n tiny runs)")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--browser", action="store_true", help="also time full page loads in headless Chromium")
    args = ap.parse_args()

    tmp = None
    root = args.runs
    if root is None:
        tmp = Path(tempfile.mkdtemp(prefix="archscope-bench-dash-"))
        root = tmp / "runs"
        t = time.perf_counter()
        make_runs(root, args.n)
        print(f"made {args.n} runs in {time.perf_counter() - t:.1f} s")
    os.environ["ARCHSCOPE_RUNS"] = str(root)

    from core.training.run_folder import list_runs

    n_runs = len(list_runs(root))
    results = {}
    try:
        def select_all(at, page: str) -> None:
            if page == "compare":   # later renders with every run selected (the first used the default)
                at.multiselect(key="cmp_runs").set_value([r.run_id for r in list_runs(root)])

        for page, times in apptest_render_times(PAGES, args.repeats, after_first=select_all).items():
            results[page] = {"cold_s": round(times[0], 3), "warm_s": round(statistics.median(times[1:]), 3)}
        browser = browser_times(root, args.repeats) if args.browser else {}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    load = os.getloadavg()
    print(f"\n{n_runs} runs, {os.cpu_count()} CPU cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    head = f"{'page':<14}{'cold s':>10}{'warm s':>10}"
    if browser:
        head += f"{'browser 1st s':>16}{'browser later s':>18}"
    print(head)
    if browser.get("classroom"):
        c = browser["classroom"]
        print(f"browser: first visit after server start, leaderboard drawn {browser['first_overview_useful_s']:.2f} s")
        print(f"browser: Overview useful (leaderboard drawn) {c['overview_useful_s']:.2f} s, idle "
              f"{c['overview_idle_s']:.2f} s" + (f"; Compare, choosing {c['compare_group_nine']}: "
                                                 f"{c['compare_group_nine_s']:.2f} s, choosing {c['compare_group']}: "
                                                 f"{c['compare_group_s']:.2f} s" if "compare_group_s" in c else ""))
    if browser.get("classroom", {}).get("compare_tabs_nine_s"):
        print(f"browser: Compare tabs of {c['compare_group_nine']}, opened from Summary: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in c["compare_tabs_nine_s"].items()))
    for page, a in (browser.get("added_run") or {}).items():
        print(f"browser: {page}, each added run (until idle): " + ", ".join(f"{t:.2f}" for t in a["each_s"])
              + f" s (median {a['median_s']:.2f} s)")
        if a.get("tabs_s"):
            print(f"browser: {page} tabs with those runs (first open, again): "
                  + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) + " s" for k, v in a["tabs_s"].items()))
    for page, r in results.items():
        line = f"{page:<14}{r['cold_s']:>10.2f}{r['warm_s']:>10.2f}"
        if browser:
            line += f"{browser[page]['first_s']:>16.2f}{browser[page]['later_s']:>18.2f}"
        slow = r["warm_s"] >= 2.0 or (browser and browser[page]["later_s"] >= 2.0)
        print(line + ("   (over the 2 s target)" if slow else ""))
    print(json.dumps({"runs": n_runs, "load_avg_1min": round(load[0], 2), "pages": results, "browser": browser}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
