"""``track(criterion)``: a drop-in loss that also feeds the per-sample loss table."""

from __future__ import annotations

import copy
import functools
import inspect
import warnings
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._stack import caller_stacklevel
from ._validate import check_bool, comparable

__all__ = ["Recorder", "TrackedLoss", "check_criterion"]


class Recorder(Protocol):
    """What :class:`TrackedLoss` reports to (the loader). A tracked loss called with ``rows=`` passes them on, so
    a recorder of one's own takes ``rows`` too if its loop records batches in chunks."""

    def record(
        self,
        per_sample_loss: Tensor,
        *,
        output: Tensor | None = None,
        target: Tensor | None = None,
        ignore_index: int | None = None,
        threshold: float = 0.0,
        multi_label: bool = False,
    ) -> None:
        ...


# NOTE [ Reducing the unreduced loss ]
# A tracked criterion runs once, with reduction="none", and reduces the result itself, so tracking costs no second
# loss evaluation. That is only right where we know how the criterion reduces:
# - "none" and "sum" are the elementwise losses and their sum for every PyTorch loss;
# - "batchmean" (KLDivLoss) is the sum over the batch size;
# - "mean" of cross entropy and NLL with class-index targets divides by the summed class weights of the targets that
#   are not ``ignore_index`` (their count without weights; the default ignore_index, -100, included), and by the
#   element count with probability targets;
# - "mean" of the elementwise losses below is the mean over all elements (their ``weight`` rescales elements).
# The value is the criterion's up to float rounding (the reduction of the unreduced losses sums them in another order
# than the criterion's own kernel: a few units in the last place, e.g. 2.46951246 against 2.46951222).
# Any other criterion (an unknown module or callable, or a reduction we do not know) is evaluated a second time for
# the value it returns, which is then exactly its own; so is one called with arguments of its own (a weight=).

# torch's losses' default ignore_index, taken for a criterion whose own cannot be read.
_TORCH_IGNORE_INDEX = -100
_CLASS_WEIGHTED = (nn.CrossEntropyLoss, nn.NLLLoss)
_CLASS_WEIGHTED_FNS = (F.cross_entropy, F.nll_loss)
_ELEMENTWISE = (nn.BCEWithLogitsLoss, nn.BCELoss, nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.KLDivLoss)
# Regression losses: their output and target are no class scores, so they give no training accuracy.
_REGRESSION = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.GaussianNLLLoss, nn.PoissonNLLLoss)
_REGRESSION_FNS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.gaussian_nll_loss, F.poisson_nll_loss)
_ELEMENTWISE_FNS = (
    F.binary_cross_entropy_with_logits, F.binary_cross_entropy, F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss,
    F.kl_div,
)
# BCELoss's scores are probabilities: a single score predicts the positive class above 0.5, not above 0.
# Losses that take class indices only: soft target rows (a schedule that mixes or smooths) cannot reach them.
_INDEX_ONLY = (nn.NLLLoss, nn.MultiMarginLoss, nn.MultiLabelMarginLoss)
_INDEX_ONLY_FNS = (F.nll_loss, F.multi_margin_loss, F.multilabel_margin_loss)


def check_criterion(criterion: Callable[..., Any], *, soft_targets: bool, label_smoothing: float) -> None:
    """Check that ``criterion`` suits the targets the schedule hands out.

    Args:
        criterion: The loss to be tracked.
        soft_targets: Whether the schedule makes targets soft rows (it mixes or smooths labels in some phase).
        label_smoothing: The largest ``label_smoothing`` of the schedule's phases.

    Raises:
        TypeError: If the criterion takes class indices only while targets are soft rows.

    Warns:
        UserWarning: If the criterion smooths labels itself while the schedule smooths them too: smoothed twice.
    """
    base = getattr(criterion, "_orig_mod", criterion)  # a torch.compile'd module
    fn = criterion.func if isinstance(criterion, functools.partial) else criterion
    fn = getattr(fn, "_torchdynamo_orig_callable", fn)  # a torch.compile'd function (a copy: known by its name)
    name = type(base).__name__ if isinstance(base, nn.Module) else getattr(fn, "__name__", repr(fn))
    # A subclass that keeps the class-index loss's own forward takes class indices only too.
    index_only = _is_one_of(criterion, _INDEX_ONLY, _INDEX_ONLY_FNS)
    if soft_targets and index_only:
        raise TypeError(
            f"criterion should take soft target rows (B, num_classes), since the schedule mixes or smooths labels, "
            f"got criterion={name}, which takes class indices only; use nn.CrossEntropyLoss on the logits (it takes "
            "soft rows), or compute per-sample losses yourself and call loader.record(per_sample_loss, ...)"
        )
    if isinstance(criterion, functools.partial):
        own = criterion.keywords.get("label_smoothing", 0.0)
    else:
        own = getattr(base, "label_smoothing", 0.0)
    if label_smoothing > 0 and isinstance(own, (int, float)) and own > 0:
        warnings.warn(
            f"the schedule smooths labels (label_smoothing={label_smoothing}) and so does the criterion "
            f"({name}, label_smoothing={own}): the targets are smoothed twice; set one of them to 0",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )


