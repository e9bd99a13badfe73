"""A one-minute demonstration on real data: ``python -m enlight_data demo``.

It trains a small ResNet-style CNN on scikit-learn's bundled ``load_digits()``
images (1797 8×8 hand-written digits, available offline) three ways — Mixup
throughout (the baseline), Mixup Pause and High-Loss Removal — logs each epoch's
phase, and prints the test accuracy of each strategy.

The reusable pieces (:func:`load_digits_images`, :func:`stratified_split`,
:func:`standardize`, :class:`SmallResNet`, :func:`train_and_evaluate`) are also
used by ``benchmarks/reproduce.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import enlight_data as ed
from enlight_data.schedule import _MAX_ALPHA, _MIN_ALPHA

__all__ = [
    "ImageSet",
    "SmallResNet",
    "TrainResult",
    "evaluate",
    "load_digits_images",
    "load_digits_tensors",
    "main",
    "standardize",
    "stratified_split",
    "torch_threads",
    "train_and_evaluate",
]


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ImageSet:
    """Images and integer labels held as tensors.

    Attributes:
        images: ``(N, C, H, W)`` float32 images.
        labels: ``(N,)`` int64 class indices.
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.images, Tensor) or self.images.ndim != 4:
            raise TypeError(f"images should be a (N, C, H, W) tensor, got {type(self.images).__name__} "
                            f"of shape {tuple(getattr(self.images, 'shape', ()))}")
        if not isinstance(self.labels, Tensor) or self.labels.ndim != 1:
            raise TypeError(f"labels should be a (N,) tensor, got {type(self.labels).__name__} "
                            f"of shape {tuple(getattr(self.labels, 'shape', ()))}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"images and labels should have the same length, got {len(self.images)} "
                             f"images and {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> "ImageSet":
        """The samples at ``index`` (a 1-D int64 tensor)."""
        return ImageSet(self.images[index], self.labels[index])


def load_digits_images() -> ImageSet:
    """All 1797 scikit-learn digits as ``(N, 1, 8, 8)`` float32 images in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return ImageSet(images, labels)


def stratified_split(labels: Tensor, *, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split sample indices class by class into a kept part and a held-out part.

    Each class gives ``round(fraction * n_class)`` of its samples to the held-out part,
    chosen by ``generator``; the split is a pure function of the labels and the
    generator's seed.

    Args:
        labels: ``(N,)`` integer class labels.
        fraction: Share of each class that is held out, in (0, 1).
        generator: The only source of randomness.

    Returns:
        ``(kept, held_out)``: sorted int64 index tensors.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator should be a torch.Generator, got {type(generator).__name__}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction should be in (0, 1), got fraction={fraction!r}")
    labels = torch.as_tensor(labels)
    kept: list[Tensor] = []
    held: list[Tensor] = []
    for cls in torch.unique(labels):  # sorted, so the order of draws is fixed
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_held = int(round(fraction * len(idx)))
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return torch.sort(torch.cat(kept)).values, torch.sort(torch.cat(held)).values


def standardize(train: ImageSet, *others: ImageSet) -> tuple[ImageSet, ...]:
    """Scale every set by the per-channel mean and std of ``train`` (never of the others)."""
    mean = train.images.mean(dim=(0, 2, 3), keepdim=True)
    std = train.images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return tuple(ImageSet((s.images - mean) / std, s.labels) for s in (train, *others))


def load_digits_tensors(*, seed: int = 0, test_fraction: float = 0.25) -> tuple[ImageSet, ImageSet]:
    """The digits as a standardized, stratified ``(train, test)`` pair.

    Args:
        seed: Seeds the split (through an explicit ``torch.Generator``).
        test_fraction: Share of each class put in the test set.
    """
    data = load_digits_images()
    train_idx, test_idx = stratified_split(
        data.labels, fraction=test_fraction, generator=torch.Generator().manual_seed(seed)
    )
    train, test = standardize(data.subset(train_idx), data.subset(test_idx))
    return train, test


# --------------------------------------------------------------------------- model
class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet with 3×3 basic blocks, sized for small images.

    A 3×3 stem, then one stage per entry of ``widths`` (each stage after the first
    halves the resolution), global average pooling and a linear classifier.
    ``widths=(64, 128, 256, 512), blocks=2`` is the CIFAR-style ResNet-18.

    Args:
        in_channels: Channels of the input images.
        num_classes: Number of output logits.
        widths: Channels of each stage.
        blocks: Basic blocks per stage.
        stem_stride: Stride of the stem convolution (2 halves large inputs early).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: Sequence[int] = (16, 32),
        blocks: int = 1,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths should be a non-empty sequence of positive ints, got widths={widths!r}")
        if blocks < 1:
            raise ValueError(f"blocks should be >= 1, got blocks={blocks!r}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride should be 1 or 2, got stem_stride={stem_stride!r}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        cin = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlock(cin, width, stride))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What one :func:`train_and_evaluate` run produced.

    Attributes:
        test_accuracy: Accuracy on ``test`` after the last epoch.
        history: One dict per epoch: the loader's ``history`` entry plus
            ``eval_accuracy`` (accuracy on ``test`` after that epoch) and ``lr``.
        period_end_epoch: Number of epochs spent in the enlightenment period.
        seconds: Wall-clock time of the epochs (training and evaluation, not the setup).
    """

    test_accuracy: float
    history: list[dict[str, Any]] = field(default_factory=list)
    period_end_epoch: int = 0
    seconds: float = 0.0


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, *, device: torch.device | str = "cpu",
             batch_size: int = 1024, transform: Callable[[Tensor], Tensor] | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (the model is left in eval mode)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(data), batch_size):
        x = data.images[start:start + batch_size].to(device, non_blocking=True)
        y = data.labels[start:start + batch_size].to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        correct += (model(x).argmax(1) == y).sum()
    return int(correct) / max(1, len(data))


