"""BatchLoader: the fast path. The split is one uint8 tensor moved to the device once; an epoch
is a randperm, slicing, and whole-batch augmentation: no per-sample Python, no worker processes.

``to_model_input`` is the one way uint8 images become what a model eats (BatchLoader calls it per
batch; prediction, explanations and embeddings call it directly), and ``shard_size`` /
``shard_indices`` the one rule for splitting an epoch between DDP ranks (the trainer sizes its
batches with the same function BatchLoader iterates with).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from core.data.augment import AugmentConfig, augment_resample, augment_shifts
from core.data.base import DataError, TensorSplit, stable_key
from core.data.channels import check_combo, combos_for, select_channels
from core.data.preprocess import standardize_per_image as _standardize

# (mean per source channel, std per source channel), [0, 1] units: lists, tuples or 1-D tensors
Normalization = tuple[Sequence[float] | torch.Tensor, Sequence[float] | torch.Tensor]


def _seed_of(*parts: int) -> int:
    return int(stable_key(list(parts), 15), 16)


# ---- DDP sharding ------------------------------------------------------------------------------
def shard_size(n: int, world_size: int = 1) -> int:
    """Samples each of ``world_size`` ranks sees per epoch out of ``n``: ``n // world_size``.

    Rounded down, the same on every rank: equal shards mean every rank runs the same number of
    steps (DDP's all-reduce waits for all of them), at the cost of up to world_size - 1 samples
    skipped per epoch (a different set each epoch when shuffling). The trainer must size its
    batches (drop_last) with this function, not its own rounding: 129 images on 2 ranks with
    batch 65 is 64 per rank, so one partial batch each, never 0 steps.
    """
    if world_size < 1:
        raise DataError(f"world_size must be >= 1, got {world_size}")
    return int(n) if world_size == 1 else int(n) // int(world_size)


def shard_indices(order: torch.Tensor, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's part of an epoch's sample order (int64 [N]) -> int64 [shard_size(N, world_size)].

    The strided slice order[rank::world_size], cut to the common shard size: disjoint between ranks.
    """
    if world_size < 1 or not (0 <= rank < world_size):
        raise DataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if world_size == 1:
        return order
    return order[rank::world_size][: shard_size(len(order), world_size)]


def batches_per_epoch(n: int, batch_size: int, *, world_size: int = 1, drop_last: bool = False) -> int:
    """Steps per epoch on each rank for ``n`` samples (the same number on every rank)."""
    per_rank = shard_size(n, world_size)
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


# ---- uint8 images -> model input ---------------------------------------------------------------
def _normalization_tensors(normalize: Normalization, channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # as_tensor is free for tensors already float32 on the device (BatchLoader builds them once)
    mean = torch.as_tensor(normalize[0], dtype=torch.float32, device=device).reshape(-1)
    std = torch.as_tensor(normalize[1], dtype=torch.float32, device=device).reshape(-1)
    if mean.numel() != channels or std.numel() != channels:
        raise DataError(f"normalize needs {channels} mean and std values (one per source "
                        f"channel), got {mean.numel()} and {std.numel()}")
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def to_model_input(images: torch.Tensor, *, channels: str = "RGB", strategy: str = "drop",
                   normalize: Normalization | None = None, standardize_per_image: bool = False,
                   device: str | torch.device | None = None, augment: AugmentConfig | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 images [B, C, H, W] -> float32 model input [B, C', H, W] on ``device`` (default: where they are).

    The one pipeline of training, evaluation, prediction and explanations: (augment: pad-crop and
    flip on uint8) -> float in [0, 1] -> (augment: resampling) -> normalize per source channel
    (mean/std in [0, 1] units, C values each) -> optional per-image standardisation -> channel
    combination ``channels`` presented with ``strategy`` (C' = channel_count(channels, strategy, C)).
    ``augment`` needs ``generator`` (a torch.Generator on the device). Raises DataError for a
    non-uint8 or non-4-D batch, or a combination / normalisation that does not fit C.
    """
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise DataError(f"to_model_input expects uint8 images [B, C, H, W], got {images.dtype} {tuple(images.shape)}")
    check_combo(channels, strategy, int(images.shape[1]))
    if augment is not None and generator is None:
        raise DataError("to_model_input: augment needs a generator (seeded, on the images' device)")
    if device is not None:
        images = images.to(device)     # uint8: a quarter of the bytes of the float batch
    # crop/flip on uint8 (4x less memory traffic), then float (a new tensor: safe to modify in place)
    x = augment_shifts(images, augment, generator).float().div_(255.0)
    x = augment_resample(x, augment, generator)
    if normalize is not None:
        mean, std = _normalization_tensors(normalize, int(x.shape[1]), x.device)
        x = x.sub_(mean).div_(std)
    if standardize_per_image:
        x = _standardize(x)
    return select_channels(x, channels, strategy)


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

    DDP: with world_size > 1 each rank takes ``shard_indices`` of the permutation: the strided slice
    perm[rank::world_size] truncated to ``shard_size(N, world_size)`` = N // world_size items:
    disjoint, equal lengths (so every rank runs the same number of steps; up to world_size - 1
    samples per epoch are skipped, a different set each epoch when shuffling).
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
        # built once on the device (and checked: one value per source channel), not per batch
        self._normalize = (None if normalize is None
                           else _normalization_tensors(normalize, self.source_channels, self.device))
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
        return shard_size(int(self.images.shape[0]), self.world_size)

    def __len__(self) -> int:
        return batches_per_epoch(int(self.images.shape[0]), self.batch_size, world_size=self.world_size,
                                 drop_last=self.drop_last)

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
        return shard_indices(perm, self.rank, self.world_size)

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
            if self.random_combos:
                combo = self.random_combos[int(torch.randint(len(self.random_combos), (1,), generator=combo_g))]
            else:
                combo = self.channels
            self.last_combo = combo
            x = to_model_input(self.images[sel], channels=combo, strategy=self.strategy,
                               normalize=self._normalize, standardize_per_image=self.standardize_per_image,
                               augment=self.augment, generator=g)
            yield x, self.labels[sel]
