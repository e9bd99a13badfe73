"""torch.distributed support: rank discovery, the check as a pass starts, and the once-per-epoch table sync.

Every rank computes the same global order and takes a disjoint share of equal
length (see :func:`enlight_data.sampler.shard`). Per-sample losses and the
accuracy counters are combined across ranks once per epoch, at the epoch
boundary, so removal sets and the accuracy-triggered end of the period are the
same everywhere. Before a pass over an epoch hands out its first batch, the ranks
compare their batch counts and orders (NOTE [ Checked before the first batch ]);
there is no collective per step.

NOTE [ Identical decisions on every rank ]
    A schedule decision (which samples to leave out, whether the period has
    ended) is a pure function of the synced table and counters, so the sync must
    leave *bitwise* identical values on every rank, not merely close ones. The
    counters travel in one ``all_gather`` of a small float64 header and are
    summed on the host in rank order; the dense table is an ``all_reduce`` (its
    result is the same on every rank); the sparse entries are gathered and added
    rank by rank, each rank's entries having distinct indices, so no atomic adds
    race and every rank adds the same numbers in the same order.

NOTE [ Dense or sparse ]
    Dense: ``all_reduce`` of the per-sample sums and counts, ``8 * N`` bytes
    (float32 sum and count per sample), whatever was recorded: two in place where
    the table is on the collective's device, else one of both concatenated. Sparse: every
    rank gathers the ``(index, sum, count)`` rows recorded during the epoch,
    12 bytes each (16 for tables of 2**31 samples or more), padded to the largest
    rank's count. ``mode="auto"`` goes sparse for tables of at least
    ``sparse_min_size`` samples when the padded gather is smaller than the dense
    table; ``benchmarks/distributed_sync.py`` measures both (the default
    threshold comes from there).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Callable, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from ._stack import caller_stacklevel
from ._validate import check_int
from .feedback import LossTable

__all__ = [
    "SPARSE_MIN_SIZE",
    "SyncMode",
    "agreement_digest",
    "check_sharding_still_holds",
    "made_before_process_group",
    "pass_checker",
    "resolve_rank",
    "sync_table",
    "table_reducer",
]

SyncMode = Literal["auto", "dense", "sparse"]

# Tables of at least this many samples may sync sparsely (see NOTE [ Dense or sparse ]). Measured with
# gloo, 2 CPU processes (benchmarks/distributed_sync.py): with an ImageNet epoch's records (640k per rank)
# dense beats sparse up to 10M samples (148 vs 160 ms) and loses at 100M (1.03 vs 0.73 s), the sparse
# time being mostly its single-threaded scan and scatter-add; on 8 ranks a ring all-reduce moves 1.75x
# the table while the gathered rows stay ~15 MB, so dense stays under ~0.7% of a 34 s ImageNet epoch up
# to 16M samples and sparse wins above.
SPARSE_MIN_SIZE = 16_000_000

# Header layout: table size, recorded rows, the ranks' agreement digest, the exchanges this rank may use, then the
# table's six epoch counters.
_SIZE, _ROWS, _AGREE, _EXCHANGE, _STATS = 0, 1, 2, 3, 4
# The exchanges a rank may use, by the code its header carries: every rank must carry the same one, or some would
# all-reduce while others all-gather and wait for each other forever.
_EXCHANGES = ("dense", "dense or sparse (mode='auto')", "sparse")


def agreement_digest(*parts: object) -> int:
    """A 48-bit digest of ``parts``' ``repr`` (exact in the sync's float64 header), for :func:`sync_table`."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=6).digest(), "little")


