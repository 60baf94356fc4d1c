import pytest
import torch

from core.data import CHANNEL_COMBOS, AugmentConfig, BatchLoader, DataError, TensorSplit, channel_count
from core.data.loader import batches_per_epoch, shard_indices, shard_size, to_model_input


def split(n=50, c=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorSplit(torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8),
                       torch.arange(n, dtype=torch.int64))


def collect(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


def test_batches_shapes_len_and_values_without_augmentation():
    sp = split(50)
    loader = BatchLoader(sp, 16, shuffle=False)
    assert len(loader) == 4
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x, y = collect(loader)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, sp.labels)
    assert torch.allclose(x, sp.images.float() / 255)
    assert len(BatchLoader(sp, 16, shuffle=False, drop_last=True)) == 3


def test_shuffle_is_a_permutation_and_deterministic_per_seed_and_epoch():
    sp = split(40)
    aug = AugmentConfig.preset("crop-flip")
    a = BatchLoader(sp, 8, shuffle=True, augment=aug, seed=1)
    b = BatchLoader(sp, 8, shuffle=True, augment=aug, seed=1)
    xa, ya = collect(a)
    xb, yb = collect(b)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sorted(ya.tolist()) == list(range(40)) and ya.tolist() != list(range(40))
    a.set_epoch(1)
    xa1, ya1 = collect(a)
    assert not torch.equal(ya1, ya)
    a.set_epoch(0)
    assert torch.equal(collect(a)[1], ya)                 # epoch 0 again reproduces epoch 0
    c = BatchLoader(sp, 8, shuffle=True, augment=aug, seed=2)
    assert not torch.equal(collect(c)[1], ya)


