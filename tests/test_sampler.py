import pytest
import torch
from torch.utils.data import DistributedSampler, WeightedRandomSampler

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


@pytest.mark.parametrize(("n", "world_size"), [(23, 3), (23, 4), (10, 4), (2, 5)])
def test_padding_repeats_the_order_from_its_start_as_distributed_sampler_does(n, world_size):
    # DistributedSampler(drop_last=False) fills the last round with indices from the start of the order (cycling
    # through it again when the order is shorter than the padding), then deals every world_size-th to each rank.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    ours = [shard(order, r, world_size).tolist() for r in range(world_size)]
    theirs = [
        [order[i].item() for i in DistributedSampler(range(n), num_replicas=world_size, rank=r, shuffle=False)]
        for r in range(world_size)
    ]
    assert ours == theirs


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


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(rank=2, world_size=2), ValueError, r"rank should be in \[0, world_size\) = \[0, 2\), got rank=2"),
        (dict(rank=-1, world_size=2), ValueError, r"rank should be in \[0, world_size\) = \[0, 2\), got rank=-1"),
        (dict(rank=0, world_size=0), ValueError, "world_size should be >= 1, got world_size=0"),
        (dict(rank=0, world_size=2.0), TypeError, "world_size should be an int, got world_size=2.0"),
        (dict(rank=True, world_size=2), TypeError, "rank should be an int, got rank=True"),
        (dict(seed="3"), TypeError, "seed should be an int, got seed='3'"),
    ],
)
def test_sampler_and_shard_check_rank_and_world_size(kwargs, error, match):
    with pytest.raises(error, match=match):
        EnlightSampler(DATA, shuffle=False, **kwargs)
    if "seed" not in kwargs:
        with pytest.raises(error, match=match):
            shard(torch.arange(10), kwargs["rank"], kwargs["world_size"])


def test_numpy_rank_seed_and_world_size_are_stored_as_ints():
    np = pytest.importorskip("numpy")
    s = EnlightSampler(DATA, seed=np.int64(3), rank=np.int64(1), world_size=np.int32(2))
    assert (type(s.seed), type(s.rank), type(s.world_size)) == (int, int, int)
    assert shard(torch.arange(10), np.int64(1), np.int64(2)).tolist() == [1, 3, 5, 7, 9]


@pytest.mark.parametrize(
    "excluded, error, match",
    [
        (torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]), TypeError,
         r"excluded should be a bool mask of shape \(23,\) .*got excluded of dtype torch.int64; to leave out indices"),
        (torch.tensor([3, 5]), TypeError, r"excluded should be a bool mask .*mask\[indices\] = True"),
        (torch.zeros(23), TypeError, "excluded should be a bool mask .* dtype torch.float32"),
        (torch.zeros(4, dtype=torch.bool), ValueError,
         r"excluded should be a bool mask of shape \(23,\) .*got excluded of shape \(4,\)"),
        (torch.zeros(23, 1, dtype=torch.bool), ValueError, r"got excluded of shape \(23, 1\)"),
        ([False] * 23, TypeError,
         r"excluded should be a bool tensor of shape \(23,\) or None, got excluded of type list"),
    ],
)
def test_begin_and_length_for_require_a_bool_mask(excluded, error, match):
    s = EnlightSampler(DATA, shuffle=False)
    s.begin(0)
    before = list(s)
    with pytest.raises(error, match=match):
        s.begin(1, excluded)
    with pytest.raises(error, match=match):
        s.length_for(1, excluded)
    assert list(s) == before  # a rejected begin() changes nothing


def test_begin_checks_epoch_and_start():
    s = EnlightSampler(DATA, shuffle=False)
    with pytest.raises(ValueError, match="start should be >= 0, got start=-3"):
        s.begin(0, None, start=-3)  # would silently take the last 3 indices
    with pytest.raises(ValueError, match="epoch should be >= 0, got epoch=-1"):
        s.begin(-1)
    s.begin(0, None, start=30)
    assert list(s) == [] and len(s) == 0


def test_an_empty_data_source_is_refused():
    with pytest.raises(ValueError, match=r"data_source should hold at least one sample, got len\(data_source\)=0"):
        EnlightSampler([])


@pytest.mark.parametrize("world_size", [1, 2])  # the count without an order, and the one that draws it
def test_length_for_checks_epoch_as_begin_does(world_size):
    s = EnlightSampler(DATA, world_size=world_size)
    with pytest.raises(ValueError, match="epoch should be >= 0, got epoch=-1"):
        s.length_for(-1)  # counted the share of an epoch begin() refuses
    with pytest.raises(TypeError, match="epoch should be an int, got epoch=2.5 of type float"):
        s.length_for(2.5)  # type: ignore[arg-type]  # counted epoch 2's share


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shuffle": "no"}, "shuffle should be a bool, got shuffle='no' of type str"),
        ({"shuffle": 0}, "shuffle should be a bool, got shuffle=0 of type int"),
        ({"pad": "no"}, "pad should be a bool, got pad='no' of type str"),
        ({"pad": None}, "pad should be a bool, got pad=None of type NoneType"),
    ],
)
def test_sampler_flags_must_be_bools(kwargs, match):
    with pytest.raises(TypeError, match=match):
        EnlightSampler(DATA, world_size=3, **kwargs)


def test_sampler_flags_take_numpy_bools_as_bools():
    import numpy as np

    sampler = EnlightSampler(DATA, world_size=3, shuffle=np.True_, pad=np.False_)
    assert sampler.shuffle is True and sampler.pad is False


def test_shard_pad_must_be_a_bool():
    with pytest.raises(TypeError, match="pad should be a bool, got pad='no' of type str"):
        shard(torch.arange(5), 0, 2, pad="no")  # type: ignore[arg-type]


def test_data_source_and_base_are_checked():
    with pytest.raises(TypeError, match="data_source should have a len\\(\\) .* got data_source of type NoneType"):
        EnlightSampler(None)
    with pytest.raises(TypeError, match="base should be a sampler .* got base=5"):
        EnlightSampler(DATA, base=5)
    with pytest.raises(ValueError, match=r"base should yield dataset indices in \[0, 23\), got indices in \[3, 23\] "
                                         r"in epoch 0"):
        EnlightSampler(DATA, base=[3, 22, 23])
    growing = [[1, 2], [1, -1]]  # a sampler whose second epoch goes wrong

    class Base:
        def __init__(self):
            self.epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            return iter(growing[self.epoch])

    sampler = EnlightSampler(DATA, base=Base())
    with pytest.raises(ValueError, match=r"got indices in \[-1, 1\] in epoch 1"):
        sampler.begin(1, None)


class _NoGenerator:
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


@pytest.mark.parametrize(("pad", "expected"), [(True, 4), (False, 3)])
def test_length_of_a_custom_base_before_the_first_epoch_follows_pad(pad, expected):
    data = list(range(10))
    sampler = EnlightSampler(data, base=_NoGenerator(10), rank=0, world_size=3, pad=pad)
    assert sampler.length_for(0) == expected
    sampler.begin(0)
    assert len(sampler) == expected  # what the drawn order gives