def resolve_rank(
    rank: int | None, world_size: int | None, group: "dist.ProcessGroup | None" = None
) -> tuple[int, int]:
    """Rank and world size: the arguments where given, else ``group``'s (default: the process group's), else (0, 1).

    With an initialised process group the arguments must be ``group``'s (the default group's without ``group``):
    the losses are combined over that group once per epoch, in its rank order, so another rank or size would give
    two processes the same share, or leave some ranks waiting for the others at the first sync. The exception is
    ``world_size=1`` without ``group``: a loader of its own on each process, which reads all the data and syncs
    nothing.

    Raises:
        ValueError: If ``group`` is given without an initialised process group or without this process in it, if
            ``world_size`` or ``rank`` differs from the group's, for a ``world_size > 1`` without a ``rank`` and
            without a process group, or for a rank outside ``[0, world_size)``.
    """
    initialised = dist.is_available() and dist.is_initialized()
    if group is None and initialised:
        size, own = dist.get_world_size(), dist.get_rank()
        if world_size is not None and world_size not in (1, size):
            raise ValueError(
                f"world_size should be the process group's size {size} (the losses are combined over it) or 1 (a "
                f"loader of its own on each process), got world_size={world_size}; for a data-parallel subgroup, "
                "pass it as group="
            )
        if world_size == 1 and rank is None:
            rank = 0  # not sharded: every process reads all the data and decides alone
        if rank is not None and rank != own and world_size != 1:
            raise ValueError(
                f"rank should be this process' rank {own} in the process group, got rank={rank}; for a "
                "data-parallel subgroup, pass it as group="
            )
    if group is not None:
        if not initialised:
            raise ValueError(f"group needs an initialised process group, got group={group!r} before init_process_group()")
        size, own = dist.get_world_size(group), dist.get_rank(group)
        if own < 0:
            raise ValueError(f"group should contain this process (global rank {dist.get_rank()}), got group={group!r}")
        if world_size is not None and world_size != size:
            raise ValueError(f"world_size should be group's size {size}, got world_size={world_size}")
        if rank is not None and rank != own:
            raise ValueError(f"rank should be this process' rank {own} in group, got rank={rank}")
    if world_size is None:
        world_size = dist.get_world_size(group) if initialised else 1
    if rank is None and not initialised and isinstance(world_size, int) and world_size > 1:
        raise ValueError(
            f"rank should be given with world_size={world_size} when torch.distributed is not initialised, got "
            "rank=None (every process would take rank 0's share)"
        )
    if rank is None:
        rank = dist.get_rank(group) if initialised else 0
    check_int("world_size", world_size, minimum=1)
    check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"rank should be in [0, world_size={world_size}), got rank={rank}")
    return int(rank), int(world_size)


def made_before_process_group(rank: int | None, world_size: int | None, group: "dist.ProcessGroup | None") -> bool:
    """Whether a loader's rank and world size were left to a process group that does not exist yet."""
    initialised = dist.is_available() and dist.is_initialized()
    return rank is None and world_size is None and group is None and not initialised


def check_sharding_still_holds(made_before: bool) -> None:
    """Refuse to iterate a loader made for one process before a process group of several was initialised.

    NOTE [ A loader made before init_process_group ]
    Without ``rank=``/``world_size=`` a loader takes them from the process group when it is made; made before
    ``init_process_group`` (a script that builds its data first, or PyTorch Lightning, which starts the processes
    in ``Trainer.fit``), it is one process's: every rank would read the whole dataset each epoch and decide removal
    alone, in step with nothing. That is caught here, at the first ``iter()`` after the group exists.
    """
    if made_before and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise RuntimeError(
            f"the loader was made before torch.distributed.init_process_group(), without rank= and world_size=: "
            f"each of the {dist.get_world_size()} ranks would read the whole dataset and combine no losses; make "
            "it after the process group is up (with PyTorch Lightning, in the LightningModule's setup()), or pass "
            "world_size=1 to give every process the whole dataset on purpose"
        )


def _comm_device(group: "dist.ProcessGroup | None", device: torch.device) -> torch.device:
    """Where the collective's tensors must live: the rank's CUDA device for an NCCL-only group."""
    if device.type == "cuda":
        return device
    backend = str(dist.get_backend(group)).lower()
    # "cpu:gloo,cuda:nccl" (a group with a CPU backend) takes CPU tensors as they are.
    if "nccl" in backend and "cpu:" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _index_dtype(size: int) -> torch.dtype:
    return torch.int32 if size < 2**31 else torch.int64


def _row_width(size: int) -> int:
    """float32 columns of one sparse row: the index (1 or 2 columns), the sum, the count."""
    return 3 if _index_dtype(size) == torch.int32 else 4


