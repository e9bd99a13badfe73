"""``stream()``: webdataset tar shards under an enlightenment-period schedule.

A :class:`StreamSource` implements the loader's Source protocol over tar shards. Each DataLoader worker runs
webdataset ``DataPipeline`` objects of small generator stages ``f(src, **kw)``: one per pass over its share of
the epoch (a few segments of shards, see NOTE [ Equal epochs from shards ]), chained by ``_passes`` and followed by
the per-epoch stages::

    _passes(segments -> _read (tar members -> samples with ids, exclusion) -> _shuffle) -> _skip -> _decode -> _take
    -> _batch

The id of a sample is its integer ``__key__`` (what :func:`enlight_data.write_shards` writes), or for foreign shards
its position in the catalogue (shard after shard), or with ``num_ids`` a blake2b hash of (shard basename, key) (see
:func:`enlight_data.shards.load_catalog`); the reader takes it from the shard catalogue by the sample's position in
its shard and checks the key against it. Workers, persistent ones too,
read the epoch and start batch from a small shared-memory tensor and the excluded-id mask from the loader's
``SharedClock.excluded``. The reader checks the id of a sample from its first tar member's header, so a removed
sample's bytes are skipped in the tar stream and never copied out, let alone decoded. Every shard is closed as soon
as its segment is read, or when the pipeline is closed or collected."""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import multiprocessing
import re
import tarfile
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from . import _codec
from ._inference import normal_tensors
from ._rng import Stream, derive_seed, make_generator, seed_globals
from ._stack import caller_stacklevel
from ._validate import check_bool, check_choice, check_int
from ._workers import drop_dead_workers, drop_iterator
from .context import SharedClock
from .distributed import agreement_digest, made_before_process_group, pass_checker, resolve_rank, table_reducer
from .loader import EnlightLoader, check_arguments, check_soft_targets, resolve_device
from .schedule import Schedule
from .shards import (
    HANDLERS,
    KEY_SPACE,
    ShardCatalog,
    ShardError,
    close_stream,
    hash_id,
    load_catalog,
    local_path,
    member_key,
    shard_names,
)
from .stream_positions import MESSAGE_CHARS, Mark, WorkerPositions, check_positions

__all__ = ["ShardError", "StreamSource", "stream"]

DECODES = ("rgb8", "l8", "gpu")
_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_JPEG_EXTS = ("jpg", "jpeg")
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset.tariterators.base_plus_ext's pattern

# NOTE [ Equal epochs from shards ]
# Every rank must yield the same number of batches, or a distributed step hangs, and every kept sample should be
# seen once per epoch. The plan of an epoch is a pure function of (seed, epoch, excluded mask, rank, world size,
# workers), computed identically in the main process and in every worker from the shard catalogue:
#   1. the shards are permuted with a generator from (seed, epoch, Stream.SHARDS); shards whose samples are all
#      removed are dropped (never opened). The kept samples of the rest, in that order, are one sequence of K
#      samples (K = catalogue minus excluded ids).
#   2. every rank yields S = ceil(K / world_size) samples in ceil(S / batch_size) batches; with drop_last,
#      floor(S / batch_size) batches of Q = batches * batch_size samples. Rank r takes Q (= S without drop_last)
#      samples from position r * S of the sequence, read cyclically. So without drop_last every kept sample is
#      seen exactly once, and the world_size * S - K < world_size positions past the end repeat the first samples
#      (as DistributedSampler pads; none with one rank or when world_size divides K). With drop_last the shares
#      still start at r * S (the padded layout, then the drop): the S - Q samples after each rank's share (fewer
#      than batch_size per rank) are left out for this epoch, and the last rank's positions past the end,
#      max(0, (world_size - 1) * S + Q - K) < world_size of them, repeat the first samples.
#   3. batch j of a rank comes from logical worker j % W, which is how a DataLoader interleaves iterable workers, so
#      each worker knows its exact sample quota; worker w takes the next quota samples of its rank's share. That is
#      a few segments (shard, first, stop) of sample positions in the catalogue's order of each shard, so a shard
#      can be split between workers and ranks. A segment that starts inside a shard reads past the tar members
#      before it without copying them out (as for removed samples); one that ends inside a shard closes it there.
#      A worker has at most one segment that starts inside a shard, two when its share wraps around (padding), so
#      splitting costs each worker at most about one shard's worth of reading per epoch, and none when the shards
#      divide evenly. Nothing waits on anything else, so nothing hangs at the end of an epoch.
#   4. The reader counts the samples of a shard it reads to the end against the catalogue: fewer (a shard cut at a
#      member boundary, or an index that overstates a count) raise ShardError, or count as skipped with
#      handler="warn". Samples a worker could not use (handler="warn") leave it short of its quota: it reads its
#      segments again, in a new order per pass, until the quota is met, so the epoch keeps its length. A whole
#      pass that yields no usable sample raises ShardError instead of repeating forever.
# Resume (``begin(epoch, excluded, start_batch)``): logical worker w skips the samples of its batches before
# ``start_batch`` (they pass the shuffle buffer but are not decoded), and DataLoader worker d plays logical worker
# (d + start_batch) % W, so the first batch after resuming is batch ``start_batch``. With handler="warn", samples
# that failed to decode before the resume point count as not delivered: each batch carries its worker's position
# (stream_positions.py), the loader's state saves it, and the resumed worker skips exactly as many samples, so the
# continuation is exact. (A state without positions, from before they were saved, assumes no bad sample there.)


@dataclass(frozen=True)
class _Plan:
    """One epoch's plan (see NOTE [ Equal epochs from shards ]); the same on every rank."""

    order: list[int]
    kept: Tensor
    per_rank: int  # S: where each rank's share starts in the epoch's sequence is rank * per_rank
    num_batches: int
    samples: int  # samples each rank yields: per_rank, or num_batches * batch_size with drop_last
    catalog: ShardCatalog
    excluded: Tensor | None


