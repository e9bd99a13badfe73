"""Loader overhead: a plain DataLoader against ``enlighten()`` under High-Loss Removal.

Same in-memory dataset (50,000 × 3×32×32 uint8, batch 256), num_workers 0 and 2,
measured in one run, alternating plain and wrapped epochs. The wrapped loop records
per-sample losses on every step (the table update) and chooses a removal set at
every epoch start. Throughput is compared per sample (a removal epoch is shorter).
Epochs are timed with Python's cyclic GC paused (NOTE [ GC pauses in the overhead
loop ]); how often each loop triggers collections is measured separately, with the
collector on. With 0 workers, a breakdown times the wrapped loop without recording and,
further, without removal, beside the plain one. Also: the per-step cost of recording
losses and the epoch-start cost of choosing the removed set for an ImageNet-sized table (N = 1,281,167). The recording cost is timed over blocks of
64 steps (the table folds its staged records once every 64 calls), so the fold's work is in the per-step figure.

Run: ``python -m benchmarks.loader_overhead [--quick]`` (or ``python benchmarks/loader_overhead.py``). The results go
to ``benchmarks/results/loader_overhead.json``, or ``benchmarks/results/quick/`` with ``--quick``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `enlight_data` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import DataLoader, Dataset

import enlight_data as ed
from benchmarks.common import default_out, environment, gc_paused, summarize_times, time_calls, write_json
from enlight_data.feedback import _FOLD_EVERY

__all__ = ["main"]

NAME = "loader_overhead"
IMAGENET = 1_281_167


class _InMemory(Dataset):
    """uint8 images held in one tensor (what the plain loader and ours both read)."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        self.y = torch.randint(0, 100, (n,), generator=g)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def _fake_loss(x: torch.Tensor) -> torch.Tensor:
    """A per-sample "loss" both loops compute (the model's work, identical for both)."""
    return x[:, 0, 0, 0].float()


def _epoch_plain(loader: DataLoader) -> int:
    n = 0
    for x, _ in loader:
        _fake_loss(x)
        n += x.shape[0]
    return n


def _epoch_wrapped(loader: ed.EnlightLoader) -> int:
    n = 0
    for x, _ in loader:
        loader.record(_fake_loss(x))  # the table update, every step
        n += x.shape[0]
    return n


def _timed_epoch(run: Callable[[], int]) -> tuple[int, float, float]:
    """``(samples, wall s, main-process CPU s)`` of one epoch, with Python's cyclic GC paused (as ``timeit`` does).

    NOTE [ GC pauses in the overhead loop ]
    With torch imported, a full (generation 2) collection scans ~180k objects and took ~70 ms here, a third of
    an epoch; it fell on every third epoch of either loop, so paired ratios came out as 0.67, 1.0 or 1.5 and
    their median drifted with the draw. Both loops trigger collections equally often (``gc_per_1k_samples``
    measures it with the collector on), so the timed epochs run with the collector paused after a collection.
    """
    with gc_paused():
        start, cpu = time.perf_counter(), time.process_time()
        n = run()
        return n, time.perf_counter() - start, time.process_time() - cpu


def _gc_per_1k_samples(run: Callable[[], int], epochs: int) -> list[float]:
    """Collections per 1,000 samples of each GC generation over ``epochs`` epochs, the collector on."""
    before = [s["collections"] for s in gc.get_stats()]
    n = sum(run() for _ in range(epochs))
    return [(s["collections"] - b) * 1000 / n for s, b in zip(gc.get_stats(), before)]


