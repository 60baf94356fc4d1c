"""core.analysis.figures: the one figure layer of the pages and the report (traces, labels, shapes)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.analysis import compare, figures

CLASSES = ["cat", "dog", "bird"]
CM = [[8, 1, 1], [2, 6, 2], [0, 0, 0]]


def _axis_title(fig, axis: str = "xaxis") -> str | None:
    return fig.layout[axis].title.text


def test_confusion_figure_has_class_labels_titles_and_row_fractions():
    fig = figures.confusion_figure(CM, CLASSES, run_id="r1", test_acc=0.7)
    [heat] = fig.data
    assert list(heat.x) == CLASSES and list(heat.y) == CLASSES
    assert _axis_title(fig) == "predicted" and _axis_title(fig, "yaxis") == "true"
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin     # class names are never cut off
    assert fig.layout.title.text == "r1: test accuracy 0.700"
    z = np.asarray(heat.z)
    assert z.shape == (3, 3) and z[0].tolist() == pytest.approx([0.8, 0.1, 0.1])
    assert z[2].tolist() == [0, 0, 0]                                      # an empty row stays 0, not NaN
    assert np.asarray(heat.customdata)[1, 0, 0] == 2                       # the count, for the hover
    raw = figures.confusion_figure(CM, CLASSES, run_id="r1", normalise=False)
    assert np.asarray(raw.data[0].z)[1, 1] == 6 and raw.data[0].zmax == 8
    assert raw.layout.title.text == "r1"                                   # no accuracy: no number invented


def test_confusion_figure_labels_every_class_and_writes_cells_up_to_20_classes():
    fig = figures.confusion_figure(np.eye(12) * 5 + 1, None, run_id="big")
    assert list(fig.data[0].x) == [str(i) for i in range(12)]
    assert list(fig.layout.xaxis.tickvals) == [str(i) for i in range(12)]   # no label skipped when crowded
    assert list(fig.layout.yaxis.ticktext) == [str(i) for i in range(12)]
    assert fig.data[0].texttemplate == "%{text}" and fig.data[0].text[0][0] == "0.35"
    assert figures.confusion_figure(np.eye(21), None, run_id="huge").data[0].texttemplate is None  # hover only
    cm = np.eye(3)
    assert figures.confusion_figure(cm, None, run_id="a").data[0].text[0][1] == ""   # empty cells stay blank
    # same classes, same panel size whatever the run
    assert figures.confusion_figure(cm, None, run_id="a").layout.height == \
        figures.confusion_figure(cm * 7, None, run_id="a much longer run name").layout.height


def test_confusion_difference_and_class_change():
    diff, change = compare.confusion_difference([[9, 1], [3, 7]], [[5, 5], [1, 9]], ["a", "b"])
    fig = figures.confusion_difference_figure(diff, ["a", "b"], run_a="A", run_b="B")
    heat = fig.data[0]
    assert list(heat.x) == ["a", "b"] and heat.zmin == -heat.zmax == pytest.approx(-0.4)
    assert fig.layout.title.text == "A − B (row-normalised)" and _axis_title(fig) == "predicted"
    bars = figures.class_change_figure(change)
    assert list(bars.data[0].x) == ["a", "b"] and list(bars.data[0].y) == pytest.approx([40.0, -20.0])


def test_robustness_heatmap_labels_rows_and_shows_untested_as_na():
    ev = {"channel_robustness": {"trained": "RG", "strategy": "zero-fill", "tested": {"RGB": 0.5, "RG": 0.9, "B": None}}}
    labels, combos, z = compare.robustness_by_run([("run-a", ev), ("no-eval", None)])
    fig = figures.robustness_heatmap(labels, combos, z)
    heat = fig.data[0]
    assert list(heat.y) == ["run-a (trained RG, zero-fill)"] and list(heat.x) == ["RGB", "RG", "B"]
    assert list(heat.text[0]) == ["0.50", "0.90", "n/a"]
    assert heat.customdata[0][2].startswith("not testable")                 # hover explains the n/a
    assert _axis_title(fig) == "tested on" and _axis_title(fig, "yaxis") == "trained on"
    m = compare.channel_robustness_matrix([ev])                         # the averaged matrix draws the same way
    fig = figures.robustness_heatmap(list(m.index), list(m.columns), m.values, row_title="trained")
    assert list(fig.data[0].y) == ["RG (zero-fill)"] and list(fig.data[0].text[0]) == ["0.50", "0.90", "n/a"]


def test_robustness_heatmap_marks_chance_on_the_scale_and_in_cells():
    fig = figures.robustness_heatmap(["a"], ["RGB", "R", "B"], [[0.9, 0.12, 0.05]], chance=0.1)
    heat = fig.data[0]
    note = f"<br><span style='font-size:{figures.HEATMAP_TEXT_PX - 2}px'>≈ chance</span>"
    assert list(heat.text[0]) == ["0.90", "0.12" + note, "0.05" + note]
    assert heat.textfont.size == figures.HEATMAP_TEXT_PX          # fixed: plotly's own shrank to 6 px at 1000 px
    assert "chance 0.10" in heat.colorbar.ticktext and 0.1 in heat.colorbar.tickvals
    scale = [tuple(step) for step in heat.colorscale]
    assert scale[0] == (0.0, "#bdbdbd") and scale[1] == (0.1, "#bdbdbd")    # grey up to chance
    assert scale[2][0] == pytest.approx(0.1) and scale[-1][0] == pytest.approx(1.0)
    assert figures.robustness_heatmap(["a"], ["R"], [[0.12]]).data[0].text[0][0] == "0.12"  # no chance given


def test_curves_figure_one_line_per_split_and_a_band_for_seed_groups():
    m = lambda a: [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_acc": a, "val_acc": a},
                   {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "train_acc": a + 0.1, "val_acc": a + 0.1}]
    fig = figures.curves_figure([("single", [m(0.5)]), ("seeds", [m(0.5), m(0.7)])])
    lines = [t for t in fig.data if t.fill != "toself"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(lines) == 2 * 4                      # per group: train/val x loss/accuracy
    assert len(bands) == 4                          # only the group of two seeds has bands
    seeds_val_acc = [t for t in lines if t.name == "seeds" and t.xaxis == "x4"][0]   # bottom right panel
    assert list(seeds_val_acc.y) == pytest.approx([0.6, 0.7])
    # one style per group in all four panels, and the two groups differ
    for name in ("single", "seeds"):
        assert len({(t.line.color, t.line.dash) for t in lines if t.name == name}) == 1
    assert {lines[0].line.color} != {t.line.color for t in lines if t.name == "seeds"}
    assert fig.layout.xaxis3.title.text == "epoch" and fig.layout.yaxis2.title.text == "accuracy"
    assert not figures.curves_figure([("empty", [[]])]).data
    # ten groups: the figure grows by their legend rows, the four panels keep their height
    ten = figures.curves_figure([(f"run-{i}", [m(0.5)]) for i in range(10)])
    assert ten.layout.height - fig.layout.height == figures.LEGEND_ROW_PX * (5 - 1)


def test_live_curves_figure_puts_epochs_on_the_step_axis():
    steps = [{"global_step": i, "loss": 1.0 / (i + 1)} for i in range(1, 9)]
    metrics = [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "val_acc": 0.7},
               {"epoch": 2, "train_loss": 0.4, "val_loss": 0.5, "val_acc": 0.8}]
    fig = figures.live_curves_figure(metrics, steps)
    assert [t.name for t in fig.data] == ["train loss (batches)", "train_loss", "val_loss", "val_acc"]
    assert list(fig.data[1].x) == [4.0, 8.0] and fig.data[3].yaxis == "y2"
    assert not figures.live_curves_figure([], []).data


def test_pareto_figure_front_and_target_line():
    fig = figures.pareto_figure(["a", "b", "c", "d"], [1, 2, 3, None], [0.5, 0.7, 0.69, 0.9],
                                cost_label="MACs", target=(0.6, "90% of a"))
    *runs, front = fig.data
    assert [t.name for t in runs] == ["a", "b", "c"]            # d has no cost: not drawn
    assert all(t.mode == "markers" for t in runs)               # labels on hover and in the legend, none piled up
    assert len({(t.marker.color, t.marker.symbol) for t in runs}) == 3
    assert list(front.x) == [1, 2] and list(front.y) == [0.5, 0.7]
    assert fig.layout.xaxis.type == "log" and _axis_title(fig) == "MACs" and _axis_title(fig, "yaxis") == "test accuracy"
    assert fig.layout.shapes[0].y0 == 0.6
    # 20 runs under the plot: the figure grows by their legend rows, the plot keeps its height
    many = figures.pareto_figure([f"run-{i}" for i in range(20)], range(1, 21), [0.5] * 20, cost_label="MACs")
    assert many.layout.height - fig.layout.height == figures.LEGEND_ROW_PX * (7 - 2)


@pytest.mark.parametrize("costs, labels", [
    ([10_323_456, 18_000_000], ["10M", "12M", "15M", "20M"]),          # less than a decade: still labelled
    ([10_326_560, 10_903_168, 52_704_768, 74_766_336], ["10M", "20M", "50M"]),
    ([110_000, 20_000_000], ["100k", "1M", "10M"]),
    ([10_323_456, 10_323_456], ["10.3M"]),                             # one cost: the value itself
    # cnn3 and pca_cnn (the shipped channel group): their own values as ticks sat on top of each other
    ([10_323_456, 10_364_416], ["9.5M", "10M", "10.5M", "11M", "11.5M"]),
])
def test_pareto_cost_axis_always_has_numbers(costs, labels):
    """The shipped channel-robustness group (10.3M to 18M MACs) showed an axis without one number."""
    fig = figures.pareto_figure([f"r{i}" for i in range(len(costs))], costs, [0.5] * len(costs), cost_label="MACs")
    assert list(fig.layout.xaxis.ticktext) == labels
    low, high = fig.layout.xaxis.range
    assert all(low <= math.log10(t) <= high for t in fig.layout.xaxis.tickvals)
    assert low < math.log10(min(costs)) and math.log10(max(costs)) < high     # every point inside


def test_cost_table_frame_adds_input_and_the_reason_a_cost_is_missing():
    rows = [{"run_id": "big", "model": "resnet34", "params": 2e6, "macs": 4e9, "test_acc": 0.9, "input": "3x32x32"},
            {"run_id": "odd", "model": "x", "test_acc": 0.5, "cost_error": "unknown model 'x'"}]
    t = figures.cost_table_frame(rows, reference="big").set_index("run_id")
    assert t.loc["big", "input"] == "3x32x32" and t.loc["big", "acc_pct_of_ref"] == pytest.approx(100.0)
    assert t.loc["odd", "cost_note"] == "unknown model 'x'" and np.isnan(t.loc["odd", "macs"])


def test_explain_figures():
    ka = [{"combo": c, "layer": layer, "kernel": k, "weight": w}
          for layer in ("l1", "l2") for c in ("RGB", "R") for k, w in ((0, 0.25), (1, 0.75))]
    fig = figures.kernel_attention_figure(ka, "dy")
    assert len(fig.data) == 4 and {t.name for t in fig.data} == {"kernel 0", "kernel 1"}
    assert [a.text for a in fig.layout.annotations] == ["l1", "l2"] and fig.layout.title.text.startswith("dy:")
    assert fig.layout.title.pad.b >= 30                     # above the panel titles, not on them
    one = figures.kernel_attention_figure([r for r in ka if r["layer"] == "l1"], "dy")
    assert not one.layout.annotations and one.layout.title.text.endswith("kernel attention in l1")
    seen = np.zeros((8, 8, 3), np.uint8)
    regular = np.array([[0.0, 0.0], [1.0, 1.0]])
    fig = figures.deform_points_figure(seen, regular, regular + 0.5, (2.0, 2.0), "layer at (0, 0)")
    assert [t.name for t in fig.data[1:]] == ["regular grid", "deformed sampling points"]
    assert list(fig.data[1].x) == [0.5, 2.5] and list(fig.data[2].y) == [1.5, 3.5]   # pixel centres, scaled
    mag = figures.offset_magnitude_figure(np.ones((4, 5)))
    assert np.asarray(mag.data[0].z).shape == (4, 5) and mag.data[0].colorbar.title.text == "px"
    mod = figures.modulation_figure(np.ones((9, 4, 5)))
    assert np.asarray(mod.data[0].z).shape == (4, 5)
    frame = figures.embedding_frame(np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]), [0, 1, 0], ["a", "b"])
    fig = figures.embedding_figure(frame, [0.6, 0.3], "trip")
    assert [t.name for t in fig.data] == ["a", "b"] and len(fig.data[0].x) == 2
    assert fig.layout.title.text == "trip: PC1 60%, PC2 30% of variance"
    bars = figures.channel_attention_figure(np.array([[0.2, 0.8]]), "cbam")
    assert list(bars.data[0].y) == [0.2, 0.8]


def test_top_k_and_largest_layers():
    top = [{"class": "dog", "prob": 0.6}, {"class": "cat", "prob": 0.3}]
    fig = figures.top_k_figure(top, truth="cat")
    assert list(fig.data[0].marker.color) == ["#e4572e", "#17bebb"]       # wrong first guess red, truth teal
    layers = pd.DataFrame({"name": ["a", "b", "c"], "macs": [10, 0, 30]})
    fig = figures.largest_layers_figure(layers)
    assert list(fig.data[0].y) == ["c", "a"]
    assert figures.largest_layers_figure(layers.assign(macs=0)) is None


def test_attention_overlays_rows_and_captions():
    image = np.zeros((8, 8, 3), np.uint8)
    attn = np.zeros((16, 16))
    attn[2 * 4 + 2] = np.arange(16)                        # the centre position of a 4x4 grid
    maps = [{"name": "s1", "kind": "spatial_attention", "values": np.ones((4, 4))},
            {"name": "f", "kind": "feature", "values": np.random.default_rng(0).random((6, 4, 4))},
            {"name": "ca", "kind": "channel_attention", "values": np.ones(5)},
            {"name": "sa", "kind": "self_attention", "values": attn},
            {"name": "odd", "kind": "self_attention", "values": np.ones((5, 5))}]   # 5 is no square: skipped
    rows = figures.attention_overlays(image, maps)
    captions = [[c for _, c in row] for row in rows]
    assert captions == [["spatial attention in s1"], [f"f: feature map {i}" for i in range(4)],
                        ["self-attention of the centre position in sa"]]
    assert all(img.shape == (8, 8, 3) and img.dtype == np.uint8 for row in rows for img, _ in row)
    assert figures.attention_overlays(image, [maps[2]]) == []               # channel attention is a chart


# ---- classroom readability: numbers, styles, names --------------------------------------------------
def test_format_count_writes_every_digit_with_separators():
    assert figures.format_count(21290828) == "21,290,828"
    assert figures.format_count(70276800.0) == "70,276,800"
    assert figures.format_count(np.int64(11210940)) == "11,210,940"
    assert figures.format_count(None) == figures.format_count(float("nan")) == "–"
    assert figures.format_number(0.75812, "{:.3f}") == "0.758" and figures.format_number("x") == "–"
    assert figures.text_column_width(["21,290,828"], "Params") > figures.text_column_width(["864"], "Params")


def test_readable_table_has_human_headers_and_full_counts():
    rows = [{"run_id": "small-resnet34", "model": "resnet34", "params": 21290828, "macs": 1160537088,
             "flops": 2321074176, "test_acc": 0.713, "inference_images_per_s": 1398.7, "train_seconds": 125.04, "input": "3x32x32"}]
    raw = figures.cost_table_frame(rows, reference="small-resnet34", target=0.9)
    shown = figures.readable_table(raw)
    row = shown.iloc[0]
    assert row["Params"] == "21,290,828" and row["MACs"] == "1,160,537,088" and row["FLOPs"] == "2,321,074,176"
    assert row["Test accuracy"] == "0.713" and row["Train time (s)"] == "125.0" and row["Inference (img/s)"] == "1,399"
    assert row["Accuracy points per GMAC"] == f"{100 * 0.713 / 1.160537088:,.1f}"
    assert row["Reaches target"] == "yes" and "macs" not in shown.columns


def test_run_styles_are_distinct_for_any_number_of_runs_and_stable_per_id():
    ids = [f"run{i}" for i in range(50)]
    styles = figures.run_styles(ids)
    assert len({(s.colour, s.dash) for s in styles.values()}) == 50
    assert len({(s.colour, s.marker) for s in styles.values()}) == 50
    assert len({styles[f"run{i}"].colour for i in range(9)}) == 9        # a 9-run group: nine colours
    assert figures.run_styles(ids[:3]) == {k: styles[k] for k in ids[:3]}


def test_class_styles_distinct_for_20_classes_and_colour_names_in_their_colour():
    many = [f"class {i}" for i in range(20)]
    assert len(set(figures.class_styles(many).values())) == 20
    shapes = ["red circle", "green circle", "blue circle", "yellow circle", "red square", "green square",
              "blue square", "triangle", "cross", "ring", "star", "diamond"]
    styles = figures.class_styles(shapes)
    assert len(set(styles.values())) == 12
    assert styles["red circle"][0] == styles["red square"][0] == figures.NAMED_COLOURS["red"]
    assert styles["green square"][0] == figures.NAMED_COLOURS["green"] and styles["star"][1] == "star"
    named = {figures.NAMED_COLOURS[c] for c in ("red", "green", "blue", "yellow")}
    assert not {styles[c][0] for c in ("triangle", "cross", "ring", "star", "diamond")} & named
    fig = figures.embedding_figure(pd.DataFrame({"pc1": [0.0, 1.0], "pc2": [0.0, 1.0],
                                                 "class": ["star", "green square"]}), [0.5, 0.2], "r", shapes)
    assert [t.name for t in fig.data] == ["green square", "star"]             # dataset order
    assert fig.data[0].marker.color == figures.NAMED_COLOURS["green"]


def test_readable_layer_names_and_the_colour_scale_strip():
    assert figures.readable_layer_name("attention.tap") == "attention"
    assert figures.readable_layer_name("layer1.0.conv1") == "layer1 › block 0 › conv1"
    strip = figures.colour_scale_strip(100, 10)
    assert strip.shape == (10, 100, 3) and strip.dtype == np.uint8
    assert strip[0, 0, 2] > strip[0, 0, 0] and strip[0, -1, 0] > strip[0, -1, 2]   # blue (low) to red (high)


def test_titles_sit_below_the_mode_bar():
    fig = figures.confusion_figure(CM, CLASSES, run_id="r1")
    assert fig.layout.title.yref == "paper" and fig.layout.title.yanchor == "bottom"
    assert fig.layout.margin.t >= 60


def test_confusion_cells_are_clickable_markers_and_a_click_names_the_cell():
    cm = [[5, 2, 0], [0, 4, 1], [3, 0, 6]]
    fig = figures.confusion_figure(cm, ["cat", "dog", "owl"], run_id="r", clickable=True)
    [click] = [t for t in fig.data if t.name == figures.CONFUSION_CLICK_TRACE]
    # one marker per confusion (off the diagonal, non-zero), most images first; the diagonal is not one
    assert list(zip(click.y, click.x)) == [("owl", "cat"), ("cat", "dog"), ("dog", "owl")]
    assert [row[0] for row in click.customdata] == [3, 2, 1]
    assert figures.clicked_confusion([{"x": "dog", "y": "cat", "curve_number": 1}], ["cat", "dog", "owl"]) == (0, 1)
    assert figures.clicked_confusion([{"x": "dog", "y": "dog"}], ["cat", "dog", "owl"]) is None
    assert figures.clicked_confusion([], ["cat"]) is None
    assert len(figures.confusion_figure(cm, None, run_id="r").data) == 1        # not clickable: the heatmap only


def test_decimals_frame_writes_every_float_with_three_decimals():
    t = pd.DataFrame({"trained": ["RGB", "R"], "G": [0.15, float("nan")], "B": [0.1, 0.2083], "n": [3, 1]})
    out = figures.decimals_frame(t)
    assert list(out["G"]) == ["0.150", "–"] and list(out["B"]) == ["0.100", "0.208"]
    assert list(out["trained"]) == ["RGB", "R"] and list(out["n"]) == [3, 1]      # text and counts unchanged


def test_per_class_f1_is_bars_for_a_few_runs_and_a_heatmap_for_many():
    def table(n_runs):
        return pd.DataFrame([{"run": f"r{i}", "class": c, "f1": (i + j) / 40}
                             for i in range(n_runs) for j, c in enumerate(["cat", "dog", "owl"])])
    few = figures.per_class_f1_figure(table(figures.F1_BARS_MAX_RUNS))
    assert [t.type for t in few.data] == ["bar"] * figures.F1_BARS_MAX_RUNS
    many = figures.per_class_f1_figure(table(20))
    (heat,) = many.data
    assert heat.type == "heatmap" and list(heat.y) == [f"r{i}" for i in range(20)] and list(heat.x) == ["cat", "dog", "owl"]
    assert heat.z[19][2] == pytest.approx(21 / 40) and heat.text[19][2] == "0.53"      # every value written
