"""Batch augmentation and mixing throughput: ``GpuAugment`` and ``mix_batch`` against their peers, in one run.

(a) Augmentation, uint8 (B, 3, S, S) -> float (B, 3, s, s), random resized crop + flip + colour jitter (p=0.8) +
normalisation: ``GpuAugment``; the same pipeline as a Kornia ``AugmentationSequential`` (run through
``apply_augment``, which converts uint8 and scopes the global RNG); torchvision v2 per image in a Python loop. Also the
two batched crop+resize+flip kernels ``GpuAugment`` could use: ``grid_sample`` (its choice) and ``roi_align``.

(b) Mixing of a float (B, 3, s, s) batch with class targets: ``enlight_data.mix_batch`` (Mixup and CutMix, per-element
and per-batch λ) against timm ``Mixup`` (batch and elem modes; skipped with a note when timm is absent), torchvision v2
``MixUp``/``CutMix``, Kornia ``RandomMixUpV2``/``RandomCutMixV2``, and a bare per-sample ``torch.lerp`` with the
partner at ``(i + B/2) % B`` into a reused output buffer (the memory-bound floor). ``mix_batch`` is timed both ways,
writing a new tensor (the loader's case) and into a reused buffer (``out=``), and so is the bare lerp: on the CPU a new
153 MB tensor costs a pass of page faults, which CUDA's caching allocator does not.

Every implementation is timed in the same process after warm-up, the device synchronised inside the timed region;
throughput is images per second from the median of the repeats, with the relative spread ((max - min) / median).

Run: ``python benchmarks/gpu_augment.py [--quick] [--device cpu|cuda] [--threads N] [--out PATH.json]``. On a busy
CPU, multi-threaded timings swing by several times from one call to the next (threads wait for descheduled peers);
``--quick`` therefore runs single-threaded on the CPU unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `enlight_data` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import environment, time_calls, write_json
from enlight_data.augment import GpuAugment, _crop_resize_flip_grid, _crop_resize_flip_roi, apply_augment

__all__ = ["main"]

DEFAULT_OUT = Path("benchmarks/results/gpu_augment.json")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
NUM_CLASSES = 1000
GOALS = {"augment_vs_kornia": {"cpu": 5.0, "cuda": 20.0}, "mix_vs_lerp": 0.7}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small batch and images, few repeats (< 60 s on 2 CPU cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results JSON (default {DEFAULT_OUT})")
    p.add_argument("--batch", type=int, default=None, help="override the batch size")
    p.add_argument("--repeats", type=int, default=None, help="override the number of timed repeats")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: 1 for --quick on the CPU, which keeps timings stable on a busy "
        "machine; torch's default otherwise)",
    )
    return p


def _row(name: str, group: str, batch: int, timing: dict[str, float], note: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "group": group,
        "img_per_s": batch / timing["median_s"],
        "img_per_s_min": batch / timing["max_s"],
        "img_per_s_max": batch / timing["min_s"],
        **timing,
        "note": note,
    }


def _skipped(name: str, group: str, note: str) -> dict[str, Any]:
    return {"name": name, "group": group, "img_per_s": None, "note": note}


def _augment_peers(
    x: torch.Tensor, out_size: int, device: torch.device, *, repeats: int, tv_batch: int
) -> list[dict[str, Any]]:
    import kornia.augmentation as K
    import torchvision.transforms.v2 as v2

    b = x.shape[0]
    rows = []
    aug = GpuAugment(out_size, **JITTER, jitter_prob=0.8, mean=MEAN, std=STD)
    g = torch.Generator(device=device).manual_seed(0)
    timing = time_calls(lambda: aug(x, generator=g), repeats=repeats, device=device)
    rows.append(_row("enlight GpuAugment", "augment", b, timing))

    kornia = K.AugmentationSequential(
        K.RandomResizedCrop((out_size, out_size)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.Normalize(mean=torch.tensor(MEAN), std=torch.tensor(STD)),
    ).to(device)
    gk = torch.Generator(device=device).manual_seed(0)
    rows.append(
        _row(
            "kornia AugmentationSequential",
            "augment",
            b,
            time_calls(lambda: apply_augment(kornia, x, generator=gk), repeats=repeats, warmup=1, device=device),
            "via apply_augment (uint8 -> float, forked global RNG)",
        )
    )

    tv = v2.Compose(
        [
            v2.RandomResizedCrop(out_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    xs = x[:tv_batch]

    def tv_loop() -> torch.Tensor:
        return torch.stack([tv(img) for img in xs])

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)  # torchvision only draws from the global RNG; forked, restored on exit
        timing = time_calls(tv_loop, repeats=repeats, warmup=1, device=device)
    note = "per image in a Python loop, antialiased resize"
    if tv_batch != b:
        note += f"; timed on {tv_batch} images"
    rows.append(_row("torchvision v2 per-image loop", "augment", len(xs), timing, note))

    # The two batched crop + resize + flip kernels (float input, same params).
    xf = x.float()
    params = aug.draw(b, x.shape[2], x.shape[3], generator=torch.Generator(device=device).manual_seed(1))
    grid = torch.empty((b, out_size, out_size, 2), device=device)
    for name, fn, kw in (
        ("crop+resize+flip: grid_sample", _crop_resize_flip_grid, {"grid": grid}),
        ("crop+resize+flip: roi_align", _crop_resize_flip_roi, {}),
    ):
        t = time_calls(lambda fn=fn, kw=kw: fn(xf, params, (out_size, out_size), **kw), repeats=repeats, device=device)
        rows.append(_row(name, "kernel", b, t, "float input, one batched call"))
    return rows


def _mix_peers(x: torch.Tensor, y: torch.Tensor, device: torch.device, *, repeats: int) -> list[dict[str, Any]]:
    import kornia.augmentation as K
    import torchvision.transforms.v2 as v2

    b = x.shape[0]
    rows: list[dict[str, Any]] = []
    try:
        from enlight_data import Phase
        from enlight_data.mixing import mix_batch
    except ImportError as err:  # the core package is written concurrently
        rows.append(_skipped("enlight mix_batch", "mix", f"not importable: {err}"))
    else:
        g = torch.Generator(device=device).manual_seed(0)
        for label, phase in (
            ("enlight mix_batch mixup elem", Phase(mixup_alpha=0.8, mode="elem")),
            ("enlight mix_batch mixup batch", Phase(mixup_alpha=0.8, mode="batch")),
            ("enlight mix_batch cutmix elem", Phase(cutmix_alpha=1.0, mode="elem")),
            ("enlight mix_batch cutmix batch", Phase(cutmix_alpha=1.0, mode="batch")),
        ):
            fn = lambda phase=phase: mix_batch(x, y, phase, num_classes=NUM_CLASSES, generator=g)  # noqa: E731
            rows.append(_row(label, "mix", b, time_calls(fn, repeats=repeats, device=device), "new output tensor"))
        # The same with a reused output buffer (out=), like the lerp floor below: what is left is the mixing itself.
        out = torch.empty_like(x)
        for label, phase in (
            ("enlight mix_batch mixup elem, out=", Phase(mixup_alpha=0.8, mode="elem")),
            ("enlight mix_batch cutmix elem, out=", Phase(cutmix_alpha=1.0, mode="elem")),
        ):
            fn = lambda phase=phase: mix_batch(x, y, phase, num_classes=NUM_CLASSES, generator=g, out=out)  # noqa: E731
            rows.append(_row(label, "mix", b, time_calls(fn, repeats=repeats, device=device), "reused output buffer"))

    try:
        from timm.data import Mixup
    except ImportError as err:
        rows.append(_skipped("timm Mixup", "mix", f"timm not importable ({err}); pip install timm"))
    else:
        xt = x.clone()  # timm mixes in place
        for mode in ("batch", "elem"):
            for kind, kw in (
                ("mixup", dict(mixup_alpha=0.8, cutmix_alpha=0.0)),
                ("cutmix", dict(mixup_alpha=0.0, cutmix_alpha=1.0)),
            ):
                mixer = Mixup(**kw, mode=mode, label_smoothing=0.0, num_classes=NUM_CLASSES)
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(0)  # timm draws from numpy's global RNG and torch's; timed as is
                    t = time_calls(lambda mixer=mixer: mixer(xt, y), repeats=repeats, device=device)
                rows.append(_row(f"timm Mixup {kind} {mode}", "mix", b, t, "in place on the input"))

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        for label, mixer in (
            ("torchvision v2 MixUp", v2.MixUp(alpha=0.8, num_classes=NUM_CLASSES)),
            ("torchvision v2 CutMix", v2.CutMix(alpha=1.0, num_classes=NUM_CLASSES)),
        ):
            timing = time_calls(lambda m=mixer: m(x, y), repeats=repeats, device=device)
            rows.append(_row(label, "mix", b, timing, "one λ per batch"))
        for label, mixer in (
            ("kornia RandomMixUpV2", K.RandomMixUpV2(data_keys=["input", "class"])),
            ("kornia RandomCutMixV2", K.RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True)),
        ):
            timing = time_calls(lambda m=mixer: m(x, y), repeats=repeats, device=device)
            rows.append(_row(label, "mix", b, timing, "per element"))

    # The floor: out[i] = lerp(x[i], x[(i + B/2) % B], w[i]) into a reused buffer, weights drawn once.
    w = torch.rand((b, 1, 1, 1), generator=torch.Generator(device=device).manual_seed(0), device=device)
    buf = torch.empty_like(x)
    half = b // 2

    def lerp(dst: torch.Tensor) -> torch.Tensor:
        torch.lerp(x[: b - half], x[half:], w[: b - half], out=dst[: b - half])
        torch.lerp(x[b - half :], x[:half], w[b - half :], out=dst[b - half :])
        return dst

    timing = time_calls(lambda: lerp(buf), repeats=repeats, device=device)
    rows.append(_row("bare per-sample torch.lerp", "mix", b, timing, "reused output buffer"))
    # What a new output costs the allocator: page faults on the CPU, next to nothing on CUDA.
    timing = time_calls(lambda: lerp(torch.empty_like(x)), repeats=repeats, device=device)
    rows.append(_row("bare per-sample torch.lerp, new output", "mix", b, timing, "new output tensor"))
    return rows


def _ratio(rows: list[dict[str, Any]], num: str, den: str) -> float | None:
    by = {r["name"]: r["img_per_s"] for r in rows}
    if by.get(num) is None or by.get(den) is None:
        return None
    return by[num] / by[den]


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'implementation':<40} {'img/s':>11} {'spread':>8}  note", "-" * 90]
    for r in rows:
        if r["img_per_s"] is None:
            lines.append(f"{r['name']:<40} {'skipped':>11} {'':>8}  {r['note']}")
        else:
            lines.append(f"{r['name']:<40} {r['img_per_s']:>11.1f} {r['spread']:>7.0%}  {r['note']}")
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("augment", "kernel", "mix") if any(r["group"] == g and r["img_per_s"] for r in rows)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        sel = [r for r in rows if r["group"] == group and r["img_per_s"]]
        ys = list(range(len(sel)))
        vals = [r["img_per_s"] for r in sel]
        err = [[r["img_per_s"] - r["img_per_s_min"] for r in sel], [r["img_per_s_max"] - r["img_per_s"] for r in sel]]
        colours = ["tab:blue" if r["name"].startswith("enlight") or "grid_sample" in r["name"] else "0.6" for r in sel]
        ax.barh(ys, vals, xerr=err, color=colours, capsize=3)
        ax.set_yticks(ys, [r["name"] for r in sel], fontsize=7)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("images / s (median, min-max)", fontsize=8)
        ax.set_title(group, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write the JSON and a PNG bar chart next to it; return the results."""
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads if args.threads is not None else (1 if args.quick and device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    if args.quick:
        batch, in_size, out_size, repeats, tv_batch = 64, 128, 112, 15, 64
    else:
        batch, in_size, out_size, repeats, tv_batch = 256, 256, 224, 7, 256
    batch = args.batch or batch
    repeats = args.repeats or repeats
    tv_batch = min(tv_batch, batch)

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, in_size, in_size), dtype=torch.uint8, generator=g).to(device)
    xm = torch.rand((batch, 3, out_size, out_size), generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)

    rows = _augment_peers(x, out_size, device, repeats=repeats, tv_batch=tv_batch)
    rows += _mix_peers(xm, y, device, repeats=repeats)

    aug_ratio = _ratio(rows, "enlight GpuAugment", "kornia AugmentationSequential")
    mix_ratios = {
        r["name"]: r["img_per_s"] / next(q["img_per_s"] for q in rows if q["name"] == "bare per-sample torch.lerp")
        for r in rows
        if r["name"].startswith("enlight mix_batch") and r["img_per_s"]
    }
    aug_goal = GOALS["augment_vs_kornia"]["cuda" if device.type == "cuda" else "cpu"]
    result: dict[str, Any] = {
        "benchmark": "gpu_augment",
        "quick": args.quick,
        "config": {
            "batch": batch,
            "input": [3, in_size, in_size],
            "output": [3, out_size, out_size],
            "repeats": repeats,
            "jitter": JITTER,
            "jitter_prob": 0.8,
            "num_classes": NUM_CLASSES,
        },
        "environment": environment(device),
        "results": rows,
        "ratios": {
            "gpu_augment_over_kornia": aug_ratio,
            "gpu_augment_over_kornia_goal": aug_goal,
            "gpu_augment_over_kornia_met": None if aug_ratio is None else aug_ratio >= aug_goal,
            "mix_over_lerp": mix_ratios,
            "mix_over_lerp_goal": GOALS["mix_vs_lerp"],
            "mix_over_lerp_met": {k: v >= GOALS["mix_vs_lerp"] for k, v in mix_ratios.items()},
            "grid_sample_over_roi_align": _ratio(rows, "crop+resize+flip: grid_sample", "crop+resize+flip: roi_align"),
        },
    }
    env = result["environment"]
    title = (
        f"{env['device']}, batch {batch}, 3x{in_size}x{in_size} uint8 -> {out_size}; torch {env['torch']}, "
        f"torchvision {env['torchvision']}, kornia {env['kornia']}, timm {env['timm']}"
    )
    print(title)
    print(_table(rows))
    print(f"GpuAugment / Kornia: {aug_ratio:.1f}x (goal >= {aug_goal:g}x)" if aug_ratio else "GpuAugment / Kornia: n/a")
    for k, v in mix_ratios.items():
        print(f"{k} / lerp: {v:.2f} (goal >= {GOALS['mix_vs_lerp']})")
    out = write_json(args.out, result)
    png = out.with_suffix(".png")
    _plot(rows, png, title)
    print(f"wrote {out} and {png}")
    return result


if __name__ == "__main__":
    main()
