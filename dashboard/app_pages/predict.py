"""Predict: upload images (or pick test images) and see each selected run's top-k side by side."""

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core.analysis import figures
from core.errors import ArchScopeError
from core.images import ImageError, load_image
from dashboard.components.models import model_view, predict, predictor, test_images
from dashboard.components.runs import pick_runs
from dashboard.components.tables import show_table

st.title("Predict")
chosen = pick_runs("pr_runs", need="weights", default_n=2)
if not chosen:
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
            items.append((f.name, load_image(f.getvalue(), name=f.name), None))
        except ImageError as exc:      # core.images turns every way a file can be bad into this
            st.error(f"{exc}. Upload a PNG, JPEG, WebP or BMP image instead.")
    if not files:
        st.info("Upload one or more images, or switch to *test images*.")
else:
    # The first run that loaded decides the dataset and image size (its Predictor read config.json).
    first = next(iter(predictors.values()))
    dataset = first.config.dataset
    n = st.slider("How many test images", 1, 12, 4, key="pr_n")
    seed = st.number_input("Sample seed", 0, 10_000, 0, key="pr_seed")
    try:
        arrays, labels, classes = test_images(dataset, int(first.image_size), int(n), int(seed))
        st.caption(f"Test images of `{dataset}` (the dataset of `{next(iter(predictors))}`).")
        items = [(f"test #{i + 1}", Image.fromarray(a), classes[y]) for i, (a, y) in enumerate(zip(arrays, labels))]
    except (ArchScopeError, OSError) as exc:   # a dataset that is gone, or a file of it unreadable
        st.error(f"Test images of {dataset!r} cannot be loaded: {exc}")

if not items:
    st.stop()

results = {rid: predict(p, [im for _, im, _ in items], top_k) for rid, p in predictors.items()}

# At most this many runs side by side: at 1000 px a run's column then still fits its pictures;
# more runs continue on the next line, under an empty image column.
RUNS_PER_ROW = 3
rows = []
run_items = list(predictors.items())
for i, (name, image, truth) in enumerate(items):
    st.markdown(f"#### {name}" + (f" — true label: **{truth}**" if truth else ""))
    for start in range(0, len(run_items), RUNS_PER_ROW):
        cols = st.columns([1] + [2] * min(len(run_items), RUNS_PER_ROW), gap="medium")
        if start == 0:
            # "stretch": the picture never grows past its column into the first run's.
            cols[0].image(np.asarray(image), caption="uploaded" if truth is None else "test image", width="stretch")
        for col, (rid, pred) in zip(cols[1:], run_items[start:start + RUNS_PER_ROW]):
            res = results[rid][i]
            with col:
                st.markdown(f"**{rid}**")
                if not res["ok"]:
                    st.error(f"{res['error']}")
                    continue
                try:
                    _, seen = model_view(pred, image)
                    st.image(seen, caption=f"as the model sees it ({pred.channels}, "
                                           f"{pred.image_size}x{pred.image_size} px)", width=110)
                except ArchScopeError as exc:
                    st.warning(f"Cannot draw the model's view: {exc}")
                top = res["top"]
                wrong = truth is not None and top[0]["class"] != truth
                st.plotly_chart(figures.top_k_figure(top, truth), key=f"pr_bar_{i}_{rid}",
                                config={"displayModeBar": False})
                if wrong:
                    st.markdown(f":red-background[**wrong**: predicted {top[0]['class']}, true {truth}]")
                elif truth is not None:
                    st.markdown(":green-background[correct]")
                for rank, t in enumerate(top, 1):
                    rows.append({"image": name, "run": rid, "rank": rank, "class": t["class"],
                                 "prob": round(t["prob"], 4), "true": truth,
                                 "correct": (t["class"] == truth) if truth else None})

if rows:
    st.subheader("All predictions")
    show_table(pd.DataFrame(rows), key="pr_table", hide_index=True)
