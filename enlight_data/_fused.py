"""Dispatch to the fused Triton kernels of the CUDA path, with a warned-once fallback to PyTorch ops.

Each kernel lives in its own module (``_colour_kernel``, ``_draw_kernel``, ``_resample_kernel``, ``_mix_kernel``),
imported only when a CUDA batch first needs it: Triton ships with PyTorch's CUDA wheels, not with every build. A kernel
that cannot be imported is reported as missing; one that fails to compile or launch is recorded in :data:`FAILED`,
warned about once, and not tried again in this process; one given arguments it does not handle raises
:class:`Unsupported`. In every case the caller runs its PyTorch ops instead. Running out of device memory, or a
device error (``torch.AcceleratorError``: an illegal address, a device-side assert), is not the kernel's failure: it
propagates as from any PyTorch op, and the kernel is tried again on the next call.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from typing import Any, Callable

import torch

__all__ = ["FAILED", "Unsupported", "cdiv", "kernel", "next_power_of_2", "run", "smoothing_values"]

# name -> (module, launcher)
_KERNELS = {
    "colour": ("_colour_kernel", "affine3_clamp"),
    "draw": ("_draw_kernel", "draw_params"),
    "resample": ("_resample_kernel", "resample"),
    "mix_params": ("_mix_kernel", "mix_params"),
    "blend": ("_mix_kernel", "blend"),
    "mix": ("_mix_kernel", "mix"),
}


class Unsupported(ValueError):
    """Raised by a kernel's launcher for arguments it does not handle: the caller runs its PyTorch ops for them."""


# Errors of the device rather than of the kernel, raised as they are and not recorded in FAILED.
_PROPAGATED: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError, torch.AcceleratorError)

# name -> why the kernel failed, for the rest of the process.
FAILED: dict[str, str] = {}


@functools.lru_cache(maxsize=None)
def kernel(name: str) -> Callable[..., Any] | None:
    """The launcher of a fused kernel, or None where Triton cannot be imported.

    Raises:
        ValueError: For an unknown kernel name.
    """
    if name not in _KERNELS:
        raise ValueError(f"name should be one of {sorted(_KERNELS)}, got name={name!r}")
    module, launcher = _KERNELS[name]
    try:
        return getattr(importlib.import_module(f"{__package__}.{module}"), launcher)
    except Exception:  # ImportError, or a Triton that cannot initialise here
        return None


def run(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run a fused kernel and return what its launcher returns, or None for the caller's PyTorch ops.

    None where the kernel is missing, where it cannot run here (warned once per kernel and process), or where it does
    not handle these arguments (:class:`Unsupported`, for this call only).

    Raises:
        torch.OutOfMemoryError: Where the device ran out of memory; the kernel stays enabled.
        torch.AcceleratorError: For a device error; the device is then unusable, and the PyTorch ops would fail too.
    """
    launcher = kernel(name)
    if launcher is None or name in FAILED:
        return None
    try:
        return launcher(*args, **kwargs)
    except Unsupported:  # not this kernel's input (a shape, a dtype): PyTorch ops for this call only
        return None
    except _PROPAGATED:  # transient (memory) or not the kernel's to recover from (the device): the caller's error
        raise
    except Exception as exc:  # a compile or launch failure: PyTorch ops for the rest of the process
        FAILED[name] = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"enlight_data: the fused Triton {name} kernel failed ({FAILED[name]}); using PyTorch ops",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


# Launch-grid arithmetic for the launchers, in plain Python: Triton's own ``triton.cdiv`` and
# ``triton.next_power_of_2`` are constexpr functions in recent releases, about 2 us of host time per call here, and a
# mixing call made six of them (measured with Triton 3.8 on this CPU).
def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for ints, ``b > 0``."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 << max(n - 1, 0).bit_length()


def smoothing_values(label_smoothing: float, num_classes: int) -> tuple[float, float]:
    """``(off, hot)``: a soft row's value for the other classes and for its class under ``label_smoothing``.

    ``off = s / C`` and ``hot = 1 - s + off``, so a smoothed row is ``row * (1 - s) + off``. One column
    (``num_classes=1``: a single binary score, as for ``BCEWithLogitsLoss`` on ``(B, 1)`` outputs) is smoothed
    towards 0.5, as two classes would be (``off = s / 2``): its 0 and 1 become ``s / 2`` and ``1 - s / 2``.
    """
    off = label_smoothing / max(num_classes, 2)
    return off, 1.0 - label_smoothing + off
