"""End-to-end behaviour of enlighten(): an unchanged training loop, epoch by epoch."""

import collections
import io
import re
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

import enlight_data as ed
from helpers import Counting, Images, ids_of, one_ahead


def model_for(classes=4, features=192, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))


def run_epochs(loader, epochs, classes=4, features=192):
    """The README quickstart loop, unchanged."""
    model = model_for(classes, features)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    criterion = loader.track(nn.CrossEntropyLoss())
    for _ in range(epochs):
        for x, y in loader:
            loss = criterion(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return loader.history


@pytest.mark.parametrize(
    "schedule",
    [ed.mixup_pause(2, alpha=0.8), ed.alpha_boost(2, alpha=0.2, boost_alpha=1.0), ed.high_loss_removal(2, fraction=0.1)],
)
def test_quickstart_loop_runs_all_presets(schedule):
    train_loader = DataLoader(Images(64), batch_size=16, shuffle=True)
    loader = ed.enlighten(train_loader, schedule, num_classes=4, device="cpu")
    history = run_epochs(loader, 4)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert [h["in_period"] for h in history] == [True, True, False, False]
    for h in history:
        assert {"epoch", "in_period", "mixup_alpha", "cutmix_alpha", "removed", "seen", "accuracy", "mean_loss"} <= set(h)
        assert 0.0 <= h["accuracy"] <= 1.0 and h["mean_loss"] > 0
    assert history[0]["mixup_alpha"] == schedule.during.mixup_alpha
    assert history[3]["mixup_alpha"] == schedule.after.mixup_alpha
    assert loader.epoch == 3 and not loader.in_period and loader.phase == schedule.after


def test_history_records_the_phase_in_force_in_each_epoch():
    during = ed.Phase(cutmix_alpha=0.5, mix_prob=0.5, drop_high_loss=0.1, label_smoothing=0.1)
    after = ed.Phase(mixup_alpha=0.2, label_smoothing=0.05)
    loader = ed.enlighten(DataLoader(Images(16), batch_size=8), ed.Schedule(1, during=during, after=after),
                          num_classes=4)
    for _ in range(2):
        list(loader)
    fields = ("mixup_alpha", "cutmix_alpha", "drop_high_loss", "label_smoothing", "augment_strength")
    for entry, phase in zip(loader.history, (during, after)):
        assert {name: entry[name] for name in fields} == {name: getattr(phase, name) for name in fields}
    assert [h["in_period"] for h in loader.history] == [True, False]


def test_epoch_clock_set_epoch_and_len():
    loader = ed.enlighten(DataLoader(Images(40), batch_size=16), ed.mixup_pause(1, alpha=1.0), num_classes=4)
    assert loader.epoch == -1 and len(loader) == 3 and loader.in_period
    list(loader)
    assert loader.epoch == 0 and loader.in_period  # still the most recently started epoch
    loader.set_epoch(5)
    list(loader)
    assert loader.epoch == 5 and not loader.in_period
    list(loader)
    assert [h["epoch"] for h in loader.history] == [0, 5, 6]
    drop = ed.enlighten(DataLoader(Images(40), batch_size=16, drop_last=True), ed.mixup_pause(1, alpha=1.0), num_classes=4)
    assert len(drop) == 2 and len(list(drop)) == 2
    with pytest.raises(ValueError, match="epoch should be >= 0"):
        loader.set_epoch(-1)
    # The clock holds int64 epochs, the next one included: an epoch past 2**62 is refused where it is given.
    loader.set_epoch(2**62)
    list(loader)
    assert loader.history[-1]["epoch"] == 2**62
    with pytest.raises(ValueError, match=r"^epoch should be <= 4611686018427387904, got epoch=4611686018427387905$"):
        loader.set_epoch(2**62 + 1)
    state = loader.state_dict()
    state["next_epoch"] = 2**63
    with pytest.raises(ValueError, match=r"^state\['next_epoch'\] should be <= 4611686018427387904, got"):
        loader.load_state_dict(state)


def test_shuffle_is_pure_function_of_seed_and_epoch():
    def order(seed, epochs=2, workers=0):
        dl = DataLoader(Images(30), batch_size=8, shuffle=True, num_workers=workers)
        loader = ed.enlighten(dl, ed.Schedule(1), seed=seed)
        return [[i for x, _ in loader for i in ids_of(x)] for _ in range(epochs)]

    a, b = order(1), order(1)
    assert a == b and a[0] != a[1] and sorted(a[0]) == list(range(30))
    assert order(2) != a
    assert order(1, workers=2) == a


def test_shuffle_false_keeps_sequential_order():
    loader = ed.enlighten(DataLoader(Images(20), batch_size=6), ed.high_loss_removal(1, fraction=0.1))
    assert [i for x, _ in loader for i in ids_of(x)] == list(range(20))


def test_custom_sampler_keeps_its_distribution():
    weights = torch.tensor([1.0] * 5 + [0.0] * 15)
    dl = DataLoader(Images(20), batch_size=10, sampler=WeightedRandomSampler(weights, 50))
    loader = ed.enlighten(dl, ed.high_loss_removal(1, fraction=0.1))
    drawn = [i for x, _ in loader for i in ids_of(x)]
    assert len(drawn) == 50 and set(drawn) <= set(range(5))


def test_rebuilt_loader_keeps_settings():
    def collate(items):
        xs, ys = zip(*items)
        return torch.stack(xs), torch.tensor(ys), "extra"

    dl = DataLoader(Images(20), batch_size=7, drop_last=True, collate_fn=collate, num_workers=2,
                    persistent_workers=True, prefetch_factor=3, timeout=30)
    loader = ed.enlighten(dl, ed.high_loss_removal(1, fraction=0.1))
    inner = loader._source.loader
    assert (inner.batch_size, inner.drop_last, inner.num_workers, inner.persistent_workers, inner.prefetch_factor,
            inner.timeout) == (7, True, 2, True, 3, 30)
    batches = list(loader)
    assert len(batches) == 2 and all(b[2] == "extra" and len(b) == 3 for b in batches)


def test_tuple_list_namedtuple_and_dict_batches_keep_structure():
    Pair = collections.namedtuple("Pair", "image label meta")

    class Structured(Dataset):
        def __init__(self, kind):
            self.kind = kind

        def __len__(self):
            return 12

        def __getitem__(self, i):
            x, y = Images(12)[i]
            if self.kind == "dict":
                return {"img": x, "lbl": y, "name": f"s{i}"}
            if self.kind == "namedtuple":
                return Pair(x, y, i)
            return [x, y, i]

    for kind in ("dict", "namedtuple", "list"):
        keys = {"input_key": "img", "target_key": "lbl"} if kind == "dict" else {}
        loader = ed.enlighten(DataLoader(Structured(kind), batch_size=4), ed.mixup_pause(0, alpha=1.0),
                              num_classes=4, **keys)
        for b in loader:
            if kind == "dict":
                assert set(b) == {"img", "lbl", "name"} and b["lbl"].shape == (4, 4) and b["name"][0].startswith("s")
            elif kind == "namedtuple":
                assert isinstance(b, Pair) and b.label.shape == (4, 4) and b.meta.shape == (4,)
            else:
                assert isinstance(b, list) and b[1].shape == (4, 4) and b[2].dtype == torch.int64
    with pytest.raises(ValueError, match="dict batches need input_key and target_key"):
        list(ed.enlighten(DataLoader(Structured("dict"), batch_size=4), ed.mixup_pause(0, alpha=1.0), num_classes=4))
    with pytest.raises(ValueError, match="target_key='y' is not a key of the batch"):
        list(ed.enlighten(DataLoader(Structured("dict"), batch_size=4), ed.mixup_pause(0, alpha=1.0), num_classes=4,
                          input_key="img", target_key="y"))


def test_input_key_and_target_key_are_positions_in_tuple_batches():
    # Samples of (label, features, id): the keys say where the input and the target are, as for dict batches.
    class LabelFirst(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return i % 4, torch.full((5,), float(i)), i

    def first(**keys):
        return next(iter(ed.enlighten(DataLoader(LabelFirst(), batch_size=4), ed.mixup_pause(0, alpha=1.0),
                                      num_classes=4, seed=3, **keys)))

    label, x, ids = first(input_key=1, target_key=0)
    assert label.shape == (4, 4) and torch.allclose(label.sum(1), torch.ones(4))  # soft targets where the label was
    assert x.shape == (4, 5) and ids.tolist() == [0, 1, 2, 3]
    assert not torch.equal(x, torch.arange(4.0)[:, None].expand(4, 5))  # the features were mixed, not the labels
    # The label's mixed share matches the features' mix: x[i] = lam_i * i + (1 - lam_i) * partner.
    own = label[torch.arange(4), torch.arange(4)]
    partner = (x[:, 0] - own * torch.arange(4.0)) / (1 - own).clamp_min(1e-6)
    assert torch.all((own > 0.999) | (torch.abs(partner - partner.round()) < 1e-3))
    assert torch.equal(first(input_key=-2, target_key=-3)[0], label)  # negative positions count from the end
    with pytest.raises(ValueError, match=r"list batches with input_key=1 need target_key"):
        first(input_key=1)
    with pytest.raises(TypeError, match=r"input_key should be an int \(an item's position\) for list batches, got "
                                        r"input_key='x'"):
        first(input_key="x", target_key=0)
    with pytest.raises(ValueError, match=r"target_key should be a position in \[-3, 3\) .* got target_key=3 for a "
                                         r"list of 3 item"):
        first(input_key=1, target_key=3)
    with pytest.raises(ValueError, match=r"should name different items, got input_key=None \(item 0 by default\) "
                                         r"and target_key=0"):
        first(target_key=0)
    # Without mixing, only the input's position matters; the other items pass through untouched.
    loader = ed.enlighten(DataLoader(LabelFirst(), batch_size=4), ed.high_loss_removal(2, fraction=0.25),
                          input_key=1)
    label, x, _ = next(iter(loader))
    assert label.tolist() == [0, 1, 2, 3] and x.shape == (4, 5)


def test_a_loaded_state_reports_the_phase_its_last_epoch_ran_in():
    # Taken between epochs: the loaded loader describes the most recently started epoch, as the saved one did.
    def make():
        return ed.enlighten(DataLoader(Images(16), batch_size=8), ed.mixup_pause(1, alpha=1.0), num_classes=4)

    ref = make()
    for epochs in (1, 2):
        list(ref)
        loaded = make()
        loaded.load_state_dict(ref.state_dict())
        assert loaded.epoch == ref.epoch == epochs - 1
        assert loaded.in_period == ref.in_period == (epochs == 1)
        assert loaded.phase == ref.phase


def test_a_loaded_state_keeps_the_phase_of_the_epoch_that_ended_an_accuracy_period():
    # Epoch 0 reaches the accuracy and ends the period (the latch), but it ran in the period: a loaded state says so
    # as the saved loader does, and the next epoch runs after the period.
    schedule = ed.Schedule(ed.Period(until_accuracy=0.5), during=ed.Phase(drop_high_loss=0.25))

    def make():
        return ed.enlighten(DataLoader(Images(16), batch_size=8), schedule)

    ref = make()
    for x, y in ref:
        ref.record(x.flatten(1).mean(1), output=F.one_hot(y, 4).float(), target=y)  # every prediction right
    assert ref.history[-1]["accuracy"] == 1.0 and ref.in_period and ref.phase == schedule.during
    loaded = make()
    loaded.load_state_dict(ref.state_dict())
    assert loaded.epoch == 0 and loaded.in_period and loaded.phase == schedule.during
    list(loaded)
    assert loaded.epoch == 1 and not loaded.in_period and loaded.history[-1]["in_period"] is False


def test_targets_soft_in_every_epoch_when_any_phase_mixes():
    loader = ed.enlighten(DataLoader(Images(16, classes=3), batch_size=8), ed.mixup_pause(1, alpha=1.0), num_classes=3)
    pause = list(loader)
    for x, y in pause:  # the pause: one-hot rows, inputs untouched
        assert y.dtype == torch.float32 and y.shape == (8, 3)
        assert torch.equal(y, F.one_hot(torch.tensor(ids_of(x)) % 3, 3).float())
    mixing = list(loader)
    assert any(not torch.equal(y, y.round()) for _, y in mixing)
    smooth = ed.enlighten(DataLoader(Images(16), batch_size=8), ed.Schedule(1, during=ed.Phase(label_smoothing=0.2), after=ed.Phase()),
                          num_classes=4)
    for _ in range(2):
        for _, y in smooth:  # smoothing only in the period; soft rows in both epochs
            assert y.shape == (8, 4)
    assert torch.allclose(y.max(1).values, torch.ones(8))


def test_schedule_without_mixing_leaves_targets_alone():
    loader = ed.enlighten(DataLoader(Images(16), batch_size=8), ed.high_loss_removal(1, fraction=0.1))
    for x, y in loader:
        assert y.dtype == torch.int64 and y.shape == (8,)
        assert y.tolist() == [i % 4 for i in ids_of(x)]


def test_track_returns_the_criterions_loss_and_records_per_sample():
    loader = ed.enlighten(DataLoader(Images(16), batch_size=8), ed.high_loss_removal(1, fraction=0.1))
    model = model_for()
    cases = [
        nn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(reduction="sum"),
        nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0, 4.0])),
        nn.CrossEntropyLoss(label_smoothing=0.1),
        F.cross_entropy,
    ]
    for crit in cases:
        tracked = loader.track(crit)
        for x, y in loader:
            out = model(x)
            torch.testing.assert_close(tracked(out, y), crit(out, y))
            per = F.cross_entropy(out, y, reduction="none")
        torch.testing.assert_close(loader.losses()[torch.tensor(ids_of(x))], per.detach() if crit is F.cross_entropy else loader.losses()[torch.tensor(ids_of(x))])
    losses = loader.losses()
    assert not torch.isnan(losses).any() and losses.dtype == torch.float32


