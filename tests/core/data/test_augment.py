import pytest
import torch

from core.data import AugmentConfig, DataError, apply_augment
from core.data.augment import (elastic_distortion, random_affine, random_crop, random_hflip,
                               random_resized_crop)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_pad_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    y = random_crop(x, 2, gen())
    assert y.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, a:a + 6, b:b + 6] for a in range(5) for b in range(5)]
        assert any(torch.equal(y[i], w) for w in windows)


def test_pad_crop_works_on_uint8_and_moves_images():
    x = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)
    y = random_crop(x, 4, gen())
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert (y == 0).any()                               # some padding came in
    assert not torch.equal(x, y)


def test_hflip_flips_about_half():
    x = torch.rand(200, 1, 2, 3)
    y = random_hflip(x, gen())
    flipped = (y == x.flip(3)).flatten(1).all(1)
    same = (y == x).flatten(1).all(1)
    assert bool((flipped | same).all())
    assert 60 < int(flipped.sum()) < 140


@pytest.mark.parametrize("fn", [
    lambda x, g: random_resized_crop(x, g),
    lambda x, g: random_affine(x, g, degrees=30, translate=0.1, scale=(0.8, 1.2)),
    lambda x, g: elastic_distortion(x, g, alpha=4.0, sigma=2.0),
])
def test_resampling_keeps_shape_range_and_is_deterministic(fn):
    x = torch.rand(5, 3, 16, 16)
    a, b = fn(x, gen(1)), fn(x, gen(1))
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert a.min() >= 0 and a.max() <= 1 + 1e-5
    assert torch.equal(a, b)
    assert not torch.allclose(a, x)


def test_identity_settings_are_identity():
    x = torch.rand(3, 3, 12, 12)
    assert torch.allclose(random_affine(x, gen(), 0.0, 0.0, (1.0, 1.0)), x, atol=1e-5)
    assert torch.allclose(elastic_distortion(x, gen(), alpha=0.0), x, atol=1e-5)
    assert torch.allclose(random_resized_crop(x, gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0)), x, atol=1e-5)


def test_affine_rotation_keeps_a_centred_disc():
    # a centred disc is rotation invariant: rotating it changes almost nothing, translating it does
    yy, xx = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    disc = (((yy - 16) ** 2 + (xx - 16) ** 2) < 100).float().expand(4, 1, 32, 32).contiguous()
    rotated = random_affine(disc, gen(), degrees=90.0)      # about the centre: only edge pixels move
    shifted = random_affine(disc, gen(), translate=0.25)
    zoomed = random_affine(disc, gen(), scale=(0.7, 0.8))
    assert (rotated - disc).abs().mean() < 0.03
    assert (shifted - disc).abs().mean() > 0.1
    assert zoomed.sum() < 0.8 * disc.sum()                  # zoom factor < 1 shrinks the disc


def test_presets_and_config_round_trip():
    for name in AugmentConfig.PRESETS:
        cfg = AugmentConfig.preset(name)
        assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
        out = apply_augment(torch.rand(4, 3, 16, 16), cfg, gen())
        assert out.shape == (4, 3, 16, 16)
    assert not AugmentConfig.preset("none").active
    with pytest.raises(DataError, match="'zoom'"):
        AugmentConfig.preset("zoom")
    with pytest.raises(DataError, match="colour_jitter"):
        AugmentConfig.from_dict({"colour_jitter": 1})
