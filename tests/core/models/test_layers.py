"""Custom layers: deformable conv v2 against torchvision, dynamic conv against a per-sample
reference, attention blocks and their Taps through core.analysis.recorder.Recorder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops
from torch import nn

from core.analysis.recorder import Recorder
from core.models.layers import (
    CBAM,
    ChannelAttention,
    ConvAttention,
    DeformConv2d,
    DynamicConv2d,
    PoolingChannelAttention,
    SelfAttention2d,
    SpatialAttention,
    deform_conv2d,
)
from core.models.layers.deform import deform_conv2d_grid_sample


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _no_hooks_left(model: nn.Module) -> bool:
    return all(len(m._forward_hooks) == 0 for m in model.modules())


# ---------------------------------------------------------------------------------------------
# deform_conv2d vs torchvision.ops.deform_conv2d
# ---------------------------------------------------------------------------------------------

# (B, C, H, W, O, kh, kw, stride, padding, dilation, offset_groups, weight_groups, offset_scale, use_mask)
DEFORM_CASES = {
    "3x3_pad1": (2, 4, 8, 8, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, 1.5, True),
    "stride2": (2, 3, 9, 9, 4, 3, 3, (2, 2), (1, 1), (1, 1), 1, 1, 1.5, True),
    "pad2_dilation2": (1, 3, 10, 10, 4, 3, 3, (1, 1), (2, 2), (2, 2), 1, 1, 1.5, True),
    "non_square": (2, 3, 7, 11, 4, 3, 2, (2, 1), (0, 1), (1, 2), 1, 1, 1.5, True),
    "far_outside": (2, 3, 6, 6, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, 6.0, True),
    "mask_none": (2, 3, 8, 8, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, 1.5, False),
    "offset_groups": (2, 4, 7, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 2, 1, 1.5, True),
    "weight_groups": (2, 4, 7, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, 2, 1.5, True),
    "one_pixel_wide": (2, 2, 5, 1, 3, 3, 1, (1, 1), (1, 0), (1, 1), 1, 1, 1.5, True),
}


def _deform_inputs(case, dtype, seed=0):
    b, c, h, w, o, kh, kw, stride, padding, dilation, og, wg, scale, use_mask = case
    gen = torch.Generator().manual_seed(seed)
    ho = _out_size(h, kh, stride[0], padding[0], dilation[0])
    wo = _out_size(w, kw, stride[1], padding[1], dilation[1])
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    offset = scale * torch.randn(b, 2 * og * kh * kw, ho, wo, generator=gen, dtype=dtype)
    weight = torch.randn(o, c // wg, kh, kw, generator=gen, dtype=dtype)
    bias = torch.randn(o, generator=gen, dtype=dtype)
    mask = torch.rand(b, og * kh * kw, ho, wo, generator=gen, dtype=dtype) if use_mask else None
    grad_out = torch.randn(b, o, ho, wo, generator=gen, dtype=dtype)
    return (x, offset, weight, bias, mask), grad_out, dict(stride=stride, padding=padding, dilation=dilation)


def _run_with_grads(fn, tensors, grad_out, kwargs):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    x, offset, weight, bias, mask = leaves
    out = fn(x, offset, weight, bias, mask=mask, **kwargs)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves if t is not None]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(DEFORM_CASES))
def test_deform_conv2d_matches_torchvision(name, dtype):
    tensors, grad_out, kwargs = _deform_inputs(DEFORM_CASES[name], dtype)
    ours, our_grads = _run_with_grads(deform_conv2d, tensors, grad_out, kwargs)
    ref, ref_grads = _run_with_grads(torchvision.ops.deform_conv2d, tensors, grad_out, kwargs)
    assert ours.shape == ref.shape
    # float32 values are O(10) (sums of ~C*k*k products); 1e-4 relative to that scale.
    atol = 1e-9 if dtype == torch.float64 else 1e-4 * max(1.0, ref.abs().max().item())
    torch.testing.assert_close(ours, ref, rtol=0, atol=atol)
    labels = ["input", "offset", "weight", "bias", "mask"]
    for label, g_ours, g_ref in zip(labels, our_grads, ref_grads):
        scale = max(1.0, g_ref.abs().max().item())
        atol_g = 1e-9 if dtype == torch.float64 else 1e-4 * scale
        torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=atol_g, msg=lambda m: f"grad {label}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("size", [(7, 13), (31, 31), (5, 1)])
def test_deform_integer_positions_match_torchvision_gradients(size, dtype):
    # Zero offsets (a freshly initialised DeformConv2d) and integer offsets sample exactly on
    # pixels, where bilinear interpolation has a kink: the offset gradient is the one-sided slope
    # chosen by floor(). Sizes that are not powers of two used to round 5 to 4.9999999 there.
    h, w = size
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, h, w, generator=gen, dtype=dtype)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=dtype)
    grad_out = torch.randn(2, 4, h, w, generator=gen, dtype=dtype)
    for offset in (torch.zeros(2, 18, h, w, dtype=dtype),
                   torch.randint(-2, 3, (2, 18, h, w), generator=gen).to(dtype)):
        tensors = (x, offset, weight, None, torch.rand(2, 9, h, w, generator=gen, dtype=dtype))
        ours, our_grads = _run_with_grads(deform_conv2d, tensors, grad_out, dict(padding=(1, 1)))
        ref, ref_grads = _run_with_grads(torchvision.ops.deform_conv2d, tensors, grad_out, dict(padding=(1, 1)))
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
        for label, g_ours, g_ref in zip(["input", "offset", "weight", "mask"], our_grads, ref_grads):
            torch.testing.assert_close(g_ours, g_ref, rtol=tol, atol=tol, msg=lambda m: f"grad {label}: {m}")


def test_deform_offsets_push_samples_outside_are_zero():
    # Every tap displaced 100 px away: all samples fall outside, so only the bias remains.
    x = torch.randn(1, 2, 5, 5)
    weight = torch.randn(3, 2, 3, 3)
    bias = torch.randn(3)
    offset = torch.full((1, 18, 5, 5), 100.0)
    out = deform_conv2d(x, offset, weight, bias, padding=(1, 1))
    torch.testing.assert_close(out, bias.view(1, 3, 1, 1).expand(1, 3, 5, 5))


def test_deform_offset_layout_is_dy_then_dx():
    # Independent of torchvision: a 1x1 identity kernel with offset channel 0 = +1 reads the
    # row below (dy), channel 1 = +1 the column to the right (dx); outside reads are zero.
    x = torch.arange(20.0).view(1, 1, 4, 5)
    weight = torch.ones(1, 1, 1, 1)
    dy = torch.zeros(1, 2, 4, 5)
    dy[:, 0] = 1.0
    down = deform_conv2d(x, dy, weight)
    expected_down = torch.cat((x[:, :, 1:], torch.zeros(1, 1, 1, 5)), dim=2)
    torch.testing.assert_close(down, expected_down)
    dx = torch.zeros(1, 2, 4, 5)
    dx[:, 1] = 1.0
    right = deform_conv2d(x, dx, weight)
    expected_right = torch.cat((x[:, :, :, 1:], torch.zeros(1, 1, 4, 1)), dim=3)
    torch.testing.assert_close(right, expected_right)
    # Half a pixel down: bilinear average of the row and the one below.
    half = deform_conv2d(x, 0.5 * dy, weight)
    torch.testing.assert_close(half[:, :, :3], 0.5 * (x[:, :, :3] + x[:, :, 1:]))


def test_deform_conv2d_accepts_channels_last_and_sliced_offsets():
    # Offset and mask often come from ONE conv split by channel slicing; channels_last is common.
    tensors, _, kwargs = _deform_inputs(DEFORM_CASES["3x3_pad1"], torch.float64)
    x, offset, weight, bias, mask = tensors
    joint = torch.cat((offset, mask), dim=1).contiguous(memory_format=torch.channels_last)
    out = deform_conv2d(x.contiguous(memory_format=torch.channels_last), joint[:, :18], weight, bias,
                        mask=joint[:, 18:], **kwargs)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("stride,padding,dilation", [((1, 1), (1, 1), (1, 1)), ((2, 1), (0, 2), (1, 2))])
def test_deform_zero_offset_equals_conv2d(stride, padding, dilation):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 8, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(4, generator=gen, dtype=torch.float64)
    ref = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    offset = torch.zeros(2, 18, *ref.shape[2:], dtype=torch.float64)
    mask = torch.ones(2, 9, *ref.shape[2:], dtype=torch.float64)
    out = deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(offset=torch.zeros(2, 17, 6, 6)), "offset"),
        (dict(offset=torch.zeros(2, 18, 5, 6)), "offset spatial size"),
        (dict(mask=torch.zeros(2, 8, 6, 6)), "mask"),
        (dict(weight=torch.zeros(4, 2, 3, 3)), "multiple"),
        (dict(bias=torch.zeros(5)), "bias"),
    ],
)
def test_deform_conv2d_bad_shapes_raise(bad, match):
    args = dict(
        input=torch.zeros(2, 3, 6, 6), offset=torch.zeros(2, 18, 6, 6), weight=torch.zeros(4, 3, 3, 3),
        bias=torch.zeros(4), mask=torch.zeros(2, 9, 6, 6),
    )
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        deform_conv2d(args["input"], args["offset"], args["weight"], args["bias"], padding=(1, 1), mask=args["mask"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_deform_conv2d_cuda_matches_cpu():
    tensors, _, kwargs = _deform_inputs(DEFORM_CASES["stride2"], torch.float32)
    cpu = deform_conv2d(*tensors[:4], mask=tensors[4], **kwargs)
    gpu_args = [t.cuda() for t in tensors[:4]]
    gpu = deform_conv2d(*gpu_args, mask=tensors[4].cuda(), **kwargs)            # torchvision's kernel
    ours_gpu = deform_conv2d_grid_sample(*gpu_args, mask=tensors[4].cuda(), **kwargs)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours_gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_deform_module_starts_as_plain_conv_and_taps():
    torch.manual_seed(0)
    layer = DeformConv2d(3, 5, kernel_size=3, stride=2, padding=1)
    assert layer.kernel_size == (3, 3) and layer.stride == (2, 2) and layer.padding == (1, 1)
    assert layer.dilation == (1, 1)
    assert isinstance(layer.offset_conv, nn.Conv2d) and isinstance(layer.mask_conv, nn.Conv2d)
    x = torch.randn(2, 3, 11, 9)
    with Recorder(layer) as rec:
        out = layer(x)
    ref = F.conv2d(x, layer.weight, layer.bias, stride=2, padding=1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    offsets, masks = rec.by_kind("deform_offset"), rec.by_kind("deform_mask")
    assert [r.tensor.shape for r in offsets] == [torch.Size([2, 18, 6, 5])]
    assert [r.tensor.shape for r in masks] == [torch.Size([2, 9, 6, 5])]
    assert torch.all(offsets[0].tensor == 0) and torch.all(masks[0].tensor == 1)
    assert _no_hooks_left(layer)


def test_deform_module_gradients_reach_offset_and_mask_convs():
    torch.manual_seed(0)
    layer = DeformConv2d(3, 4)
    out = layer(torch.randn(2, 3, 8, 8))
    (out ** 2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Zero-initialised, yet the sampling position still gets a gradient (bilinear slope).
    assert layer.offset_conv.weight.grad.abs().sum() > 0
    assert layer.mask_conv.weight.grad.abs().sum() > 0


def test_deform_module_unmodulated_has_no_mask():
    layer = DeformConv2d(2, 3, modulated=False)
    assert layer.mask_conv is None
    with Recorder(layer) as rec:
        out = layer(torch.randn(1, 2, 6, 6))
    assert out.shape == (1, 3, 6, 6)
    assert rec.by_kind("deform_mask") == [] and len(rec.by_kind("deform_offset")) == 1
    with pytest.raises(ValueError, match="expects"):
        layer(torch.randn(1, 3, 6, 6))


# ---------------------------------------------------------------------------------------------
# DynamicConv2d
# ---------------------------------------------------------------------------------------------


def _dynamic_reference(layer: DynamicConv2d, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Per-sample loop on the explicitly mean-filled image: what the batched layer must equal."""
    c = x.shape[1]
    if c < layer.max_in_channels:
        fill = x.mean(dim=1, keepdim=True).expand(-1, layer.max_in_channels - c, -1, -1)
        x = torch.cat((x, fill), dim=1)
    outs = []
    for i in range(x.shape[0]):
        kernel = torch.einsum("k,koihw->oihw", attn[i], layer.weight)
        bias = attn[i] @ layer.bias
        outs.append(F.conv2d(x[i : i + 1], kernel, bias, stride=layer.stride, padding=layer.padding))
    return torch.cat(outs)


