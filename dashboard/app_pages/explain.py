"""Explain, in tabs drawn one at a time: CAMs side by side on one image and class, attention maps,
kernel attention per channel combination, deformable sampling points / modulation / offset
magnitude, embedding PCA."""

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core.analysis import explain, figures
from core.data.channels import CHANNEL_COMBOS, GRAYSCALE_COMBO
from core.errors import ArchScopeError
from core.images import ImageError, load_image
from dashboard.components import explain_cache as cache
from dashboard.components.models import predictor, test_images
from dashboard.components.runs import mtime_of, pick_runs
from dashboard.components.tables import show_table
from dashboard.components.tabs import keep_settings, lazy_tabs

st.title("Explain")
# Below this probability a CAM explains a class the model does not believe in: say so.
LOW_PROBABILITY = 0.05
# Three runs per line: each CAM keeps room for its caption at 1000 px; more runs wrap.
CAMS_PER_ROW = 3
# The settings inside tabs, kept while another tab is open (dashboard.components.tabs).
keep_settings(("ex_method", "ex_class"), ("ex_layer_", "ex_dl_", "ex_oy_", "ex_ox_"))
chosen = pick_runs("ex_runs", need="weights", default_n=2)
if not chosen:
    st.stop()
preds = {r.run_id: (r, predictor(r)) for r in chosen}
preds = {k: v for k, v in preds.items() if v[1] is not None}
if not preds:
    st.stop()

# ---- the image ---------------------------------------------------------------------------------------
first_run, first_pred = next(iter(preds.values()))
source = st.radio("Image", ["test image", "upload"], horizontal=True, key="ex_source")
image, truth = None, None
if source == "upload":
    f = st.file_uploader("One image (png, jpg, webp, bmp)", type=["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif",
                                                                   "tiff"], key="ex_upload")
    if f is not None:
        try:
            image = load_image(f.getvalue(), name=f.name)
        except ImageError as exc:
            st.error(f"{exc}. Upload a PNG, JPEG, WebP or BMP image instead.")
    else:
        st.info("Upload an image, or switch to *test image*.")
else:
    idx = st.number_input("Test image number", 0, 99, 0, key="ex_idx")
    try:
        arrays, labels, classes_ = test_images(first_pred.config.dataset, first_pred.image_size, 100, 0)
        image, truth = Image.fromarray(arrays[int(idx)]), classes_[labels[int(idx)]]
    except (ArchScopeError, OSError) as exc:   # a dataset that is gone, or a file of it unreadable
        st.error(f"Test images of {first_pred.config.dataset!r} cannot be loaded: {exc}")
if image is None:
    st.stop()
img_arr = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
key_bytes, key_shape = img_arr.tobytes(), img_arr.shape
st.image(img_arr, caption="image" + (f" — true label: {truth}" if truth else ""), width=140)

