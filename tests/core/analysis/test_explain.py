import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from core.analysis.explain import (
    CAM_METHODS,
    ExplainError,
    channels_as_seen,
    compute_cam,
    count_hooks,
    default_target_layer,
    deform_sampling_points,
    hooks_removed_after,
    kernel_attention_by_combo,
    offset_magnitude,
    overlay_heatmap,
    pca_2d,
    record_deformable,
    record_taps,
    spatial_layers,
)
from core.models.layers.tap import Tap


class TinyNet(nn.Module):
    def __init__(self, in_ch=2, classes=3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_ch, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.tap_spatial = Tap("spatial_attention")
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        f = self.features(x)
        att = self.tap_spatial(torch.sigmoid(f.mean(1, keepdim=True)))
        f = f * att
        return self.head(f.mean((2, 3)))


class Exploding(TinyNet):
    def forward(self, x):
        self.features(x)
        raise RuntimeError("boom inside forward")


def _x(in_ch=2, size=12):
    torch.manual_seed(0)
    return torch.rand(1, in_ch, size, size)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_cam_every_method_shape_range_and_no_hooks_left(method):
    torch.manual_seed(0)
    model = TinyNet().train()
    assert count_hooks(model) == 0
    res = compute_cam(model, _x(), method, target_layer="features.2", class_idx=1)
    assert res.cam.shape == (12, 12)
    assert res.cam.min() >= 0 and res.cam.max() <= 1 + 1e-6
    assert res.class_idx == 1 and res.probs.shape == (3,)
    assert np.isclose(res.probs.sum(), 1, atol=1e-5)
    assert count_hooks(model) == 0
    assert model.training, "the caller's train/eval mode is restored"
    assert all(p.grad is None for p in model.parameters()), "CAM must not leave gradients on weights"


def test_cam_predicted_class_by_default_and_works_under_no_grad():
    model = TinyNet()
    with torch.no_grad():
        res = compute_cam(model, _x(), "Grad-CAM", target_layer="features.2")
    assert res.class_idx == int(np.argmax(res.probs))
    assert res.cam.max() > 0


def test_cam_failures_leave_no_hook():
    model = TinyNet()
    with pytest.raises(ExplainError, match="no layer named 'nope'"):
        compute_cam(model, _x(), "Grad-CAM", target_layer="nope")
    assert count_hooks(model) == 0
    # a failure after torchcam registered its hooks (bad class index)
    with pytest.raises(ExplainError, match="class index 7"):
        compute_cam(model, _x(), "Grad-CAM++", target_layer="features.2", class_idx=7)
    assert count_hooks(model) == 0
    # a failure inside the model's forward
    bad = Exploding()
    with pytest.raises(RuntimeError, match="boom"):
        compute_cam(bad, _x(), "Layer-CAM", target_layer="features.2")
    assert count_hooks(bad) == 0
    with pytest.raises(ExplainError, match="unknown CAM method"):
        compute_cam(model, _x(), "Magic-CAM", target_layer="features.2")
    assert count_hooks(model) == 0


def test_hook_guard_removes_hooks_added_in_block_but_keeps_older_ones():
    model = TinyNet()
    keep = model.features[0].register_forward_hook(lambda *a: None)
    with pytest.raises(ValueError):
        with hooks_removed_after(model):
            model.features[2].register_forward_hook(lambda *a: None)
            model.head.register_forward_pre_hook(lambda *a: None)
            assert count_hooks(model) == 3
            raise ValueError("fail")
    assert count_hooks(model) == 1
    keep.remove()
    assert count_hooks(model) == 0


def test_spatial_layers_use_the_given_input_shape():
    model = TinyNet(in_ch=1)
    layers = dict(spatial_layers(model, (1, 10, 10)))   # a 3x224x224 guess would crash on 1 channel
    assert layers["features.2"] == (6, 10, 10)
    assert default_target_layer(model, (1, 10, 10)) == "features.3"
    assert count_hooks(model) == 0


def test_overlay_heatmap_and_channels_as_seen():
    img = np.full((8, 8, 3), 100, dtype=np.uint8)
    heat = np.zeros((4, 4)); heat[0, 0] = 1
    assert np.array_equal(overlay_heatmap(img, heat, alpha=0.0), img)
    out = overlay_heatmap(img, heat, alpha=0.5)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0, 0], out[7, 7])  # hot corner differs from cold corner
    rgb = torch.ones(3, 2, 2) * torch.tensor([0.2, 0.4, 0.6])[:, None, None]
    seen = channels_as_seen(rgb, "RB")
    assert seen[0, 0].tolist() == [51, 0, 153]
    gray = channels_as_seen(torch.full((1, 2, 2), 0.5), "L")
    assert gray[0, 0].tolist() == [128, 128, 128]


