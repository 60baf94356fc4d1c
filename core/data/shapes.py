"""`shapes`: the built-in colour dataset, generated from code (no download), cached on disk.

Twelve classes designed for the tool's lessons:

* colour-only classes: ``red circle``, ``green circle``, ``blue circle``, ``yellow circle`` share
  their shape and differ only by colour. Drop a channel and some of them collapse: with ``R`` only,
  red and yellow look alike (they differ in G), and so do green and blue; with ``RB``, red and
  yellow collapse again. ``red square`` / ``green square`` / ``blue square`` repeat the lesson and
  also differ from the circles by shape alone.
* shape-only classes: ``triangle``, ``cross``, ``ring``, ``star``, ``diamond`` (an elongated
  rhombus, so that rotation cannot turn it into a square) are drawn in a random
  pale colour (every channel bright), so colour carries no information and they survive any
  channel combination.

Each image: a textured, noisy background (low-frequency colour blobs + a sinusoidal texture +
pixel noise), two thin distractor lines and one small dot in random colours, then the object
at a random position, scale and rotation with an anti-aliased edge. Everything is vectorised
(numpy) over a chunk of images, no per-image Python, deterministic for (seed, image_size, split
sizes). The default 12000 images take about 2 s of CPU; the result is cached on disk
($ARCHSCOPE_CACHE or ~/.cache/archscope, folder shapes/).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from core.data.base import DataError, DatasetInfo, LoadedDataset, TensorSplit, cache_dir, seeded_generator, stable_key


def numpy_rng(*parts: int) -> np.random.Generator:
    """numpy Generator seeded by a deterministic mix of ``parts`` (seed, split, chunk)."""
    return np.random.default_rng(int(stable_key(list(parts), 15), 16))

GENERATOR_VERSION = 1          # bump when the drawing code changes: old cache files are then ignored
DEFAULT_SIZE = 32
MAX_SIZE = 224
DEFAULT_SPLITS = {"train": 10000, "val": 1000, "test": 1000}

_SOLID = {  # RGB in [0, 1]
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.85, 0.20),
    "blue": (0.20, 0.30, 0.95),
    "yellow": (0.92, 0.88, 0.15),
}
SHAPE_KINDS = ("circle", "square", "triangle", "cross", "ring", "star", "diamond")
# (class name, shape kind, colour name or None for a random pale colour)
CLASS_TABLE = (
    ("red circle", "circle", "red"),
    ("green circle", "circle", "green"),
    ("blue circle", "circle", "blue"),
    ("yellow circle", "circle", "yellow"),
    ("red square", "square", "red"),
    ("green square", "square", "green"),
    ("blue square", "square", "blue"),
    ("triangle", "triangle", None),
    ("cross", "cross", None),
    ("ring", "ring", None),
    ("star", "star", None),
    ("diamond", "diamond", None),
)
CLASSES = [row[0] for row in CLASS_TABLE]


def _shape_distance(kind: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, float]:
    """Normalised distance ``d`` (< 1 inside, 1 on the edge) in the object frame (u, v in units of
    the object radius), and the factor turning (d - 1) into radii for the anti-aliased edge."""
    if kind == "circle":
        return np.sqrt(u * u + v * v), 1.0
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) / 0.8, 0.8
    if kind == "diamond":
        # elongated rhombus: an equal-sided one would be a rotated square (rotation is random)
        return np.abs(u) + np.abs(v) / 0.55, 0.48
    if kind == "triangle":
        # equilateral, inradius 0.5 (vertices at radius 1): max over the three edge normals
        d = None
        for k in range(3):
            a = -math.pi / 2 + k * 2 * math.pi / 3
            proj = (u * math.cos(a) + v * math.sin(a)) / 0.5
            d = proj if d is None else np.maximum(d, proj)
        return d, 0.5
    if kind == "cross":
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au, av / 0.3), np.maximum(au / 0.3, av)), 0.3
    if kind == "ring":
        return np.abs(np.sqrt(u * u + v * v) - 0.68) / 0.3, 0.3
    if kind == "star":
        rho = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        return rho / (0.62 + 0.38 * np.cos(5 * phi)), 0.4
    raise ValueError(kind)


def _composite(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Over-paint img [B,3,H,W] in place with colour [B,3] where alpha [B,H,W] in [0,1]."""
    a = alpha[:, None]
    img += (colour[:, :, None, None] - img) * a


