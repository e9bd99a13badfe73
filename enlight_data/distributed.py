"""torch.distributed support: rank discovery and the once-per-epoch table sync.

Every rank computes the same global order and takes a disjoint share of equal
length (see :func:`enlight_data.sampler.shard`). Per-sample losses and the
accuracy counters are combined across ranks once per epoch, at the epoch
boundary, so removal sets and the accuracy-triggered end of the period are the
same everywhere; there is no collective per step.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from ._validate import check_int
from .feedback import LossTable

__all__ = ["resolve_rank", "sync_table", "table_reducer"]


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size: the arguments where given, else the process group's, else (0, 1)."""
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    check_int("world_size", world_size, minimum=1)
    check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"rank should be in [0, world_size={world_size}), got rank={rank}")
    return int(rank), int(world_size)


def sync_table(table: LossTable, *, group: "dist.ProcessGroup | None" = None) -> None:
    """Sum the running epoch's per-sample accumulators and counters over all ranks, in place.

    One all-reduce of ``2 * N + 6`` values per epoch: the per-sample loss sums and
    record counts (float32) and the epoch counters (cast to float32 alongside).
    """
    total, count, stats = table.pending()
    flat = torch.cat([total, count, stats.to(total.dtype)])
    if dist.get_backend(group) == "nccl" and not flat.is_cuda:
        flat = flat.cuda()
    dist.all_reduce(flat, group=group)
    flat = flat.to(total.device)
    n = total.numel()
    total.copy_(flat[:n])
    count.copy_(flat[n : 2 * n])
    stats.copy_(flat[2 * n :].to(stats.dtype))


def table_reducer(group: "dist.ProcessGroup | None" = None) -> Callable[[LossTable], None]:
    """The ``reduce`` callback an :class:`EnlightLoader` gives :meth:`LossTable.finalize_epoch`."""

    def reduce(table: LossTable) -> None:
        if dist.is_available() and dist.is_initialized():
            sync_table(table, group=group)

    return reduce
