"""Run every benchmark on the device present and write one results JSON with charts.

``python -m benchmarks`` (or ``python benchmarks/run_all.py``) runs, in order: loader
overhead, GPU augmentation and mixing, streaming, distributed sync; ``--reproduce``
adds ``benchmarks/reproduce.py``. Each benchmark writes its own JSON (and charts)
beside ``all.json``, which gathers them (versions, and the device each benchmark ran on),
with ``summary.png`` (each measured ratio against its goal). A benchmark that fails (a
missing peer library, a crash) is recorded in ``all.json``'s ``failed`` with its exit code;
the others still run, and the command exits non-zero. ``--quick`` results go to
``benchmarks/results/quick/`` so they never overwrite full runs. The benchmarks that can use
a GPU (GPU augmentation, streaming) run on CUDA when it is present; the loader overhead and
the gloo sync run on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `enlight_data` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import default_out, environment, write_json

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
# NOTE [ Huge pages for fresh CPU tensors ]
# With transparent huge pages in "madvise" mode (these VMs), a fresh 150 MB CPU tensor costs
# ~37k page faults unless PyTorch's allocator asks for huge pages: out-of-place ops (our mixing,
# torchvision, Kornia) then ran 3x slower or not, from one process to the next. PyTorch's
# THP_MEM_ALLOC_ENABLE=1 makes every peer's large allocations use huge pages alike.
ENV = {**os.environ, "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "1")}
BENCHMARKS = ("loader_overhead", "gpu_augment", "streaming", "distributed_sync")
# Benchmarks that take --device (the others run on the CPU whatever is present).
DEVICE_FLAG = ("gpu_augment", "streaming")


def _device_of(name: str, result: dict[str, Any]) -> str | None:
    """The device a benchmark's JSON says it ran on (each benchmark records it in its own place)."""
    if name == "reproduce":  # its environment names the device kind, and the GPU where there is one
        env = result.get("environment") or {}
        return env.get("gpu") or env.get("device")
    for env_key in ("env", "environment"):
        if isinstance(result.get(env_key), dict) and "device" in result[env_key]:
            return str(result[env_key]["device"])
    return None if result.get("device") is None else str(result["device"])


def _ratios(name: str, result: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(label, measured, goal, direction) pairs; direction '<=' or '>='."""
    out: list[tuple[str, float, float, str]] = []
    if name == "loader_overhead":
        for row in result.get("throughput", []):
            out.append((f"loader time ratio, {row['num_workers']} workers", row["time_ratio_median"], 1.03, "<="))
    elif name == "gpu_augment":
        ratios = result.get("ratios", {})
        if ratios.get("gpu_augment_over_kornia") is not None:
            out.append(("GpuAugment / Kornia", ratios["gpu_augment_over_kornia"], ratios["gpu_augment_over_kornia_goal"], ">="))
        for key, floor in (("mix_over_lerp", "lerp"), ("mix_over_anchor_lerp", "anchors' lerp")):
            for label, value in (ratios.get(key) or {}).items():
                out.append((f"{label.replace('enlight mix_batch ', 'mix ')} / {floor}", value,
                            ratios["mix_over_lerp_goal"], ">="))
    elif name == "streaming":
        out.append(("stream / plain webdataset", result["ratio_stream_vs_webdataset"], 1.05, "<="))
        out.append(("20% removed / full epoch", result["ratio_removed_vs_full"], 0.85, "<="))
    return out


def _chart(rows: list[tuple[str, float, float, str]], path: Path) -> Path | None:
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    labels = [r[0] for r in rows]
    values = [r[1] for r in rows]
    colours = ["tab:green" if (v <= g if d == "<=" else v >= g) else "tab:red" for _, v, g, d in rows]
    ax.barh(labels, values, color=colours)
    for i, (_, v, g, d) in enumerate(rows):
        ax.plot([g, g], [i - 0.4, i + 0.4], color="black", lw=1.5)
        ax.text(v, i, f" {v:.2f} (goal {d} {g:g})", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.invert_yaxis()
    ax.set_title("enlight_data benchmarks: measured ratio (bar) against goal (black line)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks, each in its own process; write ``all.json`` and ``summary.png``; return the summary."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="every benchmark in its quick mode (under a minute each on a CPU)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--reproduce", action="store_true", help="also run benchmarks/reproduce.py")
    parser.add_argument("--out", default=None,
                        help="gathered JSON (default benchmarks/results/all.json, or results/quick/all.json with --quick); "
                        "each benchmark writes its own JSON beside it")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out("all", args.quick)
    names = list(args.only) + (["reproduce"] if args.reproduce else [])
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        tqdm = None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    failed: dict[str, int] = {}
    bar = tqdm(names, desc="benchmarks", unit="bench") if tqdm else names
    for name in bar:
        if tqdm:
            bar.set_postfix_str(name)
        start = time.perf_counter()
        print(f"\n=== {name} ===", flush=True)
        flags = ["--quick"] if args.quick else []
        if name in DEVICE_FLAG:
            flags += ["--device", device]
        target = out.parent if name == "reproduce" else out.with_name(f"{name}.json")  # reproduce takes a folder
        # NOTE [ One process per benchmark ]
        # Each benchmark runs in a fresh interpreter: a heap shaped by the previous benchmark
        # changes which large allocations page-fault, and skewed later timings by up to 5x here.
        rc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *flags, "--out", str(target.resolve())],
                            cwd=ROOT, env=ENV).returncode
        seconds[name] = time.perf_counter() - start
        if rc != 0:  # one benchmark's failure must not cost the others' results
            failed[name] = rc
            print(f"run_all: {name} failed (exit code {rc}); the other benchmarks still run", file=sys.stderr)
            continue
        result_file = target / "reproduce.json" if name == "reproduce" else target
        results[name] = json.loads(Path(result_file).read_text())
    rows = [r for name in names if name in results for r in _ratios(name, results[name])]
    chart = _chart(rows, out.with_name("summary.png"))
    summary = {
        "env": environment(device),
        "quick": args.quick,
        "THP_MEM_ALLOC_ENABLE": ENV["THP_MEM_ALLOC_ENABLE"],
        "seconds": seconds,
        "devices": {name: _device_of(name, results[name]) for name in names if name in results},
        "failed": failed,
        "ratios": [{"label": l, "measured": v, "goal": g, "direction": d, "met": v <= g if d == "<=" else v >= g}
                   for l, v, g, d in rows],
        "results": results,
    }
    write_json(out, summary)
    print("\nratio                                      measured   goal")
    for l, v, g, d in rows:
        print(f"{l:42s} {v:8.3f}   {d} {g:g}")
    print(f"wrote {out}" + (f" and {chart}" if chart else ""))
    if failed:
        raise SystemExit(f"run_all: failed: {', '.join(f'{k} (exit code {v})' for k, v in failed.items())}; "
                         f"{out} holds the other benchmarks' results")
    return summary


if __name__ == "__main__":
    main()
