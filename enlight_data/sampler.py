"""The sampler that leaves out excluded indices and shards the epoch across ranks.

The order of an epoch is a pure function of (seed, epoch, excluded set): every
rank computes the same global order, then takes its own share.
"""

from __future__ import annotations

from typing import Iterator, Sized

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler, Sampler, SequentialSampler

from ._rng import Stream, make_generator

__all__ = ["EnlightSampler", "shard"]


def shard(order: Tensor, rank: int, world_size: int, *, pad: bool = True) -> Tensor:
    """Take ``rank``'s share of ``order`` so that every rank gets the same count.

    Args:
        order: The epoch's global order of indices.
        rank: This process's rank.
        world_size: Number of ranks.
        pad: Repeat indices from the start to fill the last round (as
            ``DistributedSampler(drop_last=False)``), or else drop the remainder.
    """
    if world_size == 1:
        return order
    n = order.numel()
    if pad:
        total = -(-n // world_size) * world_size
        if total > n and n > 0:
            reps = -(-total // n)
            order = order.repeat(reps)[:total]
    else:
        order = order[: (n // world_size) * world_size]
    return order[rank::world_size]


class EnlightSampler(Sampler[int]):
    """Yields one epoch's indices, minus the excluded ones, for one rank.

    Args:
        data_source: The dataset (only its length is used).
        shuffle: Shuffle with a permutation drawn from (seed, epoch); else sequential.
        base: A sampler to draw from instead (e.g. ``WeightedRandomSampler``); its
            distribution is kept and excluded indices are filtered out. If it has a
            ``generator`` attribute it is given one seeded from (seed, epoch), and
            ``set_epoch`` is called when it has one.
        seed: Base seed.
        rank: This process's rank.
        world_size: Number of ranks.
        pad: Pad shares to equal length by repetition (else truncate).

    Note:
        The sampler keeps no epoch counter of its own: the loader calls
        :meth:`begin` with the epoch, the excluded mask and the start position.
    """

    def __init__(
        self,
        data_source: Sized,
        *,
        shuffle: bool = True,
        base: Sampler[int] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        self.num_samples = len(data_source)
        self.shuffle = shuffle
        self.base = base
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self._indices = self._compute(0, None)
        self._start = 0

    def _global_order(self, epoch: int) -> Tensor:
        if self.base is not None:
            if hasattr(self.base, "set_epoch"):
                self.base.set_epoch(epoch)  # type: ignore[attr-defined]
            if hasattr(self.base, "generator"):
                self.base.generator = make_generator(self.seed, epoch, Stream.SHUFFLE)  # type: ignore[attr-defined]
            return torch.as_tensor(list(iter(self.base)), dtype=torch.int64)
        if self.shuffle:
            return torch.randperm(self.num_samples, generator=make_generator(self.seed, epoch, Stream.SHUFFLE))
        return torch.arange(self.num_samples)

    def _compute(self, epoch: int, excluded: Tensor | None) -> Tensor:
        order = self._global_order(epoch)
        if excluded is not None and bool(excluded.any()):
            order = order[~excluded[order]]
        return shard(order, self.rank, self.world_size, pad=self.pad)

    def begin(self, epoch: int, excluded: Tensor | None = None, start: int = 0) -> None:
        """Prepare ``epoch``: its order without ``excluded`` (a bool mask), from position ``start``."""
        self._indices = self._compute(epoch, excluded)
        self._start = start

    def length_for(self, epoch: int, excluded: Tensor | None = None) -> int | None:
        """Samples of this rank's share in ``epoch`` without ``excluded``, without preparing it.

        ``None`` when that cannot be known without side effects: a custom base sampler with
        neither a ``generator`` we seed nor a known deterministic order would be iterated once
        more, which could change the batches it gives later.
        """
        if self.base is None and self.pad and self.world_size == 1:
            kept = self.num_samples - (0 if excluded is None else int(excluded.sum()))
            return kept  # the common case needs no order
        if self.base is not None and not (
            hasattr(self.base, "generator") or isinstance(self.base, (SequentialSampler, DistributedSampler))
        ):
            return None
        return int(self._compute(epoch, excluded).numel())

    @property
    def epoch_length(self) -> int:
        """Samples of this rank's share in the current epoch, from its start."""
        return int(self._indices.numel())

    def remaining(self) -> Tensor:
        """This rank's indices of the current epoch from the start position, as a tensor."""
        return self._indices[self._start :]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices[self._start :].tolist())

    def __len__(self) -> int:
        return max(0, int(self._indices.numel()) - self._start)
