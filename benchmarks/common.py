"""Shared benchmark plumbing: timing with warm-up, medians and spread, environment, JSON."""

from __future__ import annotations

import contextlib
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = [
    "RESULTS_DIR",
    "default_out",
    "environment",
    "gc_paused",
    "paired_ratio",
    "summarize_times",
    "sync",
    "time_calls",
    "time_interleaved",
    "write_json",
]

#: Where full runs write their JSON; ``--quick`` runs write to its ``quick/`` folder, so they never overwrite them.
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def default_out(name: str, quick: bool) -> Path:
    """The default results JSON of benchmark ``name``: ``results/<name>.json``, or ``results/quick/<name>.json``.

    Args:
        name: The benchmark's name (its module's name).
        quick: Whether this is a ``--quick`` smoke run.
    """
    return (RESULTS_DIR / "quick" if quick else RESULTS_DIR) / f"{name}.json"


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (inside timed regions)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def summarize_times(times: list[float]) -> dict[str, float]:
    """Median, min, max and relative spread ((max - min) / median) of a list of seconds."""
    med = statistics.median(times)
    return {
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "spread": (max(times) - min(times)) / med if med else 0.0,
        "repeats": len(times),
    }


def time_calls(fn: Callable[[], Any], *, repeats: int, warmup: int = 2, device: torch.device | str = "cpu") -> dict[str, float]:
    """Time ``fn`` ``repeats`` times after ``warmup`` calls, syncing ``device`` inside the timed region."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    with gc_paused():
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
    return summarize_times(times)


@contextlib.contextmanager
def gc_paused():
    """Collect, then keep Python's garbage collector off while timing: a collection inside a timed round (a few
    milliseconds, at the allocation counts of the peers' Python code) would be charged to whichever peer it fell in."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 2,
    device: torch.device | str = "cpu",
    calls: int = 1,
    slow_s: float | None = None,
    progress: bool = False,
    queued: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Time every function once per round, ``repeats`` rounds, in a fixed order; return each one's seconds per call.

    Peers timed round by round share the machine's drift (other jobs, clock and cache state), so the ratio of two
    peers' times within a round (:func:`paired_ratio`) is steadier than the ratio of medians taken minutes apart.
    With ``calls > 1`` a round queues that many calls of a function before one device sync: the pipelined rate of a
    training loop that never waits for the device, rather than one call's latency. A function whose last warmup call
    took longer than ``slow_s`` seconds is called once per round: its time is in the call, not in launching it, so
    queueing more calls would change its rate little and multiply the benchmark's length. With ``progress``, each
    function's warm call goes to stderr as it ends (where the time went, should the run be cut short). ``queued``,
    when given, is filled with each function's calls per round.
    """
    if calls < 1:
        raise ValueError(f"calls should be >= 1, got calls={calls}")
    per_round = dict.fromkeys(fns, calls)
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        if slow_s is None and not progress:
            continue
        sync(device)
        start = time.perf_counter()  # one more call, warm (a first call may compile kernels), to tell slow ones
        fn()
        sync(device)
        took = time.perf_counter() - start
        if slow_s is not None and took > slow_s:
            per_round[name] = 1
        if progress:
            print(f"  warm call of {name}: {took * 1e3:.2f} ms, {per_round[name]} per round", file=sys.stderr,
                  flush=True)
    sync(device)
    if queued is not None:
        queued.update(per_round)
    times: dict[str, list[float]] = {name: [] for name in fns}
    with gc_paused():
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                for _ in range(per_round[name]):
                    fn()
                sync(device)
                times[name].append((time.perf_counter() - start) / per_round[name])
    return times


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of ``slow[i] / fast[i]``: how many times faster ``fast`` ran, round by round."""
    return statistics.median(s / f for s, f in zip(slow, fast))


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Device name and library versions for the results JSON."""
    dev = torch.device(device)
    env: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    for name in ("torchvision", "kornia", "webdataset", "timm", "numpy"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent or broken peers are simply not reported
            env[name] = None
    return env


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
