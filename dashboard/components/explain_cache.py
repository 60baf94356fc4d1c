"""Cached explanation computations for the Explain page (arrays in, arrays out).

Keys are the run folder + weights mtime + the image bytes + the user's choices, so changing a
slider that does not affect a result never recomputes it. The models come from the shared
predictor cache; core.analysis.explain takes its lock around every hook.
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
    shape = (int(pred.run["in_channels"]), pred.image_size, pred.image_size)
    layers = [n for n, _ in explain.spatial_layers(pred.model, shape)]
    return layers, explain.default_target_layer(pred.model, shape)


@st.cache_data(show_spinner="Computing class activation map...", max_entries=128)
def cam(path: str, mtime: float, image_bytes: bytes, shape: tuple, method: str, layer: str,
        class_idx: int | None) -> dict:
    pred = load_predictor(path, mtime)
    x, seen = model_view(pred, _image(image_bytes, shape))
    res = explain.compute_cam(pred.model, x, method, layer, class_idx)
    return {"cam": res.cam, "overlay": explain.overlay_heatmap(seen, res.cam, alpha=0.5), "seen": seen,
            "class_idx": res.class_idx, "prob": float(res.probs[res.class_idx]),
            "predicted": int(np.argmax(res.probs))}


@st.cache_data(show_spinner=False, max_entries=128)
def seen_image(path: str, mtime: float, image_bytes: bytes, shape: tuple) -> np.ndarray:
    """[S, S, 3] uint8: the image resized and channel-selected as the run's model sees it."""
    return model_view(load_predictor(path, mtime), _image(image_bytes, shape))[1]


@st.cache_data(show_spinner=False, max_entries=128)
def taps(path: str, mtime: float, image_bytes: bytes, shape: tuple) -> list[dict]:
    pred = load_predictor(path, mtime)
    x, _ = model_view(pred, _image(image_bytes, shape))
    maps = explain.record_taps(pred.model, x, kinds={"spatial_attention", "channel_attention", "self_attention",
                                                         "feature"})
    return [{"name": m.name, "kind": m.kind, "values": m.values} for m in maps]


@st.cache_data(show_spinner=False, max_entries=64)
def kernel_attention(path: str, mtime: float, image_bytes: bytes, shape: tuple, combos: tuple) -> list[dict]:
    from core.data import BatchLoader, TensorSplit

    pred = load_predictor(path, mtime)
    u8 = pred.to_tensor([_image(image_bytes, shape)])
    strategy = "drop" if _variable(pred) else pred.config.channel_strategy

    def prepare(combo: str) -> torch.Tensor:
        loader = BatchLoader(TensorSplit(u8, torch.zeros(1, dtype=torch.int64)), 1, shuffle=False,
                             channels=combo, strategy=strategy, normalize=pred.normalize)
        return next(iter(loader))[0]

    return explain.kernel_attention_by_combo(pred.model, prepare, combos)


def _variable(pred) -> bool:
    from core.models.registry import get_spec

    try:
        return get_spec(pred.config.model).variable_input
    except Exception:  # noqa: BLE001
        return False


@st.cache_data(show_spinner=False, max_entries=64)
def deformable(path: str, mtime: float, image_bytes: bytes, shape: tuple) -> list[dict]:
    pred = load_predictor(path, mtime)
    x, _ = model_view(pred, _image(image_bytes, shape))
    return [r.__dict__ for r in explain.record_deformable(pred.model, x)]


@st.cache_data(show_spinner="Embedding test images...", max_entries=16)
def embeddings(path: str, mtime: float, n: int) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """PCA of n test-image embeddings: (points [n, 2], explained ratio [2], labels, class names)."""
    from core.data import BatchLoader, load_dataset

    pred = load_predictor(path, mtime)
    if not hasattr(pred.model, "embed"):
        raise explain.ExplainError(f"model {pred.config.model!r} has no embed() method")
    ds = load_dataset(pred.config.dataset, image_size=pred.image_size)
    split = ds.test
    if len(split.labels) > n:
        split = type(split)(split.images[:n], split.labels[:n])
    loader = BatchLoader(split, 128, shuffle=False, channels=pred.channels, strategy=pred.config.channel_strategy,
                         normalize=pred.normalize)
    outs, labels = [], []
    with explain.EXTRACTION_LOCK, torch.no_grad():
        for xb, yb in loader:
            outs.append(pred.model.embed(xb).float().cpu())
            labels += yb.tolist()
    pts, ratio = explain.pca_2d(torch.cat(outs))
    return pts, ratio, labels, list(ds.info.classes)