def sync_table(
    table: LossTable,
    *,
    group: "dist.ProcessGroup | None" = None,
    mode: SyncMode = "auto",
    sparse_min_size: int = SPARSE_MIN_SIZE,
    agreement: int | None = None,
) -> str:
    """Sum the running epoch's per-sample accumulators and counters over all ranks, in place.

    Call it on every rank of ``group`` at the same point (the loader does, when
    it finalises an epoch). Afterwards every rank holds the same accumulators.

    Args:
        table: This rank's table; its size must be the same on every rank.
        group: The process group (the default group when ``None``).
        mode: ``"dense"`` all-reduces the whole table, ``"sparse"`` gathers only
            the rows recorded during the epoch, ``"auto"`` picks (see the module's
            NOTE [ Dense or sparse ]).
        sparse_min_size: The smallest table ``"auto"`` syncs sparsely.
        agreement: A value every rank must give alike, or ``None`` on every rank: the loader's digest of the
            epoch's global order and the settings that make it (:func:`agreement_digest`, below ``2**53``).

    Returns:
        ``"dense"`` or ``"sparse"``, the exchange used (the same on every rank).

    Raises:
        ValueError: For an unknown ``mode``, or when the ranks' tables differ in size, their ``agreement``
            values differ, or their ``mode`` and ``sparse_min_size`` allow different exchanges (raised on every
            rank, so none waits forever).
    """
    if mode not in ("auto", "dense", "sparse"):
        raise ValueError(f"mode should be 'auto', 'dense' or 'sparse', got mode={mode!r}")
    check_int("sparse_min_size", sparse_min_size, minimum=0)
    world_size = dist.get_world_size(group)
    total, count, stats = table.pending()
    device = _comm_device(group, total.device)
    size = table.size
    consider_sparse = mode == "sparse" or (mode == "auto" and size >= sparse_min_size)
    recorded = torch.nonzero(count).squeeze(1) if consider_sparse else None  # counts are >= 0
    header = torch.empty(_STATS + stats.numel(), dtype=torch.float64, device=device)
    header[_SIZE] = size
    header[_ROWS] = -1 if recorded is None else recorded.numel()
    header[_AGREE] = -1 if agreement is None else agreement
    header[_EXCHANGE] = 2 if mode == "sparse" else int(consider_sparse)
    header[_STATS:] = stats.to(device)
    headers = torch.empty(world_size, header.numel(), dtype=torch.float64, device=device)
    dist.all_gather(list(headers.unbind(0)), header, group=group)
    headers = headers.cpu()  # the one small host read of the sync
    sizes = headers[:, _SIZE].long().tolist()
    if len(set(sizes)) != 1:
        raise ValueError(f"loss tables should have the same size on every rank, got sizes {sizes} by rank")
    agreed = [int(a) for a in headers[:, _AGREE].tolist()]
    if len(set(agreed)) != 1:
        raise _disagreement(agreed)
    exchanges = [_EXCHANGES[int(e)] for e in headers[:, _EXCHANGE].tolist()]
    if len(set(exchanges)) != 1:
        raise ValueError(
            "sync_table should get the same mode and sparse_min_size on every rank (for this table size), got "
            f"exchanges {exchanges} by rank"
        )
    # Summed on the host in rank order: the same float64 result on every rank.
    stats.copy_(headers[:, _STATS:].sum(0).to(stats.device, stats.dtype))
    rows = [int(r) for r in headers[:, _ROWS].tolist()]
    width = _row_width(size)
    # "auto": sparse when the padded rows every rank receives are fewer bytes than the dense table.
    sparse = recorded is not None and (
        mode == "sparse" or world_size * max(rows) * width * 4 < 2 * size * 4
    )
    if sparse and recorded is not None:
        _sync_sparse(total, count, recorded, rows, width, device, group)
    else:
        _sync_dense(total, count, device, group)
    return "sparse" if sparse else "dense"


def _disagreement(digests: list[int]) -> ValueError:
    """The error every rank raises when the ranks' agreement digests differ."""
    return ValueError(
        "ranks should read one global order per epoch (the same seed, data, sampling and schedule on every "
        f"rank), got different ones: digests {digests} by rank. Each rank's share then overlaps another's: pass "
        "the same seed=, batch size and schedule on every rank (a removal fraction that differs by rank leaves "
        "out different samples), and use a sampler with a generator attribute (which is seeded per epoch) "
        "rather than one drawing from a per-rank random state"
    )