def test_deform_sampling_points_known_offset_matches_torchvision():
    """Pin the (dy, dx)-interleaved, row-major tap layout against torchvision's own kernel."""
    kh = kw = 3
    H = W = 9
    offset = torch.zeros(2 * kh * kw, H, W)
    tap = 5                          # row i=1, column j=2 of the 3x3 kernel
    offset[2 * tap, 4, 4] = 2.0      # dy
    offset[2 * tap + 1, 4, 4] = -3.0  # dx
    pts = deform_sampling_points(offset, 4, 4, (kh, kw), padding=(1, 1))
    assert pts.shape == (9, 2)
    # undeformed taps: a 3x3 grid centred on (4, 4)
    assert pts[0].tolist() == [3.0, 3.0] and pts[8].tolist() == [5.0, 5.0]
    # tap 5 sits at (4 - 1 + 1, 4 - 1 + 2) = (4, 5) before the offset, (6, 2) after
    assert pts[tap].tolist() == [6.0, 2.0]

    # torchvision: a kernel that reads only tap 5 returns the input at the sampling point
    img = torch.arange(H * W, dtype=torch.float32).reshape(1, 1, H, W)
    weight = torch.zeros(1, 1, kh, kw)
    weight[0, 0, 1, 2] = 1.0
    out = tv_deform_conv2d(img, offset[None], weight, padding=(1, 1))
    y, x = pts[tap].astype(int)
    assert out[0, 0, 4, 4].item() == img[0, 0, y, x].item()

    with pytest.raises(ExplainError, match="outside"):
        deform_sampling_points(offset, 9, 0, (3, 3))
    with pytest.raises(ExplainError, match="offset must be"):
        deform_sampling_points(offset[:4], 0, 0, (3, 3))


def test_deform_stride_dilation_and_magnitude():
    offset = torch.zeros(8, 2, 2)  # 2x2 kernel
    offset[1, 1, 0] = 0.5          # tap 0 dx at output (1, 0)
    pts = deform_sampling_points(offset, 1, 0, (2, 2), stride=(2, 2), padding=(0, 0), dilation=(3, 3))
    assert pts.tolist() == [[2.0, 0.5], [2.0, 3.0], [5.0, 0.0], [5.0, 3.0]]
    off = torch.zeros(4, 1, 1)     # K = 2 taps
    off[0] = 3.0; off[1] = 4.0     # tap 0 moves by (3, 4): length 5; tap 1 does not move
    assert offset_magnitude(off)[0, 0] == pytest.approx(2.5)


def test_record_deformable_reads_taps_and_geometry():
    from core.models.layers.deform import DeformConv2d

    class DNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.deform = DeformConv2d(4, 5, kernel_size=3, stride=1, padding=1)
            self.head = nn.Linear(5, 2)

        def forward(self, x):
            return self.head(self.deform(self.stem(x)).mean((2, 3)))

    model = DNet()
    with torch.no_grad():
        model.deform.offset_conv.bias.fill_(0.25)
    recs = record_deformable(model, torch.rand(1, 3, 16, 16))
    assert len(recs) == 1
    r = recs[0]
    assert r.layer == "deform" and r.input_hw == (8, 8) and r.kernel_size == (3, 3)
    assert r.offset.shape == (18, 8, 8) and np.allclose(r.offset, 0.25, atol=1e-5)
    assert r.mask is not None and r.mask.shape == (9, 8, 8)
    assert count_hooks(model) == 0
    with pytest.raises(ExplainError, match="no deformable"):
        record_deformable(TinyNet(), _x())


def test_record_taps_and_kernel_attention_by_combo():
    taps = record_taps(TinyNet(), _x(), kinds={"spatial_attention"})
    assert len(taps) == 1 and taps[0].values.shape == (12, 12)

    class KA(nn.Module):
        """Kernel attention that depends on the number of input channels, as dynamic conv does."""

        def __init__(self):
            super().__init__()
            self.tap = Tap("kernel_attention")

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3)
            logits[:, 0] = float(x.shape[1])
            self.tap(torch.softmax(logits, 1))
            return logits

    rows = kernel_attention_by_combo(KA(), lambda combo: torch.rand(2, len(combo), 4, 4), ["RGB", "R"])
    by = {(r["combo"], r["kernel"]): r["weight"] for r in rows}
    assert by[("RGB", 0)] > by[("R", 0)]
    assert sum(by[("R", k)] for k in range(3)) == pytest.approx(1.0)
    with pytest.raises(ExplainError, match="no dynamic convolution"):
        kernel_attention_by_combo(TinyNet(), lambda c: _x(), ["RGB"])


def test_pca_2d_recovers_a_line():
    t = torch.linspace(-1, 1, 20)[:, None]
    emb = torch.cat([t * 3, t * -4, torch.zeros_like(t)], dim=1) + 0.001 * torch.randn(20, 3)
    pts, ratio = pca_2d(emb)
    assert pts.shape == (20, 2)
    assert ratio[0] > 0.99
    assert np.corrcoef(pts[:, 0], t[:, 0].numpy())[0, 1] ** 2 > 0.99
    with pytest.raises(ExplainError):
        pca_2d(torch.zeros(1, 3))


def test_model_lock_is_one_reentrant_lock_per_model():
    from core.analysis.explain import model_lock

    a, b = TinyNet(), TinyNet()
    assert model_lock(a) is model_lock(a) and model_lock(a) is not model_lock(b)
    with model_lock(a):                       # a Predictor holds it around explain calls that take it again
        res = compute_cam(a, torch.rand(1, 2, 8, 8), "Grad-CAM", default_target_layer(a, (2, 8, 8)))
    assert res.cam.shape == (8, 8) and count_hooks(a) == 0

    import threading

    finished = threading.Event()
    with model_lock(a):                       # another thread extracting on a different model is not blocked
        worker = threading.Thread(target=lambda: (record_taps(b, torch.rand(1, 2, 8, 8)), finished.set()))
        worker.start()
        worker.join(30)
    assert finished.is_set()
