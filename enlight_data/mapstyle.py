"""Rebuilding a user's map-style DataLoader around the schedule-aware sampler.

The wrapped loader keeps the user's batch_size, drop_last, num_workers,
collate_fn, pin_memory, worker_init_fn, persistent_workers, prefetch_factor,
timeout and multiprocessing_context; the dataset is wrapped so that workers see
the loader's clock, and each batch's dataset indices are taken from the sampler.
"""

from __future__ import annotations

import traceback
import warnings
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    get_worker_info,
)

from ._rng import Stream, derive_seed, make_generator, seed_globals
from ._workers import drop_dead_workers, drop_iterator
from .context import SharedClock
from .distributed import agreement_digest
from .sampler import EnlightSampler

__all__ = ["MapSource", "SampleError", "check_loader"]


class SampleError(RuntimeError):
    """Loading one sample failed; the message names its dataset index."""


# NOTE [ Seeding workers per batch ]
# A dataset's own random transforms (torchvision's, say) draw from the worker process' global torch, `random` and
# NumPy states. DataLoader seeds those once per worker start: persistent workers keep drawing across epochs, and which
# worker loads which batch depends on num_workers and, after a mid-epoch resume, on where the epoch resumed. So before
# a worker loads a batch it seeds those three states from (seed, epoch, the batch's number in the epoch): a batch's
# samples are then the same after a resume, with persistent workers and with any number of workers. The batch number
# travels inside the batch's first index, as ``index + batch * N`` (N the dataset size; the other indices stay plain),
# so the index lists cost what they did: a tuple per sample measured 3-5 % of a 2-worker loop's throughput. In the
# main process (num_workers=0) the caller's global state is left alone and the indices are not touched.


