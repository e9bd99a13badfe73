"""``track(criterion)``: a drop-in loss that also feeds the per-sample loss table."""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, Protocol

from torch import Tensor, nn

__all__ = ["Recorder", "TrackedLoss"]


class Recorder(Protocol):
    """What :class:`TrackedLoss` reports to (the loader)."""

    def record(self, per_sample_loss: Tensor, *, output: Tensor | None = None, target: Tensor | None = None) -> None:
        ...


def _accepts_reduction(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "reduction" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class TrackedLoss(nn.Module):
    """Wraps a criterion: returns its usual reduced loss and records per-sample losses.

    Works with ``nn.CrossEntropyLoss`` (hard or soft targets), ``nn.BCEWithLogitsLoss``,
    any loss module with a ``reduction`` attribute, ``F.cross_entropy`` and any callable
    accepting ``reduction="none"``. Per-sample losses with extra dimensions (e.g. BCE's
    ``(B, C)``) are averaged over them.

    Args:
        criterion: The loss.
        recorder: The loader that owns the current batch.

    Raises:
        TypeError: If the criterion cannot produce unreduced losses; use
            ``loader.record(per_sample_loss, output=..., target=...)`` then.
    """

    def __init__(self, criterion: Callable[..., Tensor], recorder: Recorder) -> None:
        super().__init__()
        if isinstance(criterion, nn.Module) and hasattr(criterion, "reduction"):
            unreduced = copy.copy(criterion)
            unreduced.reduction = "none"
            self.reduction = str(criterion.reduction)
            self._unreduced: Callable[[Tensor, Tensor], Tensor] = unreduced
        elif not isinstance(criterion, nn.Module) and callable(criterion) and _accepts_reduction(criterion):
            self.reduction = "mean"
            self._unreduced = lambda output, target: criterion(output, target, reduction="none")
        else:
            raise TypeError(
                "track() needs a criterion that can return per-sample losses (a loss module with a "
                "`reduction` attribute, or a callable accepting reduction='none'), got "
                f"criterion={criterion!r}; compute per-sample losses yourself and call "
                "loader.record(per_sample_loss, output=output, target=target)"
            )
        self.criterion = criterion
        self._recorder = recorder

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        per_element = self._unreduced(output, target)
        if not isinstance(per_element, Tensor) or per_element.dim() == 0:
            raise TypeError(
                f"the criterion with reduction='none' should return per-sample losses of shape (B, ...), "
                f"got {per_element!r:.80}"
            )
        per_sample = per_element.detach()
        if per_sample.dim() > 1:
            per_sample = per_sample.flatten(1).mean(1)
        self._recorder.record(per_sample, output=output.detach(), target=target)
        if self.reduction == "none":
            return per_element
        if self.reduction == "sum":
            return per_element.sum()
        weighted = getattr(self.criterion, "weight", None) is not None
        ignoring = getattr(self.criterion, "ignore_index", -100) >= 0 and not target.is_floating_point()
        if weighted and not target.is_floating_point() or ignoring:
            # Weighted or ignore_index means: the criterion's own normalisation.
            return self.criterion(output, target)
        return per_element.mean()