def test_track_soft_targets_and_bce():
    mixing = ed.enlighten(DataLoader(Images(16), batch_size=8), ed.mixup_pause(0, alpha=1.0), num_classes=4)
    model = model_for()
    for crit in (nn.CrossEntropyLoss(), nn.BCEWithLogitsLoss()):
        tracked = mixing.track(crit)
        for x, y in mixing:
            out = model(x)
            torch.testing.assert_close(tracked(out, y), crit(out, y))
    assert mixing.history[-1]["seen"] == 16


def test_track_rejects_criterion_without_reduction():
    loader = ed.enlighten(DataLoader(Images(8), batch_size=8), ed.high_loss_removal(1, fraction=0.1))
    with pytest.raises(TypeError, match=r"loader.record\(per_sample_loss"):
        loader.track(lambda out, y: (out - y).pow(2).mean())


def test_record_checks_batch_size_and_needs_a_batch():
    loader = ed.enlighten(DataLoader(Images(8), batch_size=4), ed.high_loss_removal(1, fraction=0.1))
    with pytest.raises(RuntimeError, match="current batch"):
        loader.record(torch.zeros(4))
    crit = loader.track(nn.CrossEntropyLoss())
    for x, y in loader:
        with pytest.raises(ValueError, match=r"batch size 4 as its first dimension, got shape \(3,\)"):
            loader.record(torch.zeros(3))
        with pytest.raises(ValueError, match="batch size 4"):
            crit(torch.zeros(3, 4), y[:3])
        with pytest.raises(TypeError, match="per_sample_loss should be a Tensor"):
            loader.record([0.0] * 4)
        with pytest.raises(ValueError, match=r"per_sample_loss should hold at least one value per sample, got shape "
                                             r"\(4, 0\)"):
            loader.record(torch.zeros(4, 0))


def test_only_unmixed_losses_recorded_but_accuracy_counts_all():
    loader = ed.enlighten(DataLoader(Images(64), batch_size=16), ed.mixup_pause(1, alpha=1.0), num_classes=4)
    run_epochs(loader, 2)
    pause, mixing = loader.history
    assert pause["recorded"] == 64 and pause["seen"] == 64
    assert mixing["seen"] == 64 and mixing["recorded"] < 64


def test_accuracy_uses_argmax_of_output_and_target_rows():
    loader = ed.enlighten(DataLoader(Images(8), batch_size=8), ed.mixup_pause(1, alpha=1.0), num_classes=4)
    for x, y in loader:
        out = y.clone()
        out[:2] = out[:2].roll(1, dims=1)  # two wrong predictions
        loader.record(torch.ones(8), output=out, target=y)
    assert loader.history[-1]["accuracy"] == 6 / 8


