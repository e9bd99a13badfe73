"""Property-based fuzzing of the schedule, the loader's input handling and loss recording.

Every generated case ends either in valid batches (soft target rows sum to 1, shapes
right, extra items passed through as the very objects the collate function made)
or in a ValueError/TypeError whose message names the offending argument.
"""

from __future__ import annotations

import collections
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, default_collate

import enlight_data as ed
from resume_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

# The examples are derandomized (the same on every run, so a CI run cannot fail by chance) unless
# HYPOTHESIS_PROFILE=explore is set: conftest.py registers both profiles.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Values of every kind a user might pass by mistake.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 50),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.just([1]),
)


def _names_an_argument(exc: BaseException, names) -> bool:
    msg = str(exc)
    return any(name in msg for name in names)


# ---------------------------------------------------------------------- configuration
@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "epochs": junk,
            "fraction": st.one_of(junk, st.floats(0, 1)),
            "total_epochs": junk,
            "until_accuracy": st.one_of(junk, st.floats(0, 1)),
            "max_epochs": junk,
        },
    )
)
def test_period_parameters(kwargs):
    try:
        period = ed.Period(**kwargs)
    except (ValueError, TypeError) as exc:
        assert _names_an_argument(exc, ["epochs", "fraction", "total_epochs", "until_accuracy", "max_epochs"]), exc
        return
    length = period.length
    assert length is None or (isinstance(length, int) and length >= 0)
    tracker = ed.schedule.PeriodTracker(period)
    phases = [tracker.phase_index(e) for e in range(6)]
    assert phases == sorted(phases)  # once over, the period never comes back


_PHASE_FIELDS = ("mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob", "mode", "drop_high_loss",
                 "label_smoothing", "augment_strength", "augment")


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            **{name: st.one_of(junk, st.floats(0, 1)) for name in _PHASE_FIELDS[:-2]},
            "mode": st.one_of(junk, st.sampled_from(["elem", "batch"])),
            "augment": st.one_of(st.none(), st.just(lambda x: x), st.integers()),
        },
    )
)
def test_phase_parameters(kwargs):
    try:
        phase = ed.Phase(**kwargs)
    except (ValueError, TypeError) as exc:
        assert _names_an_argument(exc, list(kwargs)), exc
        return
    assert phase.mixes == ((phase.mixup_alpha > 0 or phase.cutmix_alpha > 0) and phase.mix_prob > 0)


@FUZZ
@given(period=st.one_of(junk, st.integers(0, 5)), during=st.one_of(junk, st.just(ed.Phase())))
def test_schedule_parameters(period, during):
    try:
        schedule = ed.Schedule(period, during=during)
    except (ValueError, TypeError) as exc:
        assert _names_an_argument(exc, ["period", "epochs", "during"]), exc
        return
    assert isinstance(schedule.period, ed.Period)


@FUZZ
@given(
    num_classes=junk,
    seed=junk,
    device=st.one_of(st.none(), st.sampled_from(["cpu", "nonsense", "cuda:x"]), st.integers(-1, 1)),
    augment=st.one_of(st.none(), st.just(lambda x: x), st.integers()),
    rank=st.one_of(st.none(), st.integers(-1, 3)),
    world_size=st.one_of(st.none(), st.integers(-1, 3)),
    pad=st.one_of(st.booleans(), st.none(), st.just("no")),
)
def test_enlighten_arguments(num_classes, seed, device, augment, rank, world_size, pad):
    loader = DataLoader(Synth(6), batch_size=2)
    kwargs = dict(num_classes=num_classes, seed=seed, device=device, augment=augment, rank=rank,
                  world_size=world_size, pad=pad)
    try:
        ed.enlighten(loader, ed.mixup_pause(1, alpha=0.2), **kwargs)
    except (ValueError, TypeError) as exc:
        assert _names_an_argument(exc, list(kwargs)), exc
        return
    assert (pad is None or isinstance(pad, bool)) and isinstance(seed, int) and isinstance(num_classes, int)


