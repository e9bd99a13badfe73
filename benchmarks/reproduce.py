"""Reproduce the paper's comparison on real data: ``python -m benchmarks.reproduce --quick``.

"Enlightenment Period Improving DNN Performance" (arXiv 2504.01737) finds that
data noise hurts at the very start of training. This script trains a small
ResNet-style CNN on scikit-learn's digits and on Fashion-MNIST (Debian's
``dataset-fashion-mnist``) with six strategies — no Mixup, Mixup throughout (the
baseline), Mixup Pause with the period set by epochs and by 50% training
accuracy, Alpha Boost and High-Loss Removal — over several seeds, and reports
test accuracy as mean ± std with Welch's t-test against the baseline.

Protocol: the test split is fixed by ``--split-seed``; the remaining training
data is split again into a fit part and a validation part. Hyper-parameters
(Mixup α, the period length, the boosted α, the removed fraction) are chosen on
the validation part with tuning seeds that the reported runs do not use (the
``--gpu`` preset, and ``--no-tune``, tune nothing and keep the preset's
defaults); the reported runs train on the fit part and are measured once per epoch on the test
split (for the curves only: nothing is chosen from them).

Presets: ``--quick`` (≈ 6 minutes on 2 CPU cores), ``--full`` (about two hours
on 2 CPU cores), ``--gpu`` (≈ 5 minutes on one H100: a ResNet-18-style network
on Fashion-MNIST padded to 32×32 with ``ed.GpuAugment``, 3 strategies × 3 seeds).

Outputs in ``--out`` (default ``benchmarks/results``): ``reproduce.json`` (one
record per run, with per-epoch curves), ``reproduce.md``, ``reproduce_curves.png``
and ``reproduce_bars.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `enlight_data` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

import enlight_data as ed
from benchmarks.idx import FASHION_MNIST_DIR, INSTALL_HINT, fashion_mnist_available, load_fashion_mnist
from benchmarks.report import markdown_report, plot_bars, plot_curves, summarize
from enlight_data.demo import (
    ImageSet,
    SmallResNet,
    TrainResult,
    load_digits_images,
    standardize,
    stratified_split,
    torch_threads,
    train_and_evaluate,
)

__all__ = [
    "DatasetConfig",
    "Hyper",
    "PRESETS",
    "Preset",
    "STRATEGIES",
    "build_schedule",
    "load_dataset",
    "main",
]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"

#: Strategy keys and display names, in table order.
STRATEGIES: dict[str, str] = {
    "no-mixup": "No Mixup",
    "mixup": "Mixup throughout (baseline)",
    "pause-epochs": "Mixup Pause (epochs)",
    "pause-accuracy": "Mixup Pause (50% acc.)",
    "alpha-boost": "Alpha Boost",
    "high-loss-removal": "High-Loss Removal",
}

# Seeds of the tuning runs: apart from the reported seeds 0, 1, 2, ...
_TUNING_SEED = 10_000


@dataclass(frozen=True)
class Hyper:
    """The strategies' hyper-parameters.

    Attributes:
        alpha: Mixup α of the baseline, and after the period for Mixup Pause and Alpha Boost.
        period: Period length in epochs (Mixup Pause by epochs, Alpha Boost).
        until_accuracy: Training accuracy that ends the accuracy period.
        max_period: The accuracy period's cap in epochs.
        boost_alpha: Alpha Boost's α during the period.
        fraction: Share of highest-loss samples High-Loss Removal leaves out.
        removal_period: High-Loss Removal's period in epochs; at least 2, since the
            first epoch records the losses that the next one ranks.
    """

    alpha: float = 0.4
    period: int = 1
    until_accuracy: float = 0.5
    max_period: int = 3
    boost_alpha: float = 1.0
    fraction: float = 0.1
    removal_period: int = 2


def build_schedule(strategy: str, h: Hyper) -> ed.Schedule:
    """The ``ed.Schedule`` of a strategy key under hyper-parameters ``h``."""
    mix = ed.Phase(mixup_alpha=h.alpha)
    if strategy == "no-mixup":
        return ed.Schedule(0)
    if strategy == "mixup":
        return ed.Schedule(0, during=mix, after=mix)
    if strategy == "pause-epochs":
        return ed.mixup_pause(h.period, alpha=h.alpha)
    if strategy == "pause-accuracy":
        return ed.mixup_pause(ed.Period(until_accuracy=h.until_accuracy, max_epochs=h.max_period), alpha=h.alpha)
    if strategy == "alpha-boost":
        return ed.alpha_boost(h.period, alpha=h.alpha, boost_alpha=h.boost_alpha)
    if strategy == "high-loss-removal":
        return ed.high_loss_removal(h.removal_period, fraction=h.fraction)
    raise ValueError(f"strategy should be one of {', '.join(STRATEGIES)}, got strategy={strategy!r}")


_HAS_PERIOD = {"pause-epochs", "pause-accuracy", "alpha-boost", "high-loss-removal"}


@dataclass(frozen=True)
class DatasetConfig:
    """One data set's sizes, model and training recipe.

    Attributes:
        name: ``"digits"`` or ``"fashion-mnist"``.
        epochs: Training epochs.
        batch_size: Training batch size.
        lr: Peak learning rate (cosine decay per step).
        widths: :class:`SmallResNet` stage widths.
        blocks: Basic blocks per stage.
        stem_stride: Stride of the stem (2 for 28×28 inputs on the CPU).
        train_size: Training images kept (stratified), ``None`` for all.
        val_size: Validation images taken from the training data (or a fraction if < 1).
        test_size: Test images kept (stratified), ``None`` for all.
        pad_to: Zero-pad the raw images to this size (before standardizing).
        gpu_augment: Pass ``ed.GpuAugment(size)`` to the loader.
    """

    name: str
    epochs: int
    batch_size: int = 64
    lr: float = 0.05
    widths: tuple[int, ...] = (16, 32)
    blocks: int = 1
    stem_stride: int = 1
    train_size: int | None = None
    val_size: float = 0.2
    test_size: int | None = None
    pad_to: int | None = None
    gpu_augment: bool = False


@dataclass(frozen=True)
class Preset:
    """A complete benchmark configuration.

    Attributes:
        name: ``quick``, ``full`` or ``gpu``.
        datasets: One :class:`DatasetConfig` per data set.
        strategies: Strategy keys to run (``mixup`` is the baseline and always included).
        seeds: Reported seeds per strategy (``0 .. seeds-1``).
        grids: Candidate values tried on the validation split, per :class:`Hyper` field.
        tuning_seeds: Seeds per candidate while tuning.
        device: ``cpu`` or ``cuda``.
        amp: Train under bfloat16 autocast.
        hyper: Starting hyper-parameters (kept where nothing is tuned).
    """

    name: str
    datasets: tuple[DatasetConfig, ...]
    strategies: tuple[str, ...] = tuple(STRATEGIES)
    seeds: int = 5
    grids: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    tuning_seeds: int = 1
    device: str = "cpu"
    amp: bool = False
    hyper: Hyper = Hyper()


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        name="quick",
        datasets=(
            DatasetConfig("digits", epochs=15, batch_size=64, lr=0.05, widths=(16, 32)),
            DatasetConfig("fashion-mnist", epochs=8, batch_size=128, lr=0.08, widths=(16, 32, 64), stem_stride=2,
                          train_size=4000, val_size=1000, test_size=2000),
        ),
        grids={"alpha": (0.2, 0.8), "period": (1, 2), "boost_alpha": (1.0, 2.0), "fraction": (0.1, 0.2)},
    ),
    "full": Preset(
        name="full",
        datasets=(
            DatasetConfig("digits", epochs=60, batch_size=64, lr=0.05, widths=(32, 64)),
            DatasetConfig("fashion-mnist", epochs=20, batch_size=128, lr=0.08, widths=(16, 32, 64), stem_stride=2,
                          val_size=5000),
        ),
        grids={"alpha": (0.2, 0.4, 0.8), "period": (1, 2, 4), "boost_alpha": (1.0, 2.0, 4.0),
               "fraction": (0.05, 0.1, 0.2, 0.3)},
        tuning_seeds=2,
    ),
    "gpu": Preset(
        name="gpu",
        datasets=(
            DatasetConfig("digits", epochs=20, batch_size=64, lr=0.05, widths=(32, 64)),
            DatasetConfig("fashion-mnist", epochs=10, batch_size=256, lr=0.1, widths=(32, 64, 128, 256), blocks=2,
                          val_size=5000, pad_to=32, gpu_augment=True),
        ),
        strategies=("mixup", "pause-accuracy", "high-loss-removal"),
        seeds=3,
        device="cuda",
        amp=True,
        hyper=Hyper(alpha=0.4, period=1, max_period=2, fraction=0.1, removal_period=2),
    ),
}


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class _Splits:
    fit: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int


def _take(labels: torch.Tensor, size: float | None, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rest, taken)`` indices: a stratified ``size`` (a count, or a fraction if < 1) of ``labels``."""
    n = len(labels)
    if size is None or size >= n:
        return torch.empty(0, dtype=torch.int64), torch.arange(n)
    fraction = size if size < 1 else size / n
    return stratified_split(labels, fraction=fraction, generator=generator)


