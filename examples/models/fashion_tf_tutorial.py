"""The TensorFlow tutorial CNN of Zalando's Fashion-MNIST benchmark, as an ARCHSCOPE_MODELS file.

    ARCHSCOPE_MODELS=examples/models python -m core.models fashion_tf_tutorial
    ARCHSCOPE_MODELS=examples/models python -m core.train --model fashion_tf_tutorial --dataset fashion-mnist ...

The network (28x28x1 input, "same" padding so the two 2x2 pools give 14x14 then 7x7):

    conv 5x5, 1 -> 32, ReLU, max-pool 2x2        28x28x32 -> 14x14x32
    conv 5x5, 32 -> 64, ReLU, max-pool 2x2       14x14x64 -> 7x7x64
    flatten, dense 7*7*64 -> 1024, ReLU, dropout 0.4
    dense 1024 -> 10

Parameters, by hand (weights + biases):

    conv1   5*5*1*32  + 32   =       832
    conv2   5*5*32*64 + 64   =    51,264
    dense   7*7*64*1024 + 1024 = 3,212,288
    output  1024*10 + 10     =    10,250
    total                    = 3,274,634

The dense layer reads exactly 7x7x64, so the model takes 28x28 images only (min_input_size 28 and
any larger image fails at the dense layer with a shape error).
"""

from __future__ import annotations

from torch import nn

from core.models import register_model

HAND_COUNTED_PARAMETERS = 832 + 51_264 + 3_212_288 + 10_250   # = 3,274,634 for 10 classes, 1 channel


@register_model(
    "fashion_tf_tutorial",
    "TensorFlow tutorial CNN: conv5x5-32, pool, conv5x5-64, pool, dense 1024, dropout 0.4 (28x28 only)",
    source="Zalando Fashion-MNIST benchmark README (the TensorFlow tutorial CNN)",
    in_channels=(1,),
    min_input_size=28,
)
def fashion_tf_tutorial(num_classes: int, in_channels: int = 1, dropout: float = 0.4) -> nn.Module:
    """x [B, 1, 28, 28] -> logits [B, num_classes]."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(1024, num_classes),
    )
