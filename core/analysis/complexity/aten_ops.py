"""The aten op tables: what each aten op costs, as MACs, element-wise ops, or nothing.

The dispatch-mode counter (counter.py) classifies every aten op it sees with these tables; an op in
none of them is FLAGGED by the counter, never counted as zero.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

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
    # On CUDA, BatchNorm dispatches to cuDNN's op instead (seen on an H200): same work, and the
    # count must not depend on the device (it was FLAGGED there before).
    "cudnn_batch_norm": 2,
    "miopen_batch_norm": 2,
    "native_layer_norm": 5,  # mean, variance, subtract, divide, affine
    "native_group_norm": 5,
    "_softmax": 3,            # exp, sum, divide
    "_log_softmax": 3,
    "grid_sampler_2d": 4,     # bilinear: 4 corner weights x values (nearest mode is also charged 4)
    "upsample_bilinear2d": 4,
    "_upsample_bilinear2d_aa": 4,
    "upsample_bicubic2d": 16,
}

MAC_OPS = frozenset(
    """mm addmm bmm baddbmm addbmm mv addmv dot convolution _convolution
    _scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
    _scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention
    _scaled_dot_product_attention_math _euclidean_dist _cdist_forward""".split()
)


def shape_of(t: Any) -> list[int] | None:
    """Shape of a tensor as a list; None for anything else."""
    return list(t.shape) if isinstance(t, torch.Tensor) else None


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor in ``obj`` (a tensor, or nested lists/tuples/dicts), else None."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for o in obj.values():
            t = first_tensor(o)
            if t is not None:
                return t
    return None


def dims_text(dims: Sequence[int]) -> str:
    """[11, 11, 3] -> "11x11x3" (how formulas print dimensions)."""
    return "x".join(str(int(d)) for d in dims)


def conv_macs(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int],
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
        text = f"transposed: {dims_text(k)} x (N/g={w_shape[1]}) x M x Hin x Win = {dims_text(dims)}"
    else:
        macs = math.prod(out_shape) * math.prod(w_shape[1:])
        dims = [*k, w_shape[1], out_shape[1], *out_shape[2:]]
        text = dims_text(dims)
    if x_shape[0] != 1:
        text = f"{x_shape[0]}x{text}"
    return macs, f"{text} = {macs:,}"


def aten_macs(name: str, args: tuple, out: Any) -> tuple[int, str]:
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
        return conv_macs(list(x.shape), list(w.shape), list(first_tensor(out).shape), transposed)
    if name in ("_euclidean_dist", "_cdist_forward"):
        # pairwise distances [.., P, D] x [.., R, D]: one multiply-accumulate per pair and feature
        a, b = args[0], args[1]
        lead = math.prod(a.shape[:-2])
        P, D, R = a.shape[-2], a.shape[-1], b.shape[-2]
        macs = lead * P * R * D
        return macs, f"{name} {dims_text([lead, P, R, D])} = {macs:,}"
    if name.startswith("_scaled_dot_product"):
        q, k, v = args[0], args[1], args[2]
        lead = math.prod(q.shape[:-2])
        L, E = q.shape[-2], q.shape[-1]
        S, Ev = k.shape[-2], v.shape[-1]
        macs = lead * L * S * (E + Ev)
        return macs, f"attention {lead}x{L}x{S}x({E}+{Ev}) = {macs:,}"
    raise AssertionError(name)


def aten_elementwise(name: str, args: tuple, out: Any) -> int | None:
    """Element-wise ops of one aten op, 0 for free ops, None for an op we do not know."""
    if name in _FREE_OPS:
        return 0
    o = first_tensor(out)
    if name in _POINTWISE_OPS:
        if o is not None:
            return o.numel()
        t = first_tensor(args)
        return t.numel() if t is not None else 0
    if name in _REDUCTION_OPS:
        t = first_tensor(args)
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

