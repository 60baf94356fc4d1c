"""Channel combinations and the strategies that present them to a model (the seeds' central experiment).

Combinations: RGB, RG, RB, GB, R, G, B for colour sources; ``L`` for grayscale (1-channel) sources.

Strategies (x is the batch the model would see, after normalisation):

* ``drop``: only the kept channels, C' = len(combo). For models that accept any channel count.
* ``zero-fill``: 3 channels, the missing ones set to 0 (seed 001, method 1 "process_channel_DIY").
* ``mean-fill``: 3 channels, each missing one filled, per pixel, with the mean of the kept ones
  (so ``R`` becomes a gray image R,R,R; ``RG`` gets B = (R+G)/2).
* ``sigmoid-fill``: 3 channels, seed 001 method 2 "process_channel_sigmoid". Its text only says:
  "same as method 1, except the channels other than the target channels are not simply set to 0;
  according to the gap between the image's channel count and the target channel count, F.sigmoid
  is used to smoothly adjust and fill in or cut the values". Our reading: the kept channels pass
  unchanged; with k kept channels the gap is g = 3 - k, and every missing channel is filled, per
  pixel, with ``sigmoid(m - g)`` where m is the mean of the kept channels. The fill is a smooth
  squashing of the kept signal into (0, 1) that gets weaker the more channels are missing (g = 1:
  sigmoid(m - 1); g = 2: sigmoid(m - 2)). The seed reports this did worse than zero-fill.

Fills are applied to the model's input (after normalisation), so "zero" means exactly 0 at the
model's first layer, as the seed describes.

``ALL``: every source channel, passed through unchanged, whatever the strategy. The one combination of
sources that are neither grayscale nor RGB (``transform-pairs``: two RGB images stacked, 6 channels),
and accepted by any source.
"""

from __future__ import annotations

import torch

from core.data.base import DataError

CHANNEL_COMBOS: tuple[str, ...] = ("RGB", "RG", "RB", "GB", "R", "G", "B")
GRAYSCALE_COMBO = "L"
ALL_COMBO = "ALL"                  # passthrough: every source channel as it is (e.g. 6-channel image pairs)
STRATEGIES: tuple[str, ...] = ("drop", "zero-fill", "mean-fill", "sigmoid-fill")
_INDEX = {"R": 0, "G": 1, "B": 2}


def combos_for(channels: int) -> tuple[str, ...]:
    """The combinations a source with ``channels`` (1 or 3; any other count: only ``ALL``) supports."""
    if channels not in (1, 3):
        return (ALL_COMBO,)
    return (GRAYSCALE_COMBO,) if channels == 1 else CHANNEL_COMBOS


def check_combo(combo: str, strategy: str = "drop", source_channels: int | None = None) -> None:
    """Raise DataError naming the bad value when ``combo``/``strategy`` are unknown or don't fit the source."""
    if strategy not in STRATEGIES:
        raise DataError(f"unknown channel strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if combo == ALL_COMBO:
        return
    if source_channels is not None and source_channels not in (1, 3):
        raise DataError(f"this source has {source_channels} channels (not a grayscale or RGB image): "
                        f"use channels {ALL_COMBO!r}, got {combo!r}")
    if combo != GRAYSCALE_COMBO and combo not in CHANNEL_COMBOS:
        raise DataError(f"unknown channel combination {combo!r}: expected one of "
                        f"{', '.join(CHANNEL_COMBOS)} (or L for grayscale sources)")
    if source_channels == 1 and combo != GRAYSCALE_COMBO:
        raise DataError(f"channel combination {combo!r} needs a colour source; this source is grayscale: use 'L'")
    if source_channels == 3 and combo == GRAYSCALE_COMBO:
        raise DataError("channel combination 'L' is for grayscale sources; this source has 3 channels")


def channel_count(combo: str, strategy: str = "drop", source_channels: int | None = None) -> int:
    """Channels the model receives: ``drop`` -> len(combo); the fills -> 3; ``L`` -> 1 whatever the strategy
    (a grayscale source has no missing colour channel to fill); ``ALL`` -> ``source_channels`` (required)."""
    check_combo(combo, strategy)
    if combo == ALL_COMBO:
        if source_channels is None:
            raise DataError("channel_count('ALL') needs source_channels (ALL passes every source channel through)")
        return int(source_channels)
    if combo == GRAYSCALE_COMBO:
        return 1
    return len(combo) if strategy == "drop" else 3


def combo_indices(combo: str) -> list[int]:
    """Source channel indices of a combination, e.g. "GB" -> [1, 2]. Not defined for ``ALL``."""
    check_combo(combo)
    if combo == ALL_COMBO:
        raise DataError("combo_indices: 'ALL' has no fixed indices (it is every source channel)")
    return [0] if combo == GRAYSCALE_COMBO else [_INDEX[c] for c in combo]


def select_channels(x: torch.Tensor, combo: str, strategy: str = "drop") -> torch.Tensor:
    """Present ``combo`` of a batch with ``strategy``.

    x: float [B, 3, H, W] (or [B, 1, H, W] with combo "L", or [B, C, H, W] with "ALL": both returned as is).
    Returns [B, channel_count(combo, strategy), H, W], same dtype and device.
    """
    check_combo(combo, strategy)
    if x.dim() != 4:
        raise DataError(f"select_channels expects [B, C, H, W], got shape {tuple(x.shape)}")
    if combo == ALL_COMBO:
        return x
    if combo == GRAYSCALE_COMBO:
        if x.shape[1] != 1:
            raise DataError(f"combination 'L' expects 1-channel input, got {x.shape[1]} channels")
        return x
    if x.shape[1] != 3:
        raise DataError(f"combination {combo!r} expects 3-channel input, got {x.shape[1]} channels")
    keep = combo_indices(combo)
    if len(keep) == 3:
        return x
    index, kept_mask = _combo_tensors(combo, x.device)
    if strategy == "drop":
        return x.index_select(1, index)
    if strategy == "zero-fill":
        return x * kept_mask.to(x.dtype)
    mean_kept = x.index_select(1, index).mean(dim=1, keepdim=True)   # [B,1,H,W]
    if strategy == "mean-fill":
        fill = mean_kept
    else:  # sigmoid-fill: see the module docstring for the reading of seed 001 method 2
        fill = torch.sigmoid(mean_kept - (3 - len(keep)))
    return torch.where(kept_mask, x, fill.expand_as(x))


# (combination, device) -> (index int64 [k], kept mask bool [1, 3, 1, 1]) on that device.
_COMBO_TENSORS: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _combo_tensors(combo: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The channel index and kept-channel mask of ``combo``, built once per device and reused.

    Why: indexing a CUDA batch with a Python list (``x[:, [0, 1]]``) or filling a mask with one
    (``mask[[0, 1]] = True``) copies the list from the host at every call, a blocking transfer per
    batch in the training loop. Seven combinations x a few devices: the cache stays tiny.
    """
    key = (combo, device)
    cached = _COMBO_TENSORS.get(key)
    if cached is None:
        keep = combo_indices(combo)
        index = torch.tensor(keep, dtype=torch.int64)
        mask = torch.zeros(3, dtype=torch.bool)
        mask[index] = True
        cached = (index.to(device), mask.view(1, 3, 1, 1).to(device))
        _COMBO_TENSORS[key] = cached
    return cached
