"""Distributed training with gloo: the same schedule, removal sets and epoch sizes on every rank.

Spawning a process costs a few seconds (``import torch``), so each world size
runs once per module (fixtures ``run2`` and ``run3``): every rank runs all the
checks in ``_CHECKS`` and saves plain results, and the tests compare the ranks.
"""

from __future__ import annotations

import io
import math
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import enlight_data as ed
from enlight_data.distributed import resolve_rank, sync_table
from enlight_data.feedback import LossTable

SPAWN_TIMEOUT_S = 120.0
EPOCHS = 5
FRACTION = 0.2
SIZES = {2: 101, 3: 100}  # neither divisible by its world size


# ---------------------------------------------------------------------- helpers run on every rank
def _data(n: int, classes: int = 4) -> TensorDataset:
    ids = torch.arange(n)
    return TensorDataset(ids.float().unsqueeze(1), ids % classes)


def _loss_value(ids: torch.Tensor, epoch: int, rank: int) -> torch.Tensor:
    """A deterministic per-sample loss; the rank term makes a padded duplicate's mean visible."""
    return ((ids * 7919 + epoch * 104729) % 1009).float() / 1009 + 0.5 * rank


def _hlr_run(n: int, *, pad: bool, batch_size: int, drop_last: bool, stop: tuple[int, int] | None = None,
             state: dict[str, Any] | None = None, group: Any = None) -> dict[str, Any]:
    """High-Loss Removal until epoch EPOCHS; ``stop=(epoch, batches)`` breaks off there and returns the state."""
    rank = dist.get_rank(group)
    loader = DataLoader(_data(n), batch_size=batch_size, shuffle=True, drop_last=drop_last)
    wrapped = ed.enlighten(loader, ed.high_loss_removal(3, fraction=FRACTION), seed=5, pad=pad, group=group)
    if state is not None:
        wrapped.load_state_dict(state)
    out: dict[str, Any] = {"served": {}, "excluded": {}, "losses": {}, "batches": {}, "lengths": {}}
    while (wrapped.epoch if wrapped.state_dict()["open"] else wrapped.epoch + 1) < EPOCHS:
        iterator = iter(wrapped)  # the next epoch, or the rest of a resumed one
        epoch = wrapped.epoch
        out["excluded"][epoch] = sorted(wrapped.state_dict()["excluded"].tolist())
        out["lengths"][epoch] = len(wrapped)
        served = out["served"].setdefault(epoch, [])
        done = 0
        for x, _ in iterator:
            ids = x[:, 0].long()
            served.extend(ids.tolist())
            wrapped.record(_loss_value(ids, epoch, rank))
            done += 1
            if stop is not None and (epoch, done) == stop:
                buffer = io.BytesIO()
                torch.save(wrapped.state_dict(), buffer)
                out["state"] = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
                return out
        out["batches"][epoch] = done
        out["losses"][epoch] = wrapped.losses()
    out["history"] = wrapped.history
    return out


def _check_shares(world_size: int) -> dict[str, Any]:
    n = SIZES[world_size]
    out: dict[str, Any] = {"resolved": resolve_rank(None, None)}
    for pad in (True, False):
        wrapped = ed.enlighten(DataLoader(_data(n), batch_size=4, shuffle=True), ed.Schedule(0), seed=1, pad=pad)
        served = [i for x, _ in wrapped for i in x[:, 0].long().tolist()]
        out[f"pad={pad}"] = {"served": served, "len": len(wrapped), "batches": wrapped.history[-1]["batches"]}
    return out


def _check_hlr(world_size: int) -> dict[str, Any]:
    n = SIZES[world_size]
    return {
        "pad": _hlr_run(n, pad=True, batch_size=8, drop_last=False),
        "truncate": _hlr_run(n, pad=False, batch_size=5, drop_last=True),
    }


def _check_resume(world_size: int) -> dict[str, Any]:
    n = SIZES[world_size]
    full = _hlr_run(n, pad=True, batch_size=8, drop_last=False)
    first = _hlr_run(n, pad=True, batch_size=8, drop_last=False, stop=(2, 3))
    rest = _hlr_run(n, pad=True, batch_size=8, drop_last=False, state=first.pop("state"))
    return {"full": full, "first": first, "rest": rest}


