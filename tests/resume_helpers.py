"""The resume oracle's pieces: a dataset that counts loads, schedules, and a deterministic loop.

Also runnable as a script, to resume a checkpoint in a fresh process::

    python tests/resume_helpers.py NAME NUM_WORKERS STATE_FILE OUT_FILE [SHARD_INDEX]
"""

from __future__ import annotations

import io
import sys
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

import enlight_data as ed

N, BATCH, CLASSES, EPOCHS, SEED = 44, 8, 5, 4, 7
SCHEDULES = ("removal", "pause", "accuracy")

try:
    from enlight_data.augment import GpuAugment
except ImportError:  # pragma: no cover - augment.py is written by another helper
    GpuAugment = None  # type: ignore[assignment,misc]


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny CPU ops run 10x faster on one intra-op thread on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Pixels(Dataset):
    """Deterministic 3×8×8 images in [0, 1); label ``i % CLASSES``; an extra dict item.

    ``loads`` counts ``__getitem__`` calls per index in shared memory, so loads made in
    DataLoader workers are counted too.
    """

    def __init__(self, n: int = N) -> None:
        self.n = n
        self.loads = torch.zeros(n, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.loads[i] += 1
        g = torch.Generator().manual_seed(1000 + i)
        return torch.rand(3, 8, 8, generator=g), i % CLASSES, {"id": i, "name": f"s{i}"}


def make_schedule(name: str) -> ed.Schedule:
    """``removal``: High-Loss Removal for 2 epochs; ``pause``: Mixup Pause with CutMix;
    ``accuracy``: a period that ends when training accuracy reaches 0.6."""
    if name == "removal":
        return ed.high_loss_removal(2, fraction=0.25)
    if name == "pause":
        return ed.mixup_pause(1, alpha=0.4, cutmix_alpha=1.0)
    if name == "accuracy":
        return ed.Schedule(
            ed.Period(until_accuracy=0.6, max_epochs=8),
            during=ed.Phase(drop_high_loss=0.2),
            after=ed.Phase(mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.1),
        )
    raise ValueError(f"unknown schedule {name!r}")


def make_loader(name: str, num_workers: int, dataset: Pixels | None = None, **kw: Any) -> ed.EnlightLoader:
    """A fresh loader for schedule ``name``; GpuAugment on the mixing schedules when available."""
    dataset = dataset if dataset is not None else Pixels()
    augment = None
    if name != "removal" and GpuAugment is not None:
        augment = GpuAugment(8, scale=(0.5, 1.0), flip=0.5, brightness=0.3, contrast=0.3, jitter_prob=0.5)
    base = DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=num_workers, persistent_workers=num_workers > 0,
        timeout=60 if num_workers else 0,
    )
    return ed.enlighten(base, make_schedule(name), num_classes=CLASSES, seed=SEED, augment=augment, **kw)


class PixelPairs(Pixels):
    """:class:`Pixels` as ``(input, label)`` pairs, for writing tar shards."""

    def __getitem__(self, i: int):
        return super().__getitem__(i)[:2]


def write_pixel_shards(directory: str) -> str:
    """Write :class:`PixelPairs` as 6 tar shards (``npy``, exact); returns the index path."""
    return ed.write_shards(PixelPairs(), f"{directory}/pixels-%04d.tar", maxcount=8, image_format="npy",
                           progress=False)


class CountingNpyDecoder:
    """Decodes ``npy`` samples and counts decodes per id in shared memory (workers included)."""

    def __init__(self, n: int = N) -> None:
        self.counts = torch.zeros(n, dtype=torch.int64).share_memory_()

    def __call__(self, sample: dict) -> tuple[Tensor, int]:
        i = int(sample["__key__"])
        self.counts[i] += 1
        return torch.from_numpy(np.load(io.BytesIO(sample["npy"]))), int(sample["cls"])


def pixel_ids(x: Tensor) -> list[int]:
    """The :class:`Pixels` ids of unmixed, unaugmented inputs (by their first pixel)."""
    table = {round(float(Pixels()[i][0].flatten()[0]), 6): i for i in range(N)}
    return [table[round(float(v), 6)] for v in x.flatten(1)[:, 0]]


