"""Explain: CAMs side by side on one image and class, attention maps, kernel attention per channel
combination, deformable sampling points / modulation / offset magnitude, embedding PCA."""

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core.analysis import explain
from dashboard.components import explain_cache as cache
from dashboard.components.models import predictor, test_images
from dashboard.components.runs import mtime_of, pick_runs, require_module
from dashboard.components.tables import show_table

st.title("Explain")
images_mod = require_module("core.images", "Reading uploaded images")
chosen = pick_runs("ex_runs", need="weights", default_n=2)
if not chosen or images_mod is None:
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
            image = images_mod.load_image(f.getvalue(), name=f.name)
        except images_mod.ImageError as exc:
            st.error(f"{exc}. Upload a PNG, JPEG, WebP or BMP image instead.")
    else:
        st.info("Upload an image, or switch to *test image*.")
else:
    idx = st.number_input("Test image number", 0, 99, 0, key="ex_idx")
    try:
        arrays, labels, classes_ = test_images(first_pred.config.dataset, first_pred.image_size, 100, 0)
        image, truth = Image.fromarray(arrays[int(idx)]), classes_[labels[int(idx)]]
    except Exception as exc:  # noqa: BLE001
        st.error(f"Test images of {first_pred.config.dataset!r} cannot be loaded: {exc}")
if image is None:
    st.stop()
img_arr = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
key_bytes, key_shape = img_arr.tobytes(), img_arr.shape
st.image(img_arr, caption="image" + (f" — true label: {truth}" if truth else ""), width=140)

# ---- class activation maps ---------------------------------------------------------------------------
st.subheader("Class activation maps")
c = st.columns(3)
method = c[0].selectbox("Method", list(explain.CAM_METHODS), key="ex_method",
                        help="Score-CAM runs many extra forward passes: slower.")