def _check_group(world_size: int) -> dict[str, Any]:
    """Data-parallel groups {0, 2} and {1}, as tensor parallelism makes them: each combines its own tables."""
    pair, alone = dist.new_group([0, 2]), dist.new_group([1])  # every rank creates every group
    group = alone if dist.get_rank() == 1 else pair
    out: dict[str, Any] = {"resolved": resolve_rank(None, None, group)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the group is synced: no "tables not combined" warning
        out["hlr"] = _hlr_run(SIZES[2], pad=True, batch_size=8, drop_last=False, group=group)
    try:
        resolve_rank(None, 3, pair if dist.get_rank() != 1 else alone)
    except ValueError as exc:
        out["mismatch"] = str(exc)
    return out


def _check_mixup_pause(world_size: int) -> dict[str, Any]:
    """Rank 0 predicts right from the start, the others from epoch 2: only the global accuracy
    (about 1 / world_size, then 1.0) ends the period, after epoch 2."""
    rank = dist.get_rank()
    schedule = ed.mixup_pause(ed.Period(until_accuracy=0.9, max_epochs=4), alpha=0.4)
    wrapped = ed.enlighten(DataLoader(_data(SIZES[world_size]), batch_size=8, shuffle=True), schedule,
                           num_classes=4, seed=2)
    criterion = wrapped.track(nn.CrossEntropyLoss())
    flags = []
    for epoch in range(EPOCHS):
        for _, y in wrapped:
            label = y.argmax(1)
            predicted = label if rank == 0 or epoch >= 2 else (label + 1) % 4
            criterion(nn.functional.one_hot(predicted, 4).float() * 4, y)
        flags.append(wrapped.history[-1]["in_period"])
    return {"flags": flags, "history": wrapped.history, "losses": wrapped.losses()}


def _check_sync(world_size: int) -> dict[str, Any]:
    """Dense, sparse and auto syncs of the same records; a size mismatch raises on every rank."""
    rank = dist.get_rank()
    g = torch.Generator().manual_seed(100 + rank)
    ids = torch.randint(0, 400, (300,), generator=g)  # duplicates within and across ranks
    losses = torch.randint(0, 64, (300,), generator=g).float() / 8  # dyadic: every sum is exact
    correct = torch.rand(300, generator=g) < 0.5
    out: dict[str, Any] = {}
    for mode in ("dense", "sparse", "auto"):
        table = LossTable(400)
        table.record(ids[:200], losses[:200], correct=correct[:200])
        table.record(ids[200:], losses[200:], correct=correct[200:])
        used = sync_table(table, mode=mode, sparse_min_size=0)  # type: ignore[arg-type]
        total, count, stats = table.pending()
        out[mode] = {"used": used, "sum": total.clone(), "count": count.clone(), "stats": stats.clone(),
                     "local_ids": ids, "local_losses": losses}
        table.finalize_epoch()
        out[mode]["losses"] = table.losses()
    from enlight_data import distributed

    narrow = distributed._row_width
    distributed._row_width = lambda size: 4  # int64 indices, as for tables of 2**31 samples or more
    try:
        wide = LossTable(400)
        wide.record(ids, losses, correct=correct)
        out["sparse_int64"] = (sync_table(wide, mode="sparse"), wide.pending()[0].clone(), wide.pending()[1].clone())
    finally:
        distributed._row_width = narrow
    empty = LossTable(400)
    out["sparse_empty"] = (sync_table(empty, mode="sparse"), int(empty.pending()[1].sum()))
    sparse_few = LossTable(100_000)  # few records in a big table: auto goes sparse
    sparse_few.record(ids, losses)
    out["auto_big"] = sync_table(sparse_few, sparse_min_size=0)
    try:
        sync_table(LossTable(10 + rank))
        out["mismatch"] = None
    except ValueError as exc:
        out["mismatch"] = str(exc)
    # Settings that would have some ranks all-reduce and others all-gather: refused, not a wait forever.
    out["exchange_mismatch"] = []
    settings = ((("dense", "sparse"), (0, 0)), (("auto", "sparse"), (0, 0)), (("auto", "auto"), (0, 10**9)))
    for modes, min_sizes in settings:
        table = LossTable(400)
        table.record(ids, losses)
        try:
            mode, min_size = modes[min(rank, 1)], min_sizes[min(rank, 1)]
            sync_table(table, mode=mode, sparse_min_size=min_size)  # type: ignore[arg-type]
            out["exchange_mismatch"].append(None)
        except ValueError as exc:
            out["exchange_mismatch"].append(str(exc))
    return out


def _check_stream(world_size: int) -> dict[str, Any]:
    """High-Loss Removal over tar shards (written by the parent) with stream()."""
    rank = dist.get_rank()
    index = _CONTEXT.get("shards")
    if index is None:
        return {"skipped": "no shards were written for this run"}
    wrapped = ed.stream(index, ed.high_loss_removal(3, fraction=FRACTION), batch_size=8, num_workers=0,
                        shuffle_buffer=16, seed=4)
    out: dict[str, Any] = {"served": {}, "excluded": {}, "losses": {}, "batches": {}, "lengths": {}}
    for epoch in range(4):
        iterator = iter(wrapped)
        out["excluded"][epoch] = sorted(wrapped.state_dict()["excluded"].tolist())
        out["lengths"][epoch] = len(wrapped)
        served = out["served"][epoch] = []
        for x, _ in iterator:
            ids = x.reshape(x.shape[0], -1)[:, 0].round().long()
            served.extend(ids.tolist())
            wrapped.record(_loss_value(ids, epoch, rank))
        out["batches"][epoch] = wrapped.history[-1]["batches"]
        out["losses"][epoch] = wrapped.losses()
    out["resolved"] = (wrapped._source.signature().get("rank"), wrapped._source.signature().get("world_size"))
    return out


class _OwnRandomSampler(torch.utils.data.Sampler):
    """A custom sampler without a ``generator`` attribute, drawing from its own random state."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.g = n, torch.Generator().manual_seed(seed)

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.g).tolist())

    def __len__(self) -> int:
        return self.n


def _first_epoch_error(make: Callable[[], Any], *, run: bool = True) -> str | None:
    """The error of building a loader and (with ``run``) running its first epoch, ended by the sync; or None."""
    try:
        loader = make()
        for _ in loader if run else ():
            pass
    except ValueError as exc:
        return str(exc)
    return None


def _second_epoch_error(make: Callable[[], Any]) -> str | None:
    """The error of two recorded epochs of a loader (the second's sync judges what the first's losses removed)."""
    try:
        loader = make()
        for _ in range(2):
            for x, _ in loader:
                loader.record(x[:, 0].float())
    except ValueError as exc:
        return str(exc)
    return None


def _ddp_error(make: Callable[[], Any], epochs: int) -> str | None:
    """The error of a loop with a collective at every step, as DDP's gradient all-reduce is, or None.

    A rank with more batches than another would wait in its extra step's all-reduce forever (the spawner then
    reports a deadlock): NOTE [ Checked before the first batch ].
    """
    try:
        loader = make()
        for _ in range(epochs):
            for x, _ in loader:
                dist.all_reduce(torch.ones(1))
                loader.record(x[:, 0].float())
    except ValueError as exc:
        return str(exc)
    return None


def _check_disagreement(world_size: int) -> dict[str, Any]:
    """Ranks that would read different global orders, or claim another rank or size, fail on every rank."""
    rank = dist.get_rank()

    def loader(**kw: Any) -> DataLoader:
        return DataLoader(_data(24), batch_size=4, **kw)

    schedule = ed.high_loss_removal(2, fraction=0.25)
    index = _CONTEXT.get("shards")
    return {
        "seed per rank": _first_epoch_error(lambda: ed.enlighten(loader(shuffle=True), schedule, seed=5 + rank)),
        "sampler per rank": _first_epoch_error(
            lambda: ed.enlighten(loader(sampler=_OwnRandomSampler(24, seed=rank)), schedule)),
        "same sampler": _first_epoch_error(lambda: ed.enlighten(loader(sampler=_OwnRandomSampler(24, 0)), schedule)),
        "stream seed per rank": None if index is None else _first_epoch_error(
            lambda: ed.stream(index, schedule, batch_size=8, num_workers=0, seed=rank)),
        # The same plan settings, different samples left out (here by a fraction that differs by rank).
        "stream removal per rank": None if index is None else _second_epoch_error(
            lambda: ed.stream(index, ed.high_loss_removal(3, fraction=0.25 * (rank + 1)), batch_size=8,
                              num_workers=0)),
        # Batch counts that differ by rank, in a loop with DDP's all-reduce at every step: refused before the first
        # batch of the pass (epoch 0's for the batch size, epoch 1's for the fraction), not left to hang.
        "batch size per rank": _ddp_error(lambda: ed.enlighten(DataLoader(_data(24), batch_size=4 + 2 * rank),
                                                               schedule), epochs=1),
        "removal per rank": _ddp_error(lambda: ed.enlighten(loader(shuffle=True), ed.high_loss_removal(
            2, fraction=0.25 * (rank + 1))), epochs=2),
        # Refused when built (rank 0's loader, accepted, is not run: its sync would wait for the others).
        "world_size": _first_epoch_error(lambda: ed.enlighten(loader(), schedule, world_size=world_size + 1),
                                         run=False),
        "rank 0 everywhere": _first_epoch_error(lambda: ed.enlighten(loader(), schedule, rank=0), run=False),
        "unsharded": [i for x, _ in ed.enlighten(loader(), ed.Schedule(1), world_size=1)
                      for i in x[:, 0].long().tolist()],
    }


def _check_nccl(world_size: int) -> dict[str, Any]:
    """A CPU table synced over NCCL goes through the rank's CUDA device and comes back."""
    out: dict[str, Any] = {}
    for mode in ("dense", "sparse"):
        table = LossTable(50)
        table.record(torch.tensor([1, 2, 2, 7]), torch.tensor([1.0, 2.0, 4.0, 0.5]), correct=torch.tensor([True] * 4))
        out[mode] = {"used": sync_table(table, mode=mode), "device": str(table.device),  # type: ignore[arg-type]
                     "losses": (table.finalize_epoch(), table.losses())}
    return out