def test_dynamic_conv_one_instance_accepts_1_2_3_channels():
    torch.manual_seed(0)
    layer = DynamicConv2d(8, kernel_size=3, stride=2, padding=1, max_in_channels=3, num_kernels=4)
    assert layer.weight.shape == (4, 8, 3, 3, 3) and layer.num_kernels == 4
    params_before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    ids_before = {n: id(p) for n, p in layer.named_parameters()}
    for c in (1, 2, 3):
        x = torch.randn(3, c, 9, 10, dtype=torch.float64)
        layer.double()
        with Recorder(layer) as rec:
            out = layer(x)
        assert _no_hooks_left(layer)
        assert out.shape == (3, 8, 5, 5) and torch.isfinite(out).all()
        (attn,) = rec.by_kind("kernel_attention")
        assert attn.tensor.shape == (3, 4)
        torch.testing.assert_close(attn.tensor.sum(dim=1), torch.ones(3))
        ref = _dynamic_reference(layer, x, attn.tensor.double())
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        layer.zero_grad()
        out.square().mean().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (c, name)
        layer.float()
    # Same parameter objects and values: nothing was re-initialised for the other channel counts.
    assert {n: id(p) for n, p in layer.named_parameters()} == ids_before
    for n, p in layer.named_parameters():
        torch.testing.assert_close(p.detach(), params_before[n])


