import dataclasses
import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import enlight_data as ed
from enlight_data.schedule import PeriodTracker


def test_period_forms_and_lengths():
    assert ed.Period(epochs=10).length == 10
    assert ed.Period(epochs=0).length == 0
    assert ed.Period(fraction=0.04, total_epochs=500).length == 20
    # half rounds up, and at least one epoch
    assert ed.Period(fraction=0.5, total_epochs=3).length == 2
    assert ed.Period(fraction=0.001, total_epochs=10).length == 1
    assert ed.Period(fraction=0.29, total_epochs=100).length == 29
    assert ed.Period(fraction=0.145, total_epochs=100).length == 15  # 14.5 exactly, half up (float says 14.4999...)
    assert ed.Period(until_accuracy=0.5).length is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"epochs": 3, "until_accuracy": 0.5}, "exactly one"),
        ({"epochs": 3, "fraction": 0.1, "total_epochs": 10}, "exactly one"),
        ({"epochs": -1}, "epochs should be >= 0"),
        ({"epochs": 2.5}, "epochs should be an int"),
        ({"fraction": 0.1}, "total_epochs"),
        ({"fraction": 1.5, "total_epochs": 10}, r"fraction should be in \(0, 1\]"),
        ({"epochs": 3, "total_epochs": 10}, "total_epochs is only used with fraction"),
        ({"until_accuracy": 0.0}, "until_accuracy should be in"),
        ({"until_accuracy": 1.2}, "until_accuracy should be in"),
        ({"epochs": 3, "max_epochs": 5}, "max_epochs is only used with until_accuracy"),
        ({"until_accuracy": 0.5, "max_epochs": 0}, "max_epochs should be >= 1"),
    ],
)
def test_period_rejects_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ed.Period(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mixup_alpha": -0.1}, "mixup_alpha should be >= 0, got mixup_alpha=-0.1"),
        ({"cutmix_alpha": -1}, "cutmix_alpha should be >= 0"),
        ({"drop_high_loss": 1.0}, r"drop_high_loss should be in \[0, 1\), got drop_high_loss=1.0"),
        ({"drop_high_loss": -0.1}, "drop_high_loss should be in"),
        ({"mix_prob": 1.5}, "mix_prob should be in"),
        ({"switch_prob": -1}, "switch_prob should be in"),
        ({"mode": "pair"}, "mode should be 'elem' or 'batch', got mode='pair'"),
        ({"label_smoothing": 1.0}, "label_smoothing should be in"),
        ({"augment_strength": 2.0}, "augment_strength should be in"),
        ({"mixup_alpha": "1"}, "mixup_alpha should be a real number"),
        ({"mixup_alpha": float("nan")}, "mixup_alpha should be finite"),
        ({"augment": 3}, "augment should be callable"),
    ],
)
def test_phase_rejects_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ed.Phase(**kwargs)


@pytest.mark.parametrize(
    "mode, error, match",
    [
        (1, TypeError, "mode should be a str, 'elem' or 'batch', got mode=1 of type int"),
        (None, TypeError, "mode should be a str, 'elem' or 'batch', got mode=None of type NoneType"),
        ("pair", ValueError, "mode should be 'elem' or 'batch', got mode='pair'"),
    ],
)
def test_phase_mode_type_and_value_errors_are_told_apart(mode, error, match):
    with pytest.raises(error, match=match):
        ed.Phase(mode=mode)


