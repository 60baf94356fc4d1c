import time

import pytest
import torch

from core.data import describe, load_dataset
from core.data.shapes import numpy_rng
from core.data.shapes import CLASS_TABLE, CLASSES, generate_split, render_chunk

SMALL = dict(n_train=60, n_val=24, n_test=24)


def test_shapes_describe_defaults():
    d = describe("shapes")
    assert d.num_classes == len(CLASSES) >= 10
    assert d.splits == {"train": 10000, "val": 1000, "test": 1000}
    assert d.channels == 3 and d.image_size == 32


def test_shapes_load_small_tensors_and_balance():
    ds = load_dataset("shapes", data_seed=3, **SMALL)
    assert ds.train.images.shape == (60, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.train.labels.dtype == torch.int64
    counts = torch.bincount(ds.train.labels, minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1            # balanced
    assert ds.describe().splits == {"train": 60, "val": 24, "test": 24}
    # images are not flat: textured background + object
    assert ds.train.images.float().std() > 20


def test_shapes_deterministic_per_seed_and_split():
    a = generate_split(30, 32, seed=5, split="train")
    b = generate_split(30, 32, seed=5, split="train")
    c = generate_split(30, 32, seed=6, split="train")
    v = generate_split(30, 32, seed=5, split="val")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, v.images)


def test_shapes_cache_file_written_then_hit():
    first = load_dataset("shapes", data_seed=11, **SMALL)
    second = load_dataset("shapes", data_seed=11, **SMALL)
    assert first.meta["cache_hit"] is False and second.meta["cache_hit"] is True
    assert first.meta["cache_file"] == second.meta["cache_file"]
    assert torch.equal(first.test.images, second.test.images)


def test_training_seed_keeps_the_dataset_data_seed_changes_it():
    a = load_dataset("shapes", seed=0, **SMALL)
    b = load_dataset("shapes", seed=7, **SMALL)
    c = load_dataset("shapes", data_seed=7, **SMALL)
    assert torch.equal(a.test.images, b.test.images)     # runs with different seeds share the test split
    assert not torch.equal(a.test.images, c.test.images)


def test_max_train_samples_generates_only_that_many():
    ds = load_dataset("shapes", max_train_samples=30, n_val=12, n_test=12)
    assert len(ds.train) == 30 and ds.meta["cache_file"].endswith("-30-12-12.safetensors")


def test_shapes_configurable_size():
    ds = load_dataset("shapes", image_size=64, n_train=12, n_val=12, n_test=12)
    assert ds.train.images.shape == (12, 3, 64, 64) and ds.info.image_size == 64
    with pytest.raises(Exception, match="image_size"):
        load_dataset("shapes", image_size=500, n_train=12, n_val=12, n_test=12)


def _object_colour(label: int, n: int = 24) -> torch.Tensor:
    """Mean RGB (0..1) inside the object mask over n images of one class."""
    labels = torch.full((n,), label, dtype=torch.int64)
    images, mask = render_chunk(labels, 32, numpy_rng(1, label), return_masks=True)
    inside = (mask > 0.99).unsqueeze(1)                     # fully covered pixels
    return (images.float() / 255 * inside).sum((0, 2, 3)) / inside.sum()


def test_colour_only_classes_collapse_when_a_channel_is_dropped():
    idx = {name: i for i, name in enumerate(CLASSES)}
    red, yellow = _object_colour(idx["red circle"]), _object_colour(idx["yellow circle"])
    green, blue = _object_colour(idx["green circle"]), _object_colour(idx["blue circle"])
    # red vs yellow: same R and B, differ only in G -> indistinguishable with R, B or RB
    assert abs(red[0] - yellow[0]) < 0.1 and abs(red[2] - yellow[2]) < 0.1 and yellow[1] - red[1] > 0.5
    # green vs blue both dark in R -> collapse with combination R
    assert green[0] < 0.3 and blue[0] < 0.3 and abs(green[1] - blue[1]) > 0.4


def test_shape_only_classes_are_bright_in_every_channel():
    shape_only = [i for i, (_, _, colour) in enumerate(CLASS_TABLE) if colour is None]
    assert len(shape_only) >= 4
    for label in shape_only:
        assert (_object_colour(label) > 0.5).all()


@pytest.mark.slow
def test_default_splits_generate_under_10_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSCOPE_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    ds = load_dataset("shapes")
    seconds = time.perf_counter() - t0
    assert ds.meta["cache_hit"] is False
    assert len(ds.train) == 10000 and len(ds.val) == 1000 and len(ds.test) == 1000
    assert seconds < 10, f"generating the default splits took {seconds:.1f} s"
