"""BatchLoader: the fast path. The split is one uint8 tensor moved to the device once; an epoch
is a randperm, slicing, and whole-batch augmentation: no per-sample Python, no worker processes.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from core.data.augment import AugmentConfig, augment_resample, augment_shifts
from core.data.base import DataError, TensorSplit, stable_key
from core.data.channels import check_combo, combos_for, select_channels
from core.data.preprocess import standardize_per_image as _standardize


def _seed_of(*parts: int) -> int:
    return int(stable_key(list(parts), 15), 16)


class BatchLoader:
    """Iterate (x float32 [B, C', H, W] on ``device``, y int64 [B] on ``device``) over a TensorSplit.

    Pipeline per batch: uint8 -> pad-crop/flip -> float in [0, 1] -> resampling augmentations -> normalize (per source channel,
    mean/std in [0, 1] units, e.g. from compute_normalization on the train split) -> optional
    per-image standardisation -> channel combination with ``strategy``.

    channels: a combination ("RGB", "RG", ..., "L" for 1-channel sources) or "random": one
    combination per batch drawn uniformly from ``random_combos`` (default: all 7), so a
    variable-input model sees every combination. "ALL" passes every source channel through (the one
    combination of sources with another channel count, e.g. 6-channel image pairs). ``last_combo`` holds the one just used.

    Determinism: the shuffle depends on (seed, epoch) only, identical on every rank; augmentation
    and random combinations on (seed, epoch, rank). Call ``set_epoch(e)`` before each epoch.

    DDP: with world_size > 1 each rank takes the strided slice perm[rank::world_size] of the
    permutation truncated to N // world_size items: disjoint, equal lengths (so every rank runs
    the same number of steps; up to world_size - 1 samples per epoch are skipped, a different
    set each epoch when shuffling).
    """

    def __init__(self, split: TensorSplit, batch_size: int, *, shuffle: bool, drop_last: bool = False,
                 augment: AugmentConfig | None = None, channels: str = "RGB", strategy: str = "drop",
                 normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                 standardize_per_image: bool = False, device: str | torch.device = "cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1, random_combos: Sequence[str] | None = None) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not (0 <= rank < world_size):
            raise DataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if len(split) == 0:
            raise DataError("BatchLoader got an empty split")
        self.device = torch.device(device)
        self.source_channels = int(split.images.shape[1])
        if channels == "random":
            combos = tuple(random_combos or combos_for(self.source_channels))
            for c in combos:
                check_combo(c, strategy, self.source_channels)
            self.random_combos = combos
        else:
            check_combo(channels, strategy, self.source_channels)
            self.random_combos = ()
        if normalize is not None:
            mean, std = normalize
            if len(mean) != self.source_channels or len(std) != self.source_channels:
                raise DataError(f"normalize needs {self.source_channels} mean and std values (one per source "
                                f"channel), got {len(mean)} and {len(std)}")
        # moved once: every batch afterwards is indexing on the device
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.channels = channels
        self.strategy = strategy
        self.normalize = normalize
        if normalize is not None:   # built once on the device, not per batch
            self._mean = torch.as_tensor(normalize[0], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
            self._std = torch.as_tensor(normalize[1], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.standardize_per_image = standardize_per_image
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.last_combo: str | None = None
        if self.num_samples == 0:
            raise DataError(f"{len(split)} samples cannot be shared by {world_size} ranks")

    # ------------------------------------------------------------------ sizes
    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        n = int(self.images.shape[0])
        return n if self.world_size == 1 else n // self.world_size

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle, augmentation and random combinations for ``epoch``."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ iteration
    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch (int64 [num_samples], on CPU)."""
        n = int(self.images.shape[0])
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(_seed_of(self.seed, self.epoch, 1))
            perm = torch.randperm(n, generator=g)
        else:
            perm = torch.arange(n)
        if self.world_size > 1:
            perm = perm[self.rank::self.world_size][: self.num_samples]
        return perm

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(_seed_of(self.seed, self.epoch, self.rank, 2))
        return g

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.indices().to(self.device)
        g = self._generator()
        combo_g = torch.Generator()
        combo_g.manual_seed(_seed_of(self.seed, self.epoch, self.rank, 3))
        for b in range(len(self)):
            sel = idx[b * self.batch_size:(b + 1) * self.batch_size]
            # crop/flip on uint8 (4x less memory traffic), then float, then resampling augmentations
            x = augment_shifts(self.images[sel], self.augment, g).float().div_(255.0)
            y = self.labels[sel]
            x = augment_resample(x, self.augment, g)
            if self.normalize is not None:
                x = x.sub_(self._mean).div_(self._std)
            if self.standardize_per_image:
                x = _standardize(x)
            if self.random_combos:
                combo = self.random_combos[int(torch.randint(len(self.random_combos), (1,), generator=combo_g))]
            else:
                combo = self.channels
            self.last_combo = combo
            yield select_channels(x, combo, self.strategy), y
