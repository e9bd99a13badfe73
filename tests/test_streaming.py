"""stream() and write_shards(): tar shards under a schedule, ids, exclusion before decoding, ranks, bad data.

Every test writes its own tiny shards into ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import json
import os
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

import enlight_data as ed
from enlight_data.shards import ShardError, hash_id, load_catalog, shard_names
from fault_helpers import kill_a_worker

needs_cuda = pytest.mark.needs_cuda  # skipped without a GPU by conftest.py
CLASSES = 4


class Tiles:
    """``n`` uint8 3×4×4 images whose pixels all equal ``i`` (exact through png); label ``i % CLASSES``."""

    classes = ["a", "b", "c", "d"]

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((3, 4, 4), i, dtype=torch.uint8), i % CLASSES


class Sequences:
    """1-D float sequences of length 6 starting at ``i``; label ``i % CLASSES``."""

    def __len__(self) -> int:
        return 30

    def __getitem__(self, i: int):
        return torch.arange(6, dtype=torch.float32) + i, i % CLASSES


class CountingDecoder:
    """Decodes ``npy``/``png`` samples and counts decodes per id in shared memory (workers included)."""

    def __init__(self, n: int) -> None:
        self.counts = torch.zeros(n, dtype=torch.int64).share_memory_()

    def __call__(self, sample):
        i = int(sample["__key__"])
        self.counts[i] += 1
        return torch.full((3, 4, 4), float(i)), int(sample["cls"])


def write(tmp_path, n=40, maxcount=8, fmt="png", name="train"):
    return ed.write_shards(Tiles(n), str(tmp_path / f"{name}-%04d.tar"), maxcount=maxcount, image_format=fmt,
                           progress=False)


def ids_of(x: torch.Tensor) -> list[int]:
    return x.reshape(x.shape[0], -1)[:, 0].round().long().tolist()


def epoch_ids(loader) -> list[list[int]]:
    return [ids_of(x) for x, _ in loader]


# ---------------------------------------------------------------------------------------------- write_shards


def test_write_shards_index_keys_and_formats(tmp_path):
    index = write(tmp_path, n=20, maxcount=8)
    meta = json.loads(Path(index).read_text())
    assert os.path.basename(index) == "train-index.json"
    assert meta["total"] == 20 and meta["num_classes"] == CLASSES
    assert [(s["count"], s["offset"]) for s in meta["shards"]] == [(8, 0), (8, 8), (4, 16)]
    with tarfile.open(tmp_path / "train-0001.tar") as tar:
        names = tar.getnames()
    assert names[:2] == ["000000008.cls", "000000008.png"]
    # Non-image tensors become npy, 1-channel images jpg.
    ed.write_shards(Sequences(), str(tmp_path / "seq-%02d.tar"), progress=False)
    with tarfile.open(tmp_path / "seq-00.tar") as tar:
        assert {n.rsplit(".", 1)[1] for n in tar.getnames()} == {"cls", "npy"}
    gray = [(torch.zeros(1, 5, 5), 0)]
    ed.write_shards(gray, str(tmp_path / "gray-%02d.tar"), progress=False)
    with tarfile.open(tmp_path / "gray-00.tar") as tar:
        assert sorted(tar.getnames()) == ["000000000.cls", "000000000.jpg"]
    # PIL images and float images in [0, 1] round-trip through png.
    from PIL import Image

    pil = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    index = ed.write_shards([(pil, 1), (torch.full((3, 4, 4), 0.5), 2)], str(tmp_path / "pil-%02d.tar"),
                            image_format="png", progress=False)
    x, y = next(iter(ed.stream(index, ed.Schedule(1), batch_size=2, num_workers=0, shuffle_buffer=0)))
    assert torch.equal(x[0], torch.from_numpy(np.array(pil)).permute(2, 0, 1)) and (x[1] == 128).all()
    assert y.tolist() == [1, 2]


def test_write_shards_errors(tmp_path):
    with pytest.raises(ValueError, match="should not be empty"):
        ed.write_shards([], str(tmp_path / "a-%02d.tar"), progress=False)
    for pattern in ("a.tar", "a%.tar"):
        with pytest.raises(ValueError, match="%-format"):
            ed.write_shards(Tiles(3), str(tmp_path / pattern), progress=False)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        ed.write_shards([(torch.full((3, 2, 2), 2.0), 0)], str(tmp_path / "b-%02d.tar"), progress=False)
    with pytest.raises(TypeError, match="labels should be integers"):
        ed.write_shards([(torch.zeros(3), 0.5)], str(tmp_path / "c-%02d.tar"), progress=False)
    with pytest.raises(ValueError, match="image_format should be one of"):
        ed.write_shards(Tiles(3), str(tmp_path / "d-%02d.tar"), image_format="gif", progress=False)


def test_write_shards_does_not_overwrite_the_index_of_other_shards(tmp_path):
    train = ed.write_shards(Tiles(10), str(tmp_path / "%04d-train.tar"), maxcount=5, progress=False)
    assert ed.write_shards(Tiles(7), str(tmp_path / "%04d-train.tar"), maxcount=5, progress=False) == train  # rewritten
    with pytest.raises(ValueError, match=r"pattern should not share its index with other shards: .*index.json indexes "
                                         r"'0000-train.tar', which '.*%04d-val.tar' would not write"):
        ed.write_shards(Tiles(4), str(tmp_path / "%04d-val.tar"), maxcount=5, progress=False)
    with open(train) as f:
        assert json.load(f)["total"] == 7  # train's index is still train's
    assert not (tmp_path / "0000-val.tar").exists()  # refused before anything was written


def test_write_shards_checks_progress_is_a_bool(tmp_path):
    with pytest.raises(TypeError, match="progress should be a bool, got progress='no' of type str"):
        ed.write_shards(Tiles(3), str(tmp_path / "p-%02d.tar"), progress="no")  # type: ignore[arg-type]
    assert not os.listdir(tmp_path)  # refused before anything is written


@pytest.mark.parametrize(
    "pattern, index_name, first_shard",
    [
        ("a%%b-%03d.tar", "a%b-index.json", "a%b-000.tar"),
        ("%%%02d.tar", "%index.json", "%00.tar"),
        ("x%%%%y_%d.tar", "x%%y_index.json", "x%%y_0.tar"),
        ("train-%06d.tar", "train-index.json", "train-000000.tar"),
    ],
)
def test_write_shards_index_prefix_unescapes_percent_signs(tmp_path, pattern, index_name, first_shard):
    index = ed.write_shards(Tiles(3), str(tmp_path / pattern), progress=False)
    assert os.path.basename(index) == index_name
    assert sorted(os.listdir(tmp_path)) == sorted([index_name, first_shard])
    assert int(load_catalog(index).counts.sum()) == 3


def test_an_index_is_known_by_its_extension_in_any_case(tmp_path):
    index = ed.write_shards(Tiles(3), str(tmp_path / "t-%03d.tar"), progress=False)
    renamed = os.path.join(tmp_path, "T-INDEX.JSON")
    os.rename(index, renamed)  # read as a tar shard before: "unreadable at its start"
    assert int(load_catalog(renamed).counts.sum()) == 3


def test_write_shards_warns_once_about_fields_it_does_not_write(tmp_path):
    samples = [(torch.zeros(3, 2, 2, dtype=torch.uint8), i, f"extra-{i}") for i in range(3)]
    with pytest.warns(UserWarning, match=r"dataset\[0\] has 3 fields, and the other 1 are not written") as caught:
        index = ed.write_shards(samples, str(tmp_path / "e-%02d.tar"), progress=False)
    assert len([w for w in caught if "fields" in str(w.message)]) == 1
    assert json.loads(Path(index).read_text())["total"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pairs: nothing to say
        ed.write_shards([s[:2] for s in samples], str(tmp_path / "f-%02d.tar"), progress=False)


def test_write_shards_refuses_lossy_or_invalid_samples(tmp_path):
    from PIL import Image

    nan = torch.full((3, 2, 2), 0.5)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"finite values.*1 NaN or infinite values at dataset\[0\]"):
        ed.write_shards([(nan, 0)], str(tmp_path / "n-%02d.tar"), image_format="png", progress=False)
    with pytest.raises(ValueError, match=r"labels should be class indices >= 0, got dataset\[1\]\[1\]=-1"):
        ed.write_shards([(torch.zeros(2), 0), (torch.zeros(2), -1)], str(tmp_path / "l-%02d.tar"), progress=False)
    # A shard number in the folder part: refused before anything is created.
    with pytest.raises(ValueError, match="in the file name, not the folder"):
        ed.write_shards(Tiles(4), str(tmp_path / "part-%03d" / "data.tar"), maxcount=2, progress=False)
    assert not any(p.name.startswith("part-") for p in tmp_path.iterdir())
    # PIL modes jpg/png cannot hold are refused there, and stored exactly as (C, H, W) npy with image_format="npy".
    images = [
        Image.fromarray(np.array([[0, 300, 1000, 65535]], dtype=np.uint16)),
        Image.fromarray(np.array([[0.25, 0.5, 1.5, -2.0]], dtype=np.float32)),
        Image.fromarray(np.array([[[10, 20, 30, 0], [10, 20, 30, 255]]], dtype=np.uint8), "RGBA"),
    ]
    for k, image in enumerate(images):
        with pytest.raises(ValueError, match=f"mode 'L' or 'RGB'.*got mode={image.mode!r}.*image_format='npy'"):
            ed.write_shards([(image, 0)], str(tmp_path / f"m{k}-%02d.tar"), image_format="png", progress=False)
        index = ed.write_shards([(image, 0)], str(tmp_path / f"x{k}-%02d.tar"), image_format="npy", progress=False)
        loader = ed.stream(index, ed.high_loss_removal(1, fraction=0.1), batch_size=1, num_workers=0,
                           decode=lambda d: (torch.from_numpy(np.load(io.BytesIO(d["npy"]))), int(d["cls"])))
        (x, _), = list(loader)
        pixels = np.asarray(image)
        expected = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        assert x[0].numpy().dtype == expected.dtype and np.array_equal(x[0].numpy(), expected)


# ---------------------------------------------------------------------------------------------- ids, exclusion


@pytest.mark.parametrize("workers", [0, 2])
def test_recorded_losses_land_on_their_ids(tmp_path, workers):
    index = write(tmp_path, n=48)  # 6 shards of 8, 8 batches of 6: 24 samples and 3 shards per worker
    loader = ed.stream(index, ed.high_loss_removal(1, fraction=0.0), batch_size=6, num_workers=workers,
                       shuffle_buffer=5)
    seen = []
    for x, _ in loader:
        ids = ids_of(x)
        seen += ids
        loader.record(torch.tensor(ids, dtype=torch.float32) + 0.5)
    assert sorted(seen) == list(range(48))  # one full pass: every sample exactly once
    assert torch.equal(loader.losses(), torch.arange(48, dtype=torch.float32) + 0.5)
    assert loader.history[-1]["seen"] == 48 and loader.history[-1]["skipped"] == 0


@pytest.mark.parametrize("workers,persistent", [(0, False), (2, False), (2, True)])
def test_removed_samples_are_never_decoded(tmp_path, workers, persistent):
    index = write(tmp_path, n=48)
    decoder = CountingDecoder(48)
    loader = ed.stream(index, ed.high_loss_removal(3, fraction=0.25), batch_size=6, num_workers=workers,
                       decode=decoder, persistent_workers=persistent, shuffle_buffer=8)
    for epoch in range(3):
        before = decoder.counts.clone()
        seen = []
        upcoming = len(loader)  # the epoch the next iter() starts, its removal included
        batches = 0
        for x, _ in loader:
            assert len(loader) == upcoming
            batches += 1
            ids = ids_of(x)
            seen += ids
            loader.record(torch.tensor(ids, dtype=torch.float32))  # loss = id: the top ids go
        decoded = decoder.counts - before
        assert int(decoded.sum()) == len(seen) == 48 - loader.history[-1]["removed"]
        assert batches == upcoming
        if epoch:
            removed = torch.arange(36, 48)  # the 25 % highest losses
            assert loader.history[-1]["removed"] == 12
            assert int(decoded[removed].sum()) == 0 and not set(seen) & set(removed.tolist())
            assert upcoming == 6  # ceil(36 / 6), computed from the index and the removal count


def test_close_epoch_closes_a_streamed_epoch_and_a_state_after_a_dropped_empty_pass_goes_on_alike(tmp_path):
    index = write(tmp_path, n=24)

    def make():
        return ed.stream(index, ed.high_loss_removal(3, fraction=0.25), batch_size=4, num_workers=0, seed=1)

    loader = make()
    it = iter(loader)
    for _ in range(len(loader)):  # every batch, never asking for one more (Lightning's loop)
        x, _ = next(it)
        loader.record(torch.tensor(ids_of(x), dtype=torch.float32))
    state = loader.state_dict()
    entry = loader.close_epoch()
    assert entry["batches"] == 6 and entry["seen"] == 24 and entry["skipped"] == 0 and next(it, None) is None
    # Resumed from the state at the last batch, the empty pass that closes the epoch made and dropped (a probe): a
    # state saved then, loaded elsewhere, begins epoch 1 with the same removal as the process that saved it.
    resumed = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed.load_state_dict(state)
    iter(resumed)
    clone = make()
    clone.load_state_dict(resumed.state_dict())
    passes = [[ids_of(x) for x, _ in run] for run in (resumed, clone)]
    assert passes[0] == passes[1] and len(passes[0]) == 5  # 6 of 24 removed: the highest ids
    assert not {i for b in passes[0] for i in b} & set(range(18, 24))
    assert [h["epoch"] for h in clone.history] == [h["epoch"] for h in resumed.history] == [0, 1]


# ---------------------------------------------------------------------------------------------- ranks, determinism


@pytest.mark.filterwarnings("ignore:world_size > 1 but torch.distributed is not initialised")
@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_get_disjoint_complete_equal_shares(tmp_path, workers):
    index = write(tmp_path, n=48, maxcount=8)  # 6 shards: 2 per rank, 1 per worker
    shares = []
    for rank in range(3):
        loader = ed.stream(index, ed.Schedule(1), batch_size=4, num_workers=workers, rank=rank,
                           world_size=3, shuffle_buffer=4)
        shares.append([i for b in epoch_ids(loader) for i in b])
        assert len(loader) == 4
    assert [len(s) for s in shares] == [16, 16, 16]
    assert sorted(i for s in shares for i in s) == list(range(48))


@pytest.mark.filterwarnings("ignore:world_size > 1 but torch.distributed is not initialised")
def test_uneven_ranks_still_yield_equal_batch_counts(tmp_path):
    index = write(tmp_path, n=45, maxcount=7)  # 7 shards of 7, 7, ..., 3
    counts = set()
    for rank in range(2):
        loader = ed.stream(index, ed.Schedule(1), batch_size=4, num_workers=2, rank=rank,
                           world_size=2, shuffle_buffer=0)
        batches = epoch_ids(loader)
        counts.add((len(batches), len(loader), sum(map(len, batches))))
    assert counts == {(6, 6, 23)}  # ceil(45 / 2) = 23 samples, ceil(23 / 4) = 6 batches on every rank


def _catalog(counts):
    from enlight_data.shards import ShardCatalog

    n = sum(counts)
    return ShardCatalog(urls=[f"s{i}.tar" for i in range(len(counts))], counts=torch.tensor(counts),
                        ids=torch.arange(n), starts=torch.tensor([0, *np.cumsum(counts).tolist()]), num_ids=n)


@pytest.mark.parametrize(
    "counts,world_size,workers,batch_size,drop_last",
    [
        ([100] * 12, 1, 8, 10, False),  # the old plan left out and repeated 200 samples here
        ([100] * 12, 8, 1, 10, False),
        ([7] * 6 + [3], 2, 2, 4, False),
        ([13, 0, 5, 9, 1, 30, 2], 3, 2, 4, False),
        ([13, 0, 5, 9, 1, 30, 2], 3, 2, 4, True),
        ([3, 1], 2, 1, 5, False),  # fewer samples than a batch
    ],
)
def test_plan_reads_every_kept_sample_once(counts, world_size, workers, batch_size, drop_last):
    # NOTE [ Equal epochs from shards ]: rank shares cover the kept samples once; only padding (fewer than
    # world_size samples) repeats, and only drop_last leaves samples out (fewer than batch_size per rank).
    from enlight_data.streaming import _plan, _share

    catalog = _catalog(counts)
    g = torch.Generator().manual_seed(len(counts))
    for epoch, excluded in enumerate([None, torch.rand(catalog.num_ids, generator=g) < 0.3]):
        plan = _plan(catalog, excluded, seed=0, epoch=epoch, world_size=world_size, batch_size=batch_size,
                     drop_last=drop_last)
        kept = catalog.num_ids if excluded is None else int((~excluded).sum())
        uses = torch.zeros(catalog.num_ids, dtype=torch.int64)
        for rank in range(world_size):
            total = 0
            for worker in range(workers):
                share = _share(plan, rank=rank, worker=worker, num_workers=workers, batch_size=batch_size,
                               drop_last=drop_last, start_batch=0)
                got = 0
                for shard, first, stop in share.pool:
                    ids = catalog.ids[int(catalog.starts[shard]) + first: int(catalog.starts[shard]) + stop]
                    ids = ids if excluded is None else ids[~excluded[ids]]
                    uses[ids] += 1
                    got += ids.numel()
                assert got == share.quota
                total += got
            assert total == plan.samples  # every rank: the same samples, so the same batch count
        if excluded is not None:
            assert int(uses[excluded].sum()) == 0
        repeated = int((uses - 1).clamp(min=0).sum())
        left_out = int((uses == 0).sum()) - (0 if excluded is None else int(excluded.sum()))
        assert int(uses.sum()) == world_size * plan.samples
        if drop_last:
            assert left_out == max(0, kept - world_size * plan.samples) < world_size * batch_size
        else:
            assert left_out == 0 and repeated == world_size * plan.per_rank - kept < world_size


@pytest.mark.filterwarnings("ignore:world_size > 1 but torch.distributed is not initialised")
def test_uneven_shards_are_read_once_over_workers_and_ranks(tmp_path):
    index = write(tmp_path, n=20, maxcount=5)  # 4 shards of 5
    # 3 workers, 10 batches of 2: quotas 8, 6, 6 samples, which whole shards could not match.
    loader = ed.stream(index, ed.Schedule(1), batch_size=2, num_workers=3, shuffle_buffer=3)
    assert loader.num_workers == 3  # as a DataLoader's (a loop may read it)
    assert sorted(i for b in epoch_ids(loader) for i in b) == list(range(20))
    seen = []
    for rank in range(3):  # ceil(20 / 3) = 7 samples per rank: one sample repeats, as DistributedSampler pads
        loader = ed.stream(index, ed.Schedule(1), batch_size=2, num_workers=0, rank=rank,
                           world_size=3, shuffle_buffer=0)
        share = [i for b in epoch_ids(loader) for i in b]
        assert len(share) == 7 and len(loader) == 4
        seen += share
    assert set(seen) == set(range(20)) and len(seen) == 21


@pytest.mark.filterwarnings("ignore:world_size > 1 but torch.distributed is not initialised")
def test_empty_shards_do_not_count_as_shards_for_ranks(tmp_path):
    index = write(tmp_path, n=20, maxcount=20)
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    with pytest.raises(ValueError, match=r"at least world_size=2 shards that hold samples, got 1 \(of 2 shards\)"):
        ed.stream([str(tmp_path / "train-0000.tar"), str(empty)], ed.Schedule(1), batch_size=5,
                  num_workers=0, rank=0, world_size=2)
    assert json.loads(Path(index).read_text())["total"] == 20


def test_mid_epoch_resume_with_uneven_worker_shares(tmp_path):
    index = write(tmp_path, n=23, maxcount=5)  # 5 shards, split between 3 workers

    def make():
        return ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=2, num_workers=3, shuffle_buffer=4)

    def epoch(loader, stop=None):
        out = []
        for k, (x, _) in enumerate(loader):
            out.append(ids_of(x))
            loader.record(x.flatten(1)[:, 0].float())
            if k == stop:
                break
        return out

    full = make()
    epoch(full)
    reference = epoch(full)  # epoch 1, with removals
    excluded = set(full.state_dict()["excluded"].tolist())
    assert len(excluded) == 5 and sorted(i for b in reference for i in b) == sorted(set(range(23)) - excluded)
    loader = make()
    epoch(loader)
    epoch(loader, stop=4)
    resumed = make()
    resumed.load_state_dict(loader.state_dict())
    assert epoch_ids(resumed) == reference[5:]


def test_same_seed_same_epoch(tmp_path):
    index = write(tmp_path, n=40)

    def run(seed, workers):
        loader = ed.stream(index, ed.Schedule(1), batch_size=4, num_workers=workers, seed=seed,
                           shuffle_buffer=6)
        return [epoch_ids(loader) for _ in range(2)]

    first = run(3, 2)
    assert first == run(3, 2)
    assert first[0] != first[1]  # epochs differ
    assert first != run(4, 2)
    assert run(3, 0) == run(3, 0)


def test_mid_epoch_resume_continues_the_epoch(tmp_path):
    index = write(tmp_path, n=40)

    def make():
        return ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=3, num_workers=2, shuffle_buffer=6)

    full = make()
    for x, _ in full:
        full.record(x.flatten(1)[:, 0].float())
    reference = epoch_ids(full)  # epoch 1, with removals
    loader = make()
    for x, _ in loader:
        loader.record(x.flatten(1)[:, 0].float())
    for k, (x, _) in enumerate(loader):
        if k == 4:
            break
    state = loader.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert epoch_ids(resumed) == reference[5:]


# ---------------------------------------------------------------------------------------------- decoding


def test_callable_decoder_on_sequences_and_current_epoch_in_workers(tmp_path):
    index = ed.write_shards(Sequences(), str(tmp_path / "seq-%02d.tar"), maxcount=15, progress=False)

    def decode(sample):
        x = torch.from_numpy(np.load(io.BytesIO(sample["npy"])))
        return x, ed.current_epoch()  # the epoch, read from shared memory inside the worker

    loader = ed.stream(index, ed.Schedule(1), batch_size=5, num_workers=2, decode=decode,
                       persistent_workers=True)
    for epoch in range(2):
        starts = []
        for x, y in loader:
            assert x.dtype == torch.float32 and x.shape[1:] == (6,)
            assert torch.equal(x - x[:, :1], torch.arange(6.0).expand_as(x))
            assert (y == epoch).all()
            starts += x[:, 0].long().tolist()
        assert sorted(starts) == list(range(30))


def test_rgb8_decodes_uint8_chw(tmp_path):
    index = write(tmp_path, n=12, fmt="jpg")
    loader = ed.stream(index, ed.Schedule(1), batch_size=4, num_workers=0)
    x, y = next(iter(loader))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 4, 4) and y.dtype == torch.int64


def test_rgb8_batches_need_one_image_size(tmp_path):
    data = [(torch.zeros(3, 4, 4, dtype=torch.uint8), 0), (torch.zeros(3, 5, 4, dtype=torch.uint8), 1)]
    index = ed.write_shards(data, str(tmp_path / "s-%02d.tar"), image_format="png", progress=False)
    loader = ed.stream(index, ed.Schedule(1), batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match="inputs of one shape.*decode='gpu'"):
        list(loader)


def test_gpu_decode_needs_cuda(tmp_path):
    index = write(tmp_path, n=8, fmt="jpg")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="decode='gpu' needs a CUDA device"):
            ed.stream(index, ed.Schedule(1), batch_size=4, decode="gpu")
    with pytest.raises(ValueError, match="decode should be one of"):
        ed.stream(index, ed.Schedule(1), batch_size=4, decode="jpeg")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_runs_gpu_augment_and_mixing_in_an_unchanged_loop(tmp_path, num_workers):
    from enlight_data.augment import GpuAugment

    data = [(torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)),
             i % CLASSES) for i in range(24)]
    index = ed.write_shards(data, str(tmp_path / "a-%02d.tar"), maxcount=6, image_format="png", progress=False)

    def make(seed):
        schedule = ed.Schedule(1, during=ed.Phase(augment_strength=0.0), after=ed.Phase(mixup_alpha=1.0))
        return ed.stream(index, schedule, batch_size=8, num_workers=num_workers, seed=seed,
                         augment=GpuAugment(8, brightness=0.3), num_classes=CLASSES)

    def train(loader):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, CLASSES))
        criterion = loader.track(nn.CrossEntropyLoss())
        seen = []
        for _ in range(2):
            for x, y in loader:
                criterion(model(x), y).backward()
                seen.append((x, y))
        return seen

    seen = train(make(0))
    assert len(seen) == 6 and all(x.shape == (8, 3, 8, 8) and y.shape == (8, CLASSES) for x, y in seen)
    again = train(make(0))
    assert all(torch.equal(x, x2) and torch.equal(y, y2) for (x, y), (x2, y2) in zip(seen, again))


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_decode_ships_each_batch_of_jpeg_bytes_as_one_buffer(tmp_path, workers):
    # NOTE [ One buffer per batch ]: decode="gpu"'s transport, checked on the CPU up to the decoder's input.
    import webdataset as wds
    from torch.utils.data import DataLoader
    from torchvision.io import decode_jpeg

    from enlight_data.streaming import _packed, _raw_jpeg, _unpacked

    sizes = [(3, 20 + i, 30 - i) for i in range(6)]
    data = [(torch.randint(0, 256, s, dtype=torch.uint8, generator=torch.Generator().manual_seed(i)), i % CLASSES)
            for i, s in enumerate(sizes)]
    index = ed.write_shards(data, str(tmp_path / "p-%02d.tar"), maxcount=3, progress=False)
    urls = sorted(str(p) for p in tmp_path.glob("p-*.tar"))
    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples(),
                                wds.map(_raw_jpeg), wds.batched(3, collation_fn=_packed, partial=True))
    batches = list(DataLoader(pipeline, batch_size=None, num_workers=workers))
    assert len(batches) == 2 and json.loads(Path(index).read_text())["total"] == 6
    seen = []
    for (flat, counts), y in batches:
        assert flat.dtype == torch.uint8 and flat.dim() == 1 and int(counts.sum()) == flat.numel()
        raw = _unpacked((flat, counts))
        assert [r.numel() for r in raw] == counts.tolist() and all(r.data_ptr() >= flat.data_ptr() for r in raw)
        for r, label in zip(raw, y.tolist()):
            image = decode_jpeg(r)  # the same bytes the GPU decoder gets
            seen.append((tuple(image.shape), label))
    assert sorted(seen) == sorted((s, i % CLASSES) for i, s in enumerate(sizes))


@needs_cuda
def test_gpu_decode_makes_one_batch(tmp_path):
    from enlight_data.augment import GpuAugment

    sizes = [(3, 20 + i, 30 - i) for i in range(10)]
    data = [(torch.randint(0, 256, s, dtype=torch.uint8, generator=torch.Generator().manual_seed(i)), i % CLASSES)
            for i, s in enumerate(sizes)]
    index = ed.write_shards(data, str(tmp_path / "v-%02d.tar"), maxcount=5, progress=False)
    loader = ed.stream(index, ed.mixup_pause(1, alpha=0.4), batch_size=4, num_workers=2, decode="gpu",
                       augment=GpuAugment(16), num_classes=CLASSES)
    batches = list(loader)
    assert [x.shape[0] for x, _ in batches] == [4, 4, 2]
    for x, y in batches:
        assert x.is_cuda and x.shape[1:] == (3, 16, 16) and y.shape[1] == CLASSES


@needs_cuda
def test_gpu_decode_never_writes_into_memory_the_loop_freed_with_work_queued(tmp_path, monkeypatch):
    # nvJPEG writes its outputs without waiting for the stream it is given (NOTE [ Decoding on a side stream ]): an
    # output block freed on the loop's stream, with kernels still queued that read it, must not be handed to it.
    from enlight_data import _codec
    from enlight_data.augment import GpuAugment

    sizes = [(3, 20 + i, 30 - i) for i in range(6)]
    data = [(torch.randint(0, 256, s, dtype=torch.uint8, generator=torch.Generator().manual_seed(i)), i % CLASSES)
            for i, s in enumerate(sizes)]
    index = ed.write_shards(data, str(tmp_path / "r-%02d.tar"), maxcount=3, progress=False)
    real = _codec.gpu_jpeg_decoder()
    overlaps = []

    def decode_after_a_free(images, **kwargs):
        loop = torch.cuda.default_stream()
        with torch.cuda.stream(loop):  # what the loop's step leaves behind: blocks freed, kernels still queued
            torch.cuda.empty_cache()
            held = [torch.empty(s, dtype=torch.uint8, device="cuda") for s in sizes for _ in range(2)]
            torch.cuda._sleep(50_000_000)
            freed = [(t.data_ptr(), t.data_ptr() + t.numel()) for t in held]
            held.clear()
        out = real(images, **kwargs)
        overlaps.extend((o.data_ptr(), lo) for o in out for lo, hi in freed if lo <= o.data_ptr() < hi)
        return out

    monkeypatch.setattr(_codec, "gpu_jpeg_decoder", lambda: decode_after_a_free)
    loader = ed.stream(index, ed.Schedule(1), batch_size=3, num_workers=0, decode="gpu", augment=GpuAugment(16))
    batches = list(loader)
    torch.cuda.synchronize()
    assert len(batches) == 2 and not overlaps


# ---------------------------------------------------------------------------------------------- foreign shards


def _named_samples(tmp_path, shards=2, per_shard=5):
    import webdataset as wds

    for s in range(shards):
        with wds.TarWriter(str(tmp_path / f"f-{s}.tar")) as w:
            for k in range(per_shard):
                i = per_shard * s + k
                buf = io.BytesIO()
                np.save(buf, np.full(2, float(i), dtype=np.float32))
                w.write({"__key__": f"img_{k}", "npy": buf.getvalue(), "cls": str(i % 2).encode()})
    return str(tmp_path / f"f-{{0..{shards - 1}}}.tar")


def test_foreign_keys_get_their_position_as_id(tmp_path):
    source = _named_samples(tmp_path)
    catalog = load_catalog(source)
    assert not catalog.hashed and catalog.num_ids == 10 and catalog.ids.tolist() == list(range(10))
    assert catalog.collisions == 0 and catalog.where(7) == [(str(tmp_path / "f-1.tar"), 2)]
    assert catalog.where(10) == [] and catalog.where(-1) == [] and catalog.where(2**64) == []
    loader = ed.stream(source, ed.Schedule(1), batch_size=3, num_workers=0)
    for x, _ in loader:
        loader.record(x[:, 0])
    assert loader.losses().tolist() == list(range(10))  # sample i (its value) at id i


def test_foreign_keys_by_position_never_share_an_entry(tmp_path):
    # 1,000 named samples: hashed into 16 x 1,000 slots, about 6 % would share one (the birthday bound).
    source = _named_samples(tmp_path, shards=4, per_shard=250)
    assert load_catalog(source).collisions == 0
    hashed = load_catalog(source, num_ids=16_000)
    assert hashed.hashed and hashed.collisions > 0


def test_foreign_keys_are_hashed_ids_with_num_ids(tmp_path):
    source = _named_samples(tmp_path)
    catalog = load_catalog(source, num_ids=160)
    assert catalog.hashed and catalog.num_ids == 160 and catalog.total == 10 and catalog.key_hashes is None
    loader = ed.stream(source, ed.Schedule(1), batch_size=3, num_workers=0, num_ids=160)
    for x, _ in loader:
        loader.record(x[:, 0])
    losses = loader.losses()
    for s in range(2):
        for k in range(5):
            assert losses[hash_id(str(tmp_path / f"f-{s}.tar"), f"img_{k}", 160)] == 5 * s + k


def test_a_foreign_shard_rewritten_after_its_scan_is_refused(tmp_path):
    import webdataset as wds

    source = _named_samples(tmp_path)
    loader = ed.stream(source, ed.Schedule(1), batch_size=3, num_workers=0)
    with wds.TarWriter(str(tmp_path / "f-1.tar")) as w:  # the same number of samples, other keys
        for k in range(5):
            w.write({"__key__": f"other_{k}", "npy": _npy(np.zeros(2, dtype=np.float32)), "cls": b"0"})
    with pytest.raises(ShardError, match="key 'other_0': sample 0 of the shard should have id 5 by the catalogue"):
        list(loader)


def _foreign(tmp_path, name, keys_per_shard):
    import webdataset as wds

    urls = []
    for s, keys in enumerate(keys_per_shard):
        urls.append(str(tmp_path / f"{name}-{s}.tar"))
        with wds.TarWriter(urls[-1]) as w:
            for k in keys:
                buf = io.BytesIO()
                np.save(buf, np.zeros(2, dtype=np.float32))
                w.write({"__key__": str(k), "npy": buf.getvalue(), "cls": b"0"})
    return urls


def test_foreign_integer_keys_that_repeat_or_are_large_get_positions(tmp_path):
    restarting = load_catalog(_foreign(tmp_path, "r", [[f"{k:06d}" for k in range(10)]] * 2))
    assert not restarting.hashed and restarting.num_ids == 20 and restarting.ids.tolist() == list(range(20))
    assert restarting.collisions == 0 and restarting.key_hashes is not None
    large = load_catalog(_foreign(tmp_path, "l", [[20240101120000, 20240101120001]]))
    assert not large.hashed and large.num_ids == 2
    plain = load_catalog(_foreign(tmp_path, "p", [[0, 1, 2], [3, 4, 5]]))
    assert not plain.hashed and plain.num_ids == 6 and plain.ids.tolist() == list(range(6))


def test_index_is_validated_naming_the_file_and_field(tmp_path):
    index = write(tmp_path, n=20, maxcount=10)
    good = json.loads(Path(index).read_text())

    def broken(edit):
        meta = json.loads(json.dumps(good))
        edit(meta)
        path = tmp_path / "bad-index.json"
        path.write_text(json.dumps(meta))
        return str(path)

    cases = [
        (lambda m: m["shards"][0].pop("offset"), r"shards\[0\] should have fields \['url', 'count', 'offset'\]"),
        (lambda m: m.__setitem__("shards", {"a": 1}), r"'shards' should be a list of shards, got dict"),
        (lambda m: m["shards"][0].__setitem__("count", -3), r"shards\[0\]\.count should be an integer >= 0, got -3"),
        (lambda m: m["shards"][1].__setitem__("count", "10"), r"shards\[1\]\.count should be an integer"),
        (lambda m: m["shards"][0].__setitem__("count", 12), r"shards\[1\] holds ids 10\.\.19, which should be below"),
        (lambda m: m["shards"][1].__setitem__("offset", 10**12), r"holds ids 1000000000000\.\."),
        (lambda m: m.__setitem__("num_classes", 0), r"num_classes should be an integer >= 1, got 0"),
    ]
    for edit, message in cases:
        with pytest.raises(ValueError, match=r"index '.*bad-index\.json'.*" + message):
            load_catalog(broken(edit))


# ---------------------------------------------------------------------------------------------- bad data


def _truncate(path, keep):
    Path(path).write_bytes(Path(path).read_bytes()[:keep])


def _corrupt_jpeg_index(tmp_path):
    index = write(tmp_path, n=12, maxcount=6, fmt="jpg")
    import webdataset as wds

    path = str(tmp_path / "train-0001.tar")
    samples = list(wds.DataPipeline(wds.SimpleShardList([path]), wds.tarfile_to_samples()))
    samples[2]["jpg"] = b"\xff\xd8garbage"
    with wds.TarWriter(path) as w:
        for s in samples:
            w.write({k: v for k, v in s.items() if k in ("__key__", "jpg", "cls")})
    return index


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_data_raises_naming_shard_and_key(tmp_path, workers):
    index = _corrupt_jpeg_index(tmp_path)
    loader = ed.stream(index, ed.Schedule(1), batch_size=3, num_workers=workers)
    with pytest.raises(ShardError, match=r"train-0001\.tar.*000000008.*cannot decode"):
        list(loader)
    index = write(tmp_path / "t", n=12, maxcount=6)
    _truncate(tmp_path / "t" / "train-0000.tar", 2000)
    loader = ed.stream(index, ed.Schedule(1), batch_size=4, num_workers=workers)
    with pytest.raises(ShardError, match=r"train-0000\.tar.*key '00000000\d'"):
        list(loader)


def test_bad_data_warn_skips_counts_and_warns_once(tmp_path):
    index = _corrupt_jpeg_index(tmp_path)
    loader = ed.stream(index, ed.Schedule(1), batch_size=3, num_workers=2, handler="warn")
    with pytest.warns(RuntimeWarning, match=r"skipped 1 bad samples.*000000008") as record:
        batches = list(loader)
    assert len([w for w in record if "skipped" in str(w.message)]) == 1
    assert loader.history[-1]["skipped"] == 1
    assert sum(x.shape[0] for x, _ in batches) == 12  # the epoch keeps its length (a sample repeats)
    # A truncated shard: its tail is skipped, the epoch still ends with the planned batch count.
    index = write(tmp_path / "t", n=12, maxcount=6)
    _truncate(tmp_path / "t" / "train-0000.tar", 2000)
    loader = ed.stream(index, ed.Schedule(1), batch_size=4, num_workers=0, handler="warn")
    with pytest.warns(RuntimeWarning, match="train-0000.tar"):
        assert len(list(loader)) == 3
    assert loader.history[-1]["skipped"] >= 1


def _cut_before(path, key):
    with tarfile.open(path) as tar:
        cut = next(m.offset for m in tar.getmembers() if m.name.startswith(f"{key}."))
    with open(path, "r+b") as f:
        f.truncate(cut)  # samples before `key` intact, no end-of-archive blocks: tarfile itself sees no error


def test_shard_cut_at_a_member_boundary_is_not_silently_short(tmp_path):
    index = write(tmp_path, n=20, maxcount=10)
    _cut_before(tmp_path / "train-0000.tar", "000000006")
    loader = ed.stream(index, ed.Schedule(1), batch_size=4, num_workers=0, shuffle_buffer=0)
    with pytest.raises(ShardError, match=r"train-0000\.tar' ends after 6 samples.*lists 10; is it truncated"):
        list(loader)
    loader = ed.stream(index, ed.Schedule(1), batch_size=4, num_workers=0, shuffle_buffer=0,
                       handler="warn")
    with pytest.warns(RuntimeWarning, match="skipped 1 bad samples or shard tails.*ends after 6 samples"):
        ids = [i for b in epoch_ids(loader) for i in b]
    assert len(ids) == 20 and set(ids) == set(range(6)) | set(range(10, 20))  # the epoch keeps its length
    assert loader.history[-1]["skipped"] == 1


def _open_shards(folder):
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [f for f in fds if f.startswith(str(folder)) and f.endswith(".tar")]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_shards_are_closed_after_reading_and_when_a_loop_is_left(tmp_path):
    index = write(tmp_path, n=40, maxcount=10)
    loader = ed.stream(index, ed.Schedule(1), batch_size=4, num_workers=0, shuffle_buffer=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # an unclosed file warns when collected
        for x, _ in loader:
            pass
        gc.collect()
        assert _open_shards(tmp_path) == []
        it = iter(loader)
        next(it)
        assert len(_open_shards(tmp_path)) == 1
        del it  # the loop left early: its shard closes with the iterator, not at some later collection
        assert _open_shards(tmp_path) == []


def test_missing_and_empty_sources(tmp_path):
    schedule = ed.Schedule(1)
    with pytest.raises(ValueError, match="at least one shard"):
        ed.stream([], schedule, batch_size=2)
    with pytest.raises(FileNotFoundError, match="nope-1.tar"):
        ed.stream([str(tmp_path / "nope-1.tar")], schedule, batch_size=2)
    with pytest.raises(FileNotFoundError, match="index"):
        ed.stream(str(tmp_path / "none.json"), schedule, batch_size=2)
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    with pytest.raises(ValueError, match="should hold samples"):
        ed.stream([str(empty)], schedule, batch_size=2)
    # A shard that disappears after the index was read: a clear error, not a hang.
    index = write(tmp_path, n=12, maxcount=6)
    loader = ed.stream(index, schedule, batch_size=4, num_workers=2)
    os.remove(tmp_path / "train-0001.tar")
    with pytest.raises(ShardError, match="train-0001.tar"):
        list(loader)


def test_argument_errors(tmp_path):
    index = write(tmp_path, n=8)
    schedule = ed.mixup_pause(1, alpha=0.5)
    with pytest.raises(ValueError, match="handler should be one of"):
        ed.stream(index, schedule, batch_size=2, handler="ignore")
    # The catalogue alone too: another value would have acted as "warn", a corrupt shard cut short unasked.
    shards = sorted(str(f) for f in tmp_path.glob("*.tar"))
    with pytest.raises(ValueError, match=r"^handler should be one of \('raise', 'warn'\), got handler='ignore'$"):
        load_catalog(shards, handler="ignore")
    with pytest.raises(ValueError, match="batch_size should be >= 1"):
        ed.stream(index, schedule, batch_size=0)
    with pytest.raises(TypeError, match="source should be"):
        ed.stream(3, schedule, batch_size=2)
    with pytest.raises(ValueError, match="at least world_size=4 shards that hold samples"):
        ed.stream(index, schedule, batch_size=2, rank=0, world_size=4)


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    "schedule",
    [
        ed.mixup_pause(2, alpha=0.8),
        ed.alpha_boost(2, alpha=0.2, boost_alpha=1.0),
        ed.high_loss_removal(2, fraction=0.2),
    ],
)
def test_write_shards_stream_unchanged_training_loop(tmp_path, schedule):
    index = write(tmp_path, n=48, maxcount=12, fmt="jpg")
    loader = ed.stream(index, schedule, batch_size=8, num_workers=2, persistent_workers=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    criterion = loader.track(nn.CrossEntropyLoss())
    for _ in range(3):
        for x, y in loader:
            loss = criterion(model(x.float() / 255), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    history = loader.history
    assert [h["in_period"] for h in history] == [True, True, False]
    for h in history:
        assert h["seen"] == 48 - h["removed"] and h["batches"] == -(-h["seen"] // 8) and h["skipped"] == 0
        assert h["mean_loss"] > 0 and 0.0 <= h["accuracy"] <= 1.0
    if schedule.during.drop_high_loss:
        assert history[1]["removed"] > 0 and history[2]["removed"] == 0


def test_hashed_ids_ignore_a_urls_query_and_fragment():
    plain = hash_id("https://bucket.example/data/train-0001.tar", "img_7", 1000)
    for url in ("https://bucket.example/data/train-0001.tar?X-Amz-Signature=abc&X-Amz-Expires=60",
                "https://bucket.example/data/train-0001.tar#part", "/mnt/other/train-0001.tar",
                "pipe:curl -s 'https://bucket.example/data/train-0001.tar?token=xyz'"):
        assert hash_id(url, "img_7", 1000) == plain, url
    assert hash_id("https://bucket.example/data/train-0002.tar?X-Amz-Signature=abc", "img_7", 1000) != plain


@pytest.mark.filterwarnings("ignore:world_size > 1 but torch.distributed is not initialised")
@pytest.mark.parametrize("command", ["exec cat", "cat"])
def test_pipe_urls_split_between_ranks_read_every_sample_once(tmp_path, command):
    # A segment that ends inside a shard closes the pipe while its command still writes: not a read error.
    class Large(Tiles):  # 48 kB a sample: a shard is far larger than a pipe's buffer
        def __getitem__(self, i):
            return torch.full((3, 64, 64), float(i)), i % CLASSES

    ed.write_shards(Large(45), str(tmp_path / "train-%04d.tar"), maxcount=15, image_format="npy", progress=False)
    urls = [f"pipe:{command} {tmp_path}/train-{s:04d}.tar" for s in range(3)]
    served = []
    for rank in range(2):
        loader = ed.stream(urls, ed.Schedule(1), batch_size=4, rank=rank, world_size=2, shuffle_buffer=0)
        for _ in range(3):  # each epoch reopens (and closes early) the pipes
            ids = [i for b in epoch_ids(loader) for i in b]
            assert len(ids) == 23
        served += ids
    assert sorted(set(served)) == list(range(45))


def test_file_urls_are_local_paths(tmp_path):
    write(tmp_path, n=8, maxcount=4)
    for prefix in ("file:", "file://"):
        urls = [f"{prefix}{tmp_path}/train-{s:04d}.tar" for s in range(2)]
        loader = ed.stream(urls, ed.Schedule(1), batch_size=4, shuffle_buffer=0)
        assert sorted(i for b in epoch_ids(loader) for i in b) == list(range(8))
    index = json.loads((tmp_path / "train-index.json").read_text())
    for shard in index["shards"]:
        shard["url"] = f"file://{tmp_path}/{shard['url']}"
    (tmp_path / "file-index.json").write_text(json.dumps(index))
    loader = ed.stream(str(tmp_path / "file-index.json"), ed.Schedule(1), batch_size=4, shuffle_buffer=0)
    assert sorted(i for b in epoch_ids(loader) for i in b) == list(range(8))  # absolute: not joined to the folder
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_catalog([f"file://{tmp_path}/missing.tar"])
    (tmp_path / "folder.tar").mkdir()
    with pytest.raises(IsADirectoryError, match=r"shard '.*folder.tar' is a directory, not a tar file"):
        load_catalog([str(tmp_path / "train-0000.tar"), str(tmp_path / "folder.tar")])


def test_num_ids_with_an_index_is_refused_not_ignored(tmp_path):
    index = write(tmp_path, n=8, maxcount=4)
    with pytest.raises(ValueError, match=r"num_ids applies to shards without an index .*got num_ids=64 with the index"):
        ed.stream(index, ed.Schedule(1), batch_size=4, num_ids=64)
    assert load_catalog(str(tmp_path / "train-{0000..0001}.tar"), num_ids=64).num_ids == 64


def test_keys_webdataset_skips_or_cannot_read_as_integers(tmp_path):
    import webdataset as wds

    path = str(tmp_path / "odd.tar")
    with wds.TarWriter(path) as w:
        for key in ("0", "__meta__/s1", "²", "3"):
            w.write({"__key__": key, "cls": b"0", "npy": b""})
    catalog = load_catalog([path])
    # __meta__/ members are no samples, '²' no integer: the ids are the positions
    assert catalog.key_hashes is not None and catalog.counts.tolist() == [3] and catalog.ids.tolist() == [0, 1, 2]


def test_a_bad_sample_met_again_by_a_repeat_pass_counts_once(tmp_path):
    index = write(tmp_path, n=12, maxcount=6, fmt="npy")
    path = tmp_path / "train-0000.tar"
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    with tarfile.open(path, "w") as out:  # sample 0 cannot be decoded: its worker tops up from a repeat pass
        for member, data in members:
            data = b"garbage" if member.name.startswith("000000000.npy") else data
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    for buffer in (0, 100):
        loader = ed.stream(index, ed.Schedule(1), batch_size=4, handler="warn", shuffle_buffer=buffer)
        with pytest.warns(RuntimeWarning, match="skipped 1 bad samples"):
            assert sum(len(b) for b in epoch_ids(loader)) == 12
        assert loader.history[-1]["skipped"] == 1


def _noisy_decode(sample):
    """A decode function with its own random draws (from the worker's global torch state)."""
    i = int(sample["__key__"])
    return torch.full((3, 4, 4), float(i)) + torch.rand(()), int(sample["cls"])


def _noisy_run(index, *, state=None, persistent=False, rank=0, world_size=1, stop=None):
    loader = ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=2, seed=5,
                       decode=_noisy_decode, persistent_workers=persistent, rank=rank, world_size=world_size,
                       num_classes=CLASSES)
    if state is not None:
        loader.load_state_dict(state)
    batches = []
    for _ in range(3 - max(loader.epoch, 0)):
        for x, _ in loader:
            loader.record(x.flatten(1)[:, 0] % 7)
            batches.append(x.clone())
            if stop is not None and len(batches) == stop:
                return batches, loader.state_dict()
    return batches, None


