"""Argument checks with uniform messages: what was expected and what came."""

from __future__ import annotations

import math
import numbers
from typing import Any, cast

import numpy as np
import torch

__all__ = [
    "channels_last_hint", "check_augment", "check_bool", "check_choice", "check_device", "check_int", "check_no_grad",
    "check_pixel_edges", "check_range", "check_real", "check_seed", "comparable",
]

# Unsigned integers wider than 8 bits: numpy's uint16/uint32/uint64 labels collate to them, and torch has few ops for
# them (no aminmax, no < or >=).
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def comparable(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor that range checks can compare: int64 for uint16/uint32/uint64 (a copy), else ``t`` itself."""
    return t.long() if t.dtype in _WIDE_UNSIGNED else t


def check_choice(name: str, value: Any, choices: tuple[str, ...], *, other: str = "") -> str:
    """Check that ``value`` is one of the strings ``choices``: ``TypeError`` for a non-string, else ``ValueError``.

    ``other`` names what else the caller accepts (``" or a callable"``), for the message only.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"{name} should be one of {choices}{other}, got {name}={value!r} of type {type(value).__name__}"
        )
    if value not in choices:
        raise ValueError(f"{name} should be one of {choices}{other}, got {name}={value!r}")
    return value


def check_augment(name: str, value: Any) -> None:
    """Check that ``value`` is None or a callable augmentation object (not its class, as ``K.RandomHorizontalFlip``
    without parentheses would be: called on a batch, it makes a module instead of augmenting)."""
    if value is None:
        return
    if isinstance(value, type):
        raise TypeError(f"{name} should be an augmentation (an instance) or None, got the class {value.__name__}: "
                        f"pass {value.__name__}(...)")
    if not callable(value):
        raise TypeError(f"{name} should be callable or None, got {name}={value!r}")


def check_pixel_edges(name: str, boxes: torch.Tensor) -> None:
    """Check that ``(n, 4)`` boxes hold whole, finite pixel edges, where that is free: on the CPU (on a GPU the look
    would synchronise). The kernels read an edge as an int, the PyTorch ops compare pixel indices with it: a
    fractional or NaN edge would crop or paste different pixels on each path."""
    if boxes.device.type != "cpu" or not boxes.numel():
        return
    whole = torch.isfinite(boxes) & (boxes == boxes.floor())
    if not bool(whole.all()):
        bad = ~whole.all(1)
        raise ValueError(
            f"{name} should hold whole pixel edges (finite, integer-valued), got {boxes[bad][:2].tolist()} at rows "
            f"{bad.nonzero().flatten()[:5].tolist()}"
        )


def check_device(name: str, value: Any) -> torch.device:
    """Check that ``value`` is a ``torch.device`` or a string naming one; return it as a ``torch.device``."""
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name} should be a str or torch.device, got {name}={value!r} of type {type(value).__name__}")
    try:
        return torch.device(value)
    except RuntimeError as exc:
        raise ValueError(f"{name} should name a torch device such as 'cuda:0', got {name}={value!r}") from exc


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None, allow_none: bool = False
) -> int | None:
    """Check that ``value`` is an int (not a bool), at least ``minimum`` and at most ``maximum``."""
    if type(value) is not int:  # the ABC checks cost a microsecond or so, on every step for some callers
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} should be an int, got {name}={value!r} of type {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} should be >= {minimum}, got {name}={value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} should be <= {maximum}, got {name}={value!r}")
    return int(value)


def check_seed(name: str, value: Any) -> int:
    """Check that ``value`` is an int in ``[0, 2**64)``: the seeds a ``torch.Generator`` takes, none aliasing another."""
    seed = cast(int, check_int(name, value))
    if not 0 <= seed < 2**64:
        raise ValueError(f"{name} should be in [0, 2**64), got {name}={seed}")
    return seed


def check_real(
    name: str, value: Any, *, minimum: float | None = None, allow_none: bool = False
) -> float | None:
    """Check that ``value`` is a finite real number (not a bool), at least ``minimum``; return it as a float."""
    if type(value) is not float:  # as check_int
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} should be a real number, got {name}={value!r} of type {type(value).__name__}")
    given = value
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} should be finite, got {name}={given!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} should be >= {minimum:g}, got {name}={given!r}")
    return value


def check_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """Check that ``value`` is a real number in the interval between ``low`` and ``high``."""
    if value is None and allow_none:
        return None
    v = float(value) if check_real(name, value) is not None else 0.0
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} should be in {interval}, got {name}={value!r}")
    return v


def check_bool(name: str, value: Any) -> bool:
    """Check that ``value`` is a bool (a NumPy bool too); return it as a bool."""
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name} should be a bool, got {name}={value!r} of type {type(value).__name__}")


def check_no_grad(name: str, value: torch.Tensor, what: str) -> None:
    """Refuse a tensor that requires grad while grad mode is on: ``what`` (a data-pipeline op whose CUDA kernels have
    no backward) would drop its gradient silently on one device and fail on another."""
    if value.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{name} should not require grad: {what} is not differentiable (its CUDA kernels have no backward), got "
            f"{name} with requires_grad=True; pass {name}.detach(), or call it under torch.no_grad()"
        )


def channels_last_hint(name: str, shape: tuple[int, ...] | torch.Size) -> str:
    """``""`` for an image shape that may be channels-first; else what to add to an error about ``name`` of a
    ``(B, H, W, C)`` or ``(H, W, C)`` shape, as stacked PIL or numpy images come: more than 4 "channels", 1, 3 or 4
    last.

    Taken as channels-first, such images would be cropped or cut along the wrong axes with no other error.
    """
    if len(shape) not in (3, 4) or shape[-3] <= 4 or shape[-1] not in (1, 3, 4):
        return ""
    perm = "permute(0, 3, 1, 2)" if len(shape) == 4 else "permute(2, 0, 1)"
    return f", which looks channels-last (C={shape[-1]} last): pass {name}.{perm}"
