"""Batch augmentation and mixing throughput: ``GpuAugment`` and ``mix_batch`` against their peers, in one run.

(a) Augmentation, uint8 (B, 3, S, S) -> float (B, 3, s, s), random resized crop + flip + colour jitter (p=0.8) +
normalisation: ``GpuAugment``; the same pipeline as a Kornia ``AugmentationSequential`` (run through
``apply_augment``, which converts uint8 and scopes the global RNG); torchvision v2 per image in a Python loop. Also the
two batched crop+resize+flip kernels ``GpuAugment`` could use: ``grid_sample`` (its choice) and ``roi_align``, and the
colour-map kernels: ``baddbmm`` (its choice on the CPU), a per-channel ``addcmul`` chain, a grouped ``conv1d`` and, on
CUDA with Triton, the fused kernel it uses there (NOTE [ Applying the colour map ]).

(b) Mixing of a float (B, 3, s, s) batch with class targets: ``enlight_data.mix_batch`` (Mixup and CutMix, per-element
and per-batch λ) against timm ``Mixup`` (batch and elem modes; skipped with a note when timm is absent), torchvision v2
``MixUp``/``CutMix``, Kornia ``RandomMixUpV2``/``RandomCutMixV2``, and a bare per-sample ``torch.lerp`` with the
partner at ``(i + B/2) % B`` into a reused output buffer (the memory-bound floor), plus the lerp as the anchors time
it, ``torch.lerp(x, x.flip(0), w)`` (NOTE [ Two lerp floors ]). ``mix_batch`` is timed both ways, writing a new
tensor (the loader's case) and into a reused buffer (``out=``), and so is the bare lerp: on the CPU a new 153 MB
tensor costs a pass of page faults, which CUDA's caching allocator does not.

Every implementation is timed in the same process after warm-up, the device synchronised inside the timed region,
and the peers of each group are interleaved: one turn of each per round. On CUDA a turn queues 8 calls before its
sync (``--calls-per-round``): the rate of a training loop that never waits on the device; the latency of one call
with a sync after it is also reported for ``GpuAugment`` and Kornia. Throughput is images per second from the
median of the rounds, with the relative spread ((max - min) / median); the ratios against the goals are paired, the
median over rounds of the two peers' times within the round, since this machine's speed drifts between rounds.

Run: ``python benchmarks/gpu_augment.py [--quick] [--device cpu|cuda] [--threads N] [--out PATH.json]``. On a busy
CPU, multi-threaded timings swing by several times from one call to the next (threads wait for descheduled peers);
``--quick`` therefore runs single-threaded on the CPU unless ``--threads`` says otherwise. The results go to
``benchmarks/results/gpu_augment.json``, or ``benchmarks/results/quick/`` with ``--quick``. ``--batch`` should be even
(timm's ``Mixup`` and the lerp floor pair sample ``i`` with ``i + B/2``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `enlight_data` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    default_out,
    environment,
    paired_ratio,
    summarize_times,
    sync,
    time_interleaved,
    write_json,
)
import enlight_data._fused as _fused
import enlight_data.augment as augment_module
import enlight_data.mixing as mixing_module
from enlight_data import Phase, mix_batch
from enlight_data.augment import (
    _COLOUR_MAPS,
    GpuAugment,
    _crop_resize_flip_grid,
    _crop_resize_flip_roi,
    apply_augment,
)

__all__ = ["kornia_pipeline", "main"]

NAME = "gpu_augment"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
NUM_CLASSES = 1000
KORNIA = "kornia AugmentationSequential"
# NOTE [ The hue pair ]
# Kornia (and torchvision) shift hue through HSV; GpuAugment rotates about the gray axis (exact at 1/3 turn, close in
# between), a 3x3 map folded into the per-sample colour matrix. On the CPU that accounts for much of the headline
# ratio (hue was about 65 % of Kornia's CPU time), so both are also timed without hue, side by side.
NO_HUE = ", no hue"
# A peer whose call takes longer than this (seconds) is timed one call per round, not calls_per_round.
SLOW_S = 0.01
LERP = "bare per-sample torch.lerp"
ANCHOR_LERP = "torch.lerp(x, x.flip(0), w), the anchors' lerp"
# NOTE [ Two lerp floors ]
# The issue holds mixing to "the bare per-sample lerp, the Mixup limit", which ../shared/anchors/gpu_anchor_bench.py
# times as torch.lerp(x, x.flip(0), lam): a flipped copy of the batch, then a lerp into a new tensor (1.05M img/s on
# an H200). LERP is stricter: the partner read in place at (i + B/2) % B and a reused output, one pass over memory
# (1.65-1.76M img/s on an H200). Both are timed in the same run; mix_over_lerp holds our rows to the strict one,
# mix_over_anchor_lerp to the issue's.
OP_MIX = ", PyTorch ops"  # the suffix of the rows that time mix_batch without the fused kernels
TWO_KERNELS = ", two kernels"  # ... and without the one-launch kernel only (NOTE [ One launch per mix ])
GOALS = {"augment_vs_kornia": {"cpu": 5.0, "cuda": 20.0}, "mix_vs_lerp": 0.7}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small batch and images, few repeats (< 60 s on 2 CPU cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--out", type=Path, default=None,
                   help=f"results JSON (default benchmarks/results/{NAME}.json, or results/quick/ with --quick)")
    p.add_argument("--batch", type=int, default=None,
                   help="override the batch size (even and >= 2: timm's Mixup pairs the batch's two halves)")
    p.add_argument("--repeats", type=int, default=None, help="override the number of timed repeats")
    p.add_argument("--calls-per-round", type=int, default=None,
                   help="calls queued per round before one device sync (default: 8 on CUDA, the pipelined rate of "
                   "a loop that never waits; 1 on the CPU, where the two are the same)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: 1 for --quick on the CPU, which keeps timings stable on a busy "
        "machine; torch's default otherwise)",
    )
    return p


def _row(
    name: str, group: str, batch: int, times: list[float], note: str = "", *, calls: int | None = None
) -> dict[str, Any]:
    timing = summarize_times(times)
    return {
        "name": name,
        "group": group,
        "calls_per_round": calls,
        "img_per_s": batch / timing["median_s"],
        "img_per_s_min": batch / timing["max_s"],
        "img_per_s_max": batch / timing["min_s"],
        **timing,
        "note": note,
    }


def _skipped(name: str, group: str, note: str) -> dict[str, Any]:
    return {"name": name, "group": group, "img_per_s": None, "note": note}


def _augment_peers(
    x: torch.Tensor, out_size: int, device: torch.device, *, repeats: int, tv_batch: int, calls: int
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Rows of the augmentation peers and the kernels, and each one's per-round seconds (timed interleaved)."""
    import torchvision.transforms.v2 as v2

    b = x.shape[0]
    aug = GpuAugment(out_size, **JITTER, jitter_prob=0.8, mean=MEAN, std=STD)
    aug_no_hue = GpuAugment(out_size, **{**JITTER, "hue": 0.0}, jitter_prob=0.8, mean=MEAN, std=STD)
    g = torch.Generator(device=device).manual_seed(0)
    K, kornia_missing = _kornia()
    headline: list[tuple[str, str, int, Callable[[], Any], str]] = []
    no_hue: list[tuple[str, str, int, Callable[[], Any], str]] = []
    if K is not None:
        kornia = kornia_pipeline(K, out_size, device)
        kornia_no_hue = kornia_pipeline(K, out_size, device, hue=0.0)
        gk = torch.Generator(device=device).manual_seed(0)
        headline.append((KORNIA, "augment", b, lambda: apply_augment(kornia, x, generator=gk),
                         "via apply_augment (uint8 -> float, forked global RNG)"))
        no_hue = [  # NOTE [ The hue pair ]
            ("enlight GpuAugment" + NO_HUE, "augment", b, lambda: aug_no_hue(x, generator=g), "hue=0"),
            (KORNIA + NO_HUE, "augment", b, lambda: apply_augment(kornia_no_hue, x, generator=gk), "hue=0"),
        ]
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
    # The two batched crop + resize + flip kernels (float input, same params).
    xf = x.float()
    params = aug.draw(b, x.shape[2], x.shape[3], generator=torch.Generator(device=device).manual_seed(1))
    grid = torch.empty((b, out_size, out_size, 2), device=device)
    size = (out_size, out_size)
    # The colour-map kernels GpuAugment chooses between per device (NOTE [ Applying the colour map ]).
    gc = torch.Generator().manual_seed(2)
    flat = torch.rand((b, 3, out_size * out_size), generator=gc).to(device)
    mat = (torch.eye(3) + 0.1 * torch.randn((b, 3, 3), generator=gc)).to(device)
    bias = torch.randn((b, 3), generator=gc).to(device)
    colour_out = torch.empty_like(flat)
    kernels = {"baddbmm": _COLOUR_MAPS["bmm"], "per-channel addcmul": _COLOUR_MAPS["channels"],
               "grouped conv1d": _colour_map_conv}
    colour_rows = [
        (f"colour map: {label}", "kernel", b, functools.partial(kernel, flat, mat, bias, colour_out),
         "float (B, 3, s*s), per-sample 3x3 matrix and bias")
        for label, kernel in kernels.items()
    ]
    fused = _fused.kernel("colour") if augment_module._colour_backend(device, torch.float32, 3) == "triton" else None
    lo, hi = torch.zeros(3, device=device), torch.ones(3, device=device)
    if fused is not None and _runs("colour", functools.partial(fused, flat, mat, bias, lo, hi, colour_out), device):
        # What GpuAugment uses on CUDA: the map and its clamp in one Triton kernel.
        colour_rows.append(("colour map: fused Triton", "kernel", b,
                            functools.partial(fused, flat, mat, bias, lo, hi, colour_out),
                            "float (B, 3, s*s); one kernel, the clamp included"))
    tv_note = "per image in a Python loop, antialiased resize"
    if tv_batch != b:
        tv_note += f"; timed on {tv_batch} images"
    peers: list[tuple[str, str, int, Callable[[], Any], str]] = [
        ("enlight GpuAugment", "augment", b, lambda: aug(x, generator=g),
         "hue as a rotation about the gray axis (NOTE [ The hue pair ])"),
        *headline,  # Kornia, where it is importable
        ("torchvision v2 per-image loop", "augment", len(xs), lambda: torch.stack([tv(img) for img in xs]), tv_note),
        ("crop+resize+flip: grid_sample", "kernel", b, lambda: _crop_resize_flip_grid(xf, params, size, grid=grid),
         "float input, one batched call"),
        ("crop+resize+flip: roi_align", "kernel", b, lambda: _crop_resize_flip_roi(xf, params, size),
         "float input, one batched call"),
        *colour_rows,
        *no_hue,
    ]
    resample = _fused.kernel("resample") if augment_module._resample_backend(device, xf.dtype) == "triton" else None
    resampled = torch.empty((b, 3, out_size, out_size), device=device)
    if resample is not None and not _runs("resample", lambda: resample(xf, params.boxes, params.flip, resampled),
                                          device):
        resample = None
    if resample is not None:  # what GpuAugment uses on CUDA (NOTE [ Resampling in one kernel ])
        peers.insert(4 + len(headline),
                     ("crop+resize+flip: fused Triton", "kernel", b,
                      lambda: resample(xf, params.boxes, params.flip, resampled), "float input, one kernel"))
    # The same call with one fused kernel swapped for its PyTorch ops, each row beside the all-fused one.
    draws = _fused.kernel("draw") if augment_module._draw_backend(device) == "triton" else None
    if draws is not None and _runs("draw", lambda: aug(x, generator=torch.Generator(device=device)), device):
        peers.insert(1 + len(headline),
                     ("enlight GpuAugment, PyTorch-op draw", "augment", b,
                      lambda: _with_backends(aug, x, g, "_draw_backend", "torch"),
                      "the draw as ~45 PyTorch ops instead of one Triton kernel (NOTE [ Few kernels per draw ])"))
    if resample is not None:
        peers.insert(1 + len(headline),
                     ("enlight GpuAugment, grid_sample", "augment", b,
                      lambda: _with_backends(aug, x, g, "_resample_backend", "grid"),
                      "float copy, grid and grid_sample instead of one kernel (NOTE [ Resampling in one kernel ])"))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)  # torchvision only draws from the global RNG; forked, restored on exit
        queued: dict[str, int] = {}
        times = time_interleaved({p[0]: p[3] for p in peers}, repeats=repeats, warmup=1, device=device, calls=calls,
                                 slow_s=SLOW_S, progress=True, queued=queued)
        if calls > 1:  # the headline pair's latency too: one call, then a sync
            latency = time_interleaved({p[0]: p[3] for p in peers[: 1 + len(headline)]}, repeats=repeats, warmup=1,
                                       device=device)
            times.update({f"{name}, sync per call": t for name, t in latency.items()})
    rows = [_row(name, group, n, times[name], note, calls=queued[name]) for name, group, n, _, note in peers]
    rows += [_row(f"{name}, sync per call", group, n, times[f"{name}, sync per call"], "one call's latency", calls=1)
             for name, group, n, _, _ in peers[: 1 + len(headline)] if calls > 1]
    if K is None:
        rows.insert(1, _skipped(KORNIA, "augment", kornia_missing))
    return rows, times