def test_schedule_takes_an_int_or_a_period_and_stores_a_period():
    import typing

    hints = typing.get_type_hints(ed.Schedule.__init__)
    assert hints["period"] == ed.Period | int  # what the constructor takes (an int documented and accepted)
    assert typing.get_type_hints(ed.Schedule)["period"] is ed.Period  # what the attribute holds
    s = ed.Schedule(3, during=ed.Phase(mixup_alpha=0.2))
    assert s.period == ed.Period(epochs=3) and s == ed.Schedule(ed.Period(epochs=3), during=ed.Phase(mixup_alpha=0.2))
    assert s.after == ed.Phase() and hash(s) == hash(ed.Schedule(3, during=ed.Phase(mixup_alpha=0.2)))
    assert dataclasses.replace(s, period=5).period == ed.Period(epochs=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.period = ed.Period(epochs=4)  # type: ignore[misc]
    with pytest.raises(TypeError, match="during should be a Phase, got during=None"):
        ed.Schedule(3, during=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period should be >= 0, got period=-3"):
        dataclasses.replace(s, period=-3)


def test_phase_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ed.Phase().mixup_alpha = 1.0  # type: ignore[misc]


def test_presets():
    s = ed.mixup_pause(10, alpha=0.8)
    assert s.period == ed.Period(epochs=10)
    assert not s.during.mixes and s.after.mixup_alpha == 0.8
    s = ed.mixup_pause(ed.Period(fraction=0.04, total_epochs=500), alpha=0.8, cutmix_alpha=1.0)
    assert s.period.length == 20 and s.after.cutmix_alpha == 1.0
    s = ed.alpha_boost(5, alpha=0.2, boost_alpha=1.0)
    assert s.during.mixup_alpha == 1.0 and s.after.mixup_alpha == 0.2
    s = ed.high_loss_removal(3, fraction=0.1)
    assert s.during.drop_high_loss == 0.1 and s.after.drop_high_loss == 0.0
    assert not s.soft_targets and ed.mixup_pause(1, alpha=1.0).soft_targets
    assert ed.Schedule(3, during=ed.Phase(label_smoothing=0.1), after=ed.Phase()).soft_targets


def test_presets_take_the_mixing_settings_of_a_recipe():
    # A DeiT-style recipe (Mixup 0.8, CutMix 1.0, smoothing 0.1, timm's per-batch mode) through the presets.
    recipe = dict(cutmix_alpha=1.0, mix_prob=0.9, switch_prob=0.4, mode="batch", label_smoothing=0.1)
    pause = ed.mixup_pause(5, alpha=0.8, **recipe)
    assert pause.after == ed.Phase(mixup_alpha=0.8, **recipe)
    assert pause.during == ed.Phase(label_smoothing=0.1)  # smoothing throughout; nothing mixes in the pause
    boost = ed.alpha_boost(5, alpha=0.8, boost_alpha=2.0, **recipe)
    assert boost.during == ed.Phase(mixup_alpha=2.0, **recipe) and boost.after == ed.Phase(mixup_alpha=0.8, **recipe)
    with pytest.raises(ValueError, match="mode should be 'elem' or 'batch', got mode='pair'"):
        ed.alpha_boost(5, alpha=0.2, boost_alpha=1.0, mode="pair")
    with pytest.raises(ValueError, match=r"label_smoothing should be in \[0, 1\), got label_smoothing=1.0"):
        ed.mixup_pause(5, alpha=0.2, label_smoothing=1.0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ed.mixup_pause(-1, alpha=0.8), "period should be >= 0, got period=-1"),
        (lambda: ed.mixup_pause(2, alpha=-0.8), "alpha should be >= 0, got alpha=-0.8"),
        (lambda: ed.high_loss_removal(2, fraction=1.5), r"fraction should be in \[0, 1\), got fraction=1.5"),
        (lambda: ed.high_loss_removal("2", fraction=0.1), "period should be an int or a Period"),
        (lambda: ed.Schedule(2, during="x"), "during should be a Phase"),
        (lambda: ed.alpha_boost(2.0, alpha=0.2, boost_alpha=1.0), "period should be an int or a Period"),
    ],
)
def test_presets_reject_bad_input(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_fixed_period_tracker():
    t = PeriodTracker(ed.Period(epochs=3))
    assert [t.in_period(e) for e in range(5)] == [True, True, True, False, False]
    t.observe(0, 0.99)  # accuracy does not end a fixed period
    assert t.in_period(2)


def test_accuracy_period_latches_and_caps():
    t = PeriodTracker(ed.Period(until_accuracy=0.5, max_epochs=10))
    t.observe(0, 0.3)
    assert t.in_period(1)
    t.observe(1, 0.5)  # reached: ends after epoch 1
    assert t.end_epoch == 2 and t.ended and not t.in_period(2)
    t.observe(2, 0.1)  # never restarts
    assert not t.in_period(3)
    capped = PeriodTracker(ed.Period(until_accuracy=0.9, max_epochs=2))
    capped.observe(0, 0.1)
    assert capped.in_period(1) and not capped.in_period(2)
    capped.observe(1, 0.1)
    assert capped.ended and not capped.in_period(1)
    restored = PeriodTracker(ed.Period(until_accuracy=0.5))
    restored.load_state_dict(t.state_dict())
    assert restored.end_epoch == 2


def test_one_epoch_high_loss_removal_warns():
    with pytest.warns(UserWarning, match="1-epoch period removes nothing"):
        ed.high_loss_removal(1, fraction=0.1)
    with pytest.warns(UserWarning, match="removes nothing"):
        ed.high_loss_removal(ed.Period(fraction=0.01, total_epochs=20), fraction=0.1)


def test_period_and_phase_are_keyword_only():
    with pytest.raises(TypeError):
        ed.Period(10)  # type: ignore[misc]
    with pytest.raises(TypeError):
        ed.Phase(0.8)  # type: ignore[misc]
    assert ed.Schedule(ed.Period(epochs=3), during=ed.Phase(), after=ed.Phase(mixup_alpha=0.8)).after.mixup_alpha == 0.8


# ---------------------------------------------------------------------- NumPy scalars are stored as Python numbers
def test_numpy_scalars_are_stored_as_python_numbers():
    per = ed.Period(epochs=np.int64(3))
    assert type(per.epochs) is int and per.epochs == 3
    per = ed.Period(fraction=np.float64(0.04), total_epochs=np.int32(500))
    assert type(per.fraction) is float and type(per.total_epochs) is int and per.length == 20
    per = ed.Period(until_accuracy=np.float32(0.5), max_epochs=np.int64(4))
    assert type(per.until_accuracy) is float and type(per.max_epochs) is int
    phase = ed.Phase(
        mixup_alpha=np.float64(0.2), cutmix_alpha=np.int64(1), mix_prob=np.float32(0.5), switch_prob=np.float64(0.5),
        mode=np.str_("batch"), drop_high_loss=np.float64(0.1), label_smoothing=np.float64(0.1),
        augment_strength=np.float64(1.0),
    )
    for name in ("mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob", "drop_high_loss", "label_smoothing",
                 "augment_strength"):
        assert type(getattr(phase, name)) is float, name
    assert type(phase.mode) is str and phase == ed.Phase(
        mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.5, mode="batch", drop_high_loss=0.1, label_smoothing=0.1
    )
    assert ed.Schedule(np.int64(2)).period == ed.Period(epochs=2)


def test_numpy_hyperparameters_give_a_weights_only_checkpoint():
    schedules = [
        ed.high_loss_removal(ed.Period(epochs=np.int64(2)), fraction=np.float64(0.1)),
        ed.alpha_boost(np.int64(2), alpha=np.float64(0.2), boost_alpha=np.float32(1.0)),
        ed.mixup_pause(ed.Period(until_accuracy=np.float64(0.5), max_epochs=np.int64(3)), alpha=np.float64(0.4)),
    ]
    for schedule in schedules:
        tracker = PeriodTracker(schedule.period)
        tracker.observe(np.int64(0), np.float64(0.9))
        buf = io.BytesIO()
        torch.save({"signature": schedule.signature(), "tracker": tracker.state_dict()}, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)
        assert loaded["signature"] == schedule.signature()


# ---------------------------------------------------------------------- factories name their own arguments
@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: ed.high_loss_removal(10, fraction=1.0), ValueError,
         r"fraction should be in \[0, 1\), got fraction=1.0"),
        (lambda: ed.high_loss_removal(10, fraction=-0.1), ValueError,
         r"fraction should be in \[0, 1\), got fraction=-0.1"),
        (lambda: ed.high_loss_removal(10, fraction="0.1"), TypeError, "fraction should be a real number"),
        (lambda: ed.mixup_pause(10, alpha=-1.0), ValueError, "alpha should be >= 0, got alpha=-1.0"),
        (lambda: ed.mixup_pause(10, alpha=1.0, cutmix_alpha=math.inf), ValueError, "cutmix_alpha should be finite"),
        (lambda: ed.alpha_boost(10, alpha=0.2, boost_alpha=float("nan")), ValueError,
         "boost_alpha should be finite, got boost_alpha=nan"),
        (lambda: ed.alpha_boost(10, alpha=0.2, boost_alpha=-1), ValueError,
         "boost_alpha should be >= 0, got boost_alpha=-1"),
        (lambda: ed.alpha_boost(10, alpha="0.2", boost_alpha=1.0), TypeError,
         "alpha should be a real number, got alpha='0.2' of type str"),
        # Out of Beta's usable range: the helper's own argument is named, not the Phase field it fills.
        (lambda: ed.mixup_pause(10, alpha=1e-7), ValueError,
         r"^alpha should be 0 \(off\) or in \[1e-06, 1e\+06\] .*got alpha=1e-07"),
        (lambda: ed.mixup_pause(10, alpha=1.0, cutmix_alpha=2e6), ValueError,
         r"^cutmix_alpha should be 0 \(off\) or in \[1e-06, 1e\+06\] .*got cutmix_alpha=2000000.0"),
        (lambda: ed.alpha_boost(10, alpha=0.2, boost_alpha=1e-9), ValueError,
         r"^boost_alpha should be 0 \(off\) or in \[1e-06, 1e\+06\] .*got boost_alpha=1e-09"),
        (lambda: ed.alpha_boost(10, alpha=1e-9, boost_alpha=1.0), ValueError,
         r"^alpha should be 0 \(off\) or in \[1e-06, 1e\+06\] .*got alpha=1e-09"),
        (lambda: ed.Schedule(-3), ValueError, "period should be >= 0, got period=-3"),
        (lambda: ed.Schedule(True), TypeError, "period should be an int or a Period"),
    ],
)
def test_factories_name_the_argument_given(make, error, match):
    with pytest.raises(error, match=match) as info:
        make()
    assert "drop_high_loss" not in str(info.value) and "mixup_alpha" not in str(info.value)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ed.high_loss_removal(10, fraction=0.0), "fraction=0.0 removes nothing"),
        (lambda: ed.mixup_pause(10, alpha=0.0), "alpha=0.0 and cutmix_alpha=0.0 pauses nothing"),
        (lambda: ed.alpha_boost(10, alpha=0.5, boost_alpha=0.5), "boosts nothing"),
        (lambda: ed.alpha_boost(10, alpha=1.0, boost_alpha=0.2),
         r"boost_alpha=0.2 below alpha=1.0 mixes less during the period .*were the two swapped\?"),
        (lambda: ed.high_loss_removal(0, fraction=0.1),
         "high_loss_removal with a 0-epoch period removes nothing: no epoch lies in the period"),
        (lambda: ed.high_loss_removal(ed.Period(epochs=0), fraction=0.1), "0-epoch period removes nothing"),
        (lambda: ed.high_loss_removal(1, fraction=0.1), "1-epoch period removes nothing"),
        (lambda: ed.high_loss_removal(ed.Period(until_accuracy=0.5, max_epochs=1), fraction=0.1),
         r"at most 1 epoch \(max_epochs=1\) removes nothing"),
    ],
)
def test_strategies_that_do_nothing_warn(make, match):
    with pytest.warns(UserWarning, match=match) as caught:
        make()
    assert len(caught) == 1 and caught[0].filename == __file__  # points at the caller