def test_nonfinite_losses_counted_warned_once_and_not_recorded():
    loader = ed.enlighten(DataLoader(Images(8), batch_size=4), ed.high_loss_removal(1, fraction=0.5))
    with pytest.warns(RuntimeWarning, match="2 non-finite") as caught:
        for x, _ in loader:
            loader.record(torch.tensor([float("nan"), 1.0, 2.0, 3.0]))
    assert len([w for w in caught if "non-finite" in str(w.message)]) == 1
    assert loader.history[-1]["nonfinite"] == 2
    assert torch.isnan(loader.losses()).sum() == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_high_loss_removal_drops_exactly_the_highest_and_restores(workers):
    n, fraction = 100, 0.29
    loader = ed.enlighten(DataLoader(Counting(n), batch_size=16, shuffle=True, num_workers=workers),
                          ed.high_loss_removal(2, fraction=fraction), seed=4)
    seen_per_epoch, removed = [], []
    assert loader.removed_indices().tolist() == []  # before the first epoch
    for _ in range(3):
        seen = []
        for x, _ in loader:
            ids = x[:, 0].long()
            loader.record(ids.float())  # loss = sample id: the highest ids are the highest losses
            seen += ids.tolist()
        seen_per_epoch.append(seen)
        removed.append(loader.removed_indices().tolist())
    assert removed == [[], list(range(n - 29, n)), []]
    assert sorted(seen_per_epoch[0]) == list(range(n))  # epoch 0 trains on everything
    assert sorted(seen_per_epoch[1]) == list(range(n - 29))  # 0.29 x 100 = 29 exactly
    assert sorted(seen_per_epoch[2]) == list(range(n))  # restored after the period
    assert [h["removed"] for h in loader.history] == [0, 29, 0]
    assert [h["seen"] for h in loader.history] == [100, 71, 100]
    assert len(loader) == -(-100 // 16)


def test_only_the_first_record_per_batch_counts():
    """An auxiliary head or a validation batch of the same size, scored with the tracked loss inside the loop,
    must not overwrite the training batch's losses and accuracy."""
    loader = ed.enlighten(DataLoader(Counting(16, classes=4), batch_size=4), ed.high_loss_removal(2, fraction=0.25))
    criterion = loader.track(nn.CrossEntropyLoss())
    with pytest.warns(UserWarning, match="called again for rows of the batch already recorded; each row is recorded "
                                         "once") as caught:
        for x, y in loader:
            right = F.one_hot(y, 4).float() * 10  # the main head is right: small losses
            criterion(right, y)
            criterion(-right, y)  # an auxiliary head, all wrong: large losses
            criterion.criterion(-right, y)  # the criterion itself records nothing
    again = [w for w in caught if "called again" in str(w.message)]
    assert len(again) == 1 and again[0].filename == __file__  # warned once, at the loop's line
    h = loader.history[-1]
    assert h["accuracy"] == 1.0 and h["recorded"] == 16
    assert (loader.losses() < 1e-3).all()


def test_a_repeated_record_still_checks_its_arguments():
    # It records nothing, but its mistakes are the caller's to hear (they were accepted with the "again" warning).
    loader = ed.enlighten(DataLoader(Counting(8, classes=4), batch_size=4), ed.high_loss_removal(2, fraction=0.25))
    for x, y in loader:
        loader.record(torch.ones(4))
        with pytest.raises(TypeError, match="per_sample_loss should be a Tensor, got per_sample_loss of type list"):
            loader.record([1.0, 2.0, 3.0, 4.0])
        with pytest.raises(TypeError, match="output should be a Tensor, got output of type str"):
            loader.record(torch.ones(4), output="logits", target=y)
        with pytest.raises(ValueError, match="threshold should be finite"):
            loader.record(torch.ones(4), threshold=float("nan"))
        break


@pytest.mark.parametrize("workers", [0, 2])
def test_len_after_a_mid_epoch_resume_counts_the_whole_epoch(workers):
    # As torchdata's StatefulDataLoader: a loop that restores its own step counter (Lightning's restores the
    # batches it had taken) runs to len(); the resumed pass yields the batches after the saved position.
    def make():
        return ed.enlighten(DataLoader(Counting(20), batch_size=4, shuffle=True, num_workers=workers),
                            ed.high_loss_removal(2, fraction=0.25))

    loader = make()
    it = iter(loader)
    next(it), next(it)
    resumed = make()
    resumed.load_state_dict(loader.state_dict())
    assert len(resumed) == 5
    assert [len(resumed) for _ in resumed] == [5, 5, 5]  # the same count while the pass runs: 3 batches are left
    assert len(resumed) == 5  # the next epoch, whole


def test_loading_a_state_forgets_the_previous_resumed_pass():
    def make():
        return ed.enlighten(DataLoader(Counting(20), batch_size=4), ed.high_loss_removal(2, fraction=0.25))

    source = make()
    it = iter(source)
    for _ in range(3):
        next(it)
    late = source.state_dict()  # 3 of 5 batches
    source.set_epoch(4)
    redirected = source.state_dict()  # open, but the next iter() starts epoch 4
    loader = make()
    loader.load_state_dict(late)
    assert len(list(loader)) == 2
    loader.load_state_dict(redirected)
    assert len(loader) == 5


def test_a_state_without_the_newer_sampling_keys_still_loads():
    def make():
        return ed.enlighten(DataLoader(Counting(20), batch_size=4, shuffle=True), ed.high_loss_removal(2, fraction=0.25))

    loader = make()
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    for key in ("kind", "shuffle", "sampler", "pad", "drop_last"):  # recorded since the checkpoint checks them
        del state["signature"]["source"][key]
    resumed = make()
    resumed.load_state_dict(state)
    assert len(list(resumed)) == 4


def test_the_dataloaders_own_generator_is_not_used_and_says_so():
    def order(seed):
        dl = DataLoader(Counting(10), batch_size=10, shuffle=True, generator=torch.Generator().manual_seed(seed))
        with pytest.warns(UserWarning, match="the DataLoader's generator is not used"):
            loader = ed.enlighten(dl, ed.high_loss_removal(2, fraction=0.1), seed=3)
        return next(iter(loader))[0].flatten().tolist()

    assert order(1) == order(2)


def test_a_samplers_own_generator_is_not_used_says_so_and_is_left_as_it_was():
    def first(sampler, seed=3):
        loader = ed.enlighten(DataLoader(Counting(10), batch_size=10, sampler=sampler),
                              ed.high_loss_removal(2, fraction=0.1), seed=seed)
        return next(iter(loader))[0].flatten().tolist()

    orders = []
    for s in (1, 2):
        with pytest.warns(UserWarning, match="the sampler's generator is not used: RandomSampler's draws come from "
                                             r"enlighten\(seed=...\)"):
            orders.append(first(RandomSampler(range(10), generator=torch.Generator().manual_seed(s))))
    assert orders[0] == orders[1] and sorted(orders[0]) == list(range(10))
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    weighted = WeightedRandomSampler(torch.ones(10), 10, generator=g)
    with pytest.warns(UserWarning, match="WeightedRandomSampler's draws"):
        draws = first(weighted)
    assert weighted.generator is g and torch.equal(g.get_state(), state)  # the user's sampler is theirs again
    with pytest.warns(UserWarning, match="WeightedRandomSampler's draws"):
        assert first(weighted) == draws and first(weighted, seed=4) != draws
    with warnings.catch_warnings(record=True) as caught:  # a DataLoader's generator: one warning, not two
        warnings.simplefilter("always")
        ed.enlighten(DataLoader(Counting(10), batch_size=5, shuffle=True, generator=torch.Generator()),
                     ed.high_loss_removal(2, fraction=0.1))
    assert [str(w.message).split(":")[0] for w in caught] == ["the DataLoader's generator is not used"]


def test_dataloader_settings_are_kept_or_said_to_be_unused():
    with pytest.warns(UserWarning, match="the DataLoader's in_order=False is not used: batches are taken in the "
                                         "sampler's order"):
        ed.enlighten(DataLoader(Counting(8), batch_size=4, num_workers=1, in_order=False),
                     ed.high_loss_removal(2, fraction=0.1))
    loader = ed.enlighten(DataLoader(Counting(8), batch_size=4, pin_memory_device="cpu"),
                          ed.high_loss_removal(2, fraction=0.1))
    assert loader._source.loader.pin_memory_device == "cpu"


def test_unrecorded_samples_are_kept():
    loader = ed.enlighten(DataLoader(Counting(40), batch_size=10), ed.high_loss_removal(3, fraction=0.5))
    for x, _ in loader:
        ids = x[:, 0].long()
        loss = torch.where(ids < 20, ids.float(), float("nan"))  # only ids < 20 get a finite loss
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loader.record(loss)
    kept = sorted(int(i) for x, _ in loader for i in x[:, 0])
    assert kept == list(range(10)) + list(range(20, 40))


def test_accuracy_trigger_ends_the_period():
    schedule = ed.mixup_pause(ed.Period(until_accuracy=0.5, max_epochs=10), alpha=1.0)
    loader = ed.enlighten(DataLoader(Images(8), batch_size=8), schedule, num_classes=4)
    accuracies = [0.25, 0.5, 0.875, 0.125]
    for acc in accuracies:
        for x, y in loader:
            out = y.clone()
            wrong = 8 - int(acc * 8)
            out[:wrong] = out[:wrong].roll(1, dims=1)
            loader.record(torch.ones(8), output=out, target=y)
    assert [h["in_period"] for h in loader.history] == [True, True, False, False]
    assert [h["accuracy"] for h in loader.history] == accuracies


def test_accuracy_period_capped_by_max_epochs():
    schedule = ed.mixup_pause(ed.Period(until_accuracy=0.99, max_epochs=2), alpha=1.0)
    loader = ed.enlighten(DataLoader(Images(8), batch_size=8), schedule, num_classes=4)
    for _ in range(3):
        list(loader)
    assert [h["in_period"] for h in loader.history] == [True, True, False]


def test_current_epoch_and_phase_inside_persistent_workers():
    class Probe(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            phase = ed.current_phase()
            return torch.tensor([ed.current_epoch(), int(phase.drop_high_loss > 0)]), 0

    dl = DataLoader(Probe(), batch_size=4, num_workers=2, persistent_workers=True)
    loader = ed.enlighten(dl, ed.high_loss_removal(2, fraction=0.25))
    for epoch in range(4):
        rows = torch.cat([x for x, _ in loader])
        assert (rows[:, 0] == epoch).all()
        assert (rows[:, 1] == int(epoch < 2)).all()
    assert ed.current_epoch() == 3 and ed.current_phase() == loader.schedule.after


def test_state_dict_is_weights_only_and_resume_at_boundary_reproduces():
    def make():
        dl = DataLoader(Images(48), batch_size=16, shuffle=True)
        return ed.enlighten(dl, ed.Schedule(2, during=ed.Phase(cutmix_alpha=1.0, mix_prob=0.5, drop_high_loss=0.25),
                                            after=ed.Phase(mixup_alpha=0.5)), num_classes=4, seed=9)

    def epoch(loader):
        out = []
        for x, y in loader:
            loader.record(x.flatten(1).mean(1))
            out.append((x, y))
        return out

    ref = make()
    epoch(ref)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    expected = [epoch(ref) for _ in range(2)]
    buf.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    got = [epoch(resumed) for _ in range(2)]
    for e, g in zip(expected, got):
        assert len(e) == len(g)
        for (x1, y1), (x2, y2) in zip(e, g):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert resumed.history == ref.history and ref.history[1]["removed"] > 0  # the resumed epoch removed samples
    assert torch.equal(resumed.losses().nan_to_num(-1), ref.losses().nan_to_num(-1))


def test_bad_input_errors_name_the_argument():
    dl = DataLoader(Images(8), batch_size=4)
    with pytest.raises(ValueError, match="num_classes should be an int when the schedule mixes"):
        ed.enlighten(dl, ed.mixup_pause(1, alpha=1.0))
    with pytest.raises(TypeError, match="schedule should be an enlight_data.Schedule"):
        ed.enlighten(dl, "pause")

    class Stream(IterableDataset):
        def __iter__(self):
            return iter([])

    with pytest.raises(TypeError, match="IterableDataset.*enlight_data.stream"):
        ed.enlighten(DataLoader(Stream(), batch_size=2), ed.high_loss_removal(1, fraction=0.1))
    with pytest.raises(ValueError, match="batch_size should be an int, got batch_size=None"):
        ed.enlighten(DataLoader(Images(8), batch_size=None), ed.high_loss_removal(1, fraction=0.1))
    with pytest.raises(TypeError, match="loader should be a torch.utils.data.DataLoader"):
        ed.enlighten([1, 2], ed.high_loss_removal(1, fraction=0.1))
    with pytest.raises(TypeError, match="num_classes should be an int"):
        ed.enlighten(dl, ed.mixup_pause(1, alpha=1.0), num_classes=2.5)
    bad_targets = DataLoader(TensorDataset(torch.zeros(6, 2), torch.tensor([0, 1, 2, 7, 1, 0])), batch_size=6)
    with pytest.raises(ValueError, match=r"targets should be in \[0, 3\) \(num_classes=3\), got values in \[0, 7\] at dataset indices \[3\]"):
        list(ed.enlighten(bad_targets, ed.mixup_pause(0, alpha=1.0), num_classes=3))
    with pytest.raises(ValueError, match="rank should be in"):
        ed.enlighten(dl, ed.high_loss_removal(1, fraction=0.1), rank=2, world_size=2)


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70])
def test_seeds_outside_what_a_generator_takes_are_refused_not_aliased(seed, tmp_path):
    # A seed was reduced modulo 2**64: seed=-1 and seed=2**64 - 1 gave the same batches.
    message = rf"seed should be in \[0, 2\*\*64\), got seed={seed}"
    schedule = ed.high_loss_removal(1, fraction=0.1)
    with pytest.raises(ValueError, match=message):
        ed.enlighten(DataLoader(Images(8), batch_size=4), schedule, seed=seed)
    with pytest.raises(ValueError, match=message):
        ed.EnlightSampler(range(8), seed=seed)
    with pytest.raises(ValueError, match=message):
        ed.stream(str(tmp_path / "missing-{0..1}.tar"), schedule, batch_size=2, seed=seed)
    assert ed.EnlightSampler(range(8), seed=2**64 - 1).seed == 2**64 - 1


def test_break_early_finishes_epoch_at_next_iter():
    loader = ed.enlighten(DataLoader(Images(32), batch_size=8), ed.high_loss_removal(2, fraction=0.5))
    for x, _ in loader:
        loader.record(torch.ones(8))
        break
    assert loader.history[-1]["seen"] is None
    with pytest.warns(UserWarning, match=r"epoch 0 ends after 1 of its 4 batches: each iter\(\) starts the next"):
        list(loader)
    assert loader.history[0]["recorded"] == 8 and loader.history[0]["batches"] == 1
    assert loader.history[1]["removed"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once; a whole epoch says nothing
        next(iter(loader))
        list(loader)


def test_library_never_uses_global_rng(forbid_global_rng):
    dl = DataLoader(Images(32), batch_size=8, shuffle=True, num_workers=0)
    loader = ed.enlighten(dl, ed.Schedule(1, during=ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.5, drop_high_loss=0.2),
                                          after=ed.Phase(mixup_alpha=0.3, mode="batch")), num_classes=4)
    for _ in range(3):
        for x, y in loader:
            loader.record(x.flatten(1).mean(1), output=y, target=y)


@pytest.mark.needs_cuda
def test_cuda_device_moves_every_tensor_and_records_on_device():
    dl = DataLoader(Images(32), batch_size=8)
    loader = ed.enlighten(dl, ed.mixup_pause(1, alpha=1.0), num_classes=4, device="cuda")
    history = run_epochs_cuda(loader)
    assert loader.table.device.type == "cuda" and history[-1]["seen"] == 32


def run_epochs_cuda(loader):
    model = model_for().cuda()
    criterion = loader.track(nn.CrossEntropyLoss())
    for _ in range(2):
        for x, y in loader:
            assert x.is_cuda and y.is_cuda
            criterion(model(x), y).backward()
    return loader.history


def test_epoch_boundary_state_loads_on_another_rank_but_mid_epoch_does_not():
    def make(rank):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # world_size > 1 without a process group: no sync, warned
            return ed.enlighten(DataLoader(Images(24), batch_size=4, shuffle=True), ed.high_loss_removal(2, fraction=0.25),
                                rank=rank, world_size=2)

    zero = make(0)
    for x, _ in zero:
        zero.record(x.flatten(1).mean(1))
    boundary = zero.state_dict()
    it = iter(zero)
    next(it)
    middle = zero.state_dict()
    one = make(1)
    one.load_state_dict(boundary)
    assert one.epoch == 0 and one.history == zero.history[:1]
    assert torch.equal(one.losses().nan_to_num(-1), boundary["table"]["last"].nan_to_num(-1))  # rank 0's table
    with pytest.raises(ValueError, match="source rank is 0 in the state and 1 here"):
        make(1).load_state_dict(middle)


def test_multi_hot_rows_are_mixed_for_bce():
    rows = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]).repeat(4, 1)
    data = DataLoader(TensorDataset(torch.zeros(8, 3, 4, 4), rows), batch_size=8)
    loader = ed.enlighten(data, ed.mixup_pause(0, alpha=1.0), num_classes=3)
    crit = loader.track(nn.BCEWithLogitsLoss())
    for x, y in loader:
        assert torch.allclose(y.sum(1), torch.full((8,), 2.0))  # a blend of two multi-hot rows
        crit(torch.zeros(8, 3), y)


