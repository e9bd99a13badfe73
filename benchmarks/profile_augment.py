"""Where an augmentation call's time goes: a ``torch.profiler`` table for ``GpuAugment`` and Kornia, side by side.

Mixup and CutMix (``mix_batch`` on the augmented batch) and the bare per-sample lerp they are held against are
profiled the same way.

For each pipeline (the same two as ``benchmarks/gpu_augment.py``: uint8 (B, 3, S, S) -> normalised float (B, 3, s, s),
random resized crop + flip + colour jitter with p = 0.8), after warm-up, ``--calls`` calls are profiled. Reported per
call: wall time with the device synchronised once at the end of the calls (the pipelined rate a training loop sees),
host time spent issuing the calls (wall time up to, not including, that sync, in the same unprofiled pass; on the CPU
the ops run as they are issued, so it is close to the wall time), the profiled self-CPU time of every op (which
includes the profiler's own overhead and the final sync, so it overstates the host's cost), device kernel time,
number of kernel launches (CUDA) or ops (CPU), and the ops with the most self device time (self CPU time on the CPU).
The issue asks for this where ``GpuAugment`` is under 10x Kornia on a GPU; it is cheap enough to run every time.

Run: ``python -m benchmarks.profile_augment [--device cpu|cuda] [--calls N] [--out PATH.json]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `enlight_data` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import RESULTS_DIR, environment, sync, write_json
from benchmarks.gpu_augment import JITTER, KORNIA, MEAN, STD, _kornia, kornia_pipeline
from enlight_data import Phase, mix_batch
from enlight_data.augment import GpuAugment, apply_augment

__all__ = ["main", "profile_calls"]

#: In the repository's results folder whatever the working directory, as the other benchmarks write.
DEFAULT_OUT = RESULTS_DIR / "profile_augment.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--in-size", type=int, default=256)
    p.add_argument("--out-size", type=int, default=224)
    p.add_argument("--calls", type=int, default=20, help="profiled calls per pipeline")
    p.add_argument("--top", type=int, default=12, help="ops listed per pipeline")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results JSON (default {DEFAULT_OUT})")
    return p


def profile_calls(fn: Callable[[], Any], device: torch.device, *, calls: int, top: int) -> dict[str, Any]:
    """Profile ``calls`` calls of ``fn`` (after two warm-up calls); per-call times, launches and the top ops."""
    cuda = device.type == "cuda"
    for _ in range(2):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls  # issuing the calls, before waiting for the device
    sync(device)
    wall = (time.perf_counter() - start) / calls
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        sync(device)
    events = prof.key_averages()
    if cuda:
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        launches = len(kernels) / calls
        device_us = sum(e.device_time_total for e in kernels) / calls  # microseconds, kernels and copies on the device
    else:
        ops = [e for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None]
        launches = len(ops) / calls
        device_us = sum(e.cpu_time_total for e in ops) / calls
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:top]
    return {
        "wall_ms_per_call": wall * 1e3,
        "host_ms_per_call": host * 1e3,
        "host_timing": "host wall time of the unprofiled calls before the final device sync",
        "profiled_self_cpu_ms_per_call": sum(e.self_cpu_time_total for e in events) / calls / 1e3,
        "device_ms_per_call": device_us / 1e3,
        "launches_per_call": launches,
        "top_ops": [
            {"name": e.key, "calls_per_call": e.count / calls, "self_ms_per_call": getattr(e, key) / calls / 1e3}
            for e in rows
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Profile every pipeline, print a summary and the top ops, write the JSON; return the results."""
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, args.in_size, args.in_size), dtype=torch.uint8, generator=g).to(device)
    aug = GpuAugment(args.out_size, **JITTER, jitter_prob=0.8, mean=MEAN, std=STD)
    K, kornia_missing = _kornia()
    ga = torch.Generator(device=device).manual_seed(0)
    gk = torch.Generator(device=device).manual_seed(0)
    pipelines: dict[str, Callable[[], Any]] = {"enlight GpuAugment": lambda: aug(x, generator=ga)}
    if K is not None:
        kornia = kornia_pipeline(K, args.out_size, device)
        pipelines[KORNIA] = lambda: apply_augment(kornia, x, generator=gk)
    else:  # GpuAugment and the mixing are still profiled; the ratio against Kornia is None
        print(f"profile_augment: {kornia_missing}; the Kornia pipeline is skipped", file=sys.stderr)
    # Mixing of the augmented batch, and the bare lerp it is held against (NOTE [ Few kernels per CutMix draw ]).
    xm = aug(x, generator=ga)
    y = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
    gm = torch.Generator(device=device).manual_seed(0)
    w = torch.rand((args.batch, 1, 1, 1), generator=g).to(device)
    half, lerped = args.batch // 2, torch.empty_like(xm)

    def lerp() -> torch.Tensor:
        k = args.batch - half
        torch.lerp(xm[:k], xm[half:], w[:k], out=lerped[:k])
        return torch.lerp(xm[k:], xm[:half], w[k:], out=lerped[k:])

    mixup, cutmix = Phase(mixup_alpha=0.8), Phase(cutmix_alpha=1.0)  # made once, as a loader holds its phases
    pipelines.update({
        "enlight mix_batch mixup": lambda: mix_batch(xm, y, mixup, num_classes=1000, generator=gm),
        "enlight mix_batch cutmix": lambda: mix_batch(xm, y, cutmix, num_classes=1000, generator=gm),
        "bare per-sample torch.lerp": lerp,
    })
    results = {}
    for name, fn in pipelines.items():
        start = time.perf_counter()
        results[name] = profile_calls(fn, device, calls=args.calls, top=args.top)
        print(f"  profiled {name} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    ours, theirs = results["enlight GpuAugment"], results.get(KORNIA)
    floor = results["bare per-sample torch.lerp"]["wall_ms_per_call"]
    result = {
        "benchmark": "profile_augment",
        "config": {"batch": args.batch, "input": [3, args.in_size, args.in_size],
                   "output": [3, args.out_size, args.out_size], "calls": args.calls, "jitter": JITTER},
        "environment": environment(device),
        "results": results,
        "ratios": {
            "wall_kornia_over_gpu_augment": (None if theirs is None
                                             else theirs["wall_ms_per_call"] / ours["wall_ms_per_call"]),
            "wall_lerp_over_mix": {kind: floor / results[f"enlight mix_batch {kind}"]["wall_ms_per_call"]
                                   for kind in ("mixup", "cutmix")},
        },
    }
    unit = "kernel launches" if device.type == "cuda" else "top-level ops"
    print(f"{result['environment']['device']}, batch {args.batch}, {args.in_size}->{args.out_size}, {args.calls} calls")
    for name, r in results.items():
        print(f"\n{name}: wall {r['wall_ms_per_call']:.3f} ms/call (pipelined), "
              f"host {r['host_ms_per_call']:.3f} ms (before the sync), "
              f"profiled self-CPU {r['profiled_self_cpu_ms_per_call']:.3f} ms, "
              f"device {r['device_ms_per_call']:.3f} ms, "
              f"{r['launches_per_call']:.0f} {unit} per call")
        for op in r["top_ops"]:
            print(f"  {op['self_ms_per_call']:8.3f} ms  x{op['calls_per_call']:<5.1f} {op['name'][:90]}")
    if theirs is not None:
        print(f"\nKornia / GpuAugment, pipelined wall time: {result['ratios']['wall_kornia_over_gpu_augment']:.1f}x")
    for kind, ratio in result["ratios"]["wall_lerp_over_mix"].items():
        print(f"mix_batch {kind} / bare lerp, pipelined speed: {ratio:.2f}x")
    print(f"wrote {write_json(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
