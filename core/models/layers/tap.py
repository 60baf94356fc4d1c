"""Observation points inside custom layers.

A layer that has something worth drawing (an attention map, kernel-attention weights,
deformable offsets or modulation masks) passes that tensor through a ``Tap`` module:

    self.tap_map = Tap("spatial_attention")
    ...
    attn = self.tap_map(torch.sigmoid(logits))

``Tap`` is an identity, so it costs nothing and changes nothing; ``core.analysis.recorder.Recorder``
registers forward hooks on every Tap of a model for the duration of a ``with`` block and collects
what flowed through. Nothing is ever stored on modules or in globals.
"""

from __future__ import annotations

import torch
from torch import nn

# The kinds the dashboard knows how to draw.
TAP_KINDS = (
    "spatial_attention",   # (B, 1, H, W) in [0, 1]
    "channel_attention",   # (B, C, 1, 1) or (B, C) in [0, 1]
    "self_attention",      # (B, HW, HW) rows sum to 1
    "kernel_attention",    # (B, K) softmax over the K kernels of a dynamic conv
    "deform_offset",       # (B, 2*kh*kw, Ho, Wo), (dy, dx) interleaved per tap, row-major taps
    "deform_mask",         # (B, kh*kw, Ho, Wo) modulation in [0, 1] (or [0, 2] when documented)
    "feature",             # any other intermediate worth seeing
)


class Tap(nn.Identity):
    """Identity module marking a tensor as observable. ``kind`` is one of ``TAP_KINDS``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in TAP_KINDS:
            raise ValueError(f"unknown tap kind {kind!r}; expected one of {TAP_KINDS}")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401 - identity
        return x

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
