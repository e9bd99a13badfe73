"""Long-lived tensors stay normal tensors when a call comes from inside ``torch.inference_mode()``."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

__all__ = ["normal_tensors"]

_F = TypeVar("_F", bound=Callable[..., object])


def normal_tensors(fn: _F) -> _F:
    """Run ``fn`` with inference mode off when it is on.

    A tensor made under ``torch.inference_mode()`` is an inference tensor, which can never again be written in
    place outside it. State kept across calls (the loss table, staging and scratch buffers) must therefore be made
    as normal tensors, which a loop under inference mode (a first pass to score the data, say) may still write, and
    a training loop after it too. Costs one thread-local check when inference mode is off.
    """

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
