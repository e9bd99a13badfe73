import math

import pytest
import torch

from enlight_data import LossTable


def test_record_mean_of_records_and_latest_across_epochs():
    t = LossTable(5)
    assert torch.isnan(t.losses()).all()
    t.record(torch.tensor([0, 1, 1]), torch.tensor([1.0, 2.0, 4.0]))
    assert t.losses()[:2].tolist() == [1.0, 3.0]  # duplicate index: the mean of its records
    stats = t.finalize_epoch()
    assert stats["recorded"] == 3 and stats["loss_count"] == 3
    t.record(torch.tensor([1]), torch.tensor([10.0]))
    t.finalize_epoch()
    got = t.losses()
    assert got[0] == 1.0 and got[1] == 10.0 and torch.isnan(got[2:]).all()
    assert got.dtype == torch.float32 and got.device.type == "cpu"


def test_keep_mask_and_nonfinite_are_not_recorded_but_counted():
    t = LossTable(4)
    t.record(
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([1.0, float("nan"), float("inf"), 2.0]),
        keep=torch.tensor([True, True, True, False]),
        correct=torch.tensor([True, False, True, True]),
    )
    stats = t.finalize_epoch()
    assert stats["nonfinite"] == 2 and stats["recorded"] == 1
    assert stats["correct"] == 3 and stats["scored"] == 4
    assert stats["loss_sum"] == 3.0 and stats["loss_count"] == 2
    losses = t.losses()
    assert losses[0] == 1.0 and torch.isnan(losses[1:]).all()


@pytest.mark.parametrize("fraction, known, expected", [(0.29, 100, 29), (0.1, 10, 1), (0.1, 9, 0), (0.5, 7, 3), (0.0, 10, 0)])
def test_select_high_loss_exact_count(fraction, known, expected):
    t = LossTable(200)
    values = torch.arange(known, dtype=torch.float32)
    t.record(torch.arange(known), values)
    t.finalize_epoch()
    chosen = t.select_high_loss(fraction)
    assert chosen.numel() == expected
    # the highest losses, and only samples with a recorded loss
    assert sorted(chosen.tolist()) == list(range(known - expected, known))


def test_select_ignores_unrecorded_and_validates():
    t = LossTable(10)
    t.record(torch.tensor([3, 7]), torch.tensor([5.0, 1.0]))
    t.finalize_epoch()
    assert t.select_high_loss(0.5).tolist() == [3]
    with pytest.raises(ValueError, match=r"fraction should be in \[0, 1\), got fraction=1.0"):
        t.select_high_loss(1.0)


def test_state_roundtrip_and_size_check():
    t = LossTable(6)
    t.record(torch.tensor([0, 5]), torch.tensor([1.0, 2.0]), correct=torch.tensor([True, False]))
    state = t.state_dict()
    u = LossTable(6)
    u.load_state_dict(state)
    assert torch.equal(u.losses().nan_to_num(-1), t.losses().nan_to_num(-1))
    assert u.finalize_epoch() == t.finalize_epoch()
    with pytest.raises(ValueError, match="loss table size mismatch"):
        LossTable(7).load_state_dict(state)
    with pytest.raises(ValueError, match="size should be a positive int"):
        LossTable(0)


def test_finalize_reduce_callback_sees_pending():
    t = LossTable(3)
    t.record(torch.tensor([0]), torch.tensor([2.0]))

    def double(table):
        total, count, stats = table.pending()
        total.mul_(2)
        count.mul_(2)
        stats.mul_(2)

    stats = t.finalize_epoch(double)
    assert stats["recorded"] == 2 and t.losses()[0] == 2.0
    assert math.isnan(t.losses()[1])
