"""``enlighten()``: wrap a DataLoader with an enlightenment-period schedule.

This module composes the pieces: the schedule's period tracker, the loss
table, the sampler (through a *source* of per-epoch batches), device transfer,
batch augmentation and mixing. It keeps the one epoch counter of the run.
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
import weakref
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Callable, Generator, Iterator, Protocol, cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ._rng import Stream, derive_seed
from ._inference import normal_tensors
from ._stack import caller_stacklevel
from ._validate import (
    channels_last_hint, check_augment, check_bool, check_device, check_int, check_real, check_seed, comparable,
)
from .context import MAX_EPOCH, SharedClock
from .distributed import (
    check_sharding_still_holds, made_before_process_group, pass_checker, resolve_rank, table_reducer,
)
from .feedback import LossTable
from .mapstyle import MapSource, check_loader
from .mixing import _mix
from .schedule import Phase, PeriodTracker, Schedule
from .tracking import TrackedLoss, check_criterion
from .transfer import Prefetcher, with_items

__all__ = ["EnlightLoader", "SamplerView", "check_arguments", "check_soft_targets", "enlighten", "resolve_device"]

STATE_VERSION = 1
_STATE_KEYS = (
    "version", "seed", "epoch", "next_epoch", "position", "seen", "open", "excluded", "tracker", "table", "history",
    "signature",
)
_TABLE_KEYS = ("size", "last", "sum", "count", "stats")


class _Source(Protocol):
    """Where an :class:`EnlightLoader` gets each epoch's ``(indices, batch)`` pairs.

    Optional hooks, looked up with ``getattr``: ``end_epoch(epoch, batches) -> dict`` (extra history fields of a
    finished epoch whose first ``batches`` batches the loop took), and ``position_state(batches) -> dict`` with
    ``load_position_state(state, epoch, excluded_mask, batches)`` (what an exact mid-epoch resume needs beyond the
    batch count, saved as the state's ``"source"``; ``{}`` when there is nothing to save or nothing was saved).
    """

    num_samples: int
    loader: DataLoader[Any]  # the DataLoader that loads the batches (its workers, pinning)

    def begin(self, epoch: int, excluded: Tensor | None, start_batch: int = 0) -> None:
        ...

    def batches(self) -> Iterator[tuple[Tensor, Any]]:
        ...

    def num_batches(self) -> int:
        ...

    def peek_num_batches(self, epoch: int, excluded: Tensor | None) -> int | None:
        ...

    def signature(self) -> dict[str, Any]:
        ...


def _rows_of(rows: Any, batch: int) -> tuple[int, int]:
    """``(start, stop)`` of ``record(rows=...)``: a slice of step 1 inside a batch of ``batch`` rows.

    A negative bound counts from the batch's end, as in ``x[-8:]``; a bound outside the batch is refused rather
    than clipped (a chunk that does not fit is a mistake, not fewer rows).
    """
    if rows is None:
        return 0, batch
    if not isinstance(rows, slice) or rows.step not in (None, 1):
        raise TypeError(f"rows should be a slice of the batch's rows with step 1 (e.g. slice(0, 32)), got rows={rows!r}")
    start = 0 if rows.start is None else cast(int, check_int("rows.start", rows.start))
    stop = batch if rows.stop is None else cast(int, check_int("rows.stop", rows.stop))
    start, stop = (bound + batch if bound < 0 else bound for bound in (start, stop))
    if not 0 <= start < stop <= batch:
        raise ValueError(f"rows should lie within the batch's {batch} rows and hold one at least, got rows={rows!r}")
    return start, stop


def _scale_split(schedule: Schedule, augment: Any) -> tuple[str, str, str] | None:
    """``(phase, augmentation type, other phase)`` when one phase's augmentation is known to give floats in [0, 1]
    (a :class:`GpuAugment` or a Kornia module: both read integer input as 0-255) and the other phase has none; else
    ``None``. Any other callable's output scale is unknown: nothing is said of it."""
    from .augment import GpuAugment, _is_kornia_augmentation

    used = [(name, p.augment if p.augment is not None else augment) for name, p in zip(("during", "after"),
                                                                                          schedule.phases)]
    unit = [(n, a) for n, a in used if isinstance(a, GpuAugment) or _is_kornia_augmentation(a)]
    raw = [n for n, a in used if a is None]
    if unit and raw:
        return unit[0][0], type(unit[0][1]).__name__, raw[0]
    return None


def _apply_augment(augment: Callable[..., Tensor], x: Tensor, *, generator: torch.Generator, strength: float) -> Tensor:
    from .augment import apply_augment

    return apply_augment(augment, x, generator=generator, strength=strength)


def _augment_name(augment: Any) -> str | None:
    """What ``history`` calls an augmentation: a function's name, else its class's."""
    if augment is None:
        return None
    name = getattr(augment, "__name__", None) if inspect.isfunction(augment) or inspect.ismethod(augment) else None
    return name if isinstance(name, str) else type(augment).__name__


def _check_augmentable(augment: Callable[..., Tensor], x: Any) -> None:
    from .augment import _check_augmentable as check

    check(augment, x)


class SamplerView:
    """What ``EnlightLoader.sampler`` gives a loop written for a DataLoader.

    ``set_epoch(epoch)`` calls the loader's :meth:`EnlightLoader.set_epoch`; ``len()`` and other attributes are
    those of the wrapped DataLoader's sampler (none for :func:`enlight_data.stream`). It is not that sampler's type
    (check ``hasattr(loader.sampler, "set_epoch")`` rather than ``isinstance``), and it cannot be iterated: the
    loader draws its own order.
    """

    def __init__(self, loader: EnlightLoader, base: Any) -> None:
        self._loader = loader
        self._base = base

    def set_epoch(self, epoch: int) -> None:
        """Make the loader's next ``iter()`` start ``epoch`` (see :meth:`EnlightLoader.set_epoch`)."""
        self._loader.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or self._base is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self._base, name)

    def __len__(self) -> int:
        if self._base is None:
            raise TypeError("loader.sampler has no length: a stream has no DataLoader sampler; use len(loader)")
        return len(self._base)

    def __iter__(self) -> Iterator[int]:
        raise TypeError("loader.sampler cannot be iterated: the loader draws its own order; iterate the loader")

    def __repr__(self) -> str:
        return f"SamplerView(of {self._base!r})"


# What a loss recorded against another batch than the one handed out last means.
_FETCHED_AHEAD = (
    "the loop fetched the next batch before the step on this one (a prefetcher such as timm's PrefetchLoader "
    "wrapped around this loader), and the loader records a loss against the batch it handed out last; iterate the "
    "loader one batch at a time (its device= argument prefetches host-to-device itself)"
)


def _alive(ref: weakref.ref[Tensor] | None) -> Tensor | None:
    return None if ref is None else ref()


# Source settings a state of an earlier version may lack (NOTE [ A state's kind ]): the kind, the map-style sampling
# settings and drop_last, and a stream's shard layout digest.
_UNRECORDED_BEFORE = frozenset({"kind", "shuffle", "sampler", "pad", "drop_last", "shards"})


class _DefaultIgnore(int):
    """torch's default ``ignore_index``, -100, as ``record()``'s default: told apart by identity from one given."""

    __slots__ = ()


_IGNORE_DEFAULT = _DefaultIgnore(-100)


def _rows_error(name: str, value: Tensor, batch: int, rows: slice | None, start: int, stop: int) -> ValueError:
    """The error for a ``record()`` argument ``name`` whose first dimension is not the ``batch`` rows recorded.

    Fewer losses than the batch's rows, without ``rows``, are likely a chunk's: the error then suggests ``rows``.
    (``output`` and ``target`` are checked after the losses passed, so theirs are no chunk.)
    """
    shape = tuple(value.shape)
    if rows is not None:
        return ValueError(f"{name} should have the {batch} rows of rows=slice({start}, {stop}) as its first "
                          f"dimension, got shape {shape}")
    hint = ""
    if name == "per_sample_loss" and shape and 0 < shape[0] < batch:  # a chunk, as gradient accumulation gives
        hint = (f"; for a chunk of the batch (gradient accumulation), pass the chunk's rows, e.g. "
                f"rows=slice(0, {shape[0]})")
    elif name == "per_sample_loss" and len(shape) == 1 and batch and shape[0] % batch == 0:
        # A sequence loss flattened to (B * T,), as F.cross_entropy(logits.view(-1, V), labels.view(-1)) gives.
        hint = (f"; a sequence's loss flattened to (B * T,)? give it as (B, T), loss.view({batch}, -1), with "
                "target= of that shape (its ignore_index positions are left out of each sample's mean); with "
                "track(), give the criterion the output as (B, C, T), logits.transpose(1, 2), and the target as "
                "(B, T)")
    return ValueError(f"{name} should have the batch size {batch} as its first dimension, got shape {shape}{hint}")


def _shares(value: Any, ref: weakref.ref[Tensor] | None) -> bool:
    """Whether ``value`` is a tensor on the memory of the (live) tensor ``ref`` points to (it, or a view of it)."""
    held = _alive(ref)
    if held is None or not isinstance(value, Tensor) or value.device != held.device:
        return False
    try:
        return value.untyped_storage().data_ptr() == held.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # a tensor without storage (meta, functional or fake)
        return False