@pytest.mark.needs_cuda
def test_cuda_training_step_never_synchronises_with_the_host():
    """Loader, GpuAugment, Mixup/CutMix and loss recording, step after step, under sync-debug 'error'."""
    data = DataLoader(TensorDataset(torch.randint(0, 256, (96, 3, 20, 20), dtype=torch.uint8,
                                                  generator=torch.Generator().manual_seed(0)),
                                    torch.arange(96) % 4), batch_size=16)
    schedule = ed.Schedule(1, during=ed.Phase(drop_high_loss=0.2), after=ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0))
    loader = ed.enlighten(data, schedule, num_classes=4, device="cuda", augment=ed.GpuAugment(16, brightness=0.2))
    model = model_for(4, 3 * 16 * 16).cuda()
    criterion = loader.track(nn.CrossEntropyLoss())
    for epoch in range(2):
        batches = iter(loader)
        x, y = next(batches)  # first batch: the table is created on the device
        criterion(model(x), y).backward()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(4):
                x, y = next(batches)
                criterion(model(x), y).backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        for x, y in batches:  # the epoch's end reads its counters: one transfer, outside the check
            criterion(model(x), y).backward()
    assert loader.history[-1]["seen"] == 96 and loader.table.device.type == "cuda"


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("sampler", ["shuffle", "weighted"])
def test_len_is_the_coming_epochs_batch_count_with_its_removal(drop_last, sampler):
    data = Counting(40)
    if sampler == "weighted":  # a custom sampler: its draws decide which removed samples would have come
        base = WeightedRandomSampler(torch.ones(40), num_samples=40, replacement=True)
        dl = DataLoader(data, batch_size=6, sampler=base, drop_last=drop_last)
    else:
        dl = DataLoader(data, batch_size=6, shuffle=True, drop_last=drop_last)
    loader = ed.enlighten(dl, ed.high_loss_removal(3, fraction=0.25), seed=4)
    counts = []
    for _ in range(4):
        upcoming = len(loader)
        batches = 0
        for x, _ in loader:
            assert len(loader) == upcoming  # during the epoch: the epoch in progress
            batches += 1
            loader.record(x.flatten(1).float().mean(1))
        counts.append((upcoming, batches))
    assert all(u == b for u, b in counts), counts
    if sampler == "shuffle":
        full, reduced = (40 // 6, 30 // 6) if drop_last else (-(-40 // 6), -(-30 // 6))
        assert [u for u, _ in counts] == [full, reduced, reduced, full]


def test_len_never_draws_a_custom_samplers_order_again():
    class Stateful(torch.utils.data.Sampler):
        """A custom sampler with its own hidden RNG state and no ``generator`` attribute."""

        def __init__(self, n):
            self.n, self.g, self.draws = n, torch.Generator().manual_seed(0), 0

        def __iter__(self):
            self.draws += 1
            return iter(torch.randperm(self.n, generator=self.g).tolist())

        def __len__(self):
            return self.n

    base = Stateful(20)
    loader = ed.enlighten(DataLoader(Counting(20), batch_size=4, sampler=base), ed.high_loss_removal(2, fraction=0.5))
    lengths = []
    for _ in range(2):
        for x, _ in loader:
            loader.record(x.flatten(1).float().mean(1))
        draws = base.draws
        lengths.append(len(loader))
        assert base.draws == draws  # len() did not iterate the sampler
    assert lengths == [5, 3]  # the most recently started epoch's count: 20 samples, then 10 after removal


def test_a_custom_sampler_gives_the_passes_a_plain_dataloader_gives():
    # A sampler whose every pass differs (a curriculum, a hidden RNG): enlighten() and len() must not draw it
    # before the first epoch does, or every epoch would get the pass after the one a DataLoader gives it.
    class Passes(torch.utils.data.Sampler):
        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            return iter([(self.passes * 3 + j) % 12 for j in range(8)])

        def __len__(self):
            return 8

    plain_sampler, ours = Passes(), Passes()
    plain = DataLoader(Counting(12), batch_size=4, sampler=plain_sampler)
    loader = ed.enlighten(DataLoader(Counting(12), batch_size=4, sampler=ours), ed.high_loss_removal(2, fraction=0.25))
    assert ours.passes == 0
    assert len(loader) == len(plain) == 2 and ours.passes == 0  # counted from len(sampler), as a DataLoader does
    for _ in range(3):
        assert [ids_of(x) for x, _ in loader] == [ids_of(x) for x, _ in plain]
    assert ours.passes == plain_sampler.passes == 3


# ------------------------------------------------------------------ review fixes


def test_set_epoch_of_a_loaded_mid_epoch_state_keeps_resuming_it():
    # A DDP-style loop calls set_epoch(e) before every epoch, the resumed one included.
    def make():
        return ed.enlighten(DataLoader(Images(40), batch_size=8, shuffle=True), ed.high_loss_removal(2, fraction=0.1))

    full = make()
    epochs = []
    for epoch in range(2):
        full.set_epoch(epoch)
        epochs.append([ids_of(x) for x, _ in full])
    cut = make()
    it = iter(cut)
    for _ in range(2):
        next(it)
    state = cut.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    got = []
    for epoch in range(2):
        resumed.set_epoch(epoch)  # epoch 0 is the loaded one: continue it, do not replay it
        got.append([ids_of(x) for x, _ in resumed])
    assert got == [epochs[0][2:], epochs[1]]
    assert [h["epoch"] for h in resumed.history] == [0, 1]


def test_leaving_the_loop_early_leaves_no_current_batch():
    loader = ed.enlighten(DataLoader(Images(16), batch_size=4), ed.high_loss_removal(2, fraction=0.25))
    criterion = loader.track(nn.CrossEntropyLoss())
    model = model_for()
    for x, y in loader:
        criterion(model(x), y)
        break
    with pytest.raises(RuntimeError, match="record\\(\\) needs a current batch"):
        criterion(model(x), y)  # e.g. a validation pass with the tracked criterion
    assert loader.history[-1]["recorded"] is None  # the epoch is closed at the next iter()
    list(loader)
    assert loader.history[0]["recorded"] == 4


def test_dict_batches_keep_their_mapping_type():
    class Dicts(Images):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return collections.OrderedDict(image=x, label=y)

    def collate(items):
        out = collections.defaultdict(list)
        out["image"] = torch.stack([d["image"] for d in items])
        out["label"] = torch.tensor([d["label"] for d in items])
        return out

    for collate_fn, kind in ((None, collections.OrderedDict), (collate, collections.defaultdict)):
        loader = ed.enlighten(
            DataLoader(Dicts(8), batch_size=4, collate_fn=collate_fn), ed.mixup_pause(1, alpha=1.0), num_classes=4,
            device="cpu", input_key="image", target_key="label",
        )
        for batch in loader:
            assert type(batch) is kind and batch["label"].shape == (4, 4)
        if kind is collections.defaultdict:
            assert batch["missing"] == [] and batch.default_factory is list


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_a_cuda_device_without_cuda_is_a_clear_error():
    for device in ("cuda", "cuda:3"):
        with pytest.raises(ValueError, match=f"device should be an available device, got device='{device}' with 0"):
            ed.enlighten(DataLoader(Images(8), batch_size=4), ed.mixup_pause(1, alpha=1.0), num_classes=4,
                         device=device)


def test_cuda_without_an_index_is_the_current_device_when_resolved(monkeypatch):
    # The prefetch stream, the generators and the moves all use the resolved device: "cuda" is pinned to the device
    # current at enlighten(), not whatever is current when each of them is made.
    from enlight_data.loader import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) is None


def test_an_accelerator_this_machine_lacks_is_a_clear_error():
    for device in ("mps", "xpu:0", "hpu"):
        try:
            torch.empty(0, device=device)
            continue  # it is there
        except Exception:  # noqa: BLE001 (each backend says so its own way)
            pass
        with pytest.raises(ValueError, match=f"device should be an available device, got device='{device}', which"):
            ed.enlighten(DataLoader(Images(8), batch_size=4), ed.mixup_pause(1, alpha=1.0), num_classes=4,
                         device=device)


def test_the_meta_device_is_refused():
    # Accepted before, and the first batch failed deep in torch ("META device type not an accelerator").
    with pytest.raises(ValueError, match=r"device should be a device that holds data \(cpu, cuda, ...\), got "
                                         r"device='meta'"):
        ed.enlighten(DataLoader(Images(8), batch_size=4), ed.mixup_pause(1, alpha=1.0), num_classes=4, device="meta")


def test_numpy_arguments_give_a_state_that_loads_with_weights_only():
    import numpy as np

    loader = ed.enlighten(DataLoader(Images(8), batch_size=4), ed.high_loss_removal(2, fraction=0.25),
                          seed=np.int64(3))
    list(loader)
    buffer = io.BytesIO()
    torch.save(loader.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["seed"] == 3 and type(state["seed"]) is int


def test_integer_inputs_are_float_in_every_epoch_of_a_mixing_schedule():
    images = TensorDataset(torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8), torch.arange(8) % 4)
    loader = ed.enlighten(DataLoader(images, batch_size=4), ed.mixup_pause(1, alpha=1.0), num_classes=4)
    dtypes = [[x.dtype for x, _ in loader] for _ in range(2)]
    assert dtypes == [[torch.float32] * 2] * 2  # the pause as after it
    first = next(iter(DataLoader(images, batch_size=4)))[0]
    fresh = ed.enlighten(DataLoader(images, batch_size=4), ed.mixup_pause(1, alpha=1.0), num_classes=4)
    assert torch.equal(next(iter(fresh))[0], first.float())  # same scale as mixing gives: 0..255
    tokens = TensorDataset(torch.randint(0, 100, (8, 6)), torch.arange(8) % 4)  # smoothing only: ids stay ids
    smoothing = ed.Schedule(1, during=ed.Phase(label_smoothing=0.1))
    for x, _ in ed.enlighten(DataLoader(tokens, batch_size=4), smoothing, num_classes=4):
        assert x.dtype == torch.int64


class _RandomTransform(Images):
    """Samples drawn with the worker's global RNGs, as a dataset's random transforms do."""

    def __getitem__(self, i):
        import random

        import numpy as np

        draws = [torch.rand(()).item(), random.random(), float(np.random.rand())]
        return torch.tensor([float(i), *draws]), i % self.classes


@pytest.mark.parametrize("persistent", [False, True])
def test_random_transforms_in_workers_repeat_after_a_resume_and_with_any_worker_count(persistent):
    def make(workers):
        return ed.enlighten(
            DataLoader(_RandomTransform(24), batch_size=4, shuffle=True, num_workers=workers,
                       persistent_workers=persistent),
            ed.high_loss_removal(2, fraction=0.1),
        )

    full = make(2)
    epochs = [[x for x, _ in full] for _ in range(2)]
    assert not torch.equal(epochs[0][0][:, 1:], epochs[1][0][:, 1:])  # fresh draws every epoch
    cut = make(2)
    it = iter(cut)
    for _ in range(3):
        next(it)
    resumed = make(2)
    resumed.load_state_dict(cut.state_dict())
    rest = [x for x, _ in resumed] + [x for x, _ in resumed]
    assert all(torch.equal(a, b) for a, b in zip(rest, epochs[0][3:] + epochs[1], strict=True))
    other = make(1)
    assert all(torch.equal(a, b) for a, b in zip([x for x, _ in other], epochs[0], strict=True))


