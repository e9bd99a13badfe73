"""Moving batches to the training device, with side-stream prefetch on CUDA.

With a CUDA device, batch k+1 is copied host→device on a side stream (from
pinned memory, non_blocking) while batch k is in use, as timm's PrefetchLoader
does. The stream is created once per loader and reused across epochs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping
from typing import Any, Iterable, Iterator, TypeVar

import torch
from torch import Tensor

__all__ = ["Prefetcher", "move_to", "with_items"]

T = TypeVar("T")


def move_to(batch: T, device: torch.device, *, non_blocking: bool = True) -> T:
    """Move every tensor in a (nested) tuple/list/dict batch to ``device``; other items pass through."""
    if isinstance(batch, Tensor):
        # Host to device is asynchronous from pageable memory too (CUDA stages it); device to host only into pinned
        # memory, which a plain .to("cpu") does not give: there a non_blocking copy could be read before it lands.
        upload = batch.device.type == "cpu" and device.type != "cpu"
        return batch.to(device, non_blocking=non_blocking and (upload or batch.is_pinned()))  # type: ignore[return-value]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to(b, device, non_blocking=non_blocking) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(b, device, non_blocking=non_blocking) for b in batch)
    if isinstance(batch, Mapping):
        return with_items(batch, {k: move_to(v, device, non_blocking=non_blocking) for k, v in batch.items()})
    return batch


def with_items(batch: Mapping[Any, Any], items: Mapping[Any, Any]) -> Any:
    """A copy of the mapping ``batch`` of its own type, with ``items`` set, as ``default_collate`` rebuilds one.

    A mutable mapping is copied and updated, which keeps its type and settings (a ``defaultdict``'s factory, a
    ``UserDict`` subclass such as a tokenizer's ``BatchEncoding``); another mapping is made anew from its items,
    or becomes a ``dict`` where its type cannot be made from them.
    """
    if isinstance(batch, MutableMapping):
        out = copy.copy(batch)
        out.update(items)
        return out
    merged = {**batch, **items}
    try:
        return type(batch)(merged)  # type: ignore[call-arg]
    except TypeError:
        return merged


def _record_stream(batch: Any, stream: "torch.cuda.Stream") -> None:
    if isinstance(batch, Tensor):
        if batch.is_cuda:
            batch.record_stream(stream)
    elif isinstance(batch, (list, tuple)):
        for b in batch:
            _record_stream(b, stream)
    elif isinstance(batch, Mapping):
        for b in batch.values():
            _record_stream(b, stream)


class Prefetcher:
    """Moves the items of an iterable to ``device``, one item ahead on a side CUDA stream.

    Args:
        device: The target device; without CUDA the move is plain and synchronous.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream = torch.cuda.Stream(device=device) if device.type == "cuda" else None

    def __call__(self, items: Iterable[T]) -> Iterator[T]:
        if self._stream is None:
            for item in items:
                yield move_to(item, self.device)
            return
        stream = self._stream
        iterator = iter(items)
        pending: Any = None
        have = False
        for item in iterator:
            with torch.cuda.stream(stream):
                moved = move_to(item, self.device)
            if have:
                yield pending
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            _record_stream(moved, current)
            pending, have = moved, True
        if have:
            yield pending