def test_working_strategies_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ed.high_loss_removal(10, fraction=0.1)
        ed.high_loss_removal(ed.Period(until_accuracy=0.5, max_epochs=2), fraction=0.1)
        ed.mixup_pause(10, alpha=0.0, cutmix_alpha=1.0)
        ed.mixup_pause(0, alpha=1.0)  # no period: the plain-Mixup baseline
        ed.alpha_boost(10, alpha=0.2, boost_alpha=1.0)


# ---------------------------------------------------------------------- an ended accuracy period never restarts
def test_ended_accuracy_period_never_restarts():
    t = PeriodTracker(ed.Period(until_accuracy=0.5))
    assert t.in_period(0) and not t.ended
    t.observe(0, 0.9)
    assert t.ended and t.end_epoch == 1
    assert [t.in_period(e) for e in range(4)] == [False] * 4  # epoch 0 again included
    t.observe(0, 0.1)  # a re-run epoch 0 with low accuracy does not restart it
    assert not t.in_period(0)
    restored = PeriodTracker(ed.Period(until_accuracy=0.5))
    restored.load_state_dict(t.state_dict())
    assert restored.ended and not restored.in_period(0)
    fixed = PeriodTracker(ed.Period(epochs=2))  # a fixed period stays a pure function of the epoch
    fixed.observe(3, 1.0)
    assert [fixed.in_period(e) for e in range(3)] == [True, True, False] and not fixed.ended