def test_workers_get_the_schedule_without_phase_augmentations():
    from multiprocessing.reduction import ForkingPickler

    from enlight_data.context import SharedClock

    schedule = ed.Schedule(1, during=ed.Phase(augment=lambda x: x), after=ed.Phase(mixup_alpha=1.0))
    clock = SharedClock(schedule, 8)
    copied = ForkingPickler.loads(ForkingPickler.dumps(clock))  # a lambda would not pickle (spawn workers)
    assert copied.schedule.during.augment is None and copied.schedule.after == schedule.after
    assert clock.schedule is schedule


def test_each_rank_draws_its_own_mixing_and_worker_randomness():
    def mixed(rank, world_size=2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no process group: the tables are not combined
            loader = ed.enlighten(
                DataLoader(_RandomTransform(16, classes=3), batch_size=4, num_workers=1), ed.mixup_pause(0, alpha=1.0),
                num_classes=4, rank=rank, world_size=world_size,
            )
            return [(x, y) for x, y in loader]

    r0, r1, again = mixed(0), mixed(1), mixed(1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(r1, again))  # reproducible
    weights = [[y.max(1).values for _, y in run] for run in (r0, r1)]
    assert not any(torch.equal(a, b) for a, b in zip(*weights))  # independent λ per rank


def test_dataloader_attributes_a_loop_body_reads():
    data = Images(20)
    loader = ed.enlighten(DataLoader(data, batch_size=8, drop_last=True), ed.mixup_pause(1, alpha=1.0), num_classes=4)
    assert loader.dataset is data and len(loader.dataset) == 20
    assert loader.batch_size == 8 and loader.drop_last is True
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (0, False, False)
    workers = ed.enlighten(DataLoader(data, batch_size=8, num_workers=2, pin_memory=True, persistent_workers=True),
                           ed.mixup_pause(1, alpha=1.0), num_classes=4)
    assert (workers.num_workers, workers.pin_memory, workers.persistent_workers) == (2, True, True)


def test_phase_and_in_period_describe_the_epoch_they_name():
    schedule = ed.mixup_pause(ed.Period(until_accuracy=0.01, max_epochs=5), alpha=1.0)  # ends after epoch 0
    loader = ed.enlighten(DataLoader(Images(8), batch_size=4), schedule, num_classes=4)
    assert loader.in_period and loader.phase == schedule.during  # epoch 0, not started yet
    fixed = ed.enlighten(DataLoader(Images(8), batch_size=4), ed.mixup_pause(3, alpha=1.0), num_classes=4)
    fixed.set_epoch(7)
    assert not fixed.in_period and fixed.phase == fixed.schedule.after  # before the first iter(): the next epoch
    run_epochs(loader, 1)
    assert loader.epoch == 0 and loader.history[-1]["in_period"] and loader.history[-1]["accuracy"] > 0.01
    assert loader.in_period and loader.phase == schedule.during  # epoch 0 began in the period, which it ended
    list(loader)
    assert not loader.in_period and loader.phase == schedule.after


def test_repr_names_the_state_and_the_schedule():
    loader = ed.enlighten(DataLoader(Counting(20), batch_size=4), ed.high_loss_removal(2, fraction=0.25), seed=3)
    text = repr(loader)
    assert text.startswith("EnlightLoader(epoch=-1, in_period=True, num_samples=20, batch_size=4, device=None, seed=3")
    assert "drop_high_loss=0.25" in text


def _saved(loader) -> dict:
    buf = io.BytesIO()
    torch.save(loader.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("schedule", [ed.mixup_pause(2, alpha=1.0), ed.high_loss_removal(2, fraction=0.3)])
def test_a_checkpoint_after_a_loop_left_early_says_that_it_continues_the_epoch(schedule):
    # A loop capped at 3 of its 5 batches per epoch, checkpointed after each epoch's loop. The resumed loader goes on
    # with the left epoch (a time-limit stop wants that, as with torchdata's StatefulDataLoader), and says so; a loop
    # that had moved on calls set_epoch() as the warning says, and repeats the uninterrupted run.
    def make():
        return ed.enlighten(DataLoader(Images(40), batch_size=8, shuffle=True), schedule, num_classes=4, seed=1)

    def run(loader, epochs, out, first_epoch=None):
        for e in range(epochs):
            if first_epoch is not None:
                loader.set_epoch(first_epoch + e)
            for k, (x, y) in enumerate(loader):
                out.append((x.clone(), y.clone()))
                loader.record(x.flatten(1).mean(1), output=y, target=y)
                if k == 2:
                    break
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the left epochs, warned once per loader
        whole = run(make(), 4, [])
        first = make()
        run(first, 2, [])
    state = _saved(first)
    assert state["open"] and state["left"] and state["position"] == 3
    goes_on = make()
    goes_on.load_state_dict(state)
    assert len(goes_on) == 5  # the whole epoch (2 batches are left)
    with pytest.warns(UserWarning, match=r"the loaded state was taken after the loop over epoch 1 was left at batch 3 "
                                         r"of 5: this iter\(\) goes on with the rest of that epoch, as a resumed run "
                                         r"does; .* call loader.set_epoch\(2\) before iterating"):
        assert len(list(goes_on)) == 2 and goes_on.epoch == 1
    moved_on = make()
    moved_on.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the left epoch, closed by the next iter()
        rest = run(moved_on, 2, [], first_epoch=2)
    assert len(rest) == 6
    for (x, y), (x2, y2) in zip(whole[6:], rest):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert [h["epoch"] for h in moved_on.history] == [0, 1, 2, 3]
    assert [h["batches"] for h in moved_on.history[:3]] == [3, 3, 3]


def test_len_after_a_loop_left_early_counts_the_next_epoch():
    loader = ed.enlighten(DataLoader(Images(32), batch_size=8), ed.high_loss_removal(3, fraction=0.5))
    list(loader)  # epoch 0 recorded nothing: nothing to remove in epoch 1
    for k, (x, _) in enumerate(loader):
        loader.record(x.flatten(1)[:, 0])
        if k == 1:
            break
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coming = len(loader)  # epoch 2 removes half of the 16 samples recorded in epoch 1
    assert coming == 3 and loader.history[1]["batches"] is None  # closed by the next iter(), not by len()
    with pytest.warns(UserWarning, match=r"epoch 1 ends after 2 of its 4 batches"):
        assert len(list(loader)) == coming
    assert loader.history[1]["recorded"] == 16 and loader.history[2]["removed"] == 8


def test_sampler_set_epoch_of_a_ddp_loop_sets_the_loaders_epoch():
    base = torch.utils.data.DistributedSampler(Images(32), num_replicas=1, rank=0, shuffle=True, seed=0)
    loader = ed.enlighten(DataLoader(Images(32), batch_size=8, sampler=base), ed.mixup_pause(1, alpha=0.2),
                          num_classes=4)
    reference = ed.enlighten(DataLoader(Images(32), batch_size=8, sampler=base), ed.mixup_pause(1, alpha=0.2),
                             num_classes=4)
    for epoch in (0, 3):
        loader.sampler.set_epoch(epoch)  # the loop body of an existing DDP script
        reference.set_epoch(epoch)
        assert [ids_of(x) for x, _ in loader] != [] and loader.epoch == epoch
        list(reference)
    assert [h["epoch"] for h in loader.history] == [0, 3]
    assert loader.sampler.num_replicas == 1 and loader.sampler.shuffle  # the DataLoader's sampler, otherwise
    with pytest.raises(ValueError, match="epoch should be >= 0"):
        loader.sampler.set_epoch(-1)


def test_an_epoch_without_batches_is_warned_about():
    # drop_last with High-Loss Removal: 16 samples recorded, 14 of them removed, leave 6 of 20, less than one batch of 8.
    schedule = ed.Schedule(ed.Period(until_accuracy=0.99, max_epochs=3), during=ed.Phase(drop_high_loss=0.9), after=ed.Phase())
    loader = ed.enlighten(DataLoader(Images(20), batch_size=8, drop_last=True), schedule)
    for x, y in loader:
        loader.record(x.flatten(1)[:, 0], output=torch.zeros(x.shape[0], 4), target=y)  # 25 % right
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(loader) == [] and list(loader) == []
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages  # not "no training accuracy was scored": nothing was trained on
    assert re.search(r"epoch 1 has no batches: with drop_last=True, the samples left after removing 14 do not fill "
                     r"one batch of 8; it trains on nothing \(warned once\)", messages[0])
    assert [h["batches"] for h in loader.history] == [2, 0, 0]


def test_an_iterator_dropped_before_its_first_batch_uses_up_no_epoch():
    # NOTE [ An iterator that gave no batch uses up no epoch ]: Lightning makes one iterator and drops it unused.
    loader = ed.enlighten(DataLoader(Images(32), batch_size=4), ed.high_loss_removal(2, fraction=0.5))
    for x, _ in loader:
        loader.record(x.flatten(1)[:, 0])
    held = iter(loader)  # epoch 1 begins (16 of 32 removed): held, it is a pass under way
    assert len(loader) == 4 and loader.epoch == 1
    assert loader.next_epoch == 1  # a new iter() would end the held one, which gave nothing, and begin epoch 1 again
    del held  # dropped before its first batch: the next iter() begins epoch 1 again, with the same removal
    assert len(loader) == 4
    iter(loader)  # made and dropped at once, as Lightning's fit loop does: nothing either
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no epoch was left early
        assert len(list(loader)) == 4
    assert [h["epoch"] for h in loader.history] == [0, 1] and loader.history[1]["removed"] == 16
    assert len(list(loader)) == 8  # epoch 2, after the period
    # set_epoch chooses the epoch the next iter() begins, whatever iterators were made and dropped before.
    loader.set_epoch(5)
    iter(loader)
    loader.set_epoch(7)
    assert len(loader) == 8
    list(loader)
    assert [h["epoch"] for h in loader.history] == [0, 1, 2, 7]
    # An epoch that handed out a batch is used up (left early, with a warning).
    it = iter(loader)
    next(it)
    with pytest.warns(UserWarning, match=r"epoch 8 ends after 1 of its 8 batches"):
        iter(loader)
    assert loader.epoch == 9


def test_close_epoch_closes_an_epoch_whose_loop_stopped_at_len_without_asking_for_more():
    # Lightning's loop stops at len() and never asks for the batch after the last: the epoch stays open until
    # close_epoch() (or the next iter()) closes it.
    loader = ed.enlighten(DataLoader(Images(32), batch_size=4), ed.high_loss_removal(2, fraction=0.25), seed=1)
    assert loader.close_epoch() is None  # nothing begun yet
    criterion = loader.track(nn.CrossEntropyLoss())
    model = model_for()
    it = iter(loader)
    for _ in range(len(loader)):
        x, y = next(it)
        criterion(model(x), y)
    assert loader.history[-1]["accuracy"] is None and loader.history[-1]["batches"] is None  # still open
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every batch was taken: not an epoch left early
        entry = loader.close_epoch()
    assert entry is loader.history[-1] and entry["batches"] == 8 and entry["seen"] == 32 and entry["recorded"] == 32
    assert 0.0 <= entry["accuracy"] <= 1.0 and entry["mean_loss"] > 0
    assert next(it, None) is None  # the held iterator yields no more
    assert loader.close_epoch() is None  # already closed
    # Closed, the epoch is decided: the next epoch removes the 8 highest of the losses recorded, and begins at once.
    assert len(loader) == 6 and loader.next_epoch == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(loader)) == 6
    assert [h["epoch"] for h in loader.history] == [0, 1] and loader.history[1]["removed"] == 8


def test_close_epoch_of_a_loop_left_early_warns_and_of_an_unbegun_pass_does_nothing():
    loader = ed.enlighten(DataLoader(Images(32), batch_size=4), ed.mixup_pause(1, alpha=0.4), num_classes=4)
    it = iter(loader)
    next(it)
    with pytest.warns(UserWarning, match=r"epoch 0 ends after 1 of its 8 batches"):
        entry = loader.close_epoch()
    assert entry["batches"] == 1 and entry["seen"] == 4 and loader.next_epoch == 1
    held = iter(loader)  # epoch 1 begun, no batch handed out: nothing to close, the next iter() begins epoch 1 again
    assert loader.close_epoch() is None
    assert next(held, None) is None  # ended all the same
    assert len(list(loader)) == 8 and [h["epoch"] for h in loader.history] == [0, 1]
    # A loaded mid-epoch state not continued is closed as a loop left early; its state then starts the next epoch.
    loader.set_epoch(2)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    fresh = ed.enlighten(DataLoader(Images(32), batch_size=4), ed.mixup_pause(1, alpha=0.4), num_classes=4)
    fresh.load_state_dict(state)
    with pytest.warns(UserWarning, match=r"epoch 2 ends after 2 of its 8 batches"):
        assert fresh.close_epoch()["batches"] == 2
    after = ed.enlighten(DataLoader(Images(32), batch_size=4), ed.mixup_pause(1, alpha=0.4), num_classes=4)
    after.load_state_dict(fresh.state_dict())
    assert after.next_epoch == 3 and len(list(after)) == 8 and after.history[-1]["epoch"] == 3


def test_set_epoch_between_iter_and_the_first_batch_chooses_that_passes_epoch():
    # Lightning's order: iter() (held), then sampler.set_epoch(e), then the batches. As with a DataLoader, whose
    # sampler is read at the first batch, the pass is epoch e.
    def make():
        return ed.enlighten(DataLoader(Images(24), batch_size=8, shuffle=True), ed.high_loss_removal(2, fraction=0.5),
                            seed=4)

    reference = make()
    reference.set_epoch(3)
    expected = [ids_of(x) for x, _ in reference]
    loader = make()
    it = iter(loader)
    loader.sampler.set_epoch(3)
    assert len(loader) == 3 and loader.epoch == 3
    assert [ids_of(x) for x, _ in it] == expected
    assert [h["epoch"] for h in loader.history] == [3]
    it = iter(loader)
    loader.set_epoch(4)  # the epoch the pass already is: nothing changes, and the next one is still 5
    list(it)
    assert [h["epoch"] for h in loader.history] == [3, 4] and loader.next_epoch == 5
    it = iter(loader)
    next(it)
    loader.set_epoch(9)  # once a batch was handed out, the pass stays its epoch; set_epoch is for the next iter()
    assert len(list(it)) == 2 and loader.epoch == 5 and loader.next_epoch == 9


def test_a_resumed_pass_dropped_before_its_first_batch_goes_on_where_it_stood():
    def make():
        return ed.enlighten(DataLoader(Images(32), batch_size=4, shuffle=True), ed.high_loss_removal(2, fraction=0.5),
                            seed=2)

    whole = make()
    expected = [ids_of(x) for x, _ in whole]
    saved = make()
    it = iter(saved)
    for _ in range(3):
        next(it)
    state = saved.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    iter(resumed)  # made and dropped (Lightning's probe): the loaded pass is not used up
    assert resumed.next_epoch == 0 and len(resumed) == 8  # the whole epoch: 5 batches are left
    it = iter(resumed)
    resumed.set_epoch(0)  # after iter(), of the epoch the pass already is: nothing changes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not left early
        assert [ids_of(x) for x, _ in it] == expected[3:]
    assert resumed.next_epoch == 1 and [(h["epoch"], h["batches"]) for h in resumed.history] == [(0, 8)]
    # Taken after the epoch's last batch (Lightning's end-of-epoch checkpoint: it never asks for more), the loaded
    # pass has nothing left: dropped, it is not made again, and the next iter() begins the next epoch whole.
    saved = make()
    it = iter(saved)
    for _ in range(8):
        next(it)
    state = saved.state_dict()
    resumed = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loaded state's own advice (its loop was left after its last batch)
        resumed.load_state_dict(state)
        iter(resumed)
        assert len(resumed) == 8 and len(list(resumed)) == 8 and resumed.epoch == 1
    # A state saved after that dropped pass says it was made: loaded, the next iter() begins the next epoch too,
    # and set_epoch of the loaded epoch changes that in neither.
    for choose in (False, True):
        resumed, clone = make(), make()
        resumed.load_state_dict(state)
        iter(resumed)
        again = resumed.state_dict()
        assert again["spent"] and not state["spent"]
        clone.load_state_dict(again)
        assert clone.state_dict()["spent"] and clone.next_epoch == resumed.next_epoch == 1
        passes = []
        for loader in (resumed, clone):
            if choose:
                loader.set_epoch(0)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # neither left early nor a loaded state's advice
                passes.append([ids_of(x) for x, _ in loader])
        assert passes[0] == passes[1] and len(passes[0]) == 8  # epoch 1 (no loss recorded: none removed)
        assert [h["epoch"] for h in clone.history] == [h["epoch"] for h in resumed.history] == [0, 1]
        assert torch.equal(clone.removed_indices(), resumed.removed_indices())


def test_next_epoch_and_a_saved_state_after_a_dropped_iterator():
    loader = ed.enlighten(DataLoader(Images(24), batch_size=4), ed.high_loss_removal(3, fraction=0.25))
    list(loader)
    iter(loader)  # epoch 1 made and dropped: the next iter() begins epoch 1 again
    assert loader.epoch == 1 and loader.next_epoch == 1
    state = loader.state_dict()
    assert state["open"] and state["position"] == 0 and not state["left"]  # no pass was left: nothing to warn
    loader.set_epoch(3)
    loader.set_epoch(1)  # back to the epoch begun: the next iter() begins it, and the one after is 2
    assert loader.next_epoch == 1
    again = ed.enlighten(DataLoader(Images(24), batch_size=4), ed.high_loss_removal(3, fraction=0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "left at batch 0" advice to skip the epoch
        again.load_state_dict(state)
        assert len(list(again)) == 6
    assert [h["epoch"] for h in again.history] == [0, 1] and again.next_epoch == 2


def test_an_epoch_that_failed_at_its_first_batch_is_closed_not_begun_again():
    class Failing(Images):
        fail = False

        def __getitem__(self, i):
            if self.fail:
                raise OSError("disk gone")
            return super().__getitem__(i)

    data = Failing(16)
    loader = ed.enlighten(DataLoader(data, batch_size=4), ed.high_loss_removal(2, fraction=0.5))
    list(loader)
    data.fail = True
    with pytest.raises(ed.SampleError, match="disk gone"):
        list(loader)  # epoch 1 fails at its first batch
    data.fail = False
    list(loader)
    assert [h["epoch"] for h in loader.history] == [0, 1, 2]  # the failure ended epoch 1: it is not run again
    # A failed epoch run again on purpose is begun anew: an iterator dropped before its first batch then uses up
    # nothing, as for any epoch.
    data.fail = True
    with pytest.raises(ed.SampleError, match="disk gone"):
        list(loader)  # epoch 3 fails
    data.fail = False
    loader.set_epoch(3)
    iter(loader)
    assert len(list(loader)) == 4
    assert [(h["epoch"], h["batches"]) for h in loader.history] == [(0, 4), (1, 0), (2, 4), (3, 0), (3, 4)]


def test_a_checkpoint_after_a_loop_that_took_every_batch_starts_the_next_epoch():
    # The loop stops itself at its last step (break at step len - 1): every batch taken, StopIteration never seen.
    def make():
        return ed.enlighten(DataLoader(Images(40), batch_size=8, shuffle=True), ed.mixup_pause(2, alpha=0.2),
                            num_classes=4, seed=1)

    def run(loader, epochs, out):
        for _ in range(epochs):
            steps = len(loader)
            for step, (x, _) in enumerate(loader):
                out.append(x.clone())
                if step + 1 == steps:
                    break
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing was left early
        whole = run(make(), 4, [])
        first = make()
        run(first, 2, [])
        state = _saved(first)
    assert state["left"] and state["position"] == 5
    resumed = make()
    resumed.load_state_dict(state)
    assert _saved(resumed)["left"]  # saved again before iterating: the same state
    assert len(resumed) == 5 and resumed.next_epoch == 2
    # A time limit that fell on the last batch leaves the same state: the first iter() says what it does.
    with pytest.warns(UserWarning, match=r"had taken all its 5 batches and was left: this iter\(\) starts epoch 2.*"
                                         r"call loader.set_epoch\(1\) before iterating") as caught:
        rest = run(resumed, 2, [])
    assert len(caught) == 1 and caught[0].filename == __file__
    assert len(rest) == 10 and all(torch.equal(a, b) for a, b in zip(whole[10:], rest))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]


@pytest.mark.parametrize("ddp_style", [False, True])
def test_a_time_limit_on_the_last_batch_resumes_with_set_epoch_of_that_epoch(ddp_style):
    # The loop stops at a time limit that happens to fall on the last batch of epoch 1 and saves; the resumed loop
    # begins at epoch 1 again (its checkpoint says so): set_epoch(1) makes that pass empty, and the run goes on in step.
    def make():
        return ed.enlighten(DataLoader(Images(40), batch_size=8, shuffle=True), ed.high_loss_removal(3, fraction=0.25),
                            seed=4)

    def epochs(loader, first, last, limit=None):
        out, steps = [], 0
        for epoch in range(first, last):
            if ddp_style or epoch == first:
                loader.set_epoch(epoch)
            for x, _ in loader:
                out.append(ids_of(x))
                loader.record(x.flatten(1).mean(1))
                steps += 1
                if steps == limit:
                    return out
        return out

    whole = epochs(make(), 0, 4)
    stopped = make()
    before = epochs(stopped, 0, 4, limit=9)  # 5 batches in epoch 0, then 4 (10 of 40 removed): the 9th is the last
    resumed = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # set_epoch(1) says what the loop does: nothing to warn about
        resumed.load_state_dict(_saved(stopped))
        assert resumed.next_epoch == 2
        after = epochs(resumed, 1, 4)
    assert stopped.history[1]["removed"] == 10 and _saved(stopped)["position"] == 4
    assert before + after == whole and len(before) == 9
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]


def test_a_loaded_left_state_saved_again_before_iterating_is_the_same_state():
    loader = ed.enlighten(DataLoader(Images(40), batch_size=8), ed.mixup_pause(2, alpha=0.2), num_classes=4)
    for k, _ in enumerate(loader):
        if k == 1:
            break
    state = _saved(loader)
    resumed = ed.enlighten(DataLoader(Images(40), batch_size=8), ed.mixup_pause(2, alpha=0.2), num_classes=4)
    resumed.load_state_dict(state)
    again = _saved(resumed)
    assert state["left"] and again["left"] and again["position"] == state["position"]
    other = ed.enlighten(DataLoader(Images(40), batch_size=8), ed.mixup_pause(2, alpha=0.2), num_classes=4)
    other.load_state_dict(again)
    with pytest.warns(UserWarning, match="the loaded state was taken after the loop over epoch 0 was left at batch 2"):
        assert len(list(other)) == 3


def test_sampler_view_is_not_a_reference_cycle_and_has_the_samplers_length():
    loader = ed.enlighten(DataLoader(Images(32), batch_size=8, shuffle=True), ed.mixup_pause(1, alpha=0.2),
                          num_classes=4)
    loader.sampler.set_epoch(1)
    assert len(loader.sampler) == 32 and hasattr(loader.sampler, "set_epoch")
    with pytest.raises(TypeError, match=r"iterate the loader"):
        iter(loader.sampler)
    gone = weakref.ref(loader)
    del loader
    assert gone() is None  # freed at once, not at a garbage collection


@pytest.mark.filterwarnings("ignore:world_size > 1 but torch.distributed is not initialised")
def test_len_with_two_ranks_after_a_break_is_the_same_resumed_or_not():
    def make():
        return ed.enlighten(DataLoader(Images(40), batch_size=4), ed.mixup_pause(2, alpha=0.2), num_classes=4,
                            rank=0, world_size=2)

    whole = make()
    list(whole)
    for k, _ in enumerate(whole):
        if k == 1:
            break
    live = make()
    list(live)
    it = iter(live)
    next(it)
    resumed = make()
    resumed.load_state_dict(live.state_dict())
    for k, _ in enumerate(resumed):
        break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert len(resumed) == len(whole) == len(list(whole))  # no process group: closing combines nothing


def test_a_first_pass_under_inference_mode_leaves_the_loader_usable_for_training():
    # Scoring the data first (or building the loader) under torch.inference_mode() must not turn the loader's
    # long-lived state (shared clock, loss table, staging buffers) into inference tensors, which could never be
    # written again outside it.
    def make():
        schedule = ed.Schedule(2, during=ed.Phase(drop_high_loss=0.25, cutmix_alpha=1.0, mix_prob=0.5),
                               after=ed.Phase(mixup_alpha=0.4))
        return ed.enlighten(DataLoader(Images(32), batch_size=8, shuffle=True), schedule, num_classes=4,
                            augment=ed.GpuAugment(6, brightness=0.2, hue=0.1))

    def epoch(loader, model, criterion):
        for x, y in loader:
            criterion(model(x.flatten(1)), y)

    with torch.inference_mode():
        scored = make()
        model = model_for(features=108)
        criterion = scored.track(nn.CrossEntropyLoss())
        epoch(scored, model, criterion)
        state = scored.state_dict()
    for _ in range(2):
        epoch(scored, model, criterion)
    plain = make()
    plain_criterion = plain.track(nn.CrossEntropyLoss())
    for _ in range(3):
        epoch(plain, model, plain_criterion)
    assert scored.history == plain.history and scored.history[1]["removed"] > 0
    with torch.inference_mode():
        scored.load_state_dict(state)
    epoch(scored, model, criterion)
    assert scored.history == plain.history[:2]


def test_input_that_a_later_phase_cannot_cut_is_refused_at_the_first_batch():
    vectors = DataLoader(TensorDataset(torch.randn(16, 5), torch.randint(0, 3, (16,))), batch_size=4)
    loader = ed.enlighten(vectors, ed.mixup_pause(2, alpha=0.0, cutmix_alpha=1.0), num_classes=3)
    with pytest.raises(ValueError, match=r"CutMix needs \(B, C, H, W\) input: the schedule's 'after' phase uses it "
                                         r"\(cutmix_alpha=1.0\), got input of shape \(4, 5\)"):
        next(iter(loader))  # epoch 0 is in the pause: without the check, the run would fail at epoch 2
    # Mixup alone mixes vectors; an augmentation may make images of them, so it is left to the mixing to judge.
    assert len(list(ed.enlighten(vectors, ed.mixup_pause(2, alpha=1.0), num_classes=3))) == 4
    images = ed.enlighten(vectors, ed.mixup_pause(2, alpha=0.0, cutmix_alpha=1.0), num_classes=3,
                          augment=lambda x: x.view(-1, 1, 1, 5))
    assert [tuple(x.shape) for x, _ in images] == [(4, 1, 1, 5)] * 4
    hwc = DataLoader(TensorDataset(torch.rand(16, 8, 8, 3), torch.randint(0, 3, (16,))), batch_size=4)
    with pytest.raises(ValueError, match=r"'after' phase uses it \(cutmix_alpha=1.0\), got input of shape "
                                         r"\(4, 8, 8, 3\), which looks channels-last"):
        next(iter(ed.enlighten(hwc, ed.mixup_pause(2, alpha=0.0, cutmix_alpha=1.0), num_classes=3)))


def test_batches_and_datasets_of_the_wrong_form_are_named():
    one_item = ed.enlighten(DataLoader(TensorDataset(torch.zeros(8, 3)), batch_size=4), ed.mixup_pause(1, alpha=0.2),
                            num_classes=2)
    with pytest.raises(ValueError, match=r"batches should be a tuple/list \(input, target, ...\) of at least 2 items "
                                         r"when the schedule mixes or smooths labels, got a list of 1 item\(s\)"):
        list(one_item)

    class NoLen(Dataset):
        def __getitem__(self, i):
            return torch.zeros(3), 0

    with pytest.raises(TypeError, match="loader.dataset should have a len\\(\\) .* got NoLen, which has no __len__"):
        ed.enlighten(DataLoader(NoLen(), batch_size=2, sampler=range(4)), ed.high_loss_removal(3, fraction=0.1))
    with pytest.raises(TypeError, match=r"input_key should be a dict key \(hashable\) or None, got input_key=\[\]"):
        ed.enlighten(DataLoader(Images(8), batch_size=4), ed.high_loss_removal(3, fraction=0.1), input_key=[])


@pytest.mark.parametrize("when", ["before saving", "after loading, before saving again"])
def test_set_epoch_of_the_next_epoch_before_a_checkpoint_is_kept(when):
    # A loop capped at a number of steps per epoch breaks, moves on with set_epoch(epoch + 1), then saves: the
    # resumed run starts that epoch, as the original loader does, and does not continue the left one.
    def make():
        return ed.enlighten(DataLoader(Images(40), batch_size=8, shuffle=True), ed.high_loss_removal(3, fraction=0.25),
                            seed=2)

    loader = make()
    for _ in loader:
        pass
    for k, _ in enumerate(loader):
        if k == 1:
            break
    if when == "before saving":
        loader.set_epoch(2)
        state = _saved(loader)
    else:
        loaded = make()
        loaded.load_state_dict(_saved(loader))
        loaded.set_epoch(2)
        state = _saved(loaded)
        loader.set_epoch(2)
    assert state["chosen"] and state["left"]
    resumed = make()
    resumed.load_state_dict(state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expected = [ids_of(x) for x, _ in loader]
        got = [ids_of(x) for x, _ in resumed]
    assert resumed.epoch == loader.epoch == 2 and got == expected and len(got) == 5
    assert not any("goes on with the rest of that epoch" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match=r"state\['chosen'\] should be a bool, got chosen=1"):
        make().load_state_dict({**state, "chosen": 1})


@pytest.mark.parametrize("form", ["tensor", "one-item list", "dict without target_key"])
def test_batches_without_targets_serve_a_schedule_that_needs_none(form):
    # High-Loss Removal for a language model: batches of token ids, the loss computed from the ids themselves.
    tokens = torch.arange(64).reshape(16, 4)

    class Ids(Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return {"tensor": tokens[i], "one-item list": [tokens[i]], "dict without target_key": {"ids": tokens[i]}}[
                form]

    loader = ed.enlighten(DataLoader(Ids(), batch_size=4, shuffle=True), ed.high_loss_removal(3, fraction=0.25),
                          input_key="ids" if form.startswith("dict") else None,
                          augment=(lambda x: x + 0) if form == "one-item list" else None)
    for _ in range(2):
        for batch in loader:
            ids = {"tensor": lambda b: b, "one-item list": lambda b: b[0], "dict without target_key": lambda b: b["ids"]}[
                form](batch)
            assert isinstance(batch, {"tensor": torch.Tensor, "one-item list": list, "dict without target_key": dict}[
                form]) and ids.shape == (4, 4)
            loader.record(ids[:, 0].float())  # the loss of a sample: its first id
    assert set(loader.removed_indices().tolist()) == {15, 14, 13, 12}  # the 25 % highest "losses"
    mixing = ed.enlighten(DataLoader(Ids(), batch_size=4), ed.mixup_pause(1, alpha=0.2), num_classes=2,
                          input_key="ids", target_key="label")
    with pytest.raises((TypeError, ValueError),
                       match=r"batches should be|is not a key of the batch|input_key should be an int \(an item's"):
        next(iter(mixing))


def test_mapping_batches_of_other_types_are_moved_and_keep_their_type():
    # A tokenizer's collator gives a BatchEncoding, a UserDict: its tensors move to device= like a dict's do.
    class Encoding(collections.UserDict):
        pass

    class Tokens(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return Encoding(input_ids=torch.full((3,), i), labels=torch.tensor(i % 2))

    from enlight_data.transfer import move_to

    # (The meta device, which a loader refuses, shows the move of every tensor where the CPU has no other device.)
    moved = move_to(Tokens()[3], torch.device("meta"))
    assert type(moved) is Encoding and moved["input_ids"].is_meta and moved["labels"].is_meta
    loader = ed.enlighten(DataLoader(Tokens(), batch_size=4), ed.high_loss_removal(2, fraction=0.25), device="cpu")
    for batch in loader:
        assert type(batch) is Encoding and batch["input_ids"].shape == (4, 3)
    mixing = ed.enlighten(DataLoader(Tokens(), batch_size=4), ed.mixup_pause(0, alpha=0.2), num_classes=2,
                          device="cpu", input_key="input_ids", target_key="labels")
    for batch in mixing:
        assert type(batch) is Encoding and batch["labels"].shape == (4, 2) and batch["input_ids"].is_floating_point()


def test_keys_and_batch_forms_are_checked_from_the_first_batch():
    rows = [{"x": torch.zeros(3), "label": 7}] * 8
    typo = ed.enlighten(DataLoader(rows, batch_size=4), ed.high_loss_removal(2, fraction=0.25), num_classes=4,
                        target_key="labels")
    with pytest.raises(ValueError, match=r"target_key='labels' is not a key of the batch, whose keys are \['x', 'label'\]"):
        next(iter(typo))
    # Only the phase after the period augments, yet a batch it cannot read is refused at the first batch.
    later = ed.Schedule(2, during=ed.Phase(), after=ed.Phase(augment=ed.GpuAugment(2)))
    with pytest.raises(ValueError, match="dict batches need input_key, got input_key=None"):
        next(iter(ed.enlighten(DataLoader(rows, batch_size=4), later)))


def test_a_tracked_loss_in_a_loop_that_fetches_ahead_is_refused_not_recorded_against_the_next_batch():
    loader = ed.enlighten(DataLoader(Images(24), batch_size=8, shuffle=True), ed.high_loss_removal(2, fraction=0.25))
    criterion = loader.track(nn.CrossEntropyLoss())
    logits = torch.zeros(8, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"was given the previous batch's target: the loop fetched the next batch "
                                           r"before the step on this one .*PrefetchLoader"):
        for _, y in one_ahead(loader):
            criterion(logits, y)
    assert loader.losses().isnan().all()  # nothing was recorded against the wrong samples


def test_record_without_a_target_in_a_loop_that_fetches_ahead_warns_at_once_and_explains_the_end():
    loader = ed.enlighten(DataLoader(Images(24), batch_size=8), ed.high_loss_removal(2, fraction=0.25))
    with pytest.warns(UserWarning, match=r"the first record\(\) of this pass over epoch 0 comes after 2 batches"):
        with pytest.raises(RuntimeError, match=r"needs a current batch: .*first record\(\) came after more than one "
                                               r"batch .*fetched the next batch before the step on this one"):
            for x, _ in one_ahead(loader):
                loader.record(x[:, 0, 0, 0].clone())


def test_losses_of_new_targets_and_of_batches_recorded_in_step_raise_nothing():
    # A target made in the step (a copy, another dtype) may reuse the memory of an earlier batch's freed target:
    # only a live earlier target counts, so this loop records every batch and says nothing.
    loader = ed.enlighten(DataLoader(Images(40), batch_size=8), ed.high_loss_removal(2, fraction=0.25))
    criterion = loader.track(nn.CrossEntropyLoss())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            for x, y in loader:
                criterion(torch.zeros(len(y), 4), y.clone().to(torch.int32).long())
                del x, y
    assert loader.history[0]["recorded"] == 40 and loader.history[1]["recorded"] == 30


def test_a_record_after_a_break_says_nothing_of_fetching_ahead():
    loader = ed.enlighten(DataLoader(Images(16), batch_size=8), ed.high_loss_removal(2, fraction=0.25))
    criterion = loader.track(nn.CrossEntropyLoss())
    for _, y in loader:
        break
    with pytest.raises(RuntimeError, match=r"inside the loop over the loader\. To score"):
        criterion(torch.zeros(8, 4), y)


def test_a_loaded_state_forgets_this_processs_earlier_passes():
    loader = ed.enlighten(DataLoader(Images(32), batch_size=8), ed.high_loss_removal(2, fraction=0.25))
    for step, (x, _) in enumerate(loader):
        if step % 2:  # records only some batches: its first record came after two batches
            loader.record(x[:, 0, 0, 0].clone())
    fresh = ed.enlighten(DataLoader(Images(32), batch_size=8), ed.high_loss_removal(2, fraction=0.25))
    loader.load_state_dict(fresh.state_dict())
    with pytest.raises(RuntimeError, match=r"inside the loop over the loader\. To score"):
        loader.record(torch.zeros(8))


def _coded_images(n=16, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=g)
    return TensorDataset(x, torch.arange(n) % classes)


def test_augmentation_is_drawn_anew_each_epoch():
    # The same batch position in another epoch gets other crops/flips/jitter: draws come from (seed, epoch, step).
    data = DataLoader(_coded_images(), batch_size=8, shuffle=False)
    loader = ed.enlighten(data, ed.Schedule(0), num_classes=4,
                          augment=ed.GpuAugment(8, scale=(0.2, 1.0), brightness=0.4, jitter_prob=1.0))
    epochs = [[x.clone() for x, _ in loader] for _ in range(2)]
    for a, b in zip(*epochs):
        assert not torch.equal(a, b)
    again = ed.enlighten(data, ed.Schedule(0), num_classes=4,
                         augment=ed.GpuAugment(8, scale=(0.2, 1.0), brightness=0.4, jitter_prob=1.0))
    for want in epochs:  # and reproducibly so
        for a, (x, _) in zip(want, again):
            assert torch.equal(a, x)


def test_mixup_or_cutmix_is_chosen_per_batch():
    # switch_prob picks Mixup or CutMix for each batch (a host draw from (seed, epoch, step)), not once per epoch.
    data = DataLoader(_coded_images(n=256), batch_size=4, shuffle=False)
    phase = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5)
    loader = ed.enlighten(data, ed.Schedule(0, after=phase), num_classes=4)
    kinds = set()
    for x, _ in loader:
        # CutMix pastes whole pixels of the partner (integer values stay integers); Mixup blends (fractions). One
        # choice per batch: its samples are all of one kind (timm's "elem" mode would choose per sample).
        integer = (x == x.round()).flatten(1).all(1)
        assert integer.all() or not integer.any(), integer
        kinds.add(bool(integer.all()))
    assert kinds == {True, False}


def test_a_single_score_at_the_threshold_predicts_the_negative_class():
    # ``output > threshold`` (strictly, as BCE's decision at logit 0 / probability 0.5 is taken) is the positive
    # class; a score exactly at the threshold is negative.
    x = torch.zeros(8, 3)
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    loader = ed.enlighten(DataLoader(TensorDataset(x, y), batch_size=8), ed.Schedule(0))
    for threshold in (0.0, 0.5):
        for _, target in loader:
            loader.record(torch.ones(8), output=torch.full((8,), threshold), target=target, threshold=threshold)
        assert loader.history[-1]["accuracy"] == 0.75  # the six negatives right, the two positives wrong


def test_the_no_removal_warning_names_the_cause_and_when_it_keeps_quiet():
    # The failure table's noop-removal-period row checks the usual case (the period ended after epoch 0).
    x = torch.randn(3, 4)
    y = (x[:, 0] > 0).long()

    def said(schedule, *, first=None):
        loader = ed.enlighten(DataLoader(TensorDataset(x, y), batch_size=2), schedule)
        criterion = loader.track(nn.CrossEntropyLoss())
        if first is not None:
            loader.set_epoch(first)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                for xb, yb in loader:
                    criterion(torch.stack([xb[:, 0], -xb[:, 0]], 1), yb)  # always wrong: the period runs to its cap
        return [str(w.message) for w in caught if "removed nothing" in str(w.message)]

    # Three samples: a quarter of them rounds down to none, so the capped period removed nothing.
    (message,) = said(ed.high_loss_removal(ed.Period(until_accuracy=0.9, max_epochs=2), fraction=0.25))
    assert "ended at max_epochs=2" in message and "or on a larger max_epochs" in message
    # Removal goes on after the period (here it too rounds down to none); no epoch ran in the period.
    both = ed.Schedule(ed.Period(until_accuracy=0.9, max_epochs=2), during=ed.Phase(drop_high_loss=0.25),
                       after=ed.Phase(drop_high_loss=0.25))
    assert said(both) == []
    assert said(ed.high_loss_removal(ed.Period(until_accuracy=0.9, max_epochs=2), fraction=0.25), first=5) == []
    # An epoch past the cap (set_epoch jumped there) that reaches the accuracy did not end the period: the cap did.
    loader = ed.enlighten(DataLoader(TensorDataset(x, y), batch_size=2),
                          ed.high_loss_removal(ed.Period(until_accuracy=0.5, max_epochs=3), fraction=0.25))
    criterion = loader.track(nn.CrossEntropyLoss())
    with pytest.warns(RuntimeWarning, match=r"ended at max_epochs=3, and no epoch"):
        for epoch, sign in ((0, -1), (5, 1)):  # wrong in epoch 0 (in the period), right in epoch 5
            loader.set_epoch(epoch)
            for xb, yb in loader:
                criterion(sign * torch.stack([-xb[:, 0], xb[:, 0]], 1), yb)
    assert [h["in_period"] for h in loader.history] == [True, False] and loader.history[-1]["accuracy"] == 1.0
    # A hand-built max_epochs=1 schedule, or 1-epoch fixed one, is warned about nowhere else.
    once = ed.Schedule(ed.Period(until_accuracy=0.9, max_epochs=1), during=ed.Phase(drop_high_loss=0.25))
    (message,) = said(once)
    assert "ended at max_epochs=1" in message
    (message,) = said(ed.Schedule(1, during=ed.Phase(drop_high_loss=0.25)))
    assert "the enlightenment period of 1 epoch(s) ended after epoch 0, and no epoch" in message
    assert "make the period longer" in message
    assert said(ed.Schedule(0, during=ed.Phase(drop_high_loss=0.25))) == []  # no epoch in the period


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_labels_of_wide_unsigned_dtypes_are_checked_and_mixed(dtype):
    # numpy uint16 label arrays collate to torch.uint16, which has no aminmax or <: the range check crashed in torch.
    x = torch.rand(8, 3, 4, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]).to(dtype)
    mixing = ed.enlighten(DataLoader(TensorDataset(x, labels), batch_size=4), ed.mixup_pause(0, alpha=1.0),
                          num_classes=3)
    rows = torch.cat([y for _, y in mixing])
    assert rows.shape == (8, 3) and torch.allclose(rows.sum(1), torch.ones(8))
    removal = ed.enlighten(DataLoader(TensorDataset(x, labels), batch_size=4), ed.high_loss_removal(2, fraction=0.25),
                           num_classes=3)
    assert [y.dtype for _, y in removal] == [dtype, dtype]  # passed on as they came
    for _, y in removal:  # and scored, also against torch's ignore_index
        removal.record(torch.ones(4), output=F.one_hot(y.long(), 3).float(), target=y)
    assert removal.history[-1]["accuracy"] == 1.0 and removal.history[-1]["recorded"] == 8
    bad = labels.clone()
    bad[5] = 7
    with pytest.raises(ValueError, match=r"targets should be in \[0, 3\) \(num_classes=3\), got values in \[0, 7\] "
                                         r"at dataset indices \[5\]"):
        list(ed.enlighten(DataLoader(TensorDataset(x, bad), batch_size=8), ed.mixup_pause(0, alpha=1.0),
                          num_classes=3))
    with pytest.raises(ValueError, match=r"target should hold class indices in \[0, 3\) .* got values in \[0, 7\]"):
        ed.mix_batch(x, bad, ed.Phase(mixup_alpha=1.0), num_classes=3, generator=torch.Generator())


def test_finite_float64_losses_beyond_float32_stay_finite_on_every_recording_path():
    # The table holds float32: 1e39 overflowed to inf, and the sample with the highest loss was never removed.
    big = torch.finfo(torch.float32).max
    x = torch.zeros(4, 2)
    y = torch.tensor([0, 1, 0, 1])

    def table_after(step):
        loader = ed.enlighten(DataLoader(TensorDataset(x, y), batch_size=4), ed.high_loss_removal(2, fraction=0.25))
        for _, yb in loader:
            step(loader, yb)
        assert loader.history[-1]["nonfinite"] == 0
        return loader.losses()

    losses = torch.tensor([1.0, 1e39, 2.0, 3.0], dtype=torch.float64)
    assert table_after(lambda loader, yb: loader.record(losses))[1] == big
    assert table_after(lambda loader, yb: loader.record(losses[:, None].expand(4, 3)))[1] == big  # (B, T) losses
    tracked = lambda output, target, reduction="mean": F.mse_loss(output, target, reduction=reduction)  # noqa: E731
    assert table_after(lambda loader, yb: loader.track(tracked)(losses.sqrt()[:, None], torch.zeros(4, 1,
                                                                dtype=torch.float64)))[1] == big