def _plan(
    catalog: ShardCatalog,
    excluded: Tensor | None,
    *,
    seed: int,
    epoch: int,
    world_size: int,
    batch_size: int,
    drop_last: bool,
) -> _Plan:
    num_shards = len(catalog.urls)
    order = torch.randperm(num_shards, generator=make_generator(seed, epoch, Stream.SHARDS)).tolist()
    kept = catalog.kept(excluded)
    per_rank = -(-int(kept.sum()) // world_size)
    num_batches = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
    samples = min(per_rank, num_batches * batch_size)
    return _Plan(order, kept, per_rank, num_batches, samples, catalog, excluded)


@dataclass(frozen=True)
class _Share:
    """What one logical worker reads in one epoch."""

    pool: list[tuple[int, int, int]]  # (shard, first, stop) sample positions; pass 0 reads them in this order
    quota: int  # samples of the whole epoch
    skip: int  # samples fast-forwarded without decoding (resume)


def _quota(plan: _Plan, worker: int, num_workers: int, batch_size: int, drop_last: bool) -> int:
    """Samples of logical worker ``worker``: those of batches ``j`` with ``j % num_workers == worker``."""
    nb = plan.num_batches
    quota = len(range(worker, nb, num_workers)) * batch_size
    if nb and not drop_last and (nb - 1) % num_workers == worker:
        quota -= nb * batch_size - plan.per_rank  # the short last batch
    return quota


def _positions(plan: _Plan, shard: int, lo: int, hi: int) -> tuple[int, int, int]:
    """``(shard, first, stop)``: the positions in ``shard`` that span its kept samples ``lo .. hi - 1``."""
    catalog = plan.catalog
    if plan.excluded is None or int(plan.kept[shard]) == int(catalog.counts[shard]):
        return shard, lo, hi
    a, b = int(catalog.starts[shard]), int(catalog.starts[shard + 1])
    where = torch.nonzero(~plan.excluded[catalog.ids[a:b]]).flatten()
    return shard, int(where[lo]), int(where[hi - 1]) + 1


def _segments(plan: _Plan, start: int, count: int) -> list[tuple[int, int, int]]:
    """The segments of ``count`` samples from ``start`` in the epoch's sequence of kept samples, read cyclically."""
    kept = plan.kept.tolist()
    live = [s for s in plan.order if kept[s] > 0]  # a shard whose samples are all removed is not even opened
    bounds = [0, *np.cumsum([kept[s] for s in live]).tolist()]
    total = bounds[-1]
    out: list[tuple[int, int, int]] = []
    while count > 0 and total:
        k = start % total
        i = bisect.bisect_right(bounds, k) - 1
        take = min(count, bounds[i + 1] - k)
        out.append(_positions(plan, live[i], k - bounds[i], k - bounds[i] + take))
        start += take
        count -= take
    return out


def _share(plan: _Plan, *, rank: int, worker: int, num_workers: int, batch_size: int, drop_last: bool,
           start_batch: int) -> _Share:
    """Logical worker ``worker`` of ``rank``: its segments, quota and resume skip."""
    quotas = [_quota(plan, w, num_workers, batch_size, drop_last) for w in range(num_workers)]
    quota = quotas[worker]
    pool = _segments(plan, rank * plan.per_rank + sum(quotas[:worker]), quota)
    skip = len(range(worker, min(start_batch, plan.num_batches), num_workers)) * batch_size
    return _Share(pool, quota, min(skip, quota))


class _Progress:
    """Where a worker's pipeline is (for error messages) and how far it got (to stop instead of looping forever)."""

    def __init__(self) -> None:
        self.url = ""
        self.fname = ""
        self.key = ""
        self.read = 0
        self.kept_in_pass = 0
        self.out = 0  # samples delivered (fast-forwarded ones included)
        self.taken = 0  # samples taken from the shuffled stream: delivered, fast-forwarded or undecodable
        self.bad: list[int] = []  # positions in that stream of the samples that failed to decode
        self.sent_bad = 0  # of them, those some batch's Mark already carried
        self.skips = 0  # failures counted since the last batch
        self.message = ""  # the first of them
        self.reported: set[tuple[str, str]] = set()  # failures counted this epoch: a repeat pass meets them again


_Handler = Callable[..., bool]  # (exception, failed sample or None) -> True to skip, or raises


def _sample_key(sample: dict[str, Any]) -> tuple[str, str]:
    """How a failed sample is known in ``_Progress.reported``."""
    return str(sample.get("__url__")), f"key {sample.get('__key__')}"


def _key_of(fname: str) -> str:
    """The sample key of a tar member name, as webdataset groups files (``base_plus_ext``)."""
    match = _KEY.match(fname)
    return match.group(1) if match else fname


# ----------------------------------------------------------------------------------------------- pipeline stages


def _passes(*, make_pass: Callable[[int], Iterable[dict[str, Any]]], progress: _Progress,
            names: list[str]) -> Iterator[dict[str, Any]]:
    """Pass 0, 1, ... over a worker's segments, each pass shuffled on its own; stop a pass that would repeat in vain."""
    passes = 0
    while True:
        progress.kept_in_pass = 0
        before = progress.out
        yield from make_pass(passes)  # each sample is decoded (or skipped) downstream before the next is read
        passes += 1
        if progress.kept_in_pass == 0 or progress.out == before:
            raise ShardError(
                f"a whole pass over shards {names[:4]} gave no usable sample "
                f"({progress.read} read, {progress.out} decoded); are they empty, missing or corrupt?"
            )


def _key_matches(catalog: ShardCatalog, url: str, key: str, at: int) -> bool:
    """Whether ``key`` in shard ``url`` is the sample the catalogue lists at ``at`` (shard after shard)."""
    if catalog.key_hashes is not None:  # ids by position: the key's hash was kept there
        return hash_id(url, key, KEY_SPACE) == int(catalog.key_hashes[at])
    sid = int(catalog.ids[at])
    if catalog.hashed:
        return hash_id(url, key, catalog.num_ids) == sid
    return key.isascii() and key.isdigit() and int(key) == sid


def _read_segment(catalog: ShardCatalog, shard: int, first: int, stop: int, excluded: np.ndarray,
                  progress: _Progress) -> Iterator[dict[str, Any]]:
    """The kept samples at positions ``first .. stop - 1`` of ``shard``, as webdataset sample dicts plus ``__id__``.

    Members of other samples are read past without being copied out. The shard is closed when the segment ends,
    and when the generator is closed early.
    """
    import webdataset as wds

    url = catalog.urls[shard]
    offset, count = int(catalog.starts[shard]), int(catalog.counts[shard])
    progress.url, progress.fname, progress.key = url, "", ""
    # NOTE [ Seeking past members ]
    # A local shard is opened for random access: reading past a member (a removed sample, or the samples before a
    # segment that starts inside the shard) then seeks over its data and reads only the next 512-byte header. Other
    # URLs are streams, where tarfile reads the skipped bytes and throws them away (never copying them out).
    path = local_path(url)
    stream = open(path, "rb") if path is not None else wds.gopen(url, "rb")
    tar = None
    finished = False  # read to the tar's end (else stopped early: see close_stream)
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*" if path is None else "r:*")
        pos, key = -1, None
        sample: dict[str, Any] | None = None
        for info in tar:
            tar.members = []  # type: ignore[attr-defined]  # a stream-mode TarFile keeps every TarInfo otherwise
            member = member_key(info)
            if member is None:
                continue
            prefix, suffix = member
            progress.fname = info.name
            if prefix != key:
                if sample is not None:
                    yield sample
                    sample = None
                key, pos = prefix, pos + 1
                if pos >= stop:
                    if pos == count:  # the segment ends at the shard's end, and the shard goes on
                        raise ShardError(
                            f"shard {url!r} holds more than the {count} samples its catalogue lists (key {key!r} is "
                            "one more); was the shard rewritten after its index?"
                        )
                    return
                if pos < first:
                    continue
                progress.key = key
                sid = int(catalog.ids[offset + pos])
                if not _key_matches(catalog, url, key, offset + pos):
                    raise ShardError(
                        f"shard {url!r}, key {key!r}: sample {pos} of the shard should have id {sid} by the "
                        "catalogue; was the shard rewritten after its index (or scan)?"
                    )
                progress.read += 1
                if excluded[sid]:
                    continue
                progress.kept_in_pass += 1
                sample = {"__key__": key, "__url__": url, "__id__": sid}
            if sample is None:
                continue
            suffix = suffix.lower()
            if suffix in sample:
                raise ValueError(f"{info.name}: duplicate file name in the tar file")
            data = tar.extractfile(info)
            assert data is not None  # member_key passes regular files only
            sample[suffix] = data.read()
        finished = True
        if sample is not None:
            yield sample
        if pos + 1 < stop:
            raise ShardError(
                f"shard {url!r} ends after {pos + 1} samples (last key {key!r}), but the catalogue lists {count}; "
                "is it truncated?"
            )
    finally:
        if tar is not None:
            tar.close()
        close_stream(stream, drain=finished)


def _read(src: Iterable[tuple[int, int, int]], *, catalog: ShardCatalog, excluded: np.ndarray, progress: _Progress,
          handler: _Handler) -> Iterator[dict[str, Any]]:
    """The kept samples of each ``(shard, first, stop)`` segment; a failure skips the rest of the segment if
    ``handler`` returns True."""
    for shard, first, stop in src:
        try:
            yield from _read_segment(catalog, shard, first, stop, excluded, progress)
        except Exception as exc:
            if handler(exc):
                continue
            raise


def _shuffle(src: Iterable[Any], *, bufsize: int, generator: torch.Generator) -> Iterator[Any]:
    """Shuffle through a buffer of ``bufsize`` items; draws come from ``generator`` only."""
    if bufsize <= 1:
        yield from src
        return
    buf: list[Any] = []
    draws: list[float] = []
    for item in src:
        if len(buf) < bufsize:
            buf.append(item)
            continue
        if not draws:
            draws = torch.rand(1024, generator=generator, dtype=torch.float64).tolist()
        k = int(draws.pop() * bufsize)
        buf[k], item = item, buf[k]
        yield item
    for k in torch.randperm(len(buf), generator=generator).tolist():
        yield buf[k]


def _skip(src: Iterable[Any], *, count: int, bad: tuple[int, ...], progress: _Progress) -> Iterator[Any]:
    """Fast-forward past ``count`` samples without decoding them; those at positions ``bad`` failed to decode when
    they were first read, and count as not delivered (NOTE [ Equal epochs from shards ], resume)."""
    it = iter(src)
    skipped = set(bad)
    for pos in range(count):
        sample = next(it, None)
        if sample is None:
            return
        progress.taken += 1
        if pos not in skipped:
            progress.out += 1
        else:  # reported when it failed: a repeat pass that meets it again does not count it twice
            progress.reported.add(_sample_key(sample))
    progress.bad, progress.sent_bad = list(bad), len(bad)
    progress.skips, progress.message = 0, ""  # failures met again on the way: counted before the state was saved
    yield from it


def _decode(src: Iterable[dict[str, Any]], *, decoder: Callable[[dict[str, Any]], Any], progress: _Progress,
            handler: _Handler, batch_size: int,
            reseed: Callable[[int], None] | None = None) -> Iterator[tuple[int, Any]]:
    """``(id, decoder(sample))``; failures name the shard and the key, then go to ``handler``.

    ``reseed(k)``, when given, runs before the first sample of this worker's k-th batch of the epoch (the skipped
    ones counted): NOTE [ Seeding workers per batch ] in mapstyle.py.
    """
    for sample in src:
        if reseed is not None and progress.out % batch_size == 0:
            reseed(progress.out // batch_size)
        pos = progress.taken
        progress.taken += 1
        try:
            out = decoder(sample)
        except Exception as exc:
            err = ShardError(
                f"shard {sample.get('__url__')!r}, key {sample.get('__key__')!r}: cannot decode: "
                f"{type(exc).__name__}: {exc}"
            )
            err.__cause__ = exc
            if handler(err, sample):
                progress.bad.append(pos)
                continue
            raise err from exc
        progress.out += 1
        yield sample["__id__"], out


def _take(src: Iterable[Any], *, count: int) -> Iterator[Any]:
    """The first ``count`` items, without pulling one more."""
    if count <= 0:
        return
    for n, item in enumerate(src, 1):
        yield item
        if n == count:
            return


def _batch(src: Iterable[tuple[int, Any]], *, batch_size: int, collate: Callable[[list[Any]], Any],
           mark: Callable[[], Mark]) -> Iterator[tuple[Tensor, Any, Mark]]:
    """``(ids, collate(items), mark())`` batches of ``batch_size``; the last one may be short."""
    ids: list[int] = []
    items: list[Any] = []
    for sid, item in src:
        ids.append(sid)
        items.append(item)
        if len(items) == batch_size:
            yield torch.tensor(ids, dtype=torch.int64), collate(items), mark()
            ids, items = [], []
    if items:
        yield torch.tensor(ids, dtype=torch.int64), collate(items), mark()


# --------------------------------------------------------------------------------------------- decoders, collate


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torchvision 0.29's per-call DeprecationWarning of its image codecs (used here on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _cls(sample: dict[str, Any]) -> int:
    if "cls" not in sample:
        raise KeyError(f"no 'cls' entry, got entries {sorted(k for k in sample if not k.startswith('__'))}")
    return int(sample["cls"])


class _ImageDecoder:
    """Images to uint8 ``(C, H, W)`` tensors (RGB or grayscale), ``npy`` to tensors, ``cls`` to int."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, sample: dict[str, Any]) -> tuple[Tensor, int]:
        for ext in _IMAGE_EXTS:
            if ext in sample:
                return _codec.decode(sample[ext], gray=self.mode == "l8"), _cls(sample)
        if "npy" in sample:
            return torch.from_numpy(np.load(io.BytesIO(sample["npy"]), allow_pickle=False)), _cls(sample)
        raise KeyError(f"no image or npy entry, got entries {sorted(k for k in sample if not k.startswith('__'))}")


def _raw_jpeg(sample: dict[str, Any]) -> tuple[Tensor, int]:
    """The JPEG bytes as a uint8 tensor (decoded later, on the GPU) and the label."""
    for ext in _JPEG_EXTS:
        if ext in sample:
            data = sample[ext]
            if data[:2] != b"\xff\xd8":
                raise ValueError(f"the {ext} entry is not a JPEG (it starts with {bytes(data[:4])!r})")
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), _cls(sample)
    raise KeyError(f"decode='gpu' needs a jpg entry, got entries {sorted(k for k in sample if not k.startswith('__'))}")


def _stack(items: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    xs = [x for x, _ in items]
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ValueError(
            f"a batch needs inputs of one shape, got shapes {sorted(shapes)[:4]}; resize when writing the shards, "
            "use decode='gpu' with a GpuAugment, or a callable decoder that resizes"
        )
    # default_collate stacks into shared memory inside a worker, which saves a copy on the way to the main process.
    return default_collate(xs), torch.tensor([y for _, y in items], dtype=torch.int64)


def _packed(items: list[tuple[Tensor, int]]) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """A batch's JPEG bytes as one flat uint8 tensor and the images' byte counts (see NOTE [ One buffer per batch ])."""
    # NOTE [ One buffer per batch ]
    # A worker's batch reaches the main process through shared memory, one segment (and one file descriptor) per
    # tensor. A list of 32 JPEGs is 32 segments; packed, it is one. With 2 CPU workers the packed batches arrived
    # 3.9-4.3x faster (benchmarks/streaming.py --transport-compare, 500x375 JPEGs, batch 32: about 8.5k against 2.1k
    # img/s, the rate decode="gpu" had reached on an H200). The main process splits the buffer into views.
    xs = [x for x, _ in items]
    sizes = torch.tensor([x.numel() for x in xs], dtype=torch.int64)
    total = int(sizes.sum())
    if get_worker_info() is not None:  # as default_collate does: write straight into shared memory
        flat = xs[0].new(xs[0].untyped_storage()._new_shared(total, device=xs[0].device)).resize_(total)
    else:
        flat = torch.empty(total, dtype=torch.uint8)
    torch.cat(xs, out=flat)
    return (flat, sizes), torch.tensor([y for _, y in items], dtype=torch.int64)


def _unpacked(packed: tuple[Tensor, Tensor]) -> list[Tensor]:
    """The per-image byte tensors of a :func:`_packed` batch, as views."""
    flat, sizes = packed
    return list(torch.split(flat, sizes.tolist()))


def _collate_pairs(items: list[Any]) -> tuple[Any, Any]:
    out = default_collate(items)
    if not isinstance(out, (list, tuple)) or len(out) != 2:
        raise TypeError("a callable decode should return (input, target) pairs")
    return out[0], out[1]


def _identity(batch: Any) -> Any:
    return batch


# ------------------------------------------------------------------------------------------------ the dataset


class _ShardStream(IterableDataset):
    """One epoch of ``(ids, (input, target))`` batches per ``iter()``, planned from the shared clock."""

    def __init__(self, catalog: ShardCatalog, clock: SharedClock, cursor: Tensor, excluded: Tensor, *, seed: int,
                 rank: int, world_size: int, batch_size: int, drop_last: bool, shuffle_buffer: int,
                 decode: str | Callable[[dict[str, Any]], Any], handler: str) -> None:
        super().__init__()
        self.catalog = catalog
        self.clock = clock
        self.cursor = cursor  # [epoch, start batch, 1 if the mask is the clock's, begin() count]
        self.excluded = excluded  # the mask when begin() got another one than the clock's
        # (begin() count, [(taken, bad positions)] per logical worker): where a resumed epoch's workers start. Workers
        # get it with their copy of the dataset (StreamSource.begin restarts persistent ones for it).
        self.resume: tuple[int, list[tuple[int, tuple[int, ...]]]] | None = None
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.shuffle_buffer = shuffle_buffer
        self.decode = decode
        self.handler = handler

    @staticmethod
    def _report(progress: _Progress, err: Exception) -> None:
        # NOTE [ Skips travel with the batches ]
        # A failure is counted in the Mark of the worker's next batch, so the epoch's count is that of the batches
        # the loop took: a loop left early (or a state loaded mid-epoch) leaves fetches of the old epoch running in
        # persistent workers, and their batches, counts included, are never taken.
        progress.skips += 1
        if not progress.message:
            progress.message = str(err)[:MESSAGE_CHARS]

    def _handler(self, progress: _Progress) -> _Handler:
        def handle(exn: Exception, sample: dict[str, Any] | None = None) -> bool:
            if isinstance(exn, ShardError):
                exn.args = exn.args[:1]
                if self.handler == "raise":
                    raise exn
                # A sample that fails to decode is known by its shard and key (a resumed worker knows the ones it
                # fast-forwarded past); other errors by their message, which names the shard and the sample.
                where = _sample_key(sample) if sample is not None else ("", str(exn))
                if where not in progress.reported:
                    progress.reported.add(where)
                    self._report(progress, exn)
                return True
            first = exn.args[0] if len(exn.args) == 1 else str(exn)  # OSError: (errno, reason)
            key = _key_of(progress.fname) if progress.fname else progress.key
            at = f", key {key!r}" if key else ""  # none yet: the shard failed before its first member
            err = ShardError(f"shard {progress.url!r}{at}: cannot read: {type(exn).__name__}: {first}")
            if self.handler == "raise":
                raise err from exn
            where = (progress.url, progress.fname)
            if where not in progress.reported:  # a repeat pass meets the same broken shard: count it once
                progress.reported.add(where)
                self._report(progress, err)
            return True

        return handle

    def _decoder(self) -> tuple[Callable[[dict[str, Any]], Any], Callable[[list[Any]], Any]]:
        if callable(self.decode):
            return self.decode, _collate_pairs
        if self.decode == "gpu":
            return _raw_jpeg, _packed
        return _ImageDecoder(self.decode), _stack

    def __iter__(self) -> Iterator[tuple[Tensor, Any]]:
        import webdataset as wds

        self.clock.activate()
        epoch, start, from_clock, generation = self.cursor.tolist()
        if epoch < 0:
            raise RuntimeError("the stream has not begun an epoch: iterate the EnlightLoader, not its source")
        info = get_worker_info()
        slot, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (slot + start) % workers
        excluded = self.clock.excluded if from_clock else self.excluded
        plan = _plan(self.catalog, excluded, seed=self.seed, epoch=epoch, world_size=self.world_size,
                     batch_size=self.batch_size, drop_last=self.drop_last)
        share = _share(plan, rank=self.rank, worker=worker, num_workers=workers, batch_size=self.batch_size,
                       drop_last=self.drop_last, start_batch=start)
        if share.quota - share.skip <= 0:
            return iter(())
        taken, bad = share.skip, ()  # a resume without positions: as if no sample before it had failed
        if self.resume is not None and self.resume[0] == generation:
            taken, bad = self.resume[1][worker]
        progress = _Progress()
        handler = self._handler(progress)
        decoder, collate = self._decoder()
        mask = excluded.numpy()
        urls = self.catalog.urls

        def make_pass(passes: int) -> Iterable[dict[str, Any]]:
            segments = share.pool
            bufsize = self.shuffle_buffer
            if passes:
                g = make_generator(self.seed, epoch, Stream.SHARDS, self.rank, worker, passes)
                segments = [segments[k] for k in torch.randperm(len(segments), generator=g).tolist()]
                # A repeat pass tops up the quota: a buffer no larger than what is missing keeps it from reading
                # (and holding) a whole pass for a few samples. Skipped samples count as delivered, so a resumed
                # epoch sizes it alike.
                bufsize = min(bufsize, max(1, share.quota - progress.out))
            samples = _read(segments, catalog=self.catalog, excluded=mask, progress=progress, handler=handler)
            return _shuffle(samples, bufsize=bufsize,
                            generator=make_generator(self.seed, epoch, Stream.BUFFER, self.rank, worker, passes))

        def mark() -> Mark:
            new = tuple(progress.bad[progress.sent_bad :])
            progress.sent_bad = len(progress.bad)
            out = Mark(worker, progress.taken, new, progress.skips, progress.message)
            progress.skips, progress.message = 0, ""
            return out

        reseed = None
        if info is not None and callable(self.decode):
            # A decode function's own random draws (the global states of this worker) are the same for a batch after
            # a resume, with persistent workers, and differ between ranks. This worker's k-th batch is numbered
            # worker + k * workers: one number per batch of the epoch (the loader takes them round-robin).
            keys = (self.rank,) if self.world_size > 1 else ()

            def reseed(k: int) -> None:
                seed_globals(derive_seed(self.seed, epoch, worker + k * workers, Stream.WORKER, *keys))

        pipeline = wds.DataPipeline(
            partial(_passes, make_pass=make_pass, progress=progress, names=[urls[s] for s, _, _ in share.pool]),
            partial(_skip, count=taken, bad=bad, progress=progress),
            partial(_decode, decoder=decoder, progress=progress, handler=handler, batch_size=self.batch_size,
                    reseed=reseed),
            partial(_take, count=share.quota - share.skip),
            partial(_batch, batch_size=self.batch_size, collate=collate, mark=mark),
        )
        return iter(pipeline)


# ------------------------------------------------------------------------------------------------- the source


class StreamSource:
    """The source protocol (see :class:`enlight_data.loader._Source`) over webdataset tar shards.

    Args:
        catalog: The shards and their sample ids (:func:`enlight_data.shards.load_catalog`).
        clock: The loader's shared clock; workers read the epoch and the excluded mask from it.
        batch_size: Samples per batch.
        num_workers: DataLoader workers (at most ``shards with samples // world_size``).
        shuffle_buffer: Size of each worker's shuffle buffer (0 or 1: shard order only).
        seed: Base seed of the shard order and the shuffle buffers.
        decode: ``"rgb8"``, ``"l8"``, ``"gpu"`` or a callable ``sample dict -> (input, target)``.
        drop_last: Drop each rank's short last batch.
        rank: This process's rank.
        world_size: Number of ranks.
        handler: ``"raise"`` or ``"warn"`` (skip bad samples and count them).
        persistent_workers: Keep the workers alive across epochs.
        device: The training device; with ``decode="gpu"`` the JPEG batch is decoded there.
        multiprocessing_context: How the DataLoader starts its workers (``None``: Python's default).
    """

    @normal_tensors
    def __init__(
        self,
        catalog: ShardCatalog,
        clock: SharedClock,
        *,
        batch_size: int,
        num_workers: int,
        shuffle_buffer: int,
        seed: int,
        decode: str | Callable[[dict[str, Any]], Any],
        drop_last: bool,
        rank: int,
        world_size: int,
        handler: str,
        persistent_workers: bool = False,
        device: torch.device | None = None,
        multiprocessing_context: str | multiprocessing.context.BaseContext | None = None,
    ) -> None:
        # Empty shards do not count: every rank and worker should have about a shard's worth of its own to read.
        num_shards = int((catalog.counts > 0).sum())
        if num_shards < world_size:
            raise ValueError(
                f"source should have at least world_size={world_size} shards that hold samples, got {num_shards} "
                f"(of {len(catalog.urls)} shards)"
            )
        workers = min(num_workers, num_shards // world_size)
        if workers < num_workers:
            warnings.warn(
                f"{num_shards} shards with samples over {world_size} ranks leave {num_shards // world_size} per rank: "
                f"using num_workers={workers} instead of {num_workers}",
                RuntimeWarning,
                stacklevel=caller_stacklevel(),
            )
        self.catalog = catalog
        self.num_samples = catalog.num_ids
        self.batch_size = batch_size
        self.num_workers = workers
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.decode = decode
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self._rank_keys = (rank,) if world_size > 1 else ()  # NOTE [ Per-rank random streams ] in loader.py
        # The shards' names and sizes: the same samples in another layout are read in another order.
        layout = [f"{name}:{int(n)}" for name, n in zip(shard_names(catalog.urls), catalog.counts)]
        self._layout = hashlib.blake2b("\n".join(layout).encode(), digest_size=8).hexdigest()
        self.device = device
        self._decode_stream: torch.cuda.Stream | None = None  # decode="gpu" (NOTE [ Decoding on a side stream ])
        self._clock = clock
        # Shared with the workers (persistent ones too): [epoch, start batch, mask is the clock's], and the
        # excluded mask when begin() is given another one than the clock's (the loader validating a state).
        self._cursor = torch.tensor([-1, 0, 1, 0], dtype=torch.int64).share_memory_()
        self._excluded = torch.zeros(catalog.num_ids, dtype=torch.bool).share_memory_()
        self._positions = WorkerPositions(max(workers, 1))
        self._loaded: dict[str, Any] | None = None  # the positions of a loaded state, for the begin() it resumes
        self.dataset = _ShardStream(
            catalog, clock, self._cursor, self._excluded, seed=seed, rank=rank, world_size=world_size,
            batch_size=batch_size, drop_last=drop_last, shuffle_buffer=shuffle_buffer, decode=decode, handler=handler,
        )
        pin = device is not None and device.type == "cuda" and decode != "gpu"
        self.loader = DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
            pin_memory=pin,
            persistent_workers=persistent_workers and workers > 0,
            # DataLoader refuses a context without workers (too few shards may leave none).
            multiprocessing_context=multiprocessing_context if workers > 0 else None,
        )
        self._mask_digest = ""  # of the begun epoch's excluded mask, with several ranks
        self._plan = _plan(catalog, None, seed=seed, epoch=0, world_size=world_size, batch_size=batch_size,
                           drop_last=drop_last)

    def begin(self, epoch: int, excluded: Tensor | None, start_batch: int = 0) -> None:
        """Prepare ``epoch`` without the ``excluded`` (bool mask) ids, from batch ``start_batch``.

        Workers read the epoch and start batch from shared memory, and the mask from the clock's
        ``SharedClock.excluded`` when ``excluded`` is that tensor (as the loader passes it), else from a shared
        copy made here.
        """
        mask = excluded
        if mask is None or mask is not self._clock.excluded:
            self._excluded.zero_()
            if mask is not None:
                self._excluded.copy_(mask)
            mask = self._excluded
        self._plan = _plan(self.catalog, mask, seed=self.seed, epoch=epoch, world_size=self.world_size,
                           batch_size=self.batch_size, drop_last=self.drop_last)
        if self.world_size > 1:  # every rank must leave out the same samples (checked at the epoch's sync)
            self._mask_digest = hashlib.blake2b(np.ascontiguousarray(mask.numpy()).data, digest_size=8).hexdigest()
        generation = int(self._cursor[3]) + 1
        self._cursor.copy_(torch.tensor([epoch, start_batch, int(mask is self._clock.excluded), generation]))
        self.loader.generator = make_generator(self.seed, epoch, Stream.LOADER, *self._rank_keys)
        loaded = self._loaded
        if loaded is None or (loaded["epoch"], loaded["position"]) != (epoch, start_batch) or start_batch == 0:
            loaded = None
        self._positions.begin(epoch, start_batch, loaded)
        self.dataset.resume = None
        if loaded is not None:
            self.dataset.resume = (generation, [(n, tuple(b)) for n, b in zip(loaded["taken"], loaded["bad"])])
            # Persistent workers hold the copy of the dataset they started with: start new ones, which copy this one.
            drop_iterator(self.loader)

    def batches(self) -> Iterator[tuple[Tensor, Any]]:
        """The begun epoch's ``(ids, (input, target))`` batches."""
        if self.decode != "gpu":
            return self._loader_batches()
        return self._gpu_batches()

    def _loader_batches(self) -> Iterator[tuple[Tensor, Any]]:
        drop_dead_workers(self.loader)  # NOTE [ A worker that dies outside the loader ]
        it = None
        try:
            it = iter(self.loader)  # persistent workers: resuming them can fail too (a hung worker's timeout)
            for ids, batch, mark in it:
                self._positions.add(mark)
                yield ids, batch
        except Exception:
            # NOTE [ Shut workers down on errors ]
            # The traceback of an error raised from a worker keeps the DataLoader iterator alive; when the garbage
            # collector finally frees it, its shutdown waits 5 s per worker for workers that never get the signal.
            # Shutting them down here is immediate; the next iter() starts fresh workers.
            drop_iterator(self.loader, it)  # persistent workers: do not resume the dead iterator (it None: the kept one)
            raise

    def _gpu_batches(self) -> Iterator[tuple[Tensor, Any]]:
        decode_jpeg = _codec.gpu_jpeg_decoder()
        from torchvision.io import ImageReadMode

        # NOTE [ Decoding on a side stream ]
        # nvJPEG's hardware decoder writes its outputs without waiting for the work already queued on the stream it
        # is given (pytorch/vision#9606, meta-pytorch/torchcodec#1634), and the caching allocator hands an output a
        # block freed on that stream as soon as it is freed: decoded on the loop's stream, a batch could overwrite
        # memory that the loop's queued kernels still read. Decoded on a stream of their own, the outputs come from
        # that stream's blocks, which nothing else queues work on (the decoder waits for its stream before it
        # returns); each output is marked as used by the loop's stream, so its block is reused only once the loop's
        # work on it has run. Decoding then also overlaps the loop's kernels.
        if self._decode_stream is None:
            self._decode_stream = torch.cuda.Stream(device=self.device)
        side = self._decode_stream
        for ids, (packed, y) in self._loader_batches():
            try:
                with _quiet(), torch.cuda.stream(side):
                    images = decode_jpeg(_unpacked(packed), mode=ImageReadMode.RGB, device=self.device)
            except Exception as exc:
                raise ShardError(
                    f"GPU JPEG decoding failed for a batch with ids {ids[:8].tolist()}: {type(exc).__name__}: {exc}"
                ) from exc
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(side)
            for image in images:
                image.record_stream(current)
            yield ids, (images, y)

    def num_batches(self) -> int:
        """Batches of the begun epoch, counted from its first batch (the same on every rank)."""
        return self._plan.num_batches

    def peek_num_batches(self, epoch: int, excluded: Tensor | None) -> int:
        """Batches ``epoch`` would have without ``excluded`` (a bool mask of ids); prepares nothing."""
        return _plan(self.catalog, excluded, seed=self.seed, epoch=epoch, world_size=self.world_size,
                     batch_size=self.batch_size, drop_last=self.drop_last).num_batches

    def end_epoch(self, epoch: int, batches: int) -> dict[str, Any]:
        """Extra history fields of a finished epoch (``skipped``: in its first ``batches`` batches, those the loop
        took); warns once per epoch about skipped samples."""
        skipped, first = self._positions.skipped(batches)
        if skipped:
            warnings.warn(f"epoch {epoch}: skipped {skipped} bad samples or shard tails; first: {first}",
                          RuntimeWarning, stacklevel=4)
        return {"skipped": skipped}

    def position_state(self, batches: int) -> dict[str, Any]:
        """The workers' positions after the begun epoch's first ``batches`` batches, for the loader's state."""
        return self._positions.state(batches)

    def load_position_state(self, state: dict[str, Any], epoch: int, excluded: Tensor, batches: int) -> None:
        """Validate a :meth:`position_state` (``{}``: none saved) for a resume of ``epoch`` (without the ``excluded``
        bool mask of ids) at batch ``batches``; the next ``begin()`` of that epoch and batch uses it.

        Raises:
            ValueError: If it is malformed or does not fit this stream, the epoch or the batch.
        """
        loaded = None
        if state != {}:
            plan = _plan(self.catalog, excluded, seed=self.seed, epoch=epoch, world_size=self.world_size,
                         batch_size=self.batch_size, drop_last=self.drop_last)
            workers = self._positions.workers
            delivered = [_share(plan, rank=self.rank, worker=w, num_workers=workers, batch_size=self.batch_size,
                                drop_last=self.drop_last, start_batch=batches).skip for w in range(workers)]
            loaded = check_positions(state, epoch=epoch, position=batches, delivered=delivered)
        self._loaded = loaded

    def agreement(self) -> int:
        """What every rank must share in the current epoch: the settings that make the plan, the epoch and the
        samples left out.

        The workers and their buffers only order a rank's own share: they may differ between ranks.
        """
        own = ("rank", "num_workers", "shuffle_buffer")
        settings = sorted((k, v) for k, v in self.signature().items() if k not in own)
        return agreement_digest(self.seed, settings, int(self._cursor[0]), self._mask_digest)

    def signature(self) -> dict[str, Any]:
        """Plain values a checkpoint must match (the order depends on all of them)."""
        return {
            "kind": "stream",  # a state from enlighten()'s loader reads another order (NOTE [ A state's kind ])
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "rank": self.rank,
            "num_shards": len(self.catalog.urls),
            "shards": self._layout,
            "num_workers": self.num_workers,
            "shuffle_buffer": self.shuffle_buffer,
            "drop_last": self.drop_last,
        }


def _check_context(value: Any) -> None:
    """``value`` should be None, a start method this platform has, or a multiprocessing context."""
    if value is None or isinstance(value, multiprocessing.context.BaseContext):
        return
    methods = multiprocessing.get_all_start_methods()
    if not isinstance(value, str):
        raise TypeError(
            f"multiprocessing_context should be None, one of {methods} or a multiprocessing context, "
            f"got multiprocessing_context of type {type(value).__name__}"
        )
    if value not in methods:
        raise ValueError(
            f"multiprocessing_context should be None or one of {methods} (this platform's start methods), "
            f"got multiprocessing_context={value!r}"
        )


def stream(
    source: Any,
    schedule: Schedule,
    *,
    batch_size: int,
    num_workers: int = 2,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    augment: Callable[..., Tensor] | None = None,
    decode: str | Callable[[dict[str, Any]], Any] = "rgb8",
    drop_last: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    group: "torch.distributed.ProcessGroup | None" = None,
    handler: str = "raise",
    persistent_workers: bool = False,
    num_ids: int | None = None,
    multiprocessing_context: str | multiprocessing.context.BaseContext | None = None,
) -> EnlightLoader:
    """Stream webdataset tar shards under ``schedule``: the :func:`enlight_data.enlighten` interface for shards.

    Args:
        source: An index JSON from :func:`enlight_data.write_shards`, a brace pattern
            (``"d/train-{000000..000009}.tar"``) or a list of shard URLs (anything webdataset opens). Without an
            index the tar headers are scanned once.
        schedule: A :class:`~enlight_data.Schedule`.
        batch_size: Samples per batch.
        num_workers: DataLoader workers; shards are split across ranks, then workers.
        shuffle_buffer: Per-worker shuffle buffer (raw bytes, before decoding).
        seed: Base seed of the shard order, the shuffle buffers, mixing and augmentation.
        num_classes: Needed when a phase mixes or smooths labels; defaults to the index's.
        device: Move batches there (and, with ``decode="gpu"``, decode there); ``"cuda"`` without an index is the
            current CUDA device when ``stream()`` is called (the default with ``decode="gpu"``).
        augment: A batch augmentation (a :class:`~enlight_data.GpuAugment` is required with ``decode="gpu"``).
        decode: ``"rgb8"`` (uint8 ``(3, H, W)`` images decoded in the workers; ``npy`` entries become tensors),
            ``"l8"`` (grayscale), ``"gpu"`` (workers ship JPEG bytes; the batch is decoded with
            ``torchvision.io.decode_jpeg(device="cuda")`` and made one tensor by ``augment``), or a callable that gets
            the raw webdataset sample dict (bytes by extension plus ``__key__``) and returns ``(input, target)``.
        drop_last: Drop the short last batch.
        rank: This process's rank (default: from ``torch.distributed``).
        world_size: Number of ranks (default: from ``torch.distributed``).
        group: The data-parallel process group: rank and world size come from it and the loss tables are
            combined over it (default: the whole world).
        handler: ``"raise"``: a corrupt shard or undecodable sample raises :class:`ShardError` naming the shard and
            the key; ``"warn"``: it is skipped, counted in ``history[-1]["skipped"]`` and warned about once per epoch
            (except a shard found damaged by this call's scan of a source without an index: it keeps the samples
            before the damage, with one ``RuntimeWarning`` from this call, and its lost tail is counted nowhere).
        persistent_workers: Keep the DataLoader workers across epochs (they read each epoch's plan from shared memory).
        num_ids: Hash every key into this many ids (:func:`~enlight_data.shards.hash_id`), so that a sample's id
            follows it (its shard file's name and key) to another shard list; colliding ids share a loss entry.
            Default: foreign keys get their sample's position as id (none shared; see
            :func:`~enlight_data.shards.load_catalog`). For shards without an index only (an index gives the ids).
        multiprocessing_context: How the DataLoader starts its workers, as for ``DataLoader``: ``"fork"``,
            ``"spawn"``, ``"forkserver"`` or a context object (default: Python's own, ``"forkserver"`` on Linux
            from Python 3.14). The batches are the same whichever starts them. With ``num_workers=0`` it has
            nothing to start, and is accepted (unlike ``DataLoader``) so that a script can turn workers off alone;
            so is ``persistent_workers``.

    Returns:
        An :class:`~enlight_data.EnlightLoader` yielding ``(input, target)`` tuples.

    Raises:
        TypeError: If an argument has the wrong type (each message names it), or ``source`` is not an index, a
            pattern or a list of URLs.
        ValueError: If a value is out of range or not one of the choices, ``device`` (or ``decode="gpu"``) names a
            device this machine lacks (or ``"meta"``), ``decode="gpu"`` has no ``augment``, a phase mixes or smooths
            labels and no ``num_classes`` is known, ``num_ids`` is given with an index, or the index has missing or
            invalid fields.
        FileNotFoundError: If the index or a local shard does not exist (``IsADirectoryError`` for a folder).
        RuntimeError: If ``decode="gpu"`` and this torchvision cannot decode JPEG on the GPU.
        ShardError: While iterating, for a corrupt shard or undecodable sample with ``handler="raise"`` (an index
            that does not match its shards is found there, when the reader meets the difference).

    Note:
        An epoch has ``ceil(ceil(K / world_size) / batch_size)`` batches on every rank (floor with ``drop_last``),
        ``K`` being the samples not removed this epoch. Every kept sample is read once per epoch; to keep the batch
        counts equal, fewer than ``world_size`` samples repeat (none with one rank), and with ``drop_last`` fewer
        than ``batch_size`` per rank are left out (see NOTE [ Equal epochs from shards ] in ``streaming.py``). The
        source needs at least ``world_size`` shards that hold samples. The order is a pure function of (seed,
        epoch, removal set, rank, world size, workers). Hashed ids (``num_ids``) that collide share one loss
        entry and one removal decision (``enlight_data.shards.load_catalog(source).collisions`` counts such samples).
    """
    check_arguments(schedule, num_classes=num_classes, seed=seed, augment=augment)
    check_int("batch_size", batch_size, minimum=1)
    check_int("num_workers", num_workers, minimum=0)
    check_int("shuffle_buffer", shuffle_buffer, minimum=0)
    check_bool("drop_last", drop_last)
    check_bool("persistent_workers", persistent_workers)
    _check_context(multiprocessing_context)
    check_choice("handler", handler, HANDLERS)
    if not callable(decode):
        check_choice("decode", decode, DECODES, other=" or a callable")
    dev = resolve_device(device)
    if decode == "gpu":
        if not torch.cuda.is_available():
            raise ValueError("decode='gpu' needs a CUDA device, and torch.cuda.is_available() is False; "
                             "use decode='rgb8' on this machine")
        if dev is None:
            dev = resolve_device("cuda")
        if dev is None or dev.type != "cuda":
            raise ValueError(f"decode='gpu' needs a CUDA device, got device={device!r}")
        if augment is None:
            raise ValueError("decode='gpu' needs augment (a GpuAugment) to crop the decoded images into one batch, "
                             "got augment=None")
        _codec.gpu_jpeg_decoder()  # this torchvision decodes JPEG on the GPU (a clear error now, not in the loop)
    alone = made_before_process_group(rank, world_size, group)
    rank, world_size = resolve_rank(rank, world_size, group)
    catalog = load_catalog(source, num_ids=num_ids, handler=handler)
    if num_classes is None:
        num_classes = catalog.num_classes
    check_soft_targets(schedule, num_classes)
    clock = SharedClock(schedule, catalog.num_ids)
    src = StreamSource(
        catalog,
        clock,
        batch_size=batch_size,
        num_workers=num_workers,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        decode=decode,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        handler=handler,
        persistent_workers=persistent_workers,
        device=dev,
        multiprocessing_context=multiprocessing_context,
    )
    return EnlightLoader(
        src,
        schedule,
        clock,
        num_classes=num_classes,
        device=dev,
        seed=seed,
        augment=augment,
        reduce=table_reducer(group, agreement=src.agreement) if world_size > 1 else None,
        check_pass=pass_checker(group, agreement=src.agreement) if world_size > 1 else None,
        made_before_group=alone,
    )
