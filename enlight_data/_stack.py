"""Warnings that name the user's line, however deep in this package (or in torch) they are raised."""

from __future__ import annotations

import os
import sys

import torch

__all__ = ["caller_stacklevel"]

# This package's files and torch's (a tracked loss is called through nn.Module.__call__, or a compiled wrapper).
_INTERNAL = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (__file__, torch.__file__))


def caller_stacklevel() -> int:
    """A ``stacklevel`` for a warning raised in the caller: the first frame outside this package and ``torch``.

    So a warning from ``record()`` names the user's line, whether it called ``record()`` or a tracked loss (through
    ``nn.Module.__call__``, compiled or not), and one raised when an epoch closes names the training loop.
    """
    frame, level = sys._getframe(2), 2  # the caller of the function that warns
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level
