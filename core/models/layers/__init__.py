"""Custom layers shared by the model families (deformable conv, dynamic conv, attention blocks).

Layers that have something worth drawing expose it through ``Tap`` modules (see tap.py), read by
``core.analysis.recorder.Recorder``.
"""

from core.models.layers import attention
from core.models.layers.attention import (
    CBAM,
    ChannelAttention,
    ConvAttention,
    PoolingChannelAttention,
    SelfAttention2d,
    SpatialAttention,
)
from core.models.layers.deform import DeformConv2d, deform_conv2d, deform_conv2d_grid_sample
from core.models.layers.dynamic_conv import DynamicConv2d, KernelAttention
from core.models.layers.tap import TAP_KINDS, Tap

__all__ = [
    "Tap",
    "TAP_KINDS",
    "deform_conv2d",
    "deform_conv2d_grid_sample",
    "DeformConv2d",
    "DynamicConv2d",
    "KernelAttention",
    *attention.__all__,   # the attention blocks, listed once in attention.py
]
