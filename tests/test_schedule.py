import pytest

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


def test_phase_is_frozen():
    with pytest.raises(Exception):
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
    assert ed.Schedule(3, ed.Phase(label_smoothing=0.1), ed.Phase()).soft_targets


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ed.mixup_pause(-1, alpha=0.8), "epochs should be >= 0"),
        (lambda: ed.mixup_pause(2, alpha=-0.8), "mixup_alpha should be >= 0"),
        (lambda: ed.high_loss_removal(2, fraction=1.5), "drop_high_loss should be in"),
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
    assert t.in_period(1) and not t.in_period(2)
    t.observe(2, 0.1)  # never restarts
    assert not t.in_period(3)
    capped = PeriodTracker(ed.Period(until_accuracy=0.9, max_epochs=2))
    capped.observe(0, 0.1)
    capped.observe(1, 0.1)
    assert capped.in_period(1) and not capped.in_period(2)
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
    assert ed.Schedule(ed.Period(epochs=3), ed.Phase(), ed.Phase(mixup_alpha=0.8)).after.mixup_alpha == 0.8
