"""ResNets: torchvision's ImageNet ResNet-18/34/50, the dynamic-conv ResNet-18, and the CIFAR ResNet.

``resnet18/34/50`` are torchvision's architectures (same module names, so torchvision or
timm-converted state dicts load as they are), trained from scratch unless ``pretrained_path``
points at a local weight file. Options:

- ``small_input``: the CIFAR stem for 32x32 inputs: conv1 3x3 stride 1 and no max pool, so the
  last stage sees 4x4 instead of 1x1 (the 7x7/2 stem + pool throws away 3/4 of a 32 px image).
- ``pretrained_path``: ``.safetensors`` (preferred) or ``.pth``/``.pt`` read with
  ``torch.load(weights_only=True)`` only, so a stranger's file can fail but never run code.
  A classifier head of another class count is skipped (a new head is trained); any other missing,
  unexpected or mis-shaped key is an error naming the file and the keys.
- ``freeze_backbone``: only ``fc`` trains (seed 002's linear probe); the frozen backbone also stays
  in eval mode so its BatchNorm statistics do not drift while the head trains.
- ``in_channels`` != 3 replaces conv1 (with pretrained weights, conv1 is adapted; see
  ``adapt_first_conv``).

``cifar_resnet`` is the 6n+2 CIFAR network of He et al. (2016) as built in seed 004.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from core.models.layers.dynamic_conv import DynamicConv2d
from core.models.registry import register_model

# --------------------------------------------------------------------------- ImageNet ResNets


class ResNetClassifier(ResNet):
    """torchvision ``ResNet`` plus ``embed``, the small-input stem, any in_channels and a frozen backbone.

    forward: x [B, C, H, W] -> logits [B, num_classes]; embed: x -> [B, embedding_dim]
    (512 for ResNet-18/34, 2048 for ResNet-50). Works from 28 px (stride-32 standard stem:
    the last stage is 1x1) or from 8 px with ``small_input``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int,
        in_channels: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__(block, layers, num_classes=num_classes)
        if small_input or in_channels != 3:
            k, s, p = (3, 1, 1) if small_input else (7, 2, 3)
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=k, stride=s, padding=p, bias=False)
            # Same init torchvision gives every other conv (its loop ran before this swap).
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if small_input:
            self.maxpool = nn.Identity()
        self.in_channels = in_channels
        self.small_input = small_input
        self.embedding_dim = self.fc.in_features
        self.backbone_frozen = False

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> globally pooled features [B, embedding_dim]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> logits [B, num_classes]."""
        return self.fc(self.embed(x))

    def freeze_backbone(self) -> None:
        """Linear probe: every parameter except ``fc`` stops training; the backbone stays in eval mode."""
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith("fc."))
        self.backbone_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> "ResNetClassifier":
        super().train(mode)
        if self.backbone_frozen:
            # Frozen features must not change: BatchNorm in train mode would keep updating its
            # running statistics (and normalise with batch statistics) even with no gradient.
            for name, child in self.named_children():
                if name != "fc":
                    child.train(False)
        return self


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a pretrained RGB conv1 weight [N, 3, k, k] to ``in_channels`` input channels.

    1 channel: the sum over RGB, so a grey image (R = G = B = v) gives the same response as
    before. 2 channels: the mean RGB filter repeated, scaled by 3/2 to keep the response to a
    flat image. (We cannot know which two colours a 2-channel input holds.)
    """
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (weight.shape[1] / in_channels)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weight file: ``.safetensors``, or ``.pth``/``.pt`` with ``torch.load(weights_only=True)``.

    A ``.pth`` holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped; a ``module.``
    prefix (DistributedDataParallel) is stripped. Raises FileNotFoundError / ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    elif suffix in (".pth", ".pt", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            # Never retry with weights_only=False: that retry is exactly the exploit.
            raise ValueError(
                f"{path}: cannot be read with torch.load(weights_only=True) ({exc}); "
                "only plain tensor state dicts are accepted (convert it to .safetensors)"
            ) from exc
        if isinstance(state, Mapping):
            for key in ("state_dict", "model"):
                if isinstance(state.get(key), Mapping):
                    state = state[key]
                    break
    else:
        raise ValueError(f"{path}: unsupported weight file type {suffix!r}; use .safetensors or .pth")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_pretrained(model: nn.Module, path: str | Path, head_prefix: str = "fc.") -> dict:
    """Load local weights into ``model`` strictly, except a head of another size or none (kept fresh).

    Returns ``{"loaded": n_tensors, "skipped_head": [keys], "adapted": [keys]}``. Raises
    ValueError listing missing / unexpected / mis-shaped keys (at most 8 of each) and the file.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    adapted, skipped = [], []
    if "conv1.weight" in state and "conv1.weight" in own:
        w, target = state["conv1.weight"], own["conv1.weight"]
        if w.dim() == 4 and w.shape[0] == target.shape[0] and w.shape[2:] == target.shape[2:] \
                and w.shape[1] == 3 and target.shape[1] != 3:
            state["conv1.weight"] = adapt_first_conv(w, target.shape[1])
            adapted.append("conv1.weight")
    mismatched = []
    for k, v in list(state.items()):
        if k in own and own[k].shape != v.shape:
            if k.startswith(head_prefix):
                skipped.append(k)
                del state[k]
            else:
                mismatched.append(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    # A backbone-only file (exported without its classifier) is fine: the head stays fresh.
    skipped += [k for k in own if k.startswith(head_prefix) and k not in state and k not in skipped]
    # Old checkpoints lack BatchNorm's num_batches_tracked; it only matters for momentum=None.
    missing = [k for k in own if k not in state and k not in skipped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        parts = []
        for label, keys in (("shape mismatch", mismatched), ("missing", missing), ("unexpected", unexpected)):
            if keys:
                more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"{label}: " + "; ".join(keys[:8]) + more)
        raise ValueError(
            f"{path}: weights do not fit {type(model).__name__} "
            f"(check the architecture, small_input and in_channels options): " + " | ".join(parts)
        )
    model.load_state_dict(state, strict=False)
    return {"loaded": len(state), "skipped_head": skipped, "adapted": adapted}


def _resnet_factory(name: str, block: type[BasicBlock] | type[Bottleneck],
                    layers: list[int]) -> Callable[..., ResNetClassifier]:
    """The factory of torchvision's ``name``: resnet18/34/50 differ only in block type and depths."""
    def factory(num_classes: int, in_channels: int = 3, small_input: bool = False,
                pretrained_path: str | None = None, freeze_backbone: bool = False) -> ResNetClassifier:
        model = ResNetClassifier(block, layers, num_classes, in_channels=in_channels, small_input=small_input)
        if pretrained_path:
            load_pretrained(model, pretrained_path)
        if freeze_backbone:
            model.freeze_backbone()
        return model

    factory.__name__ = factory.__qualname__ = name
    return factory


resnet18 = register_model(
    "resnet18",
    "torchvision ResNet-18 (from scratch unless pretrained_path; small_input stem for 32 px)",
    source="He et al. 2016; seeds 000 task I, 003 question 3",
)(_resnet_factory("resnet18", BasicBlock, [2, 2, 2, 2]))
resnet34 = register_model(
    "resnet34",
    "torchvision ResNet-34 (the reference the seeds' small CNNs must reach 90% of)",
    source="He et al. 2016; seeds 000 and 001 task II",
)(_resnet_factory("resnet34", BasicBlock, [3, 4, 6, 3]))
resnet50 = register_model(
    "resnet50",
    "torchvision ResNet-50, 2048-d embedding (linear probe with freeze_backbone, triplet loss)",
    source="He et al. 2016; seed 002 question 1",
)(_resnet_factory("resnet50", Bottleneck, [3, 4, 6, 3]))


# --------------------------------------------------------------------------- dynamic-conv ResNet-18


class DynamicResNet18(ResNetClassifier):
    """ResNet-18 whose conv1 is a ``DynamicConv2d``: one instance takes 1, 2 or 3 input channels.

    The attention over K kernels (softmax, per sample) goes through the layer's
    ``kernel_attention`` Tap, so ``Recorder`` can show it per image.
    """

    def __init__(self, num_classes: int, small_input: bool = False, num_kernels: int = 4,
                 temperature: float = 1.0, max_in_channels: int = 3) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes, in_channels=3, small_input=small_input)
        k, s, p = (3, 1, 1) if small_input else (7, 2, 3)
        self.conv1 = DynamicConv2d(
            64, kernel_size=k, stride=s, padding=p, max_in_channels=max_in_channels,
            num_kernels=num_kernels, temperature=temperature, bias=False,
        )
        self.in_channels = max_in_channels


