"""The sampler that leaves out excluded indices and shards the epoch across ranks.

The order of an epoch is a pure function of (seed, epoch, excluded set): every
rank computes the same global order, then takes its own share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Iterable, Iterator, Sized

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DistributedSampler, Sampler, SequentialSampler

from ._rng import Stream, make_generator
from ._validate import check_bool, check_int, check_seed

__all__ = ["EnlightSampler", "shard"]


def shard(order: Tensor, rank: int, world_size: int, *, pad: bool = True) -> Tensor:
    """Take ``rank``'s share of ``order`` so that every rank gets the same count.

    Args:
        order: The epoch's global order of indices.
        rank: This process's rank.
        world_size: Number of ranks.
        pad: Repeat indices from the start to fill the last round (as
            ``DistributedSampler(drop_last=False)``), or else drop the remainder.

    Returns:
        ``rank``'s indices: every ``world_size``-th of the (padded or truncated) order.

    Raises:
        TypeError: If ``order`` is not a tensor, ``rank``/``world_size`` not ints, or ``pad`` not a bool.
        ValueError: If ``world_size < 1`` or ``rank`` is outside ``[0, world_size)``.
    """
    if not isinstance(order, Tensor):
        raise TypeError(f"order should be a Tensor, got order of type {type(order).__name__}")
    rank, world_size = _check_rank(rank, world_size)
    check_bool("pad", pad)
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

    Raises:
        TypeError: If ``data_source`` has no ``len()``, ``base`` is neither ``None`` nor iterable, ``seed``,
            ``rank`` or ``world_size`` is not an int, or ``shuffle`` or ``pad`` not a bool.
        ValueError: If ``data_source`` is empty, ``world_size < 1`` or ``rank`` is outside ``[0, world_size)``;
            when an epoch begins, if ``base`` yields an index outside the dataset.

    Note:
        The sampler keeps no epoch counter of its own: the loader calls
        :meth:`begin` with the epoch, the excluded mask and the start position.
        ``excluded`` is a bool mask over the dataset (``True`` = left out), as the
        loader's shared clock holds it; to leave out indices (such as
        :meth:`LossTable.select_high_loss` returns) set them in a mask first.
    """

    def __init__(
        self,
        data_source: Sized,
        *,
        shuffle: bool = True,
        base: Iterable[int] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        if not isinstance(data_source, Sized):
            raise TypeError(
                f"data_source should have a len() (a dataset), got data_source of type {type(data_source).__name__}"
            )
        if base is not None and not isinstance(base, Iterable):
            raise TypeError(f"base should be a sampler (an iterable of indices) or None, got base={base!r}")
        self.num_samples = len(data_source)
        if self.num_samples == 0:  # as RandomSampler: an epoch of nothing is a mistake upstream
            raise ValueError("data_source should hold at least one sample, got len(data_source)=0")
        self.shuffle = check_bool("shuffle", shuffle)
        self.base = base
        self.seed: int = check_seed("seed", seed)
        self.rank, self.world_size = _check_rank(rank, world_size)
        self.pad = check_bool("pad", pad)
        self.order_digest = ""  # of the begun epoch's global order, with several ranks
        # Epoch 0's order is drawn here only where that has no side effect (and a base's bad index shows at once);
        # else when first needed (begin, or use before any): drawing here would iterate a custom base sampler once
        # more than a DataLoader does, shifting the passes it gives later.
        self._order: Tensor | None = self._compute(0, None) if self._replayable() else None
        self._start = 0

    def _replayable(self) -> bool:
        """Whether the order can be drawn again without changing what the base gives later: no base, a base whose
        ``generator`` is seeded per draw, a sequence of indices or a deterministic torch sampler."""
        return self.base is None or hasattr(self.base, "generator") or isinstance(
            self.base, (Sequence, Tensor, SequentialSampler, DistributedSampler))

    @property
    def _indices(self) -> Tensor:
        """This rank's share of the begun epoch (epoch 0, with nothing excluded, before any :meth:`begin`)."""
        if self._order is None:
            self._order = self._compute(0, None)
        return self._order

    def _global_order(self, epoch: int) -> Tensor:
        if self.base is not None:
            if hasattr(self.base, "set_epoch"):
                self.base.set_epoch(epoch)
            if hasattr(self.base, "generator"):
                # The epoch's generator for this pass only: the user's sampler keeps its own.
                own, self.base.generator = self.base.generator, make_generator(self.seed, epoch, Stream.SHUFFLE)
                try:
                    order = torch.as_tensor(list(iter(self.base)), dtype=torch.int64)
                finally:
                    self.base.generator = own
            else:
                order = torch.as_tensor(list(iter(self.base)), dtype=torch.int64)
            if order.numel() and not 0 <= int(order.min()) <= int(order.max()) < self.num_samples:
                raise ValueError(
                    f"base should yield dataset indices in [0, {self.num_samples}), got indices in "
                    f"[{int(order.min())}, {int(order.max())}] in epoch {epoch}"
                )
            return order
        if self.shuffle:
            return torch.randperm(self.num_samples, generator=make_generator(self.seed, epoch, Stream.SHUFFLE))
        return torch.arange(self.num_samples)

    def _check_excluded(self, excluded: Tensor | None) -> None:
        """``excluded`` should be ``None`` or a bool mask of shape ``(num_samples,)``."""
        if excluded is None:
            return
        n = self.num_samples
        if not isinstance(excluded, Tensor):
            raise TypeError(
                f"excluded should be a bool tensor of shape ({n},) or None, "
                f"got excluded of type {type(excluded).__name__}"
            )
        if excluded.dtype != torch.bool:
            hint = (
                "; to leave out indices (e.g. from LossTable.select_high_loss), set them in a mask: "
                f"mask = torch.zeros({n}, dtype=torch.bool); mask[indices] = True"
                if not excluded.is_floating_point()
                else ""
            )
            raise TypeError(
                f"excluded should be a bool mask of shape ({n},) (True = left out), got excluded of dtype "
                f"{excluded.dtype}{hint}"
            )
        if tuple(excluded.shape) != (n,):
            raise ValueError(
                f"excluded should be a bool mask of shape ({n},) (one flag per sample), got excluded of shape "
                f"{tuple(excluded.shape)}"
            )

    def _compute(self, epoch: int, excluded: Tensor | None, *, digest: bool = False) -> Tensor:
        self._check_excluded(excluded)
        order = self._global_order(epoch)
        if excluded is not None and bool(excluded.any()):
            order = order[~excluded[order]]
        if digest and self.world_size > 1:  # every rank must draw this same order (checked at the epoch's sync)
            data = np.ascontiguousarray(order.numpy())
            self.order_digest = hashlib.blake2b(data.data, digest_size=8).hexdigest()
        return shard(order, self.rank, self.world_size, pad=self.pad)

    def begin(self, epoch: int, excluded: Tensor | None = None, start: int = 0) -> None:
        """Prepare ``epoch``: its order without ``excluded``, from position ``start``.

        Args:
            epoch: The epoch (>= 0); the order is drawn from (seed, epoch).
            excluded: A bool mask of shape ``(len(data_source),)``, ``True`` for the
                samples left out; ``None`` leaves out none.
            start: Position in this rank's share to start from (>= 0; past its end: an empty pass, as a loader
                resumed after an epoch's last, partial batch starts at whole batches times the batch size).

        Raises:
            TypeError: If ``excluded`` is not a bool tensor (an int64 tensor of indices
                included: set them in a mask), or ``epoch``/``start`` not ints.
            ValueError: If ``excluded`` has another shape, or ``epoch``/``start`` < 0.
        """
        check_int("epoch", epoch, minimum=0)
        start = check_int("start", start, minimum=0)  # type: ignore[assignment]
        self._order = self._compute(epoch, excluded, digest=True)
        self._start = start

    def length_for(self, epoch: int, excluded: Tensor | None = None) -> int | None:
        """Samples of this rank's share in ``epoch`` without ``excluded``, without preparing it.

        ``None`` when that cannot be known without side effects: a custom base sampler with
        neither a ``generator`` we seed nor a known deterministic order would be iterated once
        more, which could change the batches it gives later (before the first :meth:`begin`, with
        nothing excluded, its ``len()`` is taken, as a DataLoader takes it).

        Args:
            epoch: The epoch whose share to count (>= 0).
            excluded: Bool mask over the dataset (``True`` = left out), or ``None``.

        Returns:
            The number of samples, or ``None``.

        Raises:
            TypeError: If ``epoch`` is not an int, or ``excluded`` is not a bool tensor.
            ValueError: If ``epoch`` < 0, or ``excluded`` has another shape.
        """
        check_int("epoch", epoch, minimum=0)
        self._check_excluded(excluded)
        if self.base is None and self.pad and self.world_size == 1:
            kept = self.num_samples - (0 if excluded is None else int(excluded.sum()))
            return kept  # the common case needs no order
        if not self._replayable():
            if self._order is None and isinstance(self.base, Sized) and (excluded is None or not excluded.any()):
                # Before the first epoch, nothing left out: the base's own len(), as a DataLoader counts it.
                n, ws = len(self.base), self.world_size
                return n if ws == 1 else (-(-n // ws) if self.pad and n else n // ws)
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


def _check_rank(rank: int, world_size: int) -> tuple[int, int]:
    """``(rank, world_size)`` as ints, with ``world_size >= 1`` and ``0 <= rank < world_size``."""
    world_size = check_int("world_size", world_size, minimum=1)  # type: ignore[assignment]
    rank = check_int("rank", rank)  # type: ignore[assignment]
    if not 0 <= rank < world_size:
        raise ValueError(f"rank should be in [0, world_size) = [0, {world_size}), got rank={rank}")
    return rank, world_size
