"""Mid-epoch resume: the oracle test, the skipped samples, and checkpoint safety.

The oracle: run a deterministic training loop, take ``state_dict()`` at a position,
save it with ``torch.save`` and load it with ``torch.load(weights_only=True)`` into a
fresh loader, then compare every remaining batch (inputs, soft targets, extra items)
and the loss table, history and period decision at the end, bit for bit, with the
uninterrupted run.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import enlight_data as ed
from resume_helpers import (
    BATCH,
    CLASSES,
    EPOCHS,
    SCHEDULES,
    SEED,
    CountingNpyDecoder,
    Pixels,
    assert_same_outcome,
    assert_same_records,
    load_state,
    make_loader,
    make_schedule,
    make_stream_loader,
    one_thread,  # noqa: F401 - the fixture
    outcome,
    pixel_ids,
    save_state,
    train,
    write_pixel_shards,
)

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_thread")


def _factory(name: str, workers: int, index: str | None):
    """Fresh loaders: map-style, or streaming over the shards at ``index``."""
    if index is None:
        return lambda: make_loader(name, workers)
    return lambda: make_stream_loader(name, workers, index)


def _last_epoch(index: str | None) -> int:
    # Streaming orders depend on the workers, so the accuracy period may end later: one more epoch.
    return EPOCHS - 1 if index is None else EPOCHS


@functools.lru_cache(maxsize=None)
def reference(name: str, workers: int, index: str | None = None) -> dict:
    """The uninterrupted run, and the states taken after every batch and every epoch."""
    make, last = _factory(name, workers, index), _last_epoch(index)
    plain_loader = make()
    plain = train(plain_loader, last_epoch=last)
    states: dict = {}

    def on_batch(loader, count):
        states[(loader.epoch, loader.state_dict()["position"])] = (count, save_state(loader))

    def on_epoch_end(loader, count):
        states[(loader.epoch, "end")] = (count, save_state(loader))

    loader = make()
    records = train(loader, last_epoch=last, on_batch=on_batch, on_epoch_end=on_epoch_end)
    # Taking states does not change the run.
    assert_same_records(records, plain)
    assert_same_outcome(outcome(loader), outcome(plain_loader))
    history = plain_loader.history
    inside = [h["epoch"] for h in history if h["in_period"]]
    after = [h["epoch"] for h in history if not h["in_period"]]
    assert inside and after and min(after) < last, history
    return {
        "records": plain,
        "outcome": outcome(plain_loader),
        "states": states,
        "batches": {h["epoch"]: h["batches"] for h in history},
        # The last epoch inside the period (removal or no mixing) and the first after it.
        "epochs": {"inside": max(inside), "after": min(after)},
        "history": history,
    }


def _checkpoint(ref: dict, where: str, at: str) -> tuple[int, bytes]:
    epoch = ref["epochs"][where]
    n = ref["batches"][epoch]
    key = {"first": 1, "middle": n // 2, "last": n, "boundary": "end"}[at]
    return ref["states"][(epoch, key)]


def _resume(name: str, workers: int, data: bytes, index: str | None = None) -> tuple[list, dict, ed.EnlightLoader]:
    loader = _factory(name, workers, index)()
    loader.load_state_dict(load_state(data))
    records = train(loader, last_epoch=_last_epoch(index))
    return records, outcome(loader), loader


def test_oracle_covers_the_period():
    """The schedules really change inside the run: removal, mixing and an accuracy-ended period."""
    removal = reference("removal", 0)["history"]
    assert removal[1]["in_period"] and removal[1]["removed"] > 0 and not removal[2]["in_period"]
    pause = reference("pause", 0)["history"]
    assert pause[0]["mixup_alpha"] == 0 and pause[1]["mixup_alpha"] > 0
    acc = reference("accuracy", 0)["history"]
    ended = [h["epoch"] for h in acc if not h["in_period"]]
    assert ended and 1 < ended[0] < EPOCHS - 1, acc  # ended by accuracy, not by max_epochs
    assert any(h["removed"] > 0 for h in acc if h["in_period"])
    assert reference("pause", 0)["records"][-1][2].dim() == 2  # soft targets


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("at", ["first", "middle", "last", "boundary"])
@pytest.mark.parametrize("where", ["inside", "after"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_resume_matches_uninterrupted_run(name, where, at, workers):
    ref = reference(name, workers)
    count, data = _checkpoint(ref, where, at)
    records, result, loader = _resume(name, workers, data)
    assert_same_records(records, ref["records"][count:])
    assert_same_outcome(result, ref["outcome"])


@pytest.mark.needs_cuda
@pytest.mark.parametrize("name", ["pause", "accuracy"])
def test_resume_on_cuda_matches_uninterrupted_run(name):
    """device='cuda': side-stream prefetch, the table and the random streams on the GPU (not run on CPU-only CI)."""

    def make():
        return make_loader(name, 2, device="cuda")

    states = {}
    full = make()
    records = train(full, on_batch=lambda ld, count: states.setdefault(count, save_state(ld)))
    for count in (1, len(records) // 2, len(records) - 3):
        resumed = make()
        resumed.load_state_dict(load_state(states[count]))
        assert_same_records(train(resumed), records[count:])
        assert_same_outcome(outcome(resumed), outcome(full))


@pytest.mark.parametrize("name", SCHEDULES)
def test_same_batches_with_and_without_workers(name):
    assert_same_records(reference(name, 2)["records"], reference(name, 0)["records"])


def test_resume_in_a_new_process(tmp_path):
    ref = reference("pause", 0)
    count, data = _checkpoint(ref, "after", "middle")
    state_file, out_file = tmp_path / "state.pt", tmp_path / "out.pt"
    state_file.write_bytes(data)
    script = HERE / "resume_helpers.py"
    done = subprocess.run(
        [sys.executable, str(script), "pause", "0", str(state_file), str(out_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = torch.load(out_file, weights_only=False)
    assert_same_records(got["records"], ref["records"][count:])
    assert_same_outcome(got["outcome"], ref["outcome"])


def test_state_before_the_first_batch_replays_the_epoch():
    ref = reference("removal", 0)
    loader = make_loader("removal", 0)
    loader.load_state_dict(load_state(ref["states"][(0, "end")][1]))
    it = iter(loader)  # epoch 1 begun, no batch taken
    data = save_state(loader)
    del it
    resumed = make_loader("removal", 0)
    resumed.load_state_dict(load_state(data))
    records = train(resumed)
    assert_same_records(records, ref["records"][ref["states"][(0, "end")][0] :])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_does_not_load_skipped_samples(workers):
    ref = reference("removal", workers)
    epoch, k = 1, 3
    count, data = ref["states"][(epoch, k)]
    epoch_records = [r for r in ref["records"] if r[0] == epoch]
    skipped = torch.cat([r[3]["id"] for r in epoch_records[:k]])
    remaining = torch.cat([r[3]["id"] for r in epoch_records[k:]])
    dataset = Pixels()
    loader = make_loader("removal", workers, dataset=dataset)
    loader.load_state_dict(load_state(data))
    assert int(dataset.loads.sum()) == 0
    ids = [extra["id"] for _, _, extra in loader]  # the rest of epoch 1
    assert loader.epoch == epoch
    assert torch.equal(torch.cat(ids), remaining)
    assert dataset.loads[skipped].sum() == 0
    assert torch.equal(dataset.loads[remaining], torch.ones_like(remaining))
    assert int(dataset.loads.sum()) == remaining.numel()


@pytest.mark.parametrize("at", ["last", "boundary"])
def test_state_after_the_last_batch_resumes_in_step_with_the_loop(at):
    """Inside the loop after the last batch ("last"), the epoch goes on: an empty pass closes it, as a loop that
    resumes the saved epoch expects. After the loop ended ("boundary"), the next iter() starts the next epoch."""
    ref = reference("removal", 0)
    epoch = ref["epochs"]["inside"]
    _, data = _checkpoint(ref, "inside", at)
    loader = make_loader("removal", 0)
    loader.load_state_dict(load_state(data))
    if at == "last":
        assert len(loader) == ref["batches"][epoch]  # the whole epoch's count, as for any loaded epoch
        assert list(loader) == [] and loader.epoch == epoch
    assert loader.history[-1]["batches"] == ref["batches"][epoch]  # the epoch is closed
    assert loader.history == ref["history"][: epoch + 1]
    batches = list(loader)
    assert loader.epoch == epoch + 1 and len(batches) == ref["batches"][epoch + 1]


def test_set_epoch_before_the_state_wins():
    ref = reference("removal", 0)
    loader = make_loader("removal", 0)
    loader.load_state_dict(load_state(ref["states"][(1, 2)][1]))
    loader.set_epoch(3)
    resumed = make_loader("removal", 0)
    resumed.load_state_dict(load_state(save_state(loader)))
    list(resumed)
    assert resumed.epoch == 3


# ---------------------------------------------------------------------- checkpoint safety
def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.device.type == "cpu"
    return value is None or isinstance(value, (bool, int, float, str))


def test_state_holds_only_tensors_and_plain_values():
    for _, data in reference("accuracy", 0)["states"].values():
        state = load_state(data)  # torch.load(weights_only=True)
        assert _plain(state)


@pytest.fixture(scope="module")
def mid_state() -> dict:
    return load_state(reference("removal", 0)["states"][(1, 2)][1])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: make_loader("removal", 0, dataset=Pixels(BATCH * 6)), "num_samples"),
        (
            lambda: ed.enlighten(
                DataLoader(Pixels(), batch_size=BATCH + 1, shuffle=True), make_schedule("removal"),
                num_classes=CLASSES, seed=SEED,
            ),
            "batch_size",
        ),
        (
            lambda: ed.enlighten(
                DataLoader(Pixels(), batch_size=BATCH, shuffle=True, drop_last=True), make_schedule("removal"),
                num_classes=CLASSES, seed=SEED,
            ),
            "drop_last",
        ),
        (lambda: make_loader("removal", 0, rank=0, world_size=2), "world_size"),
        (lambda: make_loader("removal", 0, rank=1, world_size=2), "world_size"),
        (lambda: make_loader("pause", 0), "schedule"),
        (
            lambda: ed.enlighten(
                DataLoader(Pixels(), batch_size=BATCH, shuffle=True), ed.high_loss_removal(3, fraction=0.25),
                num_classes=CLASSES, seed=SEED,
            ),
            "schedule period",
        ),
        (
            lambda: ed.enlighten(
                DataLoader(Pixels(), batch_size=BATCH, shuffle=True), make_schedule("removal"),
                num_classes=CLASSES, seed=SEED + 1,
            ),
            "seed",
        ),
    ],
    ids=["size", "batch_size", "drop_last", "world_size", "world_size_rank1", "schedule", "period", "seed"],
)
def test_state_from_another_setup_is_rejected(mid_state, build, match):
    loader = build()
    before = loader.state_dict()
    with pytest.raises(ValueError, match=match):
        loader.load_state_dict(mid_state)
    after = loader.state_dict()  # nothing was changed
    assert after["epoch"] == before["epoch"] and after["position"] == before["position"]
    assert torch.equal(after["table"]["count"], before["table"]["count"])


def _edit(state: dict, **changes) -> dict:
    state = dict(state)
    for key, value in changes.items():
        if value is _DROP:
            del state[key]
        else:
            state[key] = value
    return state


_DROP = object()


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"position": _DROP}, ValueError, "missing keys"),
        ({"version": 99}, ValueError, "version"),
        ({"position": -1}, ValueError, r"state\['position'\]"),
        ({"position": 10_000}, ValueError, "position"),
        ({"position": 1.5}, ValueError, r"state\['position'\]"),
        ({"open": "yes"}, ValueError, r"state\['open'\]"),
        ({"excluded": torch.tensor([0, 10_000])}, ValueError, r"state\['excluded'\]"),
        ({"excluded": [1, 2]}, ValueError, r"state\['excluded'\]"),
        ({"excluded": torch.tensor([3, 1, 3])}, ValueError, r"state\['excluded'\] should hold each index at most once, got .*\[3\]"),
        ({"history": None}, ValueError, r"state\['history'\]"),
        ({"history": []}, ValueError, r"state\['history'\] should end with the open epoch 1, got .* is None"),
        ({"history": [{"epoch": 0}]}, ValueError, r"should end with the open epoch 1, got .* last epoch is 0"),
        ({"tracker": {}}, ValueError, r"state\['tracker'\]"),
        ({"table": {"size": 44}}, ValueError, r"state\['table'\]"),
        ({"signature": None}, ValueError, "signature"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_malformed_state_is_rejected(mid_state, changes, error, match):
    loader = make_loader("removal", 0)
    length = len(loader)
    with pytest.raises(error, match=match):
        loader.load_state_dict(_edit(mid_state, **changes))
    assert loader.epoch == -1 and not loader.history and len(loader) == length  # untouched


def test_table_of_wrong_shape_is_rejected(mid_state):
    table = dict(mid_state["table"], last=torch.zeros(3))
    loader = make_loader("removal", 0)
    with pytest.raises(ValueError, match="last"):
        loader.load_state_dict(_edit(mid_state, table=table))
    assert loader.epoch == -1


def test_state_must_be_a_dict():
    with pytest.raises(TypeError, match="state should be a dict"):
        make_loader("removal", 0).load_state_dict([1, 2])


def test_stateful_dataloader_protocol():
    """The torchdata Stateful protocol: state_dict() and load_state_dict(state) -> None."""
    loader = make_loader("removal", 0)
    assert callable(loader.state_dict) and callable(loader.load_state_dict)
    assert loader.load_state_dict(loader.state_dict()) is None
    try:
        from torchdata.stateful_dataloader import Stateful
    except ImportError:
        return
    assert isinstance(loader, Stateful)


# ---------------------------------------------------------------------- streaming (tar shards)
def _stream_available() -> bool:
    try:
        from enlight_data.streaming import stream  # noqa: F401
    except ImportError:
        return False
    return True


needs_stream = pytest.mark.skipif(not _stream_available(), reason="enlight_data.streaming is not available")


@pytest.fixture(scope="module")
def shard_index(tmp_path_factory) -> str:
    return write_pixel_shards(str(tmp_path_factory.mktemp("shards")))


@needs_stream
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("at", ["first", "middle", "last", "boundary"])
@pytest.mark.parametrize("where", ["inside", "after"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_stream_resume_matches_uninterrupted_run(shard_index, name, where, at, workers):
    ref = reference(name, workers, shard_index)
    count, data = _checkpoint(ref, where, at)
    records, result, _ = _resume(name, workers, data, shard_index)
    assert_same_records(records, ref["records"][count:])
    assert_same_outcome(result, ref["outcome"])


@needs_stream
def test_stream_oracle_covers_the_period(shard_index):
    removal = reference("removal", 2, shard_index)["history"]
    assert removal[1]["in_period"] and removal[1]["removed"] > 0
    acc = reference("accuracy", 2, shard_index)["history"]
    assert any(h["removed"] > 0 for h in acc if h["in_period"]) and not acc[-1]["in_period"]


@needs_stream
def test_stream_resume_in_a_new_process(shard_index, tmp_path):
    ref = reference("accuracy", 2, shard_index)
    count, data = _checkpoint(ref, "inside", "middle")
    state_file, out_file = tmp_path / "state.pt", tmp_path / "out.pt"
    state_file.write_bytes(data)
    done = subprocess.run(
        [sys.executable, str(HERE / "resume_helpers.py"), "accuracy", "2", str(state_file), str(out_file), shard_index],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = torch.load(out_file, weights_only=False)
    assert_same_records(got["records"], ref["records"][count:])
    assert_same_outcome(got["outcome"], ref["outcome"])


@needs_stream
@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resume_does_not_decode_skipped_samples(shard_index, workers):
    ref = reference("removal", workers, shard_index)
    epoch, k = 1, 3
    _, data = ref["states"][(epoch, k)]
    epoch_records = [r for r in ref["records"] if r[0] == epoch]
    skipped = torch.tensor([i for r in epoch_records[:k] for i in pixel_ids(r[1])])
    remaining = torch.tensor([i for r in epoch_records[k:] for i in pixel_ids(r[1])])
    decoder = CountingNpyDecoder()
    loader = make_stream_loader("removal", workers, shard_index, decode=decoder)
    loader.load_state_dict(load_state(data))
    ids = [i for x, _ in loader for i in pixel_ids(x)]  # the rest of epoch 1
    assert loader.epoch == epoch and ids == remaining.tolist()
    assert int(decoder.counts[skipped].sum()) == 0
    assert torch.equal(decoder.counts[remaining], torch.ones_like(remaining))
    assert int(decoder.counts.sum()) == remaining.numel()


@needs_stream
def test_stream_state_from_other_shards_is_rejected(shard_index, tmp_path):
    state = load_state(reference("removal", 0, shard_index)["states"][(1, 2)][1])
    with pytest.raises(ValueError, match="state does not match this loader"):
        make_stream_loader("removal", 2, shard_index).load_state_dict(state)  # other workers, other order
    with pytest.raises(ValueError, match="batch_size"):
        ed.stream(shard_index, make_schedule("removal"), batch_size=BATCH + 1, num_workers=0, shuffle_buffer=6,
                  seed=SEED, num_classes=CLASSES).load_state_dict(state)


def test_loading_a_state_inside_the_loop_ends_the_pass_under_way():
    # A roll-back from inside the loop: the old pass must not go on handing out batches and recording their
    # losses into the loaded table.
    data = TensorDataset(torch.rand(40, 2), torch.arange(40) % 3, torch.arange(40))
    loader = ed.enlighten(DataLoader(data, batch_size=8), ed.high_loss_removal(2, fraction=0.25))
    for _, _, ids in loader:
        loader.record(ids.float())
    good = loader.state_dict()
    served = []
    with pytest.warns(UserWarning, match="load_state_dict.. ended the pass over epoch 1 that was under way"):
        for step, (_, _, ids) in enumerate(loader):
            served.append(ids.tolist())
            loader.record(torch.full((len(ids),), 99.0))
            if step == 1:
                loader.load_state_dict(good)
    assert len(served) == 2  # the pass ended at the load
    assert loader.losses().tolist() == [float(i) for i in range(40)]  # the loaded table, not the old pass's records
    again = [ids.tolist() for _, _, ids in loader]
    assert loader.epoch == 1 and again[:2] == served and len(again) == 4  # epoch 1 again, as from the checkpoint