class _Numbered(Sampler[int]):
    """The sampler's indices, each batch's first one carrying the batch number (NOTE [ Seeding workers per batch ])."""

    def __init__(self, sampler: EnlightSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[int]:
        rest = self.sampler.remaining().clone()
        first_batch = (self.sampler.epoch_length - rest.numel()) // self.batch_size  # resumes start on a batch
        firsts = torch.arange(0, rest.numel(), self.batch_size)
        rest[firsts] += (firsts // self.batch_size + first_batch) * self.sampler.num_samples
        return iter(rest.tolist())

    def __len__(self) -> int:
        return len(self.sampler)


class _ClockedDataset(Dataset):
    """Makes the loader's clock visible to the dataset and names the index of a failing sample.

    Whole batches are fetched through ``__getitems__`` (one call per batch, as
    DataLoader's fetcher does when it is defined), so the wrapper adds no Python
    call per sample. From workers, a batch's first index carries its batch number (:class:`_Numbered`).
    """

    def __init__(self, dataset: Dataset, clock: SharedClock, seed: int, rank_keys: tuple[int, ...] = ()) -> None:
        self.dataset = dataset
        self.size = len(dataset)  # type: ignore[arg-type]
        self.clock = clock
        self.seed = seed
        self.rank_keys = rank_keys  # NOTE [ Per-rank random streams ] in loader.py

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        self.clock.activate()
        if indices and get_worker_info() is not None:
            batch, first = divmod(indices[0], self.size)
            indices = [first, *indices[1:]]
            seed_globals(derive_seed(self.seed, self.clock.epoch, batch, Stream.WORKER, *self.rank_keys))
        dataset = self.dataset
        getitems = getattr(dataset, "__getitems__", None)
        if isinstance(dataset, Subset) and not hasattr(dataset.dataset, "__getitems__"):
            getitems = None  # Subset's own is a loop over samples: the loop below does that and names a failing index
        if getitems is not None:
            try:
                return getitems(indices)
            except Exception as exc:
                raise SampleError(f"dataset.__getitems__({indices[:8]}...) raised {type(exc).__name__}: {exc}") from exc
        index = -1
        try:
            return [dataset[(index := i)] for i in indices]
        except Exception as exc:
            raise SampleError(f"dataset[{index}] raised {type(exc).__name__}: {exc}") from exc


def check_loader(loader: Any) -> None:
    """Raise a clear error unless ``loader`` is a batching DataLoader over a map-style dataset."""
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader should be a torch.utils.data.DataLoader, got loader of type {type(loader).__name__}")
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "loader.dataset should be a map-style Dataset, got an IterableDataset "
            f"({type(loader.dataset).__name__}); stream tar shards with enlight_data.stream() instead"
        )
    if not hasattr(type(loader.dataset), "__len__"):
        raise TypeError(
            "loader.dataset should have a len() (a map-style Dataset, one sample per index), got "
            f"{type(loader.dataset).__name__}, which has no __len__"
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
        pad: Pad rank shares to equal size by repetition (else truncate); ``None``: as the loader's
            ``DistributedSampler`` says (``not drop_last``), else pad.
        pin_memory: Override the loader's pin_memory (used when moving to CUDA).

    Raises:
        TypeError: For an IterableDataset (use :func:`enlight_data.stream`), a dataset without ``len()``
            or a non-DataLoader.
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
        pad: bool | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        check_loader(loader)
        if loader.generator is not None:
            warnings.warn(
                "the DataLoader's generator is not used: the order and every other draw come from "
                "enlighten(seed=...), per epoch (pass the seed you want there)",
                UserWarning,
                stacklevel=3,
            )
        dataset = loader.dataset
        sampler = loader.sampler
        own = getattr(sampler, "generator", None)
        if own is not None and own is not loader.generator:  # the DataLoader's own is warned about above
            warnings.warn(
                f"the sampler's generator is not used: {type(sampler).__name__}'s draws come from "
                "enlighten(seed=...), per epoch (pass the seed you want there); the sampler keeps its own",
                UserWarning,
                stacklevel=3,
            )
        if not getattr(loader, "in_order", True) and loader.num_workers > 0:  # with workers only it orders anything
            warnings.warn(
                "the DataLoader's in_order=False is not used: batches are taken in the sampler's order, which "
                "makes each batch's dataset indices known without sending them back from the workers",
                UserWarning,
                stacklevel=3,
            )
        plain_shuffle = isinstance(sampler, RandomSampler) and not sampler.replacement and sampler._num_samples is None
        if isinstance(sampler, DistributedSampler):
            # The loader shards itself: a DistributedSampler from an existing DDP script
            # stands for "all samples, shuffled or not", not for a second sharding.
            if (sampler.num_replicas, sampler.rank) != (world_size, rank):
                raise ValueError(
                    f"loader.sampler is a DistributedSampler with num_replicas={sampler.num_replicas}, "
                    f"rank={sampler.rank}, but the loader shards for world_size={world_size}, rank={rank}; "
                    "pass the same rank and world size, or a plain shuffle=True loader"
                )
            if pad is None:
                pad = not sampler.drop_last
            elif pad == sampler.drop_last:
                raise ValueError(
                    f"loader.sampler is a DistributedSampler with drop_last={sampler.drop_last}, which "
                    f"{'truncates' if sampler.drop_last else 'pads'} the ranks' shares, but enlighten() was given "
                    f"pad={pad}; pass pad={not pad} (or leave it out), or a sampler with drop_last={not pad}"
                )
            if sampler.shuffle and sampler.seed not in (0, seed):  # 0: its default, most likely not chosen
                warnings.warn(
                    f"the DistributedSampler's seed={sampler.seed} is not used: the order comes from "
                    f"enlighten(seed={seed}), per epoch (pass the seed you want there)",
                    UserWarning,
                    stacklevel=3,
                )
            plain_shuffle = bool(sampler.shuffle)
            sampler = SequentialSampler(dataset)  # type: ignore[arg-type]
        if pad is None:
            pad = True
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
        self.user_dataset = dataset
        self.user_sampler = loader.sampler
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        self.batch_size: int = loader.batch_size  # type: ignore[assignment]  # not None: check_loader
        self.drop_last: bool = loader.drop_last
        self.rank_keys = (rank,) if world_size > 1 else ()
        self.dataset = _ClockedDataset(dataset, clock, seed, self.rank_keys)
        kwargs: dict[str, Any] = dict(
            batch_size=loader.batch_size,
            # Positions only matter where workers are seeded: a plain index stream in the main process.
            sampler=_Numbered(self.sampler, self.batch_size) if loader.num_workers > 0 else self.sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory if pin_memory is None else pin_memory,
            drop_last=loader.drop_last,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            prefetch_factor=loader.prefetch_factor,
            persistent_workers=loader.persistent_workers,
        )
        if getattr(loader, "pin_memory_device", ""):
            kwargs["pin_memory_device"] = loader.pin_memory_device
        if hasattr(loader, "in_order"):
            # NOTE [ Batch indices come from the sampler ]
            # Batches arrive in sampler order (in_order=True), so batch b holds the
            # sampler's indices [b * batch_size, (b + 1) * batch_size): nothing per
            # sample has to travel back from the workers.
            kwargs["in_order"] = True
        self.loader = DataLoader(self.dataset, **kwargs)

    def begin(self, epoch: int, excluded: Tensor | None, start_batch: int = 0) -> None:
        """Prepare ``epoch`` without the ``excluded`` (bool mask) samples, from batch ``start_batch``."""
        self.sampler.begin(epoch, excluded, start_batch * self.batch_size)
        self.loader.generator = make_generator(self.seed, epoch, Stream.LOADER, *self.rank_keys)

    def batches(self) -> Iterator[tuple[Tensor, Any]]:
        """The prepared epoch's ``(indices, batch)`` pairs."""
        drop_dead_workers(self.loader)  # NOTE [ A worker that dies outside the loader ]
        order = self.sampler.remaining()
        if self.loader.pin_memory and torch.cuda.is_available():
            order = order.pin_memory()  # index slices then travel to the GPU non_blocking
        size = self.batch_size
        it = None
        try:
            it = iter(self.loader)  # persistent workers: resuming them can fail too (a hung worker's timeout)
            for b, batch in enumerate(it):
                yield order[b * size : (b + 1) * size], batch
        except Exception as exc:
            # A failed epoch (a sample raising, a killed worker) leaves the workers in an unknown state: they are
            # shut down now and dropped, so the next epoch starts fresh ones instead of failing. The traceback's
            # frames inside the DataLoader iterator are cleared of their locals too: they held the iterator (their
            # `self`) until a garbage collection (NOTE [ Shut workers down on errors ]).
            traceback.clear_frames(exc.__traceback__)
            drop_iterator(self.loader, it)  # it None: the loader's kept iterator
            del it
            if self.loader.num_workers > 0 and isinstance(exc, (ConnectionError, EOFError)):
                # A worker that dies while a batch's shared memory is handed over shows up as a
                # broken connection rather than DataLoader's own "worker ... killed" error.
                raise RuntimeError(
                    f"DataLoader worker exited unexpectedly while handing over a batch ({type(exc).__name__}: {exc})"
                ) from exc
            raise

    def num_batches(self) -> int:
        """Batches in the current epoch, counted from its first batch."""
        return self._batches(self.sampler.epoch_length)

    def peek_num_batches(self, epoch: int, excluded: Tensor | None) -> int | None:
        """Batches ``epoch`` would have without ``excluded`` (a bool mask); prepares nothing.

        ``None`` when the sampler cannot tell without side effects (see ``EnlightSampler.length_for``).
        """
        n = self.sampler.length_for(epoch, excluded)
        return None if n is None else self._batches(n)

    def _batches(self, n: int) -> int:
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def agreement(self) -> int:
        """What every rank must share in the current epoch: the settings that make the order, and the order."""
        settings = sorted((k, v) for k, v in self.signature().items() if k != "rank")
        return agreement_digest(self.seed, settings, self.sampler.order_digest)

    def signature(self) -> dict[str, Any]:
        """Plain values a checkpoint must match."""
        return {
            "kind": "map",  # a state from stream() reads another order (NOTE [ A state's kind ] in loader.py)
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "world_size": self.sampler.world_size,
            "rank": self.sampler.rank,
            # How the order is made: a state from another sampling would replay a different order's positions.
            "shuffle": self.sampler.shuffle,
            "sampler": None if self.sampler.base is None else type(self.sampler.base).__name__,
            "pad": self.sampler.pad if self.sampler.world_size > 1 else None,  # one rank: nothing to pad
        }