class EnlightLoader:
    """A DataLoader wrapper that applies a :class:`Schedule` epoch by epoch.

    Each ``iter()`` starts the next epoch (the first is epoch 0); ``set_epoch(n)``
    makes the next ``iter()`` start epoch ``n``. Batches keep the wrapped loader's
    structure. Build it with :func:`enlighten` (map-style data) or
    :func:`enlight_data.stream` (tar shards), which check the arguments.

    Args:
        source: Where the epochs' ``(indices, batch)`` pairs come from (a map-style dataset's or a stream's).
        schedule: The :class:`Schedule`.
        clock: The shared clock the source's workers read.
        num_classes: Width of the soft targets (needed when a phase mixes or smooths labels).
        device: Move every tensor of the batch there, or ``None`` to leave them.
        seed: Base seed of mixing and augmentation.
        input_key: The key of the input in dict batches, its position (an int) in tuple/list ones (default: 0).
        target_key: The key of the target in dict batches, its position in tuple/list ones (default: 1, where
            neither key is given).
        augment: The batch augmentation (a phase's ``augment`` replaces it).
        reduce: Combines the ranks' loss tables at each epoch's end (``None`` for one process).
        check_pass: ``check(epoch, batches, device)``, run as each pass starts: the ranks' batch counts and orders
            agree (``None`` for one process; NOTE [ Checked before the first batch ] in ``distributed.py``).
        made_before_group: Made for one process, its rank and world size left to a process group that did not
            exist yet: iterating it once a group of several does is refused (NOTE [ A loader made before
            init_process_group ] in ``distributed.py``).

    Note:
        End-of-epoch work (accuracy, the period decision, warnings, the distributed
        sync) runs when the epoch's iterator is exhausted, so it is done when the
        ``for`` loop ends. If a loop is left early, it runs at the next ``iter()``.
    """

    @normal_tensors
    def __init__(
        self,
        source: _Source,
        schedule: Schedule,
        clock: SharedClock,
        *,
        num_classes: int | None,
        device: torch.device | None,
        seed: int,
        input_key: Any = None,
        target_key: Any = None,
        augment: Callable[..., Tensor] | None = None,
        reduce: Callable[[LossTable], None] | None = None,
        check_pass: Callable[[int, int, torch.device], None] | None = None,
        made_before_group: bool = False,
    ) -> None:
        self.schedule = schedule
        self._made_before_group = made_before_group
        self.num_classes = num_classes
        self.device = device
        self.seed = int(seed)  # a NumPy integer would not load with torch.load(weights_only=True)
        self.input_key = input_key
        self.target_key = target_key
        self.augment = augment
        self._source = source
        self._clock = clock
        self._reduce = reduce
        self._check_pass = check_pass
        self._tracker = PeriodTracker(schedule.period)
        self._table = LossTable(source.num_samples)
        self._prefetch = Prefetcher(device) if device is not None else None
        self._generators: dict[torch.device, torch.Generator] = {}
        self._host_generator = torch.Generator()  # per-batch host-side choices (never the device's)
        self.history: list[dict[str, Any]] = []
        self._epoch = -1  # the epoch most recently started
        self._next_epoch = 0
        self._position = 0  # batches of the current epoch handed out
        self._seen = 0  # samples of the current epoch handed out by this process
        self._open = False  # the current epoch has not been finalised
        self._resume = False  # the next iter() continues the current epoch
        self._passing = False  # an iter() over the current epoch was made and has not ended (see _under_way)
        self._loaded_left = False  # the loaded state was taken after its pass ended early: said at the resumed iter()
        self._chosen = False  # set_epoch() chose the next epoch since the current one began (saved as "chosen")
        self._loaded_done = False  # the loaded state's left pass had taken every batch: said at the next iter()
        self._pass_start = 0  # the batch the current pass over the epoch began at (> 0 for a resumed one)
        self._excluded = torch.empty(0, dtype=torch.int64)
        self._batch: tuple[Tensor, Tensor | None] | None = None  # (indices, mixed) of the current batch
        self._recorded: tuple[Tensor, Tensor | None] | None = None  # the batch recorded last (one record each)
        # The batch being recorded in chunks (record(rows=...)), which of its rows are recorded, and how many.
        self._partial: tuple[tuple[Tensor, Tensor | None], bytearray, list[int]] | None = None
        # The targets of the two batches handed out last (weak: a dead one cannot be what a loss is given). A loss
        # given the previous batch's target comes from a loop that fetched ahead (record() refuses it).
        self._current_target: weakref.ref[Tensor] | None = None
        self._previous_target: weakref.ref[Tensor] | None = None
        self._warned_again = False
        self._warned_unrecorded = False
        self._warned_ahead = False
        self._warned_no_removal = False  # the period ended without a removal (warned once)
        self._pass_recorded = False  # record() was called in the current pass over the epoch
        self._pass_ahead = False  # the pass's first record() came after more than one batch was handed out
        self._ran_out = False  # the current pass's iterator ended after its last batch
        self._warned_left = False
        self._warned_empty = False
        self._failed_epoch = -1  # the last epoch an error ended
        self._live: weakref.ref[Generator[Any, None, None]] | None = None  # the last iter()'s iterator
        self._warned_nonfinite = -1
        self._mixes = any(p.mixes for p in schedule.phases)
        self._augments_every_epoch = augment is not None or all(p.augment is not None for p in schedule.phases)
        # Every phase's augmentation checks the layout of the first batch (channels-first; a tensor for Kornia), so a
        # batch a later phase cannot augment fails at once, not when that phase begins.
        used = (p.augment if p.augment is not None else augment for p in schedule.phases)
        self._unchecked_augments = [a for a in {id(a): a for a in used}.values() if a is not None]
        # Some phase cuts and pastes boxes, and nothing reshapes the input before: it must be (B, C, H, W) from the
        # first batch (not only from the first batch of that phase, maybe epochs later).
        self._cuts_raw_input = augment is None and any(
            p.mixes and p.cutmix_alpha > 0 and p.augment is None for p in schedule.phases)
        # Some phase augments or mixes the batch: its input (and, to mix, its target) must be found in every batch.
        self._reads_batches = schedule.soft_targets or augment is not None or any(
            p.augment is not None for p in schedule.phases)
        # A phase whose augmentation gives [0, 1] floats beside a phase with none: uint8 input would change scale
        # when the period ends. The input's dtype is known at the first batch, where this is checked (once).
        self._scale_split = _scale_split(schedule, augment)
        self._current_phase = 0  # the phase index the most recently started epoch began in
        # NOTE [ Per-rank random streams ]
        # Each rank mixes and augments its own samples: with the rank among the keys, ranks draw independent λ,
        # boxes and crops (the same ones on every run and after a resume), instead of the same draws for different
        # samples. One process keeps its keys (and its results) as they were.
        signature = source.signature()
        self._rank_keys: tuple[int, ...] = (signature["rank"],) if signature.get("world_size", 1) > 1 else ()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(epoch={self._epoch}, in_period={self.in_period}, "
            f"num_samples={self._source.num_samples}, batch_size={self.batch_size}, device={self.device}, "
            f"seed={self.seed}, schedule={self.schedule!r})"
        )

    # ------------------------------------------------------------------ properties
    @property
    def epoch(self) -> int:
        """The epoch most recently started (-1 before the first ``iter()``)."""
        return self._epoch

    @property
    def next_epoch(self) -> int:
        """The epoch the next ``iter()`` starts, or continues (a loaded state taken inside its loop).

        After :meth:`load_state_dict`, the epoch a resumed loop begins at: ``for epoch in range(loader.next_epoch,
        epochs)``.
        """
        # A pass that handed out nothing, held or dropped, is ended by the next iter(), which then begins its epoch
        # again, or goes on with it (NOTE [ An iterator that gave no batch uses up no epoch ]).
        keeps = not self._chosen and self._pass_empty() and (
            self._position == 0 or self._position < self._source.num_batches())
        return self._epoch if self._resume or keeps else self._next_epoch

    @property
    def in_period(self) -> bool:
        """Whether the current epoch (or the next one, before any) lies in the period."""
        return self._phase_index() == 0

    @property
    def phase(self) -> Phase:
        """The :class:`Phase` in force for the current epoch (or the next one, before any)."""
        return self.schedule.phases[self._phase_index()]

    def _phase_index(self) -> int:
        # The phase an epoch started in stays its phase after it ends, even where it ended the period.
        return self._current_phase if self._epoch >= 0 else self._tracker.phase_index(self._next_epoch)

    @property
    def dataset(self) -> Any:
        """The wrapped DataLoader's dataset, as ``DataLoader.dataset`` (None for :func:`enlight_data.stream`).

        ``len(loader.dataset)`` is the whole dataset, as in a plain loop, not this epoch's share.
        """
        return getattr(self._source, "user_dataset", None)

    @property
    def sampler(self) -> SamplerView:
        """The wrapped DataLoader's sampler, as ``DataLoader.sampler``, whose ``set_epoch(epoch)`` is this loader's.

        A DDP loop's ``loader.sampler.set_epoch(epoch)`` thus works unchanged; the loader draws its own order.
        """
        return SamplerView(self, getattr(self._source, "user_sampler", None))  # not kept: no reference cycle

    @property
    def batch_size(self) -> int:
        """Samples per batch, as ``DataLoader.batch_size``."""
        return int(self._source.signature()["batch_size"])

    @property
    def drop_last(self) -> bool:
        """Whether a last incomplete batch is dropped, as ``DataLoader.drop_last``."""
        return bool(self._source.signature()["drop_last"])

    @property
    def num_workers(self) -> int:
        """Worker processes loading the batches, as ``DataLoader.num_workers``."""
        return int(self._source.loader.num_workers)

    @property
    def pin_memory(self) -> bool:
        """Whether batches come in pinned memory, as ``DataLoader.pin_memory``: the wrapped loader's setting, or
        ``True`` with ``device="cuda"`` (pinned batches travel to the GPU without blocking the host)."""
        return bool(self._source.loader.pin_memory)

    @property
    def persistent_workers(self) -> bool:
        """Whether the workers live across epochs, as ``DataLoader.persistent_workers``."""
        return bool(self._source.loader.persistent_workers)

    @property
    def table(self) -> LossTable:
        """The per-sample loss table."""
        return self._table

    def losses(self) -> Tensor:
        """Each sample's most recent recorded loss: CPU float32, NaN where none is recorded."""
        return self._table.losses()

    def removed_indices(self) -> Tensor:
        """The samples High-Loss Removal leaves out of the current epoch, e.g. to look at them.

        Returns:
            A sorted CPU int64 tensor of dataset indices (sample ids for :func:`enlight_data.stream`), empty where
            nothing is removed and before the first ``iter()``. Every rank gets the same set (it is chosen from the
            loss table all ranks share), before its split into their shares.
        """
        return torch.sort(self._excluded).values

    def __len__(self) -> int:
        """Batches of the epoch in progress, else of the epoch the next ``iter()`` starts.

        The next epoch's count includes its removal (High-Loss Removal leaves out samples
        chosen from the losses recorded so far), so ``tqdm(loader)`` and step counts are
        right in every epoch. After a loop left early (an iterator still held counts as a pass
        under way) or a loaded state that is not continued, it counts the epoch the next
        ``iter()`` starts, with what closing the open one will decide (with several ranks, where closing
        combines the ranks' tables, the left epoch counts until the next ``iter()``). An iterator
        dropped before its first batch leaves its epoch to be begun again: that epoch is counted. After
        :meth:`load_state_dict` of a state taken inside the loop mid-epoch, it is that whole epoch's count,
        as torchdata's ``StatefulDataLoader`` gives, though the resumed pass yields only the batches left:
        a loop that resumes its own step counter (PyTorch Lightning does) runs to the epoch's end, and a
        learning-rate schedule's step count is the same as in the uninterrupted run. Between epochs this
        ranks the loss table (``select_high_loss``). With a
        custom sampler that has no ``generator`` (so its order cannot be replayed without
        drawing it again), it counts the most recently started epoch instead (before the first, the
        sampler's ``len()``).
        """
        # An epoch restored mid-way, or a pass under way (a resumed one included): the whole epoch's batches, of
        # which the resumed pass yields those after its position.
        if self._resume or self._goes_on() or (self._open and self._under_way()):
            return self._source.num_batches()
        # An open epoch without a pass under way (left early, or loaded and not continued) is closed by the next
        # iter(): count the epoch after it, from what closing it will decide. With several ranks closing combines
        # their tables, a collective len() must not run: the open epoch's batches are counted instead.
        # An open epoch that handed out no batch is not closed but begun again (NOTE [ An iterator that gave no
        # batch uses up no epoch ]): nothing to preview.
        unbegun = self._unbegun()
        preview = self._open and not unbegun
        if preview and self._reduce is not None and torch.distributed.is_available() \
                and torch.distributed.is_initialized():
            return self._source.num_batches()
        epoch = self._epoch if unbegun and not self._chosen else self._next_epoch
        tracker, losses = self._tracker, None
        if preview:  # what closing the open epoch at the next iter() will decide, without closing it yet
            tracker, losses = self._preview_close()
        phase = self.schedule.phases[tracker.phase_index(epoch)]
        excluded = self._table.select_high_loss(phase.drop_high_loss, losses=losses)
        mask = None
        if excluded.numel():
            mask = torch.zeros(self._source.num_samples, dtype=torch.bool)
            mask[excluded] = True
        coming = self._source.peek_num_batches(epoch, mask)
        return self._source.num_batches() if coming is None else coming

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` start ``epoch``.

        Called after ``iter()`` but before that iterator's first batch (the order of Lightning's fit loop), it
        makes that pass ``epoch``, as a DataLoader's sampler is read at the first batch. After
        :meth:`load_state_dict` of a state taken mid-epoch, ``set_epoch`` of that same epoch (as a DDP loop calls
        it every epoch) keeps continuing it; any other epoch starts anew.
        So does one of a state taken after a loop left its epoch after the last batch: that epoch's
        pass then yields nothing and closes it, for a loop that resumes that epoch.

        Args:
            epoch: The epoch the next ``iter()`` starts (>= 0).

        Raises:
            TypeError: If ``epoch`` is not an int.
            ValueError: If ``epoch`` is negative or above ``2**62``.
        """
        epoch = check_int("epoch", epoch, minimum=0, maximum=MAX_EPOCH)  # type: ignore[assignment]
        if (self._resume or self._loaded_done) and epoch == self._epoch:
            # The loaded epoch goes on (after its last batch: a pass that yields nothing and closes it).
            self._resume, self._loaded_done = True, False
            return
        if not self._resume and self._pass_empty():
            # A pass that handed out no batch (NOTE [ An iterator that gave no batch uses up no epoch ]): set_epoch
            # of its epoch keeps it as it is; of another, a pass already made begins that one instead (an epoch
            # that had handed out batches before, a resumed one, is closed as a loop left early).
            if epoch == self._epoch:
                self._next_epoch, self._chosen = epoch + 1, False
                return
            if self._under_way():
                if self._unbegun():
                    self._unbegin()
                else:
                    self._close_left_epoch()
                self._begin_epoch(epoch)
                self._prepare_pass(0)
                return
        self._next_epoch = epoch
        self._chosen = True
        self._resume = self._loaded_left = self._loaded_done = False

    # ------------------------------------------------------------------ loss feedback
    def track(self, criterion: Callable[..., Tensor], *, multi_label: bool = False) -> TrackedLoss:
        """Wrap ``criterion``: same reduced loss, and per-sample losses recorded in the table.

        Args:
            criterion: The loss (see :class:`~enlight_data.tracking.TrackedLoss`).
            multi_label: The targets are multi-hot rows (several labels per sample, binary cross
                entropy): the training accuracy scores each label, not the argmax.

        Returns:
            A :class:`~enlight_data.TrackedLoss`: called as the criterion, it returns the same reduced loss.

        Raises:
            TypeError: If the criterion is a class rather than an instance, cannot give per-sample losses, or takes
                class indices only (``nn.NLLLoss``) while the schedule makes targets soft rows.

        Warns:
            UserWarning: If the criterion smooths labels and the schedule does too, or gives no training accuracy
                (a regression loss) while the period ends on training accuracy.
        """
        tracked = TrackedLoss(criterion, self, multi_label=multi_label)
        check_criterion(criterion, soft_targets=self.schedule.soft_targets,
                        label_smoothing=max(p.label_smoothing for p in self.schedule.phases))
        period = self.schedule.period
        if not tracked.scores and period.until_accuracy is not None and not self._tracker.ended:
            ending = "lasts to the run's end" if period.max_epochs is None else f"ends at max_epochs={period.max_epochs}"
            warnings.warn(
                f"criterion={tracked.name} gives no training accuracy (a regression loss), but the period ends on "
                f"training accuracy (until_accuracy={period.until_accuracy}): it {ending}; end it on epochs instead, "
                "ed.Period(epochs=...)",
                UserWarning,
                stacklevel=2,
            )
        return tracked

    def record(
        self,
        per_sample_loss: Tensor,
        *,
        output: Tensor | None = None,
        target: Tensor | None = None,
        ignore_index: int | None = _IGNORE_DEFAULT,
        threshold: float = 0.0,
        multi_label: bool = False,
        rows: slice | None = None,
    ) -> None:
        """Record per-sample losses of the current batch (no host synchronisation).

        Each row of the batch is recorded once: a later call for rows already recorded (a tracked
        loss applied to an auxiliary head, or to a validation batch inside the loop) is ignored, with
        a warning the first time, so it cannot overwrite the training batch's losses and accuracy.
        A batch split into chunks (gradient accumulation) is recorded chunk by chunk with ``rows``.

        Args:
            per_sample_loss: ``(B,)`` or ``(B, ...)`` losses (extra dims are averaged: with
                ``ignore_index`` and class-index targets of the losses' shape, over each sample's
                positions that are not ``ignore_index``); with ``rows``, those of the rows' samples.
            output: The model output, for training accuracy: argmax over dim 1, or
                ``output > threshold`` for a single score (``(B,)``, ``(B, 1)`` or ``(B, 1, ...)``:
                binary classification or segmentation) and with ``multi_label``.
            target: The batch's targets (indices or soft rows; argmax of rows is used; for a single
                logit, ``target > 0.5``). Without ``output``, it only tells a sequence's positions at
                ``ignore_index`` (no accuracy is scored).
            ignore_index: A class-index target value that does not count (padding; -100, torch's
                default, unless given): the accuracy of dense predictions (and a sequence's loss) is
                taken over the other positions, and a sample with none left is not scored and its loss
                enters neither the table nor the epoch's mean loss. ``None``: every position counts.
            threshold: The score above which a single score (or, with ``multi_label``, each
                class's score) predicts the positive class: ``0.0`` for logits, ``0.5`` for
                probabilities (``nn.BCELoss`` after a sigmoid). :func:`track` sets it.
            multi_label: ``output`` holds an independent score per class (BCE on multi-hot
                targets of the output's shape): a sample's accuracy is the fraction of its
                labels predicted right (``output > threshold`` against ``target > 0.5``, or
                ``target != 0`` for integer targets). ``track(criterion, multi_label=True)`` sets it.
            rows: The rows of the batch these losses (and ``output``, ``target``) belong to, as a
                slice (``slice(32, 64)`` for the second chunk of 32; a negative bound counts from the end, as
                in ``x[-32:]``): for a batch split into chunks. ``None``: the whole batch.

        Raises:
            RuntimeError: If there is no current batch (outside the loop over the loader).
            TypeError: If ``per_sample_loss`` is not a floating-point tensor, ``output`` or ``target`` is not a
                tensor, ``rows`` is not a slice of step 1, or an option has the wrong type.
            ValueError: If ``output`` comes without ``target``, ``ignore_index`` is given without ``target``,
                ``rows`` lies outside the batch,
                a shape does not match the rows, or ``threshold`` is not finite.
        """
        if self._batch is None:
            hint = ""
            ended = self._ran_out  # the last pass handed out its last batch and ended (not left by a break)
            if ended and _shares(target, self._current_target):
                hint = f" (this target is epoch {self._epoch}'s last batch's, whose iterator had ended: {_FETCHED_AHEAD})"
            elif ended and self._pass_ahead:
                hint = (f" (epoch {self._epoch}'s first record() came after more than one batch was handed out, and "
                        f"this one after its iterator ended: if the loss is of its last batch, {_FETCHED_AHEAD})")
            raise RuntimeError(
                f"record() needs a current batch: call it inside the loop over the loader{hint}. To score batches "
                "outside it (a validation set), call the criterion itself (tracked.criterion), which records nothing"
            )
        if target is not None and _shares(target, self._previous_target) and not _shares(target, self._current_target):
            raise RuntimeError(
                f"record() (or a tracked loss) was given the previous batch's target: {_FETCHED_AHEAD}"
            )
        # The arguments' types are checked before the call counts, a repeated call's too (which records nothing).
        check_int("ignore_index", ignore_index, allow_none=True)
        threshold = check_real("threshold", threshold)  # type: ignore[assignment]
        multi_label = check_bool("multi_label", multi_label)
        if not isinstance(per_sample_loss, Tensor):
            raise TypeError(
                f"per_sample_loss should be a Tensor, got per_sample_loss of type {type(per_sample_loss).__name__}"
            )
        if not per_sample_loss.is_floating_point():
            raise TypeError(
                f"per_sample_loss should be a floating-point tensor (one loss per sample), got per_sample_loss of "
                f"dtype {per_sample_loss.dtype}"
            )
        if output is not None and target is None:
            raise ValueError(
                "output should come with target= (together they score the training accuracy), got output= without "
                "target="
            )
        if target is None and ignore_index is not None and ignore_index is not _IGNORE_DEFAULT:
            raise ValueError(
                f"ignore_index should come with target= (the class-index targets, of the losses' shape for a "
                f"sequence's positions), which tells the positions to leave out, got ignore_index={ignore_index} "
                "without target="
            )
        for name, value in (("output", output), ("target", target)):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"{name} should be a Tensor, got {name} of type {type(value).__name__}")
        if output is None and target is not None and (
            target.is_floating_point() or target.dim() < 2 or target.shape != per_sample_loss.shape
        ):  # a target alone only masks a sequence's positions; one that cannot would silently score nothing
            raise ValueError(
                f"target= without output= only tells a sequence's positions at ignore_index (class indices of the "
                f"losses' shape {tuple(per_sample_loss.shape)}), got target of shape {tuple(target.shape)} and dtype "
                f"{target.dtype}; to score the training accuracy, pass output= too"
            )
        indices, mixed = self._batch
        start, stop = _rows_of(rows, int(indices.shape[0]))
        if not self._pass_recorded:
            self._pass_recorded = True
            handed = self._position - self._pass_start
            self._pass_ahead = handed > 1
            if self._pass_ahead and not self._warned_ahead:
                self._warned_ahead = True
                warnings.warn(
                    f"the first record() of this pass over epoch {self._epoch} comes after {handed} batches were "
                    f"handed out, and goes to the last of them: if the loop fetches ahead, {_FETCHED_AHEAD}. A loop "
                    "that records only some batches can ignore this (warned once)",
                    UserWarning,
                    stacklevel=caller_stacklevel(),
                )
        partial = self._partial if self._partial is not None and self._partial[0] is self._batch else None
        if self._recorded is self._batch or (partial is not None and any(partial[1][start:stop])):
            if not self._warned_again:
                self._warned_again = True
                warnings.warn(
                    "record() (or a tracked loss) was called again for rows of the batch already recorded; each "
                    "row is recorded once, by the step's first call, so this call records nothing. For an "
                    "auxiliary head or an evaluation inside the loop, call the criterion itself "
                    "(tracked.criterion), not the tracked loss; if this call is the training loss, make it the "
                    "step's first (warned once)",
                    UserWarning,
                    stacklevel=caller_stacklevel(),
                )
            return
        if (start, stop) != (0, int(indices.shape[0])):
            indices = indices[start:stop]
            mixed = None if mixed is None else mixed[start:stop]
        batch = indices.shape[0]
        losses = per_sample_loss.detach()
        if losses.dim() == 0 or losses.shape[0] != batch:
            raise _rows_error("per_sample_loss", losses, batch, rows, start, stop)
        if batch and losses.numel() == 0:  # the mean over no position would be a NaN counted as a non-finite loss
            raise ValueError(f"per_sample_loss should hold at least one value per sample, got shape "
                             f"{tuple(losses.shape)}")
        counted = None  # the samples with a position that counts; None: all of them
        if losses.dim() > 1:
            losses = losses.flatten(1)  # means in float32 (bf16 would tie), float64 kept: the table clamps it
            losses = losses if losses.dtype == torch.float64 else losses.float()
            if (
                ignore_index is not None
                and isinstance(target, Tensor)
                and not target.is_floating_point()
                and target.shape == per_sample_loss.shape
            ):  # a sequence's loss: the mean over its positions that count (padding's loss is no loss)
                positions = (comparable(target) != ignore_index).to(losses.device).flatten(1)
                losses = losses.where(positions, 0.0).sum(1) / positions.sum(1).clamp_min(1)
                counted = positions.any(1)  # a sample with none has no loss (not one of 0)
            else:
                losses = losses.mean(1)
        correct = None
        keep = None if mixed is None else ~mixed
        if output is not None and target is not None:
            for name, value in (("output", output), ("target", target)):
                if value.dim() == 0 or value.shape[0] != batch:
                    raise _rows_error(name, value, batch, rows, start, stop)
            if output.dim() > 1 and output.shape[1] == 0:
                raise ValueError(f"output should have classes along dim 1, got shape {tuple(output.shape)}")
            truth = target
            if multi_label:  # a score per class: each label is right or wrong
                if target.shape != output.shape:
                    raise ValueError(
                        f"with multi_label=True, target should have the output's shape {tuple(output.shape)}, "
                        f"got target of shape {tuple(target.shape)}"
                    )
                predicted = output.detach() > threshold
                truth = target > 0.5 if target.is_floating_point() else target != 0
            elif output.dim() == 1 or output.shape[1] == 1:  # one score (per position): binary, by the threshold
                predicted = output.detach() > threshold
                predicted = predicted if output.dim() == 1 else predicted.squeeze(1)
                if target.dim() == output.dim() and target.dim() > 1 and target.shape[1] == 1:
                    target = target.squeeze(1)
                truth = target > 0.5 if target.is_floating_point() else target != 0
            else:
                predicted = output.detach().argmax(1)
                # Rows shaped like the output (one-hot or soft) give labels by argmax; else labels as given.
                if target.dim() > 1 and target.shape == output.shape:
                    truth = target.argmax(1)
            if predicted.shape != truth.shape:
                last = (" (classes along the last dimension? output should have them along dim 1, as "
                        "F.cross_entropy takes it: pass output.movedim(-1, 1))"
                        if output.dim() > 2 and tuple(output.shape[:-1]) == tuple(truth.shape) else "")
                raise ValueError(
                    f"output and target should give predictions of one shape, got output of shape "
                    f"{tuple(output.shape)} (predictions {tuple(predicted.shape)}) and target of shape "
                    f"{tuple(target.shape)} (labels {tuple(truth.shape)}){last}"
                )
            indexed = truth is target and not target.is_floating_point()
            truth = comparable(truth)  # uint16 labels: torch compares them with nothing but their own dtype
            correct = predicted == truth.to(predicted.device)
            if ignore_index is not None and indexed:
                # Positions at ignore_index do not count; a sample with none left has no verdict (NaN).
                scored = (truth != ignore_index).to(correct.device)
                if correct.dim() > 1:
                    scored = scored.flatten(1)
                    correct = (correct.flatten(1) & scored).sum(1) / scored.sum(1)
                    scored = scored.any(1)
                else:
                    correct = torch.where(scored, correct.float(), math.nan)
                scored = scored.to(losses.device)  # nothing counted: no loss, for the table or the mean
                counted = scored if counted is None else counted & scored
            elif correct.dim() > 1:  # dense predictions: the fraction right per sample
                correct = correct.flatten(1).float().mean(1)
        # NOTE [ The cost of a record ]
        # In a model-free loop with 0 workers (benchmarks/loader_overhead.py) recording every step was most of the
        # wrapper's cost: about 35 us of a 750 us step. The table's own checks are skipped here: the indices are
        # the loader's (in range by construction: its sampler's, or a stream's positions), the losses were checked
        # and detached above, and the flags are made here of the batch's shape. An index out of range would still
        # fail loudly, when the staged records are added to the table (index_add_).
        self._table._stage_batch(indices, losses, keep, correct, counted)
        if partial is None and (start, stop) == (0, int(self._batch[0].shape[0])):
            self._recorded = self._batch
            return
        if partial is None:
            partial = self._partial = (self._batch, bytearray(int(self._batch[0].shape[0])), [0])
        partial[1][start:stop] = b"\x01" * (stop - start)
        partial[2][0] += stop - start  # rows recorded: no scan of the batch per chunk
        if partial[2][0] == len(partial[1]):
            self._recorded = self._batch

    # ------------------------------------------------------------------ iteration
    def close_epoch(self) -> dict[str, Any] | None:
        """Close the epoch in progress now, as the next ``iter()`` would, and return its ``history`` entry.

        An epoch closes when its iterator is exhausted, so a loop that never asks for the batch after the last
        (PyTorch Lightning's, which stops at ``len()``) leaves the epoch open until the next ``iter()``: call this
        after its last batch (Lightning: in ``on_train_batch_end`` at the epoch's last batch, as the README's recipe
        does) for its accuracy and losses and the period decision. With several ranks, only a closed epoch's state
        is the same on every rank, so an end-of-epoch checkpoint written by rank 0 loads on all. An iterator still
        held yields no more batches (also one that handed out none, whose epoch the next ``iter()`` begins again). A
        pass left before the epoch's last batch (or a loaded mid-epoch state not continued) is closed as a loop left
        early, with the same warning. With several ranks, closing combines their tables: every rank calls it.

        Returns:
            The closed epoch's ``history`` entry; ``None`` if no epoch was open, or if the open one handed out no
            batch (the next ``iter()`` begins it, NOTE [ An iterator that gave no batch uses up no epoch ]).
        """
        previous = self._live() if self._live is not None else None
        self._live = None
        if previous is not None:
            previous.close()  # one that handed out no batch too: as if dropped, and the next iter() begins its epoch
        if not self._open or self._unbegun():
            return None
        self._passing = False
        self._resume = self._loaded_left = self._loaded_done = False
        self._close_left_epoch()
        return self.history[-1]

    def __iter__(self) -> Iterator[Any]:
        # A loop left early leaves its iterator open, and with it the old epoch's DataLoader iterator, whose workers
        # would go on fetching batches nobody takes (and reporting about them): close it before the next epoch.
        check_sharding_still_holds(self._made_before_group)
        previous = self._live() if self._live is not None else None
        self._live = None
        if previous is not None:
            previous.close()
        if self._goes_on():
            self._resume = True  # the loaded state's pass, dropped before its first batch: it goes on as it was
        if self._resume:
            self._resume = False
            start = self._position
            if self._loaded_left:
                self._loaded_left = False
                warnings.warn(
                    f"the loaded state was taken after the loop over epoch {self._epoch} was left at batch {start} of "
                    f"{self._source.num_batches()}: this iter() goes on with the rest of that epoch, as a resumed "
                    f"run does; if the loop had moved on to the next epoch (epochs capped at a number of steps), "
                    f"call loader.set_epoch({self._epoch + 1}) before iterating",
                    UserWarning,
                    stacklevel=2,
                )
        else:
            if self._loaded_done:
                self._loaded_done = False
                warnings.warn(
                    f"the loaded state was taken after the loop over epoch {self._epoch} had taken all its "
                    f"{self._position} batches and was left: this iter() starts epoch {self._next_epoch}, as a loop "
                    f"that stops at its last step goes on to; if your loop resumes epoch {self._epoch} (a time limit "
                    f"that fell on its last batch), call loader.set_epoch({self._epoch}) before iterating (that pass "
                    "yields no batch), or start the loop at loader.next_epoch",
                    UserWarning,
                    stacklevel=2,
                )
            if self._unbegun():
                self._unbegin()
            else:
                self._close_left_epoch()
            start = 0
            self._begin_epoch(self._next_epoch)
        self._prepare_pass(start)
        run = self._run()
        self._live = weakref.ref(run)
        return run

    def _prepare_pass(self, start: int) -> None:
        """Ready the source for a pass over the begun epoch from batch ``start`` (the pass reads it when it starts)."""
        self._pass_start = start
        self._pass_recorded = self._pass_ahead = self._ran_out = False
        self._passing = True
        self._clock.activate()
        self._source.begin(self._epoch, self._clock.excluded, start)
        if start == 0 and self._source.num_batches() == 0 and not self._warned_empty:
            self._warned_empty = True
            removed = int(self._excluded.numel())
            left = f"the samples left after removing {removed}" if removed else "the samples"
            per_rank = " per rank" if self._rank_keys else ""
            reason = (f"with drop_last=True, {left} do not fill one batch of {self.batch_size}{per_rank}"
                      if self.drop_last else f"no sample is left{per_rank} after removing {removed}")
            warnings.warn(f"epoch {self._epoch} has no batches: {reason}; it trains on nothing (warned once)",
                          RuntimeWarning, stacklevel=caller_stacklevel())
        if start and start > self._source.num_batches():
            # Only a loaded state gets here: load_state_dict could not count the epoch's batches without drawing
            # the order of a sampler it cannot replay. An empty pass would silently skip the epoch's samples.
            self._resume = True  # the same error at the next iter(), until another state is loaded
            raise ValueError(
                f"state['position'] should be at most the {self._source.num_batches()} batches of epoch "
                f"{self._epoch}, got position={start} in the loaded state; was it saved with another sampler or "
                "dataset?"
            )

    def _under_way(self) -> bool:
        """Whether a pass over the current epoch is under way: its iterator made, not ended, and still held."""
        return self._passing and self._live is not None and self._live() is not None

    def _preview_close(self) -> tuple[PeriodTracker, Tensor]:
        """The period latch and the losses that closing the open epoch would give (one process: no reduction)."""
        stats = self._table.pending()[2].tolist()  # correct, scored, ...
        tracker = copy.deepcopy(self._tracker)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said when the epoch is really closed
            tracker.observe(self._epoch, stats[0] / stats[1] if stats[1] else None, trained=self._position > 0)
        return tracker, self._table.losses()

    def _unbegun(self) -> bool:
        """Whether the open epoch handed out no batch, its pass left (or never made): it has not really begun.

        NOTE [ An iterator that gave no batch uses up no epoch ]
        Lightning's fit loop makes an iterator of the loader and drops it unused before making the one it loops
        over (and calls ``loader.sampler.set_epoch(epoch)`` before each epoch). Were every ``iter()`` to use up an
        epoch, its epoch 0 would train the schedule's epoch 1 and its epoch 1 repeat it: the period one epoch off.
        So an epoch that handed out no batch (not one that failed at its first) is dropped unclosed: nothing was
        recorded against it, its history entry goes, and the next ``iter()`` begins that same epoch again, or the
        one ``set_epoch`` chose. A DataLoader behaves alike: a sampler's epoch is what ``set_epoch`` says, however
        many iterators are made.
        """
        return self._pass_empty() and self._position == 0

    def _pass_empty(self) -> bool:
        """Whether the last pass made over the open epoch handed out no batch (and did not fail)."""
        return self._open and self._position == self._pass_start and self._failed_epoch != self._epoch

    def _goes_on(self) -> bool:
        """Whether the next ``iter()`` goes on with the open epoch where it stands: a resumed pass (from a loaded
        state, past batch 0) dropped before its first batch, with batches left, and no other epoch chosen since.

        A resumed pass with none left (a state taken after the epoch's last batch) was the empty pass that closes
        its epoch: dropped, the next ``iter()`` closes it and begins the next, as Lightning's real iterator after
        its probe must.
        """
        return (not self._resume and not self._chosen and self._pass_start > 0 and self._pass_empty()
                and not self._under_way() and self._position < self._source.num_batches())

    def _unbegin(self) -> None:
        """Drop the open epoch that handed out no batch (NOTE [ An iterator that gave no batch uses up no epoch ])."""
        self._open = False
        self._batch = None
        self.history.pop()
        self._table.discard_epoch()
        if not self._chosen:
            self._next_epoch = self._epoch

    def _close_left_epoch(self) -> None:
        """Close the current epoch if it is open (its pass left early, or not begun after a loaded state)."""
        left = self._open and self._failed_epoch != self._epoch and self._position < self._source.num_batches()
        if left and not self._warned_left:
            self._warned_left = True
            warnings.warn(
                f"epoch {self._epoch} ends after {self._position} of its {self._source.num_batches()} batches: "
                "each iter() starts the next epoch, so a loop left early (or next(iter(loader)) to peek at a "
                "batch) uses one up; peek at the wrapped DataLoader instead (warned once)",
                UserWarning,
                stacklevel=3,
            )
        self._finish_epoch()

    def _begin_epoch(self, epoch: int) -> None:
        phase_index = self._tracker.phase_index(epoch)
        phase = self.schedule.phases[phase_index]
        self._excluded = self._table.select_high_loss(phase.drop_high_loss)
        self._clock.set(epoch, phase_index, self._excluded)
        self._current_phase = phase_index
        self._epoch = epoch
        self._next_epoch = epoch + 1
        self._chosen = False
        self._failed_epoch = -1  # an earlier failure of this epoch is not this pass's
        self._position = 0
        self._seen = 0
        self._open = True
        self._table.discard_epoch()
        augment = phase.augment if phase.augment is not None else self.augment
        self.history.append(
            {
                "epoch": epoch,
                "in_period": phase_index == 0,
                "mixup_alpha": phase.mixup_alpha,
                "cutmix_alpha": phase.cutmix_alpha,
                "drop_high_loss": phase.drop_high_loss,
                "label_smoothing": phase.label_smoothing,
                "augment": _augment_name(augment),
                # Which augmentation ran: the phase's own or enlighten()'s (two of one class stay told apart).
                "augment_from": None if augment is None else (
                    ("during", "after")[phase_index] if phase.augment is not None else "enlighten"),
                "augment_strength": phase.augment_strength,
                "removed": int(self._excluded.numel()),
                "seen": None,
                "accuracy": None,
                "mean_loss": None,
                "nonfinite": None,
                "recorded": None,
                "batches": None,
            }
        )

    def _generator(self, device: torch.device, *keys: int) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = self._generators[device] = torch.Generator(device=device)
        gen.manual_seed(derive_seed(self.seed, *keys))
        return gen

    def _split(self, batch: Any, *, need_target: bool = True) -> tuple[Any, Any]:
        """Return ``(input, target)`` of a batch.

        Without ``need_target`` (a schedule that neither mixes nor smooths labels), a batch may have no target: a
        bare tensor, a 1-item tuple/list or a mapping without ``target_key`` (token ids for a language model, say);
        its target is then ``None``.
        """
        if isinstance(batch, Mapping):
            if self.input_key is None or (need_target and self.target_key is None):
                raise ValueError(
                    f"dict batches need input_key{' and target_key' if need_target else ''}, got "
                    f"input_key={self.input_key!r}, target_key={self.target_key!r} for keys {list(batch)}"
                )
            target = self._target_of(batch)  # first: it checks that the keys are there
            return batch[self.input_key], target
        if isinstance(batch, (tuple, list)):
            ix, iy = self._positions(batch)
            if ix is not None and (iy is not None or not need_target):
                return batch[ix], (None if iy is None else batch[iy])
            if self.input_key is not None:
                raise ValueError(
                    f"{type(batch).__name__} batches with input_key={self.input_key!r} need target_key (the target's "
                    "position) when the schedule mixes or smooths labels, got target_key=None"
                )
            raise ValueError(
                f"batches should be a tuple/list (input, target, ...) of at least 2 items when the schedule mixes or "
                f"smooths labels, got a {type(batch).__name__} of {len(batch)} item(s)"
            )
        if isinstance(batch, Tensor) and not need_target:
            return batch, None
        raise TypeError(
            "batches should be a tuple/list (input, target, ...) or a dict with input_key/target_key, "
            f"{'or a tensor, ' if not need_target else ''}got {type(batch).__name__}"
        )

    def _target_of(self, batch: Any) -> Any:
        """The batch's target where it has one (else ``None``); a key given for mapping batches must be in them."""
        if isinstance(batch, Mapping):
            for name, key in (("input_key", self.input_key), ("target_key", self.target_key)):
                if key is not None and key not in batch:
                    raise ValueError(f"{name}={key!r} is not a key of the batch, whose keys are {list(batch)}")
            return batch[self.target_key] if self.target_key is not None else None
        if isinstance(batch, (tuple, list)):
            iy = self._positions(batch)[1]
            return batch[iy] if iy is not None else None
        return None

    def _positions(self, batch: Sequence[Any]) -> tuple[int | None, int | None]:
        """The positions of the input and the target in a tuple/list batch (``None``: it has none).

        Without keys, items 0 and 1 (a 1-item batch has no target). With ``input_key``/``target_key``, the items
        they name: ints, negative ones counted from the end. The input is item 0 unless ``input_key`` says
        otherwise; where either key is given, the target is the item ``target_key`` names, if any.
        """
        n = len(batch)
        if self.input_key is None and self.target_key is None:
            return (0 if n else None), (1 if n >= 2 else None)
        kind = type(batch).__name__
        found: list[int | None] = []
        for name, key in (("input_key", self.input_key), ("target_key", self.target_key)):
            if key is None:
                found.append(0 if name == "input_key" and n else None)
                continue
            if not isinstance(key, int) or isinstance(key, bool):
                raise TypeError(
                    f"{name} should be an int (an item's position) for {kind} batches, got {name}={key!r}"
                )
            if not -n <= key < n:
                raise ValueError(
                    f"{name} should be a position in [{-n}, {n}) of the batch's items, got {name}={key} for a "
                    f"{kind} of {n} item(s)"
                )
            found.append(key % n)
        ix, iy = found
        if ix is not None and ix == iy:
            raise ValueError(
                f"input_key and target_key should name different items, got input_key={self.input_key!r}"
                f"{' (item 0 by default)' if self.input_key is None else ''} and target_key={self.target_key!r}, "
                f"both item {ix} of the {kind}"
            )
        return ix, iy

    def _join(self, batch: Any, x: Any, y: Any) -> Any:
        if isinstance(batch, Tensor):
            return x
        if isinstance(batch, Mapping):  # of its own type (OrderedDict, defaultdict, BatchEncoding...), as collate does
            return with_items(batch, {self.input_key: x} if self.target_key is None else {
                self.input_key: x, self.target_key: y})
        items = list(batch)
        ix, iy = self._positions(items)
        if ix is not None:
            items[ix] = x
        if iy is not None:
            items[iy] = y
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):
            return type(batch)(*items)
        return type(batch)(items)

    def _check(self, pairs: Iterator[tuple[Tensor, Any]]) -> Iterator[tuple[Tensor, Any]]:
        """Validate targets on the host, before any transfer (so checks never sync a GPU)."""
        soft = self.schedule.soft_targets
        for indices, batch in pairs:
            # A batch that some phase will augment or mix must be readable from the first (not an epoch later).
            x, y = self._split(batch, need_target=soft) if self._reads_batches else (None, self._target_of(batch))
            if self.num_classes is not None and isinstance(y, Tensor) and y.device.type == "cpu":
                if y.dim() == 1 and not y.is_floating_point() and y.dtype != torch.bool and y.numel():
                    labels = comparable(y)  # int64 where torch cannot compare (uint16 labels); y goes on as it came
                    lo, hi = (int(v) for v in torch.aminmax(labels))
                    # Without soft targets a negative index may be the criterion's ignore_index (padding): the
                    # criterion judges it. Soft targets need a class for every sample.
                    if (lo < 0 and soft) or hi >= self.num_classes:
                        bad = indices[((labels < 0) if soft else False) | (labels >= self.num_classes)][:5].tolist()
                        hint = (" (an ignore_index target cannot be mixed or smoothed into a soft row)"
                                if lo < 0 and soft else "")
                        raise ValueError(
                            f"targets should be in [0, {self.num_classes}) (num_classes={self.num_classes}), "
                            f"got values in [{lo}, {hi}] at dataset indices {bad}{hint}"
                        )
            if self._unchecked_augments:
                for augment in self._unchecked_augments:
                    _check_augmentable(augment, x)
                self._unchecked_augments = []
            if self.schedule.soft_targets:
                self._check_mixable(indices, batch)
            if self._scale_split is not None:  # after the errors: a batch that cannot be used says so first
                self._warn_scale_change(x)
            yield indices, batch

    def _warn_scale_change(self, x: Any) -> None:
        """Warn (once, at the first batch) when uint8 input reaches the model on two scales across the phases."""
        split, self._scale_split = self._scale_split, None
        if split is None:
            return
        unit, kind, raw = split
        first = x[0] if isinstance(x, list) and x else x
        if isinstance(first, Tensor) and first.dtype == torch.uint8:
            warnings.warn(
                f"the input changes scale when the period ends: the {unit!r} phase's augmentation ({kind}) gives "
                f"floats in [0, 1] (or normalised) from this uint8 input, and the {raw!r} phase has none, so "
                f"there the input keeps its 0-255 scale (mixing keeps it too); give both phases an augmentation "
                f"(e.g. Phase(augment=...)), or make the input float in [0, 1] in the dataset",
                UserWarning,
                stacklevel=caller_stacklevel(),
            )

    def _check_mixable(self, indices: Tensor, batch: Any) -> None:
        """Host-side checks of a batch whose targets become soft rows (mixing needs aligned tensors)."""
        x, y = self._split(batch)
        n = indices.shape[0]
        for name, value in (("input", x), ("target", y)):
            if name == "input" and isinstance(value, list) and len(value) == n and value and all(
                isinstance(v, Tensor) for v in value
            ):
                if self._augments_every_epoch:
                    continue  # per-sample images (GPU-decoded JPEGs) that augment makes one batch
                unaugmented = next(k for k, p in zip(("during", "after"), self.schedule.phases) if p.augment is None)
                raise TypeError(
                    f"input should be a Tensor, or a list of images with an augmentation in every phase to make one "
                    f"batch of them: the schedule mixes or smooths labels, and its {unaugmented!r} phase has no "
                    f"augment (nor has enlighten()), got a list of {n} images"
                )
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"{name} should be a Tensor when the schedule mixes or smooths labels, "
                    f"got {name} of type {type(value).__name__}"
                )
            if value.dim() == 0 or value.shape[0] != n:
                raise ValueError(f"{name} should have the batch size {n} as its first dimension, got shape {tuple(value.shape)}")
        if self._cuts_raw_input and isinstance(x, Tensor) and (x.dim() != 4 or channels_last_hint("x", x.shape)):
            name, phase = next((k, p) for k, p in zip(("during", "after"), self.schedule.phases)
                               if p.mixes and p.cutmix_alpha > 0)
            raise ValueError(
                f"CutMix needs (B, C, H, W) input: the schedule's {name!r} phase uses it (cutmix_alpha="
                f"{phase.cutmix_alpha}), got input of shape {tuple(x.shape)}{channels_last_hint('x', x.shape)}"
            )
        if y.dim() == 2 and y.device.type == "cpu" and y.numel():
            # Rows are mixed linearly: they must be finite and non-negative. Multi-hot rows
            # (multi-label with BCE) are fine, so the sum is not checked.
            bad = ~torch.isfinite(y).all(1) | (y < 0).any(1)
            if bool(bad.any()):
                raise ValueError(
                    "target rows should be finite and non-negative, "
                    f"got rows {y[bad][:2].tolist()} at dataset indices {indices[bad][:5].tolist()}"
                )

    def _run(self) -> Generator[Any, None, None]:
        # Read when the pass starts, not when its iterator was made: a set_epoch in between (Lightning's order)
        # begins another epoch for it (NOTE [ An iterator that gave no batch uses up no epoch ]).
        epoch, start = self._epoch, self._pass_start
        phase = self.schedule.phases[self._current_phase]
        augment = phase.augment if phase.augment is not None else self.augment
        pairs: Iterator[tuple[Tensor, Any]] = self._check(self._source.batches())
        if self._prefetch is not None:
            pairs = self._prefetch(pairs)
        handed: list[Any] = [None]  # the current batch this iterator set last
        try:
            if self._check_pass is not None:  # before the first batch (NOTE [ Checked before the first batch ])
                on = self.device if self.device is not None and self.device.type == "cuda" else self._table.device
                self._check_pass(epoch, self._source.num_batches() - start, on)
            yield from self._batches(pairs, epoch, start, phase, augment, handed)
            self._ran_out = self._epoch == epoch
        except Exception:
            self._failed_epoch = epoch  # ended by an error, not left early: no warning about that
            raise
        finally:
            # Also when the loop is left early: no later loss is recorded against this epoch's last batch. An
            # iterator closed late (collected after a newer epoch began) leaves the newer batch alone.
            if self._batch is handed[0]:
                self._batch = None
            if self._epoch == epoch:
                self._passing = False
        if self._open and self._epoch == epoch:
            self._finish_epoch()

    def _batches(
        self,
        pairs: Iterator[tuple[Tensor, Any]],
        epoch: int,
        step: int,
        phase: Phase,
        augment: Any,
        handed: list[Any],
    ) -> Iterator[Any]:
        for indices, batch in pairs:
            if augment is None and not self.schedule.soft_targets:
                mixed = None  # nothing is done to the batch: any form passes (a bare tensor of token ids, say)
            else:
                batch, mixed = self._treat(batch, epoch, step, phase, augment)
            self._batch = handed[0] = (indices, mixed)
            target = self._target_of(batch)
            self._previous_target = self._current_target
            self._current_target = weakref.ref(target) if isinstance(target, Tensor) else None
            self._seen += int(indices.shape[0])
            step += 1
            self._position = step
            yield batch

    def _treat(self, batch: Any, epoch: int, step: int, phase: Phase, augment: Any) -> tuple[Any, Tensor | None]:
        """Augment and mix one batch; returns it in its own structure, and which samples were mixed."""
        soft = self.schedule.soft_targets
        x, y = self._split(batch, need_target=soft)
        device = x.device if isinstance(x, Tensor) else _list_device(x)
        if augment is not None:
            gen = self._generator(device, epoch, step, Stream.AUGMENT, *self._rank_keys)
            x = _apply_augment(augment, x, generator=gen, strength=phase.augment_strength)
        mixed = None
        if soft and not isinstance(x, Tensor):
            raise TypeError(
                "input should be a Tensor (or become one through augment) when the schedule mixes or smooths "
                f"labels, got input of type {type(x).__name__}"
            )
        if soft:
            gen = self._generator(device, epoch, step, Stream.MIX, *self._rank_keys)
            host_seed = derive_seed(self.seed, epoch, step, Stream.HOST, *self._rank_keys)
            host = self._host_generator.manual_seed(host_seed)
            x, y, mixed = _mix(
                x, y, phase, num_classes=self.num_classes, generator=gen, host_generator=host  # type: ignore[arg-type]
            )
            if mixed is None and self._mixes and not x.is_floating_point():
                x = x.float()  # as mixing gives it: one input dtype for the whole run
        return self._join(batch, x, y), mixed

    def _finish_epoch(self) -> None:
        """Close the current epoch: counters, the period decision, warnings."""
        if not self._open:
            return
        self._open = False
        self._batch = None
        stats = self._table.finalize_epoch(self._reduce)
        entry = self.history[-1]
        entry["seen"] = self._seen
        entry["accuracy"] = stats["correct"] / stats["scored"] if stats["scored"] else None
        entry["mean_loss"] = stats["loss_sum"] / stats["loss_count"] if stats["loss_count"] else None
        entry["nonfinite"] = int(stats["nonfinite"])
        entry["recorded"] = int(stats["recorded"])
        entry["batches"] = self._position
        end_epoch = getattr(self._source, "end_epoch", None)
        if end_epoch is not None:  # optional _Source hook: extra history fields (e.g. skipped samples)
            entry.update(end_epoch(self._epoch, self._position))
        ending = self._tracker.end_epoch is None
        self._tracker.observe(self._epoch, entry["accuracy"], trained=self._position > 0)
        length = self.schedule.period.length  # a fixed period ends with its last epoch; an accuracy one by its latch
        if (ending and self._tracker.end_epoch is not None) or (length is not None and self._epoch == length - 1):
            self._warn_if_nothing_was_removed()
        if stats["nonfinite"]:
            warnings.warn(
                f"epoch {self._epoch}: {int(stats['nonfinite'])} non-finite per-sample losses were not recorded",
                RuntimeWarning,
                stacklevel=3,
            )

    def _warn_if_nothing_was_removed(self) -> None:
        """Warn once, when a period that removes high-loss samples ends, if no epoch of it left out any.

        Typically an accuracy period ended after epoch 0, whose accuracy reached the threshold before any epoch had
        losses to rank, or a fixed period is one epoch long. Not said where removal goes on after the period, where
        no epoch ran in it, or where no loss entered the table in it (a loop that samples without recording).
        """
        during, after, period = self.schedule.during, self.schedule.after, self.schedule.period
        in_period = [h for h in self.history if h["in_period"]]
        if (self._warned_no_removal or during.drop_high_loss == 0 or after.drop_high_loss > 0
                or not any(h["recorded"] for h in in_period) or any(h["removed"] for h in in_period)):
            return
        self._warned_no_removal = True
        last, accuracy = self.history[-1], self.history[-1]["accuracy"]
        if period.until_accuracy is None:
            ended = f"the enlightenment period of {period.length} epoch(s) ended after epoch {self._epoch}"
            advice = "make the period longer"
        elif last["in_period"] and self._tracker.reaches(accuracy):
            ended = (f"the enlightenment period (until_accuracy={period.until_accuracy}) ended after epoch "
                     f"{self._epoch}, whose training accuracy {accuracy:.4g} reached it")
            advice = "end the period on epochs, ed.Period(epochs=...), or on a higher until_accuracy"
        else:
            ended = (f"the enlightenment period (until_accuracy={period.until_accuracy}) ended at "
                     f"max_epochs={period.max_epochs}")
            advice = "end the period on epochs, ed.Period(epochs=...), or on a larger max_epochs"
        warnings.warn(
            f"{ended}, and no epoch of it left out a sample: High-Loss Removal removed nothing in this run (it ranks "
            "the losses of earlier epochs, so the period's first epoch removes none, and a fraction of few recorded "
            f"losses can round down to none); {advice}",
            RuntimeWarning,
            stacklevel=caller_stacklevel(),
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The run's state: plain values and CPU tensors only (``torch.load(weights_only=True)``).

        Taken mid-epoch, it resumes with the next batch of that epoch.

        Warns:
            UserWarning: When taken between the chunks of a batch recorded with ``record(rows=...)``, or, in a pass
                that records, after a batch was handed out and before its losses were: the resumed run goes on with
                the next batch, so what was not yet recorded never will be. Save after the step (after a batch's
                last chunk).
        """
        partial = self._partial if self._partial is not None and self._partial[0] is self._batch else None
        if partial is not None and self._recorded is not self._batch:
            warnings.warn(
                f"state_dict() was taken after {partial[2][0]} of the current batch's {len(partial[1])} rows were "
                "recorded (record(rows=...)): a run resumed from it goes on with the next batch, so the other rows "
                "are never recorded; save after the batch's last chunk",
                UserWarning,
                stacklevel=caller_stacklevel(),
            )
        elif (self._batch is not None and self._recorded is not self._batch and self._pass_recorded
              and not self._warned_unrecorded):
            self._warned_unrecorded = True
            warnings.warn(
                f"state_dict() was taken after batch {self._position - 1} of epoch {self._epoch} was handed out and "
                "before its losses were recorded: a run resumed from it goes on with the next batch, so this "
                "batch's losses are never recorded; save after the step. A loop that records only some batches can "
                "ignore this (warned once)",
                UserWarning,
                stacklevel=caller_stacklevel(),
            )
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "epoch": self._epoch,
            "next_epoch": self._next_epoch,
            "position": self._position,
            "seen": self._seen,
            "open": self._open,
            # The pass over the open epoch had ended (a loop left early, an error, a dropped iterator): see
            # load_state_dict. A loaded state not yet continued is saved as it was loaded.
            "left": self._loaded_left if self._resume else (
                self._open and not self._under_way() and not self._pass_empty()),
            # The next epoch was chosen by set_epoch(), even if it is the one after the current: no continuing.
            "chosen": self._chosen,
            # The empty pass that closes the open epoch (resumed after its last batch) was made and dropped: the
            # next iter() closes the epoch and begins the next (see _goes_on), as it does in this process.
            "spent": self._spent(),
            "excluded": self._excluded.clone(),
            "tracker": self._tracker.state_dict(),
            "table": self._table.state_dict(),
            "history": [dict(h) for h in self.history],
            "signature": {"source": self._source.signature(), "schedule": self.schedule.signature()},
            "source": self._position_state(),
        }

    def _spent(self) -> bool:
        """Whether the open epoch's resumed pass, with no batch left, was made and dropped (not to be made again)."""
        return (self._open and not self._resume and not self._chosen and self._pass_start > 0 and self._pass_empty()
                and not self._under_way() and self._position >= self._source.num_batches())

    def _position_state(self) -> dict[str, Any]:
        """What the source needs to resume the open epoch exactly (optional _Source hook; ``{}`` if none)."""
        hook = getattr(self._source, "position_state", None)
        return hook(self._position) if hook is not None and self._open else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next ``iter()`` continues where it was taken.

        A state taken inside the loop after k batches of an epoch makes the next ``iter()`` continue that epoch with
        batch k + 1 (the skipped samples are not loaded); after the epoch's last batch that pass yields nothing and
        closes the epoch, so a loop that resumes the saved epoch stays in step (a state saved after that empty pass
        was made and dropped, as Lightning's probe iterator is, begins the next epoch, as the process that saved it
        would). One taken after the loop was left early (a ``break``, an error) continues that epoch too, with a
        warning; call ``set_epoch(epoch + 1)`` if the loop had moved on. One taken after the loop ended makes it
        start the next epoch, and so does one taken after the loop was left having taken every batch (a ``break`` at
        its last step), with a warning: call ``set_epoch(epoch)`` first to resume that epoch (its pass is then
        empty). An iterator still open (a roll-back from inside the loop) is ended, with a warning: it yields no
        more batches. Nothing is changed when the state is rejected. (With a custom sampler that has no
        ``generator``, whose order cannot be replayed without drawing it, a position past the epoch's end is refused
        by the next ``iter()``, once the order is drawn.)

        Args:
            state: What :meth:`state_dict` returned (after ``torch.save``/``torch.load(weights_only=True)``).

        Raises:
            TypeError: If ``state`` is not a dict.
            ValueError: If the state comes from another dataset size, batch size,
                world size, rank, seed or schedule, or is malformed.
        """
        epoch, next_epoch, position, is_open, excluded = self._check_state(state)
        seen = _state_int("seen", state["seen"], minimum=0)
        left = state.get("left", False)  # a state without the key: from before it was saved
        if not isinstance(left, bool):
            raise ValueError(f"state['left'] should be a bool, got left={left!r}")
        chosen = state.get("chosen", False)  # a state without the key: from before it was saved
        if not isinstance(chosen, bool):
            raise ValueError(f"state['chosen'] should be a bool, got chosen={chosen!r}")
        spent = state.get("spent", False)  # a state without the key: from before it was saved
        if not isinstance(spent, bool):
            raise ValueError(f"state['spent'] should be a bool, got spent={spent!r}")
        scratch = LossTable(self._table.size)
        scratch.load_state_dict(state["table"], prefix="state['table']")  # validates before anything changes
        tracker = PeriodTracker(self.schedule.period)
        tracker.load_state_dict(state["tracker"], prefix="state['tracker']")
        mask = torch.zeros(self._table.size, dtype=torch.bool)
        mask[excluded] = True
        if is_open:
            # A sampler whose order cannot be replayed (None) would have to draw it to count it, which a rejected
            # state must not do: its position is not checked.
            total = self._source.peek_num_batches(epoch, mask)
            if total is not None and position > total:
                raise ValueError(
                    f"state['position'] should be at most the {total} batches of epoch {epoch}, got position={position}"
                )
        positions = state.get("source", {}) if is_open else {}  # a state without the key: from before it existed
        load_positions = getattr(self._source, "load_position_state", None)
        if load_positions is not None:  # optional _Source hook
            load_positions(positions, epoch, mask, position)
        # A pass under way (a roll-back inside the loop) ends here, as a new iter() ends it: left open, it would go
        # on handing out the old run's batches and record their losses into the loaded table.
        previous = self._live() if self._live is not None else None
        self._live = None
        if previous is not None:
            previous.close()
            warnings.warn(
                f"load_state_dict() ended the pass over epoch {self._epoch} that was under way: its iterator yields "
                "no more batches, and the next iter() goes on from the loaded state",
                UserWarning,
                stacklevel=2,
            )
        self._table.load_state_dict(state["table"])
        self._tracker = tracker
        self.history = [dict(h) for h in state["history"]]
        self._epoch = epoch
        self._next_epoch = next_epoch
        self._position = position
        self._seen = seen
        self._open = is_open
        self._excluded = excluded
        self._batch = None
        self._resume = False
        self._passing = False
        self._loaded_left = self._loaded_done = False
        self._chosen = chosen
        self._pass_start = 0
        self._failed_epoch = -1
        # Nothing of this process's earlier passes says anything about the loaded run's batches.
        self._pass_recorded = self._pass_ahead = self._ran_out = False
        self._current_target = self._previous_target = None
        if self.history:  # the phase the last epoch started in (the latch may have closed the period since)
            self._current_phase = 0 if self.history[-1].get("in_period") else 1
        if self._open:
            phase_index = self._current_phase = self._tracker.phase_index(self._epoch)
            self._clock.set(self._epoch, phase_index, self._excluded)
            # Prepared at the loaded batch: what a source keeps of the batches before it (a stream's worker
            # positions) is then there for a state_dict(), and for closing the epoch if it is not continued.
            self._source.begin(self._epoch, self._clock.excluded, position)
            # Taken inside the loop, after any batch (the last one too: a step-based checkpoint cannot know), it
            # continues that epoch, so the loop that resumes the saved epoch stays in step with the loader. A
            # set_epoch() before the state was taken wins over continuing (even set_epoch(epoch + 1), which "chosen"
            # tells apart from the default next epoch). One taken after the loop was left (a
            # time limit, an error) continues it too, as torchdata's StatefulDataLoader does, and says so: a loop
            # that had moved on to the next epoch calls set_epoch() for it.
            # A left pass that had taken every batch (a loop that stops itself at its last step) finished the epoch:
            # the next iter() starts the next one, as it would have.
            finished = left and position >= self._source.num_batches()
            # A state saved after the empty pass that closes the epoch was made and dropped (spent) goes on as that
            # process would: the next iter() closes the epoch and begins the next.
            spent = spent and not left and not chosen and position > 0 and position >= self._source.num_batches()
            self._resume = not chosen and self._next_epoch == self._epoch + 1 and not finished and not spent
            self._loaded_left = left and self._resume
            self._loaded_done = finished and not chosen  # the loop stopped at its last step, or by chance there
            if spent:
                self._pass_start = position

    def _check_state(self, state: Any) -> tuple[int, int, int, bool, Tensor]:
        """Validate a state against this loader; returns (epoch, next_epoch, position, open, excluded)."""
        if not isinstance(state, dict):
            raise TypeError(f"state should be a dict from state_dict(), got state of type {type(state).__name__}")
        missing = set(_STATE_KEYS) - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}; expected a dict from EnlightLoader.state_dict()")
        if state["version"] != STATE_VERSION:
            raise ValueError(f"state version should be {STATE_VERSION}, got version={state['version']!r}")
        mine = {"source": self._source.signature(), "schedule": self.schedule.signature()}
        theirs = state["signature"]
        if not isinstance(theirs, dict):
            raise ValueError(
                f"state['signature'] should be a dict with keys 'source' and 'schedule', got {theirs!r:.80}"
            )
        # NOTE [ A state's kind ]
        # enlighten()'s and stream()'s states share a layout but not an order: one loaded into the other would train
        # some samples twice and others never. Their signatures name their kind, and besides the sampling settings
        # that states of earlier versions did not record, a key the state lacks is a mismatch, not a pass.
        source = theirs.get("source")
        kind = source.get("kind") if isinstance(source, dict) else None
        if kind is not None and kind != mine["source"]["kind"]:
            made = {"map": "enlighten()", "stream": "stream()"}
            raise ValueError(
                f"state does not match this loader: it is a state of {made.get(kind, repr(kind))}'s loader, and this "
                f"is {made[mine['source']['kind']]}'s: their orders differ"
            )
        for part in ("source", "schedule"):
            given = theirs.get(part)
            if not isinstance(given, dict):
                raise ValueError(f"state['signature'][{part!r}] should be a dict, got {given!r:.80}")
            extra = sorted(set(given) - set(mine[part]), key=str) if part == "source" else []
            if extra:  # a setting this loader does not have: the other kind's (NOTE [ A state's kind ])
                raise ValueError(f"state does not match this loader: source {extra[0]} is {given[extra[0]]!r:.80} in "
                                 "the state and None here")
            for key, value in mine[part].items():
                if key not in given and part == "source" and key in _UNRECORDED_BEFORE:
                    continue  # a state from a version that did not record it (sampling settings): unknown, not other
                if key == "rank" and state.get("open") is False:
                    # NOTE [ Epoch-boundary checkpoints are rank-independent ]
                    # Between epochs every rank holds the same synced table, latch and
                    # clock, so the usual "rank 0 saves, every rank loads" works there.
                    # Mid-epoch state holds this rank's own pending records: same rank only.
                    continue
                if key not in given:
                    raise ValueError(
                        f"state does not match this loader: {part} {key} is missing in the state and {value!r} here"
                    )
                if given[key] != value:
                    raise ValueError(
                        f"state does not match this loader: {part} {key} is {given[key]!r} in the state and {value!r} "
                        "here"
                    )
        if state["seed"] != self.seed:
            raise ValueError(
                f"state does not match this loader: seed is {state['seed']!r} in the state and {self.seed!r} here"
            )
        epoch = _state_int("epoch", state["epoch"], minimum=-1, maximum=MAX_EPOCH)
        next_epoch = _state_int("next_epoch", state["next_epoch"], minimum=0, maximum=MAX_EPOCH)
        position = _state_int("position", state["position"], minimum=0)
        is_open = state["open"]
        if not isinstance(is_open, bool):
            raise ValueError(f"state['open'] should be a bool, got open={is_open!r}")
        if is_open and epoch < 0:
            raise ValueError(f"state['epoch'] should be >= 0 in an open epoch, got epoch={epoch}")
        excluded = state["excluded"]
        n = self._table.size
        if (
            not isinstance(excluded, Tensor)
            or excluded.dim() != 1
            or excluded.dtype != torch.int64
            or (excluded.numel() and not (0 <= int(excluded.min()) and int(excluded.max()) < n))
        ):
            raise ValueError(f"state['excluded'] should be a 1-D int64 tensor of indices in [0, {n}), got {excluded!r:.80}")
        if excluded.numel() != torch.unique(excluded).numel():
            repeated = torch.unique(excluded, return_counts=True)
            raise ValueError(
                "state['excluded'] should hold each index at most once, got repeated indices "
                f"{repeated[0][repeated[1] > 1][:8].tolist()}"
            )
        history = state["history"]
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise ValueError(f"state['history'] should be a list of dicts, got {history!r:.80}")
        if is_open and (not history or history[-1].get("epoch") != epoch):
            last = history[-1].get("epoch") if history else None
            raise ValueError(
                f"state['history'] should end with the open epoch {epoch}, got a history whose last epoch is {last!r}"
            )
        tracker = state["tracker"]
        if not isinstance(tracker, dict) or isinstance(tracker.get("end_epoch"), bool) or not isinstance(
            tracker.get("end_epoch"), int
        ):
            raise ValueError(f"state['tracker'] should be a dict with an int end_epoch, got {tracker!r:.80}")
        if not isinstance(state["table"], dict) or not set(_TABLE_KEYS) <= set(state["table"]):
            raise ValueError(f"state['table'] should be a dict with keys {list(_TABLE_KEYS)}, got {state['table']!r:.80}")
        return epoch, next_epoch, position, is_open, excluded.clone()


def _state_int(key: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """A state's integer field; anything else is a malformed state (``ValueError`` naming the key)."""
    try:
        return check_int(f"state[{key!r}]", value, minimum=minimum, maximum=maximum)  # type: ignore[return-value]
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _list_device(x: Any) -> torch.device:
    """The device of a list of per-sample tensors (CPU for anything else)."""
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], Tensor):
        return x[0].device
    return torch.device("cpu")


def check_arguments(schedule: Any, *, num_classes: Any, seed: Any, augment: Any) -> None:
    """The checks :func:`enlighten` and :func:`enlight_data.stream` share."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule should be an enlight_data.Schedule, got schedule of type {type(schedule).__name__}")
    check_int("num_classes", num_classes, minimum=1, allow_none=True)
    check_seed("seed", seed)
    check_augment("augment", augment)
    from .augment import GpuAugment

    for name, phase in zip(("during", "after"), schedule.phases):
        used = phase.augment if phase.augment is not None else augment
        if phase.augment_strength != 1.0 and not isinstance(used, GpuAugment):
            what = "augment=None" if used is None else f"augment of type {type(used).__name__}"
            raise ValueError(
                f"augment_strength scales a GpuAugment only, got augment_strength={phase.augment_strength} in the "
                f"{name} phase with {what}; swap the augmentation per phase with Phase(augment=...) instead"
            )


def check_soft_targets(schedule: Schedule, num_classes: int | None) -> None:
    """Mixing or smoothing labels needs ``num_classes``."""
    if schedule.soft_targets and num_classes is None:
        raise ValueError("num_classes should be an int when the schedule mixes or smooths labels, got num_classes=None")


def resolve_device(device: torch.device | str | None) -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``), with a clear error for anything else.

    ``"cuda"`` without an index becomes the current CUDA device, now: the prefetch stream, the generators, the loss
    table and every batch then stay on one device, whatever device is current later in the loop.
    """
    if device is None:
        return None
    dev = check_device("device", device)
    if dev.type == "meta":  # tensors without data: nothing to train on, and the generators cannot live there
        raise ValueError(f"device should be a device that holds data (cpu, cuda, ...), got device={device!r}")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index is not None and dev.index >= count):
            raise ValueError(
                f"device should be an available device, got device={device!r} with {count} CUDA device(s) available"
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":  # mps, xpu, ...: only a tensor made there proves the device is there
        try:
            torch.empty(0, device=dev)
        except Exception as exc:  # RuntimeError, AssertionError, ModuleNotFoundError (hpu), ... by backend
            raise ValueError(
                f"device should be an available device, got device={device!r}, which this machine lacks ({exc})"
            ) from None
    return dev


def enlighten(
    loader: DataLoader,
    schedule: Schedule,
    *,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    input_key: Any = None,
    target_key: Any = None,
    augment: Callable[..., Tensor] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    group: "torch.distributed.ProcessGroup | None" = None,
    pad: bool | None = None,
) -> EnlightLoader:
    """Wrap a map-style DataLoader so that it follows ``schedule``.

    Args:
        loader: The DataLoader your loop already uses.
        schedule: A :class:`Schedule` (e.g. :func:`mixup_pause`).
        num_classes: Needed when any phase mixes or smooths labels.
        device: Move every tensor of the batch there (non_blocking, pinned, with
            side-stream prefetch on CUDA) before augmentation and mixing. ``"cuda"`` without an
            index is the current CUDA device when ``enlighten()`` is called: in a distributed job,
            call ``torch.cuda.set_device(local_rank)`` first, or pass ``f"cuda:{local_rank}"``.
        seed: Base seed of every random stream (shuffle, mixing, augmentation).
        input_key: The key of the input in dict batches; in tuple/list batches, its position (an
            int, default 0).
        target_key: The key of the target in dict batches; in tuple/list batches, its position (an
            int; default 1 where neither key is given).
        augment: A batch augmentation run on the batch's device before mixing: a
            Kornia module, :class:`~enlight_data.GpuAugment` or any callable.
        rank: This process's rank; taken from ``torch.distributed`` when initialised.
        world_size: Number of ranks; taken from ``torch.distributed`` when initialised.
        group: The data-parallel process group (e.g. with tensor or pipeline parallelism): rank and
            world size come from it and the loss tables are combined over it. Default: the whole world.
        pad: Pad rank shares to equal size by repeating samples (else truncate). Default: as the
            loader's ``DistributedSampler`` says (``pad = not drop_last``), else ``True``.

    Returns:
        An :class:`EnlightLoader`.

    Raises:
        TypeError: If an argument has the wrong type (each message names it): ``loader`` not a DataLoader over
            a map-style dataset with a ``len()`` (use :func:`enlight_data.stream` for an ``IterableDataset``),
            ``schedule`` not a :class:`Schedule`, an unhashable ``input_key``/``target_key``, ...
        ValueError: If a value is out of range: an empty dataset, ``batch_size=None``, a ``device`` this
            machine lacks (or ``"meta"``), no ``num_classes`` for a schedule that mixes or smooths labels, a rank
            outside the world, an ``augment_strength`` other than 1 without a :class:`GpuAugment`, ...

    Warns:
        UserWarning: At the first batch, when its input is uint8 and one phase's augmentation is a
            :class:`GpuAugment` or Kornia module (floats in [0, 1] or normalised) while the other phase has none
            (0-255): the model's input would change scale when the period ends.

    Note:
        Whenever any phase mixes or smooths labels, targets are soft
        ``(B, num_classes)`` float32 rows in every epoch (one-hot when unmixed),
        so the loss sees one target type for the whole run.
    """
    check_arguments(schedule, num_classes=num_classes, seed=seed, augment=augment)
    check_soft_targets(schedule, num_classes)
    if pad is not None:
        check_bool("pad", pad)
    for name, key in (("input_key", input_key), ("target_key", target_key)):
        if not isinstance(key, Hashable):
            raise TypeError(f"{name} should be a dict key (hashable) or None, got {name}={key!r}")
    dev = resolve_device(device)
    alone = made_before_process_group(rank, world_size, group)
    rank, world_size = resolve_rank(rank, world_size, group)
    check_loader(loader)
    size = len(loader.dataset)  # type: ignore[arg-type]
    if size < 1:
        raise ValueError(f"loader.dataset should hold at least one sample, got len(loader.dataset)={size}")
    clock = SharedClock(schedule, size)
    source = MapSource(
        loader,
        clock,
        seed=seed,
        rank=rank,
        world_size=world_size,
        pad=pad,
        pin_memory=True if dev is not None and dev.type == "cuda" else None,
    )
    return EnlightLoader(
        source,
        schedule,
        clock,
        num_classes=num_classes,
        device=dev,
        seed=seed,
        input_key=input_key,
        target_key=target_key,
        augment=augment,
        reduce=table_reducer(group, agreement=source.agreement) if world_size > 1 else None,
        check_pass=pass_checker(group, agreement=source.agreement) if world_size > 1 else None,
        made_before_group=alone,
    )
