"""Parameters, MACs, FLOPs and element-wise work of a model, per layer, with hand formulas.

    report = complexity_report(model, input_shape=(3, 224, 224))
    report.params_total, report.macs, report.flops, report.elementwise_ops
    print(report.format_table())

Conventions (stated in every report, ``CONVENTIONS``):

* MACs = multiply-accumulates of convolution, linear and matmul-type work, for ONE image
  (batch 1), bias excluded: torchvision's model-table convention. FLOPs = 2 x MACs.
* Element-wise work (activations, bias adds, pooling, normalisation, softmax, attention gates,
  dropout, bilinear interpolation) is counted separately as ``elementwise_ops``, one op per
  element per primitive step, never folded into MACs.

How it counts (our primary counter). One forward at batch 1 under ``torch.no_grad`` with:

1. forward pre/post hooks on every module, keeping a stack so each aten op executed is
   attributed to the innermost module running;
2. a ``TorchDispatchMode`` classifying every aten op: matmul-type (mm, addmm, bmm, baddbmm,
   convolution, scaled-dot-product attention) -> MACs from the operand shapes; known
   element-wise ops -> element-wise ops; data movement (view, cat, ...) -> free; anything else
   -> the layer is FLAGGED with the op name (never silently zero);
3. explicit rules, applied in the post hook, for modules whose cost we state by hand:
   ``nn.Conv*d`` and ``nn.Linear`` (the textbook formulas), ``DeformConv2d`` (ours and
   torchvision's) and ``DynamicConv2d``. A rule replaces the aten-op count of that module's own
   ops (submodules such as a deformable conv's offset/mask convs keep their own rows).

Cross-checks: ptflops (``backend="pytorch"`` and ``backend="aten"``, both return MACs) and
``torch.utils.flop_counter.FlopCounterMode`` (FLOPs, halved here) run on their own forward;
their totals are reported and every layer where they disagree with us is listed with a reason.
"""

from __future__ import annotations

import copy
import io
import math
import threading
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from core.errors import InvalidInputError

CONVENTIONS = (
    "MACs = multiply-accumulates of conv, linear and matmul-type work for one image, bias excluded "
    "(torchvision's table convention); FLOPs = 2 x MACs. Element-wise work (activations, bias adds, "
    "pooling, normalisation, softmax, attention gates, dropout, bilinear interpolation) is counted "
    "separately as element-wise ops (one op per element per step), never included in MACs."
)

# Rules for the element-wise ops of custom layers, stated once so the report can print them.
DEFORM_RULE = (
    "deformable conv: MACs = Dk x Dk x (M/groups) x N x Ho x Wo (the weighted sum, as a plain conv); "
    "element-wise = 4 per sampled value for bilinear interpolation (4 corner weights x values) "
    "+ 1 per sampled value for the modulation mask (v2) + 1 per mask value for its activation "
    "+ 1 per output for the bias, where "
    "sampled values = M x Dk x Dk x Ho x Wo; offset/mask convs are counted in their own rows"
)
DYNAMIC_RULE = (
    "dynamic conv: MACs = K x N x M x Dk x Dk per image for aggregating the K kernels (M = input "
    "channels actually used) + Dk x Dk x M x N x Ho x Wo for the convolution; the attention MLP is "
    "counted in its own submodule rows"
)


class ComplexityError(InvalidInputError):
    """Bad input for a complexity count: the message names the model and the value."""


# --------------------------------------------------------------------------- report types


@dataclass
class LayerRow:
    """One row of the per-layer table (one module; ``name`` is its qualified name)."""

    name: str
    type: str
    output_shape: list[int] | None
    params: int                 # parameters owned directly by this module (not its submodules)
    macs: int
    elementwise_ops: int
    formula: str                # hand formula with its numbers, e.g. "11x11x3x64x55x55 = 70,276,800"
    counted_by: str             # "rule: conv", "rule: deformable conv", "aten ops", "not called", ...
    note: str = ""
    flagged: bool = False       # a counter could not count (part of) this layer
    calls: int = 1


@dataclass
class Disagreement:
    layer: str
    type: str
    ours: int
    theirs: int
    reason: str


@dataclass
class CrossCheck:
    counter: str                # e.g. "ptflops 0.7.5 (backend=pytorch)"
    macs: int | None            # their total, converted to MACs
    note: str                   # what they count, how we converted
    error: str | None = None    # set when the counter failed; macs is then None
    unattributed_macs: int = 0  # part of their total not tied to a layer (functional patches)
    disagreements: list[Disagreement] = field(default_factory=list)


