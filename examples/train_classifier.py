"""Train an image classifier with an enlightenment-period schedule, checkpointing every epoch.

On the CPU or one GPU::

    python examples/train_classifier.py --strategy mixup-pause --epochs 20
    python examples/train_classifier.py --data fashion-mnist --strategy alpha-boost --epochs 20
    python examples/train_classifier.py --epochs 30 --resume          # continue from the checkpoint

The loop is the usual one. Three lines differ from a plain script: ``enlighten()`` wraps the
DataLoader, ``loader.track()`` wraps the loss, and the checkpoint holds ``loader.state_dict()``
beside the model's and the optimizer's. Resuming from the checkpoint continues with the same
batches, the same Mixup draws, the same augmentation and the same period as a run that never
stopped (``--resume`` with more ``--epochs`` extends a run).

Data: scikit-learn's bundled digits (``--data digits``, 8×8), or Fashion-MNIST (``--data
fashion-mnist``, 28×28) from Debian's ``dataset-fashion-mnist`` package. Batches are augmented
on their device by ``ed.GpuAugment`` (crop, flip and brightness/contrast), before Mixup.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import enlight_data as ed
from enlight_data.demo import load_digits_images

STRATEGIES = ("mixup-pause", "alpha-boost", "high-loss-removal", "mixup")


def load_data(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: uint8 ``(N, 1, H, W)`` images and int64 labels."""
    if name == "digits":
        data = load_digits_images()
        return (data.images * 255).round().to(torch.uint8), data.labels
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from benchmarks.idx import FASHION_MNIST_DIR, INSTALL_HINT, fashion_mnist_available, read_idx

    if not fashion_mnist_available():
        raise SystemExit(f"Fashion-MNIST is not installed under {FASHION_MNIST_DIR}: {INSTALL_HINT}")
    images = read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").unsqueeze(1)
    labels = read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz").long()
    return images, labels


def make_schedule(strategy: str, period: int) -> ed.Schedule:
    """The schedule for ``strategy``, with a period of ``period`` epochs."""
    if strategy == "mixup-pause":
        return ed.mixup_pause(period, alpha=0.4)
    if strategy == "alpha-boost":
        return ed.alpha_boost(period, alpha=0.2, boost_alpha=1.0)
    if strategy == "high-loss-removal":
        return ed.high_loss_removal(period, fraction=0.1)
    return ed.Schedule(period, during=ed.Phase(mixup_alpha=0.4), after=ed.Phase(mixup_alpha=0.4))


def make_model(channels: int, num_classes: int) -> nn.Module:
    """A small CNN for 8×8 to 32×32 images."""
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train; returns the model, the loader's history and the last epoch's mean loss."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["digits", "fashion-mnist"], default="digits")
    parser.add_argument("--strategy", choices=STRATEGIES, default="mixup-pause")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--period", type=int, default=3, help="epochs in the enlightenment period")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default="checkpoint.pt")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images, labels = load_data(args.data)
    num_classes = int(labels.max()) + 1
    size = images.shape[-1]
    train = DataLoader(TensorDataset(images, labels), batch_size=args.batch_size, shuffle=True,
                       num_workers=args.workers, drop_last=True)

    # The three lines that differ from a plain training script.
    augment = ed.GpuAugment(size, scale=(0.5, 1.0), flip=0.0, brightness=0.2, contrast=0.2,
                            mean=(0.5,), std=(0.25,))
    loader = ed.enlighten(train, make_schedule(args.strategy, args.period), num_classes=num_classes,
                          device=device, seed=args.seed, augment=augment)
    criterion = loader.track(nn.CrossEntropyLoss())

    torch.manual_seed(args.seed)  # the model's initialisation (the loader never reads the global RNG)
    model = make_model(images.shape[1], num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True)
    start = 0
    if args.resume:
        checkpoint = torch.load(args.checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        start = checkpoint["epoch"] + 1
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    for epoch in range(start, args.epochs):  # the loop itself is unchanged
        model.train()
        total, steps = torch.zeros((), device=device), 0
        for x, y in loader:
            with autocast:
                loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()  # no host sync per step
            steps += 1
        mean_loss = (total / steps).item()
        torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "loader": loader.state_dict()}, args.checkpoint)
        if not args.quiet:
            phase = "period" if loader.in_period else "after"
            print(f"epoch {epoch:3d}  {phase:6s}  mixup α {loader.phase.mixup_alpha:.2f}  "
                  f"removed {loader.history[-1]['removed']:4d}  loss {mean_loss:.4f}")
    return {"model": model, "history": loader.history, "loader": loader}


if __name__ == "__main__":
    main()
