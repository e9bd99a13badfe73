"""Workers started by spawn or forkserver, not only fork.

macOS and Windows start DataLoader workers with spawn, and Linux does with forkserver from Python 3.14: the workers
must see the loader's clock (epoch, phase, removed samples) and give the same batches as forked ones.
"""

from __future__ import annotations

import multiprocessing

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import enlight_data as ed
import helpers
from helpers import EpochProbe, decode_marked

AVAILABLE = multiprocessing.get_all_start_methods()
pytestmark = [
    pytest.mark.slow,  # starts worker processes
    pytest.mark.skipif("fork" not in AVAILABLE, reason="compares with fork, which this platform lacks"),
]
OTHERS = [m for m in ("spawn", "forkserver") if m in AVAILABLE]


def _map_epochs(context: str) -> list[torch.Tensor]:
    base = DataLoader(EpochProbe(24), batch_size=4, shuffle=True, num_workers=2, persistent_workers=True,
                      multiprocessing_context=context)
    loader = ed.enlighten(base, ed.high_loss_removal(2, fraction=0.25), num_classes=4, seed=3)
    epochs = []
    for _ in range(3):
        rows = []
        for x, _ in loader:
            loader.record(x[:, 3])  # the workers' random draws as losses: what is removed depends on them
            rows.append(x)
        epochs.append(torch.cat(rows))
    return epochs


@pytest.fixture
def marked(monkeypatch):
    """helpers.PARENT_MARK set in this process only: forked workers see 1, spawned or forkserver ones 0."""
    monkeypatch.setattr(helpers, "PARENT_MARK", 1.0)


@pytest.mark.parametrize("method", OTHERS)
def test_map_style_workers_started_by_spawn_or_forkserver_match_fork(method, marked):
    forked, started = _map_epochs("fork"), _map_epochs(method)
    assert [len(rows) for rows in started] == [24, 18, 24]  # a quarter removed in epoch 1
    for epoch, (a, b) in enumerate(zip(forked, started)):
        assert (a[:, 4] == 1).all() and (b[:, 4] == 0).all()  # the workers were started as asked
        assert (b[:, 1] == epoch).all()  # current_epoch() inside the persistent workers
        assert (b[:, 2] == int(epoch < 2)).all()  # current_phase()
        assert torch.equal(a[:, :4], b[:, :4])  # same order, same removal, same random draws


def _stream_epochs(index: str, context: str) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    loader = ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=8, num_workers=2, seed=1,
                       persistent_workers=True, multiprocessing_context=context, decode=decode_marked,
                       num_classes=20)  # labels + 10 in forked workers
    epochs, labels = [], []
    for _ in range(3):
        batches = []
        for x, y in loader:
            loader.record(x.float().flatten(1).mean(1))
            batches.append(x)
            labels.append(y)
        epochs.append(batches)
    assert [h["removed"] for h in loader.history] == [0, 24, 0]
    return epochs, labels


@pytest.mark.parametrize("method", OTHERS)
def test_stream_workers_started_by_spawn_or_forkserver_match_fork(method, tmp_path, marked):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(96) % 4)
    index = ed.write_shards(data, str(tmp_path / "s-%03d.tar"), maxcount=24, image_format="png", progress=False)
    (forked, forked_labels), (started, started_labels) = _stream_epochs(index, "fork"), _stream_epochs(index, method)
    assert [len(b) for b in started] == [12, 9, 12]
    for a, b in zip(forked, started):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    for a, b in zip(forked_labels, started_labels):  # the workers were started as asked; same labels otherwise
        assert (a >= 10).all() and (b < 10).all() and torch.equal(a - 10, b)


def test_stream_checks_the_multiprocessing_context(tmp_path):
    data = TensorDataset(torch.zeros(8, 3, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    index = ed.write_shards(data, str(tmp_path / "s-%03d.tar"), maxcount=4, image_format="png", progress=False)
    with pytest.raises(ValueError, match=r"multiprocessing_context should be None or one of \[.*'spawn'.*\] "
                                         r"\(this platform's start methods\), got multiprocessing_context='thread'"):
        ed.stream(index, ed.mixup_pause(1, alpha=0.2), batch_size=4, multiprocessing_context="thread")
    with pytest.raises(TypeError, match="multiprocessing_context should be None, .* got multiprocessing_context of "
                                        "type int"):
        ed.stream(index, ed.mixup_pause(1, alpha=0.2), batch_size=4, multiprocessing_context=2)
    # A context object works, and so does a context with no workers (DataLoader alone would refuse that).
    for context, workers in ((multiprocessing.get_context("fork"), 2), ("spawn", 0)):
        loader = ed.stream(index, ed.mixup_pause(1, alpha=0.2), batch_size=4, num_workers=workers,
                           multiprocessing_context=context)
        assert sum(x.shape[0] for x, _ in loader) == 8
