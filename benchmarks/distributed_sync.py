"""Per-epoch cost of the distributed loss-table sync: dense all-reduce vs sparse gather.

Spawns ``--world-size`` CPU processes with gloo on 127.0.0.1 and times
:func:`enlight_data.distributed.sync_table` once per simulated epoch, for a
table the size of ImageNet-1k (1.3M samples) and a 100M-sample id space, with
an ImageNet-like number of records per rank (1.28M samples per epoch split
over the ranks). Each repetition re-records the epoch outside the timed region;
ranks meet at a barrier before each timed sync and the slowest rank's time is
kept. The dense and sparse repetitions are interleaved (one of each per round,
in alternating order), so drift on the machine hits both alike. Besides the
sync, it times the local per-epoch table work (finalising the epoch, selecting
the top 10%) and the local parts of a sparse sync (scanning the counts, adding
the gathered rows), and from these and the measured gloo throughput estimates
the cost on 8 ranks against an ImageNet epoch. It also times the check each pass
over an epoch makes before its first batch (two int64s per rank, all-gathered:
NOTE [ Checked before the first batch ] in ``enlight_data/distributed.py``).

Run: ``python benchmarks/distributed_sync.py [--quick]`` (``--world-size`` >= 2, ``--repeats`` >= 1). The results
go to ``benchmarks/results/distributed_sync.json``, or ``benchmarks/results/quick/`` with ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import default_out  # noqa: E402
from enlight_data.distributed import SPARSE_MIN_SIZE, pass_checker, sync_table  # noqa: E402
from enlight_data.feedback import LossTable  # noqa: E402

__all__ = ["main"]

NAME = "distributed_sync"
IMAGENET_IMAGES = 1_281_167
# consumer.resnet50_224px_bf16_train.img_per_s in /work/shared/anchors/h200-2026-11-27.json
RESNET50_H200_IMG_PER_S = 4676.0
TARGET_GPUS = 8


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _record_epoch(table: LossTable, size: int, records: int, rank: int, world_size: int, epoch: int) -> None:
    """Record ``records`` distinct samples on this rank (disjoint across ranks), as one epoch would."""
    table.discard_epoch()
    wanted = min(records * world_size, size)
    stride = size // wanted  # spread over the id space, shifted each epoch (cheap for 100M ids)
    picked = (torch.arange(wanted, dtype=torch.int64) * stride + epoch) % size
    mine = picked[rank::world_size][:records]
    losses = torch.rand(mine.numel(), generator=torch.Generator().manual_seed(rank + 7 * epoch)) * 5
    for chunk in range(0, mine.numel(), 1 << 20):  # batches of a huge epoch, summed the same way
        table.record(mine[chunk : chunk + (1 << 20)], losses[chunk : chunk + (1 << 20)])


def _slowest(seconds: float) -> float:
    t = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def _local_costs(table: LossTable, records_total: int, repeats: int, table_work: bool) -> dict[str, float]:
    """Local per-epoch work on this rank: counts scan, adding gathered rows, and (``table_work``) the
    epoch's finalize and top-10% selection, which run with or without a sync."""
    _, count, _ = table.pending()
    out: dict[str, list[float]] = {"scan_s": [], "add_s": [], "finalize_s": [], "select10_s": []}
    index = torch.randint(0, table.size, (records_total,), generator=torch.Generator().manual_seed(3))
    values = torch.rand(records_total, generator=torch.Generator().manual_seed(4))
    scratch = torch.zeros(table.size, dtype=torch.float32)
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.nonzero(count > 0)
        out["scan_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scratch.index_add_(0, index, values)
        scratch.index_add_(0, index, values)
        out["add_s"].append(time.perf_counter() - t0)
    for _ in range(repeats if table_work else 0):
        probe = LossTable(table.size)
        probe.load_state_dict(table.state_dict())
        t0 = time.perf_counter()
        probe.finalize_epoch()
        out["finalize_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        probe.select_high_loss(0.1)
        out["select10_s"].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in out.items() if v}


def _rounds(modes: list[str], repeats: int) -> list[tuple[int, str]]:
    """``(repetition, mode)`` in timing order: the modes interleaved, one of each per round, in alternating order.

    Repetition 0 is the warm-up of each mode. Interleaving puts the machine's drift (other jobs, clock and cache
    state) on both modes alike, where all dense repetitions before all sparse ones would give each its own minutes.
    """
    return [(rep, mode) for rep in range(repeats + 1) for mode in (modes if rep % 2 == 0 else modes[::-1])]


def _worker(
    rank: int, world_size: int, cases: list[dict[str, Any]], repeats: int, quick: bool, out_dir: str
) -> None:
    torch.set_num_threads(1)
    # A file rendezvous in the run's directory: a TCP port picked free beforehand can be taken before rank 0 binds it.
    dist.init_process_group("gloo", init_method=Path(out_dir, "rendezvous").as_uri(), rank=rank, world_size=world_size)
    try:
        results = []
        for case in cases:
            size, records = case["size"], case["records_per_rank"]
            table = LossTable(size)
            row: dict[str, Any] = dict(case)
            times: dict[str, list[float]] = {mode: [] for mode in case["modes"]}
            used: dict[str, str] = {}
            for rep, mode in _rounds(case["modes"], repeats):
                _record_epoch(table, size, records, rank, world_size, rep)
                dist.barrier()
                t0 = time.perf_counter()
                used[mode] = sync_table(table, mode=mode)
                elapsed = _slowest(time.perf_counter() - t0)
                if rep:  # the first of each mode is the warm-up
                    times[mode].append(elapsed)
            for mode, t in times.items():
                row[mode] = {"used": used[mode], "median_s": statistics.median(t), "min_s": min(t),
                             "max_s": max(t), "repeats": len(t), "seconds": t}
            if case.get("local", False) and rank == 0:
                _record_epoch(table, size, records, rank, world_size, 0)
                row["local"] = _local_costs(table, records * world_size, 1 if quick else 3, table_work=not quick)
            results.append(row)
            del table
        check = pass_checker(agreement=lambda: 12345)
        checks = []
        for rep in range(1 + 10 * repeats):
            dist.barrier()
            t0 = time.perf_counter()
            check(rep, 100, torch.device("cpu"))
            if rep:  # the first is the warm-up
                checks.append(_slowest(time.perf_counter() - t0))
        if rank == 0:
            Path(out_dir, "rows.json").write_text(json.dumps(
                {"rows": results, "pass_check": {"median_s": statistics.median(checks), "min_s": min(checks),
                                                 "max_s": max(checks), "repeats": len(checks)}}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(
    world_size: int, cases: list[dict[str, Any]], repeats: int, quick: bool, timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=_worker, args=(r, world_size, cases, repeats, quick, tmp))
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            p.kill()
            p.join()
        if alive or any(p.exitcode for p in procs):
            raise RuntimeError(f"benchmark workers failed: exit codes {[p.exitcode for p in procs]}")
        return json.loads(Path(tmp, "rows.json").read_text())  # type: ignore[no-any-return]


def _volume(size: int, records_per_rank: int, world_size: int) -> dict[str, int]:
    """Bytes each rank sends per sync: ring all-reduce of the dense table, all_gather of sparse rows."""
    row = 12 if size < 2**31 else 16
    return {
        "dense_payload_B": 8 * size,
        "dense_ring_B_per_rank": int(2 * (world_size - 1) / world_size * 8 * size),
        "sparse_payload_B": row * records_per_rank,
        "sparse_ring_B_per_rank": (world_size - 1) * row * records_per_rank,
    }


def _estimate(rows: list[dict[str, Any]], world_size: int) -> list[dict[str, Any]]:
    """Extrapolate to TARGET_GPUS ranks from the measured gloo throughput and local costs."""
    epoch_s = IMAGENET_IMAGES / (RESNET50_H200_IMG_PER_S * TARGET_GPUS)
    dense_rows = [r for r in rows if "dense" in r]
    if not dense_rows:
        return []
    big = max(dense_rows, key=lambda r: r["size"])
    # Bytes per second one rank moves in the ring at world_size (pessimistic: gloo over loopback TCP).
    bandwidth = _volume(big["size"], 0, world_size)["dense_ring_B_per_rank"] / big["dense"]["median_s"]
    out = []
    for r in rows:
        local = r.get("local")
        if local is None:
            continue
        records = IMAGENET_IMAGES // TARGET_GPUS
        vol = _volume(r["size"], records, TARGET_GPUS)
        dense = vol["dense_ring_B_per_rank"] / bandwidth
        sparse_comm = vol["sparse_ring_B_per_rank"] / bandwidth
        sparse_local = local["scan_s"] + local["add_s"]  # one CPU thread; a GPU table does this in ~ms
        sparse = sparse_comm + sparse_local
        table_work = local["finalize_s"] + local["select10_s"] if "finalize_s" in local else None
        out.append({
            "size": r["size"], "ranks": TARGET_GPUS, "records_per_rank": records,
            "gloo_B_per_s": bandwidth, "dense_s": dense, "sparse_s": sparse,
            "sparse_comm_s": sparse_comm, "sparse_local_s": sparse_local,
            "table_work_s": table_work, "epoch_s": epoch_s,
            "dense_pct_of_epoch": 100 * dense / epoch_s, "sparse_pct_of_epoch": 100 * sparse / epoch_s,
            "sparse_comm_pct_of_epoch": 100 * sparse_comm / epoch_s,
        })
    return out


def _print(rows: list[dict[str, Any]], estimates: list[dict[str, Any]], world_size: int) -> None:
    print(f"loss-table sync, gloo, {world_size} processes (median [min, max] of the slowest rank)")
    print(f"{'table':>12} {'rec/rank':>10} {'mode':>7} {'payload MB':>11} {'median ms':>10} {'spread ms':>17}")
    for r in rows:
        vol = _volume(r["size"], r["records_per_rank"], world_size)
        for mode in r["modes"]:
            m = r[mode]
            payload = vol["dense_payload_B"] if mode == "dense" else vol["sparse_payload_B"]
            print(f"{r['size']:>12,} {r['records_per_rank']:>10,} {mode:>7} {payload / 1e6:>11.1f} "
                  f"{1e3 * m['median_s']:>10.1f} {1e3 * m['min_s']:>8.1f}-{1e3 * m['max_s']:<8.1f}")
        if "local" in r:
            loc = r["local"]
            work = (f", finalize {1e3 * loc['finalize_s']:.1f} ms, top-10% {1e3 * loc['select10_s']:.1f} ms"
                    if "finalize_s" in loc else "")
            print(f"{'':>12} local: scan {1e3 * loc['scan_s']:.1f} ms, add {1e3 * loc['add_s']:.1f} ms{work}")
    for e in estimates:
        print(f"estimate {e['ranks']} ranks, table {e['size']:,}, {e['records_per_rank']:,} rec/rank: "
              f"dense {1e3 * e['dense_s']:.0f} ms ({e['dense_pct_of_epoch']:.2f}%), "
              f"sparse {1e3 * e['sparse_s']:.0f} ms "
              f"({e['sparse_pct_of_epoch']:.2f}%; comm {1e3 * e['sparse_comm_s']:.0f} ms = "
              f"{e['sparse_comm_pct_of_epoch']:.2f}%) of a {e['epoch_s']:.1f} s ImageNet epoch on {e['ranks']} H200"
              + ("" if e["table_work_s"] is None else f"; per-epoch table work {1e3 * e['table_work_s']:.0f} ms"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1.3M dense and sparse and 100M sparse (< 60 s)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results JSON (default benchmarks/results/{NAME}.json, or results/quick/ with --quick)")
    parser.add_argument("--device", default="cpu", choices=["cpu"], help="gloo on the CPU (nccl needs a GPU per rank)")
    parser.add_argument("--world-size", type=int, default=2, help="processes (>= 2: a sync needs a peer; default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed syncs per mode (>= 1; default 5, 3 quick)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON; return the results."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.world_size < 2:
        parser.error(f"--world-size should be >= 2 (the sync needs a peer to exchange with), got {args.world_size}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats should be >= 1, got {args.repeats}")
    world_size = args.world_size
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    imagenet_per_rank = IMAGENET_IMAGES // world_size
    cases: list[dict[str, Any]] = [
        {"size": 1_300_000, "records_per_rank": imagenet_per_rank, "modes": ["dense", "sparse"], "local": True},
        {"size": 1_300_000, "records_per_rank": imagenet_per_rank // 8, "modes": ["dense", "sparse"]},
        {"size": 4_000_000, "records_per_rank": imagenet_per_rank, "modes": ["dense", "sparse"]},
        {"size": 10_000_000, "records_per_rank": imagenet_per_rank, "modes": ["dense", "sparse"]},
    ]
    if args.quick:
        cases = cases[:1] + [{"size": 100_000_000, "records_per_rank": imagenet_per_rank, "modes": ["sparse"],
                              "local": True}]
    else:
        cases.append({"size": 100_000_000, "records_per_rank": imagenet_per_rank, "modes": ["dense", "sparse"],
                      "local": True})
    load_before = list(os.getloadavg())  # other work on the machine inflates the times
    t0 = time.perf_counter()
    measured = _spawn(world_size, cases, repeats, args.quick, timeout=600 if not args.quick else 120)
    rows = measured["rows"]
    wall = time.perf_counter() - t0
    estimates = _estimate(rows, world_size)
    result = {
        "benchmark": NAME,
        "device": _cpu_name(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "backend": "gloo",
        "world_size": world_size,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "repeats": repeats,
        "sparse_min_size": SPARSE_MIN_SIZE,
        "rows": rows,
        "volumes": [_volume(r["size"], r["records_per_rank"], world_size) | {"size": r["size"]} for r in rows],
        "estimate_8_ranks": estimates,
        "pass_check": measured["pass_check"],
        "wall_s": wall,
    }
    _print(rows, estimates, world_size)
    check = measured["pass_check"]
    print(f"check before a pass's first batch: {1e3 * check['median_s']:.2f} ms median "
          f"[{1e3 * check['min_s']:.2f}, {1e3 * check['max_s']:.2f}] of {check['repeats']}")
    out = args.out or default_out(NAME, args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} ({wall:.1f} s)")
    return result


if __name__ == "__main__":
    main()