@pytest.mark.parametrize("persistent", [False, True])
def test_stream_decode_draws_are_the_same_after_a_resume(tmp_path, persistent):
    """A decode function's random draws come from per-batch seeds, as map-style datasets' do: a resumed run (fresh
    workers, another physical worker for each batch) gets the same inputs, persistent workers too."""
    index = write(tmp_path, n=48, fmt="npy")
    whole, _ = _noisy_run(index, persistent=persistent)
    for stop in (7, 15):  # mid-epoch 1 (odd: the other worker goes first after the resume), and a later epoch
        first, state = _noisy_run(index, persistent=persistent, stop=stop)
        rest, _ = _noisy_run(index, state=state, persistent=persistent)
        assert len(first) + len(rest) == len(whole)
        for a, b in zip(first + rest, whole):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_stream_decode_draws_differ_between_ranks(tmp_path):
    index = write(tmp_path, n=48, fmt="npy")
    draws = [[x - x.round() for x in _noisy_run(index, rank=r, world_size=2)[0]] for r in (0, 1)]
    assert not any(torch.equal(a, b) for a, b in zip(*draws))


def test_a_stream_state_loads_only_into_the_same_shard_layout(tmp_path):
    """The same samples in shards of other sizes are read in another order: a mid-epoch state must not load there."""
    a = ed.write_shards(Tiles(24), str(tmp_path / "a-%02d.tar"), maxcount=7, progress=False)
    b = ed.write_shards(Tiles(24), str(tmp_path / "b-%02d.tar"), maxcount=6, progress=False)

    def make(index):
        return ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=0)

    loader = make(a)
    next(iter(loader))
    state = loader.state_dict()
    with pytest.raises(ValueError, match="state does not match this loader: source shards is"):
        make(b).load_state_dict(state)
    make(a).load_state_dict(state)  # the same layout (the index's own name does not matter)


