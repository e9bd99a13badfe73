"""The loader's clock, readable from inside datasets and DataLoader workers.

The epoch lives in one place: the :class:`EnlightLoader` advances it once per
``iter()`` and writes it into a small shared-memory tensor. Worker processes
(persistent ones included) read that tensor, so :func:`current_epoch` and
:func:`current_phase` always agree with the loader.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch

from ._inference import normal_tensors
from .schedule import Phase, Schedule

__all__ = ["MAX_EPOCH", "SharedClock", "current_epoch", "current_phase"]

# The largest epoch the clock (int64) holds with room for the next one: set_epoch and a loaded state refuse more.
MAX_EPOCH = 2**62


class SharedClock:
    """Epoch, phase index and excluded-sample mask in shared memory.

    Args:
        schedule: The schedule whose phases the phase index refers to.
        num_samples: Size of the excluded-sample mask (the id space).

    Note:
        Pickling this object (as DataLoader does when it starts workers) shares
        the tensors rather than copying them, so later updates are seen by workers.
        Workers get the phases without their ``augment`` (it runs in the main process).
    """

    @normal_tensors
    def __init__(self, schedule: Schedule, num_samples: int) -> None:
        self.schedule = schedule
        self._clock = torch.full((2,), -1, dtype=torch.int64).share_memory_()
        self.excluded = torch.zeros(num_samples, dtype=torch.bool).share_memory_()

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the phases without their augmentations: those run on the batch in the main process, and a
        # lambda or a CUDA module would keep spawn/forkserver workers from starting at all.
        state = self.__dict__.copy()
        phases = {name: getattr(self.schedule, name) for name in ("during", "after")}
        if any(p.augment is not None for p in phases.values()):
            with warnings.catch_warnings():  # the schedule's own warnings were given when the user made it
                warnings.simplefilter("ignore")
                state["schedule"] = dataclasses.replace(
                    self.schedule, **{k: dataclasses.replace(p, augment=None) for k, p in phases.items()}
                )
        return state

    @property
    def epoch(self) -> int:
        return int(self._clock[0])

    @property
    def phase_index(self) -> int:
        return int(self._clock[1])

    def set(self, epoch: int, phase_index: int, excluded: torch.Tensor | None = None) -> None:
        """Publish a new epoch, its phase and (optionally) its excluded indices."""
        if excluded is not None:
            self.excluded.zero_()
            if excluded.numel():
                self.excluded[excluded] = True
        self._clock[0] = epoch
        self._clock[1] = phase_index

    def phase(self) -> Phase:
        index = self.phase_index
        if index < 0:
            raise RuntimeError("the enlight_data loader has not started an epoch yet")
        return self.schedule.phases[index]

    def activate(self) -> None:
        """Make this clock the one :func:`current_epoch` reads in this process."""
        global _active
        _active = self


_active: SharedClock | None = None


def _require() -> SharedClock:
    if _active is None:
        raise RuntimeError(
            "no enlight_data loader is active in this process: current_epoch() and current_phase() "
            "work inside a dataset wrapped by enlighten()/stream(), or after the loader's first iter()"
        )
    return _active


def current_epoch() -> int:
    """The epoch the enlight_data loader is in (also inside DataLoader workers).

    Raises:
        RuntimeError: If no enlight_data loader is active in this process, or it has not started an epoch.
    """
    epoch = _require().epoch
    if epoch < 0:
        raise RuntimeError("the enlight_data loader has not started an epoch yet")
    return epoch


def current_phase() -> Phase:
    """The :class:`~enlight_data.Phase` in force for the current epoch (also inside workers).

    Raises:
        RuntimeError: If no enlight_data loader is active in this process, or it has not started an epoch.
    """
    return _require().phase()

