"""Does `orjson` earn its place in the requirements? Time plotly's figure serialisation, which
Streamlit runs for every chart on every rerun (``plotly.io.to_json(figure, validate=False)`` in
streamlit/elements/plotly_chart.py), with the stdlib json engine and with orjson, side by side.

    python benchmarks/bench_plotly_json.py [--repeats 20]

The figures are the size of a Compare page with a 9-run group: learning curves (9 runs x 2 panels
x 30 epochs), nine 12x12 confusion matrices, a 9x7 robustness heatmap, and a 64x64 CAM heatmap.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots


def compare_page_figures(runs: int = 9, epochs: int = 30, classes: int = 12) -> list[go.Figure]:
    rng = np.random.default_rng(0)
    curves = make_subplots(rows=1, cols=2)
    for r in range(runs):
        for col in (1, 2):
            curves.add_trace(go.Scatter(x=np.arange(epochs), y=rng.random(epochs), name=f"run {r}"), row=1, col=col)
    figs = [curves]
    labels = [f"class {i}" for i in range(classes)]
    for _ in range(runs):
        z = rng.integers(0, 100, (classes, classes))
        figs.append(go.Figure(go.Heatmap(z=z, x=labels, y=labels, text=z, texttemplate="%{text}")))
    figs.append(go.Figure(go.Heatmap(z=rng.random((runs, 7)))))
    figs.append(go.Figure(go.Heatmap(z=rng.random((64, 64)))))
    return figs


def time_engine(figs: list[go.Figure], engine: str, repeats: int) -> float:
    """Median milliseconds to serialise every figure once."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for f in figs:
            pio.to_json(f, validate=False, engine=engine)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    figs = compare_page_figures()
    try:
        import orjson  # noqa: F401
    except ImportError:
        print("orjson is not installed: only the json engine can be timed")
        print(f"json   : {time_engine(figs, 'json', args.repeats):8.1f} ms per page")
        return 0
    json_ms = time_engine(figs, "json", args.repeats)
    orjson_ms = time_engine(figs, "orjson", args.repeats)
    print(f"{len(figs)} figures of a 9-run Compare page, median of {args.repeats}:")
    print(f"json   : {json_ms:8.1f} ms per page")
    print(f"orjson : {orjson_ms:8.1f} ms per page")
    print(f"orjson is {json_ms / orjson_ms:.1f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