def _cosine(peak: float, progress: float, total: float) -> float:
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(progress, total) / total))


def _default_model(train: ImageSet, num_classes: int) -> nn.Module:
    return SmallResNet(train.images.shape[1], num_classes)


def train_and_evaluate(
    schedule: ed.Schedule,
    *,
    train: ImageSet,
    test: ImageSet,
    num_classes: int,
    epochs: int,
    seed: int,
    model_fn: Callable[[], nn.Module] | None = None,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    device: torch.device | str = "cpu",
    augment: Callable[[Tensor], Tensor] | None = None,
    eval_transform: Callable[[Tensor], Tensor] | None = None,
    amp: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a fresh model under ``schedule`` and measure it on ``test``.

    SGD with Nesterov momentum and a cosine learning rate updated every step; the model
    is built inside ``torch.random.fork_rng()`` after ``torch.manual_seed(seed)``,
    the data order and mixing come from ``ed.enlighten(..., seed=seed)``: on a
    given device and thread count, the run is a pure function of its arguments.

    Args:
        schedule: The enlightenment schedule (a baseline is a schedule whose two
            phases are equal).
        train: Training images and labels (already normalized).
        test: Images to measure after every epoch (a validation split while tuning).
        num_classes: Number of classes.
        epochs: Number of training epochs.
        seed: Seeds the model init, the data order and the mixing.
        model_fn: Builds the model; a :class:`SmallResNet` for ``train`` by default.
        batch_size: Training batch size (the last, partial batch is dropped).
        lr: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        device: Where the model trains.
        augment: Batch augmentation passed to ``ed.enlighten(augment=...)``.
        eval_transform: Applied to evaluation batches (e.g. padding), on ``device``.
        amp: Train and evaluate under bfloat16 autocast.
        on_epoch: Called with each epoch's history entry as soon as it is complete.

    Returns:
        A :class:`TrainResult`.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs should be a positive int, got epochs={epochs!r}")
    if batch_size < 2 or batch_size > len(train):
        raise ValueError(f"batch_size should be in [2, {len(train)}], got batch_size={batch_size!r}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_fn() if model_fn is not None else _default_model(train, num_classes)
    model = model.to(device)
    if amp and device.type == "cuda":
        # torch 2.11's stubs lack Module.to(memory_format=...)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    dataset = torch.utils.data.TensorDataset(train.images, train.labels)
    base = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
    )
    kwargs: dict[str, Any] = {"num_classes": num_classes, "device": device, "seed": seed}
    if augment is not None:
        kwargs["augment"] = augment
    loader = ed.enlighten(base, schedule, **kwargs)
    criterion = loader.track(nn.CrossEntropyLoss())

    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, momentum=momentum, nesterov=True,
    )
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    )

    history: list[dict[str, Any]] = []
    start = time.perf_counter()  # after the setup, whose first call imports much of torch
    for epoch in range(epochs):
        model.train()
        batches = iter(loader)
        # NOTE [ Cosine by epoch progress ]
        # High-Loss Removal shortens the epochs of the period, so the learning rate
        # follows the fraction of each epoch done, not a global step count.
        n_batches = max(1, len(loader))
        lr_now = _cosine(lr, epoch, epochs)
        for step, (x, y) in enumerate(batches):
            for group in opt.param_groups:
                group["lr"] = _cosine(lr, epoch + step / n_batches, epochs)
            with autocast:
                loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with autocast:
            eval_acc = evaluate(model, test, device=device, transform=eval_transform)
        entry = dict(loader.history[-1])
        entry["eval_accuracy"] = eval_acc
        entry["lr"] = lr_now
        history.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
    return TrainResult(
        test_accuracy=history[-1]["eval_accuracy"],
        history=history,
        period_end_epoch=sum(1 for h in history if h["in_period"]),
        seconds=time.perf_counter() - start,
    )


