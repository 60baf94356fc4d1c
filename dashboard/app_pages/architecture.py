"""Architecture: per-layer complexity with hand formulas, a conv-cost calculator, the layer structure."""

import json

import pandas as pd
import streamlit as st

from core.analysis import complexity, conv_cost, figures
from core.errors import ArchScopeError
from core.models import registry
from dashboard.components.runs import available_runs, run_architecture_or_none, run_label
from dashboard.components.tables import show_table

st.title("Architecture and cost")


@st.cache_data(show_spinner="Counting parameters and MACs...", max_entries=64)
def _report(name: str, shape: tuple[int, int, int], classes: int, options_json: str, cross_check: bool) -> dict:
    rep = complexity.model_complexity(name, shape, classes, json.loads(options_json), cross_check=cross_check)
    return rep.to_dict()


@st.cache_data(show_spinner=False, max_entries=64)
def _structure(name: str, in_ch: int, classes: int, options_json: str) -> str:
    return repr(registry.create_model(name, num_classes=classes, in_channels=in_ch, **json.loads(options_json)))


specs = {s.name: s for s in registry.list_models()}
source = st.radio("Model from", ["the model zoo", "a run"], horizontal=True, key="arch_source")
options: dict = {}
if source == "a run":
    archs = {r.run_id: (r, run_architecture_or_none(r)) for r in available_runs()}
    archs = {rid: v for rid, v in archs.items() if v[1] is not None}
    if not archs:
        st.info("No run whose config.json records its model and input (a started training) in the runs "
                "folder; pick a model from the zoo instead.")
        st.stop()
    rid = st.selectbox("Run", list(archs), format_func=lambda k: run_label(archs[k][0]), key="arch_run")
    arch = archs[rid][1]
    name, options, shape, classes = arch.model, arch.options, arch.input_shape, arch.num_classes
    if name not in specs:
        st.error(f"Run `{rid}` uses model {name!r}, which is not in this checkout's registry. "
                 "Update ArchScope or pick a model from the zoo.")
        st.stop()
    st.caption(f"Input {shape[0]}x{shape[1]}x{shape[2]}, {classes} classes (from the run's config.json).")
else:
    name = st.selectbox("Model", list(specs), index=list(specs).index("cnn2") if "cnn2" in specs else 0,
                        key="arch_model")
    c1, c2, c3 = st.columns(3)
    channel_choices = list(specs[name].in_channels)
    # Colour input is the usual case; 6 channels (image pairs) exists only for cnn3/cnn4.
    in_ch = c1.selectbox("Input channels", channel_choices,
                         index=channel_choices.index(3) if 3 in channel_choices else 0, key="arch_c")
    size = c2.number_input("Image size (px)", min_value=8, max_value=512, value=32, step=4, key="arch_size")
    classes = c3.number_input("Classes", min_value=1, max_value=10000, value=10, key="arch_classes")
    shape = (int(in_ch), int(size), int(size))
    classes = int(classes)
spec = specs[name]
st.markdown(f"**{name}** — {spec.description}  \n*Reproduces:* {spec.source}")
cross = st.toggle("Cross-check with ptflops and FlopCounterMode (slower)", value=False, key="arch_cross")
try:
    rep = _report(name, shape, classes, json.dumps(options, sort_keys=True), cross)
except ArchScopeError as exc:      # ComplexityError names the model and the shape
    st.error(f"Cannot count {name} at {'x'.join(map(str, shape))}: {exc}. "
             "Try a larger image size or another channel count.")
else:
    # A markdown table, not st.metric: a metric cuts a long count with an ellipsis in a narrow
    # window; a table cell wraps and keeps every digit.
    headline = {"Parameters": rep["params_total"], "MACs": rep["macs"], "FLOPs (= 2 x MACs)": rep["flops"],
                "Element-wise ops": rep["elementwise_ops"]}
    st.markdown("| " + " | ".join(headline) + " |\n|" + "---:|" * len(headline) + "\n| "
                + " | ".join(f"**{figures.format_count(v)}**" for v in headline.values()) + " |")
    st.caption(rep["conventions"])
    layers = pd.DataFrame(rep["layers"])
    if rep["flagged_layers"]:
        st.warning("A counter could not fully count these layers (flagged, not dropped): "
                   + ", ".join(f"`{n}`" for n in rep["flagged_layers"]) + ". See their note column.")
    else:
        st.success("Every layer was counted (no flagged layer).")
    if not layers.empty:
        layers["output_shape"] = layers["output_shape"].map(lambda s: "x".join(map(str, s)) if s else "")
        cols = ["name", "type", "output_shape", "params", "macs", "elementwise_ops", "flagged", "counted_by",
                "formula", "note"]
        layers = layers[[c for c in cols if c in layers.columns]]
        st.subheader("Per-layer complexity")
        shown = figures.readable_table(layers, figures.LAYER_COLUMNS)
        show_table(shown, key="arch_layers", file_name=f"{name}_complexity.csv", hide_index=True, csv_frame=layers,
                   column_config={"Layer": st.column_config.TextColumn(
                       "Layer", pinned=True, width=figures.text_column_width(shown["Layer"].tolist(), "Layer"))})
        top = figures.largest_layers_figure(layers)
        if top is not None:
            st.plotly_chart(top, key="arch_top")
    if rep.get("cross_checks"):
        st.subheader("Cross-checks")
        cc = pd.DataFrame([{"counter": c["counter"], "macs": c["macs"], "note": c["note"], "error": c["error"],
                            "layers disagreeing": len(c["disagreements"])} for c in rep["cross_checks"]])
        show_table(cc.assign(macs=cc["macs"].map(figures.format_count)).rename(columns={"macs": "MACs"}),
                   key="arch_cross_table", hide_index=True, csv_frame=cc)
    with st.expander("Layer structure"):
        try:
            st.code(_structure(name, shape[0], classes, json.dumps(options, sort_keys=True)), language="text")
        except (ArchScopeError, ValueError, TypeError) as exc:   # create_model's documented refusals
            st.error(f"Cannot build {name}: {exc}")

# -------------------------------------------------------------------------------------------------
st.divider()
st.subheader("Plain vs depthwise-separable convolution (seed 003, question 1)")
c = st.columns(4)
M = c[0].number_input("M input channels", 1, 100000, 32, key="cc_m")
N = c[1].number_input("N output channels", 1, 100000, 64, key="cc_n")
Dk = c[2].number_input("Dk kernel size", 1, 31, 3, key="cc_dk")
Df = c[3].number_input("Df output size", 1, 4096, 56, key="cc_df")
cmp_ = conv_cost.compare_conv_costs(int(M), int(N), int(Dk), int(Df))
calc = pd.DataFrame([
    {"layout": x.layout, "MACs formula": x.formula, "MACs": x.macs, "worked": x.worked,
     "params": x.params, "params formula": x.params_formula}
    for x in (cmp_.regular, cmp_.separable)
])
show_table(calc.assign(MACs=calc["MACs"].map(figures.format_count), params=calc["params"].map(figures.format_count)),
           key="conv_cost", hide_index=True, csv_frame=calc)
st.markdown(f"Ratio separable / regular: **{cmp_.ratio_formula}** — the separable layout needs "
            f"**{cmp_.speedup:.2f}x** fewer multiply-accumulates.")
