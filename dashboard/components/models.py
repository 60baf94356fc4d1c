"""Cached per-run predictors (model + pipeline) and "the image as the model sees it".

A Predictor is one shared object for every session (st.cache_resource), keyed by the run folder
and the mtime of its weights, so a retrained run is reloaded and an unchanged one never is. It
holds its model's lock around every forward, and the explain functions hold the same lock while
their hooks are on the model: pages and components take no lock themselves.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from PIL import Image

from core.predict import Predictor
from core.training.checkpoint import model_source_warning
from core.training.run_folder import RunFolder
from dashboard.components.runs import mtime_of


@st.cache_resource(show_spinner="Loading model...", max_entries=16)
def load_predictor(path: str, mtime: float) -> Predictor:
    """The run's Predictor, shared by every session; ``mtime`` (of its weights) is only the cache key."""
    return Predictor(path)


def predictor(run: RunFolder) -> Predictor | None:
    """The run's Predictor, or None after showing st.error saying what is wrong and what to do."""
    try:
        pred = load_predictor(str(run.path), mtime_of(run.best_weights_path))
    except Exception as exc:  # noqa: BLE001 - CheckpointError names the file; anything else is shown too
        st.error(f"Run `{run.run_id}` cannot be loaded: {exc}. If it is still training, wait for its first "
                 "epoch; otherwise retrain it or re-import its folder.")
        return None
    # A student's model file edited since this run trained: the weights loaded, but say so.
    changed = model_source_warning(pred.config, pred.info)
    if changed:
        st.warning(f"Run `{run.run_id}`: {changed}")
    return pred


def predict(pred: Predictor, images: list[Image.Image], top_k: int) -> list[dict]:
    """Top-k rows per image (see Predictor.predict), named "image 1", "image 2", ..."""
    return pred.predict(images, top_k=top_k, names=[f"image {i + 1}" for i in range(len(images))])


def model_view(pred: Predictor, image: Image.Image) -> tuple[torch.Tensor, np.ndarray]:
    """(x [1, C, H, W] float: exactly the model's input, picture [H, W, 3] uint8 as the model sees it)."""
    u8 = pred.to_tensor([image])
    return pred.model_input(u8), pred.as_seen(u8)


@st.cache_data(show_spinner="Loading test images...", max_entries=8)
def test_images(dataset: str, image_size: int, n: int, seed: int = 0,
                root: str | None = None) -> tuple[list[np.ndarray], list[int], list[str]]:
    """n test images of a dataset as [H, W, 3] uint8 arrays with their labels and the class names.

    Raw images (no preprocessing): they are what a user would upload, and the Predictor applies the
    run's preprocessing itself. ``root``: the run's data_root, for sources read from a folder.
    """
    from core.data import load_dataset

    ds = load_dataset(dataset, image_size=image_size, root=root)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds.test.labels), generator=g)[:n]
    imgs = ds.test.images[idx]
    if imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1)
    arrays = [im.permute(1, 2, 0).contiguous().numpy() for im in imgs]
    return arrays, ds.test.labels[idx].tolist(), list(ds.info.classes)


@st.cache_data(show_spinner="Classifying the run's test images...", max_entries=16)
def test_set_predictions(path: str, mtime: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every test image of the run's dataset through its model, loaded exactly as in training:
    (probabilities float [N, K], true labels int [N], images uint8 [N, H, W, 3] for display).

    Cached per run and weights mtime: the misclassified gallery picks cells of the confusion
    matrix without classifying anything again."""
    from core.training.run_info import load_dataset_for

    pred = load_predictor(path, mtime)
    test = load_dataset_for(pred.config).test
    probs = pred.probabilities(test.images).numpy()
    images = test.images[:, :3] if test.images.shape[1] >= 3 else test.images.expand(-1, 3, -1, -1)
    return probs, test.labels.numpy(), images.permute(0, 2, 3, 1).contiguous().numpy()


def confused_images(path: str, mtime: float, true_idx: int, predicted_idx: int,
                    limit: int = 24) -> tuple[list[dict], np.ndarray]:
    """Test images of class ``true_idx`` the run predicts as ``predicted_idx``, most confident first:
    ([{index, image [H, W, 3] uint8, p_predicted, p_true}] up to ``limit``, this run's recomputed
    confusion matrix [K, K] (to check it against eval.json))."""
    probs, labels, images = test_set_predictions(path, mtime)
    predicted = probs.argmax(1)
    k = probs.shape[1]
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    hits = np.flatnonzero((labels == true_idx) & (predicted == predicted_idx))
    hits = hits[np.argsort(-probs[hits, predicted_idx])][:limit]
    return [{"index": int(i), "image": images[i], "p_predicted": float(probs[i, predicted_idx]),
             "p_true": float(probs[i, true_idx])} for i in hits], matrix