# ------------------------------------------------------------------ second streaming review


def _foreign_tar(path, keys) -> list[tarfile.TarInfo]:
    """A tar of ``key.cls`` + ``key.npy`` samples, without an index; returns its members."""
    with tarfile.open(path, "w") as out:
        for k in keys:
            for name, data in ((f"{k}.cls", b"1"), (f"{k}.npy", _npy(np.zeros(2, dtype=np.float32)))):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                out.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as t:
        return t.getmembers()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("damage", ["checksum", "cut inside a header", "cut at a member boundary"])
def test_a_foreign_shard_with_a_broken_header_is_an_error_not_a_shorter_shard(tmp_path, damage):
    # tarfile ends its member loop silently at such a header, as at the end-of-archive marker: a shard without an
    # index would lose its tail without a word.
    a, b = str(tmp_path / "a.tar"), str(tmp_path / "b.tar")
    _foreign_tar(a, [f"a{i}" for i in range(10)])
    members = _foreign_tar(b, [f"b{i}" for i in range(10)])
    data = bytearray(Path(b).read_bytes())
    at = members[8].offset  # the header of sample b4
    if damage == "checksum":
        data[at + 148 : at + 156] = b"garbage!"
    else:
        data = data[: at + 200 if damage == "cut inside a header" else at]
    Path(b).write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard '.*b\.tar' is unreadable after key 'b3': ReadError: corrupt or "
                                         r"truncated tar header"):
        ed.stream([a, b], ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=0)
    with pytest.warns(RuntimeWarning, match=r"unreadable after key 'b3'.*; using the 4 samples before it"):
        loader = ed.stream([a, b], ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=0,
                           handler="warn")
    assert sum(x.shape[0] for x, _ in loader) == 14
    assert loader.history[-1]["skipped"] == 0  # the scan's loss is warned about once, at stream(), and counted nowhere


