"""The per-sample loss table that High-Loss Removal ranks, and the epoch's counters.

Recording never synchronises with the host: batches are staged in buffers made
once and folded in groups into per-index accumulators with ``index_add_`` (so a sample recorded
twice in one epoch, e.g. by distributed padding, keeps the mean of its records),
and the epoch's accuracy and loss counters stay on the device until
:meth:`LossTable.finalize_epoch` reads them, once per epoch.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
from typing import Any, Callable, cast

import torch
from torch import Tensor

from ._inference import normal_tensors
from ._validate import check_device, check_int, check_range

__all__ = ["EpochStats", "LossTable"]

# Layout of the on-device counter vector.
_CORRECT, _SCORED, _LOSS_SUM, _LOSS_COUNT, _NONFINITE, _RECORDED = range(6)
_NUM_STATS = 6
_FOLD_EVERY = 64
_FLOAT32_MAX = torch.finfo(torch.float32).max
# Index dtypes record() takes (copied into the int64 staging buffer). Bool and floats are refused:
# a bool mask would become the indices 0/1, floats would be truncated.
_INDEX_DTYPES = frozenset({torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8})

EpochStats = dict[str, float]


class LossTable:
    """Each sample's most recent unmixed loss, plus the running epoch's counters.

    Args:
        size: Number of samples (``len(dataset)``, or the id space of a stream), an int >= 1.

    Raises:
        TypeError: If ``size`` is not an int (NumPy integers are accepted).
        ValueError: If ``size < 1``.

    Note:
        The table lives on the device the first recorded losses come from. Values
        recorded during an epoch are averaged per sample and become "the most
        recent loss" when the epoch is finalised; :meth:`losses` already shows them.
    """

    @normal_tensors
    def __init__(self, size: int) -> None:
        self.size: int = cast(int, check_int("size", size, minimum=1))
        size = self.size
        self._device = torch.device("cpu")
        self._last = torch.full((size,), math.nan, dtype=torch.float32)
        self._sum = torch.zeros(size, dtype=torch.float32)
        self._count = torch.zeros(size, dtype=torch.float32)
        self._stats = torch.zeros(_NUM_STATS, dtype=torch.float64)
        self._stage = _Stage()

    @property
    def device(self) -> torch.device:
        """The device the table and counters live on."""
        return self._device

    def __repr__(self) -> str:
        # Cheap and sync-free: no fold, no read of device tensors.
        return f"{type(self).__name__}(size={self.size}, device={self._device}, staged={self._stage.fill})"

    @normal_tensors
    def to(self, device: torch.device | str) -> "LossTable":
        """Move the table and counters to ``device`` (done automatically on first record).

        Args:
            device: Where the table lives: that of the recorded losses.

        Returns:
            The table itself.

        Raises:
            TypeError: If ``device`` is neither a str nor a ``torch.device``.
            ValueError: If ``device`` names no device.
        """
        device = check_device("device", device)
        if device != self._device:
            self._fold()
            self._last, self._sum, self._count, self._stats = (
                t.to(device) for t in (self._last, self._sum, self._count, self._stats)
            )
            self._device = device
        return self

    @normal_tensors
    def record(
        self,
        indices: Tensor,
        losses: Tensor,
        *,
        keep: Tensor | None = None,
        correct: Tensor | None = None,
        counted: Tensor | None = None,
    ) -> None:
        """Add one batch of per-sample losses. No host synchronisation.

        Args:
            indices: ``(B,)`` dataset indices of the batch, an int64, int32, int16, int8 or uint8 tensor
                (the dtypes torch indexes with; not bool) with values in ``[0, size)``.
            losses: ``(B,)`` per-sample losses (any float dtype, detached here; kept as float32, a finite
                float64 loss beyond its range as its largest or lowest finite value).
            keep: ``(B,)`` bool tensor, the samples whose loss enters the table (unmixed ones);
                all when ``None``. Non-finite losses never enter it and are counted.
            correct: ``(B,)`` bool tensor, whether each prediction was right (for accuracy), or a float
                tensor: the fraction right (dense predictions), NaN for a sample with nothing to score.
            counted: ``(B,)`` bool tensor, the samples whose loss counts at all: in the epoch's mean loss
                and (where ``keep``) the table; all when ``None``. A sample with nothing to score (every
                position at ``ignore_index``) has no loss: it enters neither.

        Raises:
            TypeError: If ``indices`` or ``losses`` is not a tensor, ``losses`` is not of a
                floating-point dtype, ``indices`` is not of an index dtype, ``keep`` or ``counted``
                is not ``None`` or a bool tensor, or ``correct`` is not ``None`` or a bool or float tensor.
            ValueError: If the shapes disagree, or (for CPU ``indices``) an index is
                outside ``[0, size)``.

        Note:
            The range of ``indices`` is checked only when they are on the CPU (a check
            on a GPU would synchronise with the host). An out-of-range index on a GPU
            is not caught here: it fails later, when the staged records are added to
            the table (every 64 batches, or in :meth:`losses`/:meth:`finalize_epoch`), as
            a CUDA device-side assertion reported at the next synchronisation.
        """
        if not isinstance(indices, Tensor):
            raise TypeError(f"indices should be a Tensor, got indices of type {type(indices).__name__}")
        if not isinstance(losses, Tensor):
            raise TypeError(f"losses should be a Tensor, got losses of type {type(losses).__name__}")
        if not losses.is_floating_point():
            raise TypeError(f"losses should be a floating-point tensor, got losses of dtype {losses.dtype}")
        if indices.dtype not in _INDEX_DTYPES:
            raise TypeError(
                "indices should be an int64, int32, int16, int8 or uint8 tensor (the dtypes torch indexes with; "
                f"indices.long() converts), got indices of dtype {indices.dtype}"
            )
        for name, value, meaning in (
            ("keep", keep, "the loss enters the table"),
            ("counted", counted, "the loss counts at all"),
        ):
            if value is not None and (not isinstance(value, Tensor) or value.dtype != torch.bool):
                got = f"dtype {value.dtype}" if isinstance(value, Tensor) else f"type {type(value).__name__}"
                raise TypeError(f"{name} should be a bool tensor or None (True = {meaning}), got {name} of {got}")
        if correct is not None and (
            not isinstance(correct, Tensor) or not (correct.dtype == torch.bool or correct.is_floating_point())
        ):
            got = f"dtype {correct.dtype}" if isinstance(correct, Tensor) else f"type {type(correct).__name__}"
            raise TypeError(
                f"correct should be a bool tensor (right or not), a float tensor (the fraction right) or None, "
                f"got correct of {got}"
            )
        if indices.dim() != 1:
            raise ValueError(f"indices should be 1-D, got indices of shape {tuple(indices.shape)}")
        for name, value in (("losses", losses), ("keep", keep), ("correct", correct), ("counted", counted)):
            if value is not None and value.shape != indices.shape:
                raise ValueError(
                    f"{name} should have the shape of indices {tuple(indices.shape)}, got {name} of shape "
                    f"{tuple(value.shape)}"
                )
        if indices.is_cpu and indices.numel():  # about 2 us at B=256; never on a GPU (it would synchronise)
            bounds = torch.aminmax(indices)
            lo, hi = bounds[0].item(), bounds[1].item()
            if lo < 0 or hi >= self.size:
                raise ValueError(
                    f"indices should be in [0, {self.size}) (the table's size), got indices with values in [{lo}, {hi}]"
                )
        self._stage_batch(indices, losses.detach(), keep, correct, counted)

    @normal_tensors
    def _stage_batch(
        self, indices: Tensor, losses: Tensor, keep: Tensor | None, correct: Tensor | None, counted: Tensor | None
    ) -> None:
        """:meth:`record` after its checks: for a caller whose arguments are checked or made by itself (the
        loader's own indices, its detached losses and the flags it computed), which saves it a few microseconds of
        every step (NOTE [ The cost of a record ] in ``loader.py``)."""
        if losses.device != self._device:
            self.to(losses.device)
        if losses.dtype == torch.float64:  # the staging copy makes float32 of any other dtype
            losses = _float32_losses(losses)
        # NOTE [ Deferred recording ]
        # A step copies the batch's ids, losses (and keep/correct flags) into staging buffers
        # made once (a slice copy each: nothing the step allocates outlives it, so the batches'
        # big allocations keep reusing the same memory; in a model-free CPU loop, small tensors
        # kept across steps cost 14-21 % when kept for an epoch, about 5 % for 64 steps, against
        # about 3 % for this whole record path). When the buffers are full the staged batches are
        # added to the table and counters in one pass. Nothing synchronises with the host.
        level = _level(keep, counted)
        if not self._stage.add(indices, losses, level, correct, self._device):
            self._fold()
            self._stage.add(indices, losses, level, correct, self._device)

    @normal_tensors
    def _fold(self) -> None:
        """Add the staged batches to the table accumulators and counters (no host synchronisation)."""
        staged = self._stage.take()
        if staged is None:
            return
        indices, values, level, correct = staged
        finite = torch.isfinite(values)
        if level is None:
            clean = torch.where(finite, values, 0.0)
            take = finite
            finite_count = finite.sum(dtype=torch.float64)
            nonfinite = float(values.numel()) - finite_count
        else:  # see _level: 2 = the table and the mean, 1 = the mean only, 0 = neither
            counts = level > 0
            clean = torch.where(finite & counts, values, 0.0)
            take = finite & (level == 2)
            finite_count = (finite & counts).sum(dtype=torch.float64)
            nonfinite = (counts & ~finite).sum(dtype=torch.float64)
        self._sum.index_add_(0, indices, clean if level is None else torch.where(take, clean, 0.0))
        weight = take.float()
        self._count.index_add_(0, indices, weight)
        # correct, scored, loss_sum, loss_count, nonfinite, recorded; filled and computed on the
        # device (a tensor made from a host value would be a blocking copy).
        self._stats += torch.stack(
            [
                correct.nansum(dtype=torch.float64) if correct is not None else finite_count.new_zeros(()),
                (~correct.isnan()).sum(dtype=torch.float64) if correct is not None else finite_count.new_zeros(()),
                clean.sum(dtype=torch.float64),
                finite_count,
                nonfinite,
                weight.sum(dtype=torch.float64),
            ]
        )

    # ------------------------------------------------------------------ epoch work
    def pending(self) -> tuple[Tensor, Tensor, Tensor]:
        """The running epoch's ``(sum, count, stats)`` accumulators (for distributed reduction)."""
        self._fold()
        return self._sum, self._count, self._stats

    @normal_tensors
    def finalize_epoch(self, reduce: Callable[["LossTable"], None] | None = None) -> EpochStats:
        """Close the running epoch: merge its records into the table and read its counters.

        Args:
            reduce: Called first with this table, to combine the accumulators across
                processes in place (see :mod:`enlight_data.distributed`).

        Returns:
            ``correct``, ``scored`` (samples with an accuracy verdict), ``loss_sum``, ``loss_count``, ``nonfinite``,
            ``recorded`` as floats. This is the one device→host transfer per epoch.

        Raises:
            TypeError: If ``reduce`` is neither ``None`` nor callable (nothing is changed then).
        """
        if reduce is not None and not callable(reduce):
            raise TypeError(f"reduce should be a callable taking the table, or None, got reduce={reduce!r:.80}")
        self._fold()
        if reduce is not None:
            reduce(self)
        recorded = self._count > 0
        self._last = torch.where(recorded, self._sum / self._count.clamp_min(1.0), self._last)
        stats = self._stats.tolist()
        self._sum.zero_()
        self._count.zero_()
        self._stats.zero_()
        names = ("correct", "scored", "loss_sum", "loss_count", "nonfinite", "recorded")
        return dict(zip(names, stats))

    @normal_tensors
    def discard_epoch(self) -> None:
        """Drop the running epoch's records (used when a resumed epoch restarts them)."""
        self._stage.clear()
        self._sum.zero_()
        self._count.zero_()
        self._stats.zero_()

    # ------------------------------------------------------------------ queries
    def losses(self) -> Tensor:
        """Each sample's most recent loss as a CPU float32 tensor, NaN where none is recorded."""
        self._fold()
        current = torch.where(self._count > 0, self._sum / self._count.clamp_min(1.0), self._last)
        return current.to("cpu", torch.float32)

    def select_high_loss(self, fraction: float, *, losses: Tensor | None = None) -> Tensor:
        """Indices of the ``floor(fraction * k)`` highest losses, ``k`` the samples with a loss.

        ``losses`` replaces the table's (e.g. :meth:`losses`, the running epoch's merged in) to preview a choice.

        ``fraction * k`` is computed exactly (0.29 of 100 is 29, not 28). Samples with
        no recorded loss are never selected. Returns a CPU int64 tensor (in no particular order).
        The ranking runs on the CPU, so tied losses at the cut give the same set whatever device
        the table is on (about 20 ms for 1.3M samples on one core, once per epoch).

        Args:
            fraction: The fraction in ``[0, 1)`` of the samples with a loss to select.
            losses: ``(size,)`` float losses to rank instead of the table's (NaN = no loss).

        Returns:
            The selected dataset indices.

        Raises:
            TypeError: If ``fraction`` is not a real number, or ``losses`` is not a floating-point tensor.
            ValueError: If ``fraction`` is outside ``[0, 1)``, or ``losses`` is not of the table's size.
        """
        fraction = cast(float, check_range("fraction", fraction, 0.0, 1.0, high_open=True))
        if losses is not None:
            if not isinstance(losses, Tensor) or not losses.is_floating_point():
                got = f"dtype {losses.dtype}" if isinstance(losses, Tensor) else f"type {type(losses).__name__}"
                raise TypeError(f"losses should be a floating-point tensor of shape ({self.size},), got losses of {got}")
            if losses.shape != (self.size,):
                raise ValueError(f"losses should have shape ({self.size},), got losses of shape {tuple(losses.shape)}")
        if fraction == 0.0:
            return torch.empty(0, dtype=torch.int64)
        last = self._last if losses is None else losses
        known = ~torch.isnan(last)
        k = int(known.sum())
        n_drop = math.floor(Fraction(repr(float(fraction))) * k)
        if n_drop == 0:
            return torch.empty(0, dtype=torch.int64)
        # Ranked on the CPU whatever the table's device: with tied losses at the cut, CPU and CUDA topk may pick
        # different samples, and a resumed run's table is on the CPU until its first record. A known loss of -inf
        # (given in ``losses``, or a float32 sum that overflowed) ranks as the lowest finite value: strictly above
        # the samples without a loss (-inf here), so that none of them is selected (n_drop < k).
        ranked = torch.where(known, last.clamp_min(torch.finfo(last.dtype).min), -math.inf).cpu()
        return torch.topk(ranked, n_drop, sorted=False).indices

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The table's size (an int) and tensors on the CPU: the table, the running epoch's accumulators and
        counters (plain types only: it loads with ``torch.load(weights_only=True)``)."""
        self._fold()
        return {
            "size": self.size,
            "last": self._last.cpu().clone(),
            "sum": self._sum.cpu().clone(),
            "count": self._count.cpu().clone(),
            "stats": self._stats.cpu().clone(),
        }

    @normal_tensors
    def load_state_dict(self, state: dict[str, Any], *, prefix: str = "state") -> None:
        """Restore a :meth:`state_dict`: the table and the running epoch's accumulators (staged records are dropped).

        The state is checked in full before anything changes; the tensors are copied to the table's device.

        Args:
            state: What :meth:`state_dict` returned.
            prefix: How error messages name ``state``, e.g. ``"state['table']"`` when it is nested
                in a loader's state.

        Raises:
            TypeError: If ``state`` is not a dict.
            ValueError: If a key is missing, ``size`` is not an int or differs from this table's size,
                ``last``/``sum``/``count``/``stats`` is not a float tensor of the right shape, or holds a value no
                table can (a NaN sum, a negative or non-finite count or counter).
        """
        if not isinstance(state, dict):
            raise TypeError(
                f"{prefix} should be a dict (from LossTable.state_dict()), got {prefix} of type {type(state).__name__}"
            )
        keys = ("size", "last", "sum", "count", "stats")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"{prefix} should have the keys {list(keys)}, got {prefix} missing {missing}")
        size = state["size"]
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise ValueError(
                f"{prefix}['size'] should be an int, got {prefix}['size']={size!r:.80} of type {type(size).__name__}"
            )
        if size != self.size:
            raise ValueError(
                f"loss table size mismatch: {prefix}['size'] should be {self.size} (this table's size), got "
                f"{prefix}['size']={size} (the checkpoint holds {size} samples)"
            )
        for key, shape in (("last", (self.size,)), ("sum", (self.size,)), ("count", (self.size,)),
                           ("stats", (_NUM_STATS,))):
            t = state[key]
            if not isinstance(t, Tensor):
                raise ValueError(
                    f"{prefix}[{key!r}] should be a float tensor of shape {shape}, got {prefix}[{key!r}] of type "
                    f"{type(t).__name__}"
                )
            if tuple(t.shape) != shape or not t.is_floating_point():
                raise ValueError(
                    f"{prefix}[{key!r}] should be a float tensor of shape {shape}, got {prefix}[{key!r}] of shape "
                    f"{tuple(t.shape)} and dtype {t.dtype}"
                )
        # Values a table can hold (an edited or corrupted state would silently empty or poison the next removal):
        # no NaN in the sums, and counts and counters finite and not negative (the loss sum, counter 2, may be
        # negative). A sum (and so a last loss) may be inf: finite losses of a sample drawn twice in an epoch can
        # overflow float32 (see select_high_loss); the float64 counters cannot.
        stats = state["stats"]
        negative = stats < 0
        negative[2] = False  # the epoch's loss sum: a loss of one's own may be negative
        for key, bad, what in (
            ("sum", state["sum"].isnan(), "a number (not NaN)"),
            ("count", ~state["count"].isfinite() | (state["count"] < 0), "finite and >= 0"),
            ("stats", ~stats.isfinite() | negative, "finite, and >= 0 but for the loss sum (position 2)"),
        ):
            if bool(bad.any()):
                at = bad.nonzero().flatten()[:5].tolist()
                raise ValueError(f"{prefix}[{key!r}] should be {what}, got {state[key][bad][:5].tolist()} at "
                                 f"positions {at}")
        dev = self._device
        self._stage.clear()
        self._last = state["last"].to(dev, torch.float32).clone()
        self._sum = state["sum"].to(dev, torch.float32).clone()
        self._count = state["count"].to(dev, torch.float32).clone()
        self._stats = state["stats"].to(dev, torch.float64).clone()


def _level(keep: Tensor | None, counted: Tensor | None) -> Tensor | None:
    """Per sample, where its loss goes, as int8: 2 = the table and the epoch's mean, 1 = the mean only (a mixed
    sample), 0 = neither (nothing counted); ``None`` when every sample's goes to both."""
    if keep is None and counted is None:
        return None
    if keep is None:
        return torch.where(cast(Tensor, counted), 2, 0).to(torch.int8)
    level = keep.to(torch.int8) + 1
    return level if counted is None else level.where(counted.to(level.device), 0)