def load_dataset(cfg: DatasetConfig, *, split_seed: int, fashion_dir: Path = FASHION_MNIST_DIR) -> _Splits:
    """Load ``cfg.name`` and split it into standardized fit / validation / test sets.

    All splits are stratified and drawn from one ``torch.Generator`` seeded with ``split_seed``.
    """
    g = torch.Generator().manual_seed(split_seed)
    if cfg.name == "digits":
        data = load_digits_images()
        train_idx, test_idx = stratified_split(data.labels, fraction=0.25, generator=g)
        train, test = data.subset(train_idx), data.subset(test_idx)
    elif cfg.name == "fashion-mnist":
        train, test = load_fashion_mnist(fashion_dir)
    else:
        raise ValueError(f"dataset should be 'digits' or 'fashion-mnist', got {cfg.name!r}")
    rest, val_idx = _take(train.labels, cfg.val_size, g)
    val, rest_set = train.subset(val_idx), train.subset(rest)
    _, fit_idx = _take(rest_set.labels, cfg.train_size, g)
    fit = rest_set.subset(fit_idx)
    _, test_idx = _take(test.labels, cfg.test_size, g)
    test = test.subset(test_idx)
    if cfg.pad_to is not None:
        # Pad the raw images with 0 (their background), then standardize.
        pad = cfg.pad_to - fit.images.shape[-1]
        if pad < 0:
            raise ValueError(f"pad_to should be >= the image size {fit.images.shape[-1]}, got pad_to={cfg.pad_to}")
        lo, hi = pad // 2, pad - pad // 2
        fit, val, test = (ImageSet(F.pad(s.images, (lo, hi, lo, hi)), s.labels) for s in (fit, val, test))
    fit, val, test = standardize(fit, val, test)
    num_classes = int(torch.cat([fit.labels, val.labels, test.labels]).max()) + 1
    return _Splits(fit, val, test, num_classes)


