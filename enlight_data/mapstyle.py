"""Rebuilding a user's map-style DataLoader around the schedule-aware sampler.

The wrapped loader keeps the user's batch_size, drop_last, num_workers,
collate_fn, pin_memory, worker_init_fn, persistent_workers, prefetch_factor,
timeout and multiprocessing_context; the dataset is wrapped so that every batch
carries its dataset indices and workers see the loader's clock.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler

from ._rng import Stream, make_generator
from .context import SharedClock
from .sampler import EnlightSampler

__all__ = ["MapSource", "SampleError", "check_loader"]


class SampleError(RuntimeError):
    """Loading one sample failed; the message names its dataset index."""


class _IndexedDataset(Dataset):
    """Returns ``(index, sample)`` and makes the loader's clock visible to the dataset."""

    def __init__(self, dataset: Dataset, clock: SharedClock) -> None:
        self.dataset = dataset
        self.clock = clock

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Any]:
        self.clock.activate()
        try:
            sample = self.dataset[index]
        except Exception as exc:
            raise SampleError(f"dataset[{index}] raised {type(exc).__name__}: {exc}") from exc
        return index, sample


class _IndexCollate:
    """Collates ``(index, sample)`` pairs into ``(indices, collate_fn(samples))``."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: Sequence[tuple[int, Any]]) -> tuple[Tensor, Any]:
        indices = torch.tensor([i for i, _ in items], dtype=torch.int64)
        return indices, self.collate_fn([s for _, s in items])


def check_loader(loader: Any) -> None:
    """Raise a clear error unless ``loader`` is a batching DataLoader over a map-style dataset."""
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader should be a torch.utils.data.DataLoader, got loader of type {type(loader).__name__}")
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "loader.dataset should be a map-style Dataset, got an IterableDataset "
            f"({type(loader.dataset).__name__}); stream tar shards with enlight_data.stream() instead"
        )
    if loader.batch_size is None:
        raise ValueError(
            "loader.batch_size should be an int, got batch_size=None (a custom batch_sampler or "
            "disabled automatic batching); build the DataLoader with batch_size=... and an optional sampler"
        )


class MapSource:
    """Per-epoch ``(indices, batch)`` iterators over a map-style dataset.

    Args:
        loader: The user's DataLoader (its settings are copied, it is not iterated).
        clock: The loader's shared clock.
        seed: Base seed of the shuffle order and the workers' seeds.
        rank: This process's rank.
        world_size: Number of ranks.
        pad: Pad rank shares to equal size by repetition (else truncate).
        pin_memory: Override the loader's pin_memory (used when moving to CUDA).

    Raises:
        TypeError: For an IterableDataset (use :func:`enlight_data.stream`) or a non-DataLoader.
        ValueError: For ``batch_size=None`` (a custom batch_sampler or disabled batching).
    """

    def __init__(
        self,
        loader: DataLoader,
        clock: SharedClock,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        pin_memory: bool | None = None,
    ) -> None:
        check_loader(loader)
        dataset = loader.dataset
        sampler = loader.sampler
        plain_shuffle = isinstance(sampler, RandomSampler) and not sampler.replacement and sampler._num_samples is None
        self.sampler = EnlightSampler(
            dataset,  # type: ignore[arg-type]
            shuffle=plain_shuffle,
            base=None if plain_shuffle or isinstance(sampler, SequentialSampler) else sampler,
            seed=seed,
            rank=rank,
            world_size=world_size,
            pad=pad,
        )
        self.seed = seed
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        self.batch_size: int = loader.batch_size
        self.drop_last: bool = loader.drop_last
        self.dataset = _IndexedDataset(dataset, clock)
        kwargs: dict[str, Any] = dict(
            batch_size=loader.batch_size,
            sampler=self.sampler,
            num_workers=loader.num_workers,
            collate_fn=_IndexCollate(loader.collate_fn),
            pin_memory=loader.pin_memory if pin_memory is None else pin_memory,
            drop_last=loader.drop_last,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            prefetch_factor=loader.prefetch_factor,
            persistent_workers=loader.persistent_workers,
        )
        if hasattr(loader, "in_order"):
            kwargs["in_order"] = loader.in_order
        self.loader = DataLoader(self.dataset, **kwargs)

    def begin(self, epoch: int, excluded: Tensor | None, start_batch: int = 0) -> None:
        """Prepare ``epoch`` without the ``excluded`` (bool mask) samples, from batch ``start_batch``."""
        self.sampler.begin(epoch, excluded, start_batch * self.batch_size)
        self.loader.generator = make_generator(self.seed, epoch, Stream.LOADER)

    def batches(self) -> Iterator[tuple[Tensor, Any]]:
        """The prepared epoch's ``(indices, batch)`` pairs."""
        return iter(self.loader)

    def num_batches(self) -> int:
        """Batches in the current epoch, counted from its first batch."""
        n = self.sampler.epoch_length
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def signature(self) -> dict[str, Any]:
        """Plain values a checkpoint must match."""
        return {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "world_size": self.sampler.world_size,
            "rank": self.sampler.rank,
        }