def test_skips_of_an_epoch_left_early_do_not_count_in_the_next(tmp_path):
    # A persistent worker still fetching the left epoch's batches reports their bad samples after the next epoch
    # has begun; those reports must not land in the next epoch's count.
    data = TensorDataset(torch.arange(12).view(12, 1).float(), torch.zeros(12, dtype=torch.long))
    index = ed.write_shards(data, str(tmp_path / "s-%03d.tar"), maxcount=12, image_format="npy", progress=False)
    flag = tmp_path / "bad"
    flag.touch()
    loader = ed.stream(index, ed.mixup_pause(1, alpha=0.2), batch_size=2, num_workers=1, shuffle_buffer=0,
                       decode=functools.partial(_slow_and_bad_while, str(flag)), handler="warn",
                       persistent_workers=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(iter(loader))  # epoch 0 left after one batch: its worker goes on fetching, and meets sample 5
        seen = 0
        for x, _ in loader:  # the left epoch's fetch of sample 5 removed the flag: nothing is bad in epoch 1
            seen += x.shape[0]
        assert seen == 12
    assert [h["skipped"] for h in loader.history] == [0, 0]
    assert not [w for w in caught if "skipped" in str(w.message)]


def _slow_and_bad_while(flag: str, sample: dict):
    time.sleep(0.1)
    if sample["__key__"].endswith("5") and os.path.exists(flag):
        os.unlink(flag)  # bad once: the left epoch's worker meets it first, whatever the timing
        raise ValueError("sample 5 is bad")
    return torch.from_numpy(np.load(io.BytesIO(sample["npy"]))), int(sample["cls"])


def _ids(loader) -> list[int]:
    return [int(i) for x, _ in loader for i in x.flatten().tolist()]


def _index_of(tmp_path, n: int = 20, maxcount: int = 10) -> str:
    data = TensorDataset(torch.arange(n).view(n, 1).float(), torch.zeros(n, dtype=torch.long))
    return ed.write_shards(data, str(tmp_path / "s-%03d.tar"), maxcount=maxcount, image_format="npy", progress=False)


def test_persistent_worker_killed_between_epochs_is_replaced(tmp_path):
    """NOTE [ A worker that dies outside the loader ]: the next epoch starts fresh workers at once."""
    loader = ed.stream(_index_of(tmp_path), ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=2,
                       persistent_workers=True)
    loader._source.loader.timeout = 20  # stream() has no timeout argument: a hang fails after 20 s instead
    assert sorted(_ids(loader)) == list(range(20))
    error = kill_a_worker(loader)
    assert error is None or "DataLoader worker" in error, error
    start = time.monotonic()
    assert sorted(_ids(loader)) == list(range(20))
    assert time.monotonic() - start < 15  # not after the 20 s timeout


def test_a_shard_with_more_samples_than_its_index_lists_is_an_error(tmp_path):
    index = _index_of(tmp_path)
    meta = json.loads(Path(index).read_text())
    meta["shards"][0]["count"] = 9  # the shard was rewritten with one more sample, the index was not
    Path(index).write_text(json.dumps(meta))
    loader = ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=0)
    with pytest.raises(ShardError, match=r"s-000\.tar' holds more than the 9 samples its catalogue lists \(key "
                                         r"'000000009' is one more\)"):
        _ids(loader)


