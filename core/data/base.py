"""Types shared by every data source: the error, the split tensors, the dataset description,
and where caches live.

A loaded dataset is three uint8 tensors (train/val/test) plus labels: small enough to keep in
memory (on the GPU when there is one), so an epoch is indexing, not per-sample Python.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from core.errors import ArchScopeError
from core.io import cache_root


class DataError(ArchScopeError):
    """Every bad-input error of core.data: the message names the source, file and line."""


@dataclass
class TensorSplit:
    """One split held as tensors.

    images: uint8 [N, C, H, W] (C = 1 grayscale or 3 colour), values 0..255.
    labels: int64 [N], class indices 0..num_classes-1.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"TensorSplit.images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise DataError(f"TensorSplit.labels must be int64 [N] with N={len(self.images)}, got "
                            f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor) -> "TensorSplit":
        """Rows ``index`` (int64 [M]) as a new split."""
        return TensorSplit(self.images[index], self.labels[index])


@dataclass
class DatasetInfo:
    """What a source holds: ``describe(name)`` returns one (cheap, nothing decoded), as does
    ``LoadedDataset.info``. ``image_size`` is always one int (the side of the square tensors)."""

    name: str               # the name given to load_dataset, e.g. "shapes" or "listfile:/data/mini"
    num_classes: int
    classes: list[str]
    channels: int           # 1 (grayscale), 3 (colour), 6 (stacked image pairs)
    image_size: int         # H = W of the tensors
    notes: str = ""         # how splits were made (e.g. "val carved from train, 10%, seed 0")
    splits: dict[str, int] = field(default_factory=dict)   # {"train": n, "val": n, "test": n}; {} when unknown

    def to_dict(self) -> dict:
        """JSON-ready dict: name, num_classes, classes, splits, channels, image_size (+ notes when set).

        ``notes`` is left out when empty so ``python -m core.data describe --json`` prints the same
        keys it printed when describe() returned a dict.
        """
        d = {"name": self.name, "num_classes": self.num_classes, "classes": list(self.classes),
             "splits": dict(self.splits), "channels": self.channels, "image_size": self.image_size}
        if self.notes:
            d["notes"] = self.notes
        return d



@dataclass
class LoadedDataset:
    info: DatasetInfo
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    meta: dict = field(default_factory=dict)   # source-specific facts (paths used, cache files)

    def split(self, name: str) -> TensorSplit:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}: expected train, val or test")
        return getattr(self, name)

    def describe(self) -> DatasetInfo:
        """``info`` with the real split sizes: what ``core.data.describe`` returns for this dataset."""
        return replace(self.info, splits={"train": len(self.train), "val": len(self.val), "test": len(self.test)})


def cache_dir(*parts: str) -> Path:
    """Cache folder: $ARCHSCOPE_CACHE or ~/.cache/archscope (core.io.cache_root), plus ``parts``;
    created on demand."""
    path = Path(cache_root(), *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_key(obj: object, n: int = 16) -> str:
    """Short hex digest of a JSON-able object: cache keys that survive restarts (unlike hash())."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator whose seed is a deterministic mix of ``parts`` (seed, split, epoch...)."""
    seed = int(stable_key(list(parts), 15), 16)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def carve_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of ``range(n)`` into (keep, carved) index tensors, carved = round(n*fraction).

    Used to make a validation (or test) split out of a training split; both parts sorted so the
    original order (and class interleaving) is kept.
    """
    g = seeded_generator(seed, 7919)
    perm = torch.randperm(n, generator=g)
    n_carved = int(round(n * fraction))
    if n > 1:
        n_carved = min(max(n_carved, 1), n - 1)
    else:
        n_carved = 0
    carved = perm[:n_carved].sort().values
    keep = perm[n_carved:].sort().values
    return keep, carved


def checked_options(cls: type, given: dict | None, what: str) -> dict:
    """``given`` as a new dict after checking each key is a field of dataclass ``cls`` (for ``from_dict``).

    Raises DataError "unknown {what} option(s) [...]: expected [...]" naming every unknown key.
    """
    d = dict(given or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise DataError(f"unknown {what} option(s) {unknown}: expected {sorted(known)}")
    return d
