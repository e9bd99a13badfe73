"""What the enlightenment period is and what each phase does.

The paper (arXiv 2504.01737) calls the start of training the *enlightenment
period*: v1 takes the first ~4% of epochs, v2 lasts until training accuracy
reaches about 50%. A :class:`Schedule` pairs a :class:`Period` with the
:class:`Phase` used during it and the one used after it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Literal, cast

import numpy as np

from ._stack import caller_stacklevel
from ._validate import check_augment, check_int, check_range, check_real

__all__ = [
    "Period",
    "PeriodTracker",
    "Phase",
    "Schedule",
    "alpha_boost",
    "high_loss_removal",
    "mixup_pause",
]

# Mixing alphas above this give λ = 0.5 to float precision (and overflow float32 well beyond it); alphas below the
# minimum give λ = 0 or 1 (no mixing) to float precision, and underflow the log-space Beta draw far below it.
_MAX_ALPHA = 1e6
_MIN_ALPHA = 1e-6


def _set(obj: Any, name: str, value: Any) -> None:
    """Store a normalised value on a frozen dataclass (in ``__post_init__``)."""
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, kw_only=True)
class Period:
    """How long the enlightenment period lasts. Give exactly one of the three forms.

    Args:
        epochs: The first ``epochs`` epochs (``0`` means no period at all).
        fraction: With ``total_epochs``: the first
            ``max(1, floor(fraction * total_epochs + 0.5))`` epochs, computed exactly on the decimal written
            (half rounds up: 0.04 of 500 is 20, and 0.145 of 100 is 15, where float arithmetic would give 14).
        total_epochs: The length of the whole run, only with ``fraction``.
        until_accuracy: The period lasts until an epoch's training accuracy
            reaches this value (in (0, 1]); it ends after that epoch and never restarts,
            even when ``set_epoch()`` goes back. Accuracy is scored only from
            ``loader.record(..., output=..., target=...)`` or ``loader.track(criterion)``.
        max_epochs: With ``until_accuracy`` only: the period ends after this many
            epochs at the latest. ``None`` sets no limit: a run whose training accuracy
            never reaches ``until_accuracy`` stays in the period to its end (the paper
            finds a period run too long costs accuracy, so a limit is a cheap guard).

    Raises:
        TypeError: If a value has the wrong type (ints for ``epochs``, ``total_epochs`` and ``max_epochs``,
            real numbers for ``fraction`` and ``until_accuracy``).
        ValueError: If not exactly one form is given, a value is out of range, or ``total_epochs`` or
            ``max_epochs`` comes without its form.

    Note:
        Epochs count from 0: ``Period(epochs=10)`` covers epochs 0..9. Values are
        stored as plain Python ``int``/``float`` (NumPy scalars are converted), so
        checkpoints load with ``torch.load(weights_only=True)``.
    """

    epochs: int | None = None
    fraction: float | None = None
    total_epochs: int | None = None
    until_accuracy: float | None = None
    max_epochs: int | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("epochs", "fraction", "until_accuracy") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "Period needs exactly one of epochs, fraction (with total_epochs) or until_accuracy, "
                f"got {', '.join(given) if given else 'none'}"
            )
        _set(self, "epochs", check_int("epochs", self.epochs, minimum=0, allow_none=True))
        _set(self, "total_epochs", check_int("total_epochs", self.total_epochs, minimum=1, allow_none=True))
        _set(self, "max_epochs", check_int("max_epochs", self.max_epochs, minimum=1, allow_none=True))
        if self.fraction is not None:
            _set(self, "fraction", check_range("fraction", self.fraction, 0.0, 1.0, low_open=True))
            if self.total_epochs is None:
                raise ValueError("Period(fraction=...) needs total_epochs, got total_epochs=None")
        elif self.total_epochs is not None:
            raise ValueError(
                f"total_epochs is only used with fraction, got total_epochs={self.total_epochs} without fraction"
            )
        if self.until_accuracy is not None:
            _set(self, "until_accuracy", check_range("until_accuracy", self.until_accuracy, 0.0, 1.0, low_open=True))
        elif self.max_epochs is not None:
            raise ValueError(
                f"max_epochs is only used with until_accuracy, got max_epochs={self.max_epochs} without until_accuracy"
            )

    @property
    def length(self) -> int | None:
        """The fixed number of epochs in the period, or ``None`` when it ends on accuracy."""
        if self.epochs is not None:
            return self.epochs
        if self.fraction is not None and self.total_epochs is not None:
            exact = Fraction(repr(float(self.fraction))) * self.total_epochs + Fraction(1, 2)
            return max(1, math.floor(exact))
        return None


def _check_alpha(name: str, value: Any) -> float:
    """A Mixup/CutMix α: 0 (off) or in ``[_MIN_ALPHA, _MAX_ALPHA]``, as a float; errors name the argument."""
    alpha = cast(float, check_real(name, value, minimum=0.0))
    if alpha > _MAX_ALPHA or 0.0 < alpha < _MIN_ALPHA:
        raise ValueError(
            f"{name} should be 0 (off) or in [{_MIN_ALPHA:g}, {_MAX_ALPHA:g}] (beyond, Beta(α, α) is 0 or 1, "
            f"or 0.5, to float precision), got {name}={value!r}"
        )
    return alpha


@dataclass(frozen=True, kw_only=True)
class Phase:
    """The data treatment in force during one part of the schedule.

    Args:
        mixup_alpha: Mixup's Beta(α, α) parameter; 0 turns Mixup off.
        cutmix_alpha: CutMix's Beta(α, α) parameter; 0 turns CutMix off.
        mix_prob: Probability that a sample (``mode="elem"``) or the batch
            (``mode="batch"``) is mixed at all.
        switch_prob: When both alphas are > 0, probability that a batch uses
            CutMix rather than Mixup.
        mode: ``"elem"`` draws one λ per sample, ``"batch"`` one λ per batch.
        drop_high_loss: Fraction in [0, 1) of the samples with a recorded loss
            that are left out, highest loss first (High-Loss Removal).
        label_smoothing: Label smoothing ``s`` in [0, 1) applied to the soft targets:
            ``row * (1 - s) + s / num_classes``; with ``num_classes=1`` (one binary score)
            towards 0.5, ``row * (1 - s) + s / 2``.
        augment_strength: Scales the batch augmentation's magnitudes and
            probabilities, in [0, 1] (1 = as configured); the phase's augmentation
            must then be a ``GpuAugment`` (checked by ``enlighten()``/``stream()``).
        augment: An augmentation used in this phase instead of the loader's
            ``augment=`` (a Kornia module, ``GpuAugment`` or a callable).

    Raises:
        TypeError: If a number is not a real number, ``mode`` not a str, or ``augment`` not callable.
        ValueError: If an alpha is neither 0 nor in ``[1e-6, 1e6]``, a probability or strength outside ``[0, 1]``,
            ``drop_high_loss`` or ``label_smoothing`` outside ``[0, 1)``, or ``mode`` not ``"elem"``/``"batch"``.

    Note:
        Mixing pairs sample ``i`` with sample ``(i + B // 2) % B`` of the batch
        (the batch rolled by half), which needs no copy of the batch. Numbers are
        stored as plain Python ``float`` (NumPy scalars are converted).
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    mode: Literal["elem", "batch"] = "elem"
    drop_high_loss: float = 0.0
    label_smoothing: float = 0.0
    augment_strength: float = 1.0
    augment: Callable[..., Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("mixup_alpha", "cutmix_alpha"):
            _set(self, name, _check_alpha(name, getattr(self, name)))
        _set(self, "mix_prob", check_range("mix_prob", self.mix_prob, 0.0, 1.0))
        _set(self, "switch_prob", check_range("switch_prob", self.switch_prob, 0.0, 1.0))
        _set(self, "drop_high_loss", check_range("drop_high_loss", self.drop_high_loss, 0.0, 1.0, high_open=True))
        _set(self, "label_smoothing", check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True))
        _set(self, "augment_strength", check_range("augment_strength", self.augment_strength, 0.0, 1.0))
        if not isinstance(self.mode, str):
            raise TypeError(
                f"mode should be a str, 'elem' or 'batch', got mode={self.mode!r} of type {type(self.mode).__name__}"
            )
        if self.mode not in ("elem", "batch"):
            raise ValueError(f"mode should be 'elem' or 'batch', got mode={self.mode!r}")
        _set(self, "mode", str(self.mode))
        check_augment("augment", self.augment)

    @property
    def mixes(self) -> bool:
        """Whether this phase mixes samples at all."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    @property
    def soft_targets(self) -> bool:
        """Whether this phase needs soft ``(B, num_classes)`` targets."""
        return self.mixes or self.label_smoothing > 0


_PLAIN = Phase()  # the default phase: no mixing, no removal (frozen, so one instance serves every Schedule)


@dataclass(frozen=True, init=False)
class Schedule:
    """A :class:`Period` with the :class:`Phase` used during it and after it.

    Args:
        period: An int (the first N epochs) or a :class:`Period`; stored as a :class:`Period`.
        during: The phase in force during the enlightenment period.
        after: The phase in force after it.

    Raises:
        TypeError: If ``period`` is neither an int nor a :class:`Period`, ``during``/``after`` is not a
            :class:`Phase`, or the phases are given by position (``Schedule(period, during=..., after=...)``).
        ValueError: If an int ``period`` is negative.

    Warns:
        UserWarning: When a phase removes high-loss samples but neither it nor an earlier phase records
            any loss, because each mixes every sample (``mix_prob=1``): only unmixed samples' losses enter
            the table, so such a removal would leave out next to nothing (only samples whose λ came out 1).
    """

    # NOTE [ Schedule's own __init__ ]
    # The constructor takes an int or a Period, the attribute is always a Period: a generated __init__
    # would type the argument as the attribute (an int rejected by type checkers) or the attribute as
    # the argument (every reader of schedule.period would have to handle an int that never comes).
    period: Period
    during: Phase = field(default_factory=Phase)
    after: Phase = field(default_factory=Phase)

    def __init__(self, period: Period | int, *phases: Any, during: Phase = _PLAIN, after: Phase = _PLAIN) -> None:
        if phases:  # a clearer error than Python's for Schedule(period, Phase(...), Phase(...))
            raise TypeError(
                f"Schedule takes its phases as keywords, Schedule(period, during=..., after=...), got {len(phases)} "
                "positional phase(s)"
            )
        _set(self, "period", period)
        _set(self, "during", during)
        _set(self, "after", after)
        self.__post_init__()

    def __post_init__(self) -> None:
        _set(self, "period", _period(self.period))
        for name in ("during", "after"):
            if not isinstance(getattr(self, name), Phase):
                raise TypeError(f"{name} should be a Phase, got {name}={getattr(self, name)!r}")
        for i, name in enumerate(("during", "after")):
            phase = self.phases[i]
            if phase.drop_high_loss > 0 and all(p.mixes and p.mix_prob == 1 for p in self.phases[: i + 1]):
                warnings.warn(
                    f"{name}.drop_high_loss={phase.drop_high_loss} removes next to nothing: only unmixed samples' "
                    f"losses are recorded (a mixed sample's loss is not its own), and "
                    f"{'both phases mix' if i else 'during mixes'} every sample (mix_prob=1); "
                    "set mix_prob < 1, or remove samples in a phase that does not mix",
                    UserWarning,
                    stacklevel=caller_stacklevel(),
                )

    @property
    def phases(self) -> tuple[Phase, Phase]:
        """``(during, after)``, indexed by :attr:`PeriodTracker.phase_index`."""
        return (self.during, self.after)

    @property
    def soft_targets(self) -> bool:
        """Whether targets are soft in every epoch (some phase mixes or smooths)."""
        return self.during.soft_targets or self.after.soft_targets

    def signature(self) -> dict[str, Any]:
        """Plain values that identify the schedule in a checkpoint.

        Returns:
            ``{"period": [...], "during": {...}, "after": {...}}``: the period's five settings, and each phase's
            numbers and mode (not its augmentation), which a loaded state is compared with.
        """
        def _phase(p: Phase) -> dict[str, Any]:
            return {k: getattr(p, k) for k in (
                "mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob", "mode",
                "drop_high_loss", "label_smoothing", "augment_strength")}
        per = self.period
        return {
            "period": [per.epochs, per.fraction, per.total_epochs, per.until_accuracy, per.max_epochs],
            "during": _phase(self.during),
            "after": _phase(self.after),
        }


class PeriodTracker:
    """Decides, epoch by epoch, whether the period is in force.

    A fixed-length period is a pure function of the epoch. An accuracy period is
    a latch: once an epoch's training accuracy reaches ``until_accuracy`` (or epoch
    ``max_epochs - 1`` is over) the period has ended, and it never restarts: from then
    on no epoch lies in it, whatever its number (``set_epoch()`` going back included).

    Args:
        period: The period to track.

    Attributes:
        end_epoch: A fixed period's length. For an accuracy period ``None`` while it
            lasts, then the first epoch after the one that ended it, at most ``max_epochs``
            (an epoch past the cap, reached by ``set_epoch()``, ends it at the cap).

    Note:
        The latch is all the state (:meth:`state_dict`): it only changes when an epoch
        is observed, at the epoch's end, so a state taken during an epoch resumes that
        epoch in the phase it started in.
    """

    def __init__(self, period: Period) -> None:
        if not isinstance(period, Period):
            raise TypeError(f"period should be a Period, got period={period!r} of type {type(period).__name__}")
        self.period = period
        self.end_epoch: int | None = period.length
        self._warned_unscored = False

    @property
    def ended(self) -> bool:
        """Whether an accuracy period has ended (its latch is set); ``False`` for a fixed period."""
        return self.period.until_accuracy is not None and self.end_epoch is not None

    def in_period(self, epoch: int) -> bool:
        """Whether an epoch numbered ``epoch``, started now, lies inside the period.

        Note:
            Once an accuracy period has ended this is ``False`` for every epoch, the one
            that ended it included (the history records which epochs ran in the period).
        """
        if self.period.until_accuracy is None:
            return self.end_epoch is not None and epoch < self.end_epoch
        if self.end_epoch is not None:
            return False
        cap = self.period.max_epochs
        return cap is None or epoch < cap

    def phase_index(self, epoch: int) -> int:
        """0 during the period, 1 after it."""
        return 0 if self.in_period(epoch) else 1

    def observe(self, epoch: int, accuracy: float | None, *, trained: bool = True) -> None:
        """Take an epoch's training accuracy into account at the epoch's end (accuracy periods only).

        Args:
            epoch: The epoch that ended.
            accuracy: Its training accuracy, ``None`` when no prediction was scored.
            trained: Whether the epoch had any batch (one without says nothing about scoring).

        Warns:
            RuntimeWarning: Once, when an epoch in an accuracy period ended with no
                accuracy scored (the period could then only end at ``max_epochs``).
        """
        target = self.period.until_accuracy
        if target is None or self.end_epoch is not None:
            return
        cap = self.period.max_epochs
        if accuracy is None and trained and self.in_period(epoch) and not self._warned_unscored:
            self._warned_unscored = True
            ending = "never ends" if cap is None else f"only ends at max_epochs={cap}"
            warnings.warn(
                f"epoch {epoch}: no training accuracy was scored, so the enlightenment period "
                f"(until_accuracy={target}) cannot end on accuracy and {ending}; pass output= and target= "
                "to loader.record(), or compute the loss with loader.track(criterion); a regression loss gives no "
                "accuracy: end its period on epochs, ed.Period(epochs=...) (warned once)",
                RuntimeWarning,
                stacklevel=4,  # observe <- _finish_epoch <- the epoch's iterator <- the training loop
            )
        if self.reaches(accuracy) or (cap is not None and epoch + 1 >= cap):
            self.end_epoch = epoch + 1 if cap is None else min(epoch + 1, cap)

    def reaches(self, accuracy: float | None) -> bool:
        """Whether an epoch's training ``accuracy`` (``None``: none scored) reaches the period's ``until_accuracy``.

        Returns:
            ``False`` for a fixed period, or an epoch without accuracy.
        """
        target = self.period.until_accuracy
        # Compared at float32 precision: a sample's fraction right (sequences, segmentation) is staged in float32,
        # so 7 of 10 positions right everywhere gives 0.699999988, which must reach until_accuracy=0.7.
        return target is not None and accuracy is not None and bool(np.float32(accuracy) >= np.float32(target))

    def state_dict(self) -> dict[str, Any]:
        """The latch as a plain int (``-1`` while an accuracy period lasts)."""
        return {"end_epoch": -1 if self.end_epoch is None else int(self.end_epoch)}

    def load_state_dict(self, state: dict[str, Any], *, prefix: str = "state") -> None:
        """Restore a :meth:`state_dict`; nothing changes when the state is refused.

        Args:
            state: What :meth:`state_dict` returned.
            prefix: How error messages name ``state``, e.g. ``"state['tracker']"`` when it is nested
                in a loader's state.

        Raises:
            TypeError: If ``state`` is not a dict.
            ValueError: If ``end_epoch`` is missing, not an int, or impossible for this period:
                not the length of a fixed period, or outside ``-1`` / ``[1, max_epochs]`` for
                an accuracy period.
        """
        if not isinstance(state, dict) or "end_epoch" not in state:
            raise (ValueError if isinstance(state, dict) else TypeError)(
                f"{prefix} should be a dict with an int end_epoch (from PeriodTracker.state_dict()), "
                f"got {prefix}={state!r:.80}"
            )
        key = f"{prefix}['end_epoch']"
        end = state["end_epoch"]
        if isinstance(end, bool) or not isinstance(end, numbers.Integral):
            # A malformed field of a dict is a ValueError (TypeError is kept for a state that is not a dict).
            raise ValueError(f"{key} should be an int, got {key}={end!r:.80} of type {type(end).__name__}")
        end = int(end)
        if end < -1:
            raise ValueError(f"{key} should be >= -1, got {key}={end}")
        length, cap = self.period.length, self.period.max_epochs
        if length is not None:
            if end != length:
                raise ValueError(f"{key} should be {length} for a fixed period of {length} epochs, got end_epoch={end}")
        elif end == 0 or (cap is not None and end > cap):
            allowed = "-1 (not ended) or >= 1" if cap is None else f"-1 (not ended) or in [1, {cap}] (max_epochs={cap})"
            raise ValueError(f"{key} should be {allowed} for an accuracy period, got end_epoch={end}")
        self.end_epoch = None if end < 0 else end


def _period(period: int | Period) -> Period:
    """``period`` as a :class:`Period` (an int ``n`` is the first ``n`` epochs)."""
    if isinstance(period, Period):
        return period
    if isinstance(period, bool) or not isinstance(period, numbers.Integral):
        raise TypeError(
            f"period should be an int or a Period, got period={period!r} of type {type(period).__name__}"
        )
    return Period(epochs=check_int("period", period, minimum=0))


def mixup_pause(
    period: int | Period,
    *,
    alpha: float,
    cutmix_alpha: float = 0.0,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
    mode: Literal["elem", "batch"] = "elem",
    label_smoothing: float = 0.0,
) -> Schedule:
    """Mixup Pause: no Mixup (or CutMix) during the period, ``alpha`` after it.

    Args:
        period: An int (the first N epochs) or a :class:`Period`.
        alpha: Mixup's α after the period (>= 0).
        cutmix_alpha: CutMix's α after the period (>= 0).
        mix_prob: How the epochs after the period mix, as :class:`Phase` takes it.
        switch_prob: As :class:`Phase` takes it (with both alphas > 0).
        mode: As :class:`Phase` takes it (``"elem"``; timm's ``Mixup`` defaults to ``"batch"``).
        label_smoothing: Smoothing of the targets in both phases (a DeiT-style recipe smooths throughout).

    Returns:
        The :class:`Schedule`.

    Raises:
        TypeError: If ``period`` is neither an int nor a :class:`Period`, a number is not a real number, or ``mode``
            not a str.
        ValueError: If a value is out of range (a negative ``period``, an alpha neither 0 nor in ``[1e-6, 1e6]``, a
            probability outside ``[0, 1]``, ``label_smoothing`` outside ``[0, 1)``, another ``mode``).

    Warns:
        UserWarning: When both alphas are 0, or ``mix_prob`` is 0 (no phase mixes, there is nothing to pause).
    """
    per = _period(period)
    alpha = _check_alpha("alpha", alpha)
    cutmix_alpha = _check_alpha("cutmix_alpha", cutmix_alpha)
    schedule = Schedule(
        per,
        during=Phase(label_smoothing=label_smoothing),
        after=Phase(mixup_alpha=alpha, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, switch_prob=switch_prob,
                    mode=mode, label_smoothing=label_smoothing),
    )
    if alpha == 0 and cutmix_alpha == 0:
        warnings.warn(
            f"mixup_pause with alpha={alpha} and cutmix_alpha={cutmix_alpha} pauses nothing: no phase mixes; "
            "give alpha > 0 (Mixup) or cutmix_alpha > 0 (CutMix) for the epochs after the period",
            UserWarning,
            stacklevel=2,
        )
    elif mix_prob == 0:
        warnings.warn(
            "mixup_pause with mix_prob=0 pauses nothing: no sample is mixed in any phase; give mix_prob > 0",
            UserWarning,
            stacklevel=2,
        )
    return schedule


def alpha_boost(
    period: int | Period,
    *,
    alpha: float,
    boost_alpha: float,
    cutmix_alpha: float = 0.0,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
    mode: Literal["elem", "batch"] = "elem",
    label_smoothing: float = 0.0,
) -> Schedule:
    """Alpha Boost: Mixup with ``boost_alpha`` during the period, ``alpha`` after it.

    Args:
        period: An int (the first N epochs) or a :class:`Period`.
        alpha: Mixup's α after the period (>= 0).
        boost_alpha: Mixup's α during the period (>= 0).
        cutmix_alpha: CutMix's α in both phases (>= 0; the paper boosts Mixup's α only).
        mix_prob: How both phases mix, as :class:`Phase` takes it.
        switch_prob: As :class:`Phase` takes it (with CutMix too).
        mode: As :class:`Phase` takes it (``"elem"``; timm's ``Mixup`` defaults to ``"batch"``).
        label_smoothing: Smoothing of the targets in both phases.

    Returns:
        The :class:`Schedule`.

    Raises:
        TypeError: If ``period`` is neither an int nor a :class:`Period`, a number is not a real number, or ``mode``
            not a str.
        ValueError: If a value is out of range (a negative ``period``, an alpha neither 0 nor in ``[1e-6, 1e6]``, a
            probability outside ``[0, 1]``, ``label_smoothing`` outside ``[0, 1)``, another ``mode``).

    Warns:
        UserWarning: When nothing is boosted (``boost_alpha`` equals ``alpha``, ``mix_prob`` is 0, or CutMix takes
            every batch: ``switch_prob=1`` with ``cutmix_alpha > 0``), or ``boost_alpha`` is below ``alpha`` (the
            period then mixes less than the rest of the run, which is not Alpha Boost; swapped arguments are the
            usual cause).
    """
    per = _period(period)
    alpha = _check_alpha("alpha", alpha)
    boost_alpha = _check_alpha("boost_alpha", boost_alpha)
    during, after = (
        Phase(mixup_alpha=a, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, switch_prob=switch_prob, mode=mode,
              label_smoothing=label_smoothing)
        for a in (boost_alpha, alpha)
    )
    schedule = Schedule(per, during=during, after=after)
    if mix_prob == 0:
        warnings.warn(
            "alpha_boost with mix_prob=0 boosts nothing: no sample is mixed in any phase; give mix_prob > 0",
            UserWarning,
            stacklevel=2,
        )
    elif cutmix_alpha > 0 and switch_prob == 1:
        warnings.warn(
            f"alpha_boost with cutmix_alpha={cutmix_alpha} and switch_prob=1 boosts nothing: every batch uses CutMix, "
            "so Mixup's boost_alpha is never drawn; give switch_prob < 1",
            UserWarning,
            stacklevel=2,
        )
    elif boost_alpha == alpha:
        warnings.warn(
            f"alpha_boost with boost_alpha={boost_alpha} equal to alpha={alpha} boosts nothing: the same Mixup "
            "runs in every epoch; give a boost_alpha different from alpha",
            UserWarning,
            stacklevel=2,
        )
    elif boost_alpha < alpha:
        warnings.warn(
            f"alpha_boost with boost_alpha={boost_alpha} below alpha={alpha} mixes less during the period than after "
            "it, the opposite of Alpha Boost (boost_alpha is the period's larger alpha; were the two swapped?)",
            UserWarning,
            stacklevel=2,
        )
    return schedule


def high_loss_removal(period: int | Period, *, fraction: float) -> Schedule:
    """High-Loss Removal: leave out the ``fraction`` of highest-loss samples during the period.

    Args:
        period: An int (the first N epochs) or a :class:`Period`.
        fraction: The fraction of samples with a recorded loss left out, in [0, 1).

    Returns:
        The :class:`Schedule`.

    Raises:
        TypeError: If ``period`` is neither an int nor a :class:`Period`, or a number is not a real number.
        ValueError: If a value is out of range (a negative ``period``, a ``fraction`` outside [0, 1)).

    Warns:
        UserWarning: When nothing would be removed: ``fraction=0``, or a period of zero
            or one epoch (or an accuracy period with ``max_epochs=1``).

    Note:
        Removal ranks the losses recorded so far, and epoch 0 has none: it trains on
        every sample, and removal starts at epoch 1. A period of zero or one epoch removes
        nothing (a warning says so).
    """
    per = _period(period)
    fraction = check_range("fraction", fraction, 0.0, 1.0, high_open=True)  # type: ignore[assignment]
    schedule = Schedule(per, during=Phase(drop_high_loss=fraction), after=Phase())
    if fraction == 0:
        warnings.warn(
            f"high_loss_removal with fraction={fraction} removes nothing: every sample is trained on in "
            "every epoch; use a fraction in (0, 1)",
            UserWarning,
            stacklevel=2,
        )
    elif per.length == 0:
        warnings.warn(
            "high_loss_removal with a 0-epoch period removes nothing: no epoch lies in the period; "
            "use a period of at least 2 epochs",
            UserWarning,
            stacklevel=2,
        )
    elif per.length == 1 or (per.length is None and per.max_epochs == 1):
        form = "a 1-epoch period" if per.length == 1 else "a period of at most 1 epoch (max_epochs=1)"
        warnings.warn(
            f"high_loss_removal with {form} removes nothing: epoch 0 has no recorded losses "
            "to rank; use a period of at least 2 epochs",
            UserWarning,
            stacklevel=2,
        )
    return schedule