# ---------------------------------------------------------------------- batches through the loader
def phases():
    alpha = st.sampled_from([0.0, 0.0, 0.2, 1.0])
    return st.builds(
        ed.Phase,
        mixup_alpha=alpha,
        cutmix_alpha=alpha,
        mix_prob=st.sampled_from([0.0, 0.5, 1.0]),
        switch_prob=st.sampled_from([0.0, 0.5, 1.0]),
        mode=st.sampled_from(["elem", "batch"]),
        drop_high_loss=st.sampled_from([0.0, 0.0, 0.3, 0.9]),
        label_smoothing=st.sampled_from([0.0, 0.0, 0.1]),
    )


def periods():
    return st.one_of(
        st.builds(ed.Period, epochs=st.integers(0, 3)),
        st.builds(ed.Period, fraction=st.sampled_from([0.05, 0.5, 1.0]), total_epochs=st.integers(1, 4)),
        st.builds(ed.Period, until_accuracy=st.sampled_from([0.3, 0.9, 1.0]), max_epochs=st.sampled_from([None, 2])),
    )


Named = collections.namedtuple("Named", "image label meta")


class Synth(Dataset):
    """Sample i: input filled with i, a label of the chosen kind, and extra items."""

    def __init__(self, n, *, label="int", structure="tuple", shape=(3, 4, 4), classes=3):
        self.n, self.label, self.structure, self.shape, self.classes = n, label, structure, shape, classes

    def __len__(self):
        return self.n

    def target(self, i):
        c = self.classes
        if self.label == "int":
            return i % c
        if self.label == "long":
            return torch.tensor(i % c)
        if self.label == "onehot":
            return F.one_hot(torch.tensor(i % c), c).float()
        if self.label == "soft":
            return torch.softmax(torch.arange(c, dtype=torch.float32) * (i % 3 + 1) / c, 0)
        if self.label == "out_of_range":
            return i % c + (c if i == self.n - 1 else 0)
        if self.label == "negative":
            return -1 if i == 0 else i % c
        if self.label == "negative_row":
            return F.one_hot(torch.tensor(i % c), c).float() * 2 - 0.5
        if self.label == "nan_row":
            return torch.full((c,), math.nan) if i == 0 else F.one_hot(torch.tensor(i % c), c).float()
        if self.label == "wide_rows":
            return torch.zeros(c + 1).index_fill_(0, torch.tensor(0), 1.0)
        if self.label == "float_labels":
            return float(i % c)
        if self.label == "strings":
            return f"class{i % c}"
        raise AssertionError(self.label)

    def __getitem__(self, i):
        x = torch.full(self.shape, float(i))
        y = self.target(i)
        meta = {"id": i, "tag": f"s{i}", "nested": [i, (i, "a")]}
        if self.structure == "tuple":
            return x, y, meta, f"extra{i}"
        if self.structure == "list":
            return [x, y, meta]
        if self.structure in ("dict", "dict_without_keys"):
            return {"image": x, "label": y, "meta": meta}
        if self.structure == "named":
            return Named(x, y, meta)
        if self.structure == "single":
            return x
        if self.structure == "nested_input":
            return [x, x], y, meta
        raise AssertionError(self.structure)


class KeepingCollate:
    """default_collate that remembers the batch it made (to check identity of extra items)."""

    def __init__(self):
        self.made = []

    def __call__(self, samples):
        batch = default_collate(samples)
        self.made.append(batch)
        return batch


GOOD_LABELS = ["int", "long", "onehot", "soft"]
BAD_LABELS = ["out_of_range", "negative", "negative_row", "nan_row", "wide_rows", "float_labels", "strings"]
GOOD_STRUCTURES = ["tuple", "list", "dict", "named"]
BAD_STRUCTURES = ["single", "dict_without_keys", "nested_input"]


def _parts(batch, structure):
    if structure in ("dict", "dict_without_keys"):
        return batch["image"], batch["label"], {k: v for k, v in batch.items() if k not in ("image", "label")}
    return batch[0], batch[1], dict(enumerate(batch[2:], start=2))


def _expected_soft(raw, classes, smoothing):
    rows = F.one_hot(raw.long(), classes).float() if raw.dim() == 1 else raw.float()
    return rows * (1.0 - smoothing) + smoothing / classes if smoothing > 0 else rows


