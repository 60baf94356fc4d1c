"""Deformable convolution v2 (Zhu et al. 2019, "Deformable ConvNets v2: More Deformable, Better Results").

``deform_conv2d`` is a drop-in replacement for ``torchvision.ops.deform_conv2d`` (same signature,
semantics and offset layout) that is fast on the CPU; ``DeformConv2d`` is the module used by the
model zoo (offset and modulation predicted by zero-initialised convolutions).

Why not just call torchvision: its CPU kernel runs the bilinear im2col/col2im in serial loops and
costs about 26-37x a plain convolution of the same shape for forward+backward (see
/work/shared/FIELD-NOTES.md), which makes a deformable model untrainable on a laptop. Here the
bilinear sampling of every kernel tap is ONE ``F.grid_sample`` call (vectorised CPU kernel with an
analytic backward for both the image and the sampling grid), followed by the modulation mask and
ONE batched matmul with the weight; autograd differentiates through it. On CUDA tensors
torchvision's kernel is called instead (parallel there, and it does not hold the columns in
memory); that choice is not yet measured (no GPU where this was written).

Offset layout (identical to torchvision, pinned by tests):
    offset: (B, 2 * offset_groups * kh * kw, Ho, Wo); for offset group g and kernel tap
    k = i * kw + j (taps in row-major order), channel g*2*kh*kw + 2*k is the y (row) displacement
    and channel g*2*kh*kw + 2*k + 1 is the x (column) displacement, in input pixels.
    mask:   (B, offset_groups * kh * kw, Ho, Wo); channel g*kh*kw + k modulates tap k of group g.
The sample for output (oy, ox), tap (i, j) is read at
    y = oy*stride_h - pad_h + i*dil_h + dy,   x = ox*stride_w - pad_w + j*dil_w + dx
in the UNPADDED input with bilinear interpolation; neighbours outside the image count as zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from core.models.layers.tap import Tap

__all__ = ["deform_conv2d", "deform_conv2d_grid_sample", "DeformConv2d"]


def _check_shapes(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    out_hw: tuple[int, int],
) -> tuple[int, int]:
    """Validate shapes the way torchvision does, with messages naming the offending value.

    Returns (weight_groups, offset_groups).
    """
    if input.dim() != 4:
        raise ValueError(f"deform_conv2d: input must be (B, C, H, W), got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"deform_conv2d: weight must be (O, C/groups, kh, kw), got {tuple(weight.shape)}")
    b, c = input.shape[:2]
    out_channels, c_per_group, kh, kw = weight.shape
    if c_per_group == 0 or c % c_per_group != 0:
        raise ValueError(
            f"deform_conv2d: input channels {c} are not a multiple of weight.shape[1]={c_per_group}"
        )
    groups = c // c_per_group
    if out_channels % groups != 0:
        raise ValueError(
            f"deform_conv2d: out channels {out_channels} not divisible by the {groups} weight groups"
        )
    ho, wo = out_hw
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"deform_conv2d: output size would be {ho}x{wo} for input {tuple(input.shape)} and "
            f"kernel {kh}x{kw}; check padding/stride/dilation"
        )
    taps = kh * kw
    if offset.dim() != 4 or offset.shape[0] != b or offset.shape[1] % (2 * taps) != 0:
        raise ValueError(
            f"deform_conv2d: offset must be (B={b}, 2*offset_groups*{taps}, Ho, Wo), got {tuple(offset.shape)}"
        )
    offset_groups = offset.shape[1] // (2 * taps)
    if offset_groups == 0 or c % offset_groups != 0:
        raise ValueError(
            f"deform_conv2d: input channels {c} not divisible by offset groups {offset_groups} "
            f"(offset.shape[1]={offset.shape[1]})"
        )
    if tuple(offset.shape[2:]) != (ho, wo):
        raise ValueError(
            f"deform_conv2d: offset spatial size {tuple(offset.shape[2:])} != output size {(ho, wo)}"
        )
    if mask is not None and tuple(mask.shape) != (b, offset_groups * taps, ho, wo):
        raise ValueError(
            f"deform_conv2d: mask must have shape {(b, offset_groups * taps, ho, wo)}, got {tuple(mask.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"deform_conv2d: bias must have shape ({out_channels},), got {tuple(bias.shape)}")
    return groups, offset_groups


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: tuple[int, int] | int = (1, 1),
    padding: tuple[int, int] | int = (0, 0),
    dilation: tuple[int, int] | int = (1, 1),
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable convolution v2 with ``torchvision.ops.deform_conv2d``'s signature and semantics.

    Args:
        input:  (B, C, H, W)
        offset: (B, 2 * offset_groups * kh * kw, Ho, Wo), (dy, dx) interleaved per tap, row-major taps
        weight: (O, C / groups, kh, kw); ``groups`` = C // weight.shape[1]
        bias:   (O,) or None
        stride, padding, dilation: int or (h, w)
        mask:   (B, offset_groups * kh * kw, Ho, Wo) modulation per tap, or None (= all ones, DCN v1)
    Returns:
        (B, O, Ho, Wo) with Ho = (H + 2*pad_h - dil_h*(kh-1) - 1) // stride_h + 1 (same for Wo).

    On CUDA tensors this calls torchvision's kernel; elsewhere ``deform_conv2d_grid_sample``.
    """
    if input.is_cuda:
        # torchvision's CUDA kernel is parallel over every output element (its CPU kernel is not),
        # and avoids materialising the columns tensors of deform_conv2d_grid_sample. Measured on an
        # H200 (benchmarks/bench_layers.py --device cuda, batch 64, 64->128, 32x32, 3x3, fwd+bwd):
        # 4.3 ms against 0.9 ms for a plain nn.Conv2d, 4.7x.
        import torchvision.ops

        return torchvision.ops.deform_conv2d(
            input, offset, weight, bias,
            stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation), mask=mask,
        )
    return deform_conv2d_grid_sample(input, offset, weight, bias, stride, padding, dilation, mask)