def _early_loaders() -> dict[str, Any]:
    """Loaders made before init_process_group (NOTE [ A loader made before init_process_group ])."""
    schedule = ed.high_loss_removal(2, fraction=0.25)
    made = {
        "implicit": ed.enlighten(DataLoader(_data(24), batch_size=4), schedule),
        "world_size=1": ed.enlighten(DataLoader(_data(24), batch_size=4), schedule, world_size=1),
    }
    index = _CONTEXT.get("shards")
    if index is not None:
        made["stream"] = ed.stream(index, schedule, batch_size=8, num_workers=0)
    return made


def _check_made_before_init(world_size: int) -> dict[str, Any]:
    """A loader made before the process group, without rank/world_size, is refused at its first iter()."""
    out: dict[str, Any] = {}
    for name, loader in _CONTEXT["early"].items():
        try:
            out[name] = sum(x.shape[0] for x, _ in loader)
        except RuntimeError as exc:
            out[name] = str(exc)
    return out


_CONTEXT: dict[str, Any] = {}
_CHECKS: dict[str, Callable[[int], dict[str, Any]]] = {
    "made_before_init": _check_made_before_init,
    "shares": _check_shares,
    "hlr": _check_hlr,
    "mixup_pause": _check_mixup_pause,
    "group": _check_group,
    "sync": _check_sync,
    "resume": _check_resume,
    "stream": _check_stream,
    "disagreement": _check_disagreement,
    "nccl": _check_nccl,
}