def test_dynamic_conv_attention_depends_on_input_and_channel_count():
    torch.manual_seed(0)
    layer = DynamicConv2d(4, max_in_channels=3)
    x = torch.randn(4, 3, 8, 8)
    with Recorder(layer) as rec:
        layer(x)
        layer(x[:, :1])
    full, grey = (r.tensor for r in rec.records)
    assert not torch.allclose(full[0], full[1])   # per-sample attention
    assert not torch.allclose(full, grey)          # channel count changes the attention input


def test_dynamic_conv_temperature_flattens_attention():
    layer = DynamicConv2d(4, temperature=1.0)
    with torch.no_grad():
        layer.attention.fc2.weight.mul_(50.0)   # make the logits sharp
    x = torch.randn(2, 3, 8, 8)
    layer.temperature = 1e6
    with Recorder(layer) as rec:
        layer(x)
    torch.testing.assert_close(rec.records[0].tensor, torch.full((2, 4), 0.25), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="temperature"):
        layer.temperature = 0.0


def test_dynamic_conv_wide_layer_and_bad_input():
    torch.manual_seed(0)
    layer = DynamicConv2d(6, max_in_channels=16, num_kernels=3, bias=False)
    x = torch.randn(2, 16, 6, 6)
    with Recorder(layer) as rec:
        out = layer(x)
    assert out.shape == (2, 6, 6, 6)
    outs = [F.conv2d(x[i : i + 1], torch.einsum("k,koihw->oihw", rec.records[0].tensor[i], layer.weight), padding=1)
            for i in range(2)]
    torch.testing.assert_close(out, torch.cat(outs), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="1 <= C <= 16"):
        layer(torch.randn(2, 17, 6, 6))