def deform_conv2d_grid_sample(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: tuple[int, int] | int = (1, 1),
    padding: tuple[int, int] | int = (0, 0),
    dilation: tuple[int, int] | int = (1, 1),
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The grid_sample + batched-matmul implementation of ``deform_conv2d``, on any device.

    Same arguments, shapes and result as ``deform_conv2d`` (which calls this on the CPU); public so
    that benchmarks can time it against torchvision on a GPU too.
    """
    stride_h, stride_w = _pair(stride)
    pad_h, pad_w = _pair(padding)
    dil_h, dil_w = _pair(dilation)

    if input.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"deform_conv2d: input must be (B, C, H, W) and weight (O, C/groups, kh, kw), got "
            f"{tuple(input.shape)} and {tuple(weight.shape)}"
        )
    b, c, h, w = input.shape
    kh, kw = weight.shape[2], weight.shape[3]
    ho = (h + 2 * pad_h - dil_h * (kh - 1) - 1) // stride_h + 1
    wo = (w + 2 * pad_w - dil_w * (kw - 1) - 1) // stride_w + 1
    groups, offset_groups = _check_shapes(input, offset, weight, bias, mask, (ho, wo))
    taps = kh * kw
    og = offset_groups
    y, x = _sample_positions(offset, og, (kh, kw), (ho, wo), (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w),
                             input.dtype)

    # grid_sample with align_corners=False maps a normalised g to pixel ((g + 1) * size - 1) / 2, so
    # g = (2 * pixel + 1) / size - 1 (align_corners=True divides by size - 1, which breaks 1-pixel
    # inputs). The image is zero-padded on the bottom/right to power-of-two sizes: then this round
    # trip is EXACT for integer positions (every term is a short dyadic fraction), so floor() picks
    # the same bilinear cell as torchvision and the offset gradient at integer positions (zero
    # offsets, i.e. a freshly initialised DeformConv2d) is the same one-sided slope. With other
    # sizes, e.g. 31, the position came back as 4.9999999 and the offset gradient differed.
    # padding_mode="zeros" zeroes each bilinear neighbour outside the image, exactly torchvision's
    # rule, and the padded zeros read the same.
    h_pow2, w_pow2 = 1 << (h - 1).bit_length(), 1 << (w - 1).bit_length()
    if (h_pow2, w_pow2) != (h, w):
        input = F.pad(input, (0, w_pow2 - w, 0, h_pow2 - h))
    grid = torch.stack(((2.0 * x + 1.0) / w_pow2 - 1.0, (2.0 * y + 1.0) / h_pow2 - 1.0), dim=-1)
    grid = grid.view(b * og, taps * ho, wo, 2)

    # --- bilinear sampling of every tap: one grid_sample over (B * offset_groups) images ---------
    # The taps are stacked along the output height, so the result is already the im2col columns
    # (B, C, taps, Ho*Wo) with channel-major, tap-minor order, i.e. weight.view(O, C/groups*taps).
    sampled = F.grid_sample(
        input.reshape(b * og, c // og, h_pow2, w_pow2), grid,
        mode="bilinear", padding_mode="zeros", align_corners=False,
    )  # (B*og, C/og, taps*Ho, Wo)
    columns = sampled.reshape(b, og, c // og, taps, ho * wo)
    if mask is not None:
        columns = columns * mask.reshape(b, og, 1, taps, ho * wo)
    return _apply_weight(columns, weight, bias, groups, (ho, wo))


def _sample_positions(offset: torch.Tensor, og: int, kernel: tuple[int, int], out_hw: tuple[int, int],
                      stride: tuple[int, int], padding: tuple[int, int],
                      dilation: tuple[int, int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Where every tap samples, in input pixels: base grid + learned displacement.

    offset (B, 2*og*taps, Ho, Wo) -> y, x each (B, og, taps, Ho, Wo), with
    base_y[k, oy] = oy*stride - pad + i*dil for tap k = (i, j); same for x with (ox, j).
    """
    (kh, kw), (ho, wo), taps = kernel, out_hw, kernel[0] * kernel[1]
    device = offset.device
    ky = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * dilation[0]  # (taps,)
    kx = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * dilation[1]              # (taps,)
    oy = torch.arange(ho, device=device, dtype=dtype) * stride[0] - padding[0]             # (Ho,)
    ox = torch.arange(wo, device=device, dtype=dtype) * stride[1] - padding[1]             # (Wo,)
    off = offset.reshape(offset.shape[0], og, taps, 2, ho, wo)
    y = off[:, :, :, 0] + (ky.view(taps, 1, 1) + oy.view(1, ho, 1))  # (B, og, taps, Ho, Wo)
    x = off[:, :, :, 1] + (kx.view(taps, 1, 1) + ox.view(1, 1, wo))
    return y, x


def _apply_weight(columns: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int,
                  out_hw: tuple[int, int]) -> torch.Tensor:
    """The weighted sum: columns (B, og, C/og, taps, Ho*Wo) x weight (O, C/groups, kh, kw) -> (B, O, Ho, Wo)."""
    b = columns.shape[0]
    out_channels, c_per_group = weight.shape[0], weight.shape[1]
    taps, l = columns.shape[3], columns.shape[4]
    c = c_per_group * groups
    if groups == 1:
        # bmm on an expanded (stride-0) weight: torch.matmul would fold the batch into one mm by
        # copying the big columns tensor transposed, which measured ~1.7x slower here.
        w_b = weight.reshape(1, out_channels, c * taps).expand(b, out_channels, c * taps)
        out = torch.bmm(w_b, columns.reshape(b, c * taps, l))
    else:
        w_g = weight.reshape(groups, out_channels // groups, c_per_group * taps)
        out = torch.matmul(w_g, columns.reshape(b, groups, c_per_group * taps, l))
    out = out.reshape(b, out_channels, *out_hw)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Modulated deformable convolution (DCN v2) whose offsets and masks are predicted from the input.

    ``offset_conv`` (C -> 2*kh*kw) and ``mask_conv`` (C -> kh*kw) share the main conv's kernel
    size, stride, padding and dilation, and are zero-initialised: at initialisation every offset is
    0 and every mask is 2*sigmoid(0) = 1, so the layer starts as exactly a plain convolution with
    ``weight``. The mask is 2*sigmoid(.) in [0, 2] (as in seed 000's DeformableConv2d): a tap can be
    switched off (0) or amplified up to 2x. With ``modulated=False`` there is no mask (DCN v1).

    Observable through Taps: ``tap_offset`` ("deform_offset", (B, 2*kh*kw, Ho, Wo), (dy, dx)
    interleaved per tap, row-major taps) and ``tap_mask`` ("deform_mask", (B, kh*kw, Ho, Wo) in [0, 2]).

    forward: (B, in_channels, H, W) -> (B, out_channels, Ho, Wo).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        modulated: bool = True,
    ) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"DeformConv2d: channels must be positive, got {in_channels} -> {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.modulated = modulated
        kh, kw = self.kernel_size
        taps = kh * kw

        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # Same initialisation as nn.Conv2d, so swapping a conv for this layer changes nothing at step 0.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(in_channels * taps)
            nn.init.uniform_(self.bias, -bound, bound)

        conv_kw = dict(kernel_size=self.kernel_size, stride=self.stride,
                       padding=self.padding, dilation=self.dilation, bias=True)
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, **conv_kw)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        if modulated:
            self.mask_conv: nn.Conv2d | None = nn.Conv2d(in_channels, taps, **conv_kw)
            nn.init.zeros_(self.mask_conv.weight)
            nn.init.zeros_(self.mask_conv.bias)
        else:
            self.mask_conv = None
        self.tap_offset = Tap("deform_offset")
        self.tap_mask = Tap("deform_mask")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DeformConv2d expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        offset = self.tap_offset(self.offset_conv(x))
        mask = None
        if self.mask_conv is not None:
            mask = self.tap_mask(2.0 * torch.sigmoid(self.mask_conv(x)))
        return deform_conv2d(
            x, offset, self.weight, self.bias,
            stride=self.stride, padding=self.padding, dilation=self.dilation, mask=mask,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias is not None}, modulated={self.modulated}"
        )
