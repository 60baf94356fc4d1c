"""`transform-pairs`: seed 002 question 3 ("changer"): which transformation turns image A into image B?

Each sample is an image of a base source (default ``shapes``) stacked with a transformed copy of
itself: uint8 [2C, H, W] (6 channels for a colour base: A's R, G, B, then B's R, G, B). The label
says which transformations made the copy, 7 classes as in the seed's figures 1-7:

    0 none                    (the copy is bit-identical)
    1 displacement            shift by 12-25 % of the image side, in a random direction
    2 rotation                15-30 degrees, random sign (the seed's range)
    3 scaling                 zoom in by 1.2-1.5 (the seed scales up and crops back to the size)
    4 displacement+rotation
    5 displacement+scaling
    6 rotation+scaling

The copy is resampled with one affine ``grid_sample`` (bilinear) and reflection padding: black
corners would give rotation away without looking at the content (the seed crops the largest
dark-free square for the same reason). Labels are balanced (index mod 7, seeded shuffle) and every
random draw comes from a generator seeded by (data seed, split), so a dataset is reproducible.

Registered as a data source by core/data/registry.py (like every source), so everything that takes a dataset name takes ``transform-pairs``;
a model sees it with channels ``ALL`` (every source channel passed through, see core/data/channels.py)
and must accept ``in_channels = 6``.

    ds = load_dataset("transform-pairs")            # train 10000, val 1000, test 1000 from shapes 32 px
    ds.train.images.shape                           # [10000, 6, 32, 32]
    load_dataset("transform-pairs", base="fashion-mnist")   # 2-channel pairs of a grayscale base
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from core.data.base import DataError, DatasetInfo, LoadedDataset, TensorSplit, seeded_generator

PAIR_CLASSES: tuple[str, ...] = (
    "none", "displacement", "rotation", "scaling",
    "displacement+rotation", "displacement+scaling", "rotation+scaling",
)
# (displace, rotate, scale) per class, in PAIR_CLASSES order
CLASS_TRANSFORMS: tuple[tuple[bool, bool, bool], ...] = (
    (False, False, False), (True, False, False), (False, True, False), (False, False, True),
    (True, True, False), (True, False, True), (False, True, True),
)
SHIFT_RANGE = (0.12, 0.25)      # fraction of the image side
DEGREE_RANGE = (15.0, 30.0)     # magnitude; the sign is random
SCALE_RANGE = (1.2, 1.5)        # zoom-in factor (content appears this much larger)
SOURCE_NAME = "transform-pairs"
DESCRIPTION = ("seed 002 Q3: image + transformed copy stacked (6 channels); 7 classes none/displacement/rotation/"
               "scaling and the three pairs; base=shapes by default")
_BASE_OPTIONS = ("n_train", "n_val", "n_test", "use_cache", "download", "val_fraction")
OPTIONS = ("base",) + _BASE_OPTIONS     # what load_dataset/describe accept for this source


def transform_parameters(labels: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw the transformation of each sample from its class.

    labels: int64 [N] in 0..6. Returns float32 [N] tensors ``shift_x``, ``shift_y`` (fractions of
    the image side, 0 when not displaced), ``degrees`` (0 when not rotated), ``scale`` (1 when
    not scaled). Always draws every value, so the draws do not depend on the class mix.
    """
    n = int(labels.shape[0])
    table = torch.tensor(CLASS_TRANSFORMS, dtype=torch.bool)[labels]          # [N, 3]
    u = torch.rand(n, 5, generator=generator)
    magnitude = SHIFT_RANGE[0] + (SHIFT_RANGE[1] - SHIFT_RANGE[0]) * u[:, 0]
    direction = 2 * math.pi * u[:, 1]
    degrees = (DEGREE_RANGE[0] + (DEGREE_RANGE[1] - DEGREE_RANGE[0]) * u[:, 2]) * torch.where(
        u[:, 3] < 0.5, -1.0, 1.0)
    scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * u[:, 4]
    zero, one = torch.zeros(n), torch.ones(n)
    return {
        "shift_x": torch.where(table[:, 0], magnitude * torch.cos(direction), zero),
        "shift_y": torch.where(table[:, 0], magnitude * torch.sin(direction), zero),
        "degrees": torch.where(table[:, 1], degrees, zero),
        "scale": torch.where(table[:, 2], scale, one),
    }


