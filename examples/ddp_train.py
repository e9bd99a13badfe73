"""Distributed data-parallel training with an enlightenment-period schedule.

Run on the CPU with two processes (gloo)::

    torchrun --nproc_per_node=2 examples/ddp_train.py

or on GPUs (nccl, one process per GPU)::

    torchrun --nproc_per_node=8 examples/ddp_train.py --epochs 30

The training loop is the usual one; ``enlighten()`` takes the rank and world
size from the process group, gives every rank a disjoint share of equal length,
and combines the per-sample losses and the accuracy across ranks once per
epoch, so every rank leaves out the same samples and ends the period together.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

import enlight_data as ed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--strategy", choices=["mixup-pause", "high-loss-removal"], default="mixup-pause")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)  # nccl: the table sync runs on this rank's GPU

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)

    if args.strategy == "mixup-pause":
        # Mixup Pause (v2): no Mixup until training accuracy reaches 50%, Mixup(0.4) after it.
        # The accuracy is the global one, so the period ends on every rank at the same epoch.
        schedule = ed.mixup_pause(ed.Period(until_accuracy=0.5, max_epochs=max(1, args.epochs // 2)), alpha=0.4)
    else:
        # High-Loss Removal: leave out the 10% highest-loss samples during the first third of the run,
        # ranked in the loss table all ranks share.
        schedule = ed.high_loss_removal(max(1, args.epochs // 3), fraction=0.1)
    loader = ed.enlighten(loader, schedule, num_classes=10, device=device, seed=0)

    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = loader.track(nn.CrossEntropyLoss())

    for epoch in range(args.epochs):
        model.train()
        for inputs, targets in loader:  # the unchanged loop
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(inputs), targets)
            loss.backward()
            optimizer.step()
        if rank == 0:
            h = loader.history[-1]
            print(
                f"epoch {h['epoch']:2d}  in_period={str(h['in_period']):5}  mixup_alpha={h['mixup_alpha']:.1f}  "
                f"removed={h['removed']:3d}  "
                f"batches/rank={h['batches']}  accuracy={h['accuracy']:.3f}  mean_loss={h['mean_loss']:.3f}",
                flush=True,
            )
    # DDP's reducer holds gloo work: released before the process group, torch 2.14 does not abort at exit
    # ("terminate called without an active exception", about one run in four otherwise).
    del model, optimizer, criterion
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