# ---------------------------------------------------------------------------------------------
# Attention blocks
# ---------------------------------------------------------------------------------------------


def test_channel_attention_map_and_output():
    torch.manual_seed(0)
    block = ChannelAttention(8, reduction=4)
    x = torch.randn(2, 8, 5, 5)
    with Recorder(block, kinds={"channel_attention"}) as rec:
        out = block(x)
    (rec_map,) = rec.records
    assert rec_map.tensor.shape == (2, 8, 1, 1)
    assert rec_map.tensor.min() >= 0 and rec_map.tensor.max() <= 1
    torch.testing.assert_close(out, x * rec_map.tensor)
    assert _no_hooks_left(block)


def test_spatial_attention_matches_hand_computation():
    torch.manual_seed(0)
    block = SpatialAttention(kernel_size=3)
    x = torch.randn(2, 4, 6, 7)
    with Recorder(block) as rec:
        out = block(x)
    pooled = torch.cat((x.mean(1, keepdim=True), x.max(1, keepdim=True).values), 1)
    expected_map = torch.sigmoid(F.conv2d(pooled, block.conv.weight, padding=1))
    torch.testing.assert_close(rec.records[0].tensor, expected_map)
    assert rec.records[0].kind == "spatial_attention"
    torch.testing.assert_close(out, x * expected_map)