def test_a_shard_read_error_keeps_the_reason(tmp_path):
    index = _index_of(tmp_path)
    loader = ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=0)
    os.remove(tmp_path / "s-001.tar")
    # No key is named: the shard failed before its first member (an empty key '' used to be named).
    with pytest.raises(ShardError, match=r"s-001\.tar': cannot read: FileNotFoundError: \[Errno 2\] No such "
                                         r"file or directory"):
        _ids(loader)


def test_an_index_that_is_not_utf8_json_names_the_file(tmp_path):
    index = _index_of(tmp_path)
    Path(index).write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"index '.*' is not valid JSON"):
        ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=4)


def test_write_shards_takes_flipped_arrays_and_names_what_it_cannot_store(tmp_path):
    image = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    flipped = image[:, ::-1]  # negative strides
    index = ed.write_shards([(flipped, 0)], str(tmp_path / "a-%03d.tar"), image_format="png", progress=False)
    (x, _), = list(ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=1, num_workers=0))
    assert torch.equal(x[0], torch.from_numpy(flipped.copy()))
    for image_format in ("png", "npy"):
        with pytest.raises(TypeError, match=r"inputs should be arrays of numbers, got dataset\[1\]\[0\], a numpy "
                                            r"array of dtype object"):
            ed.write_shards([(image, 0), (np.array([1, "a"], dtype=object), 0)], str(tmp_path / "b-%03d.tar"),
                            image_format=image_format, progress=False)
    tall = torch.zeros(1, 65501, 1, dtype=torch.uint8)  # past JPEG's limit: libjpeg would crash the process
    with pytest.raises(ValueError, match=r"images should be at most 65500 pixels on a side to be stored as jpg, got "
                                         r"an image of shape \(1, 65501, 1\) at dataset\[0\]; pass image_format='png'"):
        ed.write_shards([(tall, 0)], str(tmp_path / "c-%03d.tar"), image_format="jpg", progress=False)


