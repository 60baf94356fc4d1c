"""core.report: one self-contained HTML file with each run's numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core import report
from core.analysis.compare import robustness_by_run
from core.models.registry import create_model
from core.report import ReportError, build_report_html, expand_run_dirs

CLASSES = ["circle", "square", "triangle"]


def make_run(root: Path, run_id: str, *, model: str = "cnn2", channels: str = "RGB", strategy: str = "zero-fill",
             acc: float = 0.8125, with_eval: bool = True) -> Path:
    """A run folder as the trainer and core.evaluate write it (numbers chosen by the test)."""
    d = root / run_id
    d.mkdir(parents=True)
    config = {"model": model, "model_options": {}, "dataset": "shapes", "channels": channels,
              "channel_strategy": strategy, "epochs": 3,
              "run": {"num_classes": 3, "classes": CLASSES, "in_channels": 3, "image_size": 32}}
    (d / "config.json").write_text(json.dumps(config))
    (d / "status.json").write_text(json.dumps({"state": "done", "message": "done"}))
    rows = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e, "val_loss": 1.1 / e,
             "val_acc": 0.45 + 0.1 * e, "lr": 1e-3, "seconds": 2.0, "images_per_s": 500.0} for e in (1, 2, 3)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 4, "trai')
    if with_eval:
        ev = {"test_acc": acc, "test_loss": 0.5, "macro": {"precision": 0.8, "recall": 0.79, "f1": 0.7777},
              "per_class": [], "classes": CLASSES, "confusion_matrix": [[13, 2, 1], [0, 9, 3], [4, 0, 16]],
              "channel_robustness": {"trained": channels, "strategy": strategy,
                                     "tested": {"RGB": acc, "RG": 0.4321, "RB": None, "GB": 0.25, "R": 0.125,
                                                "G": 0.0625, "B": 0.03125}},
              "inference_images_per_s": 1234.0, "n_test": 48}
        (d / "eval.json").write_text(json.dumps(ev))
    return d


@pytest.fixture()
def runs(tmp_path):
    return [make_run(tmp_path, "alpha-cnn2", acc=0.8125),
            make_run(tmp_path, "beta-cnn3", model="cnn3", channels="RG", acc=0.6875)]


def test_report_is_self_contained_and_holds_each_runs_numbers(runs):
    text = build_report_html(runs)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"<script[^>]+src\s*=\s*[\"']?(https?:)?//", text), "a script loaded from the network"
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']?https?://", text)
    import plotly.offline

    bundle = plotly.offline.get_plotlyjs()
    assert text.count(bundle[-2000:]) == 1 and "Plotly.newPlot" in text    # plotly.js inlined, exactly once
    for run_id, acc in (("alpha-cnn2", "0.8125"), ("beta-cnn3", "0.6875")):
        assert run_id in text and acc in text
    assert "<td>0.778</td>" in text                          # macro F1 from eval.json, 3 decimals as on the pages
    assert "0.4321" in text and "n/a" in text                # robustness cells, untested shown as n/a
    # cost table: the parameter count of the real models at the run's input shape
    for name in ("cnn2", "cnn3"):
        n = sum(p.numel() for p in create_model(name, num_classes=3, in_channels=3).parameters())
        assert f"{n:,}" in text


def test_reference_percentages(runs):
    text = build_report_html(runs, reference="alpha-cnn2")
    assert "Accuracy (% of alpha-cnn2)" in text
    assert f"<td>{100 * 0.6875 / 0.8125:.1f}</td>" in text and "<td>100.0</td>" in text   # beta's accuracy vs alpha's
    with pytest.raises(ReportError, match="reference run 'zzz' is not among the runs"):
        build_report_html(runs, reference="zzz", with_cost=False)


def test_folder_of_runs_and_broken_runs(tmp_path):
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", with_eval=False)
    (tmp_path / "not-a-run").mkdir()
    assert [p.name for p in expand_run_dirs([tmp_path])] == ["a", "b"]
    text = build_report_html([tmp_path], title="My <report>", with_cost=False)
    assert "My &lt;report&gt;" in text and "<h2>Cost</h2>" not in text
    labels, combos, z = robustness_by_run([("a", report.collect(tmp_path / "a", with_cost=False)["eval"])])
    assert combos == ["RGB", "RG", "RB", "GB", "R", "G", "B"] and z[0][2] is None and z[0][1] == 0.4321
    with pytest.raises(ReportError, match="not a run folder"):
        expand_run_dirs([tmp_path / "not-a-run"])
    with pytest.raises(ReportError, match="no such folder"):
        expand_run_dirs([tmp_path / "nope"])


def _figures(text: str) -> list[dict]:
    """The (data, layout) of every plotly figure in a report, as plotly.js receives them."""
    decoder, out = json.JSONDecoder(), []
    for m in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", text):
        data, end = decoder.raw_decode(text, m.end())
        layout, _ = decoder.raw_decode(text, text.index("{", end))
        out.append({"data": data, "layout": layout})
    return out


def test_report_figures_carry_class_and_run_labels(runs):
    """The report's confusion matrices and robustness heatmap come from core.analysis.figures, as the
    Compare page's do: class names and axis titles on the confusion matrix, run names on the heatmap."""
    figs = _figures(build_report_html(runs, with_cost=False))
    confusion = [f for f in figs if f["layout"].get("xaxis", {}).get("title", {}).get("text") == "predicted"]
    assert len(confusion) == 2
    for f in confusion:
        [heat] = f["data"]
        assert heat["x"] == CLASSES and heat["y"] == CLASSES
        assert f["layout"]["yaxis"]["title"]["text"] == "true"
        assert f["layout"]["xaxis"]["automargin"] and f["layout"]["yaxis"]["automargin"]
    assert {f["layout"]["title"]["text"] for f in confusion} == {f"alpha-cnn2: test accuracy {0.8125:.3f}",
                                                                 f"beta-cnn3: test accuracy {0.6875:.3f}"}
    [robust] = [f for f in figs if f["layout"].get("xaxis", {}).get("title", {}).get("text") == "tested on"]
    assert robust["data"][0]["y"] == ["alpha-cnn2 (trained RGB, zero-fill)", "beta-cnn3 (trained RG, zero-fill)"]
    assert robust["data"][0]["x"] == ["RGB", "RG", "RB", "GB", "R", "G", "B"]