def pass_checker(
    group: "dist.ProcessGroup | None" = None, *, agreement: Callable[[], int]
) -> Callable[[int, int, torch.device], None]:
    """The check an :class:`~enlight_data.EnlightLoader` of several ranks runs as each pass over an epoch starts.

    NOTE [ Checked before the first batch ]
    A rank given more batches than another (a batch size, ``drop_last``, dataset or removal fraction that differs
    by rank) would wait forever in its extra step's collective, DDP's gradient all-reduce, and never reach the
    epoch's end, where the table sync compares the ranks' orders. So before a pass hands out its first batch,
    every rank all-gathers two int64s, the batches the pass will yield and the digest of the epoch's order and
    the settings that make it (``agreement``), and all raise the same ``ValueError`` if they differ. This runs
    at the pass's first ``next()``, not at ``iter()``: an iterator made and dropped unused (Lightning's probe)
    makes no collective. One small exchange per pass, and one host read. On an NCCL group it runs on the device
    ``check`` is given where that is a CUDA device (the loader's ``device=``, else its table's), else on the
    current CUDA device, as the sync of a CPU table and torch.distributed's object collectives do.

    Args:
        group: The process group (the default group when ``None``).
        agreement: Called at each check for the digest every rank must share (see :func:`sync_table`).

    Returns:
        ``check(epoch, batches, device)``, which does nothing without an initialised process group (the table
        sync warns then).
    """

    def check(epoch: int, batches: int, device: torch.device) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = _comm_device(group, device)
        mine = torch.tensor([batches, agreement()], dtype=torch.int64, device=device)
        every = torch.empty(dist.get_world_size(group), 2, dtype=torch.int64, device=device)
        dist.all_gather(list(every.unbind(0)), mine, group=group)
        counts, digests = every.cpu().t().tolist()
        if len(set(counts)) != 1:
            raise ValueError(
                f"ranks should yield the same number of batches in each pass over an epoch, got {counts} by rank "
                f"in epoch {epoch}: a rank with more would wait forever in its extra step's collective (DDP's "
                "gradient all-reduce). Pass the same dataset, batch size, drop_last and schedule on every rank (a "
                "removal fraction that differs by rank leaves out different samples)"
            )
        if len(set(digests)) != 1:
            raise _disagreement(digests)

    return check


def _sync_dense(total: Tensor, count: Tensor, device: torch.device, group: "dist.ProcessGroup | None") -> None:
    if total.device == device:  # in place, no copy of the table
        dist.all_reduce(total, group=group)
        dist.all_reduce(count, group=group)
        return
    n = total.numel()
    flat = torch.cat([total, count]).to(device)
    dist.all_reduce(flat, group=group)
    flat = flat.to(total.device)
    total.copy_(flat[:n])
    count.copy_(flat[n:])


def _sync_sparse(
    total: Tensor,
    count: Tensor,
    recorded: Tensor,
    rows: list[int],
    width: int,
    device: torch.device,
    group: "dist.ProcessGroup | None",
) -> None:
    world_size, most = len(rows), max(rows)
    if most == 0:  # nothing recorded on any rank
        return
    index_dtype = torch.int32 if width == 3 else torch.int64
    packed = torch.zeros(most, width, dtype=torch.float32, device=total.device)
    k = recorded.numel()
    # The index travels bit for bit: all_gather copies, it never adds.
    packed[:k, : width - 2] = recorded.to(index_dtype).view(torch.float32).view(k, width - 2)
    packed[:k, width - 2] = total[recorded]
    packed[:k, width - 1] = count[recorded]
    packed = packed.to(device)
    gathered = torch.empty(world_size, most, width, dtype=torch.float32, device=device)
    dist.all_gather(list(gathered.unbind(0)), packed, group=group)
    gathered = gathered.to(total.device)
    # Only recorded entries are non-zero (a sum grows only where its count does).
    total.index_fill_(0, recorded, 0.0)
    count.index_fill_(0, recorded, 0.0)
    for rank, k_r in enumerate(rows):  # rank order: the same additions on every rank
        part = gathered[rank, :k_r]
        index = part[:, : width - 2].contiguous().view(index_dtype).view(-1).long()
        total.index_add_(0, index, part[:, width - 2])
        count.index_add_(0, index, part[:, width - 1])


def table_reducer(
    group: "dist.ProcessGroup | None" = None,
    *,
    mode: SyncMode = "auto",
    sparse_min_size: int = SPARSE_MIN_SIZE,
    agreement: Callable[[], int] | None = None,
) -> Callable[[LossTable], None]:
    """The ``reduce`` callback an :class:`EnlightLoader` gives :meth:`LossTable.finalize_epoch`.

    Without an initialised process group it leaves the table as it is and warns
    once: each rank then decides from its own share of the losses and accuracy.
    ``agreement``, when given, is called at each sync for the value every rank must share (see :func:`sync_table`).
    """
    warned = False

    def reduce(table: LossTable) -> None:
        nonlocal warned
        if dist.is_available() and dist.is_initialized():
            sync_table(table, group=group, mode=mode, sparse_min_size=sparse_min_size,
                       agreement=None if agreement is None else agreement())
        elif not warned:
            warned = True
            warnings.warn(
                "world_size > 1 but torch.distributed is not initialised: the loss table and the "
                "accuracy are not combined across ranks, so removal sets and the end of the "
                "period may differ between ranks; call torch.distributed.init_process_group() first",
                RuntimeWarning,
                stacklevel=caller_stacklevel(),
            )

    return reduce