def test_accuracy_period_ended_by_max_epochs_never_restarts():
    t = PeriodTracker(ed.Period(until_accuracy=0.9, max_epochs=2))
    t.observe(0, 0.1)
    assert not t.ended and t.in_period(1)
    t.observe(1, 0.1)
    assert t.ended and t.end_epoch == 2 and not t.in_period(0)
    jumped = PeriodTracker(ed.Period(until_accuracy=0.9, max_epochs=2))
    jumped.observe(5, 1.0)  # set_epoch() past the cap: the period ended at the cap
    assert jumped.end_epoch == 2 and not jumped.in_period(0)


def _labelled(n=20, classes=3):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % classes)


def test_loader_set_epoch_back_does_not_restart_an_ended_period():
    schedule = ed.mixup_pause(ed.Period(until_accuracy=0.5), alpha=0.4)
    loader = ed.enlighten(DataLoader(_labelled(), batch_size=5), schedule, num_classes=3)
    for _ in range(2):
        for _, y in loader:
            loader.record(torch.zeros(y.shape[0]), output=y, target=y)  # accuracy 1.0
    assert [h["in_period"] for h in loader.history] == [True, False]
    loader.set_epoch(0)
    assert not loader.in_period and loader.phase == schedule.after
    for _, y in loader:
        loader.record(torch.zeros(y.shape[0]), output=y, target=y)
    assert loader.epoch == 0 and loader.history[-1]["in_period"] is False
    assert not loader.in_period and loader.phase.mixup_alpha == 0.4


