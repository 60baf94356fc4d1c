"""The CUDA paths: deformable convolution under bf16 autocast + channels_last (forward and backward),
fp32 evaluation, a sync-free triplet loss, and a one-epoch GPU training. Skipped without CUDA
(benchmarks/gpu_check.sh runs them on a GPU server)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _randomised_deform(seed: int = 0):
    from core.models.layers.deform import DeformConv2d

    torch.manual_seed(seed)
    layer = DeformConv2d(8, 16, kernel_size=3, stride=1, padding=1)
    with torch.no_grad():   # zero-initialised offsets would make it a plain conv: give them a few pixels
        layer.offset_conv.weight.normal_(0, 0.3)
        layer.mask_conv.weight.normal_(0, 0.3)
    return layer


def test_deform_conv2d_forward_backward_bf16_autocast_channels_last():
    from core.training.device import to_channels_last, to_channels_last_batch

    cpu = _randomised_deform()
    gpu = to_channels_last(_randomised_deform().cuda())
    x = torch.randn(4, 8, 12, 12, generator=torch.Generator().manual_seed(1))
    ref = cpu(x)
    ref.square().mean().backward()

    xg = to_channels_last_batch(x.cuda()).requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = gpu(xg)
        loss = out.float().square().mean()
    loss.backward()
    assert out.shape == ref.shape and torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float().cpu(), ref.detach(), rtol=5e-2, atol=5e-2)   # bf16 tolerance
    for (name, p_gpu), (_, p_cpu) in zip(gpu.named_parameters(), cpu.named_parameters()):
        assert p_gpu.grad is not None and torch.isfinite(p_gpu.grad).all(), name
        torch.testing.assert_close(p_gpu.grad.float().cpu(), p_cpu.grad, rtol=1e-1, atol=5e-2, msg=name)
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_evaluation_runs_in_fp32_on_cuda():
    from core.models import create_model
    from core.training.evaluation import run_batches

    model = create_model("cnn2", num_classes=4, in_channels=3).cuda()
    dtypes = set()
    hooks = [m.register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    batches = [(torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 4, (8,), device="cuda"))
               for _ in range(3)]
    res = run_batches(model, batches, device="cuda", channels_last=True)
    for h in hooks:
        h.remove()
    assert dtypes == {torch.float32} and res["n"] == 24 and res["timed_images"] == 16


def test_batch_hard_triplet_loss_does_not_sync():
    from core.training.trainer import triplet_loss

    emb = torch.randn(16, 8, device="cuda", requires_grad=True)
    labels = torch.randint(0, 4, (16,), device="cuda")
    triplet_loss(emb, labels, 1.0, "batch-hard")        # warm-up (allocations, kernels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = triplet_loss(emb, labels, 1.0, "batch-hard")
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item() and torch.isfinite(emb.grad).all()


def test_one_epoch_gpu_training_bf16_channels_last(tmp_path):
    from core.training.config import TrainConfig
    from core.training.run_folder import RunFolder
    from core.training.trainer import train

    before = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    cfg = TrainConfig(model="cnn2", dataset="shapes", image_size=32, max_train_samples=512, batch_size=64,
                      epochs=1, device="cuda", channels="RG", channel_strategy="zero-fill", augment="crop-flip",
                      log_every=4, tensorboard=False)
    status = train(cfg, tmp_path / "gpu", quiet=True)
    assert status["state"] == "done", status
    run = RunFolder(tmp_path / "gpu")
    info = run.read_config()["run"]
    assert info["device"] == "cuda:0" and info["amp"] == "bf16"
    (row,) = run.read_metrics()
    assert row["images_per_s"] > 0 and 0.0 <= row["train_acc"] <= 1.0
    ev = run.read_eval()
    assert ev["dtype"] == "float32" and ev["device"] == "cuda:0" and ev["inference_images_per_s"] > 0
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