classes = list(first_pred.classes)
target = c[1].selectbox("Class to explain", ["(each run's prediction)"] + classes, key="ex_class")
class_idx = None if target.startswith("(") else classes.index(target)
cols = st.columns(len(preds))
for col, (rid, (run, pred)) in zip(cols, preds.items()):
    with col:
        st.markdown(f"**{rid}**")
        mtime = mtime_of(run.best_weights_path)
        try:
            layers, default = cache.target_layers(str(run.path), mtime)
        except Exception as exc:  # noqa: BLE001
            st.error(f"Cannot list layers of {rid}: {exc}")
            continue
        layer = st.selectbox("Target layer", layers, index=layers.index(default), key=f"ex_layer_{rid}")
        if class_idx is not None and list(pred.classes) != classes:
            st.info(f"{rid} has different classes from {first_run.run_id}; explaining its own prediction.")
        idx_here = class_idx if list(pred.classes) == classes else None
        try:
            res = cache.cam(str(run.path), mtime, key_bytes, key_shape, method, layer, idx_here)
        except explain.ExplainError as exc:
            st.error(f"{exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. a layer whose gradient does not reach the output
            st.error(f"{method} failed on layer `{layer}` ({type(exc).__name__}: {exc}). Pick another target layer.")
            continue
        explained = pred.classes[res["class_idx"]]
        st.image(res["overlay"], caption=f"{method} for '{explained}' (p = {res['prob']:.2f}) on {layer}",
                 width=260)
        predicted = pred.classes[res["predicted"]]
        if truth and predicted != truth:
            st.markdown(f":red-background[predicted: {predicted} — wrong]")
        else:
            st.caption(f"predicted: {predicted}")

# ---- attention maps ----------------------------------------------------------------------------------
st.subheader("Attention maps")
any_attention = False
for rid, (run, pred) in preds.items():
    maps = cache.taps(str(run.path), mtime_of(run.best_weights_path), key_bytes, key_shape)
    if not maps:
        continue
    any_attention = True
    st.markdown(f"**{rid}**")
    spatial = [m for m in maps if m["kind"] == "spatial_attention" and np.asarray(m["values"]).ndim == 2]
    if spatial:
        cols = st.columns(min(len(spatial), 4))
        for i, m in enumerate(spatial):
            cols[i % len(cols)].image(explain.overlay_heatmap(img_arr, np.asarray(m["values"]), alpha=0.6),
                                      caption=f"spatial attention: {m['name']}", width=160)
    features = [m for m in maps if m["kind"] == "feature" and np.asarray(m["values"]).ndim == 3]
    for m in features:
        fmap = np.asarray(m["values"])
        cols = st.columns(min(len(fmap), 4))
        for ch in range(min(len(fmap), 4)):
            v = fmap[ch] - fmap[ch].min()
            v = v / v.max() if v.max() > 0 else v
            cols[ch].image(explain.overlay_heatmap(img_arr, v, alpha=0.6), caption=f"{m['name']} map {ch}", width=160)
    for m in [m for m in maps if m["kind"] == "channel_attention"]:
        v = np.asarray(m["values"]).reshape(-1)
        fig = go.Figure(go.Bar(x=list(range(len(v))), y=v))
        fig.update_layout(title=f"channel attention: {m['name']}", xaxis_title="channel", yaxis_title="weight",
                          height=220, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, key=f"ex_ca_{rid}_{m['name']}")
    for m in [m for m in maps if m["kind"] == "self_attention"]:
        a = np.asarray(m["values"])
        side = int(round(np.sqrt(a.shape[-1]))) if a.ndim == 2 else 0
        if side * side == a.shape[-1]:
            centre = a[(side // 2) * side + side // 2].reshape(side, side)
            st.image(explain.overlay_heatmap(img_arr, centre / max(centre.max(), 1e-12), alpha=0.6),
                     caption=f"self-attention of the centre position: {m['name']}", width=160)
if not any_attention:
    st.info("None of the chosen models has an attention layer (CBAM, spatial, channel or self-attention). "
            "Try `spatial_attn_cnn4` or `attn_deform_cnn4`.")

# ---- dynamic convolution: kernel attention per channel combination -----------------------------------
st.subheader("Dynamic convolution: kernel attention per channel combination")
shown = False
for rid, (run, pred) in preds.items():
    combos = ("L",) if pred.greyscale else ("RGB", "RG", "RB", "GB", "R", "G", "B")
    try:
        rows = cache.kernel_attention(str(run.path), mtime_of(run.best_weights_path), key_bytes, key_shape, combos)
    except explain.ExplainError:
        continue
    except Exception as exc:  # noqa: BLE001
        st.error(f"Kernel attention of {rid} failed: {exc}")
        continue
    shown = True
    df = pd.DataFrame(rows)
    fig = px.bar(df, x="combo", y="weight", color=df["kernel"].astype(str), facet_col="layer", barmode="group",
                 labels={"color": "kernel"}, title=f"{rid}: softmax weight of each kernel")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=60, b=10))
    st.plotly_chart(fig, key=f"ex_ka_{rid}")
    show_table(df, key=f"ex_ka_table_{rid}", hide_index=True)
if not shown:
    st.info("None of the chosen models has a dynamic convolution (kernel attention). Try `dyconv_resnet18`.")

# ---- deformable convolution --------------------------------------------------------------------------
st.subheader("Deformable convolution: sampling points, modulation, offsets")
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
    lname = c[0].selectbox("Deformable layer", list(by_layer), key=f"ex_dl_{rid}")
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
    fig = go.Figure(go.Image(z=seen))
    fig.add_trace(go.Scatter(x=(plain[:, 1] + 0.5) * sx - 0.5, y=(plain[:, 0] + 0.5) * sy - 0.5, mode="markers",
                             name="regular grid", marker=dict(symbol="x", color="white", size=8)))
    fig.add_trace(go.Scatter(x=(pts[:, 1] + 0.5) * sx - 0.5, y=(pts[:, 0] + 0.5) * sy - 0.5, mode="markers",
                             name="deformed sampling points", marker=dict(color="red", size=9,
                                                                          line=dict(color="white", width=1))))
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), title=f"{lname} at output ({oy}, {ox})",
                      legend=dict(orientation="h"))
    d = st.columns(3)
    d[0].plotly_chart(fig, key=f"ex_pts_{rid}")
    mag = explain.offset_magnitude(rec["offset"])
    f2 = go.Figure(go.Heatmap(z=mag, colorscale="Magma", colorbar=dict(title="px")))
    f2.update_layout(title="mean offset length", yaxis_autorange="reversed", height=360,
                     margin=dict(l=10, r=10, t=40, b=10))
    d[1].plotly_chart(f2, key=f"ex_mag_{rid}")
    if rec["mask"] is not None:
        f3 = go.Figure(go.Heatmap(z=np.asarray(rec["mask"]).mean(0), colorscale="Viridis"))
        f3.update_layout(title="mean modulation mask", yaxis_autorange="reversed", height=360,
                         margin=dict(l=10, r=10, t=40, b=10))
        d[2].plotly_chart(f3, key=f"ex_mask_{rid}")
    else:
        d[2].info("This layer is not modulated (deformable v1): no mask.")
    show_table(pd.DataFrame({"tap": range(len(pts)), "y": pts[:, 0], "x": pts[:, 1],
                             "dy": pts[:, 0] - plain[:, 0], "dx": pts[:, 1] - plain[:, 1]}),
               key=f"ex_pts_table_{rid}", hide_index=True)
if not shown:
    st.info("None of the chosen models has a deformable convolution. Try `deform_cnn2` or `attn_deform_cnn4`.")

# ---- embeddings ---------------------------------------------------------------------------------------
st.subheader("Embeddings (2-D PCA of test images)")
triplet = [(rid, run, pred) for rid, (run, pred) in preds.items() if "triplet" in (pred.config.loss or "")]
if not triplet:
    st.info("The PCA view is for runs trained with triplet loss (Train page: loss `ce+triplet`). "
            "None of the chosen runs was.")
for rid, run, pred in triplet:
    try:
        pts, ratio, labels, names = cache.embeddings(str(run.path), mtime_of(run.best_weights_path), 500)
    except Exception as exc:  # noqa: BLE001
        st.error(f"Embeddings of {rid} cannot be computed: {exc}")
        continue
    df = pd.DataFrame({"pc1": pts[:, 0], "pc2": pts[:, 1], "class": [names[y] for y in labels]})
    fig = px.scatter(df, x="pc1", y="pc2", color="class",
                     title=f"{rid}: PC1 {ratio[0]:.0%}, PC2 {ratio[1]:.0%} of variance")
    fig.update_layout(height=420)
    st.plotly_chart(fig, key=f"ex_pca_{rid}")
    with st.expander("Points"):
        show_table(df, key=f"ex_pca_table_{rid}", hide_index=True)
