"""core/training/device.py: device choice, scoped speed settings, autocast, channels_last."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.training import device as dev
from core.training.config import ConfigError
from core.training.distributed import DistInfo


def test_resolve_device_cpu_auto_and_bad_names():
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu0'"):
        dev.resolve_device("tpu0")
    with pytest.raises(ConfigError, match="cannot evaluate"):
        dev.resolve_device("meta", problem="cannot evaluate")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_resolve_device_cuda_without_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        dev.resolve_device("cuda")


def test_local_rank_without_its_own_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert dev.resolve_device("cuda", DistInfo(rank=1, world_size=2, local_rank=1)) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"LOCAL_RANK 2 .* 2 CUDA GPU\(s\).*--nproc_per_node=2"):
        dev.resolve_device("cuda", DistInfo(rank=2, world_size=3, local_rank=2))
    with pytest.raises(ConfigError, match="cuda:5"):
        dev.resolve_device("cuda:5")


def _settings() -> tuple[bool, str]:
    return torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()


def test_speed_settings_apply_on_cuda_only_and_are_restored_even_on_error():
    before = _settings()
    with dev.speed_settings(torch.device("cpu")):
        assert _settings() == before                    # nothing changes for a CPU run
    # The switches themselves need no GPU, so the CUDA branch is exercised here too.
    with dev.speed_settings(torch.device("cuda", 0)):
        assert _settings() == (True, "high")
    assert _settings() == before
    with pytest.raises(RuntimeError, match="boom"):
        with dev.speed_settings(torch.device("cuda", 0)):
            raise RuntimeError("boom")
    assert _settings() == before


def test_autocast_is_bf16_on_cuda_and_off_on_cpu():
    with dev.train_autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    assert dev.autocast_name(torch.device("cpu")) is None
    assert dev.autocast_name(torch.device("cuda", 0)) == "bf16"


def test_channels_last_model_and_batch():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    dev.to_channels_last(model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = dev.to_channels_last_batch(torch.randn(2, 3, 5, 5))
    assert x.is_contiguous(memory_format=torch.channels_last)
