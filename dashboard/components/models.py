"""Cached per-run predictors (model + pipeline) and "the image as the model sees it".

A Predictor is one shared object for every session (st.cache_resource), keyed by the run folder
and the mtime of its weights, so a retrained run is reloaded and an unchanged one never is.
Forward passes on it run under explain.EXTRACTION_LOCK so that a CAM extraction in one session
(which puts hooks on the shared model) never sees another session's forward.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from PIL import Image

from core.analysis.explain import EXTRACTION_LOCK, channels_as_seen
from core.training.run_folder import RunFolder
from dashboard.components.runs import mtime_of


@st.cache_resource(show_spinner="Loading model...", max_entries=16)
def load_predictor(path: str, mtime: float):
    from core.predict import Predictor

    return Predictor(path)


def predictor(run: RunFolder):
    """The run's Predictor, or None after showing st.error saying what is wrong and what to do."""
    try:
        return load_predictor(str(run.path), mtime_of(run.best_weights_path))
    except Exception as exc:  # noqa: BLE001 - CheckpointError names the file; anything else is shown too
        st.error(f"Run `{run.run_id}` cannot be loaded: {exc}. If it is still training, wait for its first "
                 "epoch; otherwise retrain it or re-import its folder.")
        return None


def predict(pred, images: list[Image.Image], top_k: int) -> list[dict]:
    with EXTRACTION_LOCK:
        return pred.predict(images, top_k=top_k, names=[f"image {i + 1}" for i in range(len(images))])


def model_view(pred, image: Image.Image) -> tuple[torch.Tensor, np.ndarray]:
    """(x [1, C, H, W] float: exactly the model's input, picture [H, W, 3] uint8 as the model sees it)."""
    from core.data import BatchLoader, TensorSplit

    u8 = pred.to_tensor([image])
    loader = BatchLoader(TensorSplit(u8, torch.zeros(1, dtype=torch.int64)), 1, shuffle=False,
                         channels=pred.channels, strategy=pred.config.channel_strategy, normalize=pred.normalize)
    x, _ = next(iter(loader))
    return x, channels_as_seen(u8[0].float() / 255.0, pred.channels)


@st.cache_data(show_spinner="Loading test images...", max_entries=8)
def test_images(dataset: str, image_size: int, n: int, seed: int = 0) -> tuple[list[np.ndarray], list[int], list[str]]:
    """n test images of a dataset as [H, W, 3] uint8 arrays with their labels and the class names."""
    from core.data import load_dataset

    ds = load_dataset(dataset, image_size=image_size)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds.test.labels), generator=g)[:n]
    imgs = ds.test.images[idx]
    if imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1)
    arrays = [im.permute(1, 2, 0).contiguous().numpy() for im in imgs]
    return arrays, ds.test.labels[idx].tolist(), list(ds.info.classes)