def kornia_pipeline(K: Any, out_size: int, device: torch.device, *, hue: float = JITTER["hue"]) -> Any:
    """Kornia's equivalent of ``GpuAugment(out_size, **JITTER, jitter_prob=0.8, mean=MEAN, std=STD)`` (with ``hue``)."""
    return K.AugmentationSequential(
        K.RandomResizedCrop((out_size, out_size)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(JITTER["brightness"], JITTER["contrast"], JITTER["saturation"], hue, p=0.8),
        K.Normalize(mean=torch.tensor(MEAN), std=torch.tensor(STD)),
    ).to(device)


def _kornia() -> tuple[Any, str]:
    """``kornia.augmentation``, or None and why: its rows are then skipped, as timm's are, not the whole run."""
    try:
        import kornia.augmentation as K
    except ImportError as err:
        return None, f"kornia not importable ({err}); pip install kornia"
    return K, ""


def _runs(name: str, call: Callable[[], Any], device: torch.device) -> bool:
    """Whether the fused kernel ``name``, timed on its own below, runs here.

    A failure is recorded in ``_fused.FAILED`` (and so in the JSON), as the library records its own, and the row is
    left out: one broken kernel must not cost the run every other row (the library falls back to PyTorch ops). As in
    the library, arguments a kernel declines (``Unsupported``) leave it enabled, and device errors propagate.
    """
    if name in _fused.FAILED:
        return False
    try:
        call()
        sync(device)
    except _fused.Unsupported as exc:  # these arguments only: the kernel stays on for the library's own calls
        print(f"gpu_augment: the fused {name} kernel declined the benchmark's arguments ({exc}); its row is left out")
        return False
    except (torch.cuda.OutOfMemoryError, torch.AcceleratorError):
        raise
    except Exception as exc:  # a compile or launch error of any kind, as _fused.run catches it
        _fused.FAILED[name] = f"{type(exc).__name__}: {exc}"
        print(f"gpu_augment: the fused {name} kernel failed ({_fused.FAILED[name]}); its row is left out")
        return False
    return name not in _fused.FAILED  # a call through the library records its kernel's failure itself


def _colour_map_conv(flat: torch.Tensor, mat: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``mat @ flat + bias`` as one grouped 1x1 ``conv1d`` (one group per sample): a candidate GpuAugment rejected."""
    n, c, p = flat.shape
    del out  # conv1d has no out= variant
    weight = mat.reshape(n * c, c, 1)
    return torch.nn.functional.conv1d(flat.reshape(1, n * c, p), weight, bias.reshape(n * c), groups=n).view(n, c, p)


@contextlib.contextmanager
def _swapped(module: Any, name: str, value: Any) -> Iterator[None]:
    """``module.name`` set to ``value`` inside the block: a backend choice forced for a side-by-side row."""
    chosen = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, chosen)


def _with_backends(aug: GpuAugment, x: torch.Tensor, g: torch.Generator, choice: str, backend: str) -> torch.Tensor:
    """``aug(x)`` with one backend choice of ``augment.py`` (e.g. ``_draw_backend``) forced to ``backend``."""
    with _swapped(augment_module, choice, lambda *args: backend):
        return aug(x, generator=g)


def _with_op_mixing(
    x: torch.Tensor, y: torch.Tensor, phase: Any, g: torch.Generator, *, keep: Callable[[str], bool] = lambda name: False
) -> Any:
    """``mix_batch`` with the fused kernels off but those ``keep`` names: the PyTorch-op path (or the two-kernel
    path), for the side-by-side rows on CUDA."""
    fused = mixing_module._fused
    with _swapped(mixing_module, "_fused", lambda name, device: keep(name) and fused(name, device)):
        return mix_batch(x, y, phase, num_classes=NUM_CLASSES, generator=g)


def _mix_peers(
    x: torch.Tensor, y: torch.Tensor, device: torch.device, *, repeats: int, calls: int
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Rows of the mixing peers and each one's per-round seconds (timed interleaved, the bare lerp included)."""
    import torchvision.transforms.v2 as v2

    b = x.shape[0]
    peers: list[tuple[str, Callable[[], Any], str]] = []
    skipped: list[dict[str, Any]] = []
    g = torch.Generator(device=device).manual_seed(0)
    out = torch.empty_like(x)
    for label, phase, buf in (
        ("enlight mix_batch mixup elem", Phase(mixup_alpha=0.8, mode="elem"), None),
        ("enlight mix_batch mixup batch", Phase(mixup_alpha=0.8, mode="batch"), None),
        ("enlight mix_batch cutmix elem", Phase(cutmix_alpha=1.0, mode="elem"), None),
        ("enlight mix_batch cutmix batch", Phase(cutmix_alpha=1.0, mode="batch"), None),
        # With a reused output buffer (out=), like the lerp floor: what is left is the mixing itself.
        ("enlight mix_batch mixup elem, out=", Phase(mixup_alpha=0.8, mode="elem"), out),
        ("enlight mix_batch cutmix elem, out=", Phase(cutmix_alpha=1.0, mode="elem"), out),
    ):
        note = "new output tensor" if buf is None else "reused output buffer"
        fn = lambda p=phase, o=buf: mix_batch(x, y, p, num_classes=NUM_CLASSES, generator=g, out=o)  # noqa: E731
        peers.append((label, fn, note))
    if mixing_module._fused("blend", device):
        # The same calls as PyTorch ops, as before the fused kernels (NOTE [ Few kernels per CutMix draw ]), and
        # through the parameters' kernel and the blend, as before the one-launch kernel (NOTE [ One launch per mix ]).
        for kind, phase in (("mixup", Phase(mixup_alpha=0.8)), ("cutmix", Phase(cutmix_alpha=1.0))):
            fn = lambda p=phase: _with_op_mixing(x, y, p, g)  # noqa: E731
            peers.append((f"enlight mix_batch {kind} elem{OP_MIX}", fn, "new output tensor; PyTorch ops"))
            fn = lambda p=phase: _with_op_mixing(x, y, p, g, keep=lambda name: name != "mix")  # noqa: E731
            peers.append((f"enlight mix_batch {kind} elem{TWO_KERNELS}", fn,
                          "new output tensor; mix_params and the blend kernel"))
    try:
        from timm.data import Mixup
    except ImportError as err:
        skipped.append(_skipped("timm Mixup", "mix", f"timm not importable ({err}); pip install timm"))
    else:
        xt = x.clone()  # timm mixes in place
        for mode in ("batch", "elem"):
            for kind, kw in (
                ("mixup", dict(mixup_alpha=0.8, cutmix_alpha=0.0)),
                ("cutmix", dict(mixup_alpha=0.0, cutmix_alpha=1.0)),
            ):
                mixer = Mixup(**kw, mode=mode, label_smoothing=0.0, num_classes=NUM_CLASSES)
                peers.append((f"timm Mixup {kind} {mode}", lambda m=mixer: m(xt, y), "in place on the input"))
    mixers: list[tuple[str, Callable[..., Any], str]] = [
        ("torchvision v2 MixUp", v2.MixUp(alpha=0.8, num_classes=NUM_CLASSES), "one λ per batch"),
        ("torchvision v2 CutMix", v2.CutMix(alpha=1.0, num_classes=NUM_CLASSES), "one λ per batch"),
    ]
    K, kornia_missing = _kornia()
    if K is None:
        skipped += [_skipped(name, "mix", kornia_missing) for name in ("kornia RandomMixUpV2", "kornia RandomCutMixV2")]
    else:
        mixers += [
            ("kornia RandomMixUpV2", K.RandomMixUpV2(data_keys=["input", "class"]), "per element"),
            ("kornia RandomCutMixV2", K.RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True),
             "per element"),
        ]
    for label, mixer, note in mixers:
        peers.append((label, lambda m=mixer: m(x, y), note))

    # The floor: out[i] = lerp(x[i], x[(i + B/2) % B], w[i]) into a reused buffer, weights drawn once.
    w = torch.rand((b, 1, 1, 1), generator=torch.Generator(device=device).manual_seed(0), device=device)
    buf = torch.empty_like(x)
    half = b // 2

    def lerp(dst: torch.Tensor) -> torch.Tensor:
        torch.lerp(x[: b - half], x[half:], w[: b - half], out=dst[: b - half])
        torch.lerp(x[b - half :], x[:half], w[b - half :], out=dst[b - half :])
        return dst

    peers.append((LERP, lambda: lerp(buf), "reused output buffer"))
    # What a new output costs the allocator: page faults on the CPU, next to nothing on CUDA.
    peers.append(("bare per-sample torch.lerp, new output", lambda: lerp(torch.empty_like(x)), "new output tensor"))
    # The "bare per-sample lerp, the Mixup limit" as ../shared/anchors/gpu_anchor_bench.py times it: the
    # partner batch is a flipped copy, the output a new tensor (NOTE [ Two lerp floors ]).
    peers.append((ANCHOR_LERP, lambda: torch.lerp(x, x.flip(0), w), "new output and a flipped copy, as the anchors"))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)  # timm, torchvision and Kornia draw from the global RNGs; forked, restored on exit
        queued: dict[str, int] = {}
        times = time_interleaved({p[0]: p[1] for p in peers}, repeats=repeats, device=device, calls=calls,
                                 slow_s=SLOW_S, progress=True, queued=queued)
    rows = [_row(name, "mix", b, times[name], note, calls=queued[name]) for name, _, note in peers]
    return rows + skipped, times