def test_cbam_records_both_maps_and_removes_hooks_on_error():
    torch.manual_seed(0)
    block = CBAM(16, reduction=4, kernel_size=7)
    with Recorder(block) as rec:
        out = block(torch.randn(2, 16, 8, 8))
    assert out.shape == (2, 16, 8, 8)
    assert [(r.kind, tuple(r.tensor.shape)) for r in rec.records] == [
        ("channel_attention", (2, 16, 1, 1)),
        ("spatial_attention", (2, 1, 8, 8)),
    ]
    with pytest.raises(ValueError, match="expects"):
        with Recorder(block):
            block(torch.randn(2, 15, 8, 8))
    assert _no_hooks_left(block)


def test_self_attention_identity_at_init_and_map_shapes():
    torch.manual_seed(0)
    block = SelfAttention2d(16, reduction=8)
    x = torch.randn(2, 16, 5, 6)
    with Recorder(block) as rec:
        out = block(x)
    torch.testing.assert_close(out, x)   # gamma = 0
    (attn,) = rec.by_kind("self_attention")
    assert attn.tensor.shape == (2, 30, 30)
    torch.testing.assert_close(attn.tensor.sum(-1), torch.ones(2, 30))
    with torch.no_grad():
        block.gamma.fill_(0.5)
    out = block(x)
    assert not torch.allclose(out, x)
    out.sum().backward()
    assert block.gamma.grad is not None and block.query.weight.grad.abs().sum() > 0

    pooled = SelfAttention2d(16, kv_stride=2)
    with Recorder(pooled) as rec:
        assert pooled(torch.randn(1, 16, 8, 8)).shape == (1, 16, 8, 8)
    assert rec.records[0].tensor.shape == (1, 64, 16)


def test_pooling_channel_attention_any_channel_count_and_order_invariant():
    torch.manual_seed(0)
    block = PoolingChannelAttention(out_channels=3, hidden=8)
    for c in (1, 2, 3, 5):
        x = torch.randn(2, c, 7, 7)
        with Recorder(block) as rec:
            out = block(x)
        assert out.shape == (2, 3, 7, 7) and torch.isfinite(out).all()
        assert rec.records[0].kind == "feature" and rec.records[0].tensor.shape == (2, 3, 7, 7)
        # Mean and max over channels do not depend on channel order.
        torch.testing.assert_close(block(x.flip(1)), out)
    assert _no_hooks_left(block)


def test_conv_attention_multiplies_conv_by_its_sigmoid_map():
    torch.manual_seed(0)
    block = ConvAttention(3, 8, kernel_size=3, stride=2, padding=1)
    x = torch.randn(2, 3, 12, 10)
    with Recorder(block) as rec:
        out = block(x)
    assert out.shape == (2, 8, 6, 5)
    (attn,) = rec.records
    assert attn.kind == "spatial_attention" and attn.tensor.shape == (2, 1, 6, 5)
    y = block.conv(x)
    torch.testing.assert_close(attn.tensor, torch.sigmoid(block.attention(y)))
    torch.testing.assert_close(out, y * attn.tensor)