@contextlib.contextmanager
def torch_threads(threads: int = 1) -> Iterator[int]:
    """Use ``threads`` intra-op threads inside the block, then restore the previous number.

    Note:
        One thread is the default: these small models gain little from a second
        one, and OpenMP threads that spin while another process holds the other
        core slow training down many times over.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads should be an int >= 1, got threads={threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- command line
#: High-Loss Removal's shortest useful period: its first epoch records every sample's loss, removal starts at epoch 1.
_HLR_MIN_PERIOD = 2


def _hlr_period(period: int) -> int:
    """The period High-Loss Removal runs with: ``period``, raised to :data:`_HLR_MIN_PERIOD` epochs."""
    return max(_HLR_MIN_PERIOD, period)


def _strategies(epochs: int, period: int, alpha: float, fraction: float) -> list[tuple[str, ed.Schedule]]:
    return [
        ("Mixup throughout", ed.Schedule(0, during=ed.Phase(mixup_alpha=alpha), after=ed.Phase(mixup_alpha=alpha))),
        ("Mixup Pause", ed.mixup_pause(period, alpha=alpha)),
        ("High-Loss Removal", ed.high_loss_removal(_hlr_period(period), fraction=fraction)),
    ]


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a small CNN on scikit-learn's digits with Mixup throughout, Mixup Pause "
                    "and High-Loss Removal, and compare their test accuracy.",
    )
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 30, 3 with --quick)")
    p.add_argument("--period", type=int, default=None,
                   help="enlightenment period in epochs, >= 1 (default: a tenth of --epochs, at least 1); "
                        f"High-Loss Removal runs at least {_HLR_MIN_PERIOD} epochs, since its first epoch only "
                        "records the losses it ranks")
    p.add_argument("--alpha", type=float, default=0.4, help="Mixup alpha, >= 0 (default 0.4)")
    p.add_argument("--fraction", type=float, default=0.1,
                   help="share of highest-loss samples High-Loss Removal leaves out, in [0, 1) (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the model init and the loader (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--quick", action="store_true", help="a few seconds: 3 epochs, a narrower model")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None, *, prog: str = "python -m enlight_data demo") -> int:
    """Run the demo; returns the process exit status.

    Args:
        argv: Command-line arguments (without the program name); ``sys.argv[1:]`` when ``None``.
        prog: The command's name in usage and error lines.
    """
    from tqdm.auto import tqdm

    parser = _parser(prog)
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 30)
    problems = [f"{name} should be >= 1, got {value}"
                for name, value in (("--epochs", epochs), ("--threads", args.threads), ("--period", args.period))
                if value is not None and value < 1]
    if not (args.alpha == 0 or _MIN_ALPHA <= args.alpha <= _MAX_ALPHA):  # NaN and inf fail too
        problems.append(f"--alpha should be 0 or in [{_MIN_ALPHA:g}, {_MAX_ALPHA:g}], got {args.alpha}")
    if not 0 <= args.seed < 2**64:
        problems.append(f"--seed should be in [0, 2**64), got {args.seed}")
    if not 0 <= args.fraction < 1:
        problems.append(f"--fraction should be in [0, 1), got {args.fraction}")
    if problems:
        parser.print_usage(sys.stderr)
        for problem in problems:
            print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        return 2
    period = args.period if args.period is not None else max(1, epochs // 10)
    hlr_period = _hlr_period(period)
    widths = (16, 32) if args.quick else (32, 64)

    train, test = load_digits_tensors(seed=args.seed)
    strategies = _strategies(epochs, period, args.alpha, args.fraction)
    hlr_note = ""
    hlr_longer = hlr_period != period and epochs > period  # else every strategy's period is the whole run
    if hlr_longer:
        hlr_note = f" (High-Loss Removal: {hlr_period}, its {_HLR_MIN_PERIOD}-epoch minimum)"
    print(f"digits: {len(train)} train / {len(test)} test images, 8x8, 10 classes; {epochs} epochs, "
          f"period {period} epoch(s){hlr_note}, Mixup alpha {args.alpha}, seed {args.seed}")

    results: list[tuple[str, TrainResult]] = []
    with torch_threads(args.threads):
        for name, schedule in strategies:
            bar = tqdm(total=epochs, desc=f"{name:<18}", unit="ep", leave=False, disable=args.no_progress,
                       file=sys.stderr)

            def log(h: dict[str, Any], name: str = name, bar: Any = bar) -> None:
                phase = "in period" if h["in_period"] else "after    "
                bar.write(f"[{name}] epoch {h['epoch']:>3} | {phase} | alpha {h['mixup_alpha']:.2f} | "
                          f"removed {int(h['removed']):>4} | train acc {h['accuracy']:.3f} | "
                          f"test acc {h['eval_accuracy']:.3f}", file=sys.stdout)
                bar.set_postfix(train=f"{h['accuracy']:.3f}", test=f"{h['eval_accuracy']:.3f}")
                bar.update(1)

            result = train_and_evaluate(
                schedule, train=train, test=test, num_classes=10, epochs=epochs, seed=args.seed,
                model_fn=lambda: SmallResNet(1, 10, widths=widths), on_epoch=log,
            )
            bar.close()
            results.append((name, result))

    print()
    print(f"{'strategy':<20} {'test accuracy':>13} {'period':>8} {'removed':>8} {'time':>7}")
    print(f"{'-' * 20} {'-' * 13} {'-' * 8} {'-' * 8} {'-' * 7}")
    for name, r in results:
        removed = sum(int(h["removed"]) for h in r.history)
        print(f"{name:<20} {r.test_accuracy:>13.4f} {r.period_end_epoch:>5} ep {removed:>8} {r.seconds:>6.1f}s")
    print("removed: samples left out, summed over the epochs (one left out in two epochs counts twice). High-Loss "
          "Removal runs without Mixup, as the paper uses it where Mixup does not apply: its row measures removal "
          "and no Mixup together.")
    if hlr_longer:
        print(f"High-Loss Removal ran a {hlr_period}-epoch period, not {period}: its first epoch records every "
              f"sample's loss and removal starts at epoch 1, so a period under {_HLR_MIN_PERIOD} epochs "
              "removes nothing.")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