def _rank_main(rank: int, world_size: int, out_dir: str, names: list[str], context: dict[str, Any]
               ) -> None:
    torch.set_num_threads(1)
    _CONTEXT.update(context)
    backend = context.get("backend", "gloo")
    if backend == "nccl":
        torch.cuda.set_device(rank)
    # A file rendezvous in the run's own directory: a free TCP port picked beforehand can be taken by another
    # process before rank 0 binds it.
    init = Path(out_dir, "rendezvous").as_uri()
    if "made_before_init" in names:
        _CONTEXT["early"] = _early_loaders()
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world_size)
    results: dict[str, Any] = {}
    try:
        for name in names:
            results[name] = _CHECKS[name](world_size)
    except BaseException:
        Path(out_dir, f"error{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        torch.save(results, Path(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def _spawn(world_size: int, names: list[str], context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run the named checks on ``world_size`` gloo ranks; kill them all after SPAWN_TIMEOUT_S."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=_rank_main, args=(r, world_size, tmp, names, context or {}))
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        errors = "\n".join(f.read_text() for f in sorted(Path(tmp).glob("error*.txt")))
        if hung:
            pytest.fail(f"ranks {hung} of {world_size} did not finish within {SPAWN_TIMEOUT_S} s (deadlock?)\n{errors}")
        if any(p.exitcode for p in procs):
            pytest.fail(f"ranks exited with {[p.exitcode for p in procs]}\n{errors}")
        return [torch.load(Path(tmp, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]


@pytest.fixture(scope="module")
def run2(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    samples = [(torch.tensor([float(i)]), i % 4) for i in range(SIZES[2])]
    index = ed.write_shards(samples, str(tmp_path_factory.mktemp("shards") / "train-%06d.tar"), maxcount=13,
                            image_format="npy", progress=False)
    return _spawn(2, [name for name in _CHECKS if name not in ("nccl", "group")], {"shards": index})


@pytest.fixture(scope="module")
def run3() -> list[dict[str, Any]]:
    return _spawn(3, ["shares", "hlr", "mixup_pause", "sync", "group"])


@pytest.fixture(params=[2, 3])
def runs(request: pytest.FixtureRequest) -> tuple[int, list[dict[str, Any]]]:
    return request.param, request.getfixturevalue(f"run{request.param}")


# ---------------------------------------------------------------------- the tests
def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, NaN where the other is NaN (samples without a loss)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


@pytest.mark.slow  # spawns gloo ranks
def test_rank_and_world_size_come_from_the_group(runs):
    world_size, ranks = runs
    assert [r["shares"]["resolved"] for r in ranks] == [(rank, world_size) for rank in range(world_size)]


@pytest.mark.slow  # spawns gloo ranks
def test_shares_are_disjoint_cover_the_data_and_have_equal_batches(runs):
    world_size, ranks = runs
    n = SIZES[world_size]
    padded = [r["shares"]["pad=True"] for r in ranks]
    served = [i for share in padded for i in share["served"]]
    assert set(served) == set(range(n))
    assert len(served) == math.ceil(n / world_size) * world_size  # only the padding repeats
    truncated = [r["shares"]["pad=False"] for r in ranks]
    served = [i for share in truncated for i in share["served"]]
    assert len(served) == len(set(served)) == (n // world_size) * world_size
    for shares in (padded, truncated):
        assert len({(s["len"], s["batches"], len(s["served"])) for s in shares}) == 1


@pytest.mark.parametrize("variant", ["pad", "truncate"])
@pytest.mark.slow  # spawns gloo ranks
def test_high_loss_removal_is_identical_on_every_rank(runs, variant):
    world_size, ranks = runs
    n = SIZES[world_size]
    runs_ = [r["hlr"][variant] for r in ranks]
    first = runs_[0]
    for other in runs_[1:]:
        assert other["excluded"] == first["excluded"]
        for epoch in range(EPOCHS):  # bitwise: the tables are equal after each sync
            assert _same(other["losses"][epoch], first["losses"][epoch]), f"epoch {epoch}"
        assert other["history"] == first["history"]
    for epoch in range(EPOCHS):
        excluded = set(first["excluded"][epoch])
        lengths = {r["lengths"][epoch] for r in runs_} | {r["batches"][epoch] for r in runs_}
        assert len(lengths) == 1, f"epoch {epoch}: batch counts differ across ranks: {lengths}"
        served = [i for r in runs_ for i in r["served"][epoch]]
        assert not excluded & set(served)
        if variant == "pad":
            assert set(served) == set(range(n)) - excluded
        if 1 <= epoch < 3:  # in the period: the top FRACTION of the previous epoch's synced table
            previous = first["losses"][epoch - 1]
            known = int((~previous.isnan()).sum())
            top = torch.topk(torch.nan_to_num(previous, nan=-1.0), math.floor(FRACTION * known)).indices
            assert excluded == set(top.tolist())
        elif epoch == 0 or epoch >= 3:
            assert excluded == set()
    assert [h["in_period"] for h in first["history"]] == [True, True, True, False, False]


@pytest.mark.slow  # spawns gloo ranks
def test_padded_duplicates_keep_the_mean_of_their_records(run2):
    run = [r["hlr"]["pad"] for r in run2]
    for epoch in range(EPOCHS):
        records: dict[int, list[float]] = {}
        for rank, r in enumerate(run):
            for i in r["served"][epoch]:
                records.setdefault(i, []).append(float(_loss_value(torch.tensor(i), epoch, rank)))
        assert any(len(v) > 1 for v in records.values())  # 101 samples over 2 ranks: one repeat
        table = run[0]["losses"][epoch]
        for i, values in records.items():
            assert float(table[i]) == pytest.approx(sum(values) / len(values), abs=1e-6)


@pytest.mark.slow  # spawns gloo ranks
def test_accuracy_triggered_mixup_pause_ends_on_every_rank_at_once(runs):
    world_size, ranks = runs
    first = ranks[0]["mixup_pause"]
    for other in ranks[1:]:
        assert other["mixup_pause"]["history"] == first["history"]
        assert _same(other["mixup_pause"]["losses"], first["losses"])
    assert first["flags"] == [True, True, True, False, False]
    accuracy = [h["accuracy"] for h in first["history"]]
    assert accuracy[0] < 0.9 and accuracy[1] < 0.9 and accuracy[2] == 1.0


@pytest.mark.slow  # spawns gloo ranks
def test_sparse_sync_equals_dense_and_tables_agree(runs):
    world_size, ranks = runs
    syncs = [r["sync"] for r in ranks]
    for s in syncs:
        assert (s["dense"]["used"], s["sparse"]["used"], s["auto"]["used"], s["auto_big"]) == (
            "dense", "sparse", "dense", "sparse")
        for mode in ("sparse", "auto"):
            for key in ("sum", "count", "stats", "losses"):
                assert _same(s[mode][key], s["dense"][key]), (mode, key)
        for key in ("sum", "count", "stats", "losses"):
            assert _same(s["dense"][key], syncs[0]["dense"][key])
        used, total, count = s["sparse_int64"]
        assert used == "sparse" and _same(total, s["dense"]["sum"]) and _same(count, s["dense"]["count"])
        assert s["sparse_empty"] == ("sparse", 0)
    # The synced table is the sum of every rank's records.
    expected_sum = torch.zeros(400)
    expected_count = torch.zeros(400)
    for s in syncs:
        expected_sum.index_add_(0, s["dense"]["local_ids"], s["dense"]["local_losses"])
        expected_count.index_add_(0, s["dense"]["local_ids"], torch.ones(300))
    assert torch.equal(syncs[0]["dense"]["sum"], expected_sum)
    assert torch.equal(syncs[0]["dense"]["count"], expected_count)
    assert syncs[0]["dense"]["stats"][1] == 300 * world_size  # seen


@pytest.mark.slow  # spawns gloo ranks
def test_table_size_mismatch_raises_on_every_rank(runs):
    _, ranks = runs
    for r in ranks:
        assert r["sync"]["mismatch"] is not None
        assert "same size on every rank" in r["sync"]["mismatch"]


@pytest.mark.slow  # spawns gloo ranks
def test_sync_settings_that_differ_by_rank_raise_on_every_rank(runs):
    _, ranks = runs
    for r in ranks:
        assert len(r["sync"]["exchange_mismatch"]) == 3
        for message in r["sync"]["exchange_mismatch"]:
            assert message is not None and "same mode and sparse_min_size on every rank" in message


@pytest.mark.slow  # spawns gloo ranks
def test_two_ranks_resume_mid_epoch_and_reproduce_the_run(run2):
    for r in run2:
        full, first, rest = r["resume"]["full"], r["resume"]["first"], r["resume"]["rest"]
        for epoch in range(EPOCHS):
            served = first["served"].get(epoch, []) + rest["served"].get(epoch, [])
            assert served == full["served"][epoch], f"epoch {epoch}"
            if epoch >= 2:  # the epochs the resumed loader finished
                assert _same(rest["losses"][epoch], full["losses"][epoch]), f"epoch {epoch}"
        assert rest["history"] == full["history"]
    assert run2[0]["resume"]["rest"]["history"] == run2[1]["resume"]["rest"]["history"]


@pytest.mark.slow  # spawns gloo ranks
def test_a_loader_made_before_init_process_group_is_refused_not_read_whole_on_every_rank(run2):
    for result in (r["made_before_init"] for r in run2):
        for name in ("implicit", "stream"):
            assert result[name].startswith(
                "the loader was made before torch.distributed.init_process_group(), without rank= and world_size=: "
                "each of the 2 ranks would read the whole dataset"), (name, result[name])
        assert result["world_size=1"] == 24  # every process the whole dataset, asked for


@pytest.mark.slow  # spawns gloo ranks
def test_stream_over_shards_with_two_ranks(run2):
    results = [r["stream"] for r in run2]
    if "skipped" in results[0]:
        pytest.skip(results[0]["skipped"])
    first = results[0]
    assert [r["resolved"] for r in results] == [(0, 2), (1, 2)]
    for other in results[1:]:
        assert other["excluded"] == first["excluded"]
        assert other["lengths"] == first["lengths"] and other["batches"] == first["batches"]
        for epoch in first["losses"]:
            assert _same(other["losses"][epoch], first["losses"][epoch]), f"epoch {epoch}"
    for epoch in first["losses"]:
        excluded = set(first["excluded"][epoch])
        served = [i for r in results for i in r["served"][epoch]]
        assert len(first["served"][epoch]) == len(results[1]["served"][epoch])
        assert not excluded & set(served)
        known = 0 if epoch in (0, 3) else int((~first["losses"][epoch - 1].isnan()).sum())
        assert len(excluded) == math.floor(FRACTION * known)
        assert len(served) == math.ceil((SIZES[2] - len(excluded)) / 2) * 2


@pytest.mark.slow
@pytest.mark.needs_cuda
def test_nccl_sync_moves_a_cpu_table_through_the_gpu():
    (result,) = _spawn(1, ["nccl"], {"backend": "nccl"})  # one rank: NCCL needs a GPU per rank
    for mode in ("dense", "sparse"):
        r = result["nccl"][mode]
        stats, losses = r["losses"]
        assert r["used"] == mode and r["device"] == "cpu"
        assert stats["correct"] == 4 and stats["recorded"] == 4
        assert losses[[1, 2, 7]].tolist() == [1.0, 3.0, 0.5] and losses.isnan().sum() == 47


# ---------------------------------------------------------------------- in-process checks
def test_distributed_sampler_in_the_loader_is_replaced_not_sharded_twice():
    data = _data(23)
    served = []
    for rank in range(2):
        loader = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, num_replicas=2, rank=rank))
        wrapped = ed.enlighten(loader, ed.Schedule(0), seed=3, rank=rank, world_size=2)
        with pytest.warns(RuntimeWarning, match="torch.distributed is not initialised") as caught:
            served.append([i for x, _ in wrapped for i in x[:, 0].long().tolist()])
        assert caught[0].filename == __file__  # the loop, not the package's end-of-epoch code
    assert len(served[0]) == len(served[1]) == 12
    assert set(served[0]) | set(served[1]) == set(range(23))


def test_a_distributed_samplers_drop_last_and_seed_are_kept_or_refused():
    # drop_last=True truncates the shares, as the sampler does: sample 10 of 11 is not trained on, none repeats.
    data = _data(11)
    for rank, expected in ((0, [0, 2, 4, 6, 8]), (1, [1, 3, 5, 7, 9])):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=False, drop_last=True)
        wrapped = ed.enlighten(DataLoader(data, batch_size=4, sampler=sampler), ed.Schedule(0), rank=rank,
                               world_size=2)
        with pytest.warns(RuntimeWarning, match="torch.distributed is not initialised"):
            served = [i for x, _ in wrapped for i in x[:, 0].long().tolist()]
        assert served == expected == list(sampler)
    sampler = DistributedSampler(data, num_replicas=2, rank=0, shuffle=False, drop_last=True)
    with pytest.raises(ValueError, match=r"DistributedSampler with drop_last=True, which truncates .* given "
                                         r"pad=True; pass pad=False"):
        ed.enlighten(DataLoader(data, batch_size=4, sampler=sampler), ed.Schedule(0), rank=0, world_size=2, pad=True)
    # Its seed cannot be kept (the order is drawn from enlighten's seed, per epoch): a warning says so.
    sampler = DistributedSampler(data, num_replicas=2, rank=0, shuffle=True, seed=5)
    with pytest.warns(UserWarning, match=r"the DistributedSampler's seed=5 is not used: the order comes from "
                                         r"enlighten\(seed=0\)") as caught:
        ed.enlighten(DataLoader(data, batch_size=4, sampler=sampler), ed.Schedule(0), rank=0, world_size=2)
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same seed in both places, or the sampler's default: nothing to warn about
        ed.enlighten(DataLoader(data, batch_size=4, sampler=sampler), ed.Schedule(0), seed=5, rank=0, world_size=2)
        default = DistributedSampler(data, num_replicas=2, rank=0, shuffle=True)
        ed.enlighten(DataLoader(data, batch_size=4, sampler=default), ed.Schedule(0), seed=3, rank=0, world_size=2)


def test_distributed_sampler_must_match_the_rank():
    data = _data(10)
    loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, num_replicas=2, rank=1))
    with pytest.raises(ValueError, match="DistributedSampler.*num_replicas=2, rank=1.*world_size=3, rank=0"):
        ed.enlighten(loader, ed.Schedule(0), rank=0, world_size=3)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"rank should be given with world_size=2 when torch.distributed is not "
                                         r"initialised, got rank=None \(every process would take rank 0's share\)"):
        resolve_rank(None, 2)
    assert resolve_rank(None, 1) == (0, 1) and resolve_rank(None, None) == (0, 1)
    with pytest.raises(ValueError, match="rank should be in \\[0, world_size=2\\), got rank=2"):
        resolve_rank(2, 2)
    with pytest.raises(ValueError, match="world_size should be >= 1, got world_size=0"):
        resolve_rank(0, 0)
    with pytest.raises(TypeError, match="rank should be an int"):
        resolve_rank(0.5, 2)
    with pytest.raises(ValueError, match="mode should be 'auto', 'dense' or 'sparse', got mode='ring'"):
        sync_table(LossTable(4), mode="ring")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("backend", "table_device", "expected"),
    [
        ("gloo", "cpu", "cpu"),
        ("cpu:gloo,cuda:nccl", "cpu", "cpu"),
        ("nccl", "cpu", "cuda:3"),
        ("nccl", "cuda:1", "cuda:1"),
    ],
)
def test_nccl_groups_get_the_ranks_cuda_device(monkeypatch, backend, table_device, expected):
    from enlight_data import distributed

    monkeypatch.setattr(distributed.dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(distributed.torch.cuda, "current_device", lambda: 3)  # torch.cuda.set_device(3) was called
    assert distributed._comm_device(None, torch.device(table_device)) == torch.device(expected)


@pytest.mark.slow  # spawns gloo ranks
def test_a_data_parallel_group_shards_and_syncs_within_itself(run3):
    groups = [r["group"] for r in run3]
    assert [g["resolved"] for g in groups] == [(0, 2), (0, 1), (1, 2)]
    pair = [groups[0]["hlr"], groups[2]["hlr"]]
    assert pair[0]["excluded"] == pair[1]["excluded"] and pair[0]["history"] == pair[1]["history"]
    for epoch in range(EPOCHS):
        assert _same(pair[0]["losses"][epoch], pair[1]["losses"][epoch])
        served = pair[0]["served"][epoch] + pair[1]["served"][epoch]
        assert set(served) == set(range(SIZES[2])) - set(pair[0]["excluded"][epoch])
    alone = groups[1]["hlr"]
    assert set(alone["served"][0]) == set(range(SIZES[2]))  # a group of one reads everything
    assert all("world_size should be group's size" in g["mismatch"] for g in groups)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)])
