import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from enlight_data import EnlightSampler
from enlight_data.sampler import shard

DATA = list(range(23))


def test_order_is_pure_function_of_seed_and_epoch():
    a = EnlightSampler(DATA, seed=3)
    b = EnlightSampler(DATA, seed=3)
    a.begin(5)
    b.begin(5)
    assert list(a) == list(b)
    b.begin(6)
    assert list(a) != list(b)
    assert sorted(a) == DATA


def test_sequential_and_exclusion():
    s = EnlightSampler(DATA, shuffle=False)
    mask = torch.zeros(23, dtype=torch.bool)
    mask[[0, 4, 22]] = True
    s.begin(0, mask)
    assert list(s) == [i for i in DATA if i not in (0, 4, 22)]
    s.begin(1, mask, start=5)
    assert list(s) == [i for i in DATA if i not in (0, 4, 22)][5:]
    assert len(s) == 15


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("pad", [True, False])
def test_shards_are_disjoint_equal_and_cover(world_size, pad):
    order = torch.randperm(23, generator=torch.Generator().manual_seed(0))
    shares = [shard(order, r, world_size, pad=pad).tolist() for r in range(world_size)]
    assert len({len(s) for s in shares}) == 1
    flat = [i for s in shares for i in s]
    if pad:
        assert set(flat) == set(DATA)
        assert len(flat) == -(-23 // world_size) * world_size
    else:
        assert len(flat) == len(set(flat)) == (23 // world_size) * world_size


def test_custom_sampler_keeps_distribution_and_filters():
    weights = torch.zeros(23)
    weights[:5] = 1.0  # only the first five can be drawn
    base = WeightedRandomSampler(weights, num_samples=400, replacement=True)
    s = EnlightSampler(DATA, base=base, seed=1)
    mask = torch.zeros(23, dtype=torch.bool)
    mask[2] = True
    s.begin(0, mask)
    drawn = list(s)
    assert set(drawn) <= {0, 1, 3, 4} and len(set(drawn)) == 4
    counts = torch.bincount(torch.tensor(drawn), minlength=5)
    assert counts[2] == 0 and (counts[[0, 1, 3, 4]] > 60).all()
    again = EnlightSampler(DATA, base=base, seed=1)
    again.begin(0, mask)
    assert list(again) == drawn  # seeded from (seed, epoch)
