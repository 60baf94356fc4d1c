"""Dashboard responsiveness under load: 50 run folders and 3 trainings running at once.

    python benchmarks/bench_load.py [--n 50] [--trainings 3] [--repeats 3] [--pages overview,train,compare,predict]

Makes N run folders (two tiny real trainings on shapes, cloned with different seeds: the same recipe
as benchmarks/bench_dashboard.py), then renders each page headless with streamlit.testing.v1.AppTest
twice: once with the machine idle (baseline) and once while ``--trainings`` real trainings
(core.training.launch.launch_training, cnn2 on shapes, 1 CPU thread each, a metrics/steps row
every batch) write into the same runs folder. Reported per page: cold (first render in a fresh
AppTest: empty caches) and warm (median of ``--repeats`` later renders, what a user waits for per
click). The trainings are cancelled at the end (SIGTERM: status cancelled, checkpoint kept).
AppTest measures the page script's time; --browser adds full page loads in headless Chromium
(script, websocket and drawing) during the training phase, timed as in bench_dashboard.py.
Prints a table, the load average and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

# `python benchmarks/bench_load.py` puts benchmarks/ first on sys.path, so its sibling imports
# as a module; `core` is an installed package.
from bench_dashboard import apptest_render_times, browser_times, make_runs  # same recipe and timing

REPO = Path(__file__).resolve().parents[1]

PAGES = ["overview", "train", "compare", "predict"]


def render_times(pages: list[str], repeats: int) -> dict:
    """{page: {"cold_s", "warm_s", "max_s"}} from one fresh AppTest of the app (ARCHSCOPE_RUNS set)."""
    return {page: {"cold_s": round(times[0], 3), "warm_s": round(statistics.median(times[1:]), 3),
                   "max_s": round(max(times[1:]), 3)}
            for page, times in apptest_render_times(pages, repeats).items()}


def start_trainings(root: Path, k: int) -> list:
    from core.training.config import TrainConfig
    from core.training.launch import launch_training
    from core.training.run_folder import RunFolder

    jobs = []
    for i in range(k):
        cfg = TrainConfig(model="cnn2", dataset="shapes", image_size=32, max_train_samples=2048, batch_size=64,
                          epochs=1000, seed=100 + i, device="cpu", num_threads=1, eval_at_end=False,
                          tensorboard=False, log_every=1)
        jobs.append(launch_training(cfg, root / f"live_{i}"))
    deadline = time.time() + 180
    while time.time() < deadline:
        states = [RunFolder(j.run_dir).read_status().get("state") for j in jobs]
        rows = [len(RunFolder(j.run_dir).read_steps()) for j in jobs]
        if all(s == "running" for s in states) and all(r > 0 for r in rows):
            return jobs
        if any(j.poll() is not None for j in jobs):
            raise SystemExit(f"a training exited early: {[(j.run_dir.name, j.poll()) for j in jobs]}")
        time.sleep(0.5)
    raise SystemExit("the trainings did not start within 180 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, help="an existing runs folder to copy (default: make --n tiny runs)")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--trainings", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pages", default=",".join(PAGES))
    ap.add_argument("--browser", action="store_true",
                    help="also time every page in headless Chromium (streamlit run) while the trainings run")
    args = ap.parse_args()
    pages = [p for p in args.pages.split(",") if p]

    from core.training.launch import cancel_run
    from core.training.run_folder import RunFolder, list_runs

    tmp = Path(tempfile.mkdtemp(prefix="archscope-bench-load-"))
    root = tmp / "runs"
    jobs = []
    try:
        t = time.perf_counter()
        if args.runs:
            shutil.copytree(args.runs, root)
        else:
            make_runs(root, args.n)
        print(f"made {args.n} runs in {time.perf_counter() - t:.1f} s", flush=True)
        os.environ["ARCHSCOPE_RUNS"] = str(root)

        idle = render_times(pages, args.repeats)
        load_idle = os.getloadavg()[0]
        print(f"idle renders done (load {load_idle:.1f}); starting {args.trainings} trainings", flush=True)
        jobs = start_trainings(root, args.trainings)
        steps_before = sum(len(RunFolder(j.run_dir).read_steps()) for j in jobs)
        import streamlit as st

        # A fair cold render: the idle phase filled the process-wide caches (MAC counts, summaries).
        st.cache_data.clear()
        st.cache_resource.clear()
        t = time.perf_counter()
        busy = render_times(pages, args.repeats)
        browser = browser_times(root, args.repeats) if args.browser else {}
        seconds = time.perf_counter() - t
        steps_after = sum(len(RunFolder(j.run_dir).read_steps()) for j in jobs)
        load_busy = os.getloadavg()[0]
        alive = sum(j.poll() is None for j in jobs)
        n_runs = len(list_runs(root))
    finally:
        for j in jobs:
            if j.poll() is None:
                cancel_run(j.run_dir, timeout=30, process=j.process)
        cancelled = [RunFolder(j.run_dir).read_status().get("state") for j in jobs] if jobs else []
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{n_runs} run folders ({args.n} finished + {args.trainings} training), {os.cpu_count()} CPU cores")
    print(f"load average (1 min): idle phase {load_idle:.1f}, training phase {load_busy:.1f}")
    print(f"the trainings logged {steps_after - steps_before} batch rows while the pages rendered "
          f"({seconds:.0f} s); {alive}/{len(jobs)} still alive at the end; after cancel: {cancelled}")
    print(f"{'page':<12}{'idle cold':>11}{'idle warm':>11}{'busy cold':>11}{'busy warm':>11}{'busy max':>10}")
    for page in pages:
        i, b = idle[page], busy[page]
        flag = "   (over 2 s)" if b["warm_s"] >= 2.0 else ""
        if browser:
            flag = f"   browser: first {browser[page]['first_s']:.2f} s, later {browser[page]['later_s']:.2f} s" + flag
        print(f"{page:<12}{i['cold_s']:>11.2f}{i['warm_s']:>11.2f}{b['cold_s']:>11.2f}{b['warm_s']:>11.2f}"
              f"{b['max_s']:>10.2f}{flag}")
    print(json.dumps({"runs": n_runs, "trainings": args.trainings, "cpu_cores": os.cpu_count(),
                      "load_idle": round(load_idle, 2), "load_busy": round(load_busy, 2),
                      "idle": idle, "busy": busy, "browser_busy": browser,
                      "cancelled_states": cancelled}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
