"""Faults in the user's dataset and in DataLoader workers: clear errors, no hang, and recovery.

Every DataLoader here has a ``timeout``, so a hang would fail the test instead of stalling it.
"""

from __future__ import annotations

import gc
import re
import time

import pytest
import torch
from torch.utils.data import DataLoader

import enlight_data as ed
from fault_helpers import BAD, BATCH, N, SCHEDULE, Faulty, kill_a_worker, make
from resume_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "workers, persistent", [(0, False), (2, False), (2, True)], ids=["main", "workers", "persistent"]
)
def test_sample_error_names_the_index_and_the_next_epoch_runs(workers, persistent):
    loader = make("raise", workers, persistent=persistent)
    with pytest.raises(ed.SampleError, match=rf"dataset\[{BAD}\] raised ValueError: corrupt record {BAD}"):
        for _ in loader:
            pass
    assert loader.epoch == 0
    start = time.monotonic()
    ids = [i for x, _ in loader for i in x[:, 0].round().long().tolist()]  # epoch 1 runs in full
    assert loader.epoch == 1 and sorted(ids) == list(range(N))
    assert loader.history[0]["batches"] is not None  # the failed epoch was closed
    # The failed epoch's workers are shut down at once, not by a later garbage collection (a 10 s stall).
    assert time.monotonic() - start < 8


def test_sample_error_keeps_the_cause_in_process():
    loader = make("raise", 0)
    with pytest.raises(ed.SampleError) as info:
        list(loader)
    assert isinstance(info.value.__cause__, ValueError)


def test_sample_error_surfaces_from_workers_with_the_traceback():
    loader = make("raise", 2)
    with pytest.raises(ed.SampleError) as info:
        list(loader)
    msg = str(info.value)
    assert "DataLoader worker process" in msg and f"dataset[{BAD}]" in msg and "corrupt record" in msg


def _error_of(loader: ed.EnlightLoader) -> tuple[type, str] | None:
    """Run an epoch; the error's type and message, with no traceback kept alive.

    A traceback would keep the DataLoader iterator, and so its worker pids, registered
    with DataLoader's SIGCHLD handler, which then raises again when any later child exits.
    """
    try:
        list(loader)
    except Exception as exc:  # noqa: BLE001
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("persistent", [False, True], ids=["fresh", "persistent"])
def test_killed_worker_raises_clearly_and_the_next_epoch_runs(persistent):
    # No DataLoader timeout: DataLoader then checks its workers every 5 s, which notices the dead worker even where
    # the SIGCHLD handler's error is lost (raised inside a weakref callback or __del__); with a timeout the only
    # check left would be the timeout's.
    loader = make("kill", 2, persistent=persistent, timeout=0)
    start = time.monotonic()
    error = _error_of(loader)
    assert error is not None and error[0] is RuntimeError
    assert re.search(r"DataLoader worker .*(is killed by signal|exited unexpectedly)", error[1]), error
    assert time.monotonic() - start < 15  # noticed at once, not by the timeout
    ids = [i for x, _ in loader for i in x[:, 0].round().long().tolist()]
    assert loader.epoch == 1 and sorted(ids) == list(range(N))
    del loader
    gc.collect()


@pytest.mark.filterwarnings("ignore:epoch 0 ends after")
@pytest.mark.parametrize("where", ["between-epochs", "in-the-loop-body"])
def test_persistent_worker_killed_outside_the_loader_is_replaced(where):
    """A worker that dies while the loop body runs raises in the body, not inside the loader: the next
    epoch notices the dead worker and starts fresh ones, instead of waiting out the timeout on it."""
    loader = make("none", 2, persistent=True, timeout=20)
    error = None
    if where == "between-epochs":
        assert sum(x.shape[0] for x, _ in loader) == N
        error = kill_a_worker(loader)
    else:
        for b, _ in enumerate(loader):
            if b == 1:
                error = kill_a_worker(loader)
                break
    assert error is None or re.search(r"DataLoader worker .*(killed by signal|exited unexpectedly)", error), error
    start = time.monotonic()
    ids = [i for x, _ in loader for i in x[:, 0].round().long().tolist()]
    assert sorted(ids) == list(range(N))
    assert time.monotonic() - start < 15  # not after the 20 s timeout
    del loader
    gc.collect()


def test_persistent_workers_that_fail_to_resume_are_replaced(monkeypatch):
    """iter() itself fails (DataLoader resuming persistent workers, e.g. a hung one's timeout): the kept iterator is
    shut down and dropped, and the epoch after runs on fresh workers."""
    loader = make("none", 2, persistent=True, timeout=20)
    assert sum(x.shape[0] for x, _ in loader) == N
    kept = loader._source.loader._iterator

    def fail(*args, **kwargs):
        raise RuntimeError("DataLoader timed out after 20 seconds")

    monkeypatch.setattr(kept, "_reset", fail)
    with pytest.raises(RuntimeError, match="timed out"):
        list(loader)
    assert loader._source.loader._iterator is None and kept._shutdown
    ids = [i for x, _ in loader for i in x[:, 0].round().long().tolist()]
    assert sorted(ids) == list(range(N)) and loader._source.loader._iterator is not kept


def test_hanging_sample_hits_the_timeout():
    loader = make("hang", 2, timeout=1)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="DataLoader timed out after 1 seconds"):
        list(loader)
    assert time.monotonic() - start < 15


def test_state_after_a_failed_batch_resumes_at_it():
    """A checkpoint taken after a failure resumes at the failed batch, which then loads."""
    loader = make("raise", 0)
    done = []
    with pytest.raises(ed.SampleError):
        for x, _ in loader:
            done.append(x)
    state = loader.state_dict()
    assert state["position"] == len(done)
    fixed = ed.enlighten(
        DataLoader(Faulty("raise", bad=-1), batch_size=BATCH, shuffle=True), SCHEDULE,
        num_classes=3, seed=0,
    )
    fixed.load_state_dict(state)
    rest = [x for x, _ in fixed]
    ids = torch.cat(done + rest)[:, 0].round().long().sort().values
    assert fixed.epoch == 0 and torch.equal(ids, torch.arange(N))