@dataclass
class ComplexityReport:
    model_name: str
    input_shape: tuple[int, ...]        # (C, H, W) of one image
    output_shape: list[int] | None
    params_total: int
    params_trainable: int
    macs: int
    elementwise_ops: int
    layers: list[LayerRow]
    cross_checks: list[CrossCheck] = field(default_factory=list)
    conventions: str = CONVENTIONS
    rules: tuple[str, ...] = (DEFORM_RULE, DYNAMIC_RULE)

    @property
    def flops(self) -> int:
        """FLOPs = 2 x MACs (one multiply + one add per MAC)."""
        return 2 * self.macs

    @property
    def flagged(self) -> list[LayerRow]:
        return [r for r in self.layers if r.flagged]

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (ints, strings, lists)."""
        return {
            "model": self.model_name,
            "input_shape": list(self.input_shape),
            "output_shape": self.output_shape,
            "params_total": self.params_total,
            "params_trainable": self.params_trainable,
            "macs": self.macs,
            "flops": self.flops,
            "elementwise_ops": self.elementwise_ops,
            "conventions": self.conventions,
            "rules": list(self.rules),
            "flagged_layers": [r.name for r in self.flagged],
            "layers": [asdict(r) for r in self.layers],
            "cross_checks": [asdict(c) for c in self.cross_checks],
        }

    def format_table(self) -> str:
        """Readable aligned plain-text table with totals and cross-checks."""
        return format_report(self)


# --------------------------------------------------------------------------- aten op tables

# Zero-cost: metadata, data movement, tensor creation.
_FREE_OPS = frozenset(
    """view _unsafe_view reshape repeat_interleave _reshape_alias t transpose permute expand expand_as clone contiguous
    cat stack slice select unsqueeze squeeze flatten detach detach_ alias as_strided _to_copy copy_
    lift_fresh lift_fresh_copy unbind split split_with_sizes chunk index index_select gather
    constant_pad_nd pad reflection_pad2d replication_pad2d repeat roll arange full zeros ones empty
    empty_like zeros_like ones_like full_like new_zeros new_empty new_ones new_full fill_ fill zero_
    view_as narrow im2col pixel_shuffle pixel_unshuffle flip embedding _local_scalar_dense
    scalar_tensor randn rand randn_like rand_like normal_ uniform_ linspace tril triu diag one_hot
    upsample_nearest2d upsample_nearest1d _upsample_nearest_exact2d channel_shuffle
    native_channel_shuffle unflatten movedim unsafe_split split_copy slice_copy select_copy
    empty_strided resize_ set_ _pin_memory masked_select sort topk argmax argmin nonzero
    eye scatter scatter_ index_put index_put_ _index_put_impl_ _unsafe_index
    _unsafe_index_put unfold diagonal expand_copy permute_copy t_copy view_copy
    """.split()
)

# One op per output element.
_POINTWISE_OPS = frozenset(
    """relu relu_ relu6 gelu gelu_ silu silu_ sigmoid sigmoid_ tanh tanh_ hardtanh hardtanh_
    hardswish hardswish_ hardsigmoid hardsigmoid_ leaky_relu leaky_relu_ elu elu_ selu celu
    softplus mish prelu _prelu_kernel threshold threshold_ add add_ sub sub_ rsub mul mul_ div div_
    neg exp exp_ log log_ log1p sqrt rsqrt pow pow_ clamp clamp_min clamp_min_ clamp_max clamp_max_
    abs where where_ maximum minimum sign floor ceil round reciprocal lerp addcmul addcdiv native_dropout
    bernoulli bernoulli_ dropout masked_fill masked_fill_ le lt gt ge eq ne logical_and logical_or
    logical_not floor_divide remainder fmod frac sin cos square erf erf_ _softmax_backward_data
    glu hardshrink softshrink logit bitwise_and bitwise_or bitwise_not"""
    .split()
)

# Ops counted per element of the INPUT (reductions, global pooling).
_REDUCTION_OPS = frozenset(
    """mean sum amax amin max min var std var_mean std_mean logsumexp norm linalg_vector_norm prod
    _adaptive_avg_pool2d adaptive_avg_pool2d adaptive_max_pool2d _adaptive_avg_pool3d
    adaptive_max_pool1d cumsum any all""".split()
)

_WINDOW_POOL_OPS = frozenset(
    "max_pool2d max_pool2d_with_indices avg_pool2d max_pool1d avg_pool1d max_pool3d "
    "max_pool3d_with_indices avg_pool3d max_pool1d_with_indices".split()
)

# ops per element of the output
_NORM_OPS = {
    "native_batch_norm": 2,  # inference: (x - mean) * scale + shift, folded to scale and shift
    "_native_batch_norm_legit_no_training": 2,
    "_native_batch_norm_legit": 2,
    "_batch_norm_with_update": 2,
    "_batch_norm_no_update": 2,
    "native_layer_norm": 5,  # mean, variance, subtract, divide, affine
    "native_group_norm": 5,
    "_softmax": 3,            # exp, sum, divide
    "_log_softmax": 3,
    "grid_sampler_2d": 4,     # bilinear: 4 corner weights x values (nearest mode is also charged 4)
    "upsample_bilinear2d": 4,
    "_upsample_bilinear2d_aa": 4,
    "upsample_bicubic2d": 16,
}

_MAC_OPS = frozenset(
    """mm addmm bmm baddbmm addbmm mv addmv dot convolution _convolution
    _scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
    _scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention
    _scaled_dot_product_attention_math _euclidean_dist _cdist_forward""".split()
)


def _shape(t: Any) -> list[int] | None:
    return list(t.shape) if isinstance(t, torch.Tensor) else None


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for o in obj.values():
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _x(dims: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in dims)


def _conv_macs(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int],
               transposed: bool) -> tuple[int, str]:
    """MACs and formula of one (possibly grouped / transposed) convolution.

    x: [B, M, *in_spatial]; weight: [N, M/g, *k] (transposed: [M, N/g, *k]); out: [B, N, *out_spatial].
    Regular: B x prod(k) x (M/g) x N x prod(out_spatial); transposed: every input element is
    scattered through (N/g) x prod(k) weights.
    """
    k = list(w_shape[2:])
    if transposed:
        macs = math.prod(x_shape) * math.prod(w_shape[1:])
        dims = [*k, w_shape[1], *x_shape[1:]]
        text = f"transposed: {_x(k)} x (N/g={w_shape[1]}) x M x Hin x Win = {_x(dims)}"
    else:
        macs = math.prod(out_shape) * math.prod(w_shape[1:])
        dims = [*k, w_shape[1], out_shape[1], *out_shape[2:]]
        text = _x(dims)
    if x_shape[0] != 1:
        text = f"{x_shape[0]}x{text}"
    return macs, f"{text} = {macs:,}"


def _aten_macs(name: str, args: tuple, out: Any) -> tuple[int, str]:
    """MACs of one matmul-type aten op from its operand shapes, with a formula."""
    if name in ("mm", "addmm", "addmv", "mv", "dot"):
        a, b = (args[1], args[2]) if name in ("addmm", "addmv") else (args[0], args[1])
        if name in ("mv", "addmv"):
            n, kk = a.shape
            return n * kk, f"{name} {n}x{kk} = {n * kk:,}"
        if name == "dot":
            return a.numel(), f"dot {a.numel():,}"
        n, kk = a.shape
        m = b.shape[1]
        return n * kk * m, f"{name} {n}x{kk}x{m} = {n * kk * m:,}"
    if name in ("bmm", "baddbmm", "addbmm"):
        a, b = (args[1], args[2]) if name != "bmm" else (args[0], args[1])
        bb, n, kk = a.shape
        m = b.shape[2]
        macs = bb * n * kk * m
        return macs, f"{name} {bb}x{n}x{kk}x{m} = {macs:,}"
    if name in ("convolution", "_convolution"):
        x, w = args[0], args[1]
        transposed = bool(args[6]) if len(args) > 6 else False
        return _conv_macs(list(x.shape), list(w.shape), list(_first_tensor(out).shape), transposed)
    if name in ("_euclidean_dist", "_cdist_forward"):
        # pairwise distances [.., P, D] x [.., R, D]: one multiply-accumulate per pair and feature
        a, b = args[0], args[1]
        lead = math.prod(a.shape[:-2])
        P, D, R = a.shape[-2], a.shape[-1], b.shape[-2]
        macs = lead * P * R * D
        return macs, f"{name} {_x([lead, P, R, D])} = {macs:,}"
    if name.startswith("_scaled_dot_product"):
        q, k, v = args[0], args[1], args[2]
        lead = math.prod(q.shape[:-2])
        L, E = q.shape[-2], q.shape[-1]
        S, Ev = k.shape[-2], v.shape[-1]
        macs = lead * L * S * (E + Ev)
        return macs, f"attention {lead}x{L}x{S}x({E}+{Ev}) = {macs:,}"
    raise AssertionError(name)


def _aten_elementwise(name: str, args: tuple, out: Any) -> int | None:
    """Element-wise ops of one aten op, 0 for free ops, None for an op we do not know."""
    if name in _FREE_OPS:
        return 0
    o = _first_tensor(out)
    if name in _POINTWISE_OPS:
        if o is not None:
            return o.numel()
        t = _first_tensor(args)
        return t.numel() if t is not None else 0
    if name in _REDUCTION_OPS:
        t = _first_tensor(args)
        return t.numel() if t is not None else 0
    if name in _WINDOW_POOL_OPS:
        kernel = args[1] if len(args) > 1 else [1]
        kernel = [kernel] if isinstance(kernel, int) else list(kernel)
        if len(kernel) == 1:
            kernel = kernel * 2
        return (o.numel() if o is not None else 0) * math.prod(kernel)
    if name in _NORM_OPS:
        return (o.numel() if o is not None else 0) * _NORM_OPS[name]
    return None


# --------------------------------------------------------------------------- the counter


@dataclass
class _Stats:
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


class _AtenCounter(TorchDispatchMode):
    """Attributes every aten op to the innermost running module (top of ``stack``)."""

    def __init__(self, stack: list[_Stats]) -> None:
        super().__init__()
        self.stack = stack

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        stats = self.stack[-1]
        name = func._overloadpacket.__name__
        namespace = getattr(func, "namespace", "aten")
        if namespace != "aten":
            key = f"{namespace}::{name}"
            stats.custom_ops[key] = stats.custom_ops.get(key, 0) + 1
            return out
        if name in _MAC_OPS:
            try:
                macs, formula = _aten_macs(name, args, out)
            except Exception:  # noqa: BLE001 - an operand layout we did not foresee: flag, never 0
                stats.unknown_ops[f"{name} (unreadable operands)"] = stats.unknown_ops.get(name, 0) + 1
                return out
            stats.aten_macs += macs
            stats.aten_formulas.append(formula)
            return out
        ew = _aten_elementwise(name, args, out)
        if ew is None:
            stats.unknown_ops[name] = stats.unknown_ops.get(name, 0) + 1
        else:
            stats.aten_elementwise += ew
        return out


def _layer_classes() -> dict[str, tuple[type, ...]]:
    """Custom layer classes that have explicit rules, found by import (skipped when missing)."""
    found: dict[str, list[type]] = {"deform": [], "dynamic": []}
    try:
        from core.models.layers.deform import DeformConv2d as OurDeform  # type: ignore
        found["deform"].append(OurDeform)
    except Exception:  # noqa: BLE001 - the layers helper may not have written it yet
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


def _rule_conv(st: _Stats, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
    x = inputs[0]
    transposed = bool(getattr(m, "transposed", False))
    macs, formula = _conv_macs(list(x.shape), list(m.weight.shape), list(out.shape), transposed)
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


def _rule_linear(st: _Stats, m: nn.Linear, inputs: tuple, out: torch.Tensor) -> None:
    rows = out.numel() // m.out_features
    macs = rows * m.in_features * m.out_features
    dims = ([rows] if rows != 1 else []) + [m.in_features, m.out_features]
    st.rule = "rule: linear"
    st.rule_macs += macs
    st.rule_formulas.append(f"{_x(dims)} = {macs:,}")
    st.rule_elementwise = (st.rule_elementwise or 0) + (out.numel() if m.bias is not None else 0)
    if m.bias is not None:
        st.rule_notes.append("bias adds counted as element-wise")


def _rule_deform(st: _Stats, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
    x = inputs[0]
    w = m.weight
    macs, formula = _conv_macs(list(x.shape), list(w.shape), list(out.shape), False)
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


def _rule_dynamic(st: _Stats, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
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
    st.rule_formulas.append(f"aggregate {_x([K, N, M, kh, kw])} = {agg:,}"
                            + (f" + bias {K}x{N} = {agg_bias:,}" if agg_bias else ""))
    st.rule_formulas.append(f"conv {_x([kh, kw, M, N, Ho, Wo])} = {conv:,}")
    st.rule_notes.append(f"K={K} kernels mixed per image over the {M} input channels used; "
                         "attention MLP in its own rows")
    # element-wise ops (bias add, pooling for the attention, softmax) stay as seen by the aten counter


@dataclass
class _CountResult:
    rows: list[LayerRow]
    output_shape: list[int] | None


def _count(model: nn.Module, x: torch.Tensor) -> _CountResult:
    classes = _layer_classes()
    stats: dict[int, _Stats] = {}
    names: list[tuple[str, nn.Module]] = list(model.named_modules())
    for name, mod in names:
        stats.setdefault(id(mod), _Stats(name=name, module=mod))
    root = stats[id(model)]
    stack: list[_Stats] = [root]
    handles = []

    def rule_for(mod: nn.Module) -> Callable | None:
        if classes["deform"] and isinstance(mod, classes["deform"]):
            return _rule_deform
        if classes["dynamic"] and isinstance(mod, classes["dynamic"]):
            return _rule_dynamic
        if isinstance(mod, nn.modules.conv._ConvNd):
            return _rule_conv
        if isinstance(mod, nn.Linear):
            return _rule_linear
        return None

    # Hooks live on the caller's model: a forward of the same model in another thread (a dashboard
    # session) must not touch this count's stack.
    owner = threading.get_ident()

    def pre(mod, inputs):
        if threading.get_ident() != owner:
            return
        stack.append(stats[id(mod)])

    def post(mod, inputs, output):
        if threading.get_ident() != owner:
            return
        st = stats[id(mod)]
        if stack and stack[-1] is st:
            stack.pop()
        st.calls += 1
        o = _first_tensor(output)
        st.output_shape = _shape(o)
        rule = rule_for(mod)
        if rule is not None and o is not None and inputs and isinstance(inputs[0], torch.Tensor):
            try:
                rule(st, mod, inputs, o)
            except Exception as exc:  # noqa: BLE001 - a layer unlike the one the rule expects
                st.rule = None
                st.rule_notes.append(f"rule failed ({type(exc).__name__}: {exc}); counted from aten ops")

    # The root gets hooks too (its pre-hook pushes it a second time, harmlessly), so a model that
    # IS a rule layer (a lone DeformConv2d) gets its rule.
    for name, mod in names:
        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post, always_call=True))
    try:
        with torch.no_grad(), _AtenCounter(stack):
            output = model(x)
    finally:
        for h in handles:
            h.remove()
    root.calls = max(root.calls, 1)
    root.output_shape = _shape(_first_tensor(output))

    rows: list[LayerRow] = []
    pending_depthwise: tuple[str, nn.Conv2d, _Stats] | None = None
    for name, mod in names:
        st = stats[id(mod)]
        rows_name = name or "(top-level forward)"
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        notes: list[str] = []
        flagged = False
        if st.rule is not None:
            macs = st.rule_macs
            ew = st.aten_elementwise if st.rule_elementwise is None else st.rule_elementwise
            formula = " + ".join(st.rule_formulas)
            counted_by = st.rule
            notes.extend(dict.fromkeys(st.rule_notes))
            if st.aten_macs and st.aten_macs != macs:
                notes.append(f"aten ops executed: {st.aten_macs:,} MACs")
        else:
            macs = st.aten_macs
            ew = st.aten_elementwise
            formula = _join_formulas(st.aten_formulas)
            counted_by = "aten ops" if (macs or ew or st.unknown_ops or st.custom_ops) else ""
            notes.extend(dict.fromkeys(st.rule_notes))
            unknown = {**st.custom_ops, **st.unknown_ops}
            if unknown:
                flagged = True
                ops = ", ".join(f"{k} x{v}" for k, v in sorted(unknown.items()))
                notes.append(f"FLAGGED: op(s) with no counting rule, not counted: {ops}")
        if st.calls == 0 and mod is not model:
            if params == 0:
                continue
            counted_by = "not called"
            notes.append("module not called in this forward: 0 MACs")
        if not (params or macs or ew or flagged or notes) and mod is not model:
            continue
        if mod is model and not (params or macs or ew or flagged):
            continue
        if not formula and ew and not macs:
            formula = "element-wise only"
        if st.calls > 1:
            notes.append(f"called {st.calls} times; counts summed")
        if isinstance(mod, nn.Conv2d) and st.rule == "rule: conv" and st.calls == 1:
            pair = _separable_pair_note(pending_depthwise, mod, st)
            if pair:
                notes.append(pair)
            is_depthwise = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
            pending_depthwise = (rows_name, mod, st) if is_depthwise else None
        rows.append(LayerRow(
            name=rows_name,
            type=type(mod).__name__,
            output_shape=st.output_shape,
            params=params,
            macs=int(macs),
            elementwise_ops=int(ew),
            formula=formula,
            counted_by=counted_by,
            note="; ".join(notes),
            flagged=flagged,
            calls=max(st.calls, 0),
        ))
    return _CountResult(rows=rows, output_shape=root.output_shape)


def _separable_pair_note(depthwise: tuple[str, nn.Conv2d, _Stats] | None, pointwise: nn.Conv2d,
                         st: _Stats) -> str:
    """Note for a 1x1 conv right after a depthwise conv: the pair's MAC ratio to a plain conv.

    depthwise Dk x Dk x M x Ho x Wo + pointwise M x N x Ho x Wo over plain Dk x Dk x M x N x Ho x Wo
    = 1/N + 1/Dk^2 (Dk^2 = kh x kw), exact, printed as a fraction.
    """
    if depthwise is None:
        return ""
    dw_name, dw, dw_st = depthwise
    if pointwise.kernel_size != (1, 1) or pointwise.groups != 1 or pointwise.in_channels != dw.out_channels:
        return ""
    if dw_st.output_shape is None or st.output_shape is None or dw_st.output_shape[2:] != st.output_shape[2:]:
        return ""
    kh, kw = dw.kernel_size
    M, N = dw.in_channels, pointwise.out_channels
    Ho, Wo = st.output_shape[2], st.output_shape[3]
    plain = kh * kw * M * N * Ho * Wo
    pair = dw_st.rule_macs + st.rule_macs
    ratio = Fraction(pair, plain)
    expected = Fraction(1, N) + Fraction(1, kh * kw)
    check = "" if ratio == expected else f" (expected {expected}: layers differ from the textbook pair)"
    return (f"depthwise-separable with {dw_name}: {pair:,} MACs vs plain {_x([kh, kw, M, N, Ho, Wo])} = "
            f"{plain:,}; ratio {ratio.numerator}/{ratio.denominator} = 1/N + 1/Dk^2 = 1/{N} + 1/{kh * kw}{check}")


def _join_formulas(formulas: list[str], limit: int = 4) -> str:
    if not formulas:
        return ""
    shown = formulas[:limit]
    text = " + ".join(shown)
    if len(formulas) > limit:
        rest = len(formulas) - limit
        text += f" + {rest} more op(s)"
    return text


# --------------------------------------------------------------------------- cross-checks

# ptflops monkeypatches torch.nn.functional and keeps module-level state: one call at a time.
_PTFLOPS_LOCK = threading.Lock()


def _exclusive(inclusive: dict[str, int], names: list[str]) -> dict[str, int]:
    """Per-module counts of a counter that reports inclusive (subtree) totals -> own work only.

    Subtracts the nearest counted descendants, not just direct children: a ``ModuleList`` is
    never called, so its members' counts hang directly under the module that calls them.
    """
    out = {n: inclusive.get(n, 0) for n in names}
    for d in names:
        if d == "" or d not in inclusive:
            continue
        parent = d
        while parent:  # walk up "a.b.c" -> "a.b" -> "a" -> "" to the nearest counted ancestor
            parent = parent.rpartition(".")[0]
            if parent in inclusive:
                out[parent] -= inclusive[d]
                break
    return out


def _flop_counter_check(model: nn.Module, x: torch.Tensor, rows: list[LayerRow],
                        module_names: list[str]) -> CrossCheck:
    from torch.utils.flop_counter import FlopCounterMode

    note = "torch.utils.flop_counter.FlopCounterMode: FLOPs = 2 x MACs, halved here; unknown ops count 0"
    try:
        fcm = FlopCounterMode(display=False, depth=None)
        with torch.no_grad(), fcm:
            model(x)
        total = fcm.get_total_flops() // 2
        counts = fcm.get_flop_counts()
    except Exception as exc:  # noqa: BLE001 - a cross-check never stops the report
        return CrossCheck("FlopCounterMode", None, note, error=f"{type(exc).__name__}: {exc}")
    prefix = type(model).__name__
    inclusive = {}
    for key, per_op in counts.items():
        if key == "Global":
            continue
        if key == prefix:
            n = ""
        elif key.startswith(prefix + "."):
            n = key[len(prefix) + 1:]
        else:
            continue
        inclusive[n] = sum(per_op.values()) // 2
    excl = _exclusive(inclusive, module_names)
    check = CrossCheck("FlopCounterMode (torch " + torch.__version__ + ")", int(total), note)
    for r in rows:
        key = "" if r.name == "(top-level forward)" else r.name
        theirs = excl.get(key, 0)
        if theirs != r.macs:
            check.disagreements.append(Disagreement(r.name, r.type, r.macs, int(theirs), _fcm_reason(r)))
    return check


def _fcm_reason(r: LayerRow) -> str:
    if r.counted_by == "rule: deformable conv":
        return ("FlopCounterMode counts only the aten conv/matmul ops inside; torchvision::deform_conv2d "
                "counts as zero and it has no rule for the deformable weighted sum")
    if r.counted_by == "rule: dynamic conv":
        return ("FlopCounterMode counts the aten ops as executed (kernel aggregation as a matmul, grouped "
                "conv); our rule states aggregation + conv by hand")
    unknown_to_fcm = [op for op in ("_euclidean_dist", "_cdist_forward", "mv", "addmv", "dot", "addbmm")
                      if f"{op} " in r.formula]
    if unknown_to_fcm:
        return (f"FlopCounterMode has no formula for {', '.join(unknown_to_fcm)} (counts it as zero); "
                "we count one MAC per pair and feature / per product")
    if r.flagged:
        return "op(s) without a rule: both counters skip them (see the FLAGGED note)"
    return "different aten ops counted"


def _ptflops_version() -> str:
    try:
        from importlib.metadata import version
        return version("ptflops")
    except Exception:  # noqa: BLE001
        return "?"


def _ptflops_pytorch_check(model: nn.Module, x: torch.Tensor, rows: list[LayerRow]) -> CrossCheck:
    note = ("ptflops returns MACs; backend=pytorch hooks known module types (adding bias, activations, "
            "pooling and norms to MACs) and patches torch.nn.functional/tensor ops (counted in its total "
            "but not per layer)")
    label = f"ptflops {_ptflops_version()} (backend=pytorch)"
    try:
        from ptflops import get_model_complexity_info
        from ptflops.pytorch_ops import MODULES_MAPPING
    except Exception as exc:  # noqa: BLE001
        return CrossCheck(label, None, note, error=f"ptflops not importable: {exc}")
    # ptflops adds attributes/hooks to the model and switches it to eval: work on a copy.
    clone = copy.deepcopy(model)
    names = {id(m): n for n, m in clone.named_modules()}
    per_module: dict[str, int] = {}

    def wrap(hook: Callable) -> Callable:
        def counting_hook(module, inputs, output):
            before = getattr(module, "__flops__", 0)
            hook(module, inputs, output)
            n = names.get(id(module), "?")
            per_module[n] = per_module.get(n, 0) + int(getattr(module, "__flops__", 0) - before)
        return counting_hook

    custom = {t: wrap(h) for t, h in MODULES_MAPPING.items()}
    buf = io.StringIO()
    try:
        # Our seeded input, not ptflops' default torch.empty batch: uninitialised memory can hold
        # NaN/huge values, which become NaN offsets that crash torchvision's deform_conv2d CPU
        # kernel (segfault, measured here). no_grad: a count needs no graph.
        # ptflops print()s its failures and tracebacks: keep them out of our output.
        with _PTFLOPS_LOCK, torch.no_grad(), redirect_stdout(buf), redirect_stderr(buf):
            macs, _params = get_model_complexity_info(
                clone, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False,
                backend="pytorch", custom_modules_hooks=custom, ost=buf, verbose=False,
                input_constructor=lambda _res: x.clone(),
            )
    except Exception as exc:  # noqa: BLE001
        return CrossCheck(label, None, note, error=f"{type(exc).__name__}: {exc}")
    if macs is None:
        return CrossCheck(label, None, note, error="ptflops failed: " + buf.getvalue().strip()[-300:])
    check = CrossCheck(label, int(macs), note)
    check.unattributed_macs = int(macs) - sum(per_module.values())
    if check.unattributed_macs:
        check.note += (f"; {check.unattributed_macs:,} of its MACs come from functional/tensor ops "
                       "(F.relu, pooling, tensor add/matmul) not tied to a layer")
    hooked = tuple(MODULES_MAPPING)
    by_name = {n: m for n, m in model.named_modules()}
    for r in rows:
        key = "" if r.name == "(top-level forward)" else r.name
        theirs = per_module.get(key, 0)
        if theirs != r.macs:
            mod = by_name.get(key)
            check.disagreements.append(Disagreement(
                r.name, r.type, r.macs, theirs, _ptflops_reason(r, mod, theirs, hooked)))
    return check


def _ptflops_reason(r: LayerRow, mod: nn.Module | None, theirs: int, hooked: tuple) -> str:
    if mod is not None and type(mod) not in hooked:
        if r.name == "(top-level forward)" or r.counted_by == "aten ops":
            return (f"ptflops pytorch backend does not hook {r.type}: its functional ops (F.conv2d, matmul, "
                    "activations) are missing, or only in ptflops' unattributed total")
        if r.counted_by == "rule: deformable conv":
            return ("ptflops pytorch backend hooks only torchvision.ops.DeformConv2d, not this custom "
                    "module: the deformable conv is missing from the layer (its matmul, if any, lands in "
                    "ptflops' unattributed total; offset/mask convs are counted)")
        if r.counted_by == "rule: dynamic conv":
            return ("ptflops pytorch backend does not see the functional grouped F.conv2d / kernel "
                    "aggregation of a custom module (fix: custom_modules_hooks=)")
        return f"ptflops pytorch backend does not hook {r.type}"
    if r.counted_by in ("rule: conv", "rule: linear") and theirs - r.macs == _bias_elems(mod, r):
        return "ptflops pytorch backend adds one MAC per output element for the bias"
    if r.macs == 0 and theirs > 0:
        return ("ptflops pytorch backend counts element-wise work (activation/pooling/norm) as MACs; "
                "we report it in the element-wise column")
    if r.counted_by == "rule: deformable conv":
        return ("ptflops adds a flat per-position constant for offsets and bilinear sampling to the conv "
                "MACs; we count sampling as element-wise")
    return "ptflops pytorch backend uses a different formula for this module type"


def _bias_elems(mod: nn.Module | None, r: LayerRow) -> int:
    if mod is None or getattr(mod, "bias", None) is None or r.output_shape is None:
        return -1
    return math.prod(r.output_shape)


def _ptflops_aten_check(model: nn.Module, x: torch.Tensor) -> CrossCheck:
    note = ("ptflops returns MACs; backend=aten counts only aten mm/matmul/addmm/bmm/convolution "
            "(element-wise work and torchvision::deform_conv2d count as zero); totals only")
    label = f"ptflops {_ptflops_version()} (backend=aten)"
    try:
        from ptflops import get_model_complexity_info
    except Exception as exc:  # noqa: BLE001
        return CrossCheck(label, None, note, error=f"ptflops not importable: {exc}")
    clone = copy.deepcopy(model)  # its hooks on children are never removed
    buf = io.StringIO()
    try:
        # Our seeded input, not ptflops' default torch.empty batch: uninitialised memory can hold
        # NaN/huge values, which become NaN offsets that crash torchvision's deform_conv2d CPU
        # kernel (segfault, measured here). no_grad: a count needs no graph.
        # ptflops print()s its failures and tracebacks: keep them out of our output.
        with _PTFLOPS_LOCK, torch.no_grad(), redirect_stdout(buf), redirect_stderr(buf):
            macs, _ = get_model_complexity_info(
                clone, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False,
                backend="aten", ost=buf, verbose=False,
                input_constructor=lambda _res: x.clone(),
            )
    except Exception as exc:  # noqa: BLE001
        return CrossCheck(label, None, note, error=f"{type(exc).__name__}: {exc}")
    if macs is None:
        return CrossCheck(label, None, note, error="ptflops failed: " + buf.getvalue().strip()[-300:])
    return CrossCheck(label, int(macs), note)


# --------------------------------------------------------------------------- public API


def complexity_report(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    *,
    model_name: str | None = None,
    cross_check: bool = True,
) -> ComplexityReport:
    """Count parameters, MACs and element-wise ops of ``model`` for one image.

    ``input_shape`` is (C, H, W); the model runs once on a [1, C, H, W] tensor (seeded randn,
    on the model's device and dtype) in eval mode under ``torch.no_grad``; its train/eval mode
    is restored afterwards and the model is not otherwise changed. ``cross_check`` also runs
    ptflops (pytorch and aten backends, on a deep copy) and FlopCounterMode.

    The model is switched to eval() for the count: don't count a model another thread is training
    (``model_complexity`` builds a fresh one). Counting runs one forward, so it costs what
    inference at batch 1 costs (about 1 s for ResNet-50 at 224 px on a laptop CPU, x4 with cross-checks).

    Raises ``ComplexityError`` when the shape is malformed or the forward fails (e.g. an input
    too small for the model), with the model name, the shape and the first line of torch's error.
    """
    shape = tuple(int(s) for s in input_shape)
    name = model_name or type(model).__name__
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ComplexityError(f"input shape must be C,H,W with positive sizes, got {list(input_shape)}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, *shape), generator=gen).to(device=device, dtype=dtype)

    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        try:
            result = _count(model, x)
        except Exception as exc:  # noqa: BLE001 - turned into one clear line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ComplexityError(
                f"model {name!r} cannot run on input {'x'.join(map(str, shape))} (C x H x W): "
                f"{type(exc).__name__}: {first}"
            ) from exc
        rows = result.rows
        report = ComplexityReport(
            model_name=name,
            input_shape=shape,
            output_shape=result.output_shape,
            params_total=sum(p.numel() for p in model.parameters()),
            params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
            macs=sum(r.macs for r in rows),
            elementwise_ops=sum(r.elementwise_ops for r in rows),
            layers=rows,
        )
        if cross_check:
            module_names = [n for n, _ in model.named_modules()]
            report.cross_checks.append(_ptflops_pytorch_check(model, x, rows))
            aten = _ptflops_aten_check(model, x)
            bias_adds = sum(r.elementwise_ops for r in rows if r.counted_by in ("rule: conv", "rule: linear"))
            if aten.macs is not None and aten.macs != report.macs:
                if aten.macs - report.macs == bias_adds:
                    aten.note += (f"; the difference ({aten.macs - report.macs:+,}) is exactly the bias adds of the "
                                  "conv/linear layers, which the aten backend counts as MACs")
                else:
                    rest = aten.macs - report.macs - bias_adds
                    aten.note += (f"; the difference = bias adds it counts as MACs ({bias_adds:+,}) and {rest:+,} "
                                  "of other work (negative: ops it counts as zero, e.g. torchvision::deform_conv2d)")
            report.cross_checks.append(aten)
            report.cross_checks.append(_flop_counter_check(model, x, rows, module_names))
    finally:
        for m, flag in was_training.items():
            m.training = flag
    return report


def model_complexity(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    options: dict | None = None,
    *,
    cross_check: bool = True,
) -> ComplexityReport:
    """Build registered model ``name`` (random init) and count it; bad input -> ``ComplexityError``.

    ``input_shape`` (C, H, W): C is passed as ``in_channels``. Checks the class count, the channel
    count and the model's smallest supported size before building.
    """
    from core.models.registry import UnknownModelError, create_model, get_spec

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ComplexityError(f"--classes must be a positive integer, got {num_classes!r}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ComplexityError(f"--input must be C,H,W with positive sizes, got {list(input_shape)}")
    try:
        spec = get_spec(name)
    except UnknownModelError as exc:
        raise ComplexityError(str(exc)) from None
    c, h, w = shape
    if c not in spec.in_channels:
        raise ComplexityError(f"model {name!r} accepts {spec.in_channels} input channels, got {c}")
    if min(h, w) < spec.min_input_size:
        raise ComplexityError(
            f"input {h}x{w} is too small for model {name!r}: it needs at least "
            f"{spec.min_input_size}x{spec.min_input_size}"
        )
    try:
        model = create_model(name, num_classes=num_classes, in_channels=c, **(options or {}))
    except Exception as exc:  # noqa: BLE001 - any factory failure becomes one clear line
        raise ComplexityError(f"cannot build model {name!r} with options {options or {}}: {exc}") from None
    return complexity_report(model, shape, model_name=name, cross_check=cross_check)


# --------------------------------------------------------------------------- text output


def _fmt_shape(s: list[int] | None) -> str:
    return "-" if s is None else "[" + ", ".join(map(str, s)) + "]"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return out


def format_report(report: ComplexityReport, *, max_note: int = 200) -> str:
    """The CLI's plain-text view: header, aligned per-layer table, totals, cross-checks."""
    lines = [
        f"Model: {report.model_name}   input: {'x'.join(map(str, report.input_shape))} (C x H x W, batch 1)"
        f"   output: {_fmt_shape(report.output_shape)}",
        "",
    ]
    headers = ["layer", "type", "output", "params", "MACs", "elementwise", "formula", "counted by", "note"]
    body = []
    for r in report.layers:
        note = r.note if len(r.note) <= max_note else r.note[: max_note - 3] + "..."
        body.append([
            ("! " if r.flagged else "") + r.name, r.type, _fmt_shape(r.output_shape), f"{r.params:,}",
            f"{r.macs:,}", f"{r.elementwise_ops:,}", r.formula, r.counted_by, note,
        ])
    lines.extend(_table(headers, body, right={3, 4, 5}))
    lines += [
        "",
        f"Params: {report.params_total:,} total, {report.params_trainable:,} trainable",
        f"MACs: {report.macs:,} (multiply-accumulates); FLOPs = 2 x MACs = {report.flops:,}",
        f"Element-wise ops (not in MACs): {report.elementwise_ops:,}",
        f"Convention: {report.conventions}",
    ]
    if report.flagged:
        lines.append("FLAGGED layers (part of their work has no counting rule, marked '!'): "
                     + ", ".join(r.name for r in report.flagged))
    for c in report.cross_checks:
        lines.append("")
        if c.error:
            lines.append(f"Cross-check {c.counter}: FAILED: {c.error}")
            continue
        diff = c.macs - report.macs
        lines.append(f"Cross-check {c.counter}: {c.macs:,} MACs ({diff:+,} vs ours). {c.note}")
        if not c.disagreements:
            continue
        lines.append(f"  layers where it disagrees ({len(c.disagreements)}), grouped by reason:")
        groups: dict[str, list[Disagreement]] = {}
        for d in c.disagreements:
            groups.setdefault(d.reason, []).append(d)
        for reason, items in groups.items():
            if len(items) <= 3:
                for d in items:
                    lines.append(f"    {d.layer} ({d.type}): ours {d.ours:,} vs {d.theirs:,}: {reason}")
                continue
            names = ", ".join(d.layer for d in items[:6]) + (f", ... {len(items) - 6} more" if len(items) > 6 else "")
            ours = sum(d.ours for d in items)
            theirs = sum(d.theirs for d in items)
            lines.append(f"    {len(items)} layers ({names}): ours {ours:,} vs {theirs:,} in all: {reason}")
    return "\n".join(lines)
