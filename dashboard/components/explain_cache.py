"""Cached explanation computations for the Explain page (arrays in, arrays out).

Keys are the run folder + weights mtime + the image bytes + the user's choices, so changing a
slider that does not affect a result never recomputes it. The models come from the shared
predictor cache; the model input comes from the Predictor (the run's one pipeline), and every
core.analysis.explain function holds the model's lock while its hooks are on the shared model.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from PIL import Image

from core.analysis import explain
from dashboard.components.models import load_predictor, model_view


def _image(image_bytes: bytes, shape: tuple) -> Image.Image:
    return Image.fromarray(np.frombuffer(image_bytes, dtype=np.uint8).reshape(shape))


@st.cache_data(show_spinner=False, max_entries=64)
def target_layers(path: str, mtime: float) -> tuple[list[str], str]:
    """(candidate CAM layers with their output shapes as labels, default layer)."""
    pred = load_predictor(path, mtime)
    shape = (pred.info.in_channels, pred.image_size, pred.image_size)
    layers = [n for n, _ in explain.spatial_layers(pred.model, shape)]
    return layers, explain.default_target_layer(pred.model, shape)


@st.cache_data(show_spinner="Computing class activation map...", max_entries=128)
def cam(path: str, mtime: float, image_bytes: bytes, shape: tuple, method: str, layer: str,
        class_idx: int | None) -> dict:
    """The CAM of one image: {cam [S, S], overlay and seen [S, S, 3] uint8, class_idx, prob, predicted}."""
    pred = load_predictor(path, mtime)
    x, seen = model_view(pred, _image(image_bytes, shape))
    res = explain.compute_cam(pred.model, x, method, layer, class_idx)
    return {"cam": res.cam, "overlay": explain.overlay_heatmap(seen, res.cam, alpha=0.5), "seen": seen,
            "class_idx": res.class_idx, "prob": float(res.probs[res.class_idx]),
            "predicted": int(np.argmax(res.probs))}


@st.cache_data(show_spinner=False, max_entries=128)
def seen_image(path: str, mtime: float, image_bytes: bytes, shape: tuple) -> np.ndarray:
    """[S, S, 3] uint8: the image resized and channel-selected as the run's model sees it."""
    return load_predictor(path, mtime).as_seen(_image(image_bytes, shape))


@st.cache_data(show_spinner=False, max_entries=128)
def taps(path: str, mtime: float, image_bytes: bytes, shape: tuple) -> list[dict]:
    """Attention and feature maps of one image: [{name, kind, values}] (see explain.record_taps)."""
    pred = load_predictor(path, mtime)
    x, _ = model_view(pred, _image(image_bytes, shape))
    maps = explain.record_taps(pred.model, x, kinds={"spatial_attention", "channel_attention", "self_attention",
                                                         "feature"})
    return [{"name": m.name, "kind": m.kind, "values": m.values} for m in maps]


@st.cache_data(show_spinner=False, max_entries=64)
def kernel_attention(path: str, mtime: float, image_bytes: bytes, shape: tuple, combos: tuple) -> list[dict]:
    """Mean kernel-attention weights per combination (see explain.kernel_attention_by_combo)."""
    pred = load_predictor(path, mtime)
    u8 = pred.to_tensor([_image(image_bytes, shape)])
    # A variable-input model is shown each combination as it can take it: only those channels.
    strategy = "drop" if pred.variable_input else pred.config.channel_strategy

    def prepare(combo: str) -> torch.Tensor:
        return pred.model_input(u8, channels=combo, strategy=strategy)

    return explain.kernel_attention_by_combo(pred.model, prepare, combos)


@st.cache_data(show_spinner=False, max_entries=64)
def deformable(path: str, mtime: float, image_bytes: bytes, shape: tuple) -> list[dict]:
    """Offsets (and modulation) of every deformable layer for one image (see explain.record_deformable)."""
    pred = load_predictor(path, mtime)
    x, _ = model_view(pred, _image(image_bytes, shape))
    return [r.__dict__ for r in explain.record_deformable(pred.model, x)]


@st.cache_data(show_spinner="Embedding test images...", max_entries=16)
def embeddings(path: str, mtime: float, n: int) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """PCA of n test-image embeddings: (points [n, 2], explained ratio [2], labels, class names).

    The test images are loaded as the run was trained (its data root and preprocessing, e.g.
    denoising): a run trained on denoised images is shown embeddings of denoised images.
    """
    pred = load_predictor(path, mtime)
    emb, labels = pred.embed_test_images(n)
    pts, ratio = explain.pca_2d(emb)
    return pts, ratio, labels, list(pred.classes)