def _cams() -> None:
    """CAMs of the image on each run, side by side, with the class, its probability and the input seen."""
    c = st.columns(2)       # halves: "(each run's prediction)" reads in full at 1000 px
    method = c[0].selectbox("Method", list(explain.CAM_METHODS), key="ex_method",
                            help="Score-CAM runs many extra forward passes: slower.")
    classes = list(first_pred.classes)
    target = c[1].selectbox("Class to explain", ["(each run's prediction)"] + classes, key="ex_class")
    class_idx = None if target.startswith("(") else classes.index(target)
    run_items = list(preds.items())
    for start in range(0, len(run_items), CAMS_PER_ROW):
        cols = st.columns(CAMS_PER_ROW, gap="medium")
        for col, (rid, (run, pred)) in zip(cols, run_items[start:start + CAMS_PER_ROW]):
            with col:
                st.markdown(f"**{rid}**")
                mtime = mtime_of(run.best_weights_path)
                try:
                    layers, default = cache.target_layers(str(run.path), mtime)
                except ArchScopeError as exc:
                    st.error(f"Cannot list layers of {rid}: {exc}")
                    continue
                layer = st.selectbox("Target layer", layers, index=layers.index(default), key=f"ex_layer_{rid}",
                                     format_func=figures.readable_layer_name)
                if class_idx is not None and list(pred.classes) != classes:
                    st.info(f"{rid} has different classes from {first_run.run_id}; explaining its own prediction.")
                idx_here = class_idx if list(pred.classes) == classes else None
                try:
                    res = cache.cam(str(run.path), mtime, key_bytes, key_shape, method, layer, idx_here)
                except ArchScopeError as exc:
                    st.error(f"{exc}")
                    continue
                except RuntimeError as exc:
                    # A user's choice, not a bug: torch raises when the chosen layer's gradient does not
                    # reach the output (e.g. a layer after the pooling the class score skips).
                    st.error(f"{method} failed on layer `{layer}` ({type(exc).__name__}: {exc}). "
                             "Pick another target layer.")
                    continue
                explained = pred.classes[res["class_idx"]]
                st.image(res["overlay"], caption=f"{method} for '{explained}' (p = {res['prob']:.2f}) on "
                                                 f"{figures.readable_layer_name(layer)}", width="stretch")
                st.caption(f"Input the model saw: {pred.info.in_channels}x{pred.image_size}x{pred.image_size} "
                           f"(channels {pred.channels}, strategy {pred.config.channel_strategy}).")
                if res["prob"] < LOW_PROBABILITY:
                    st.warning(f"The model gives '{explained}' only p = {res['prob']:.2f}: this map shows where "
                               "evidence for that class would be, not a confident detection (every map is scaled "
                               "to its own maximum, so it looks hot either way).")
                predicted = pred.classes[res["predicted"]]
                if truth and predicted != truth:
                    st.markdown(f":red-background[predicted: {predicted} — wrong]")
                else:
                    st.caption(f"predicted: {predicted}")
    st.image(figures.colour_scale_strip(), width=240,
             caption="Colour scale of every map on this page: 0 (blue, low) → 1 (red, high), each map scaled to its "
                     "own maximum.")


def _attention() -> None:
    """Attention maps (CBAM, spatial, channel, self-attention) of the runs that have them."""
    any_attention = False
    for rid, (run, pred) in preds.items():
        maps = cache.taps(str(run.path), mtime_of(run.best_weights_path), key_bytes, key_shape)
        if not maps:
            continue
        any_attention = True
        st.markdown(f"**{rid}**")
        for row in figures.attention_overlays(img_arr, maps):
            cols = st.columns(4)   # a quarter of the width each, however many maps
            for i, (overlay, caption) in enumerate(row):
                cols[i % len(cols)].image(overlay, caption=caption, width="stretch")
        st.image(figures.colour_scale_strip(), width=240, caption="0 (blue, low) → 1 (red, high), each map scaled "
                                                                   "to its own maximum")
        for m in [m for m in maps if m["kind"] == "channel_attention"]:
            st.plotly_chart(figures.channel_attention_figure(m["values"], m["name"]), key=f"ex_ca_{rid}_{m['name']}")
    if not any_attention:
        st.info("None of the chosen models has an attention layer (CBAM, spatial, channel or self-attention). "
                "Try `spatial_attn_cnn4` or `attn_deform_cnn4`.")


def _kernel_attention() -> None:
    """Dynamic convolution: the kernel attention per channel combination of the runs that have it."""
    shown = False
    for rid, (run, pred) in preds.items():
        combos = (GRAYSCALE_COMBO,) if pred.greyscale else CHANNEL_COMBOS
        try:
            rows = cache.kernel_attention(str(run.path), mtime_of(run.best_weights_path), key_bytes, key_shape, combos)
        except explain.ExplainError:
            continue        # no dynamic convolution in this model: nothing to show for it
        except ArchScopeError as exc:
            st.error(f"Kernel attention of {rid} failed: {exc}")
            continue
        shown = True
        st.plotly_chart(figures.kernel_attention_figure(rows, rid), key=f"ex_ka_{rid}")
        raw = pd.DataFrame(rows)
        shown_rows = figures.decimals_frame(raw.assign(layer=[figures.readable_layer_name(x) for x in raw["layer"]]))
        show_table(shown_rows, key=f"ex_ka_table_{rid}", hide_index=True, csv_frame=raw)
    if not shown:
        st.info("None of the chosen models has a dynamic convolution (kernel attention). Try `dyconv_resnet18`.")