# ---------------------------------------------------------------------- an accuracy period with no accuracy warns
def test_tracker_warns_once_when_no_accuracy_is_scored():
    t = PeriodTracker(ed.Period(until_accuracy=0.5))
    with pytest.warns(RuntimeWarning, match=r"epoch 0: no training accuracy was scored.*never ends.*output=") as caught:
        t.observe(0, None)
        t.observe(1, None)
    assert len(caught) == 1 and t.in_period(2)
    capped = PeriodTracker(ed.Period(until_accuracy=0.5, max_epochs=3))
    with pytest.warns(RuntimeWarning, match="only ends at max_epochs=3"):
        capped.observe(0, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PeriodTracker(ed.Period(epochs=2)).observe(0, None)  # a fixed period needs no accuracy
        scored = PeriodTracker(ed.Period(until_accuracy=0.5))
        scored.observe(0, 0.1)
        scored.observe(1, 0.9)
        scored.observe(2, None)  # ended: accuracy no longer matters


def test_loader_warns_once_when_an_accuracy_period_gets_no_accuracy():
    schedule = ed.mixup_pause(ed.Period(until_accuracy=0.5), alpha=0.4)
    loader = ed.enlighten(DataLoader(_labelled(), batch_size=5), schedule, num_classes=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            for x, _ in loader:
                loader.record(torch.zeros(x.shape[0]))  # no output=/target=: no accuracy
    unscored = [w for w in caught if "no training accuracy" in str(w.message)]
    assert len(unscored) == 1 and unscored[0].category is RuntimeWarning
    assert unscored[0].filename == __file__  # points at the training loop
    assert "loader.track(criterion)" in str(unscored[0].message)


@pytest.mark.parametrize(
    "period, state, error, match",
    [
        (ed.Period(epochs=10), {"end_epoch": -1}, ValueError,
         r"state\['end_epoch'\] should be 10 for a fixed period of 10 epochs, got end_epoch=-1"),
        (ed.Period(epochs=10), {"end_epoch": 3}, ValueError, "should be 10 for a fixed period"),
        (ed.Period(until_accuracy=0.5), {"end_epoch": 0}, ValueError, r"should be -1 \(not ended\) or >= 1"),
        (ed.Period(until_accuracy=0.5, max_epochs=4), {"end_epoch": 5}, ValueError, r"or in \[1, 4\] \(max_epochs=4\)"),
        (ed.Period(until_accuracy=0.5), {"end_epoch": -2}, ValueError, "end_epoch'\\] should be >= -1"),
        (ed.Period(until_accuracy=0.5), {"end_epoch": 1.0}, ValueError,
         r"state\['end_epoch'\] should be an int, got state\['end_epoch'\]=1.0 of type float"),
        (ed.Period(epochs=2), {"end_epoch": "2"}, ValueError, r"state\['end_epoch'\] should be an int"),
        (ed.Period(epochs=2), {"end_epoch": True}, ValueError, r"state\['end_epoch'\] should be an int"),
        (ed.Period(until_accuracy=0.5), {}, ValueError, "state should be a dict with an int end_epoch"),
        (ed.Period(until_accuracy=0.5), [1], TypeError, "state should be a dict with an int end_epoch"),
    ],
)
def test_tracker_rejects_impossible_states(period, state, error, match):
    t = PeriodTracker(period)
    before = t.end_epoch
    with pytest.raises(error, match=match):
        t.load_state_dict(state)
    assert t.end_epoch == before


def test_tracker_names_a_nested_state_by_its_prefix():
    t = PeriodTracker(ed.Period(epochs=2))
    with pytest.raises(TypeError, match=r"state\['tracker'\] should be a dict with an int end_epoch"):
        t.load_state_dict(None, prefix="state['tracker']")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"state\['tracker'\] should be a dict with an int end_epoch"):
        t.load_state_dict({}, prefix="state['tracker']")
    with pytest.raises(ValueError,
                       match=r"state\['tracker'\]\['end_epoch'\] should be 2 for a fixed period of 2 epochs"):
        t.load_state_dict({"end_epoch": 5}, prefix="state['tracker']")
    t.load_state_dict({"end_epoch": np.int64(2)}, prefix="state['tracker']")
    assert t.end_epoch == 2 and type(t.end_epoch) is int


def test_tracker_state_roundtrip_keeps_the_latch():
    for period, accuracies in [
        (ed.Period(epochs=3), [0.9]),
        (ed.Period(until_accuracy=0.5), [0.1, 0.2]),  # not ended yet
        (ed.Period(until_accuracy=0.5), [0.1, 0.7]),
        (ed.Period(until_accuracy=0.5, max_epochs=2), [0.1, 0.1]),
    ]:
        t = PeriodTracker(period)
        for epoch, acc in enumerate(accuracies):
            t.observe(epoch, acc)
        u = PeriodTracker(period)
        u.load_state_dict(t.state_dict())
        assert u.end_epoch == t.end_epoch and u.ended == t.ended
        assert [u.in_period(e) for e in range(5)] == [t.in_period(e) for e in range(5)]


def test_accuracy_period_compares_at_float32_precision():
    # 7 of 10 positions right for every sample is 0.7, staged per sample in float32 as 0.699999988.
    staged = float(torch.tensor(0.7, dtype=torch.float32))
    assert staged < 0.7
    reached = PeriodTracker(ed.Period(until_accuracy=0.7))
    reached.observe(0, staged)
    assert reached.end_epoch == 1
    short = PeriodTracker(ed.Period(until_accuracy=0.5))
    short.observe(0, 4_999_999 / 10_000_000)  # one sample short of 0.5 is still short at float32 precision
    assert short.end_epoch is None


def test_dense_accuracy_reaches_its_exact_threshold():
    x = torch.zeros(8, 3)
    y = torch.zeros(8, 10, dtype=torch.long)
    loader = ed.enlighten(DataLoader(TensorDataset(x, y), batch_size=4),
                          ed.high_loss_removal(ed.Period(until_accuracy=0.7, max_epochs=5), fraction=0.1))
    output = torch.zeros(4, 2, 10)
    output[:, 1, 7:] = 1.0  # class 0 (right) predicted at 7 of the 10 positions of every sample, class 1 elsewhere
    for _ in range(2):
        for _, target in loader:
            loader.record(torch.ones(4), output=output, target=target)
    assert [h["in_period"] for h in loader.history] == [True, False]


@pytest.mark.parametrize(
    "during, after, warned",
    [
        (ed.Phase(drop_high_loss=0.3, mixup_alpha=0.2), ed.Phase(), "during.drop_high_loss=0.3"),
        (ed.Phase(drop_high_loss=0.3, cutmix_alpha=1.0, mode="batch"), ed.Phase(), "during mixes every sample"),
        (ed.Phase(mixup_alpha=0.2), ed.Phase(drop_high_loss=0.3, mixup_alpha=0.2), "both phases mix every sample"),
        (ed.Phase(drop_high_loss=0.3, mixup_alpha=0.2, mix_prob=0.5), ed.Phase(), None),
        (ed.Phase(), ed.Phase(drop_high_loss=0.3, mixup_alpha=0.2), None),  # during records the losses
        (ed.Phase(drop_high_loss=0.3), ed.Phase(mixup_alpha=0.2), None),
    ],
)
def test_removal_in_phases_that_record_no_loss_warns(during, after, warned):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ed.Schedule(3, during=during, after=after)
    messages = [str(w.message) for w in caught]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warned in messages[0] and "removes next to nothing" in messages[0]
        assert caught[0].filename == __file__  # points at the caller


def test_positional_phases_get_a_clear_error():
    with pytest.raises(TypeError, match=r"Schedule takes its phases as keywords, Schedule\(period, during=..., "
                                        r"after=...\), got 2 positional phase\(s\)"):
        ed.Schedule(3, ed.Phase(), ed.Phase(mixup_alpha=0.2))


def test_a_schedule_warns_once_not_again_when_its_clock_is_pickled():
    import pickle

    from enlight_data.context import SharedClock

    with pytest.warns(UserWarning, match="removes next to nothing"):
        schedule = ed.Schedule(2, during=ed.Phase(mixup_alpha=0.4, drop_high_loss=0.1, augment=ed.GpuAugment(6)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # workers get the clock (and a copy of the schedule without augment)
        clock = pickle.loads(pickle.dumps(SharedClock(schedule, 4)))
    assert clock.schedule.during.augment is None and clock.schedule.during.drop_high_loss == 0.1


def test_an_ended_accuracy_period_keeps_its_end_epoch():
    for period in (ed.Period(until_accuracy=0.5), ed.Period(until_accuracy=0.5, max_epochs=10)):
        tracker = PeriodTracker(period)
        tracker.observe(0, 0.2)
        tracker.observe(1, 0.6)
        assert tracker.end_epoch == 2 and tracker.ended
        for epoch, acc in ((2, 0.9), (5, 0.99), (9, None)):
            tracker.observe(epoch, acc)
            assert tracker.end_epoch == 2
        assert tracker.state_dict() == {"end_epoch": 2}
