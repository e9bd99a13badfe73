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


def test_staged_recording_matches_a_direct_computation_across_folds_and_batch_sizes():
    # 150 batches of 1..299 samples and one larger than the staging window; keep and correct given for some.
    g = torch.Generator().manual_seed(3)
    n = 1000
    t = LossTable(n)
    sums, counts = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    correct_total = scored = recorded = 0.0
    for step in range(150):
        b = 20_000 if step == 70 else int(torch.randint(1, 300, (1,), generator=g))
        idx = torch.randint(0, n, (b,), generator=g)
        losses = torch.rand(b, generator=g, dtype=torch.float64)
        keep = torch.rand(b, generator=g) < 0.7 if step % 3 == 1 else None
        correct = torch.rand(b, generator=g) < 0.5 if step % 4 == 2 else None
        take = torch.ones(b, dtype=torch.bool) if keep is None else keep
        sums.index_add_(0, idx[take], losses.float().double()[take])
        counts.index_add_(0, idx[take], torch.ones(int(take.sum()), dtype=torch.float64))
        recorded += float(take.sum())
        if correct is not None:
            correct_total += float(correct.sum())
            scored += b
        t.record(idx, losses, keep=keep, correct=correct)
        losses.fill_(-1.0)  # the caller reuses its tensor: what was recorded is a copy
    stats = t.finalize_epoch()
    expected = torch.where(counts > 0, sums / counts.clamp_min(1), math.nan).float()
    torch.testing.assert_close(t.losses(), expected, equal_nan=True)
    assert stats["recorded"] == recorded and stats["correct"] == correct_total and stats["scored"] == scored


def test_record_checks_shapes():
    t = LossTable(10)
    with pytest.raises(ValueError, match=r"losses should have the shape of indices \(3,\), got losses of shape \(1,\)"):
        t.record(torch.tensor([0, 1, 2]), torch.tensor([1.0]))  # would broadcast into the staging buffer
    with pytest.raises(ValueError, match=r"keep should have the shape of indices \(2,\), got keep of shape \(3,\)"):
        t.record(torch.tensor([0, 1]), torch.ones(2), keep=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"indices should be 1-D, got indices of shape \(2, 1\)"):
        t.record(torch.tensor([[0], [1]]), torch.ones(2, 1))


@pytest.mark.parametrize(
    "indices, error, match",
    [
        (torch.tensor([0.9, 2.7]), TypeError,
         r"indices should be an integer tensor \(e.g. int64\), got indices of dtype torch.float32"),
        (torch.tensor([True, False]), TypeError, "indices should be an integer tensor .* dtype torch.bool"),
        ([0, 1], TypeError, "indices should be a Tensor, got indices of type list"),
        (torch.tensor([-1, 2]), ValueError,
         r"indices should be in \[0, 4\) \(the table's size\), got indices with values in \[-1, 2\]"),
        (torch.tensor([0, 7]), ValueError, r"indices should be in \[0, 4\) .* values in \[0, 7\]"),
        (torch.tensor([4, 1], dtype=torch.int32), ValueError, r"indices should be in \[0, 4\)"),
    ],
)
def test_record_checks_indices_at_the_call(indices, error, match):
    t = LossTable(4)
    t.record(torch.tensor([1]), torch.tensor([3.0]))
    with pytest.raises(error, match=match):
        t.record(indices, torch.tensor([1.0, 2.0]))
    # nothing of the bad batch was staged: the table and the epoch's counters are as before
    stats = t.finalize_epoch()
    assert stats["recorded"] == 1 and stats["loss_count"] == 1
    assert t.losses()[1] == 3.0 and torch.isnan(t.losses()[[0, 2, 3]]).all()


def test_record_checks_losses_type_and_takes_any_integer_indices():
    t = LossTable(4)
    with pytest.raises(TypeError, match="losses should be a Tensor, got losses of type list"):
        t.record(torch.tensor([0]), [1.0])
    for dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        t.record(torch.tensor([3, 0], dtype=dtype), torch.tensor([1.0, 2.0]))
    t.record(torch.empty(0, dtype=torch.int64), torch.empty(0))
    assert t.losses().tolist()[0] == 2.0 and t.losses().tolist()[3] == 1.0


@pytest.mark.needs_cuda
def test_record_on_cuda_does_not_synchronise():
    t = LossTable(1000)
    idx = torch.randint(0, 1000, (256,), device="cuda")
    losses = torch.rand(256, device="cuda")
    t.record(idx, losses)  # first call allocates on the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(200):  # crosses a fold
            t.record(idx, losses, correct=torch.ones(256, dtype=torch.bool, device="cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert t.finalize_epoch()["recorded"] == 201 * 256


@pytest.mark.needs_cuda
def test_tied_losses_at_the_cut_give_the_same_set_on_cpu_and_cuda():
    losses = torch.tensor([1.0, 2.0, 2.0, 2.0, 2.0, 0.5] * 500)  # the cut falls inside a run of ties
    chosen = []
    for device in ("cpu", "cuda"):
        t = LossTable(losses.numel())
        t.record(torch.arange(losses.numel(), device=device), losses.to(device))
        t.finalize_epoch()
        chosen.append(sorted(t.select_high_loss(0.3).tolist()))
    assert chosen[0] == chosen[1]