def test_cli_writes_the_file(runs, tmp_path, capsys):
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    assert report.main([str(p) for p in runs] + ["--out", str(out)]) == 0
    assert "alpha-cnn2" in out.read_text()
    assert report.main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert report.main([str(runs[0]), "--out", str(out / "report.html")]) == 1   # parent is a file
    assert "cannot write" in capsys.readouterr().err


def test_cost_numbers_read_as_on_the_compare_page(runs):
    """One definition per metric: the report's cost table is the page's (figures.readable_table of
    figures.cost_table_frame), so "Accuracy points per GMAC" and every count read the same."""
    from core.analysis.figures import cost_table_frame, readable_table

    text = build_report_html(runs)
    rows = [report.collect(r)["row"] for r in runs]
    shown = readable_table(cost_table_frame(rows))
    assert "Accuracy points per GMAC" in text and "100 x test accuracy / (MACs of one image / 10^9)" in text
    for rec in shown.to_dict("records"):
        for col in ("Params", "MACs", "FLOPs", "Accuracy points per GMAC", "Test accuracy"):
            assert f"<td>{rec[col]}</td>" in text, (col, rec[col])
        assert "," in rec["MACs"]                          # counts in full, with separators
    macs = rows[0]["macs"]
    assert shown.loc[0, "Accuracy points per GMAC"] == f"{100 * 0.8125 / (macs / 1e9):,.1f}"