def _throughput(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    data = _InMemory(args.samples)
    kw = dict(batch_size=256, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    plain = DataLoader(data, **kw)
    schedule = ed.Schedule(10_000, during=ed.Phase(drop_high_loss=0.1), after=ed.Phase())
    wrapped = ed.enlighten(DataLoader(data, **kw), schedule, seed=0)
    _epoch_plain(plain)  # warm-up (workers start, caches)
    _epoch_wrapped(wrapped)
    plain_rates, wrapped_rates, cpu_ratios = [], [], []
    for _ in range(args.epochs):  # alternate, so drift hits both alike
        n, wall, cpu = _timed_epoch(lambda: _epoch_plain(plain))
        plain_rates.append(n / wall)
        plain_cpu = cpu / n
        n, wall, cpu = _timed_epoch(lambda: _epoch_wrapped(wrapped))
        wrapped_rates.append(n / wall)
        cpu_ratios.append(cpu / n / plain_cpu)
    ratios = [p / w for p, w in zip(plain_rates, wrapped_rates)]
    gc_epochs = 2 if args.quick else 4
    return {
        "num_workers": workers,
        "plain_img_per_s": statistics.median(plain_rates),
        "enlighten_img_per_s": statistics.median(wrapped_rates),
        "time_ratio_median": statistics.median(ratios),
        "time_ratio_of_medians": statistics.median(plain_rates) / statistics.median(wrapped_rates),
        "main_process_cpu_ratio_median": statistics.median(cpu_ratios),
        "time_ratio_min": min(ratios),
        "time_ratio_max": max(ratios),
        "epochs": args.epochs,
        "removed_per_epoch": wrapped.history[-1]["removed"],
        "gc_per_1k_samples": {
            "plain": _gc_per_1k_samples(lambda: _epoch_plain(plain), gc_epochs),
            "enlighten": _gc_per_1k_samples(lambda: _epoch_wrapped(wrapped), gc_epochs),
        },
    }


def _breakdown(args: argparse.Namespace) -> dict[str, Any]:
    """Where the 0-worker overhead goes: the wrapped loop without recording, and without removal either.

    Four loops over the same data, interleaved epoch by epoch: plain, the headline wrapped loop (High-Loss Removal,
    recording every step), the same without recording, and a schedule that removes nothing, without recording. Each
    gets the median over epochs of its per-sample time paired with the plain epoch's.
    """
    data = _InMemory(args.samples)
    kw = dict(batch_size=256, shuffle=True, num_workers=0)
    removal = ed.Schedule(10_000, during=ed.Phase(drop_high_loss=0.1), after=ed.Phase())
    plain = DataLoader(data, **kw)
    hlr, hlr_quiet = (ed.enlighten(DataLoader(data, **kw), removal, seed=0) for _ in range(2))
    wrapped = ed.enlighten(DataLoader(data, **kw), ed.Schedule(10_000, during=ed.Phase(), after=ed.Phase()), seed=0)

    def unrecorded(loader: ed.EnlightLoader) -> int:
        n = 0
        for x, _ in loader:
            _fake_loss(x)
            n += x.shape[0]
        return n

    _epoch_wrapped(hlr_quiet)  # one recorded epoch: the unrecorded loop then removes as many samples as the headline
    loops: dict[str, Callable[[], int]] = {
        "plain": lambda: _epoch_plain(plain),
        "removal, recording every step": lambda: _epoch_wrapped(hlr),
        "removal, no recording": lambda: unrecorded(hlr_quiet),
        "no removal, no recording": lambda: unrecorded(wrapped),
    }
    for run in loops.values():  # warm-up
        run()
    per_sample: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.epochs):  # interleaved, so drift hits all alike
        for name, run in loops.items():
            n, wall, _ = _timed_epoch(run)
            per_sample[name].append(wall / n)
    plain_times = per_sample.pop("plain")
    return {
        "num_workers": 0,
        "epochs": args.epochs,
        "us_per_sample": {"plain": statistics.median(plain_times) * 1e6,
                          **{name: statistics.median(t) * 1e6 for name, t in per_sample.items()}},
        "time_ratio_median": {name: statistics.median(w / p for w, p in zip(t, plain_times))
                              for name, t in per_sample.items()},
    }


def _table_costs(repeats: int) -> dict[str, Any]:
    """Per-step recording cost, and the epoch-start costs (choosing the removed set, finalising), N = ImageNet.

    NOTE [ Timing the recording in blocks of 64 steps ]
    ``LossTable.record`` copies a batch into staging buffers and folds them into the table once every
    ``_FOLD_EVERY`` (64) calls. The median of single calls is the copy alone: the fold, one call in 64, never
    reaches it. A block of 64 consecutive calls holds exactly one fold wherever it starts, so the per-step cost is
    the median over blocks of the block's time / 64; the single-call median is kept beside it as the copy's cost.
    """
    table = ed.LossTable(IMAGENET)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, IMAGENET, (256,), generator=g)
    losses = torch.rand(256, generator=g)
    keep = torch.rand(256, generator=g) > 0.5
    correct = torch.rand(256, generator=g) > 0.5

    def record() -> None:
        table.record(idx, losses, keep=keep, correct=correct)

    def block() -> None:
        for _ in range(_FOLD_EVERY):
            record()

    blocks = time_calls(block, repeats=repeats * 10, warmup=1)
    single = time_calls(record, repeats=repeats * 50, warmup=20)
    table.load_state_dict({**table.state_dict(), "last": torch.rand(IMAGENET, generator=g)})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        table.select_high_loss(0.1)
        times.append(time.perf_counter() - start)
    return {
        "record_step_us": blocks["median_s"] / _FOLD_EVERY * 1e6,
        "record_step_spread": blocks["spread"],
        "record_step_timing": f"median over blocks of {_FOLD_EVERY} consecutive calls (one fold each) / {_FOLD_EVERY}",
        "record_blocks": blocks["repeats"],
        "record_single_call_median_us": single["median_s"] * 1e6,
        "record_single_call_spread": single["spread"],
        "select_10pct_ms": statistics.median(times) * 1e3,
        "select_10pct": summarize_times(times),
        "finalize_epoch_ms": time_calls(table.finalize_epoch, repeats=repeats, warmup=1)["median_s"] * 1e3,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k samples, 5 epochs (under a minute)")
    parser.add_argument("--epochs", type=int, default=None, help="measured epochs per loader (>= 5)")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in the main process (1 keeps timings stable on a busy machine)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results JSON (default benchmarks/results/{NAME}.json, or results/quick/ with --quick)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON; return the results."""
    args = _parser().parse_args(argv)
    out = args.out or default_out(NAME, args.quick)
    args.samples = args.samples or (10_000 if args.quick else 50_000)
    args.epochs = max(5, args.epochs or (5 if args.quick else 21))
    torch.set_num_threads(args.threads)
    rows = [_throughput(args, w) for w in args.workers]
    breakdown = _breakdown(args) if 0 in args.workers else None
    costs = _table_costs(repeats=7 if args.quick else 15)
    result = {
        "benchmark": NAME,
        "quick": args.quick,
        "env": environment("cpu"),
        "samples": args.samples,
        "batch_size": 256,
        "throughput": rows,
        "breakdown": breakdown,
        "table": costs,
        "goals": {"time_ratio": 1.03, "record_step_us": 50, "select_ms": 20},
    }
    print(f"{'workers':>7} {'plain img/s':>12} {'enlighten img/s':>16} {'paired ratio':>13} {'min..max':>12} "
          f"{'ratio of medians':>17} {'main-process CPU ratio':>22}")
    for r in rows:
        print(f"{r['num_workers']:>7} {r['plain_img_per_s']:>12.0f} {r['enlighten_img_per_s']:>16.0f} "
              f"{r['time_ratio_median']:>13.3f} {r['time_ratio_min']:>5.3f}..{r['time_ratio_max']:.3f} "
              f"{r['time_ratio_of_medians']:>17.3f} {r['main_process_cpu_ratio_median']:>22.3f}")
    for r in rows:
        plain_gc, ours_gc = ("/".join(f"{v:.3f}" for v in r["gc_per_1k_samples"][k]) for k in ("plain", "enlighten"))
        print(f"{r['num_workers']} workers, GC collections per 1k samples (gen 0/1/2): plain {plain_gc}, "
              f"enlighten {ours_gc}")
    if breakdown is not None:
        print("0 workers, paired ratio to plain (us per sample): " + "; ".join(
            f"{name} {breakdown['time_ratio_median'][name]:.3f} ({breakdown['us_per_sample'][name]:.2f})"
            for name in breakdown["time_ratio_median"]) + f"; plain ({breakdown['us_per_sample']['plain']:.2f})")
    print(f"record per step (B=256, N={IMAGENET:,}; blocks of {_FOLD_EVERY} calls, one fold each): "
          f"{costs['record_step_us']:.1f} us ({costs['record_single_call_median_us']:.1f} us single-call median); "
          f"choose 10% removed set: {costs['select_10pct_ms']:.1f} ms; "
          f"finalize epoch: {costs['finalize_epoch_ms']:.1f} ms")
    print(f"wrote {write_json(out, result)}")
    return result


if __name__ == "__main__":
    main()
