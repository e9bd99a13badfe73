"""Keeps README.md's "Failure behaviour" table true: one check per row, keyed by the row's id.

The table lives in README.md under ``## Failure behaviour``; its first column is a short id in
backticks. A row without a check here, or a check without a row there, fails. The tests skip
while README.md has no such heading.
"""

from __future__ import annotations

import gc
import io
import math
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, Subset, TensorDataset, WeightedRandomSampler

import enlight_data as ed
from fault_helpers import BAD, N, Faulty, make
from helpers import one_ahead
from resume_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

README = Path(__file__).resolve().parent.parent / "README.md"
HEADING = "## Failure behaviour"


def table_ids(text: str) -> list[str] | None:
    """The ids in the first column of the table under ``HEADING``; None without the heading."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == HEADING)
    except StopIteration:
        return None
    ids = []
    for line in lines[start + 1 :]:
        if line.startswith("#") and not line.startswith("###"):
            break  # the next section
        if not line.lstrip().startswith("|"):
            continue
        first = line.strip().strip("|").split("|")[0].strip().strip("`").strip()
        if first and first != "id" and not set(first) <= set("-: "):
            ids.append(first)
    return ids


def _readme_ids() -> list[str] | None:
    return table_ids(README.read_text(encoding="utf-8")) if README.exists() else None


# ---------------------------------------------------------------------- the checks
CHECKS: dict[str, Callable[[], None]] = {}


def check(row_id: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        CHECKS[row_id] = fn
        return fn

    return register


def _loader(dataset, schedule=None, *, batch_size=4, **kw) -> ed.EnlightLoader:
    schedule = schedule if schedule is not None else ed.mixup_pause(1, alpha=0.2)
    kw.setdefault("num_classes", 3)
    return ed.enlighten(DataLoader(dataset, batch_size=batch_size), schedule, **kw)


def _tensors(x, y) -> TensorDataset:
    return TensorDataset(x, y)


def _error_of(loader: ed.EnlightLoader) -> tuple[type, str] | None:
    try:
        list(loader)
    except Exception as exc:  # noqa: BLE001 - the type is what is checked
        return type(exc), str(exc)
    return None


@check("sample-error")
def _sample_error():
    for workers in (0, 2):
        loader = make("raise", workers)
        with pytest.raises(ed.SampleError, match=rf"dataset\[{BAD}\] raised ValueError"):
            list(loader)
        assert len([b for b in loader]) > 0 and loader.epoch == 1
    # A dataset with __getitems__ (a Subset, as random_split makes) fetches whole batches: the index is named too.
    subset = Subset(Faulty("raise"), list(range(N)))
    loader = ed.enlighten(DataLoader(subset, batch_size=4), ed.mixup_pause(5, alpha=0.2), num_classes=3)
    with pytest.raises(ed.SampleError, match=rf"^dataset\[{BAD}\] raised ValueError: corrupt record {BAD}$"):
        list(loader)


@check("worker-killed")
def _worker_killed():
    loader = make("kill", 2, persistent=True, timeout=20)
    error = _error_of(loader)
    assert error is not None and error[0] is RuntimeError
    assert re.search(r"DataLoader worker .*(is killed by signal|exited unexpectedly)", error[1]), error
    assert sum(x.shape[0] for x, _ in loader) == N and loader.epoch == 1
    del loader
    gc.collect()


@check("worker-hang")
def _worker_hang():
    with pytest.raises(RuntimeError, match=r"DataLoader timed out after 1 seconds"):
        list(make("hang", 2, timeout=1))


@check("label-range")
def _label_range():
    loader = _loader(_tensors(torch.zeros(8, 2), torch.tensor([0, 1, 2, 3, 0, 1, 2, 0])))
    with pytest.raises(ValueError, match=r"num_classes=3.*dataset indices \[3\]"):
        list(loader)
    padded = torch.tensor([0, 1, -100, 2, 0, 1, 2, 0])  # the criterion's ignore_index
    with pytest.raises(ValueError, match=r"num_classes=3\), got values in \[-100, 2\] at dataset indices \[2\] \(an "
                                         r"ignore_index target cannot be mixed or smoothed into a soft row\)"):
        list(_loader(_tensors(torch.zeros(8, 2), padded)))
    # Without soft targets the criterion judges a negative index (ignore_index); a class above the range is refused.
    unmixed = _loader(_tensors(torch.zeros(8, 2), padded), ed.high_loss_removal(2, fraction=0.1))
    assert [y.tolist() for _, y in unmixed] == [[0, 1, -100, 2], [0, 1, 2, 0]]
    high = _loader(_tensors(torch.zeros(8, 2), torch.tensor([0, -100, 1, 2, 0, 3, 2, 0])),
                   ed.high_loss_removal(2, fraction=0.1))
    with pytest.raises(ValueError, match=r"got values in \[0, 3\] at dataset indices \[5\]"):
        list(high)


@check("soft-rows")
def _soft_rows():
    rows = torch.full((8, 3), 1 / 3)
    rows[5] = torch.tensor([0.5, -0.5, 1.0])
    with pytest.raises(ValueError, match=r"target rows should be finite and non-negative.*\[5\]"):
        list(_loader(_tensors(torch.zeros(8, 2), rows)))


@check("target-type")
def _target_type():
    with pytest.raises(TypeError, match=r"target of shape \(B,\) should hold integer class indices, got target of "
                                        "dtype torch.float32"):
        list(_loader(_tensors(torch.zeros(8, 2), torch.zeros(8))))
    with pytest.raises(ValueError, match="target rows should have num_classes=3 columns"):
        list(_loader(_tensors(torch.zeros(8, 2), torch.eye(4)[[0] * 8])))
    strings = [(torch.zeros(2), "cat")] * 8
    with pytest.raises(TypeError, match="target should be a Tensor"):
        list(_loader(strings))


@check("input-type")
def _input_type():
    samples = [("text", 0)] * 8
    with pytest.raises(TypeError, match="input should be a Tensor"):
        list(_loader(samples))


@check("cutmix-shape")
def _cutmix_shape():
    loader = _loader(_tensors(torch.zeros(8, 5), torch.zeros(8, dtype=torch.long)), ed.mixup_pause(0, alpha=0.2,
                                                                                                 cutmix_alpha=1.0))
    with pytest.raises(ValueError, match=r"CutMix needs \(B, C, H, W\) input"):
        list(loader)


@check("channels-last")
def _channels_last():
    hwc = _tensors(torch.zeros(8, 16, 12, 3, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    for augment in (ed.GpuAugment(8), _kornia_crop()):
        loader = _loader(hwc, augment=augment)
        with pytest.raises(ValueError, match=r"channels-first.*x.shape=\(4, 16, 12, 3\).*x.permute\(0, 3, 1, 2\)"):
            list(loader)
    with pytest.raises(ValueError, match=r"CutMix needs \(B, C, H, W\) input.*which looks channels-last"):
        list(_loader(hwc, ed.mixup_pause(1, alpha=0.0, cutmix_alpha=1.0)))  # at the first batch, in the pause


def _kornia_crop():
    import kornia.augmentation as K

    return K.RandomResizedCrop((8, 8))


@check("batch-structure")
def _batch_structure():
    with pytest.raises(TypeError, match="batches should be a tuple/list"):
        list(_loader([torch.zeros(2)] * 8))
    with pytest.raises(ValueError, match="of at least 2 items when the schedule mixes or smooths labels, got a list"):
        list(_loader([[torch.zeros(2)]] * 8))
    with pytest.raises(ValueError, match="input_key"):
        list(_loader([{"x": torch.zeros(2), "y": 0}] * 8))
    with pytest.raises(ValueError, match=r"input_key='img' is not a key"):
        list(_loader([{"x": torch.zeros(2), "y": 0}] * 8, input_key="img", target_key="y"))


@check("loss-shape")
def _loss_shape():
    loader = _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)))
    for x, y in loader:
        with pytest.raises(ValueError, match=r"per_sample_loss should have the batch size 4.*\(3,\)"):
            loader.record(torch.zeros(3))
        with pytest.raises(TypeError, match="per-sample losses"):
            loader.track(lambda out, tgt, reduction="mean": torch.tensor(1.0))(torch.zeros(4, 3), y)
        break


@check("accuracy-shape")
def _accuracy_shape():
    loader = _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)))
    for x, y in loader:
        with pytest.raises(ValueError, match=r"output and target should give predictions of one shape"):
            loader.record(torch.zeros(4), output=torch.zeros(4, 3, 2), target=y)
        break


@check("loss-nonfinite")
def _loss_nonfinite():
    loader = _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x, y in loader:
            loader.record(torch.tensor([0.5, math.nan, math.inf, 1.0]))
    assert loader.history[-1]["nonfinite"] == 4
    assert sum("non-finite" in str(w.message) for w in caught) == 1
    assert torch.isfinite(loader.losses()).sum() == 4  # only the finite ones entered the table


@check("input-nonfinite")
def _input_nonfinite():
    x = torch.rand(8, 2)
    x[5, 0] = math.nan
    phase = ed.Phase(mixup_alpha=1.0, mix_prob=0.5)
    unmixed, spread = 0, 0
    for seed in range(8):
        # Each sample its own class: a soft row says which sample a row is, and whether it was mixed.
        loader = _loader(_tensors(x, torch.arange(8)), ed.Schedule(period=0, after=phase), seed=seed, num_classes=8)
        for xb, rows in loader:
            for row, soft in zip(xb, rows):
                i = int(soft.argmax())
                if soft[i] == 1.0 and i != 5:
                    assert torch.equal(row, x[i]), (seed, i)  # unmixed: copied, whatever its partner holds
                    unmixed += 1
                elif soft[5] > 0 and i != 5:
                    spread += not row.isfinite().all()  # mixed with sample 5: its NaN comes along
    assert unmixed >= 10 and spread >= 1, (unmixed, spread)


@check("record-outside")
def _record_outside():
    loader = _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(RuntimeError, match="record\\(\\) needs a current batch"):
        loader.record(torch.zeros(4))
    for _ in loader:
        break
    with pytest.raises(RuntimeError, match="record\\(\\) needs a current batch"):
        loader.record(torch.zeros(4))  # after the loop was left: not against its last batch


@check("fetch-ahead")
def _fetch_ahead():
    data = _tensors(torch.zeros(12, 3), torch.arange(12) % 3)
    loader = _loader(data, ed.high_loss_removal(2, fraction=0.25))
    criterion = loader.track(torch.nn.CrossEntropyLoss())
    with pytest.raises(RuntimeError, match="given the previous batch's target: the loop fetched the next batch"):
        for x, y in one_ahead(loader):
            criterion(x, y)
    loader = _loader(data, ed.high_loss_removal(2, fraction=0.25))
    with pytest.warns(UserWarning, match=r"first record\(\) of this pass .* comes after 2 batches"):
        with pytest.raises(RuntimeError, match=r"needs a current batch: .*the loop fetched the next batch"):
            for x, _ in one_ahead(loader):
                loader.record(x.sum(1))


@check("bad-config")
def _bad_config():
    with pytest.raises(ValueError, match=r"fraction should be in \(0, 1\], got fraction=1.5"):
        ed.Period(fraction=1.5, total_epochs=10)
    with pytest.raises(ValueError, match="mixup_alpha should be >= 0"):
        ed.Phase(mixup_alpha=-1.0)
    with pytest.raises(TypeError, match="period should be an int or a Period"):
        ed.Schedule("5")
    with pytest.raises(TypeError, match="pad should be a bool"):
        _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), pad="yes")


@check("no-num-classes")
def _no_num_classes():
    with pytest.raises(ValueError, match="num_classes should be an int"):
        _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), num_classes=None)


@check("device")
def _device():
    with pytest.raises(ValueError, match="device should name a torch device"):
        _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), device="gpu0")
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last device (cuda:0 without CUDA)
    with pytest.raises(ValueError, match=f"device should be an available device, got device='{missing}'"):
        _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), device=missing)
    with pytest.raises(ValueError, match="device should be a device that holds data .* got device='meta'"):
        _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), device="meta")


@check("no-accuracy")
def _no_accuracy():
    schedule = ed.mixup_pause(ed.Period(until_accuracy=0.5), alpha=0.2)
    loader = _loader(_tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), schedule)
    with pytest.warns(RuntimeWarning, match="no training accuracy was scored") as caught:
        for _ in range(2):
            for x, _y in loader:
                loader.record(torch.ones(x.shape[0]))  # losses without output/target: nothing to score
    assert len([w for w in caught if "no training accuracy" in str(w.message)]) == 1
    assert loader.in_period
    regression = _loader(_tensors(torch.zeros(8, 2), torch.zeros(8)), schedule)
    with pytest.warns(UserWarning, match=r"criterion=MSELoss gives no training accuracy \(a regression loss\)"):
        regression.track(torch.nn.MSELoss())


@check("empty-epoch")
def _empty_epoch():
    schedule = ed.Schedule(ed.Period(until_accuracy=0.99, max_epochs=3), during=ed.Phase(drop_high_loss=0.9), after=ed.Phase())
    data = _tensors(torch.arange(20.0).view(20, 1), torch.arange(20) % 3)
    loader = ed.enlighten(DataLoader(data, batch_size=8, drop_last=True), schedule)
    for x, y in loader:
        loader.record(x[:, 0], output=torch.zeros(x.shape[0], 3), target=y)  # 16 recorded, a third right
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(loader) == [] and list(loader) == []
    assert [str(w.message) for w in caught] == [
        "epoch 1 has no batches: with drop_last=True, the samples left after removing 14 do not fill one batch of 8; "
        "it trains on nothing (warned once)"
    ]
    assert [h["batches"] for h in loader.history] == [2, 0, 0]


@check("noop-strategy")
def _noop_strategy():
    for make_schedule, match in [
        (lambda: ed.high_loss_removal(5, fraction=0.0), "removes nothing"),
        (lambda: ed.mixup_pause(5, alpha=0.0), "pauses nothing"),
        (lambda: ed.alpha_boost(5, alpha=0.4, boost_alpha=0.4), "boosts nothing|nothing is boosted"),
        (lambda: ed.high_loss_removal(0, fraction=0.1), "removes nothing"),
        (lambda: ed.high_loss_removal(1, fraction=0.1), "removes nothing"),
        (lambda: ed.high_loss_removal(ed.Period(until_accuracy=0.5, max_epochs=1), fraction=0.1), "removes nothing"),
        (lambda: ed.mixup_pause(5, alpha=0.8, mix_prob=0.0), "mix_prob=0 pauses nothing"),
        (lambda: ed.alpha_boost(5, alpha=0.2, boost_alpha=1.0, mix_prob=0.0), "mix_prob=0 boosts nothing"),
        (lambda: ed.alpha_boost(5, alpha=0.2, boost_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0),
         "switch_prob=1 boosts nothing: every batch uses CutMix"),
        (lambda: ed.alpha_boost(5, alpha=1.0, boost_alpha=0.0, cutmix_alpha=1.0, switch_prob=1.0),
         "switch_prob=1 boosts nothing: every batch uses CutMix"),
    ]:
        with pytest.warns(UserWarning, match=match):
            make_schedule()


@check("noop-removal-period")
def _noop_removal_period():
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()

    def run(sign):
        loader = _loader(_tensors(x, y), ed.high_loss_removal(ed.Period(until_accuracy=0.5, max_epochs=3),
                                                              fraction=0.25), num_classes=None)
        criterion = loader.track(nn.CrossEntropyLoss())
        for _ in range(3):
            for xb, yb in loader:
                criterion(sign * torch.stack([-xb[:, 0], xb[:, 0]], 1), yb)  # always right (1) or wrong (-1)
        return loader

    with pytest.warns(RuntimeWarning, match=r"\(until_accuracy=0.5\) ended after epoch 0, whose training accuracy 1 "
                                            r"reached it, and no epoch of it left out a sample: High-Loss Removal "
                                            r"removed nothing"):
        loader = run(1)
    assert [h["in_period"] for h in loader.history] == [True, False, False]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a period that removed (ended at max_epochs): nothing to say
        loader = run(-1)
    assert [h["removed"] for h in loader.history] == [0, 8, 8] and loader.next_epoch == 3


@check("empty-dataset")
def _empty_dataset():
    with pytest.raises(ValueError, match=r"loader.dataset should hold at least one sample"):
        _loader(_tensors(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


class _Stream(IterableDataset):
    def __iter__(self):
        return iter([])


@check("iterable-dataset")
def _iterable_dataset():
    with pytest.raises(TypeError, match=r"enlight_data.stream\(\)"):
        ed.enlighten(DataLoader(_Stream(), batch_size=2), ed.mixup_pause(1, alpha=0.2), num_classes=3)


@check("batch-sampler")
def _batch_sampler():
    data = _tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long))
    buckets = [[0, 1, 2], [3, 4], [5, 6, 7]]
    for loader in (DataLoader(data, batch_sampler=buckets), DataLoader(data, batch_size=None)):
        with pytest.raises(ValueError, match="loader.batch_size should be an int, got batch_size=None"):
            ed.enlighten(loader, ed.high_loss_removal(3, fraction=0.1))


@check("made-before-init")
def _made_before_init():
    # Made with no process group; then one of 2 ranks "comes up" (the two calls the loader asks patched, as the
    # real one is in test_distributed.py, where gloo ranks make their loaders before init_process_group).
    from unittest import mock

    data = _tensors(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long))
    alone = ed.enlighten(DataLoader(data, batch_size=4), ed.high_loss_removal(3, fraction=0.1))
    asked = ed.enlighten(DataLoader(data, batch_size=4), ed.high_loss_removal(3, fraction=0.1), world_size=1)
    with mock.patch("torch.distributed.is_initialized", return_value=True), \
            mock.patch("torch.distributed.get_world_size", return_value=2):
        with pytest.raises(RuntimeError, match=r"the loader was made before torch.distributed.init_process_group\(\)"
                                               r", without rank= and world_size=: each of the 2 ranks would read"):
            iter(alone)
        it = iter(asked)  # asked for: no error
    assert sum(x.shape[0] for x, _ in it) == 8  # (read outside the patch: the rest of torch.distributed is not up)
    assert alone.epoch == -1 and not alone.history  # nothing was begun


@check("rank-disagreement")
def _rank_disagreement():
    # Rank 0 of 2 whose peer would yield one more batch, or read another order (the collective patched; the real one
    # is in test_distributed.py, on gloo ranks that run a step's all-reduce as DDP does).
    from unittest import mock

    data = _tensors(torch.zeros(24, 2), torch.zeros(24, dtype=torch.long))
    for column, match in [(0, r"ranks should yield the same number of batches in each pass over an epoch, got "
                                 r"\[3, 4\] by rank in epoch 0: a rank with more would wait forever"),
                          (1, r"ranks should read one global order per epoch .*got different ones: digests \[")]:
        def all_gather(outs, mine, group=None, column=column):
            for out in outs:
                out.copy_(mine)
            outs[1][column] += 1  # the other rank's
        loader = ed.enlighten(DataLoader(data, batch_size=4), ed.high_loss_removal(3, fraction=0.1), rank=0,
                              world_size=2)
        with mock.patch("torch.distributed.is_initialized", return_value=True), \
                mock.patch("torch.distributed.get_world_size", return_value=2), \
                mock.patch("torch.distributed.get_backend", return_value="gloo"), \
                mock.patch("torch.distributed.all_gather", all_gather):
            with pytest.raises(ValueError, match=match):
                next(iter(loader))


def _save(loader) -> dict:
    buf = io.BytesIO()
    torch.save(loader.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _mid_epoch_state() -> dict:
    loader = _loader(_tensors(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long)))
    for _ in loader:
        break
    return _save(loader)


@check("state-mismatch")
def _state_mismatch():
    state = _mid_epoch_state()
    other = _loader(_tensors(torch.zeros(13, 2), torch.zeros(13, dtype=torch.long)))
    with pytest.raises(ValueError, match="state does not match this loader: source num_samples is 12"):
        other.load_state_dict(state)
    assert other.epoch == -1
    other = _loader(_tensors(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long)), world_size=2, rank=0)
    with pytest.raises(ValueError, match="world_size"):
        other.load_state_dict(state)
    # Another sampling replays the saved positions in another order: samples twice or never.
    data = _tensors(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long))
    for loader, match in (
        (ed.enlighten(DataLoader(data, batch_size=4, shuffle=True), ed.mixup_pause(1, alpha=0.2), num_classes=3),
         "source shuffle is False in the state and True here"),
        (ed.enlighten(DataLoader(data, batch_size=4, sampler=WeightedRandomSampler(torch.ones(12), 12)),
                      ed.mixup_pause(1, alpha=0.2), num_classes=3),
         "source sampler is None in the state and 'WeightedRandomSampler' here"),
    ):
        with pytest.raises(ValueError, match=match):
            loader.load_state_dict(state)
    # A stream()'s state (same size, batch size and seed) replays another order: NOTE [ A state's kind ].
    other = _loader(_tensors(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long)))
    streamed = dict(state, signature={**state["signature"], "source": {**state["signature"]["source"], "kind": "stream"}})
    with pytest.raises(ValueError, match=r"it is a state of stream\(\)'s loader, and this is enlighten\(\)'s"):
        other.load_state_dict(streamed)


@check("state-malformed")
def _state_malformed():
    state = _mid_epoch_state()
    loader = _loader(_tensors(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"state\['position'\] should be at most the 3 batches"):
        loader.load_state_dict(dict(state, position=4))
    with pytest.raises(ValueError, match=r"state\['excluded'\]"):
        loader.load_state_dict(dict(state, excluded=torch.tensor([99])))
    table = dict(state["table"], size="x")
    with pytest.raises(ValueError, match=r"state\['table'\]\['size'\] should be an int"):
        loader.load_state_dict(dict(state, table=table))
    table = dict(state["table"], count=state["table"]["count"] - 1)
    with pytest.raises(ValueError, match=r"state\['table'\]\['count'\] should be finite and >= 0, got \[-1.0"):
        loader.load_state_dict(dict(state, table=table))
    for key, value in (("epoch", "1"), ("position", None), ("seen", 1.5), ("next_epoch", True)):
        with pytest.raises(ValueError, match=rf"state\['{key}'\] should be an int, got state\['{key}'\]="):
            loader.load_state_dict(dict(state, **{key: value}))
    with pytest.raises(ValueError, match=r"^state\['signature'\] should be a dict with keys 'source' and "
                                         r"'schedule', got 3$"):
        loader.load_state_dict(dict(state, signature=3))
    with pytest.raises(ValueError, match=r"^state\['signature'\]\['source'\] should be a dict, got None$"):
        loader.load_state_dict(dict(state, signature={"schedule": {}}))
    with pytest.raises(ValueError, match="state is missing keys"):
        loader.load_state_dict({"version": 1})
    with pytest.raises(TypeError, match="state should be a dict"):
        loader.load_state_dict(None)
    assert loader.epoch == -1
    # A custom sampler that cannot be replayed and has no len(): load_state_dict cannot count the epoch without
    # drawing its order, so a position past the epoch's end is refused when iter() has drawn it, not run as an empty
    # pass. (With a len(), the epoch is counted from it and the position refused at once.)

    class Unreplayable(torch.utils.data.Sampler):  # its own hidden RNG, no `generator` attribute
        def __init__(self, n):
            self.n, self.g = n, torch.Generator().manual_seed(0)

        def __iter__(self):
            return iter(torch.randperm(self.n, generator=self.g).tolist())

    class Sized(Unreplayable):
        def __len__(self):
            return self.n

    def make(kind=Unreplayable):
        data = _tensors(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long))
        return ed.enlighten(DataLoader(data, batch_size=4, sampler=kind(12)), ed.mixup_pause(1, alpha=0.2),
                            num_classes=3)

    saved = make()
    live = iter(saved)  # kept: the state is taken inside the loop
    next(live)
    resumed = make()
    resumed.load_state_dict(dict(_save(saved), position=4))
    assert len(resumed) == 3  # the epoch's count (the bad position is refused when the pass starts)
    for _ in range(2):  # the same error again, not an empty pass
        with pytest.raises(ValueError, match=r"state\['position'\] should be at most the 3 batches of epoch 0, got "
                                             r"position=4 in the loaded state"):
            iter(resumed)
    ok = make()
    ok.load_state_dict(dict(_save(saved), position=3))  # the epoch's end: one empty pass closes it
    assert list(ok) == [] and len(list(ok)) == 3
    saved, counted = make(Sized), make(Sized)
    live = iter(saved)
    next(live)
    with pytest.raises(ValueError, match=r"state\['position'\] should be at most the 3 batches of epoch 0, got "
                                         r"position=4"):
        counted.load_state_dict(dict(_save(saved), position=4))
    assert counted.epoch == -1  # left unchanged
    # stream(): the workers' positions in their shares must fit the saved epoch and batch.
    with tempfile.TemporaryDirectory() as folder:
        index = ed.write_shards(_tensors(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long)),
                                f"{folder}/s-%03d.tar", maxcount=4, image_format="npy", progress=False)
        streamed = ed.stream(index, ed.mixup_pause(1, alpha=0.2), batch_size=2, num_workers=0, num_classes=3)
        next(iter(streamed))
        state = _save(streamed)
        state["source"]["taken"] = [1]
        resumed = ed.stream(index, ed.mixup_pause(1, alpha=0.2), batch_size=2, num_workers=0, num_classes=3)
        with pytest.raises(ValueError, match=r"state\['source'\]: worker 0's batches before batch 1 should hold 2 "
                                             r"samples, got taken=1 with 0 bad"):
            resumed.load_state_dict(state)
        assert resumed.epoch == -1


@check("state-end-of-epoch")
def _state_end_of_epoch():
    loader = _loader(_tensors(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long)))
    it = iter(loader)
    for _ in range(3):
        next(it)  # the last batch, the loop not yet ended
    state = _save(loader)
    for set_epoch in (False, True):  # a plain loop, and a DDP-style loop that calls set_epoch(saved epoch)
        resumed = _loader(_tensors(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long)))
        resumed.load_state_dict(state)
        assert len(resumed) == 3  # the whole epoch's count: none is left
        if set_epoch:
            resumed.set_epoch(0)
        assert list(resumed) == [] and resumed.epoch == 0 and resumed.history[-1]["batches"] == 3
        assert len(list(resumed)) == 3 and resumed.epoch == 1 and [h["epoch"] for h in resumed.history] == [0, 1]


# ---------------------------------------------------------------------- the tests
def test_table_parser():
    text = "# T\n## Failure behaviour\n\n| id | a | b |\n| --- | --- | --- |\n| `x-1` | p | q |\n|y|p|q|\n## Next\n| z | 1 | 2 |\n"
    assert table_ids(text) == ["x-1", "y"]
    assert table_ids("# T\n") is None


@pytest.mark.parametrize("row_id", sorted(CHECKS))
def test_failure_row(row_id):
    ids = _readme_ids()
    if ids is None:
        pytest.skip(f"README.md has no '{HEADING}' section yet")
    assert row_id in ids, f"check {row_id!r} has no row in README.md's failure table"
    CHECKS[row_id]()


def test_every_row_has_a_check():
    ids = _readme_ids()
    if ids is None:
        pytest.skip(f"README.md has no '{HEADING}' section yet")
    assert len(ids) == len(set(ids)), f"duplicate ids in the failure table: {ids}"
    missing = sorted(set(ids) - set(CHECKS))
    assert not missing, f"rows without a check in tests/test_failure_table.py: {missing}"
