"""dashboard/components/explain_cache.py outside a Streamlit session (its caches then live in memory)."""

from __future__ import annotations

import numpy as np
import pytest

import core.data
from dashboard.components import explain_cache
from tests.core.test_predict import CLASSES, fake_dataset, make_run


@pytest.fixture
def denoised_run(tmp_path, monkeypatch):
    """A run trained on denoised images from its own data root; load_dataset records what it is asked."""
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(core.data, "load_dataset", lambda name, **kw: calls.append((name, kw)) or fake_dataset())
    run = make_run(tmp_path / "run", preprocess={"denoise": True, "h": 7.0}, data_root=str(tmp_path / "data"))
    return run, calls


def test_embedding_view_loads_the_test_images_as_the_run_was_trained(denoised_run):
    # Before: the embedding view reloaded the dataset without the run's preprocess and data_root,
    # so a run trained on denoised images was shown embeddings of raw ones.
    run, calls = denoised_run
    pts, ratio, labels, names = explain_cache.embeddings(str(run), 0.0, 5)
    (name, kw), = calls
    assert name == "shapes" and kw.get("root") == str(run.parent / "data")
    assert kw.get("preprocess") is not None and kw["preprocess"].denoise and kw["preprocess"].h == 7.0
    assert pts.shape == (5, 2) and ratio.shape == (2,) and labels == [0, 1, 2, 3, 4] and names == CLASSES


def test_views_of_one_image_agree_with_the_predictor(tmp_path):
    run = make_run(tmp_path / "run", channels="RG", strategy="zero-fill")
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[..., 0] = 200
    seen = explain_cache.seen_image(str(run), 0.0, image.tobytes(), image.shape)
    assert seen.shape == (32, 32, 3) and seen[..., 2].max() == 0          # B is dropped: shown black
    layers, default = explain_cache.target_layers(str(run), 0.0)
    assert default in layers
    res = explain_cache.cam(str(run), 0.0, image.tobytes(), image.shape, "Grad-CAM", default, None)
    assert res["cam"].shape == (32, 32) and 0 <= res["prob"] <= 1 and 0 <= res["predicted"] < len(CLASSES)
