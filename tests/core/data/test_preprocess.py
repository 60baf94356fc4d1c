import numpy as np
import pytest
import torch

from core.data import DataError, PreprocessConfig, TensorSplit, compute_normalization, load_dataset, resize_images
from core.data import preprocess as pp
from core.data import standardize_per_image


def test_resize_images_shape_dtype_and_identity():
    x = torch.randint(0, 256, (3, 3, 10, 12), dtype=torch.uint8)
    y = resize_images(x, 6)
    assert y.shape == (3, 3, 6, 6) and y.dtype == torch.uint8
    flat = torch.full((1, 1, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(flat, 4), torch.full((1, 1, 4, 4), 77, dtype=torch.uint8))
    already = x[:, :, :6, :6]
    assert resize_images(already, 6) is already              # right size: no copy, no resampling


def test_compute_normalization_matches_numpy():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (7, 3, 5, 5), generator=g, dtype=torch.uint8)
    mean, std = compute_normalization(TensorSplit(imgs, torch.zeros(7, dtype=torch.int64)), chunk=3)
    arr = imgs.numpy().astype(np.float64) / 255
    assert np.allclose(mean, arr.mean(axis=(0, 2, 3)))
    assert np.allclose(std, arr.std(axis=(0, 2, 3)))
    assert len(mean) == 3


def test_normalization_comes_from_the_data_not_imagenet():
    ds = load_dataset("shapes", n_train=36, n_val=12, n_test=12)
    mean, std = compute_normalization(ds.train)
    assert all(abs(m - i) > 0.05 for m, i in zip(mean, (0.485, 0.456, 0.406)))


def test_standardize_per_image():
    x = torch.rand(4, 3, 8, 8) * 5 + 2
    y = standardize_per_image(x)
    assert torch.allclose(y.mean(dim=(2, 3)), torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(y.std(dim=(2, 3), unbiased=False), torch.ones(4, 3), atol=1e-4)
    flat = standardize_per_image(torch.full((1, 1, 4, 4), 0.3))
    assert torch.isfinite(flat).all() and flat.abs().max() < 1e-6


def test_denoise_reduces_noise_and_second_call_hits_the_cache(monkeypatch):
    ds = load_dataset("shapes", n_train=8, n_val=4, n_test=4, data_seed=2)
    calls = {"n": 0}
    real = pp._denoise_array

    def counting(img, cfg):
        calls["n"] += 1
        return real(img, cfg)

    monkeypatch.setattr(pp, "_denoise_array", counting)
    cfg = PreprocessConfig(denoise=True, h=15, h_color=15, template_window=3, search_window=7)
    first = load_dataset("shapes", n_train=8, n_val=4, n_test=4, data_seed=2, preprocess=cfg)
    assert calls["n"] == 16                                 # every image of every split, once
    assert first.meta["denoise"]["train"]["cache_hit"] is False
    # denoising smooths pixel noise: neighbouring-pixel differences shrink
    def roughness(t):
        return (t[..., 1:].float() - t[..., :-1].float()).abs().mean()
    assert roughness(first.train.images) < roughness(ds.train.images)

    second = load_dataset("shapes", n_train=8, n_val=4, n_test=4, data_seed=2, preprocess=cfg)
    assert calls["n"] == 16                                 # no denoising the second time
    assert all(second.meta["denoise"][k]["cache_hit"] for k in ("train", "val", "test"))
    assert torch.equal(first.train.images, second.train.images)

    other = PreprocessConfig(denoise=True, h=5, h_color=5, template_window=3, search_window=7)
    load_dataset("shapes", n_train=8, n_val=4, n_test=4, data_seed=2, preprocess=other)
    assert calls["n"] == 32                                 # new parameters, new cache entry


def test_denoise_grayscale_path():
    imgs = torch.randint(0, 256, (2, 1, 12, 12), dtype=torch.uint8)
    out, meta = pp.denoise_images(imgs, PreprocessConfig(denoise=True, template_window=3, search_window=5),
                                  dataset="gray-test", split="train")
    assert out.shape == imgs.shape and out.dtype == torch.uint8 and meta["cache_hit"] is False


def test_preprocess_config_validation_and_round_trip():
    cfg = PreprocessConfig(denoise=True, h=3)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(DataError, match="bogus"):
        PreprocessConfig.from_dict({"bogus": 1})
    with pytest.raises(DataError, match="template_window"):
        PreprocessConfig(denoise=True, template_window=4).validate()
