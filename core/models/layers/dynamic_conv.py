"""Dynamic convolution (Chen et al. 2020, "Dynamic Convolution: Attention over Convolution Kernels")
that accepts a variable number of input channels with one set of parameters (seed 000, task I).

Per sample, an attention branch (global average pooling -> 2-layer MLP -> softmax with
temperature) weights K kernels; the K kernels are aggregated into one kernel per sample and the
whole batch is convolved by ONE grouped convolution (the batch becomes the groups), so the cost
is close to a plain convolution: aggregation is a (B, K) x (K, out*C*kh*kw) matmul.

Variable input channels (1..max_in_channels), without re-initialisation
-----------------------------------------------------------------------
Kernels are stored over ``max_in_channels`` input channels. An input with C < max_in channels is
treated as if its missing channels were filled with the mean of the present ones ("mean-fill"):
a 1-channel image is seen as a grey RGB image, a 2-channel one gets its average as the third.
Why this choice rather than slicing the kernel or learning a mapping per C:
  * slicing (use the kernels of the first C channels) makes a lone channel mean "red" whatever
    it is, and drops the learned response of the other channels;
  * a learned C -> max_in mapping only trains for channel counts seen in training, and with
    2 channels it cannot know whether it got RG, RB or GB anyway; mean-fill is symmetric, has no
    parameters, and matches ``core.data.select_channels(..., strategy="mean-fill")``;
  * it costs nothing: filling is linear, so it is folded into the kernels
    (W_eff[:, c] = W[:, c] + sum_{m >= C} W[:, m] / C) and the convolution runs on the C real
    channels only.
The attention MLP sees the mean-filled pooled input AND a one-hot code of C, so the network can
learn to pick different kernels for grey, two-channel and full-colour inputs (the part of seed
000's "weights based on the number of input channels" that a fixed fill cannot do).

Temperature: softmax(logits / temperature). Chen et al. anneal it from 30 to 1 over the first
epochs so that all kernels train early; ``temperature`` is a plain attribute a trainer may change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from core.models.layers.tap import Tap

__all__ = ["KernelAttention", "DynamicConv2d"]


class KernelAttention(nn.Module):
    """GAP -> Linear -> ReLU -> Linear -> softmax(. / temperature) over K kernels.

    forward(pooled: (B, max_in), channel_code: (B, max_in)) -> (B, K), rows sum to 1.
    """

    def __init__(self, max_in_channels: int, num_kernels: int, reduction: int, temperature: float) -> None:
        super().__init__()
        in_features = 2 * max_in_channels  # pooled statistics + one-hot channel count
        hidden = max(in_features // reduction, 4)
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_kernels)
        self.temperature = float(temperature)
        self.tap = Tap("kernel_attention")

    def forward(self, pooled: torch.Tensor, channel_code: torch.Tensor) -> torch.Tensor:
        logits = self.fc2(F.relu(self.fc1(torch.cat((pooled, channel_code), dim=1))))
        return self.tap(torch.softmax(logits / self.temperature, dim=1))


class DynamicConv2d(nn.Module):
    """Attention over ``num_kernels`` convolution kernels; input may have 1..max_in_channels channels.

    Attributes:
        weight: (K, out_channels, max_in_channels, kh, kw)
        bias:   (K, out_channels) or None (aggregated with the same attention as the kernels)
        attention: ``KernelAttention``; its Tap "kernel_attention" carries the (B, K) softmax.
    forward: (B, C, H, W) with 1 <= C <= max_in_channels -> (B, out_channels, Ho, Wo)
    """

    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
        max_in_channels: int = 3,
        num_kernels: int = 4,
        reduction: int = 4,
        temperature: float = 1.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if out_channels <= 0 or max_in_channels <= 0 or num_kernels <= 0:
            raise ValueError(
                f"DynamicConv2d: out_channels={out_channels}, max_in_channels={max_in_channels}, "
                f"num_kernels={num_kernels} must all be positive"
            )
        if temperature <= 0:
            raise ValueError(f"DynamicConv2d: temperature must be > 0, got {temperature}")
        self.out_channels = out_channels
        self.max_in_channels = max_in_channels
        self.num_kernels = num_kernels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        kh, kw = self.kernel_size

        self.weight = nn.Parameter(torch.empty(num_kernels, out_channels, max_in_channels, kh, kw))
        self.bias = nn.Parameter(torch.empty(num_kernels, out_channels)) if bias else None
        # Each of the K kernels is initialised like an nn.Conv2d of the full (max_in) width.
        fan_in = max_in_channels * kh * kw
        for k in range(num_kernels):
            nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        self.attention = KernelAttention(max_in_channels, num_kernels, reduction, temperature)

    @property
    def temperature(self) -> float:
        return self.attention.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"DynamicConv2d: temperature must be > 0, got {value}")
        self.attention.temperature = float(value)

    def folded_weight(self, channels: int) -> torch.Tensor:
        """The K kernels as seen by a ``channels``-channel input under mean-fill.

        Returns (K, out_channels, channels, kh, kw): W[:, :, c] + sum_{m >= channels} W[:, :, m] / channels.
        """
        if channels == self.max_in_channels:
            return self.weight
        present = self.weight[:, :, :channels]
        missing = self.weight[:, :, channels:].sum(dim=2, keepdim=True)
        return present + missing / channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or not 1 <= x.shape[1] <= self.max_in_channels:
            raise ValueError(
                f"DynamicConv2d expects (B, C, H, W) with 1 <= C <= {self.max_in_channels}, "
                f"got {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        k, o = self.num_kernels, self.out_channels
        kh, kw = self.kernel_size

        # Attention input: pooled statistics of the mean-filled image (filling happens on the
        # (B, C) pooled vector, not on the image) plus a one-hot code of C.
        pooled = x.mean(dim=(2, 3))
        if c < self.max_in_channels:
            fill = pooled.mean(dim=1, keepdim=True).expand(b, self.max_in_channels - c)
            pooled = torch.cat((pooled, fill), dim=1)
        code = torch.zeros(b, self.max_in_channels, dtype=x.dtype, device=x.device)
        code[:, c - 1] = 1.0
        attn = self.attention(pooled, code)  # (B, K)

        # Per-sample kernels, then one grouped convolution with the batch as the groups.
        kernels = (attn @ self.folded_weight(c).reshape(k, -1)).reshape(b * o, c, kh, kw)
        bias = (attn @ self.bias).reshape(b * o) if self.bias is not None else None
        out = F.conv2d(
            x.reshape(1, b * c, h, w), kernels, bias,
            stride=self.stride, padding=self.padding, groups=b,
        )
        return out.reshape(b, o, out.shape[-2], out.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"max_in_channels={self.max_in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"num_kernels={self.num_kernels}, bias={self.bias is not None}"
        )
