import pytest
import torch

from core.data import CHANNEL_COMBOS, STRATEGIES, DataError, channel_count, select_channels


def _batch():
    torch.manual_seed(0)
    return torch.randn(2, 3, 4, 5)


@pytest.mark.parametrize("combo", CHANNEL_COMBOS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_shapes_match_channel_count(combo, strategy):
    out = select_channels(_batch(), combo, strategy)
    assert out.shape == (2, channel_count(combo, strategy), 4, 5)
    assert channel_count(combo, strategy) == (len(combo) if strategy == "drop" else 3)


@pytest.mark.parametrize("combo", CHANNEL_COMBOS)
def test_drop_keeps_exactly_the_named_channels(combo):
    x = _batch()
    out = select_channels(x, combo, "drop")
    for j, c in enumerate(combo):
        assert torch.equal(out[:, j], x[:, "RGB".index(c)])


def test_zero_fill_values():
    x = _batch()
    out = select_channels(x, "RB", "zero-fill")
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out[:, 2], x[:, 2])
    assert torch.count_nonzero(out[:, 1]) == 0


def test_mean_fill_values():
    x = _batch()
    out = select_channels(x, "RG", "mean-fill")
    assert torch.allclose(out[:, 2], (x[:, 0] + x[:, 1]) / 2)
    out = select_channels(x, "G", "mean-fill")
    assert torch.equal(out[:, 0], x[:, 1]) and torch.equal(out[:, 2], x[:, 1])


def test_sigmoid_fill_values():
    x = _batch()
    out = select_channels(x, "GB", "sigmoid-fill")     # gap g = 1
    assert torch.equal(out[:, 1:], x[:, 1:])
    assert torch.allclose(out[:, 0], torch.sigmoid((x[:, 1] + x[:, 2]) / 2 - 1))
    out = select_channels(x, "B", "sigmoid-fill")      # gap g = 2
    assert torch.allclose(out[:, 0], torch.sigmoid(x[:, 2] - 2)) and torch.allclose(out[:, 1], out[:, 0])
    assert ((out[:, :2] > 0) & (out[:, :2] < 1)).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rgb_is_identity_for_every_strategy(strategy):
    x = _batch()
    assert torch.equal(select_channels(x, "RGB", strategy), x)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_grayscale_combo(strategy):
    x = torch.rand(2, 1, 3, 3)
    assert channel_count("L", strategy) == 1
    assert torch.equal(select_channels(x, "L", strategy), x)
    with pytest.raises(DataError, match="3-channel"):
        select_channels(x, "RG", strategy)


def test_bad_combo_and_strategy_name_the_value():
    with pytest.raises(DataError, match="'RGX'"):
        select_channels(_batch(), "RGX", "drop")
    with pytest.raises(DataError, match="'half-fill'"):
        channel_count("RG", "half-fill")
    with pytest.raises(DataError, match="1-channel"):
        select_channels(_batch(), "L", "drop")