def test_write_shards_warns_when_channels_last_images_are_stored_as_npy(tmp_path):
    images = [(np.zeros((8, 6, 3), dtype=np.uint8), 0), (np.ones((8, 6, 3), dtype=np.uint8), 1)]
    with pytest.warns(UserWarning, match=r"dataset\[0\]\[0\] has shape \(8, 6, 3\), channels last, so it is stored "
                                         r"as npy \(unchanged\), not as jpg"):
        index = ed.write_shards(images, str(tmp_path / "s-%03d.tar"), progress=False)
    (x, _), = list(ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=2, num_workers=0,
                             shuffle_buffer=0))
    assert x.shape == (2, 8, 6, 3) and x.dtype == torch.uint8 and x[1].eq(1).all()  # nothing lost
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for npy: nothing to say; (C, H, W) images: stored as jpg
        ed.write_shards(images, str(tmp_path / "n-%03d.tar"), image_format="npy", progress=False)
        ed.write_shards([(np.zeros((3, 8, 6), dtype=np.uint8), 0)], str(tmp_path / "c-%03d.tar"), progress=False)


_SLOW: bool | None = None


def _slow_in_old_workers(flag: str, sample: dict):
    """Sample 5 is always bad; workers started before ``flag`` exists are slow (their reports come late)."""
    global _SLOW
    if _SLOW is None:
        _SLOW = not os.path.exists(flag)
    time.sleep(0.3 if _SLOW else 0.01)
    if sample["__key__"].endswith("5"):
        raise ValueError("sample 5 is bad")
    return torch.from_numpy(np.load(io.BytesIO(sample["npy"]))), int(sample["cls"])