def test_normalize_and_per_image_standardisation():
    sp = split(20)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.1]
    x, _ = collect(BatchLoader(sp, 7, shuffle=False, normalize=(mean, std)))
    ref = (sp.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(x, ref, atol=1e-6)
    x, _ = collect(BatchLoader(sp, 7, shuffle=False, standardize_per_image=True))
    assert torch.allclose(x.mean(dim=(2, 3)), torch.zeros(20, 3), atol=1e-5)
    with pytest.raises(DataError, match="one per source channel"):
        BatchLoader(sp, 4, shuffle=False, normalize=([0.5], [0.2]))


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_are_disjoint_and_equal(world_size):
    sp = split(50)
    shards = []
    for rank in range(world_size):
        loader = BatchLoader(sp, 4, shuffle=True, seed=5, rank=rank, world_size=world_size)
        loader.set_epoch(3)
        shards.append(collect(loader)[1].tolist())
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 50 // world_size
    seen = [i for s in shards for i in s]
    assert len(seen) == len(set(seen))                      # disjoint
    # augmentation differs per rank but the shuffle is shared: same epoch, same split of the permutation
    again = BatchLoader(sp, 4, shuffle=True, seed=5, rank=1, world_size=world_size)
    again.set_epoch(3)
    assert collect(again)[1].tolist() == shards[1]


def test_ddp_bad_rank():
    with pytest.raises(DataError, match="rank"):
        BatchLoader(split(10), 4, shuffle=True, rank=2, world_size=2)


@pytest.mark.parametrize("combo", ["RG", "B"])
@pytest.mark.parametrize("strategy", ["drop", "zero-fill"])
def test_fixed_combo(combo, strategy):
    x, _ = next(iter(BatchLoader(split(10), 5, shuffle=False, channels=combo, strategy=strategy)))
    assert x.shape == (5, channel_count(combo, strategy), 8, 8)


def test_random_combo_per_batch_covers_combinations_and_is_deterministic():
    loader = BatchLoader(split(64), 2, shuffle=True, channels="random", strategy="drop", seed=4)
    seen, counts = [], set()
    for x, _ in loader:
        seen.append(loader.last_combo)
        assert x.shape[1] == len(loader.last_combo)
        counts.add(x.shape[1])
    assert set(seen) <= set(CHANNEL_COMBOS) and len(set(seen)) >= 5 and counts == {1, 2, 3}
    replay = []
    loader2 = BatchLoader(split(64), 2, shuffle=True, channels="random", strategy="drop", seed=4)
    for _ in loader2:
        replay.append(loader2.last_combo)
    assert replay == seen
    filled = BatchLoader(split(8), 2, shuffle=True, channels="random", strategy="mean-fill")
    assert all(x.shape[1] == 3 for x, _ in filled)


def test_grayscale_source_uses_L():
    sp = split(10, c=1)
    x, _ = next(iter(BatchLoader(sp, 4, shuffle=True, channels="L", augment=AugmentConfig.preset("elastic"))))
    assert x.shape == (4, 1, 8, 8)
    x, _ = next(iter(BatchLoader(sp, 4, shuffle=True, channels="random")))
    assert x.shape == (4, 1, 8, 8)
    with pytest.raises(DataError, match="grayscale"):
        BatchLoader(sp, 4, shuffle=True, channels="RG")
    with pytest.raises(DataError, match="'L'"):
        BatchLoader(split(10), 4, shuffle=True, channels="L")


def test_every_augmentation_through_the_loader():
    sp = split(12, size=16)
    for name in AugmentConfig.PRESETS:
        x, y = next(iter(BatchLoader(sp, 6, shuffle=True, augment=AugmentConfig.preset(name))))
        assert x.shape == (6, 3, 16, 16) and torch.isfinite(x).all() and 0 <= x.min() and x.max() <= 1 + 1e-5


def test_to_model_input_is_the_loaders_pipeline():
    sp = split(9)
    norm = ([0.5, 0.4, 0.3], [0.2, 0.25, 0.1])
    for combo, strategy in [("RGB", "drop"), ("GB", "drop"), ("R", "mean-fill"), ("RB", "zero-fill")]:
        batch, _ = next(iter(BatchLoader(sp, 9, shuffle=False, channels=combo, strategy=strategy, normalize=norm,
                                         standardize_per_image=True)))
        direct = to_model_input(sp.images, channels=combo, strategy=strategy, normalize=norm,
                                standardize_per_image=True)
        assert torch.equal(batch, direct) and direct.shape == (9, channel_count(combo, strategy), 8, 8)
    assert torch.equal(sp.images, split(9).images)            # the caller's uint8 images are left alone


def test_to_model_input_refuses_what_does_not_fit():
    with pytest.raises(DataError, match="uint8"):
        to_model_input(torch.rand(2, 3, 8, 8))
    with pytest.raises(DataError, match="one per source channel"):
        to_model_input(split(2).images, normalize=([0.5], [0.2]))
    with pytest.raises(DataError, match="grayscale"):
        to_model_input(split(2, c=1).images, channels="RG")
    with pytest.raises(DataError, match="generator"):
        to_model_input(split(2).images, augment=AugmentConfig.preset("crop-flip"))


def test_shard_of_129_images_on_2_ranks_with_batch_65():
    # GPU-server issue: the trainer rounded shards up (65 >= batch 65: drop_last) while the loader
    # rounded down (64 per rank): 0 steps. One rule now: shard_size, used by both.
    n, world, batch = 129, 2, 65
    assert shard_size(n, world) == 64
    drop_last = shard_size(n, world) >= batch            # the trainer's rule, on the shared size
    seen_per_epoch = []
    for epoch in range(8):
        ranks = []
        for rank in range(world):
            loader = BatchLoader(split(n), batch, shuffle=True, drop_last=drop_last, seed=3, rank=rank,
                                 world_size=world)
            loader.set_epoch(epoch)
            assert len(loader) == 1 == batches_per_epoch(n, batch, world_size=world, drop_last=drop_last)
            ranks.append(collect(loader)[1].tolist())
        assert [len(r) for r in ranks] == [64, 64]                        # same steps, same sizes on every rank
        assert not set(ranks[0]) & set(ranks[1])                            # disjoint
        seen_per_epoch.append(set(ranks[0]) | set(ranks[1]))
    assert all(len(s) == n - 1 for s in seen_per_epoch)                   # at most world_size - 1 skipped ...
    assert set().union(*seen_per_epoch) == set(range(n))                  # ... a different one each epoch


def test_shard_indices_and_sizes():
    order = torch.arange(10)
    assert shard_indices(order, 0, 1) is order
    assert shard_indices(order, 1, 3).tolist() == [1, 4, 7]
    assert shard_size(10, 3) == 3 and shard_size(2, 3) == 0
    with pytest.raises(DataError, match="rank"):
        shard_indices(order, 3, 3)
    with pytest.raises(DataError, match="world_size"):
        shard_size(10, 0)
