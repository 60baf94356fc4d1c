"""Plain CNN baselines and their one-change twins (deformable, depthwise-separable).

Every network here is the same skeleton, so the only difference between two registered
names is the one the lesson is about:

    [conv block] x depth -> global average pool -> (embedding, D = last width) -> Linear

A conv block is ``conv(k x k, padding k//2) -> BatchNorm -> ReLU -> MaxPool(2)``, where ``conv`` is

- ``plain``:     ``nn.Conv2d(M, N, k)``                                  (cnn2, cnn3, cnn4)
- ``deform``:    ``DeformConv2d(M, N, k)``, offsets predicted from the input (deform_cnn2)
- ``separable``: ``Conv2d(M, M, k, groups=M)`` -> BN -> ReLU -> ``Conv2d(M, N, 1)`` (dwsep_cnn)

``dwsep_cnn(base="cnn3", separable=False)`` builds exactly ``cnn3`` (same module names, same
parameters), so the complexity table of the two shows the textbook cost ratio per layer:
``(Dk^2 M + M N) Df^2 / (Dk^2 M N Df^2) = 1/N + 1/Dk^2`` (seed 003, question 1).

Widths: seed 002 does not give its channel counts and seed 001 gives none for its 3-layer
baseline; we use 32-64-128-256 (doubling after every pooling, the usual choice), which keeps
``cnn3`` at ~94k parameters so it trains on a 2-core CPU at 32 px.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from core.models.layers.deform import DeformConv2d
from core.models.registry import register_model

CONV_KINDS = ("plain", "deform", "separable")

# Default widths per depth (channels after each block).
DEFAULT_WIDTHS = {
    2: (32, 64),
    3: (32, 64, 128),
    4: (32, 64, 128, 256),
}


def _check_kernel(kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int (padding k//2 keeps size), got {kernel_size!r}")


class ConvBlock(nn.Module):
    """``conv -> BN -> ReLU -> MaxPool(2)``: [B, M, H, W] -> [B, N, H//2, W//2].

    ``kind`` picks the convolution (see module docstring). The conv has no bias because the
    BatchNorm right after it has one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kind: str = "plain",
        kernel_size: int = 3,
        modulated: bool = False,
    ) -> None:
        super().__init__()
        if kind not in CONV_KINDS:
            raise ValueError(f"conv kind must be one of {CONV_KINDS}, got {kind!r}")
        _check_kernel(kernel_size)
        pad = kernel_size // 2
        self.kind = kind
        if kind == "plain":
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad, bias=False)
        elif kind == "deform":
            self.conv = DeformConv2d(
                in_channels, out_channels, kernel_size=kernel_size, stride=1, padding=pad,
                bias=False, modulated=modulated,
            )
        else:
            # MobileNet's depthwise-separable unit: depthwise k x k (one filter per input
            # channel), BN, ReLU, then pointwise 1x1 mixing channels.
            self.conv = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, kernel_size, padding=pad, groups=in_channels, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
            )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, M, H, W] -> [B, N, floor(H/2), floor(W/2)]."""
        return self.pool(self.relu(self.bn(self.conv(x))))


class PlainCNN(nn.Module):
    """``depth`` conv blocks, global average pooling, one Linear.

    ``embed(x)`` returns the pooled features [B, widths[-1]] (used by triplet loss);
    ``forward(x)`` returns logits [B, num_classes]. Works from 2**depth px upwards (28 px for
    depth 4: 28 -> 14 -> 7 -> 3 -> 1); the global pool makes any larger size fine.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        kind: str | Sequence[str] = "plain",
        kernel_size: int = 3,
        modulated: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths!r}")
        kinds = (kind,) * len(widths) if isinstance(kind, str) else tuple(kind)
        if len(kinds) != len(widths):
            raise ValueError(f"got {len(kinds)} conv kinds for {len(widths)} blocks")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        blocks = []
        prev = in_channels
        for w, k in zip(widths, kinds):
            blocks.append(ConvBlock(prev, w, kind=k, kernel_size=kernel_size, modulated=modulated))
            prev = w
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(prev, num_classes)
        self.embedding_dim = prev

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> pooled features [B, embedding_dim]."""
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> logits [B, num_classes]."""
        return self.fc(self.dropout(self.embed(x)))


