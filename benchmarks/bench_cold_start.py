"""A restarted dashboard server: how long a fresh browser session waits, with the params/MACs
disk cache (core.analysis.cost_cache) empty and then filled.

    python benchmarks/bench_cold_start.py [--runs checkpoints] [--repeats 3] [--think 0 5]

Each try starts a new ``streamlit run`` (nothing in memory), opens the Overview in headless
Chromium and times: until its leaderboard is drawn ("useful"), until the page is idle with its
cost columns filled ("idle"); then, after ``--think`` seconds on the Overview (a user reading the
leaderboard; the model code is imported in the background meanwhile), the click to Compare until
idle. The first try of each --think value starts from an empty cache folder, the others reuse it.
Chromium draws on the same CPU; the numbers are seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_dashboard import REPO, dashboard_server     # this folder is on sys.path when run as a script
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def _settle(page, t0: float) -> float:
    time.sleep(0.2)     # let a rerun start before waiting for its end
    page.wait_for_selector(IDLE, timeout=120_000)
    page.wait_for_function("() => !document.querySelector(\"[data-testid='stSkeleton']\")", timeout=120_000)
    return time.perf_counter() - t0


def one_try(runs: Path, cache: Path, think: float) -> dict:
    from playwright.sync_api import sync_playwright

    with dashboard_server(runs, ARCHSCOPE_CACHE=str(cache)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--headless", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("[data-testid='stDataFrame']", timeout=120_000)
        useful = time.perf_counter() - t
        idle = _settle(page, t)
        time.sleep(think)
        t = time.perf_counter()
        page.get_by_test_id("stSidebarNav").get_by_text("Compare", exact=True).click()
        page.wait_for_selector("h1:has-text('Compare runs')", timeout=120_000)
        compare = _settle(page, t)
        browser.close()
    return {"overview_useful_s": round(useful, 2), "overview_idle_s": round(idle, 2), "compare_s": round(compare, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=REPO / "checkpoints")
    ap.add_argument("--repeats", type=int, default=3, help="tries with the filled cache per --think value")
    ap.add_argument("--think", type=float, nargs="+", default=[0.0, 5.0])
    args = ap.parse_args()
    results = {}
    for think in args.think:
        with tempfile.TemporaryDirectory(prefix="archscope-cold-") as cache:
            empty = one_try(args.runs, Path(cache), think)
            filled = [one_try(args.runs, Path(cache), think) for _ in range(args.repeats)]
        medians = {k: round(statistics.median(f[k] for f in filled), 2) for k in filled[0]}
        results[f"think_{think:g}s"] = {"empty_cache": empty, "filled_cache": filled, "filled_median": medians}
        print(f"think {think:g} s: empty cache {empty}; filled cache, median of {args.repeats}: {medians}", flush=True)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPU cores, load average {load[0]:.1f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
