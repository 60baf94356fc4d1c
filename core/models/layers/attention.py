"""Attention blocks used by the seed architectures. Every map they compute passes through a ``Tap``
so ``core.analysis.recorder.Recorder`` can capture it; nothing is stored on the modules.

- ``ChannelAttention``  CBAM channel branch (Woo et al. 2018): shared MLP on avg- and max-pooled
  descriptors, sigmoid -> (B, C, 1, 1) weights.                     Tap "channel_attention"
- ``SpatialAttention``  CBAM spatial branch: [mean_c, max_c] -> kxk conv -> sigmoid (B, 1, H, W).
                                                                     Tap "spatial_attention"
- ``CBAM``              channel then spatial attention (seed 000 task II "attention2").
- ``SelfAttention2d``   SAGAN self-attention (Zhang et al. 2019) with a zero-initialised gamma,
  so the block starts as the identity. Map (B, HW, HW') rows sum to 1.  Tap "self_attention"
- ``PoolingChannelAttention`` seed 001 method 3: average and max pooling ACROSS the input
  channels give 2 maps whatever C is; a small MLP of 1x1 convs turns them into ``out_channels``
  maps, so a model behind it always sees the same channel count.     Tap "feature"
- ``ConvAttention``     seed 000 task II "conv with attention": a convolution whose output is
  multiplied element-wise by a sigmoid map computed from that output. Tap "spatial_attention"
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models.layers.tap import Tap

__all__ = [
    "ChannelAttention",
    "SpatialAttention",
    "CBAM",
    "SelfAttention2d",
    "PoolingChannelAttention",
    "ConvAttention",
]


def _check_4d(name: str, x: torch.Tensor, channels: int | None = None) -> None:
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise ValueError(f"{name} expects {want}, got {tuple(x.shape)}")


class ChannelAttention(nn.Module):
    """CBAM channel attention. forward: (B, C, H, W) -> (B, C, H, W) = x * a, a: (B, C, 1, 1) in [0, 1]."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if channels <= 0 or reduction <= 0:
            raise ValueError(f"ChannelAttention: channels={channels}, reduction={reduction} must be > 0")
        self.channels = channels
        hidden = max(channels // reduction, 1)
        # 1x1 convs = a shared MLP applied to both pooled descriptors.
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.tap = Tap("channel_attention")

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, 1, 1) weights in [0, 1] (through the Tap)."""
        _check_4d("ChannelAttention", x, self.channels)
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return self.tap(torch.sigmoid(avg + mx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_map(x)


class SpatialAttention(nn.Module):
    """CBAM spatial attention. forward: (B, C, H, W) -> x * a, a: (B, 1, H, W) in [0, 1]."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"SpatialAttention: kernel_size must be odd and positive, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.tap = Tap("spatial_attention")

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1, H, W) in [0, 1] (through the Tap)."""
        _check_4d("SpatialAttention", x)
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return self.tap(torch.sigmoid(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_map(x)


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention.

    forward: (B, C, H, W) -> (B, C, H, W). Taps: channel_attention.tap, spatial_attention.tap.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction)
        self.spatial_attention = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_attention(self.channel_attention(x))


class SelfAttention2d(nn.Module):
    """SAGAN self-attention over spatial positions: out = x + gamma * (V softmax(Q^T K)^T).

    Q, K: 1x1 convs to C // reduction channels; V: 1x1 conv to C; gamma starts at 0 so the block
    is the identity at initialisation. The (B, HW, HW') map costs O((HW)^2) memory: place the
    block at low resolution, or set ``kv_stride`` > 1 to max-pool keys/values (SAGAN pools them
    by 2), which makes the map (B, HW, HW / kv_stride^2).

    forward: (B, C, H, W) -> (B, C, H, W). Tap "self_attention": (B, HW, HW'), rows sum to 1.
    """

    def __init__(self, channels: int, reduction: int = 8, kv_stride: int = 1) -> None:
        super().__init__()
        if channels <= 0 or reduction <= 0 or kv_stride <= 0:
            raise ValueError(
                f"SelfAttention2d: channels={channels}, reduction={reduction}, kv_stride={kv_stride} must be > 0"
            )
        self.channels = channels
        self.kv_stride = kv_stride
        inner = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.tap = Tap("self_attention")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d("SelfAttention2d", x, self.channels)
        b, c, h, w = x.shape
        q = self.query(x).flatten(2)            # (B, c', HW)
        kv_in = F.max_pool2d(x, self.kv_stride) if self.kv_stride > 1 else x
        k = self.key(kv_in).flatten(2)           # (B, c', HW')
        v = self.value(kv_in).flatten(2)         # (B, C, HW')
        attn = self.tap(torch.softmax(q.transpose(1, 2) @ k, dim=-1))  # (B, HW, HW')
        out = (v @ attn.transpose(1, 2)).view(b, c, h, w)
        return x + self.gamma * out


class PoolingChannelAttention(nn.Module):
    """Seed 001 method 3: turn an image with ANY number of channels into ``out_channels`` maps.

    Average and max pooling across the input channels give 2 maps (B, 2, H, W) regardless of C;
    an MLP of 1x1 convs (2 -> hidden -> out_channels, ReLU between) mixes them per pixel. The
    output is left linear (no sigmoid) so it keeps the scale of normalised images, and the model
    behind it sees a fixed channel count. Output maps go through Tap "feature".

    forward: (B, C, H, W), any C >= 1 -> (B, out_channels, H, W)
    """

    def __init__(self, out_channels: int = 3, hidden: int = 8) -> None:
        super().__init__()
        if out_channels <= 0 or hidden <= 0:
            raise ValueError(f"PoolingChannelAttention: out_channels={out_channels}, hidden={hidden} must be > 0")
        self.out_channels = out_channels
        self.mlp = nn.Sequential(
            nn.Conv2d(2, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )
        self.tap = Tap("feature")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d("PoolingChannelAttention", x)
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return self.tap(self.mlp(pooled))


class ConvAttention(nn.Module):
    """Seed 000 task II "conv with attention": y = conv(x); out = y * sigmoid(conv1x1(y)).

    The attention map is one channel (B, 1, Ho, Wo) shared by all output channels, so it can be
    drawn over the image; it goes through Tap "spatial_attention".

    forward: (B, in_channels, H, W) -> (B, out_channels, Ho, Wo)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"ConvAttention: channels must be > 0, got {in_channels} -> {out_channels}")
        self.in_channels = in_channels
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.attention = nn.Conv2d(out_channels, 1, 1)
        self.tap = Tap("spatial_attention")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d("ConvAttention", x, self.in_channels)
        y = self.conv(x)
        return y * self.tap(torch.sigmoid(self.attention(y)))
