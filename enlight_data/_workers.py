"""Keeping a DataLoader's persistent workers usable after one of them died.

NOTE [ A worker that dies outside the loader ]
DataLoader notices a dead worker in two places: while it waits for a batch (our sources catch that error
and drop the iterator), and in its SIGCHLD handler, which raises wherever the main process happens to be.
A worker killed while the loop body runs (out of memory, a SIGKILL) therefore raises in the user's code,
not inside the loader, and with ``persistent_workers=True`` DataLoader keeps the iterator with the dead
worker: the next ``iter()`` hands it a resume signal and waits the whole ``timeout`` for its answer (or
forever without a timeout). Before each epoch the sources check that the kept workers are alive and start
fresh ones when one is not.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader

__all__ = ["drop_dead_workers", "drop_iterator"]


def drop_iterator(loader: DataLoader, iterator: Any = None) -> None:
    """Shut down ``iterator``'s workers now (the loader's kept one by default) and forget it.

    A failed epoch leaves its workers in an unknown state; shutting them down here is immediate, where the
    garbage collector would do it in the middle of a later epoch.
    """
    kept = getattr(loader, "_iterator", None)
    iterator = kept if iterator is None else iterator
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        # Reap the dead workers first (is_alive() waits for them): DataLoader's SIGCHLD handler, which runs as the
        # live workers exit during the shutdown, would otherwise find them and raise inside it.
        for worker in getattr(iterator, "_workers", ()):
            worker.is_alive()
        shutdown()
    if iterator is not None and kept is iterator:
        loader._iterator = None  # persistent workers: the next iter() starts fresh ones


def drop_dead_workers(loader: DataLoader) -> bool:
    """Drop the loader's kept (persistent) workers if any of them died; whether they were dropped."""
    kept = getattr(loader, "_iterator", None)
    workers = getattr(kept, "_workers", None)
    if not workers or all([w.is_alive() for w in workers]):  # a list: every dead worker is reaped
        return False
    drop_iterator(loader, kept)
    return True