@register_model(
    "dyconv_resnet18",
    "ResNet-18 with a dynamic first conv (attention over K kernels); accepts 1, 2 or 3 channels",
    source="seed 000 task I VariableInputConv; Chen et al. 2020 dynamic convolution",
    variable_input=True,
)
def dyconv_resnet18(num_classes: int, in_channels: int = 3, small_input: bool = False,
                    num_kernels: int = 4, temperature: float = 1.0) -> DynamicResNet18:
    # in_channels only says what the caller will feed first; the instance takes any of 1..3.
    return DynamicResNet18(num_classes, small_input=small_input, num_kernels=num_kernels,
                           temperature=temperature)


# --------------------------------------------------------------------------- CIFAR ResNet (seed 004)


class StandardBlock(nn.Module):
    """Version 1 block (post-activation): conv3x3-BN-ReLU, conv3x3-BN, + shortcut, ReLU.

    [B, M, H, W] -> [B, N, H/stride, W/stride]; a 1x1 projection + BN when the shape changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.projection = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.projection is None else self.projection(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


class PreActBottleneck(nn.Module):
    """Version 2 block (pre-activation bottleneck): 3x (BN-ReLU-conv) with 1x1, 3x3, 1x1, + shortcut.

    [B, M, H, W] -> [B, 4*width, H/stride, W/stride]. The projection (1x1 conv) takes the
    pre-activated input, as in He et al.'s identity-mapping paper and the TF official model the
    seed's template comes from.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.projection = None
        if stride != 1 or in_channels != out:
            self.projection = nn.Conv2d(in_channels, out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(pre)
        y = self.conv1(pre)
        y = self.conv2(self.relu(self.bn2(y)))
        y = self.conv3(self.relu(self.bn3(y)))
        return y + shortcut


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet: 3x3 conv to 16 channels, 3 stacks of n blocks, global pool, FC.

    version 1: standard blocks 16/32/64 channels, stem followed by BN-ReLU; 6n+2 layers
    (n=3: ResNet-20, n=18: ResNet-110). version 2: pre-activation bottlenecks of width 16/32/64
    (outputs 64/128/256) and a final BN-ReLU; 9n+2 layers. Stacks 2 and 3 halve the size.
    x [B, C, H, W] -> logits [B, num_classes]; embed -> [B, 64 or 256]. Works from 8 px.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, n: int = 3, version: int = 1,
                 first_num_filters: int = 16) -> None:
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"cifar_resnet n (blocks per stack) must be a positive int, got {n!r}")
        if version not in (1, 2):
            raise ValueError(f"cifar_resnet version must be 1 (standard) or 2 (bottleneck), got {version!r}")
        f = first_num_filters
        self.stem = nn.Conv2d(in_channels, f, 3, padding=1, bias=False)
        # Version 1 is post-activation, so the stem gets its own BN-ReLU; version 2 blocks
        # start with BN-ReLU themselves.
        self.stem_norm = nn.Sequential(nn.BatchNorm2d(f), nn.ReLU(inplace=True)) if version == 1 else nn.Identity()
        blocks: list[nn.Module] = []
        prev = f
        for stack in range(3):
            width = f * 2 ** stack
            for i in range(n):
                stride = 2 if (stack > 0 and i == 0) else 1
                if version == 1:
                    blocks.append(StandardBlock(prev, width, stride))
                    prev = width
                else:
                    blocks.append(PreActBottleneck(prev, width, stride))
                    prev = width * PreActBottleneck.expansion
        self.blocks = nn.Sequential(*blocks)
        self.final_norm = nn.Sequential(nn.BatchNorm2d(prev), nn.ReLU(inplace=True)) if version == 2 else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)
        self.embedding_dim = prev
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> pooled features [B, embedding_dim]."""
        x = self.final_norm(self.blocks(self.stem_norm(self.stem(x))))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> logits [B, num_classes]."""
        return self.fc(self.embed(x))


@register_model(
    "cifar_resnet",
    "CIFAR ResNet, 16-channel 3x3 stem, 3 stacks of n blocks (v1 standard post-act, v2 bottleneck pre-act)",
    source="seed 004 (He et al. 2016 CIFAR ResNet; seed's best: n=18, version 1)",
    min_input_size=8,
)
def cifar_resnet(num_classes: int, in_channels: int = 3, n: int = 3, version: int = 1) -> CifarResNet:
    # Default n=3 (ResNet-20, 0.27 M params) trains on a laptop; pass n=18 for the seed's ResNet-110.
    return CifarResNet(num_classes, in_channels, n=n, version=version)