def _float32_losses(losses: Tensor) -> Tensor:
    """``losses`` as float32, the table's dtype: a finite float64 loss beyond float32's range becomes its largest
    (or lowest) finite value, not an infinity, which the table would count as non-finite and leave out.

    Args:
        losses: Per-sample losses of a floating-point dtype.

    Returns:
        A float32 tensor (``losses`` itself if it is one).
    """
    if losses.dtype == torch.float64:
        losses = torch.where(losses.isfinite(), losses.clamp(-_FLOAT32_MAX, _FLOAT32_MAX), losses)
    return losses.float()


class _Stage:
    """Preallocated buffers that hold up to ``_FOLD_EVERY`` batches of records between folds.

    The level (see :func:`_level`) and correct columns are only written while some batch of the window has them
    (set from its first such batch, with the defaults filled in for the batches before it),
    so a window without them costs two slice copies per step.
    """

    def __init__(self) -> None:
        self.capacity = 0
        self.fill = 0
        self.level_on = self.correct_on = False
        self.device = torch.device("cpu")
        self.indices = self.losses = self.level = self.correct = torch.empty(0)

    def _allocate(self, capacity: int, device: torch.device) -> None:
        self.capacity, self.device = capacity, device
        self.indices = torch.empty(capacity, dtype=torch.int64, device=device)
        self.losses = torch.empty(capacity, dtype=torch.float32, device=device)
        self.level = torch.empty(capacity, dtype=torch.int8, device=device)
        self.correct = torch.empty(capacity, dtype=torch.float32, device=device)

    def add(
        self, indices: Tensor, losses: Tensor, level: Tensor | None, correct: Tensor | None, device: torch.device
    ) -> bool:
        """Stage one batch; ``False`` (nothing written) when it does not fit: fold, then add again."""
        b = int(indices.shape[0])
        if device != self.device or b > self.capacity:
            if self.fill:
                return False
            self._allocate(max(b * _FOLD_EVERY, self.capacity), device)
        if self.fill + b > self.capacity:
            return False
        lo, hi = self.fill, self.fill + b
        self.indices[lo:hi].copy_(indices, non_blocking=True)
        self.losses[lo:hi].copy_(losses)
        if level is not None and not self.level_on:
            self.level_on = True
            self.level[:lo].fill_(2)
        if self.level_on and level is not None:
            self.level[lo:hi].copy_(level, non_blocking=True)
        elif self.level_on:
            self.level[lo:hi].fill_(2)
        # NaN marks a sample without an accuracy verdict (a batch recorded without one, or a sample with nothing to
        # score); the fold counts the others on the device.
        if correct is not None and not self.correct_on:
            self.correct_on = True
            self.correct[:lo].fill_(math.nan)
        if self.correct_on and correct is not None:
            self.correct[lo:hi].copy_(correct, non_blocking=True)
        elif self.correct_on:
            self.correct[lo:hi].fill_(math.nan)
        self.fill = hi
        return True

    def take(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None] | None:
        """The staged ``(indices, losses, level, correct)`` as views, and an empty stage; ``None`` if empty.

        The views stay valid until the next :meth:`add`, which the fold never calls.
        """
        if not self.fill:
            return None
        n = self.fill
        staged = (
            self.indices[:n],
            self.losses[:n],
            self.level[:n] if self.level_on else None,
            self.correct[:n] if self.correct_on else None,
        )
        self.clear()
        return staged

    def clear(self) -> None:
        self.fill = 0
        self.level_on = self.correct_on = False
