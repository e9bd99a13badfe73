"""Deterministic random streams derived from (seed, epoch, stream, ...).

Every random draw in enlight_data comes from a ``torch.Generator`` made here.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["Stream", "derive_seed", "make_generator", "seed_globals"]

_MASK64 = (1 << 64) - 1


class Stream:
    """Named constants that keep independent random streams apart."""

    SHUFFLE = 1
    MIX = 2
    AUGMENT = 3
    HOST = 4
    LOADER = 5
    SHARDS = 6
    BUFFER = 7
    WORKER = 8


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(seed: int, *keys: int) -> int:
    """Hash ``seed`` and ``keys`` into a 63-bit seed.

    The result is a pure function of its arguments: the same on every rank,
    in every worker and after a resume.

    Args:
        seed: The user's base seed.
        *keys: Further integers (epoch, stream, batch, rank, worker, ...).

    Returns:
        A non-negative integer below ``2**63``.
    """
    h = _splitmix64(int(seed) & _MASK64)
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return h & ((1 << 63) - 1)


def make_generator(seed: int, *keys: int, device: torch.device | str | None = None) -> torch.Generator:
    """Return a ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, *keys)``.

    Seeding a CUDA generator is a host-side operation: it does not synchronise.
    """
    g = torch.Generator(device=device if device is not None else "cpu")
    g.manual_seed(derive_seed(seed, *keys))
    return g


def seed_globals(seed: int) -> None:
    """Seed a DataLoader worker's global torch (CPU), ``random`` and NumPy states: about 10 µs.

    For a dataset's (or a decode function's) own random transforms, which draw from those states. Only ever called
    inside workers: the caller's process keeps its global state.
    """
    torch.default_generator.manual_seed(seed)  # torch.manual_seed also visits every accelerator: ~120 µs
    random.seed(seed)
    np.random.seed(seed % 2**32)