# --------------------------------------------------------------------------- runs
def _augment(cfg: DatasetConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if not cfg.gpu_augment:
        return None
    try:
        from enlight_data.augment import GpuAugment
    except ImportError as exc:  # pragma: no cover - depends on the augment module being present
        print(f"warning: enlight_data.augment.GpuAugment is unavailable ({exc}); training without augmentation",
              file=sys.stderr)
        return None
    size = cfg.pad_to if cfg.pad_to is not None else 28
    # A gentle crop: Fashion-MNIST's objects fill the frame (ImageNet's scale=(0.08, 1) would cut them up).
    return GpuAugment(size, scale=(0.6, 1.0), flip=0.5)


@dataclass(frozen=True)
class _Job:
    """One training run: everything it depends on, so that it can run in another process."""

    cfg: DatasetConfig
    split_seed: int
    fashion_dir: str
    strategy: str
    hyper: Hyper
    seed: int
    on_val: bool
    device: str
    amp: bool


# Splits already loaded in this process, by (dataset config, split seed, folder).
_SPLITS: dict[tuple[DatasetConfig, int, str], _Splits] = {}


def _splits(cfg: DatasetConfig, split_seed: int, fashion_dir: str) -> _Splits:
    key = (cfg, split_seed, fashion_dir)
    if key not in _SPLITS:
        _SPLITS.clear()  # one data set at a time
        _SPLITS[key] = load_dataset(cfg, split_seed=split_seed, fashion_dir=Path(fashion_dir))
    return _SPLITS[key]


def _run(job: _Job, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    cfg = job.cfg
    splits = _splits(cfg, job.split_seed, job.fashion_dir)
    shape = splits.fit.images.shape
    return train_and_evaluate(
        build_schedule(job.strategy, job.hyper),
        train=splits.fit,
        test=splits.val if job.on_val else splits.test,
        num_classes=splits.num_classes,
        epochs=cfg.epochs,
        seed=job.seed,
        model_fn=lambda: SmallResNet(shape[1], splits.num_classes, widths=cfg.widths, blocks=cfg.blocks,
                                     stem_stride=cfg.stem_stride),
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        device=job.device,
        augment=_augment(cfg),
        amp=job.amp,
        on_epoch=on_epoch,
    )


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


class _Executor:
    """Runs jobs in this process (``jobs=1``) or in a pool of single-purpose processes.

    NOTE [ Processes, not threads ]
    Two processes with one intra-op thread each use two cores better than one
    process with two OpenMP threads: these models are small, and spinning OpenMP
    threads collapse when another process shares the cores. Every run is a pure
    function of its :class:`_Job`, so the results do not depend on ``jobs``.
    """

    def __init__(self, jobs: int, threads: int, bar: Any) -> None:
        self.bar = bar
        self.pool = None
        if jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init, initargs=(threads,))

    def map(self, jobs: list[_Job]) -> list[TrainResult]:
        """The results of ``jobs``, in order."""
        if self.pool is None:
            results = []
            for job in jobs:
                self._describe(job)

                def tick(entry: dict[str, Any]) -> None:
                    self.bar.set_postfix(epoch=entry["epoch"], acc=f"{entry['eval_accuracy']:.3f}", refresh=False)

                results.append(_run(job, tick))
                self.bar.update(1)
            return results
        from concurrent.futures import as_completed

        futures = {self.pool.submit(_run, job): i for i, job in enumerate(jobs)}
        out: list[TrainResult | None] = [None] * len(jobs)
        for future in as_completed(futures):
            i = futures[future]
            out[i] = future.result()
            self._describe(jobs[i])
            self.bar.set_postfix(acc=f"{out[i].test_accuracy:.3f}", refresh=False)  # type: ignore[union-attr]
            self.bar.update(1)
        return out  # type: ignore[return-value]

    def _describe(self, job: _Job) -> None:
        self.bar.set_description(f"{job.cfg.name} {'tune' if job.on_val else 'test'} {job.strategy} s{job.seed}",
                                 refresh=False)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


# Tuning order: each step tunes one field with the earlier choices fixed.
_TUNING_STEPS: tuple[tuple[str, str], ...] = (
    ("alpha", "mixup"),
    ("period", "pause-epochs"),
    ("boost_alpha", "alpha-boost"),
    ("fraction", "high-loss-removal"),
)


def _tuning_plan(preset: Preset) -> list[tuple[str, str, tuple[Any, ...]]]:
    return [(name, strategy, preset.grids[name]) for name, strategy in _TUNING_STEPS
            if strategy in preset.strategies and len(preset.grids.get(name, ())) > 1]


def _with(h: Hyper, name: str, value: Any) -> Hyper:
    h = dataclasses.replace(h, **{name: value})
    # High-Loss Removal needs two epochs: one to record losses, one to rank them.
    return dataclasses.replace(h, removal_period=max(2, h.period), max_period=max(h.max_period, h.period))


def _tune(executor: _Executor, preset: Preset, job: _Job) -> tuple[Hyper, list[dict[str, Any]]]:
    """Choose the hyper-parameters step by step on the validation split."""
    h = _with(preset.hyper, "period", preset.hyper.period)
    log: list[dict[str, Any]] = []
    seeds = [_TUNING_SEED + i for i in range(preset.tuning_seeds)]
    for name, strategy, grid in _tuning_plan(preset):
        jobs = [dataclasses.replace(job, strategy=strategy, hyper=_with(h, name, v), seed=s, on_val=True)
                for v in grid for s in seeds]
        accs = [r.test_accuracy for r in executor.map(jobs)]
        scores = [sum(accs[i * len(seeds):(i + 1) * len(seeds)]) / len(seeds) for i in range(len(grid))]
        for value, score in zip(grid, scores):
            log.append({"dataset": job.cfg.name, "parameter": name, "strategy": strategy, "value": value,
                        "val_accuracy": score, "seeds": seeds})
        best = grid[max(range(len(grid)), key=lambda i: (scores[i], -i))]  # ties: the first candidate
        h = _with(h, name, best)
    return h, log


def _record(ds: str, strategy: str, seed: int, h: Hyper, cfg: DatasetConfig, r: TrainResult) -> dict[str, Any]:
    keys = ("accuracy", "eval_accuracy", "mean_loss", "in_period", "mixup_alpha", "removed", "seen", "lr")
    names = {"accuracy": "train_accuracy"}
    curves = {names.get(k, k): [h_[k] for h_ in r.history] for k in keys}
    return {
        "dataset": ds,
        "strategy": strategy,
        "seed": seed,
        "test_accuracy": r.test_accuracy,
        "epochs": cfg.epochs,
        "period_end_epoch": r.period_end_epoch if strategy in _HAS_PERIOD else None,
        "hyperparameters": dataclasses.asdict(h),
        "seconds": round(r.seconds, 3),
        "curves": curves,
    }


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__.split("\n\n")[0])
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_const", dest="preset", const="quick",
                        help="digits + a 4000-image Fashion-MNIST subset, 6 strategies x 5 seeds (the default)")
    preset.add_argument("--full", action="store_const", dest="preset", const="full",
                        help="all of Fashion-MNIST, longer training, larger tuning grids")
    preset.add_argument("--gpu", action="store_const", dest="preset", const="gpu",
                        help="ResNet-18-style on Fashion-MNIST 32x32 with GpuAugment on CUDA, 3 strategies x 3 seeds")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--seeds", type=int, default=None, help="reported seeds per strategy (preset's by default)")
    p.add_argument("--epochs", type=int, default=None, help="override every data set's epochs")
    p.add_argument("--datasets", nargs="+", choices=("digits", "fashion-mnist"), default=None,
                   help="data sets to run (default: all of the preset's)")
    p.add_argument("--strategies", nargs="+", choices=tuple(STRATEGIES), default=None,
                   help="strategies to run (mixup, the baseline, is always added)")
    p.add_argument("--no-tune", action="store_true", help="keep the preset's hyper-parameters")
    p.add_argument("--split-seed", type=int, default=0, help="seeds the test/validation/fit splits (default 0)")
    p.add_argument("--device", default=None, help="override the preset's device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs in parallel, one process each (default 2 on the CPU, 1 on CUDA)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process (default 1)")
    p.add_argument("--fashion-dir", type=Path, default=FASHION_MNIST_DIR,
                   help=f"folder with the Fashion-MNIST IDX files (default {FASHION_MNIST_DIR})")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _configure(args: argparse.Namespace) -> Preset:
    preset = PRESETS[args.preset or "quick"]
    datasets = tuple(d for d in preset.datasets if args.datasets is None or d.name in args.datasets)
    if args.epochs is not None:
        if args.epochs < 1:
            raise SystemExit(f"error: --epochs should be >= 1, got {args.epochs}")
        datasets = tuple(dataclasses.replace(d, epochs=args.epochs) for d in datasets)
    strategies = preset.strategies
    if args.strategies is not None:
        strategies = tuple(k for k in STRATEGIES if k in args.strategies or k == "mixup")
    seeds = args.seeds if args.seeds is not None else preset.seeds
    for name, value in (("--seeds", seeds), ("--jobs", args.jobs), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise SystemExit(f"error: {name} should be >= 1, got {value}")
    return dataclasses.replace(
        preset, datasets=datasets, strategies=strategies, seeds=seeds,
        grids={} if args.no_tune else preset.grids, device=args.device or preset.device,
    )


def _environment(device: str, threads: int, jobs: int) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": device,
        "threads_per_process": threads,
        "processes": jobs,
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write JSON / Markdown / PNG; return the JSON document.

    Args:
        argv: Command-line arguments (without the program name); ``sys.argv[1:]`` when ``None``.
    """
    from tqdm.auto import tqdm

    args = _parser().parse_args(argv)
    preset = _configure(args)
    if preset.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit(f"error: the {preset.name!r} preset needs a CUDA device, none is available "
                             "(pass --device cpu to run it on the CPU anyway)")
        torch.backends.cudnn.benchmark = True

    notes: list[str] = []
    datasets = list(preset.datasets)
    if any(d.name == "fashion-mnist" for d in datasets) and not fashion_mnist_available(args.fashion_dir):
        message = (f"Fashion-MNIST not found in {args.fashion_dir}; skipping it. "
                   f"Install it with: {INSTALL_HINT}")
        print(message, file=sys.stderr)
        notes.append(message)
        datasets = [d for d in datasets if d.name != "fashion-mnist"]

    plan = _tuning_plan(preset)
    per_dataset_runs = preset.tuning_seeds * sum(len(g) for _, _, g in plan) + preset.seeds * len(preset.strategies)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "benchmark": "reproduce",
        "preset": preset.name,
        "config": {
            "datasets": [dataclasses.asdict(d) for d in datasets],
            "strategies": list(preset.strategies),
            "seeds": list(range(preset.seeds)),
            "grids": {k: list(v) for k, v in preset.grids.items()},
            "tuning_seeds": [_TUNING_SEED + i for i in range(preset.tuning_seeds)] if plan else [],
            "split_seed": args.split_seed,
            "amp": preset.amp,
        },
        "notes": notes,
        "tuning": [],
        "hyperparameters": {},
        "records": [],
        "summary": [],
    }
    start = time.perf_counter()
    jobs = args.jobs if args.jobs is not None else (1 if preset.device.startswith("cuda") else 2)
    with torch_threads(args.threads) as threads:
        document["environment"] = _environment(preset.device, threads, jobs)
        bar = tqdm(total=per_dataset_runs * len(datasets), unit="run", disable=args.no_progress, file=sys.stderr)
        executor = _Executor(jobs, threads, bar)
        try:
            for cfg in datasets:
                splits = _splits(cfg, args.split_seed, str(args.fashion_dir))
                bar.write(f"{cfg.name}: {len(splits.fit)} fit / {len(splits.val)} validation / "
                          f"{len(splits.test)} test images of {tuple(splits.fit.images.shape[1:])}, "
                          f"{cfg.epochs} epochs")
                base = _Job(cfg, args.split_seed, str(args.fashion_dir), "mixup", preset.hyper, 0, False,
                            preset.device, preset.amp)
                h, log = _tune(executor, preset, base)
                document["tuning"] += log
                document["hyperparameters"][cfg.name] = dataclasses.asdict(h)
                if plan:
                    bar.write(f"{cfg.name}: chosen on validation: " + ", ".join(
                        f"{name}={getattr(h, name)}" for name, _, _ in plan))
                runs = [(seed, strategy) for seed in range(preset.seeds) for strategy in preset.strategies]
                results = executor.map([dataclasses.replace(base, strategy=k, hyper=h, seed=s) for s, k in runs])
                for (seed, strategy), r in zip(runs, results):
                    document["records"].append(_record(cfg.name, strategy, seed, h, cfg, r))
                _write_json(out / "reproduce.json", document)
        finally:
            executor.close()
            bar.close()
            _SPLITS.clear()
    document["seconds"] = round(time.perf_counter() - start, 1)

    labels = {k: v for k, v in STRATEGIES.items() if k in preset.strategies}
    document["summary"] = summarize(document["records"], labels)
    notes.append(f"preset `{preset.name}`, {preset.seeds} seeds per strategy, device `{preset.device}`, "
                 f"torch {torch.__version__}, {document['seconds']:.0f} s in all")
    for ds, hp in document["hyperparameters"].items():
        notes.append(f"{ds}: hyper-parameters " + ", ".join(f"{k}={v}" for k, v in hp.items())
                     + (" (chosen on the validation split)" if plan else " (preset defaults)"))
    notes.append("p-values: Welch's two-sided t-test over seeds; curves: accuracy after each epoch, "
                 "period shaded")
    report = markdown_report(document["summary"], title="Enlightenment period: reproduction", notes=notes)
    (out / "reproduce.md").write_text(report + "\n")
    _write_json(out / "reproduce.json", document)
    if not args.no_plots and document["records"]:
        plot_curves(document["records"], labels, out / "reproduce_curves.png")
        plot_bars(document["summary"], out / "reproduce_bars.png")
    print(report)
    print(f"wrote {out / 'reproduce.json'}, {out / 'reproduce.md'}"
          + ("" if args.no_plots else ", reproduce_curves.png, reproduce_bars.png"))
    return document


def _write_json(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1, default=str) + "\n")
    tmp.replace(path)


if __name__ == "__main__":  # pragma: no cover
    main()
