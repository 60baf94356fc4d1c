"""Data: sources (registry), channel combinations, preprocessing, augmentation, the fast BatchLoader.

    from core.data import load_dataset, compute_normalization, BatchLoader, AugmentConfig
    ds = load_dataset("shapes")                       # uint8 tensors, cached on disk
    mean, std = compute_normalization(ds.train)       # from the training split, [0, 1] units
    loader = BatchLoader(ds.train, 128, shuffle=True, augment=AugmentConfig.preset("crop-flip"),
                         channels="RG", strategy="zero-fill", normalize=(mean, std))
    for x, y in loader: ...                           # x float32 [B, 3, 32, 32], y int64 [B]

CLI: ``python -m core.data`` lists sources; ``python -m core.data describe NAME [--json]``.
"""

from core.data.augment import AugmentConfig, apply_augment
from core.data.base import DataError, DatasetInfo, LoadedDataset, TensorSplit, cache_dir
from core.data.channels import (CHANNEL_COMBOS, GRAYSCALE_COMBO, STRATEGIES, channel_count, combos_for,
                                select_channels)
from core.data.loader import BatchLoader
from core.data.preprocess import (PreprocessConfig, compute_normalization, normalize, resize_images,
                                  standardize_per_image)
from core.data.registry import describe, list_sources, load_dataset, source_specs

__all__ = [
    "list_sources", "source_specs", "describe", "load_dataset", "LoadedDataset", "TensorSplit", "DatasetInfo",
    "CHANNEL_COMBOS", "GRAYSCALE_COMBO", "STRATEGIES", "channel_count", "combos_for", "select_channels",
    "BatchLoader", "AugmentConfig", "apply_augment", "PreprocessConfig", "compute_normalization",
    "normalize", "standardize_per_image", "resize_images", "DataError", "cache_dir",
]