def _table(rows: list[dict[str, Any]]) -> str:
    w = max([40, *(len(r["name"]) for r in rows)])
    lines = [f"{'implementation':<{w}} {'img/s':>11} {'spread':>8}  note", "-" * (w + 50)]
    for r in rows:
        if r["img_per_s"] is None:
            lines.append(f"{r['name']:<{w}} {'skipped':>11} {'':>8}  {r['note']}")
        else:
            lines.append(f"{r['name']:<{w}} {r['img_per_s']:>11.1f} {r['spread']:>7.0%}  {r['note']}")
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
    parser = _parser()
    args = parser.parse_args(argv)
    if args.batch is not None and (args.batch < 2 or args.batch % 2):
        parser.error(f"--batch should be an even number >= 2 (timm's Mixup asserts an even batch), got {args.batch}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats should be >= 1, got {args.repeats}")
    if args.calls_per_round is not None and args.calls_per_round < 1:
        parser.error(f"--calls-per-round should be >= 1, got {args.calls_per_round}")
    out_path = args.out or default_out(NAME, args.quick)
    device = torch.device(args.device)
    threads = args.threads if args.threads is not None else (1 if args.quick and device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    if args.quick:
        batch, in_size, out_size, repeats, mix_repeats, tv_batch = 64, 128, 112, 15, 31, 64
    elif device.type == "cuda":  # rounds are milliseconds there: more of them for steadier medians
        batch, in_size, out_size, repeats, mix_repeats, tv_batch = 256, 256, 224, 25, 25, 64
    else:
        batch, in_size, out_size, repeats, mix_repeats, tv_batch = 256, 256, 224, 7, 21, 256
    batch = args.batch or batch
    repeats = args.repeats or repeats
    mix_repeats = args.repeats or mix_repeats
    tv_batch = min(tv_batch, batch)
    calls = args.calls_per_round or (8 if device.type == "cuda" else 1)

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, in_size, in_size), dtype=torch.uint8, generator=g).to(device)
    xm = torch.rand((batch, 3, out_size, out_size), generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)

    rows, aug_times = _augment_peers(x, out_size, device, repeats=repeats, tv_batch=tv_batch, calls=calls)
    mix_rows, mix_times = _mix_peers(xm, y, device, repeats=mix_repeats, calls=calls)
    rows += mix_rows

    # Ratios are paired: the median over rounds of the two peers' times within one round (see time_interleaved).
    aug_ratio = paired_ratio(aug_times[KORNIA], aug_times["enlight GpuAugment"]) if KORNIA in aug_times else None
    sync_ratio = paired_ratio(aug_times[f"{KORNIA}, sync per call"], aug_times["enlight GpuAugment, sync per call"]) \
        if calls > 1 and aug_ratio is not None else aug_ratio
    no_hue_ratio = paired_ratio(aug_times[KORNIA + NO_HUE], aug_times["enlight GpuAugment" + NO_HUE]) \
        if KORNIA + NO_HUE in aug_times else None
    ours = {name: t for name, t in mix_times.items()
            if name.startswith("enlight") and not name.endswith((OP_MIX, TWO_KERNELS))}
    mix_ratios = {name: paired_ratio(mix_times[LERP], t) for name, t in ours.items()}
    anchor_ratios = {name: paired_ratio(mix_times[ANCHOR_LERP], t) for name, t in ours.items()}
    fused_mix = {name[: -len(OP_MIX)]: paired_ratio(t, mix_times[name[: -len(OP_MIX)]])
                 for name, t in mix_times.items() if name.endswith(OP_MIX)}
    one_launch = {name[: -len(TWO_KERNELS)]: paired_ratio(t, mix_times[name[: -len(TWO_KERNELS)]])
                  for name, t in mix_times.items() if name.endswith(TWO_KERNELS)}
    aug_goal = GOALS["augment_vs_kornia"]["cuda" if device.type == "cuda" else "cpu"]
    result: dict[str, Any] = {
        "benchmark": NAME,
        "quick": args.quick,
        "config": {
            "batch": batch,
            "input": [3, in_size, in_size],
            "output": [3, out_size, out_size],
            "repeats": repeats,
            "mix_repeats": mix_repeats,
            "calls_per_round": calls,
            "timing": "peers interleaved round by round, calls_per_round calls queued per round before one sync "
            f"(one for a peer whose call takes over {SLOW_S * 1e3:g} ms); ratios are medians of per-round ratios",
            "torchvision_batch": tv_batch,
            "jitter": JITTER,
            "jitter_prob": 0.8,
            "num_classes": NUM_CLASSES,
        },
        "environment": environment(device),
        "fused_kernels_failed": dict(_fused.FAILED),  # each fell back to PyTorch ops (and left its own row out)
        "results": rows,
        "ratios": {
            "gpu_augment_over_kornia": aug_ratio,
            "gpu_augment_over_kornia_sync_per_call": sync_ratio,
            "gpu_augment_over_kornia_goal": aug_goal,
            "gpu_augment_over_kornia_met": None if aug_ratio is None else aug_ratio >= aug_goal,
            "gpu_augment_over_kornia_sync_per_call_met": None if aug_ratio is None else sync_ratio >= aug_goal,
            # NOTE [ The hue pair ]: both without hue, where GpuAugment's colour map approximates Kornia's HSV shift.
            "gpu_augment_over_kornia_no_hue": no_hue_ratio,
            "gpu_augment_over_kornia_no_hue_met": None if no_hue_ratio is None else no_hue_ratio >= aug_goal,
            "mix_over_lerp": mix_ratios,
            "mix_over_lerp_goal": GOALS["mix_vs_lerp"],
            "mix_over_lerp_met": {k: v >= GOALS["mix_vs_lerp"] for k, v in mix_ratios.items()},
            "mix_over_anchor_lerp": anchor_ratios,
            "mix_over_anchor_lerp_met": {k: v >= GOALS["mix_vs_lerp"] for k, v in anchor_ratios.items()},
            "colour_map_speed_over_baddbmm": {
                label: paired_ratio(aug_times["colour map: baddbmm"], aug_times[f"colour map: {label}"])
                for label in ("per-channel addcmul", "grouped conv1d", "fused Triton")
                if f"colour map: {label}" in aug_times
            },
            "fused_draw_speedup": paired_ratio(aug_times["enlight GpuAugment, PyTorch-op draw"],
                                               aug_times["enlight GpuAugment"])
            if "enlight GpuAugment, PyTorch-op draw" in aug_times else None,
            "fused_resample_speedup": paired_ratio(aug_times["enlight GpuAugment, grid_sample"],
                                                   aug_times["enlight GpuAugment"])
            if "enlight GpuAugment, grid_sample" in aug_times else None,
            "fused_mix_speedup": fused_mix,
            "one_launch_mix_speedup": one_launch,
            "grid_sample_over_roi_align": paired_ratio(
                aug_times["crop+resize+flip: roi_align"], aug_times["crop+resize+flip: grid_sample"]
            ),
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
    if calls > 1 and aug_ratio is not None:
        print(f"GpuAugment / Kornia, sync per call: {sync_ratio:.1f}x (goal >= {aug_goal:g}x)")
    if no_hue_ratio is not None:
        print(f"GpuAugment / Kornia, both without hue: {no_hue_ratio:.1f}x (goal >= {aug_goal:g}x)")
    if result["ratios"]["fused_draw_speedup"] is not None:
        print(f"GpuAugment, fused draw / PyTorch-op draw: {result['ratios']['fused_draw_speedup']:.2f}x")
    if result["ratios"]["fused_resample_speedup"] is not None:
        print(f"GpuAugment, fused resample / grid_sample: {result['ratios']['fused_resample_speedup']:.2f}x")
    for k, v in result["ratios"]["colour_map_speed_over_baddbmm"].items():
        print(f"colour map {k} / baddbmm: {v:.2f}x")
    for k, v in fused_mix.items():
        print(f"{k}, fused kernels / PyTorch ops: {v:.2f}x")
    for k, v in one_launch.items():
        print(f"{k}, one kernel / mix_params and the blend: {v:.2f}x")
    for k, v in mix_ratios.items():
        print(f"{k} / lerp: {v:.2f}; / the anchors' lerp: {anchor_ratios[k]:.2f} (goal >= {GOALS['mix_vs_lerp']})")
    out = write_json(out_path, result)
    png = out.with_suffix(".png")
    _plot(rows, png, title)
    print(f"wrote {out} and {png}")
    return result


if __name__ == "__main__":
    main()
