"""Datasets with faults (raising, killed or hanging samples) for the failure tests."""

from __future__ import annotations

import os
import signal
import time

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

import enlight_data as ed

N, BATCH = 24, 4
BAD = 13
SCHEDULE = ed.mixup_pause(5, alpha=0.2)


class Faulty(Dataset):
    """Sample i is ``(tensor([i]), i % 3)``; index ``bad`` fails in epoch 0 as ``fault`` says.

    Faults: ``"raise"`` (ValueError), ``"kill"`` (SIGKILL to the worker process), ``"hang"``
    (sleeps longer than a 1 s DataLoader timeout). The epoch comes from ``ed.current_epoch()``,
    which workers read from the loader's shared clock.
    """

    def __init__(self, fault: str, bad: int = BAD, every_epoch: bool = False) -> None:
        self.fault, self.bad, self.every_epoch = fault, bad, every_epoch

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        if i == self.bad and (self.every_epoch or ed.current_epoch() == 0):
            if self.fault == "raise":
                raise ValueError(f"corrupt record {i}")
            if self.fault == "kill" and get_worker_info() is not None:  # never the test process itself
                os.kill(os.getpid(), signal.SIGKILL)
            if self.fault == "hang":
                time.sleep(2.5)  # longer than the timeout of 1 s; shutdown waits for it
        return torch.tensor([float(i)]), i % 3


def make(fault: str, workers: int, *, persistent: bool = False, timeout: float = 30, **kw) -> ed.EnlightLoader:
    base = DataLoader(
        Faulty(fault, **kw),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=persistent,
        timeout=timeout if workers else 0,
    )
    # Soft targets, but no mixing yet: inputs still show their sample ids.
    return ed.enlighten(base, SCHEDULE, num_classes=3, seed=0)


def kill_a_worker(loader: ed.EnlightLoader) -> str | None:
    """SIGKILL one of ``loader``'s running DataLoader workers, from the test process.

    DataLoader's SIGCHLD handler raises its error here, in the caller's code, as it would in a training
    loop's body: the error's message, or None where ``is_alive()`` reaped the worker before the handler
    looked for it.
    """
    workers = loader._source.loader._iterator._workers
    try:
        os.kill(workers[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while workers[0].is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # the handler runs at the next bytecode after the signal
        time.sleep(0.2)
    except RuntimeError as exc:
        return str(exc)
    return None