def _segment_distance(px, py, x0, y0, x1, y1) -> np.ndarray:
    """Pixel distance from grid points (px [1,1,W], py [1,H,1]) to segments (x0.. [B,1,1]) -> [B,H,W]."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy + 1e-6), 0, 1)
    return np.sqrt((px - x0 - t * dx) ** 2 + (py - y0 - t * dy) ** 2)


def _smooth_upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of a smooth (cosine-eased linear) interpolation from n_in to n_out points."""
    pos = (np.arange(n_out) + 0.5) / n_out * n_in - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    hi = np.clip(lo + 1, 0, n_in - 1)
    frac = np.clip(pos - np.floor(pos), 0, 1)
    frac = 0.5 - 0.5 * np.cos(np.pi * frac)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def render_chunk(labels: torch.Tensor, size: int, rng: np.random.Generator, return_masks: bool = False):
    """Draw one image per label.

    labels: int64 [B] class indices into CLASSES; rng: numpy Generator (all randomness).
    Returns uint8 [B, 3, size, size]; with ``return_masks`` also the object's coverage float
    [B, size, size] in [0, 1] (where the class evidence is: useful to check that a CAM or an
    attention map looks at the object).

    Written in numpy on purpose: its elementwise ops are single-threaded, which on a shared
    2-core machine was 10x faster than torch's OpenMP ops fighting other processes for cores.
    """
    lab = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    b, s = int(lab.shape[0]), size
    k = s / 32.0                                 # sizes below are tuned at 32 px and scale with it
    f32 = np.float32

    def rand(*shape):
        return rng.random(shape, dtype=f32)

    # ---- background: dark base colour + low-frequency blobs + oriented sinusoid + pixel noise
    up = _smooth_upsample_matrix(4, s)
    blobs = (rand(b, 3, 4, 4) - 0.5) * 0.3
    blobs = np.einsum("ij,bcjk->bcik", up, blobs)
    blobs = np.einsum("bcik,lk->bcil", blobs, up)
    coords = np.arange(s, dtype=f32) + 0.5
    py, px = coords.reshape(1, s, 1), coords.reshape(1, 1, s)
    freq = (0.4 + 0.8 * rand(b, 1, 1)) / k       # radians per pixel
    ang = rand(b, 1, 1) * f32(math.pi)
    phase = rand(b, 1, 1) * f32(2 * math.pi)
    wave = np.sin(freq * (px * np.cos(ang) + py * np.sin(ang)) + phase)    # [B,H,W]
    img = 0.05 + 0.35 * rand(b, 3, 1, 1) + blobs + 0.06 * wave[:, None]
    img += 0.04 * rng.standard_normal((b, 3, s, s), dtype=f32)

    # ---- distractors: two thin lines and a small dot, random colours, under the object
    for _ in range(2):
        x0, y0, x1, y1 = rand(4, b, 1, 1) * s
        dist = _segment_distance(px, py, x0, y0, x1, y1)
        _composite(img, np.clip(0.5 * k + 0.5 - dist, 0, 1) * 0.9, rand(b, 3))
    cx, cy = rand(2, b, 1, 1) * s
    rad = (1.0 + 1.0 * rand(b, 1, 1)) * k
    _composite(img, np.clip(rad + 0.5 - np.sqrt((px - cx) ** 2 + (py - cy) ** 2), 0, 1), rand(b, 3))

    # ---- the object: random centre, radius, rotation; class decides shape and colour
    r = (0.22 + 0.16 * rand(b, 1, 1)) * s
    cx = r * 0.8 + rand(b, 1, 1) * (s - 1.6 * r)
    cy = r * 0.8 + rand(b, 1, 1) * (s - 1.6 * r)
    theta = rand(b, 1, 1) * f32(2 * math.pi)
    c, sn = np.cos(theta), np.sin(theta)
    u = ((px - cx) * c + (py - cy) * sn) / r
    v = (-(px - cx) * sn + (py - cy) * c) / r
    edge = np.empty((b, s, s), dtype=f32)
    colour = 0.55 + 0.45 * rand(b, 3)            # pale random colour for shape-only classes
    jitter = (rand(b, 3) - 0.5) * 0.12           # small jitter keeps solid colours distinct
    for cls, (_, kind, colour_name) in enumerate(CLASS_TABLE):
        idx = np.nonzero(lab == cls)[0]
        if len(idx) == 0:
            continue
        d, radii = _shape_distance(kind, u[idx], v[idx])
        edge[idx] = (d - 1) * radii * r[idx]     # approx. signed distance in pixels
        if colour_name is not None:
            colour[idx] = np.asarray(_SOLID[colour_name], dtype=f32) + jitter[idx]
    mask = np.clip(0.5 - edge, 0, 1)
    _composite(img, mask, colour)
    images = torch.from_numpy(np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8))
    return (images, torch.from_numpy(mask)) if return_masks else images