def _widths(depth: int, widths: Sequence[int] | None) -> tuple[int, ...]:
    if widths is None:
        return DEFAULT_WIDTHS[depth]
    widths = tuple(widths)
    if len(widths) != depth:
        raise ValueError(f"this model has {depth} conv blocks, so widths needs {depth} values, got {widths!r}")
    return widths



def _plain_factory(depth: int) -> Callable[..., PlainCNN]:
    """The factory of the plain ``cnn{depth}``: cnn2, cnn3 and cnn4 differ only in their depth."""
    def factory(num_classes: int, in_channels: int = 3, widths: Sequence[int] | None = None,
                kernel_size: int = 3, dropout: float = 0.0) -> PlainCNN:
        return PlainCNN(num_classes, in_channels, _widths(depth, widths), "plain", kernel_size, dropout=dropout)

    factory.__name__ = factory.__qualname__ = f"cnn{depth}"
    return factory


cnn2 = register_model(
    "cnn2",
    "2 blocks Conv-BN-ReLU-MaxPool (32, 64) + global pool + FC",
    source="seed 002 practical part (plain CNN twin of the deformable one)",
)(_plain_factory(2))
cnn3 = register_model(
    "cnn3",
    "3 blocks Conv-BN-ReLU-MaxPool (32, 64, 128) + global pool + FC",
    source="seed 001 task 1 baseline (3-layer CNN)",
    in_channels=(1, 2, 3, 6),   # 6: an image pair stacked (transform-pairs, seed 002 question 3)
)(_plain_factory(3))
cnn4 = register_model(
    "cnn4",
    "4 blocks Conv-BN-ReLU-MaxPool (32, 64, 128, 256) + global pool + FC",
    source="seeds 000/001 task II (plain 4-layer CNN to compare with ResNet-34)",
    in_channels=(1, 2, 3, 6),   # 6: an image pair stacked (transform-pairs, seed 002 question 3)
)(_plain_factory(4))


@register_model(
    "deform_cnn2",
    "cnn2 with every conv a deformable conv (offsets from a zero-initialised conv)",
    source="seed 002 practical part (Dai et al. 2017 deformable conv; modulated=True gives v2)",
)
def deform_cnn2(num_classes: int, in_channels: int = 3, widths: Sequence[int] | None = None,
                kernel_size: int = 3, modulated: bool = False, dropout: float = 0.0) -> PlainCNN:
    # Seed 002 swaps both convolutions, so both blocks are deformable; v1 (no modulation
    # mask) by default as in its report, v2 with modulated=True.
    return PlainCNN(num_classes, in_channels, _widths(2, widths), "deform", kernel_size,
                    modulated=modulated, dropout=dropout)


_DWSEP_BASES = {"cnn2": 2, "cnn3": 3, "cnn4": 4}


@register_model(
    "dwsep_cnn",
    "cnn2/3/4 with each conv replaced by depthwise k x k + pointwise 1x1 (separable=False: the plain twin)",
    source="seed 003 question 1 (MobileNet depthwise-separable convolution, Howard et al. 2017)",
)
def dwsep_cnn(num_classes: int, in_channels: int = 3, base: str = "cnn3", separable: bool = True,
              widths: Sequence[int] | None = None, kernel_size: int = 3, dropout: float = 0.0) -> PlainCNN:
    if base not in _DWSEP_BASES:
        raise ValueError(f"dwsep_cnn base must be one of {sorted(_DWSEP_BASES)}, got {base!r}")
    kind = "separable" if separable else "plain"
    return PlainCNN(num_classes, in_channels, _widths(_DWSEP_BASES[base], widths), kind, kernel_size,
                    dropout=dropout)
