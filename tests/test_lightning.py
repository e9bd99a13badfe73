"""The loader under PyTorch Lightning's fit loop (README "PyTorch Lightning").

Lightning is not a dependency: these tests run where it is installed (they passed with Lightning 2.6.6) and skip
elsewhere. What they pin down: Lightning's epoch n is the schedule's epoch n (its fit loop makes an iterator it
drops unused, then calls ``loader.sampler.set_epoch(n)`` after ``iter()``), each step records against the batch
it trains on, a run resumed from a mid-epoch or an end-of-epoch checkpoint takes the same batches and removal
sets as an uninterrupted one (with the README's two settings), and two DDP ranks (the loader made in setup())
read their own shares and leave out the same samples.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import enlight_data as ed

L = pytest.importorskip("lightning")
ModelCheckpoint = pytest.importorskip("lightning.pytorch.callbacks").ModelCheckpoint

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:lightning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)


def _loader() -> ed.EnlightLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    x[:, 1] = torch.arange(64).float()  # each sample's id, read back in the step
    y = (x[:, 0] > 0).long()
    return ed.enlighten(DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True),
                        ed.high_loss_removal(3, fraction=0.25), seed=0)


class _Module(L.LightningModule):
    def __init__(self, loader: ed.EnlightLoader, steps: list, *, restore: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(8, 2)
        self.loader, self.steps, self.restore = loader, steps, restore
        self.criterion = loader.track(nn.CrossEntropyLoss())

    def training_step(self, batch, batch_idx):
        x, y = batch
        ids = x[:, 1].long().tolist()
        assert self.loader._batch is not None and self.loader._batch[0].tolist() == ids  # recorded against it
        self.steps.append((self.current_epoch, tuple(ids)))
        return self.criterion(self.net(x), y)

    def on_load_checkpoint(self, checkpoint):
        # Lightning restores a loader's state from mid-epoch checkpoints only; the loss table outlives epochs.
        if self.restore:
            self.loader.load_state_dict(checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(root: Path, **kwargs) -> "L.Trainer":
    return L.Trainer(accelerator="cpu", logger=False, default_root_dir=root, enable_progress_bar=False,
                     enable_model_summary=False, reload_dataloaders_every_n_epochs=1, **kwargs)


def _fit(root: Path, loader: ed.EnlightLoader, steps: list, *, restore: bool = True, ckpt_path=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's own advice (workers, logging)
        _trainer(root, **kwargs).fit(_Module(loader, steps, restore=restore), loader, ckpt_path=ckpt_path)


def _epochs(loader: ed.EnlightLoader) -> list[tuple[int, int]]:
    return [(h["epoch"], h["removed"]) for h in loader.history]


def test_lightning_epochs_are_the_schedules(tmp_path):
    loader, steps = _loader(), []
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no epoch left early, none used up by Lightning's probe
        warnings.filterwarnings("ignore", module="lightning")
        _fit(tmp_path, loader, steps, max_epochs=4, enable_checkpointing=False)
    # Removal from epoch 1 to the end of the 3-epoch period; the last epoch stays open after fit (its stats None).
    assert _epochs(loader) == [(0, 0), (1, 16), (2, 16), (3, 0)]
    assert [h["batches"] for h in loader.history] == [4, 3, 3, None]
    assert [e for e, _ in steps] == [0] * 4 + [1] * 3 + [2] * 3 + [3] * 4
    removed = set(loader.removed_indices().tolist())
    assert not removed  # after the period


@pytest.mark.parametrize("where, restore", [("end of an epoch", True), ("mid-epoch", True), ("mid-epoch", False)])
def test_a_resumed_lightning_run_takes_the_same_batches(tmp_path, where, restore):
    whole, steps = _loader(), []
    _fit(tmp_path / "whole", whole, steps, max_epochs=5, enable_checkpointing=False)
    expected = list(steps)
    steps.clear()
    first = _loader()
    if where == "mid-epoch":  # 4 batches in epoch 0, then 3 (removal): step 6 is the second of epoch 1
        _fit(tmp_path / "a", first, steps, max_steps=6,
             callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=6, save_top_k=-1)])
    else:
        _fit(tmp_path / "a", first, steps, max_epochs=2, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck")])
    (checkpoint,) = (tmp_path / "ck").glob("*.ckpt")
    resumed = _loader()
    _fit(tmp_path / "b", resumed, steps, max_epochs=5, ckpt_path=checkpoint, restore=restore)
    assert steps == expected
    assert _epochs(resumed) == _epochs(whole) == [(0, 0), (1, 16), (2, 16), (3, 0), (4, 0)]


class _DDPModule(L.LightningModule):
    """The README's recipe for several processes: the loader made in setup(), once the process group is up."""

    def __init__(self, out: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(8, 2)
        self.out = out

    def setup(self, stage):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 8, generator=g)
        x[:, 1] = torch.arange(64).float()
        data = TensorDataset(x, (x[:, 0] > 0).long())
        self.loader = ed.enlighten(DataLoader(data, batch_size=8, shuffle=True),
                                   ed.high_loss_removal(3, fraction=0.25), seed=0)
        self.criterion = self.loader.track(nn.CrossEntropyLoss())
        self.ids: list[int] = []

    def train_dataloader(self):
        return self.loader

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.ids += x[:, 1].long().tolist()
        return self.criterion(self.net(x), y)

    def on_train_end(self):
        torch.save({"history": self.loader.history, "ids": self.ids, "removed": self.loader.removed_indices()},
                   Path(self.out, f"rank{self.global_rank}.pt"))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow  # spawns two processes
def test_two_lightning_ranks_read_their_shares_and_remove_alike(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(tmp_path, max_epochs=3, devices=2, strategy="ddp_spawn", enable_checkpointing=False).fit(
            _DDPModule(str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for r in ranks:
        assert [(h["epoch"], h["removed"], h["seen"]) for h in r["history"]] == [(0, 0, 32), (1, 16, 24),
                                                                                (2, 16, None)]
    # Epoch 0: the two shares are disjoint and cover the data. Epoch 2 leaves out the same 16 samples on both
    # ranks (chosen from the combined losses), and neither rank reads them.
    assert sorted(ranks[0]["ids"][:32] + ranks[1]["ids"][:32]) == list(range(64))
    removed = ranks[0]["removed"].tolist()
    assert len(removed) == 16 and ranks[1]["removed"].tolist() == removed
    assert not set(removed) & set(ranks[0]["ids"][-24:] + ranks[1]["ids"][-24:])
