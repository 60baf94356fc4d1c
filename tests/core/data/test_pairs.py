"""transform-pairs (seed 002 question 3): labels, transformations, determinism, the ALL passthrough."""

from __future__ import annotations

import pytest
import torch

import core.data.pairs as pairs
from core.data import BatchLoader, DataError, channel_count, describe, list_sources, load_dataset, select_channels
from core.data.base import TensorSplit

SMALL = dict(n_train=70, n_val=14, n_test=28, use_cache=False)


@pytest.fixture(scope="module")
def ds():
    return load_dataset("transform-pairs", **SMALL)


def test_registered_and_described():
    assert "transform-pairs" in list_sources()
    d = describe("transform-pairs", **SMALL)
    assert d.channels == 6 and d.num_classes == 7
    assert d.classes[0] == "none" and d.classes[6] == "rotation+scaling"
    assert d.splits == {"train": 70, "val": 14, "test": 28}


def test_shapes_labels_and_balance(ds):
    assert ds.train.images.shape == (70, 6, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.info.channels == 6 and ds.info.classes == list(pairs.PAIR_CLASSES)
    assert torch.equal(ds.train.labels.bincount(minlength=7), torch.full((7,), 10))
    # the first three channels are the base images themselves
    base = load_dataset("shapes", **SMALL)
    assert torch.equal(ds.test.images[:, :3], base.test.images)


def test_none_pairs_identical_others_differ(ds):
    for split in (ds.train, ds.test):
        a, b = split.images[:, :3], split.images[:, 3:]
        same = (a == b).flatten(1).all(1)
        assert torch.equal(same, split.labels == 0), "exactly the 'none' pairs must be identical"
        diff = (a.float() - b.float()).abs().flatten(1).mean(1)
        assert (diff[split.labels != 0] > 2.0).all(), "a transformed copy must visibly differ"


def test_parameters_follow_the_class():
    labels = torch.arange(7).repeat(50)
    p = pairs.transform_parameters(labels, torch.Generator().manual_seed(0))
    for cls, (disp, rot, scl) in enumerate(pairs.CLASS_TRANSFORMS):
        m = labels == cls
        shift = torch.hypot(p["shift_x"][m], p["shift_y"][m])
        assert (shift > 0).all() if disp else (shift == 0).all()
        assert (p["degrees"][m].abs() >= 15).all() if rot else (p["degrees"][m] == 0).all()
        assert (p["scale"][m] >= 1.2).all() if scl else (p["scale"][m] == 1).all()
    shift = torch.hypot(p["shift_x"], p["shift_y"])
    assert shift.max() <= pairs.SHIFT_RANGE[1] + 1e-6
    assert p["degrees"].abs().max() <= pairs.DEGREE_RANGE[1] + 1e-4
    assert (p["degrees"] < 0).any() and (p["degrees"] > 0).any()


def _blob(size=32, cx=16, cy=12) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    img = (((xx - cx) ** 2 + ((yy - cy) * 2) ** 2) < 20).to(torch.uint8) * 255     # an ellipse
    return img.expand(1, 3, size, size).contiguous()


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    w = img[0, 0].float()
    yy, xx = torch.meshgrid(torch.arange(w.shape[0]), torch.arange(w.shape[1]), indexing="ij")
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


def test_transform_geometry():
    img = _blob()
    zero = torch.zeros(1)
    # displacement: the content moves by shift * side
    moved = pairs.apply_transform(img, {"shift_x": torch.tensor([0.125]), "shift_y": zero,
                                        "degrees": zero, "scale": torch.ones(1)})
    (x0, y0), (x1, y1) = _centroid(img), _centroid(moved)
    assert abs((x1 - x0) - 4.0) < 0.5 and abs(y1 - y0) < 0.5
    # scaling: the blob's area grows by about scale^2
    big = pairs.apply_transform(img, {"shift_x": zero, "shift_y": zero, "degrees": zero,
                                      "scale": torch.tensor([1.5])})
    ratio = big.float().sum() / img.float().sum()
    assert 1.8 < float(ratio) < 2.7
    # rotation by 90 degrees about the centre keeps the area and turns the ellipse's long axis
    rot = pairs.apply_transform(_blob(cx=16, cy=16), {"shift_x": zero, "shift_y": zero,
                                                      "degrees": torch.tensor([90.0]), "scale": torch.ones(1)})
    w0, w1 = _blob(cx=16, cy=16)[0, 0].float(), rot[0, 0].float()
    assert abs(float(w1.sum() / w0.sum()) - 1) < 0.15
    width = lambda w: int((w.sum(0) > 0).sum())     # noqa: E731 - columns the shape covers
    height = lambda w: int((w.sum(1) > 0).sum())    # noqa: E731
    assert width(w0) > height(w0) and height(w1) > width(w1)


def test_deterministic_and_seeded():
    a = load_dataset("transform-pairs", **SMALL)
    b = load_dataset("transform-pairs", **SMALL)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.labels, b.train.labels)
    c = load_dataset("transform-pairs", data_seed=1, **SMALL)
    assert not torch.equal(a.train.images, c.train.images)


def test_max_train_samples_and_grayscale_base():
    d = load_dataset("transform-pairs", max_train_samples=21, n_val=7, n_test=7, use_cache=False)
    assert d.train.images.shape == (21, 6, 32, 32)
    split = TensorSplit(torch.randint(0, 256, (14, 1, 28, 28), dtype=torch.uint8), torch.zeros(14, dtype=torch.int64))
    p = pairs.make_pairs(split, 0, "test")
    assert p.images.shape == (14, 2, 28, 28)


def test_bad_base_is_a_clear_error():
    with pytest.raises(DataError, match="base cannot be transform-pairs"):
        load_dataset("transform-pairs", base="transform-pairs")
    with pytest.raises(DataError, match="unknown data source"):
        load_dataset("transform-pairs", base="nope")


def test_all_passthrough_in_the_loader(ds):
    assert channel_count("ALL", "drop", source_channels=6) == 6
    with pytest.raises(DataError, match="use channels 'ALL'"):
        BatchLoader(ds.train, 8, shuffle=False, channels="RGB")
    loader = BatchLoader(ds.train, 16, shuffle=True, channels="ALL", normalize=([0.5] * 6, [0.25] * 6))
    x, y = next(iter(loader))
    assert x.shape == (16, 6, 32, 32) and x.dtype == torch.float32
    rnd = BatchLoader(ds.train, 16, shuffle=True, channels="random")
    assert rnd.random_combos == ("ALL",)
    x3 = torch.randn(2, 3, 8, 8)
    assert select_channels(x3, "ALL") is x3
    raw, _ = next(iter(BatchLoader(ds.val, 14, shuffle=False, channels="ALL")))
    assert torch.equal((raw * 255).round().to(torch.uint8), ds.val.images)     # no normalisation: exact



def test_pairs_module_imports_no_registry():
    """The registry imports pairs and hands it describe/load_dataset: pairs importing core.data back
    would be the import cycle core/suite.py used to work around."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(pairs.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m in ("core.data", "core.data.registry")}, imported


@pytest.mark.slow  # a fresh interpreter importing torch: 5-15 s on a shared CPU
def test_pairs_is_registered_without_importing_it():
    import subprocess
    import sys
    from pathlib import Path

    code = "import core.data as d; print(d.describe('transform-pairs', n_train=7, n_val=7, n_test=7).channels)"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6"]