def apply_transform(images: torch.Tensor, params: dict[str, torch.Tensor], chunk: int = 2048) -> torch.Tensor:
    """Rotate by ``degrees``, zoom in by ``scale`` and shift by ``shift_x/y`` (fractions of the side).

    images: uint8 [N, C, H, W]; params: float [N] tensors from ``transform_parameters``.
    Returns uint8 [N, C, H, W]. Samples with no transformation are copied bit for bit (no
    resampling), so class ``none`` pairs are exactly identical.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(f"apply_transform needs uint8 [N,C,H,W], got {images.dtype} {tuple(images.shape)}")
    out = images.clone()
    moved = (params["shift_x"] != 0) | (params["shift_y"] != 0) | (params["degrees"] != 0) | (params["scale"] != 1)
    idx = moved.nonzero().flatten()
    for start in range(0, len(idx), chunk):
        sel = idx[start:start + chunk]
        theta_rad = params["degrees"][sel] * (math.pi / 180.0)
        cos, sin = torch.cos(theta_rad), torch.sin(theta_rad)
        inv_scale = 1.0 / params["scale"][sel]
        # affine_grid maps output coordinates (normalised to [-1, 1]) to input coordinates: the
        # output shows the input rotated, magnified by `scale`, and shifted by (shift_x, shift_y).
        # A shift of f image sides is 2 f in normalised units; the input point is output - shift.
        a = torch.zeros(len(sel), 2, 3)
        a[:, 0, 0], a[:, 0, 1] = cos * inv_scale, -sin * inv_scale
        a[:, 1, 0], a[:, 1, 1] = sin * inv_scale, cos * inv_scale
        a[:, 0, 2] = -2.0 * params["shift_x"][sel]
        a[:, 1, 2] = -2.0 * params["shift_y"][sel]
        x = images[sel].float()
        grid = F.affine_grid(a, list(x.shape), align_corners=False)
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out[sel] = y.round().clamp(0, 255).to(torch.uint8)
    return out


def make_pairs(split: TensorSplit, seed: int, split_name: str) -> TensorSplit:
    """Pair every image of ``split`` with a transformed copy; balanced, seeded labels.

    split: TensorSplit(images uint8 [N, C, H, W], labels ignored). Returns TensorSplit(images uint8
    [N, 2C, H, W] (original channels first), labels int64 [N] in 0..6).
    """
    n = len(split)
    split_id = ("train", "val", "test").index(split_name)
    g = seeded_generator(seed, split_id, 4243)
    labels = (torch.arange(n) % len(PAIR_CLASSES))[torch.randperm(n, generator=g)]
    params = transform_parameters(labels, g)
    copy = apply_transform(split.images, params)
    return TensorSplit(torch.cat([split.images, copy], dim=1).contiguous(), labels.to(torch.int64))


def _base_name(base: str) -> str:
    # Any other check (unknown source, missing folder) is the base's own describe/load's to make.
    if not isinstance(base, str) or not base:
        raise DataError(f"{SOURCE_NAME}: base must be a data source name, e.g. 'shapes', got {base!r}")
    if base.partition(":")[0] == SOURCE_NAME:
        raise DataError(f"{SOURCE_NAME}: base cannot be {SOURCE_NAME} itself")
    return base


def _base_kw(options: dict) -> dict:
    return {k: v for k, v in options.items() if k in _BASE_OPTIONS and v is not None}


def describe_pairs(path, *, describe_base: Callable[..., DatasetInfo], base: str = "shapes",
                   image_size: int | None = None, root=None, seed: int = 0, **options) -> DatasetInfo:
    """describe() of the pairs: the base's splits and size, 7 classes, twice the base's channels.

    ``describe_base`` is ``core.data.describe`` (passed in by the registry, which imports this module).
    """
    d = describe_base(_base_name(base), image_size=image_size, root=root, data_seed=seed, **_base_kw(options))
    return DatasetInfo(SOURCE_NAME, len(PAIR_CLASSES), list(PAIR_CLASSES), 2 * d.channels, d.image_size,
                       splits=dict(d.splits))


def load_pairs(path, *, load_base: Callable[..., LoadedDataset], base: str = "shapes", image_size: int | None = None,
               root=None, seed: int = 0, max_train_samples: int | None = None, **options) -> LoadedDataset:
    """Load ``base`` (same image size, root and data seed) and pair each split's images.

    ``load_base`` is ``core.data.load_dataset`` (passed in by the registry, which imports this module).
    Returns LoadedDataset with images uint8 [N, 2C, H, W] and labels 0..6 (PAIR_CLASSES).
    """
    base_ds = load_base(_base_name(base), image_size=image_size, root=root, data_seed=seed,
                        max_train_samples=max_train_samples, **_base_kw(options))
    splits = {k: make_pairs(base_ds.split(k), seed, k) for k in ("train", "val", "test")}
    c = int(base_ds.train.images.shape[1])
    info = DatasetInfo(SOURCE_NAME, len(PAIR_CLASSES), list(PAIR_CLASSES), 2 * c, base_ds.info.image_size,
                       notes=f"pairs of {base} images (A, transformed A), {2 * c} channels; {base_ds.info.notes}")
    return LoadedDataset(info, **splits, meta={"base": base, "base_meta": base_ds.meta})