def test_a_late_report_of_a_left_epoch_does_not_erase_the_next_epochs_skips(tmp_path):
    data = TensorDataset(torch.arange(12).view(12, 1).float(), torch.zeros(12, dtype=torch.long))
    index = ed.write_shards(data, str(tmp_path / "s-%03d.tar"), maxcount=12, image_format="npy", progress=False)
    flag = tmp_path / "started"
    loader = ed.stream(index, ed.mixup_pause(1, alpha=0.2), batch_size=2, num_workers=1, shuffle_buffer=0,
                       decode=functools.partial(_slow_in_old_workers, str(flag)), handler="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = iter(loader)  # kept by the caller: its worker would go on with epoch 0's prefetched batches
        next(it)
        flag.touch()
        seen = 0
        for x, _ in loader:  # epoch 1: sample 5 is bad here too
            time.sleep(0.2)
            seen += x.shape[0]
    assert seen == 12 and [h["skipped"] for h in loader.history] == [0, 1]
    with pytest.raises(StopIteration):
        next(it)  # the left epoch's iterator was closed when epoch 1 began


def _bad_keys(keys: frozenset, sample: dict):
    """Decode ``npy`` samples; the samples whose key (as an int) is in ``keys`` are undecodable."""
    if int(sample["__key__"]) in keys:
        raise ValueError(f"sample {sample['__key__']} is bad")
    return torch.from_numpy(np.load(io.BytesIO(sample["npy"]))), int(sample["cls"])


@pytest.mark.parametrize(
    "bad, maxcount, workers, persistent",
    [
        ({3}, 8, 2, False),  # one bad sample early in a worker's share
        ({3}, 8, 2, True),  # the same state loaded into a loader whose persistent workers already run
        ({0, 1, 2, 3, 4, 5, 6}, 4, 0, False),  # a worker runs short in pass 0: its second pass is fast-forwarded too
        ({1, 9, 17}, 8, 3, False),  # bad samples in several workers' shares
    ],
)
def test_mid_epoch_resume_is_exact_after_skipped_bad_samples(tmp_path, bad, maxcount, workers, persistent):
    # A bad sample skipped before the resume point used to be unknown to the resumed run (the fast-forward does not
    # decode): that worker's rest of the epoch came one sample early, and the epoch's count missed it.
    index = _index_of(tmp_path, n=24, maxcount=maxcount)

    def make():
        return ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=2, num_workers=workers,
                         shuffle_buffer=3, decode=functools.partial(_bad_keys, frozenset(bad)), handler="warn",
                         persistent_workers=persistent)

    def run(loader, stop=None):
        out = []
        for k, (x, _) in enumerate(loader):
            out.append(ids_of(x))
            loader.record(x.flatten(1)[:, 0].float())
            if k == stop:
                return out
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the skipped samples, warned about once per epoch
        full = make()
        run(full)
        reference = run(full)  # epoch 1, with removals
        stop = len(reference) - 3
        loader = make()
        run(loader)
        run(loader, stop=stop)
        state = loader.state_dict()
        resumed = make()
        if persistent:
            run(resumed)  # its workers start now, in epoch 0
        resumed.load_state_dict(state)
        again = make()
        again.load_state_dict(resumed.state_dict())  # saved again before the resumed epoch went on: the same state
        assert run(resumed) == reference[stop + 1 :]
        assert run(again) == reference[stop + 1 :]
    assert resumed.history[-1]["skipped"] == again.history[-1]["skipped"] == full.history[-1]["skipped"] > 0
    assert resumed.history[-1]["seen"] == full.history[-1]["seen"]
    assert [i for b in reference for i in b if i in bad] == []


def test_saved_worker_positions_are_validated(tmp_path):
    index = _index_of(tmp_path, n=24, maxcount=8)

    def make():
        return ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=2, num_workers=2,
                         shuffle_buffer=3, decode=functools.partial(_bad_keys, frozenset({3})), handler="warn")

    loader = make()
    for k, (x, _) in enumerate(loader):
        if k == 6:
            break
    state = loader.state_dict()
    assert state["source"]["position"] == 7 and len(state["source"]["taken"]) == 2
    assert sum(len(b) for b in state["source"]["bad"]) == state["source"]["skipped"] == 1
    between = make()
    with pytest.warns(RuntimeWarning, match="skipped 1 bad samples"):
        list(between)
    assert between.state_dict()["source"] == {}  # between epochs there is nothing to resume inside one

    def broken(**change):
        return {**state, "source": {**state["source"], **change}}

    cases = [
        (broken(taken=[1]), r"state\['source'\]\['taken'\] should be a list of 2 entries \(one per worker\)"),
        (broken(position=3), r"should hold the workers' positions in epoch 0 after batch 7, got epoch=0, position=3"),
        (broken(bad=[[5, 5], []]), r"should give worker 0 a count taken >= 0 and increasing bad positions"),
        (broken(taken=[t + 1 for t in state["source"]["taken"]]),
         r"worker 0's batches before batch 7 should hold 8 samples, got taken=\d+ with \d bad"),
        (broken(skipped=-1), r"should have an int skipped >= 0 and a str message, got skipped=-1"),
        ({**state, "source": [1]}, r"state\['source'\] should be a dict with keys \['epoch', 'position'"),
    ]
    for bad_state, message in cases:
        fresh = make()
        with pytest.raises(ValueError, match=message):
            fresh.load_state_dict(bad_state)
        assert fresh.epoch == -1  # nothing changed
    # A state saved before positions were: it loads, and resumes as if nothing before the resume point had failed.
    old = {k: v for k, v in state.items() if k != "source"}
    resumed = make()
    resumed.load_state_dict(old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert sum(x.shape[0] for x, _ in resumed) == 24 - 14


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(6, 30),
    maxcount=st.integers(2, 9),
    batch_size=st.integers(1, 4),
    workers=st.sampled_from([0, 0, 2]),
    buffer=st.integers(0, 5),
    drop_last=st.booleans(),
    bad=st.sets(st.integers(0, 29), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 29)),
    stop=st.integers(0, 20),
)
def test_stream_resume_is_exact_with_any_bad_data(tmp_path, n, maxcount, batch_size, workers, buffer, drop_last,
                                                  bad, cut, stop):
    """Resuming at any batch of an epoch with undecodable samples and a shard cut short gives the same batches and
    the same skip count as the uninterrupted epoch (or the same error)."""
    folder = tmp_path / f"case{len(os.listdir(tmp_path))}"
    folder.mkdir()
    index = _index_of(folder, n=n, maxcount=maxcount)
    bad = frozenset(i for i in bad if i < n)
    if cut is not None and cut < n:
        _cut_before(folder / f"s-{cut // maxcount:03d}.tar", f"{cut:09d}")

    def make():
        return ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=batch_size, num_workers=workers,
                         shuffle_buffer=buffer, drop_last=drop_last, decode=functools.partial(_bad_keys, bad),
                         handler="warn")

    def run(loader, until=None):
        out = []
        try:
            for k, (x, _) in enumerate(loader):
                out.append(ids_of(x))
                loader.record(x.flatten(1)[:, 0].float())
                if k == until:
                    saved.append(loader.state_dict())  # inside the loop: a mid-epoch checkpoint
                    break
        except ShardError as exc:  # every sample of some worker's share is bad
            out.append(str(exc).split(";")[0])
        return out

    saved: list[dict] = []

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = make()
        run(full)
        reference = run(full)  # epoch 1: removals, bad samples, a lost shard tail
        if not reference or isinstance(reference[-1], str):
            return
        at = stop % len(reference)
        loader = make()
        run(loader)
        run(loader, until=at)
        resumed = make()
        resumed.load_state_dict(saved[-1])
        assert run(resumed) == reference[at + 1 :]
    assert resumed.history[-1]["skipped"] == full.history[-1]["skipped"]
    event(f"resumed after bad data: {full.history[-1]['skipped'] > 0}, workers: {workers}")