def generate_split(n: int, size: int = DEFAULT_SIZE, seed: int = 0, split: str = "train") -> TensorSplit:
    """Generate ``n`` balanced, shuffled images of the ``split`` for ``seed`` (no cache).

    Returns TensorSplit(images uint8 [n, 3, size, size], labels int64 [n]).
    """
    if not (8 <= size <= MAX_SIZE):
        raise DataError(f"shapes: image_size must be between 8 and {MAX_SIZE}, got {size}")
    split_id = ("train", "val", "test").index(split)
    labels = torch.arange(n) % len(CLASSES)
    labels = labels[torch.randperm(n, generator=seeded_generator(seed, split_id, 101))]
    # about 1 M pixels per chunk bounds memory at 224 px (float temporaries) and stays fast at 32 px
    chunk = max(8, 1_000_000 // (size * size))
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        images[start:stop] = render_chunk(labels[start:stop], size, numpy_rng(seed, split_id, i))
    return TensorSplit(images, labels.to(torch.int64))


def load_shapes(*, image_size: int | None = None, seed: int = 0, n_train: int | None = None,
                n_val: int | None = None, n_test: int | None = None, use_cache: bool = True,
                name: str = "shapes", max_train_samples: int | None = None, **_: object) -> LoadedDataset:
    """Load (generate once, then read from the disk cache) the three splits.

    ``seed`` is the data seed (same seed, same images). With ``max_train_samples`` and no
    ``n_train``, only that many training images are generated (quick smoke runs and tests).

    Cache file: <cache>/shapes/shapes-v{version}-{size}px-seed{seed}-{train}-{val}-{test}.safetensors
    """
    from safetensors.torch import load_file, save_file

    from core.io import atomic_write

    size = int(image_size or DEFAULT_SIZE)
    if n_train is None and max_train_samples is not None:
        n_train = min(int(max_train_samples), DEFAULT_SPLITS["train"])
    counts = {"train": n_train, "val": n_val, "test": n_test}
    counts = {k: int(DEFAULT_SPLITS[k] if v is None else v) for k, v in counts.items()}
    if any(v < 1 for v in counts.values()):
        raise DataError(f"shapes: split sizes must be >= 1, got {counts}")
    info = DatasetInfo(name, len(CLASSES), list(CLASSES), 3, size,
                       notes=f"generated from code, seed {seed}, {size}px, v{GENERATOR_VERSION}")
    fname = (f"shapes-v{GENERATOR_VERSION}-{size}px-seed{seed}-"
             f"{counts['train']}-{counts['val']}-{counts['test']}.safetensors")
    path = cache_dir("shapes") / fname
    if use_cache and path.exists():
        try:
            t = load_file(str(path))
            splits = {k: TensorSplit(t[f"{k}_images"], t[f"{k}_labels"]) for k in counts}
            return LoadedDataset(info, **splits, meta={"cache_file": str(path), "cache_hit": True})
        except Exception:  # a corrupt cache file is regenerated, never trusted
            pass
    t0 = time.perf_counter()
    splits = {k: generate_split(n, size, seed, k) for k, n in counts.items()}
    seconds = time.perf_counter() - t0
    if use_cache:
        tensors = {}
        for k, sp in splits.items():
            tensors[f"{k}_images"], tensors[f"{k}_labels"] = sp.images.contiguous(), sp.labels.contiguous()
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"key": stable_key(fname)}))
    return LoadedDataset(info, **splits, meta={"cache_file": str(path) if use_cache else None,
                                               "cache_hit": False, "generate_seconds": round(seconds, 3)})


def describe_shapes(*, image_size: int | None = None, n_train: int | None = None, n_val: int | None = None,
                    n_test: int | None = None, name: str = "shapes", **_: object) -> DatasetInfo:
    """The shapes dataset's classes and split sizes, without generating an image."""
    counts = {"train": n_train, "val": n_val, "test": n_test}
    return DatasetInfo(name, len(CLASSES), list(CLASSES), 3, int(image_size or DEFAULT_SIZE),
                       splits={k: int(DEFAULT_SPLITS[k] if v is None else v) for k, v in counts.items()})
