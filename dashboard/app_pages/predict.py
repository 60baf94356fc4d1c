"""Predict: upload images (or pick test images) and see each selected run's top-k side by side."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from dashboard.components.models import model_view, predict, predictor, test_images
from dashboard.components.runs import pick_runs, require_module
from dashboard.components.tables import show_table

st.title("Predict")
images_mod = require_module("core.images", "Reading uploaded images")
chosen = pick_runs("pr_runs", need="weights", default_n=2)
if not chosen or images_mod is None:
    st.stop()

# Load first, so a run that cannot be loaded says so before any image is chosen.
predictors = {run.run_id: predictor(run) for run in chosen}
predictors = {k: v for k, v in predictors.items() if v is not None}
if not predictors:
    st.stop()

source = st.radio("Images", ["upload", "test images"], horizontal=True, key="pr_source")
top_k = st.slider("Top-k", 1, 10, 3, key="pr_topk")
items: list[tuple[str, Image.Image, str | None]] = []   # (name, RGB image, true label or None)

if source == "upload":
    files = st.file_uploader("Images (png, jpg, webp, bmp, gif, tiff; any colour mode)", accept_multiple_files=True,
                             type=["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"], key="pr_upload")
    for f in files or []:
        try:
            items.append((f.name, images_mod.load_image(f.getvalue(), name=f.name), None))
        except images_mod.ImageError as exc:
            st.error(f"{exc}. Upload a PNG, JPEG, WebP or BMP image instead.")
        except Exception as exc:  # noqa: BLE001 - never a traceback for a bad upload
            st.error(f"`{f.name}` could not be read as an image ({type(exc).__name__}: {exc}).")
    if not files:
        st.info("Upload one or more images, or switch to *test images*.")
else:
    cfg = chosen[0].read_config() or {}
    run_info = cfg.get("run") or {}
    n = st.slider("How many test images", 1, 12, 4, key="pr_n")
    seed = st.number_input("Sample seed", 0, 10_000, 0, key="pr_seed")
    try:
        arrays, labels, classes = test_images(cfg.get("dataset", "shapes"), int(run_info.get("image_size") or 32),
                                              int(n), int(seed))
        st.caption(f"Test images of `{cfg.get('dataset')}` (the dataset of `{chosen[0].run_id}`).")
        items = [(f"test #{i + 1}", Image.fromarray(a), classes[y]) for i, (a, y) in enumerate(zip(arrays, labels))]
    except Exception as exc:  # noqa: BLE001
        st.error(f"Test images of {cfg.get('dataset')!r} cannot be loaded: {exc}")

if not items:
    st.stop()

results = {rid: predict(p, [im for _, im, _ in items], top_k) for rid, p in predictors.items()}

rows = []
for i, (name, image, truth) in enumerate(items):
    st.markdown(f"#### {name}" + (f" — true label: **{truth}**" if truth else ""))
    cols = st.columns([1] + [2] * len(predictors))
    cols[0].image(np.asarray(image), caption="uploaded" if truth is None else "test image", width=160)
    for col, (rid, pred) in zip(cols[1:], predictors.items()):
        res = results[rid][i]
        with col:
            st.markdown(f"**{rid}**")
            if not res["ok"]:
                st.error(f"{res['error']}")
                continue
            try:
                _, seen = model_view(pred, image)
                st.image(seen, caption=f"as the model sees it ({pred.channels}, {pred.image_size}px)", width=110)
            except Exception as exc:  # noqa: BLE001
                st.warning(f"Cannot draw the model's view: {exc}")
            top = res["top"]
            wrong = truth is not None and top[0]["class"] != truth
            colours = ["#e4572e" if (wrong and j == 0) else ("#17bebb" if t["class"] == truth else "#3b6fd8")
                       for j, t in enumerate(top)]
            fig = go.Figure(go.Bar(x=[t["prob"] for t in top], y=[t["class"] for t in top], orientation="h",
                                   marker_color=colours, text=[f"{t['prob']:.1%}" for t in top]))
            fig.update_layout(height=60 + 28 * len(top), margin=dict(l=10, r=10, t=10, b=10),
                              xaxis=dict(range=[0, 1], title="probability"), yaxis=dict(autorange="reversed"))
            st.plotly_chart(fig, key=f"pr_bar_{i}_{rid}")
            if wrong:
                st.markdown(f":red-background[**wrong**: predicted {top[0]['class']}, true {truth}]")
            elif truth is not None:
                st.markdown(":green-background[correct]")
            for rank, t in enumerate(top, 1):
                rows.append({"image": name, "run": rid, "rank": rank, "class": t["class"], "prob": t["prob"],
                             "true": truth, "correct": (t["class"] == truth) if truth else None})

if rows:
    st.subheader("All predictions")
    show_table(pd.DataFrame(rows), key="pr_table", hide_index=True)