def _accepts_reduction(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "reduction" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _is_one_of(
    criterion: Callable[..., Any], classes: tuple[type[nn.Module], ...], fns: tuple[Callable[..., Any], ...]
) -> bool:
    """Whether ``criterion`` is one of torch's losses ``classes`` (a subclass that keeps the loss's own ``forward``
    included) or ``fns`` (a ``functools.partial`` of one, or a ``torch.compile``'d copy, known by its name)."""
    base = getattr(criterion, "_orig_mod", criterion)  # a torch.compile'd module
    fn = criterion.func if isinstance(criterion, functools.partial) else criterion
    fn = getattr(fn, "_torchdynamo_orig_callable", fn)  # a torch.compile'd function (a copy: known by its name)
    return any(isinstance(base, c) and type(base).forward is c.forward for c in classes) or any(
        (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)) == (f.__module__, f.__qualname__)
        for f in fns)


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of a loss function, a ``functools.partial``'s keywords included."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}


class TrackedLoss(nn.Module):
    """Wraps a criterion: returns its usual reduced loss and records per-sample losses.

    Works with ``nn.CrossEntropyLoss`` (hard or soft targets), ``nn.BCEWithLogitsLoss``,
    any loss module with a ``reduction`` attribute, ``F.cross_entropy`` and any callable
    accepting ``reduction="none"``. The returned loss equals the criterion's own (same
    reduction; the same value up to float rounding, as the sum is taken in another order: see
    NOTE [ Reducing the unreduced loss ]). Per-sample losses with
    extra dimensions (e.g. BCE's ``(B, C)`` or a sequence's ``(B, T)``) are averaged over
    them; with class-index targets, over the positions that are not ``ignore_index``. The output
    and target also give the training accuracy, except for regression losses (MSE, L1,
    smooth L1, Huber, Gaussian and Poisson NLL): the argmax over classes (top-1, also for binary cross entropy on one-hot
    or mixed rows), a single score's sign (``> 0.5`` for ``nn.BCELoss``'s probabilities), or with
    ``multi_label`` each class's own verdict (a sample's accuracy is the fraction of its labels right).

    Args:
        criterion: The loss.
        recorder: The loader that owns the current batch.
        multi_label: The targets are multi-hot rows, one independent label per class (binary cross
            entropy over several labels): score each label on its own instead of the argmax.

    Raises:
        TypeError: If the criterion cannot produce unreduced losses (use
            ``loader.record(per_sample_loss, output=..., target=...)`` then), or ``recorder`` has no ``record()``.
    """

    # Kept in ``__dict__``, out of the module tree (see ``__init__``).
    _module: nn.Module | None
    _copy: nn.Module

    def __init__(self, criterion: Callable[..., Tensor], recorder: Recorder, *, multi_label: bool = False) -> None:
        super().__init__()
        if not callable(getattr(recorder, "record", None)):
            raise TypeError(
                f"recorder should have a record() method (an EnlightLoader), got recorder of type "
                f"{type(recorder).__name__}"
            )
        if isinstance(criterion, type):  # called on a batch, nn.CrossEntropyLoss would make a module, not a loss
            raise TypeError(f"criterion should be a loss (an instance or a function), got the class "
                            f"{criterion.__name__}: pass {criterion.__name__}()")
        self._multi_label = check_bool("multi_label", multi_label)
        # A torch.compile'd module: its settings live on the module it wraps (a copy of the wrapper would share it).
        base = getattr(criterion, "_orig_mod", criterion)
        # Kept out of the module tree (``self.criterion`` is in it): no second copy in state_dict(), and the copy
        # shares the criterion's buffers anyway.
        self.__dict__["_module"] = None
        self._unreduced: Callable[..., Tensor] | None = None
        if isinstance(base, nn.Module) and hasattr(base, "reduction"):
            self.__dict__["_module"] = base
            self.__dict__["_copy"] = copy.copy(base)
            # Exact types only: a subclass may override forward (a focal loss, say) and reduce its own way.
            self._known = type(base) in _CLASS_WEIGHTED + _ELEMENTWISE
            self._class_weighted = type(base) in _CLASS_WEIGHTED
            self._scores = not isinstance(base, _REGRESSION)
            self._probabilities = isinstance(base, nn.BCELoss)
            self._settings: dict[str, Any] = {}
        elif callable(criterion) and _accepts_reduction(
            # A module's signature is Module.__call__(*args, **kwargs) (a compiled one's forward too): what the
            # forward of the module it wraps accepts is what counts.
            base.forward if isinstance(base, nn.Module) else criterion
        ):
            self._settings = _defaults(criterion)
            fn = criterion.func if isinstance(criterion, functools.partial) else criterion
            self._unreduced = lambda output, target, *args, **kwargs: criterion(
                output, target, *args, reduction="none", **kwargs)
            self._known = not isinstance(criterion, nn.Module) and fn in _CLASS_WEIGHTED_FNS + _ELEMENTWISE_FNS
            self._class_weighted = self._known and fn in _CLASS_WEIGHTED_FNS
            self._scores = fn not in _REGRESSION_FNS
            self._probabilities = fn is F.binary_cross_entropy
        else:
            raise TypeError(
                "track() needs a criterion that can return per-sample losses (a loss module with a "
                "`reduction` attribute, or a callable or module accepting reduction='none'), got "
                f"criterion={criterion!r}; compute per-sample losses yourself and call "
                "loader.record(per_sample_loss, output=output, target=target)"
            )
        self.criterion = criterion
        self._recorder = recorder
        self._warned_square = False
        # Classes along dim 1 for certain: torch's class-index losses, their subclasses that keep their forward, and
        # the functions (compiled ones are known by name), as check_criterion tells them.
        self._classes_first = self._known or _is_one_of(criterion, _CLASS_WEIGHTED, _CLASS_WEIGHTED_FNS)

    def _call_arguments(self, output: Tensor, target: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
                        ) -> dict[str, Any]:
        """This call's own arguments by name: its keywords, and for a function its positional ones too."""
        if not args or self._unreduced is None:
            return kwargs
        try:
            return dict(inspect.signature(self.criterion).bind_partial(output, target, *args, **kwargs).arguments)
        except (TypeError, ValueError):
            return kwargs

    @property
    def scores(self) -> bool:
        """Whether the criterion's output and target give a training accuracy (not a regression loss's)."""
        return self._scores

    @property
    def name(self) -> str:
        """The criterion's name, for messages: its class's, or its function's."""
        base = getattr(self.criterion, "_orig_mod", self.criterion)
        if isinstance(base, nn.Module):
            return type(base).__name__
        fn = base.func if isinstance(base, functools.partial) else base
        return str(getattr(fn, "__name__", type(fn).__name__))

    def _setting(self, name: str) -> Any:
        """The criterion's ``reduction``, ``weight`` or ``ignore_index`` as it is now (a module's may change)."""
        if self._module is not None:
            return getattr(self._module, name, None)
        return self._settings.get(name)

    @property
    def reduction(self) -> str:
        """The criterion's reduction (``"?"`` for a callable whose default is not known: one taking ``**kwargs``).

        A criterion of unknown reduction is evaluated once more for the loss it returns, which is then its own.
        """
        value = self._setting("reduction")
        return value if isinstance(value, str) else "?"

    def _module_unreduced(self, output: Tensor, target: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        unreduced, module = self._copy, self._module
        assert module is not None  # only called for a module criterion
        unreduced.__dict__.update(module.__dict__)  # the criterion's settings as they are now
        setattr(unreduced, "reduction", "none")  # noqa: B010 (nn.Module's attribute type is Tensor | Module)
        return unreduced(output, target, *args, **kwargs)

    def forward(  # noqa: A002 (``input`` as torch's losses name it)
        self, input: Tensor, target: Tensor, *args: Any, rows: slice | None = None, **kwargs: Any
    ) -> Tensor:
        """The criterion's own loss of the batch; the per-sample losses (and accuracy) go to the recorder.

        Args:
            input: The model output.
            target: The batch's targets, as the criterion takes them.
            *args: Further arguments of the criterion (``var`` of ``nn.GaussianNLLLoss``), passed on.
            rows: For a batch split into chunks (gradient accumulation): the rows of the batch this chunk
                holds, e.g. ``slice(32, 64)`` (see ``EnlightLoader.record``). ``None``: the whole batch.
            **kwargs: Further keyword arguments of the criterion, passed on.

        Returns:
            The criterion's value, reduced as the criterion reduces.

        Raises:
            TypeError: If the criterion with ``reduction="none"`` does not give per-sample losses.
            RuntimeError: If the recorder has no current batch (outside the loop over the loader).
        """
        # (A bound method kept as an attribute would make a reference cycle through the loader and its workers.)
        # ``input`` as in torch's losses, so a call by keywords (``criterion(input=x, target=y)``) works too.
        output = input
        unreduced = self._unreduced
        # A function's own reduction= in this call (a module takes none: the call fails as the module's would).
        reduction = kwargs.pop("reduction", None) if unreduced is not None else None
        per_element = (self._module_unreduced(output, target, *args, **kwargs) if unreduced is None
                       else unreduced(output, target, *args, **kwargs))
        if not isinstance(per_element, Tensor) or per_element.dim() == 0:
            raise TypeError(
                f"the criterion with reduction='none' should return per-sample losses of shape (B, ...), "
                f"got {per_element!r:.80}"
            )
        # This call's own ignore_index (F.cross_entropy(..., ignore_index=0), or by position) before the criterion's.
        called = self._call_arguments(output, target, args, kwargs)
        ignore_index = called["ignore_index"] if "ignore_index" in called else self._setting("ignore_index")
        if ignore_index is None and not self._known:
            # A criterion whose ignore_index we cannot read (a function of one's own): torch's default, -100, which
            # no class index can be, so a padded position's loss does not count in its sample's mean.
            ignore_index = _TORCH_IGNORE_INDEX
        indexed = not target.is_floating_point() and isinstance(ignore_index, int) and not isinstance(
            ignore_index, bool
        )
        valid = comparable(target) != ignore_index if indexed and per_element.shape == target.shape else None
        per_sample = per_element.detach()  # means in float32 (bf16 would tie samples at the cut); float64 kept
        per_sample = per_sample if per_sample.dtype == torch.float64 else per_sample.float()
        if per_sample.dim() > 1:
            if valid is None:
                per_sample = per_sample.flatten(1).mean(1)
            else:  # the mean over each sample's counted positions (0 for a sample with none: the loader skips it)
                per_sample = per_sample.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)
        # Only what differs from record()'s defaults: a recorder of one's own may not take these.
        extra: dict[str, Any] = {"ignore_index": ignore_index} if indexed else {}
        rows_given: dict[str, Any] = {} if rows is None else {"rows": rows}
        if self._multi_label:
            extra["multi_label"] = True
        if self._probabilities:
            extra["threshold"] = 0.5
        if self.scores:
            scored = output.detach()
            last = not self._classes_first and scored.dim() > 2 and tuple(scored.shape[:-1]) == tuple(target.shape)
            first = (scored.shape[0], *scored.shape[2:]) == tuple(target.shape)
            if last and not first:
                # A loss of one's own that takes classes last, (B, T, C) logits against (B, T) labels: the only
                # reading of these shapes; accuracy takes classes along dim 1.
                scored = scored.movedim(-1, 1)
            elif last and not self._warned_square:
                self._warned_square = True
                warnings.warn(
                    f"the output of shape {tuple(scored.shape)} against targets of shape {tuple(target.shape)} may "
                    "hold the classes along dim 1 or along the last dim; the training accuracy takes them along "
                    "dim 1. For classes last, give the criterion the output as output.movedim(-1, 1), or record "
                    "the losses with loader.record(..., output=output.movedim(-1, 1)) (warned once)",
                    UserWarning,
                    stacklevel=caller_stacklevel(),
                )
            self._recorder.record(per_sample, output=scored, target=target, **extra, **rows_given)
        else:
            self._recorder.record(per_sample, **rows_given)
        if reduction is not None:
            kwargs["reduction"] = reduction
        return self._reduce(per_element, output, target, valid, ignore_index if indexed else None, args, kwargs)

    def _reduce(
        self,
        per_element: Tensor,
        output: Tensor,
        target: Tensor,
        valid: Tensor | None,
        ignore_index: int | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Tensor:
        """The criterion's own reduction of ``per_element``; see NOTE [ Reducing the unreduced loss ]."""
        reduction = kwargs.get("reduction", self.reduction)
        if reduction == "none":
            return per_element
        if reduction == "sum":
            return per_element.sum()
        if reduction == "batchmean":
            return per_element.sum() / output.shape[0]
        if reduction != "mean" or not self._known or args or kwargs:
            # Arguments of this call (a weight=, say) may change the mean: the criterion's own value.
            return self.criterion(output, target, *args, **kwargs)
        if not self._class_weighted or target.is_floating_point():
            return per_element.mean()
        if valid is None:
            valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
        weight = self._setting("weight")
        if not isinstance(weight, Tensor):
            return per_element.sum() / valid.sum()
        counted = weight[target.where(valid, 0).long()] * valid
        return per_element.sum() / counted.sum()
