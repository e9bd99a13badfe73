"""High-Loss Removal on a sequence task with padding and noisy labels, where Mixup does not apply.

Run on the CPU (about two minutes on two cores)::

    python examples/noisy_sequences.py
    python examples/noisy_sequences.py --noise 0.3 --fraction 0.2 --period 6

The task tags every token of variable-length sequences (padded, the padding's target is
``ignore_index=-100``). A share of the training sequences (``--noise``) has random tags. During
the period, High-Loss Removal leaves out the sequences with the highest loss (a sequence's loss is
the mean over its real tokens; the padding does not count), and ``loader.removed_indices()`` shows
which: the script prints how many of them carry noisy tags, against the share of noisy sequences in
the whole set. After the period every sequence is back.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import enlight_data as ed

VOCAB, TAGS, PAD = 64, 6, -100


def make_sequences(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tokens, tags, noisy)``: ``(n, 32)`` token ids (0 pads), their tags (``-100`` pads), noisy rows."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (n, 32), generator=g)
    tags = (tokens + torch.roll(tokens, 1, dims=1)) % TAGS  # a tag depends on the token and the one before it
    noisy = torch.rand(n, generator=g) < noise
    tags[noisy] = torch.randint(0, TAGS, (int(noisy.sum()), 32), generator=g)
    lengths = torch.randint(8, 33, (n,), generator=g)
    padding = torch.arange(32) >= lengths[:, None]
    return tokens.masked_fill(padding, 0), tags.masked_fill(padding, PAD), noisy


class Tagger(nn.Module):
    """Embedding, a causal convolution over two tokens, and a per-token classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 64, padding_idx=0)
        self.mix = nn.Conv1d(64, 128, kernel_size=2, padding=1)
        self.head = nn.Conv1d(128, TAGS, kernel_size=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens).transpose(1, 2)  # (B, 64, T)
        h = torch.relu(self.mix(h)[..., : tokens.shape[1]])
        return self.head(h)  # (B, TAGS, T): CrossEntropyLoss's layout for sequences


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train; returns the history and, per epoch, the removed sequences and how many of them are noisy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=4000)
    parser.add_argument("--noise", type=float, default=0.2, help="share of sequences with random tags")
    parser.add_argument("--fraction", type=float, default=0.2, help="share of sequences left out in the period")
    parser.add_argument("--period", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    tokens, tags, noisy = make_sequences(args.sequences, args.noise, args.seed)
    train = DataLoader(TensorDataset(tokens, tags), batch_size=64, shuffle=True)
    loader = ed.enlighten(train, ed.high_loss_removal(args.period, fraction=args.fraction), seed=args.seed)
    criterion = loader.track(nn.CrossEntropyLoss())  # ignore_index=-100: padding counts nowhere

    torch.manual_seed(args.seed)  # the model's initialisation
    model = Tagger()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    noisy_removed = []
    for epoch in range(args.epochs):  # the unchanged loop
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        removed = loader.removed_indices()
        noisy_removed.append(int(noisy[removed].sum()))
        if not args.quiet:
            h = loader.history[-1]
            share = f"{noisy_removed[-1] / len(removed):6.1%} noisy" if len(removed) else "      -     "
            print(f"epoch {epoch:2d}  {'period' if h['in_period'] else 'after ':6s}  removed {h['removed']:4d}  "
                  f"({share}; {noisy.float().mean():.0%} of all)  accuracy {h['accuracy']:.3f}  "
                  f"loss {h['mean_loss']:.3f}")
    return {"history": loader.history, "noisy_removed": noisy_removed, "noisy": noisy}


if __name__ == "__main__":
    main()
