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


def _select_channels_with_lists(x, combo, strategy):
    """The implementation before the index/mask cache (Python-list indexing): the reference."""
    keep = ["RGB".index(c) for c in combo]
    if strategy == "drop" or len(keep) == 3:
        return x if len(keep) == 3 else x[:, keep]
    kept_mask = torch.zeros(3, dtype=torch.bool, device=x.device)
    kept_mask[keep] = True
    kept_mask = kept_mask.view(1, 3, 1, 1)
    if strategy == "zero-fill":
        return x * kept_mask.to(x.dtype)
    mean_kept = x[:, keep].mean(dim=1, keepdim=True)
    fill = mean_kept if strategy == "mean-fill" else torch.sigmoid(mean_kept - (3 - len(keep)))
    return torch.where(kept_mask, x, fill.expand_as(x))


@pytest.mark.parametrize("combo", CHANNEL_COMBOS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_cached_index_tensors_give_exactly_the_list_indexing_result(combo, strategy, channels_last):
    x = torch.randn(4, 3, 6, 7, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = select_channels(x, combo, strategy)
    ref = _select_channels_with_lists(x, combo, strategy)
    assert out.dtype == ref.dtype and torch.equal(out, ref)


def test_index_and_mask_are_built_once_per_combo_and_device():
    from core.data import channels

    first = channels._combo_tensors("RG", torch.device("cpu"))
    select_channels(_batch(), "RG", "zero-fill")
    assert channels._combo_tensors("RG", torch.device("cpu")) is first         # reused, not rebuilt
    index, mask = first
    assert index.tolist() == [0, 1] and mask.view(-1).tolist() == [True, True, False]
    assert channels._combo_tensors("GB", torch.device("cpu"))[0].tolist() == [1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_partial_combination_needs_no_host_copy_after_the_first_batch():
    x = torch.randn(2, 3, 8, 8, device="cuda")
    for strategy in STRATEGIES:
        select_channels(x, "RG", strategy)                    # builds the cached tensors
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")                   # any synchronising copy now raises
    try:
        for strategy in STRATEGIES:
            out = select_channels(x, "RG", strategy)
            assert out.device == x.device
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for strategy in STRATEGIES:
        # Same values as the list-indexed version on the CPU; sigmoid-fill's sigmoid of a mean is
        # computed by a different kernel on each device, so compare to float32 rounding, not bit for bit.
        torch.testing.assert_close(select_channels(x, "RG", strategy).cpu(),
                                   _select_channels_with_lists(x.cpu(), "RG", strategy), rtol=1e-6, atol=1e-6)