@FUZZ
@given(
    period=periods(),
    during=phases(),
    after=phases(),
    n=st.integers(1, 23),
    batch_size=st.integers(1, 7),
    drop_last=st.booleans(),
    label=st.one_of(st.sampled_from(GOOD_LABELS), st.sampled_from(GOOD_LABELS), st.sampled_from(BAD_LABELS)),
    structure=st.one_of(*[st.sampled_from(GOOD_STRUCTURES)] * 3, st.sampled_from(BAD_STRUCTURES)),
    image=st.booleans(),
    corrupt=st.sampled_from(["none", "nan", "inf", "all_nan"]),
    seed=st.integers(0, 2**31),
)
def test_batches_are_valid_or_rejected(period, during, after, n, batch_size, drop_last, label, structure, image,
                                       corrupt, seed):
    classes = 3
    schedule = ed.Schedule(period, during=during, after=after)
    shape = (3, 4, 4) if image else (5,)
    collate = KeepingCollate()
    base = DataLoader(Synth(n, label=label, structure=structure, shape=shape, classes=classes),
                      batch_size=batch_size, shuffle=True, drop_last=drop_last, collate_fn=collate)
    keys = dict(input_key="image", target_key="label") if structure == "dict" else {}
    loader = ed.enlighten(base, schedule, num_classes=classes, seed=seed, **keys)
    soft = schedule.soft_targets
    cutmix_on_vectors = not image and (during.cutmix_alpha > 0 or after.cutmix_alpha > 0)
    # What must be rejected, and which names the message may use.
    # A negative class index is refused only where targets become soft rows: otherwise it may be an ignore_index.
    bad_labels = label == "out_of_range" or (soft and label in BAD_LABELS)
    # A schedule that needs no target takes batches without one (passed through as they came), so a bad label is
    # only found where the batch has a target in its place.
    has_target = structure not in ("single", "dict_without_keys")
    bad = structure in BAD_STRUCTURES and soft or bad_labels and (has_target or soft)
    # With drop_last the one bad sample (or every sample) may never reach a batch.
    unsure = drop_last and n % batch_size != 0
    names = ["target", "num_classes", "input", "batches", "input_key"]
    nonfinite = 0
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for epoch in range(3):
                seen = []
                for batch in loader:
                    made = collate.made[-1]
                    if not has_target:  # passed through as it came
                        assert batch is made and not soft
                        seen.append(batch.flatten(1)[:, 0].long() if structure == "single" else batch["meta"]["id"])
                        continue
                    x, y, extras = _parts(batch, structure)
                    x0, y0, extras0 = _parts(made, structure)
                    ids = extras[2]["id"] if structure != "dict" else extras["meta"]["id"]
                    seen.append(ids)
                    b = ids.shape[0]
                    if structure == "nested_input":  # passed through as it came
                        assert x is x0 and y is y0 and not soft
                        continue
                    assert type(batch) is type(made)
                    assert x.shape == (b, *shape)
                    for k, v in extras.items():  # extra items: the very objects the collate made
                        assert v is extras0[k]
                    assert torch.equal(x0[:, 0].reshape(b, -1)[:, 0], ids.float())  # the caller's input untouched
                    phase = loader.phase
                    if soft:
                        assert y.dtype == torch.float32 and y.shape == (b, classes)
                        assert bool((y >= 0).all()) and torch.allclose(y.sum(1), torch.ones(b), atol=1e-5)
                        if not phase.mixes:
                            assert torch.equal(y, _expected_soft(y0, classes, phase.label_smoothing))
                            assert x is x0
                    else:
                        assert y is y0 and x is x0
                    # A loss of the batch, sometimes with non-finite values.
                    losses = torch.arange(b, dtype=torch.float32) / (b + 1) + ids.float() / 100
                    if corrupt == "nan":
                        losses[0] = math.nan
                    elif corrupt == "inf":
                        losses[-1] = math.inf
                    elif corrupt == "all_nan":
                        losses[:] = math.nan
                    nonfinite += int((~torch.isfinite(losses)).sum())
                    if label in GOOD_LABELS:  # with accuracy
                        logits = _expected_soft(y0, classes, 0.0) if y0.dim() > 1 else F.one_hot(y0, classes).float()
                        loader.record(losses, output=logits, target=y)
                    else:
                        loader.record(losses)
                ids = torch.cat(seen) if seen else torch.empty(0, dtype=torch.int64)
                removed = loader.history[-1]["removed"]
                assert not set(ids.tolist()) & set(loader._excluded.tolist())
                kept = n - removed
                assert ids.numel() == (kept // batch_size) * batch_size if drop_last else ids.numel() == kept
                assert ids.unique().numel() == ids.numel()
    except (ValueError, TypeError) as exc:
        event(f"rejected: {type(exc).__name__}")
        # CutMix on non-image input fails once a CutMix phase is reached (the period may outlast the run).
        assert bad or unsure and bad_labels or cutmix_on_vectors and "input" in str(exc), (
            f"unexpected {type(exc).__name__}: {exc}")
        assert _names_an_argument(exc, names), exc
        return
    assert not bad or unsure, f"bad input {label!r}/{structure!r} was not rejected"
    event("valid batches" + (", mixed" if soft else ""))
    table = loader.losses()
    assert not bool(torch.isinf(table).any())  # non-finite losses never enter the table
    assert sum(h["nonfinite"] or 0 for h in loader.history) == nonfinite
    assert any("non-finite" in str(w.message) for w in caught) == (nonfinite > 0)


# ---------------------------------------------------------------------- loss recording
class _Running:
    """One batch of a loader, held open so record() can be fuzzed against it."""

    def __init__(self, batch_size=4, classes=3):
        base = DataLoader(Synth(8, label="int", structure="list", classes=classes), batch_size=batch_size)
        self.loader = ed.enlighten(base, ed.mixup_pause(1, alpha=0.2), num_classes=classes)
        self.it = iter(self.loader)
        self.batch = next(self.it)


shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@FUZZ
@given(
    loss_shape=shapes,
    output_shape=st.one_of(st.none(), shapes),
    target_kind=st.sampled_from(["batch", "scalar", "short", "list", "none", "dense"]),
    fill=st.sampled_from([0.5, math.nan, math.inf, -math.inf]),
)
def test_record_validates_per_sample_losses(loss_shape, output_shape, target_kind, fill):
    run = _Running()
    b = 4
    y = run.batch[1]
    target = {"batch": y, "scalar": torch.tensor(1), "short": y[:2], "list": [0] * b, "none": None,
              "dense": torch.zeros(b, 2, 2, dtype=torch.long)}[target_kind]
    losses = torch.full(loss_shape, fill)
    output = None if output_shape is None else torch.zeros(output_shape)
    try:
        run.loader.record(losses, output=output, target=target)
    except (ValueError, TypeError) as exc:
        assert _names_an_argument(exc, ["per_sample_loss", "output", "target"]), exc
        assert (len(loss_shape) == 0 or loss_shape[0] != b) or output is not None or target is not None
        return
    assert (output is None) == (target is None)  # one without the other is refused
    assert len(loss_shape) >= 1 and loss_shape[0] == b
    for _ in run.it:  # finish the epoch: counters come back, nothing non-finite enters the table
        pass
    assert not bool(torch.isinf(run.loader.losses()).any())


@FUZZ
@given(shape=shapes, fill=st.sampled_from([0.3, math.nan, math.inf]))
def test_tracked_criterion_with_odd_outputs(shape, fill):
    """A criterion returning losses of any shape: recorded when (B, ...), else a named error."""
    run = _Running()
    b = 4

    def criterion(output, target, reduction="mean"):
        return torch.full(shape, fill)

    tracked = run.loader.track(criterion)
    try:
        tracked(torch.zeros(b, 3), run.batch[1])
    except (ValueError, TypeError) as exc:
        assert _names_an_argument(exc, ["per_sample_loss", "per-sample", "criterion"]), exc
        assert len(shape) == 0 or shape[0] != b
        return
    assert len(shape) >= 1 and shape[0] == b