def _deformable() -> None:
    """Deformable convolution: sampling points, modulation and offset magnitude of one output position."""
    shown = False
    for rid, (run, pred) in preds.items():
        try:
            recs = cache.deformable(str(run.path), mtime_of(run.best_weights_path), key_bytes, key_shape)
        except explain.ExplainError:
            continue
        shown = True
        st.markdown(f"**{rid}**")
        by_layer = {r["layer"]: r for r in recs}
        c = st.columns(3)
        lname = c[0].selectbox("Deformable layer", list(by_layer), key=f"ex_dl_{rid}", format_func=figures.readable_layer_name)
        rec = by_layer[lname]
        ho, wo = rec["offset"].shape[1:]
        oy = c[1].slider("Output row", 0, ho - 1, ho // 2, key=f"ex_oy_{rid}_{lname}")
        ox = c[2].slider("Output column", 0, wo - 1, wo // 2, key=f"ex_ox_{rid}_{lname}")
        pts = explain.deform_sampling_points(rec["offset"], oy, ox, rec["kernel_size"], rec["stride"], rec["padding"],
                                             rec["dilation"])
        # The layer's input may be downsampled: scale its pixel grid onto the image (pixel centres).
        sy, sx = pred.image_size / rec["input_hw"][0], pred.image_size / rec["input_hw"][1]
        seen = cache.seen_image(str(run.path), mtime_of(run.best_weights_path), key_bytes, key_shape)
        plain = explain.deform_sampling_points(np.zeros_like(rec["offset"]), oy, ox, rec["kernel_size"], rec["stride"],
                                               rec["padding"], rec["dilation"])
        # Two per row: three in a row cut the titles and colour-bar labels at 1000 px.
        d = st.columns(2)
        d[0].plotly_chart(figures.deform_points_figure(seen, plain, pts, (sy, sx), f"{lname} at output ({oy}, {ox})"),
                          key=f"ex_pts_{rid}")
        d[1].plotly_chart(figures.offset_magnitude_figure(explain.offset_magnitude(rec["offset"])), key=f"ex_mag_{rid}")
        e = st.columns(2)
        if rec["mask"] is not None:
            e[0].plotly_chart(figures.modulation_figure(rec["mask"]), key=f"ex_mask_{rid}")
        else:
            e[0].info("This layer is not modulated (deformable v1): no mask.")
        e[1].markdown(
            f"**How to read these.** White crosses: the {rec['kernel_size'][0]}x{rec['kernel_size'][1]} grid a plain "
            "convolution samples for the chosen output; red dots: where this layer samples instead (grid + its learned "
            "offsets, drawn on the image the model saw). *Mean offset length*: how far the taps move, on average, at "
            "each output position. *Modulation* (deformable v2): the weight the layer gives each sampled value, "
            "averaged over the taps: 0 switches a tap off, 1 keeps it as is, up to 2 amplifies it.")
        st.markdown("**Sampling points of that output** (on the layer's input grid; dy, dx: the learned offset)")
        taps = pd.DataFrame({"tap": range(len(pts)), "y": pts[:, 0], "x": pts[:, 1],
                             "dy": pts[:, 0] - plain[:, 0], "dx": pts[:, 1] - plain[:, 1]})
        show_table(figures.decimals_frame(taps, "{:.2f}"), key=f"ex_pts_table_{rid}", hide_index=True, csv_frame=taps)
    if not shown:
        st.info("None of the chosen models has a deformable convolution. Try `deform_cnn2` or `attn_deform_cnn4`.")


def _embeddings() -> None:
    """Embeddings of triplet-loss runs: a 2-D PCA of test images."""
    triplet = [(rid, run, pred) for rid, (run, pred) in preds.items() if "triplet" in (pred.config.loss or "")]
    if not triplet:
        st.info("The PCA view is for runs trained with triplet loss (Train page: loss `ce+triplet`). "
                "None of the chosen runs was.")
    for rid, run, pred in triplet:
        try:
            pts, ratio, labels, names = cache.embeddings(str(run.path), mtime_of(run.best_weights_path), 500)
        except ArchScopeError as exc:
            st.error(f"Embeddings of {rid} cannot be computed: {exc}")
            continue
        df = figures.embedding_frame(pts, labels, names)
        st.plotly_chart(figures.embedding_figure(df, ratio, rid, class_names=names), key=f"ex_pca_{rid}")
        with st.expander("Points"):
            show_table(df, key=f"ex_pca_table_{rid}", hide_index=True)


# One tab at a time: only the open tab's explanations are computed and drawn, so adding a run
# computes its CAM, not also its attention, kernel-attention and deformable figures.
lazy_tabs({"CAMs": _cams, "Attention": _attention, "Dynamic conv": _kernel_attention,
           "Deformable conv": _deformable, "Embeddings": _embeddings}, key="ex_tab")
