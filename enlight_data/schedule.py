"""What the enlightenment period is and what each phase does.

The paper (arXiv 2504.01737) calls the start of training the *enlightenment
period*: v1 takes the first ~4% of epochs, v2 lasts until training accuracy
reaches about 50%. A :class:`Schedule` pairs a :class:`Period` with the
:class:`Phase` used during it and the one used after it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Literal

from ._validate import check_int, check_range, check_real

__all__ = [
    "Period",
    "PeriodTracker",
    "Phase",
    "Schedule",
    "alpha_boost",
    "high_loss_removal",
    "mixup_pause",
]


@dataclass(frozen=True, kw_only=True)
class Period:
    """How long the enlightenment period lasts. Give exactly one of the three forms.

    Args:
        epochs: The first ``epochs`` epochs (``0`` means no period at all).
        fraction: With ``total_epochs``: the first
            ``max(1, floor(fraction * total_epochs + 0.5))`` epochs (half rounds up,
            so 0.04 of 500 is 20).
        total_epochs: The length of the whole run, only with ``fraction``.
        until_accuracy: The period lasts until an epoch's training accuracy
            reaches this value (in (0, 1]); it ends after that epoch and never restarts.
        max_epochs: With ``until_accuracy`` only: the period ends after this many
            epochs at the latest.

    Note:
        Epochs count from 0: ``Period(epochs=10)`` covers epochs 0..9.
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
        check_int("epochs", self.epochs, minimum=0, allow_none=True)
        check_int("total_epochs", self.total_epochs, minimum=1, allow_none=True)
        check_int("max_epochs", self.max_epochs, minimum=1, allow_none=True)
        if self.fraction is not None:
            check_range("fraction", self.fraction, 0.0, 1.0, low_open=True)
            if self.total_epochs is None:
                raise ValueError("Period(fraction=...) needs total_epochs, got total_epochs=None")
        elif self.total_epochs is not None:
            raise ValueError(
                f"total_epochs is only used with fraction, got total_epochs={self.total_epochs} without fraction"
            )
        if self.until_accuracy is not None:
            check_range("until_accuracy", self.until_accuracy, 0.0, 1.0, low_open=True)
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
        label_smoothing: Label smoothing in [0, 1) applied to the soft targets.
        augment_strength: Scales the batch augmentation's magnitudes and
            probabilities, in [0, 1] (1 = as configured).
        augment: An augmentation used in this phase instead of the loader's
            ``augment=`` (a Kornia module, ``GpuAugment`` or a callable).

    Note:
        Mixing pairs sample ``i`` with sample ``(i + B // 2) % B`` of the batch
        (the batch rolled by half), which needs no copy of the batch.
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
            if check_real(name, getattr(self, name)) < 0:  # type: ignore[operator]
                raise ValueError(f"{name} should be >= 0, got {name}={getattr(self, name)!r}")
        check_range("mix_prob", self.mix_prob, 0.0, 1.0)
        check_range("switch_prob", self.switch_prob, 0.0, 1.0)
        check_range("drop_high_loss", self.drop_high_loss, 0.0, 1.0, high_open=True)
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        check_range("augment_strength", self.augment_strength, 0.0, 1.0)
        if self.mode not in ("elem", "batch"):
            raise ValueError(f"mode should be 'elem' or 'batch', got mode={self.mode!r}")
        if self.augment is not None and not callable(self.augment):
            raise TypeError(f"augment should be callable or None, got augment={self.augment!r}")

    @property
    def mixes(self) -> bool:
        """Whether this phase mixes samples at all."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    @property
    def soft_targets(self) -> bool:
        """Whether this phase needs soft ``(B, num_classes)`` targets."""
        return self.mixes or self.label_smoothing > 0


@dataclass(frozen=True)
class Schedule:
    """A :class:`Period` with the :class:`Phase` used during it and after it.

    Args:
        period: An int (the first N epochs) or a :class:`Period`.
        during: The phase in force during the enlightenment period.
        after: The phase in force after it.
    """

    period: Period
    during: Phase = field(default_factory=Phase)
    after: Phase = field(default_factory=Phase)

    def __post_init__(self) -> None:
        if isinstance(self.period, bool) or not isinstance(self.period, (int, Period)):
            raise TypeError(f"period should be an int or a Period, got period={self.period!r}")
        if isinstance(self.period, int):
            object.__setattr__(self, "period", Period(epochs=self.period))
        for name in ("during", "after"):
            if not isinstance(getattr(self, name), Phase):
                raise TypeError(f"{name} should be a Phase, got {name}={getattr(self, name)!r}")

    @property
    def phases(self) -> tuple[Phase, Phase]:
        """``(during, after)``, indexed by :attr:`PeriodTracker.phase_index`."""
        return (self.during, self.after)

    @property
    def soft_targets(self) -> bool:
        """Whether targets are soft in every epoch (some phase mixes or smooths)."""
        return self.during.soft_targets or self.after.soft_targets

    def signature(self) -> dict[str, Any]:
        """Plain values that identify the schedule in a checkpoint."""
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
    a latch: once an epoch's training accuracy reaches ``until_accuracy`` the
    period ends after that epoch and never restarts.
    """

    def __init__(self, period: Period) -> None:
        self.period = period
        self.end_epoch: int | None = period.length

    def in_period(self, epoch: int) -> bool:
        """Whether ``epoch`` lies inside the period."""
        if self.end_epoch is not None:
            return epoch < self.end_epoch
        cap = self.period.max_epochs
        return cap is None or epoch < cap

    def phase_index(self, epoch: int) -> int:
        """0 during the period, 1 after it."""
        return 0 if self.in_period(epoch) else 1

    def observe(self, epoch: int, accuracy: float | None) -> None:
        """Take an epoch's training accuracy into account (accuracy periods only)."""
        target = self.period.until_accuracy
        if target is None or self.end_epoch is not None or accuracy is None:
            return
        if self.in_period(epoch) and accuracy >= target:
            self.end_epoch = epoch + 1

    def state_dict(self) -> dict[str, Any]:
        return {"end_epoch": -1 if self.end_epoch is None else self.end_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        end = int(state["end_epoch"])
        self.end_epoch = None if end < 0 else end


def _period(period: int | Period) -> Period:
    if isinstance(period, bool) or not isinstance(period, (int, Period)):
        raise TypeError(f"period should be an int or a Period, got period={period!r}")
    return Period(epochs=period) if isinstance(period, int) else period


def mixup_pause(period: int | Period, *, alpha: float, cutmix_alpha: float = 0.0) -> Schedule:
    """Mixup Pause: no Mixup (or CutMix) during the period, ``alpha`` after it."""
    return Schedule(_period(period), during=Phase(), after=Phase(mixup_alpha=alpha, cutmix_alpha=cutmix_alpha))


def alpha_boost(period: int | Period, *, alpha: float, boost_alpha: float) -> Schedule:
    """Alpha Boost: Mixup with ``boost_alpha`` during the period, ``alpha`` after it."""
    return Schedule(_period(period), during=Phase(mixup_alpha=boost_alpha), after=Phase(mixup_alpha=alpha))


def high_loss_removal(period: int | Period, *, fraction: float) -> Schedule:
    """High-Loss Removal: leave out the ``fraction`` of highest-loss samples during the period.

    Note:
        Removal ranks the losses recorded so far, and epoch 0 has none: it trains on
        every sample, and removal starts at epoch 1. A one-epoch period removes
        nothing (a warning says so).
    """
    schedule = Schedule(_period(period), during=Phase(drop_high_loss=fraction), after=Phase())
    if schedule.period.length == 1 and fraction > 0:
        warnings.warn(
            "high_loss_removal with a 1-epoch period removes nothing: epoch 0 has no recorded losses "
            "to rank; use a period of at least 2 epochs",
            UserWarning,
            stacklevel=2,
        )
    return schedule
