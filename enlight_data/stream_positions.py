"""Where each worker of a shard stream is, batch by batch: an exact mid-epoch resume after skipped samples.

A stream's worker fast-forwards past the samples of its batches before a resume point without decoding them
(see ``streaming.py``). Without more, it cannot know which of them failed to decode the first time
(``handler="warn"``): it would take one sample too few per bad one, and its rest of the epoch would come early.
So every batch a worker yields carries a :class:`Mark`: how many samples of its stream it has taken so far, the
positions in that stream of the samples it could not decode, and the skips it counted. :class:`WorkerPositions`
keeps them in the main process, by batch, and gives the position of every worker after any batch handed out, for
the loader's ``state_dict()``. A resumed worker then skips exactly those samples, counting the bad ones as not
delivered, and picks up where it was.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Mark", "WorkerPositions", "check_positions"]

MESSAGE_CHARS = 400  # the first skip's message is kept for the epoch's warning, cut to this length


class Mark(NamedTuple):
    """What a worker's batch says about the worker's stream, right after its last sample."""

    worker: int  # the logical worker (batch j comes from worker j % workers)
    taken: int  # samples taken from the worker's shuffled stream this epoch (fast-forwarded ones included)
    bad: tuple[int, ...]  # positions in that stream of samples that failed to decode, since the worker's last batch
    skips: int  # bad samples and shard tails counted since the worker's last batch
    message: str  # the first of those skips' messages ("" if none)


class WorkerPositions:
    """The stream position of each logical worker after each batch of the current epoch (main process).

    Args:
        workers: Logical workers (DataLoader workers, at least 1).
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.begin(-1, 0, None)

    def begin(self, epoch: int, start: int, base: dict[str, Any] | None) -> None:
        """Start counting ``epoch`` at batch ``start``, from ``base`` (a validated :meth:`state`) when resuming.

        Without a base, a resumed epoch's skipped batches are assumed to have had no bad sample.
        """
        self.epoch, self.start, self._next = epoch, start, start
        if base is None:
            self._base_taken: list[int] | None = [0] * self.workers if start == 0 else None
            self._bad: list[list[int]] = [[] for _ in range(self.workers)]
            self._base_skipped, self._base_message = 0, ""
        else:
            self._base_taken = list(base["taken"])
            self._bad = [list(b) for b in base["bad"]]
            self._base_skipped, self._base_message = int(base["skipped"]), str(base["message"])
        self._base_bad = [len(b) for b in self._bad]
        # batch j -> (its worker's taken count, its worker's bad count, skips of the epoch so far, first message)
        self._after: dict[int, tuple[int, int, int, str]] = {}
        self._skipped, self._message = self._base_skipped, self._base_message

    def add(self, mark: Mark) -> None:
        """Record the mark of the next batch of the epoch."""
        j = self._next
        if mark.worker != j % self.workers:
            raise RuntimeError(f"batch {j} should come from worker {j % self.workers}, got a batch of worker "
                               f"{mark.worker}; was the stream's DataLoader iterated out of order?")
        self._next += 1
        bad = self._bad[mark.worker]
        bad.extend(mark.bad)
        self._skipped += mark.skips
        if mark.message and not self._message:
            self._message = mark.message[:MESSAGE_CHARS]
        self._after[j] = (mark.taken, len(bad), self._skipped, self._message)

    def skipped(self, batches: int) -> tuple[int, str]:
        """Skips of the epoch's first ``batches`` batches, and the first one's message."""
        last = self._after.get(batches - 1)
        if last is None:
            return self._base_skipped, self._base_message
        return last[2], last[3]

    def state(self, batches: int) -> dict[str, Any]:
        """Every worker's position after the epoch's first ``batches`` batches (plain values); ``{}`` if unknown.

        It is unknown only in an epoch resumed from a state without positions, for a worker that has not yielded a
        batch since.
        """
        taken: list[int] = []
        bad: list[list[int]] = []
        for w in range(self.workers):
            last = batches - 1 - (batches - 1 - w) % self.workers if batches > w else -1  # w's last batch
            if last >= self.start:
                n, nbad = self._after[last][:2]
            elif self._base_taken is None:
                return {}
            else:
                n, nbad = self._base_taken[w], self._base_bad[w]
            taken.append(n)
            bad.append(self._bad[w][:nbad])
        skipped, message = self.skipped(batches)
        return {"epoch": self.epoch, "position": batches, "taken": taken, "bad": bad, "skipped": skipped,
                "message": message}


_KEYS = ("epoch", "position", "taken", "bad", "skipped", "message")


def _is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_positions(value: Any, *, epoch: int, position: int, delivered: list[int]) -> dict[str, Any]:
    """Validate ``state['source']`` for a resume of ``epoch`` at batch ``position``.

    Args:
        value: The saved :meth:`WorkerPositions.state`.
        epoch: The state's epoch.
        position: The state's position (batches handed out).
        delivered: Per logical worker, the samples its batches before ``position`` hold.

    Returns:
        ``value``, a base for :meth:`WorkerPositions.begin`.

    Raises:
        ValueError: If it is malformed or does not fit the epoch, the position or the workers.
    """
    key = "state['source']"
    if not isinstance(value, dict) or set(value) != set(_KEYS):
        raise ValueError(f"{key} should be a dict with keys {list(_KEYS)} (from state_dict()), got {value!r:.80}")
    if type(value["epoch"]) is not int or type(value["position"]) is not int or (value["epoch"], value["position"]) != (
        epoch, position
    ):
        raise ValueError(f"{key} should hold the workers' positions in epoch {epoch} after batch {position}, got "
                         f"epoch={value['epoch']!r}, position={value['position']!r}")
    taken, bad = value["taken"], value["bad"]
    workers = len(delivered)
    for name, items in (("taken", taken), ("bad", bad)):
        if not isinstance(items, list) or len(items) != workers:
            raise ValueError(f"{key}[{name!r}] should be a list of {workers} entries (one per worker), got "
                             f"{items!r:.80}")
    for w in range(workers):
        n, b = taken[w], bad[w]
        if not _is_int(n) or not isinstance(b, list) or not all(_is_int(p) for p in b) \
                or any(p >= q for p, q in zip(b, b[1:])) or (b and b[-1] >= n):
            raise ValueError(f"{key} should give worker {w} a count taken >= 0 and increasing bad positions below "
                             f"it, got taken={n!r}, bad={b!r:.80}")
        if n - len(b) != delivered[w]:
            raise ValueError(f"{key}: worker {w}'s batches before batch {position} should hold {delivered[w]} "
                             f"samples, got taken={n} with {len(b)} bad; was the state saved with other shards?")
    if not _is_int(value["skipped"]) or not isinstance(value["message"], str):
        raise ValueError(f"{key} should have an int skipped >= 0 and a str message, got skipped="
                         f"{value['skipped']!r}, message={value['message']!r:.80}")
    return value
