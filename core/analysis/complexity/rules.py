"""Explicit counting rules: modules whose cost we state by hand instead of reading their aten ops.

``nn.Conv*d`` and ``nn.Linear`` get the textbook formulas; the deformable conv (ours and
torchvision's) and ``DynamicConv2d`` get the rules printed in every report (DEFORM_RULE,
DYNAMIC_RULE in report.py). A rule replaces the aten-op count of that module's own ops; its
submodules (a deformable conv's offset/mask convs) keep their own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from core.analysis.complexity.aten_ops import conv_macs, dims_text


@dataclass
class LayerStats:
    """What the hooks, the aten counter and the rules record about one module during the forward."""

    name: str
    module: nn.Module
    calls: int = 0
    output_shape: list[int] | None = None
    aten_macs: int = 0
    aten_elementwise: int = 0
    aten_formulas: list[str] = field(default_factory=list)
    unknown_ops: dict[str, int] = field(default_factory=dict)
    custom_ops: dict[str, int] = field(default_factory=dict)   # non-aten ops (torchvision::...)
    rule: str | None = None
    rule_macs: int = 0
    rule_elementwise: int | None = None     # None: keep the aten element-wise count
    rule_formulas: list[str] = field(default_factory=list)
    rule_notes: list[str] = field(default_factory=list)


def layer_classes() -> dict[str, tuple[type, ...]]:
    """Custom layer classes that have explicit rules, found by import (skipped when missing)."""
    found: dict[str, list[type]] = {"deform": [], "dynamic": []}
    try:
        from core.models.layers.deform import DeformConv2d as OurDeform  # type: ignore
        found["deform"].append(OurDeform)
    except Exception:  # noqa: BLE001 - a broken layer file must not stop counting everything else
        pass
    try:
        from torchvision.ops import DeformConv2d as TvDeform
        found["deform"].append(TvDeform)
    except Exception:  # noqa: BLE001
        pass
    try:
        from core.models.layers.dynamic_conv import DynamicConv2d  # type: ignore
        found["dynamic"].append(DynamicConv2d)
    except Exception:  # noqa: BLE001
        pass
    return {k: tuple(v) for k, v in found.items()}


def rule_conv(st: LayerStats, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
    """nn.Conv*d: the textbook formula (grouped and transposed too); bias adds as element-wise."""
    x = inputs[0]
    transposed = bool(getattr(m, "transposed", False))
    macs, formula = conv_macs(list(x.shape), list(m.weight.shape), list(out.shape), transposed)
    st.rule = "rule: conv"
    st.rule_macs += macs
    st.rule_formulas.append(formula)
    ew = out.numel() if m.bias is not None else 0
    st.rule_elementwise = (st.rule_elementwise or 0) + ew
    g, cin = m.groups, x.shape[1]
    if g > 1:
        kind = "depthwise" if g == cin else "grouped"
        st.rule_notes.append(f"{kind} conv: groups={g}, each output sees M/groups = {cin}/{g} = {cin // g} channel(s)")
    if m.bias is not None:
        st.rule_notes.append("bias adds counted as element-wise")


def rule_linear(st: LayerStats, m: nn.Linear, inputs: tuple, out: torch.Tensor) -> None:
    """nn.Linear: rows x in x out MACs; bias adds as element-wise."""
    rows = out.numel() // m.out_features
    macs = rows * m.in_features * m.out_features
    dims = ([rows] if rows != 1 else []) + [m.in_features, m.out_features]
    st.rule = "rule: linear"
    st.rule_macs += macs
    st.rule_formulas.append(f"{dims_text(dims)} = {macs:,}")
    st.rule_elementwise = (st.rule_elementwise or 0) + (out.numel() if m.bias is not None else 0)
    if m.bias is not None:
        st.rule_notes.append("bias adds counted as element-wise")


def rule_deform(st: LayerStats, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
    """Deformable conv (ours or torchvision's): the weighted sum as a plain conv; bilinear sampling,
    modulation mask and bias as element-wise (DEFORM_RULE)."""
    x = inputs[0]
    w = m.weight
    macs, formula = conv_macs(list(x.shape), list(w.shape), list(out.shape), False)
    kh, kw = w.shape[2], w.shape[3]
    B, M = x.shape[0], x.shape[1]
    Ho, Wo = out.shape[2], out.shape[3]
    sampled = B * M * kh * kw * Ho * Wo
    modulated = getattr(m, "mask_conv", None) is not None or (len(inputs) > 2 and inputs[2] is not None)
    bilinear = 4 * sampled
    mask = sampled if modulated else 0
    # the mask's activation (sigmoid, scale): one op per mask value, (B, kh*kw, Ho, Wo)
    mask_act = B * kh * kw * Ho * Wo if modulated else 0
    bias = out.numel() if getattr(m, "bias", None) is not None else 0
    st.rule = "rule: deformable conv"
    st.rule_macs += macs
    st.rule_formulas.append(f"conv {formula}")
    st.rule_formulas.append(
        f"sampling 4x{M}x{kh}x{kw}x{Ho}x{Wo} = {bilinear:,} el."
        + (f"; mask {M}x{kh}x{kw}x{Ho}x{Wo} = {mask:,} el." if modulated else "")
        + (f"; mask activation {kh}x{kw}x{Ho}x{Wo} = {mask_act:,} el." if modulated else "")
    )
    st.rule_elementwise = (st.rule_elementwise or 0) + bilinear + mask + mask_act + bias
    st.rule_notes.append("bilinear sampling (4/value)" + (" + mask (1/value)" if modulated else "")
                         + " as element-wise; offset/mask convs in their own rows")


def rule_dynamic(st: LayerStats, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
    """DynamicConv2d: kernel aggregation + convolution over the channels actually used (DYNAMIC_RULE)."""
    x = inputs[0]
    K, N, _max_in, kh, kw = m.weight.shape
    B, M = x.shape[0], x.shape[1]
    Ho, Wo = out.shape[2], out.shape[3]
    agg = B * K * N * M * kh * kw
    bias = getattr(m, "bias", None)
    agg_bias = B * K * N if isinstance(bias, torch.Tensor) and bias.dim() == 2 else 0
    conv = B * N * Ho * Wo * M * kh * kw
    st.rule = "rule: dynamic conv"
    st.rule_macs += agg + agg_bias + conv
    st.rule_formulas.append(f"aggregate {dims_text([K, N, M, kh, kw])} = {agg:,}"
                            + (f" + bias {K}x{N} = {agg_bias:,}" if agg_bias else ""))
    st.rule_formulas.append(f"conv {dims_text([kh, kw, M, N, Ho, Wo])} = {conv:,}")
    st.rule_notes.append(f"K={K} kernels mixed per image over the {M} input channels used; "
                         "attention MLP in its own rows")
    # element-wise ops (bias add, pooling for the attention, softmax) stay as seen by the aten counter


Rule = Callable[[LayerStats, nn.Module, tuple, torch.Tensor], None]


def rule_for(module: nn.Module, classes: dict[str, tuple[type, ...]]) -> Rule | None:
    """The explicit rule for ``module`` (``classes`` from ``layer_classes()``), or None: count its aten ops."""
    # Custom layers first: a deformable conv may subclass nn.Conv2d, and its own rule must win.
    if classes["deform"] and isinstance(module, classes["deform"]):
        return rule_deform
    if classes["dynamic"] and isinstance(module, classes["dynamic"]):
        return rule_dynamic
    if isinstance(module, nn.modules.conv._ConvNd):
        return rule_conv
    if isinstance(module, nn.Linear):
        return rule_linear
    return None