def test_stream_sampler_set_epoch_sets_the_loaders_epoch(tmp_path):
    loader = ed.stream(_index_of(tmp_path), ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=0)
    loader.sampler.set_epoch(3)  # a DDP loop's body, unchanged
    assert len(list(loader)) == 5 and loader.epoch == 3
    with pytest.raises(AttributeError, match="'SamplerView' object has no attribute 'shuffle'"):
        loader.sampler.shuffle  # noqa: B018 - a stream has no DataLoader sampler behind it


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loaded_epoch_closed_without_continuing_keeps_its_positions_and_skips(tmp_path, workers):
    # A state taken inside the loop, loaded, then set_epoch(next) as a loop that had moved on does: the loaded
    # epoch is closed without being continued. Its saved positions must survive (for a state_dict() in between)
    # and its skip count must be the one it had.
    index = _index_of(tmp_path, n=24, maxcount=8)

    def make():
        return ed.stream(index, ed.high_loss_removal(3, fraction=0.25), batch_size=2, num_workers=workers,
                         shuffle_buffer=3, decode=functools.partial(_bad_keys, frozenset({3, 11})), handler="warn")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = make()
        for k, (x, _) in enumerate(original):
            original.record(x.flatten(1)[:, 0].float())
            if k == 4:
                state = original.state_dict()
                break
        original.set_epoch(1)
        coming = len(original)
        reference = epoch_ids(original)
        resumed = make()
        resumed.load_state_dict(state)
        resumed.set_epoch(1)
        assert resumed.state_dict()["source"] == state["source"]
        assert len(resumed) == coming == len(reference)
        assert epoch_ids(resumed) == reference
    assert state["source"]["skipped"] >= 1
    assert resumed.history[0] == original.history[0]


def test_saved_worker_positions_name_a_non_int_epoch_or_position(tmp_path):
    index = _index_of(tmp_path)
    loader = ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=0)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    for key, value in (("epoch", torch.tensor([0, 0])), ("position", 1.0), ("epoch", False)):
        bad = {**state, "source": {**state["source"], key: value}}
        with pytest.raises(ValueError, match=r"state\['source'\] should hold the workers' positions in epoch 0 after "
                                             r"batch 1, got epoch="):
            ed.stream(index, ed.high_loss_removal(2, fraction=0.25), batch_size=4, num_workers=0).load_state_dict(bad)


def test_choices_of_the_wrong_type_are_type_errors(tmp_path):
    index = write(tmp_path, n=8)
    schedule = ed.mixup_pause(1, alpha=0.5)
    with pytest.raises(TypeError, match=r"handler should be one of \('raise', 'warn'\), got handler=1 of type int"):
        ed.stream(index, schedule, batch_size=2, handler=1)
    with pytest.raises(TypeError, match=r"decode should be one of \('rgb8', 'l8', 'gpu'\) or a callable, got decode=5"):
        ed.stream(index, schedule, batch_size=2, decode=5)
    with pytest.raises(TypeError, match=r"image_format should be one of \('jpg', 'png', 'npy'\), got image_format=None"):
        ed.write_shards(TensorDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)),
                        str(tmp_path / "t-%02d.tar"), image_format=None, progress=False)


def test_a_stream_made_under_inference_mode_trains_outside_it(tmp_path):
    index = write(tmp_path, n=12)
    with torch.inference_mode():
        loader = ed.stream(index, ed.high_loss_removal(3, fraction=0.25), batch_size=4, num_workers=0)
    for _ in range(2):
        for x, _ in loader:
            loader.record(x.flatten(1).float().mean(1))
    assert [h["seen"] for h in loader.history] == [12, 9]


def test_shards_are_named_by_the_path_parts_that_tell_them_apart():
    assert shard_names(["/a/x/train-0.tar", "/a/x/train-1.tar?X-Amz-Signature=abc"]) == ["train-0.tar", "train-1.tar"]
    assert shard_names(["/data/cats/s-0.tar", "/data/dogs/s-0.tar#frag"]) == ["cats/s-0.tar", "dogs/s-0.tar"]
    assert shard_names(["/a/s.tar", "/a/s.tar"]) == ["s.tar", "s.tar"]  # one shard listed twice


def test_same_named_shards_in_swapped_order_refuse_a_checkpoint(tmp_path):
    # Keys that restart in every shard get positions as ids: swapping cats/ and dogs/ (same file names, same keys)
    # must not hand the cats' losses to the dogs.
    urls = []
    for folder in ("cats", "dogs"):
        (tmp_path / folder).mkdir()
        urls += _foreign(tmp_path / folder, "s", [[f"{k:06d}" for k in range(6)]])
    loader = ed.stream(urls, ed.Schedule(1), batch_size=3, num_workers=0)
    for x, _ in loader:
        loader.record(x[:, 0])
    state = loader.state_dict()
    ed.stream(urls, ed.Schedule(1), batch_size=3, num_workers=0).load_state_dict(state)  # the same order loads
    swapped = ed.stream(urls[::-1], ed.Schedule(1), batch_size=3, num_workers=0)
    with pytest.raises(ValueError, match="source shards is .* in the state and .* here"):
        swapped.load_state_dict(state)


def test_a_presigned_urls_new_token_keeps_its_checkpoint(tmp_path):
    write(tmp_path, n=8, maxcount=4)
    urls = [f"file://{tmp_path}/train-{s:04d}.tar" for s in range(2)]
    first = ed.stream([u + "?X-Amz-Signature=aaa" for u in urls], ed.Schedule(1), batch_size=4, num_workers=0)
    list(first)
    again = ed.stream([u + "?X-Amz-Signature=bbb" for u in urls], ed.Schedule(1), batch_size=4, num_workers=0)
    again.load_state_dict(first.state_dict())
    assert again.history == first.history


def test_a_state_of_one_kind_of_loader_is_refused_by_the_other(tmp_path):
    # NOTE [ A state's kind ]: same sample count, batch size and seed, other orders; loaded across, a resumed epoch
    # trained some samples twice and others never.
    data = TensorDataset(torch.arange(20).view(20, 1).float(), torch.zeros(20, dtype=torch.long))
    schedule = ed.high_loss_removal(2, fraction=0.25)
    mapped = ed.enlighten(torch.utils.data.DataLoader(data, batch_size=4, shuffle=True), schedule)
    streamed = ed.stream(_index_of(tmp_path), schedule, batch_size=4, num_workers=0)
    states = {}
    for name, loader in (("map", mapped), ("stream", streamed)):
        it = iter(loader)
        next(it)
        states[name] = loader.state_dict()
    with pytest.raises(ValueError, match=r"state does not match this loader: it is a state of enlighten\(\)'s loader, "
                                         r"and this is stream\(\)'s: their orders differ"):
        streamed.load_state_dict(states["map"])
    with pytest.raises(ValueError, match=r"it is a state of stream\(\)'s loader, and this is enlighten\(\)'s"):
        mapped.load_state_dict(states["stream"])
    # Without the kind (a state of an earlier version), the other loader's keys still tell them apart.
    for name, loader in (("map", streamed), ("stream", mapped)):
        del states[name]["signature"]["source"]["kind"]
        with pytest.raises(ValueError, match=r"state does not match this loader: source \w+ is (missing in the state|"
                                             r".* in the state and None here)"):
            loader.load_state_dict(states[name])
    # A stream()'s state of an earlier version, without its kind and shard layout digest, still loads into its own.
    it = iter(streamed)
    next(it)
    state = streamed.state_dict()
    for key in ("kind", "shards"):
        del state["signature"]["source"][key]
    again = ed.stream(_index_of(tmp_path), schedule, batch_size=4, num_workers=0)
    again.load_state_dict(state)
    assert len(list(again)) == 4


@pytest.mark.parametrize("workers", [0, 2])
def test_samples_removed_inside_a_shard_are_not_streamed(tmp_path, workers):
    # The other removal tests leave out whole shard tails, which no segment spans: samples removed between kept ones
    # of one shard are dropped only by the reader's id check.
    index = ed.write_shards(Tiles(48), str(tmp_path / "train-%04d.tar"), maxcount=8, image_format="png",
                            progress=False)
    loader = ed.stream(index, ed.high_loss_removal(3, fraction=0.25), batch_size=6, num_workers=workers,
                       shuffle_buffer=8)
    removed = set(range(0, 48, 4))  # every fourth id: the highest losses, scattered through every shard
    for epoch in range(3):
        seen = []
        for x, _ in loader:
            ids = x.reshape(x.shape[0], -1)[:, 0].round().long().tolist()
            seen += ids
            loader.record(torch.tensor([1.0 if i in removed else 0.0 for i in ids]))
        if epoch:
            assert loader.history[-1]["removed"] == 12
            assert sorted(seen) == sorted(set(range(48)) - removed)
        else:
            assert sorted(seen) == list(range(48))


@pytest.mark.parametrize("workers", [2, 3])
def test_the_short_batch_of_a_stream_is_its_last_whatever_the_workers(tmp_path, workers):
    # The logical worker that owns the epoch's last batch (batch nb - 1) is the one whose quota is short.
    index = ed.write_shards(Tiles(46), str(tmp_path / "train-%04d.tar"), maxcount=8, image_format="png",
                            progress=False)
    loader = ed.stream(index, ed.Schedule(0), batch_size=6, num_workers=workers, shuffle_buffer=8)
    sizes, seen = [], []
    for x, _ in loader:
        sizes.append(x.shape[0])
        seen += x.reshape(x.shape[0], -1)[:, 0].round().long().tolist()
    assert sizes == [6] * 7 + [4]
    assert sorted(seen) == list(range(46))