def test_the_check_before_a_pass_runs_where_the_loader_or_its_table_is(device):
    # On an NCCL group the check's tensors go to this device (the loader's device=, else the table's), not the current
    # CUDA device of a job that passed device=f"cuda:{local_rank}" without torch.cuda.set_device.
    loader = ed.enlighten(DataLoader(_data(8), batch_size=4), ed.high_loss_removal(1, fraction=0.25), rank=0,
                          world_size=2, device=device)
    seen = []
    loader._check_pass = lambda epoch, batches, on: seen.append((epoch, batches, on))
    for _ in range(2):
        for x, _ in loader:
            loader.record(x[:, 0].float())
    assert seen == [(0, 1, torch.device(device, 0) if device == "cuda" else torch.device("cpu")),
                    (1, 1, loader._table.device)]


def test_a_group_needs_an_initialised_process_group():
    with pytest.raises(ValueError, match="group needs an initialised process group"):
        ed.enlighten(DataLoader(_data(8), batch_size=4), ed.Schedule(1), group=object())


@pytest.mark.slow  # spawns gloo ranks
def test_ranks_that_would_read_different_orders_or_claim_another_rank_fail_on_every_rank(run2):
    # Silently overlapping shares (some samples twice an epoch, others never) are refused: before the first batch for
    # a seed or a custom sampler that differs by rank, at once for a rank or size the group does not have.
    results = [r["disagreement"] for r in run2]
    for rank, result in enumerate(results):
        for case in ("seed per rank", "sampler per rank", "stream seed per rank"):
            assert result[case] is not None and result[case].startswith(
                "ranks should read one global order per epoch (the same seed, data, sampling and schedule on every "
                "rank), got different ones: digests ["), (rank, case, result[case])
        # A schedule that removes different samples by rank is named as a cause, not only the seed and the sampler.
        assert "a removal fraction that differs by rank" in result["stream removal per rank"]
        assert result["same sampler"] is None  # the same draws on every rank: fine
        assert result["batch size per rank"].startswith(
            "ranks should yield the same number of batches in each pass over an epoch, got [3, 2] by rank in epoch 0: "
            "a rank with more would wait forever in its extra step's collective (DDP's gradient all-reduce)")
        assert result["removal per rank"].startswith(
            "ranks should yield the same number of batches in each pass over an epoch, got [3, 2] by rank in epoch 1")
        assert result["stream removal per rank"].startswith(
            "ranks should yield the same number of batches in each pass over an epoch, got [5, 4] by rank in epoch 1")
        assert result["world_size"].startswith("world_size should be the process group's size 2 (the losses are "
                                               "combined over it) or 1 (a loader of its own on each process), got "
                                               "world_size=3")
        assert sorted(result["unsharded"]) == list(range(24))  # world_size=1: all the data on every process
        if rank == 0:
            assert result["rank 0 everywhere"] is None
        else:
            assert result["rank 0 everywhere"].startswith(
                f"rank should be this process' rank {rank} in the process group, got rank=0")