def make_stream_loader(name: str, num_workers: int, index: str, **kw: Any) -> ed.EnlightLoader:
    """A fresh streaming loader for schedule ``name`` over ``write_pixel_shards``'s shards."""
    augment = None
    if name != "removal" and GpuAugment is not None:
        augment = GpuAugment(8, scale=(0.5, 1.0), flip=0.5, brightness=0.3, contrast=0.3, jitter_prob=0.5)
    return ed.stream(index, make_schedule(name), batch_size=BATCH, num_workers=num_workers, shuffle_buffer=6,
                     seed=SEED, num_classes=CLASSES, augment=augment, persistent_workers=num_workers > 0, **kw)


def fake_output(x: Tensor, y: Tensor, epoch: int) -> Tensor:
    """A deterministic "model": right more often as epochs go on, per-sample losses that vary."""
    target = y if y.dim() == 2 else F.one_hot(y, CLASSES).float()
    return target * (0.6 * epoch) + 2.0 * x.flatten(1)[:, :CLASSES]


Record = tuple[int, Tensor, Tensor, "dict | None"]


def train(
    loader: ed.EnlightLoader,
    *,
    last_epoch: int = EPOCHS - 1,
    on_batch: Callable[[ed.EnlightLoader, int], None] | None = None,
    on_epoch_end: Callable[[ed.EnlightLoader, int], None] | None = None,
) -> list[Record]:
    """Run until ``last_epoch`` is done; every batch is recorded as ``(epoch, x, y, extra)``."""
    criterion = loader.track(nn.CrossEntropyLoss())
    records: list[Record] = []
    while True:
        for x, y, *rest in loader:
            extra = rest[0] if rest else None
            criterion(fake_output(x, y, loader.epoch), y)
            records.append((loader.epoch, x.clone(), y.clone(), extra))
            if on_batch is not None:
                on_batch(loader, len(records))
        if on_epoch_end is not None:
            on_epoch_end(loader, len(records))
        if loader.epoch >= last_epoch:
            return records


def save_state(loader: ed.EnlightLoader) -> bytes:
    buf = io.BytesIO()
    torch.save(loader.state_dict(), buf)
    return buf.getvalue()


def load_state(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


def outcome(loader: ed.EnlightLoader) -> dict:
    """What must match after the run: the loss table, the history and the period decision."""
    state = loader.state_dict()
    return {"losses": loader.losses(), "history": loader.history, "table": state["table"], "tracker": state["tracker"]}


def assert_same_records(got: list[Record], want: list[Record]) -> None:
    assert len(got) == len(want), f"{len(got)} batches after the resume, {len(want)} in the uninterrupted run"
    for step, ((e1, x1, y1, ex1), (e2, x2, y2, ex2)) in enumerate(zip(got, want)):
        where = f"batch {step} after the resume (epoch {e2})"
        assert e1 == e2, where
        assert x1.dtype == x2.dtype and torch.equal(x1, x2), f"inputs differ at {where}"
        assert y1.dtype == y2.dtype and torch.equal(y1, y2), f"targets differ at {where}"
        if ex2 is not None:
            assert torch.equal(ex1["id"], ex2["id"]) and ex1["name"] == ex2["name"], f"extras differ at {where}"


def assert_same_outcome(got: dict, want: dict) -> None:
    torch.testing.assert_close(got["losses"], want["losses"], rtol=0, atol=0, equal_nan=True)
    assert got["history"] == want["history"]
    assert got["tracker"] == want["tracker"]
    for key in ("last", "sum", "count", "stats"):
        torch.testing.assert_close(got["table"][key], want["table"][key], rtol=0, atol=0, equal_nan=True)


def _main(argv: list[str]) -> None:
    name, workers, state_file, out_file, *index = argv
    loader = make_stream_loader(name, int(workers), index[0]) if index else make_loader(name, int(workers))
    with open(state_file, "rb") as f:
        loader.load_state_dict(load_state(f.read()))
    records = train(loader, last_epoch=EPOCHS if index else EPOCHS - 1)  # as test_resume._last_epoch
    torch.save({"records": records, "outcome": outcome(loader)}, out_file)


if __name__ == "__main__":
    _main(sys.argv[1:])
