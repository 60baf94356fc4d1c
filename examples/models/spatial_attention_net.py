"""A student's "cool model": a small CNN with a spatial-attention gate, as an ARCHSCOPE_MODELS file.

    ARCHSCOPE_MODELS=examples/models python -m core.models spatial_attention_net
    ARCHSCOPE_MODELS=examples/models python -m core.train --model spatial_attention_net --dataset shapes --epochs 5

The shape of a typical course assignment: a plain conv stack, plus one idea of the student's own
(here the spatial gate of CBAM, Woo et al. 2018: a 7x7 conv over the per-pixel channel mean and
max, squashed by a sigmoid, multiplies every channel), compared against a built-in reference
such as cnn3. Any channel count (1, 2 or 3) and any image size from 16 px up: the head pools
globally, so nothing depends on the input size.

    stem   conv 3x3, C -> w, BN, ReLU, max-pool 2x2
    block  conv 3x3, w -> 2w, BN, ReLU, spatial gate, max-pool 2x2
    head   global average pool, dense 2w -> num_classes

``SpatialGate`` is its own nn.Module, so the dashboard's Explain page offers it (``gate``) as a
CAM target layer next to the convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from core.models import register_model


class SpatialGate(nn.Module):
    """x [B, C, H, W] -> x * sigmoid(conv7x7([mean over C, max over C])) [B, C, H, W]."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class SpatialAttentionNet(nn.Module):
    """x [B, in_channels, H, W] (H, W >= 16) -> logits [B, num_classes]."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(2 * width), nn.ReLU())
        self.gate = SpatialGate()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.gate(self.block(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))    # global average pool: any input size


@register_model(
    "spatial_attention_net",
    "example student model: 2 conv blocks with a CBAM-style spatial-attention gate, global pooling",
    source="examples/models (CBAM spatial gate, Woo et al. 2018)",
    min_input_size=16,
)
def spatial_attention_net(num_classes: int, in_channels: int = 3, width: int = 32) -> nn.Module:
    """An example of a model of one's own; ``width`` channels in the stem, twice that after."""
    return SpatialAttentionNet(num_classes, in_channels, width)
