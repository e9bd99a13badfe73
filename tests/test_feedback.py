import math

import numpy as np
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
    with pytest.raises(TypeError, match=r"fraction should be a real number, got fraction='0.1' of type str"):
        t.select_high_loss("0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"fraction should be a real number, got fraction=True of type bool"):
        t.select_high_loss(True)
    with pytest.raises(ValueError, match=r"fraction should be finite, got fraction=nan"):
        t.select_high_loss(math.nan)
    assert t.select_high_loss(np.float32(0.5)).tolist() == [3]


def test_state_roundtrip_and_size_check():
    t = LossTable(6)
    t.record(torch.tensor([0, 5]), torch.tensor([1.0, 2.0]), correct=torch.tensor([True, False]))
    state = t.state_dict()
    u = LossTable(6)
    u.load_state_dict(state)
    assert torch.equal(u.losses().nan_to_num(-1), t.losses().nan_to_num(-1))
    assert u.finalize_epoch() == t.finalize_epoch()
    with pytest.raises(ValueError, match=r"loss table size mismatch: state\['size'\] should be 7 "
                                         r"\(this table's size\), got state\['size'\]=6"):
        LossTable(7).load_state_dict(state)


@pytest.mark.parametrize(
    "size, error, match",
    [
        (0, ValueError, "size should be >= 1, got size=0"),
        ("3", TypeError, "size should be an int, got size='3' of type str"),
        (3.0, TypeError, "size should be an int, got size=3.0 of type float"),
        (True, TypeError, "size should be an int, got size=True of type bool"),
    ],
)
def test_size_is_checked(size, error, match):
    with pytest.raises(error, match=match):
        LossTable(size)


def test_size_takes_numpy_ints_as_plain_ints():
    t = LossTable(np.int64(3))
    assert t.size == 3 and type(t.size) is int and t.losses().shape == (3,)


def good_state(size=4):
    t = LossTable(size)
    t.record(torch.tensor([0, 2]), torch.tensor([1.0, 2.0]))
    return t.state_dict()


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda s: None, TypeError,
         r"state should be a dict \(from LossTable.state_dict\(\)\), got state of type NoneType"),
        (lambda s: [], TypeError, "state should be a dict .* got state of type list"),
        (lambda s: {}, ValueError, r"state should have the keys \['size', 'last', 'sum', 'count', 'stats'\], got state "
                                   r"missing \['size', 'last', 'sum', 'count', 'stats'\]"),
        (lambda s: {k: v for k, v in s.items() if k != "stats"}, ValueError, r"got state missing \['stats'\]"),
        (lambda s: {**s, "size": "x"}, ValueError,
         r"state\['size'\] should be an int, got state\['size'\]='x' of type str"),
        (lambda s: {**s, "size": None}, ValueError, r"state\['size'\] should be an int, got state\['size'\]=None"),
        (lambda s: {**s, "size": 5}, ValueError,
         r"state\['size'\] should be 4 \(this table's size\), got state\['size'\]=5"),
        (lambda s: {**s, "last": [0.0] * 4}, ValueError,
         r"state\['last'\] should be a float tensor of shape \(4,\), got state\['last'\] of type list"),
        (lambda s: {**s, "sum": torch.zeros(3)}, ValueError,
         r"state\['sum'\] should be a float tensor of shape \(4,\), got state\['sum'\] of shape \(3,\)"),
        (lambda s: {**s, "count": torch.zeros(4, dtype=torch.bool)}, ValueError,
         r"state\['count'\] should be a float tensor .* dtype torch.bool"),
        # Values no table holds: an edited count of -1 emptied the table, a NaN sum poisoned every loss.
        (lambda s: {**s, "count": torch.tensor([0.0, -1.0, 0.0, 0.0])}, ValueError,
         r"state\['count'\] should be finite and >= 0, got \[-1.0\] at positions \[1\]"),
        (lambda s: {**s, "sum": torch.tensor([0.0, 0.0, float("nan"), 0.0])}, ValueError,
         r"state\['sum'\] should be a number \(not NaN\), got \[nan\] at positions \[2\]"),
        (lambda s: {**s, "stats": s["stats"].clone().fill_(float("nan"))}, ValueError,
         r"state\['stats'\] should be finite, and >= 0 but for the loss sum \(position 2\), got \[nan, nan, nan, nan, "
         r"nan\] at positions \[0, 1, 2, 3, 4\]"),
        (lambda s: {**s, "stats": torch.tensor([0.0, -3.0, -1.0, 2.0, float("inf"), 2.0], dtype=torch.float64)},
         ValueError, r"state\['stats'\] should be finite, .* got \[-3.0, inf\] at positions \[1, 4\]"),
        (lambda s: {**s, "count": torch.tensor([float("inf"), 0.0, 0.0, 0.0])}, ValueError,
         r"state\['count'\] should be finite and >= 0, got \[inf\] at positions \[0\]"),
    ],
)
def test_load_state_dict_checks_the_state_and_changes_nothing_when_it_refuses(change, error, match):
    t = LossTable(4)
    t.record(torch.tensor([1, 3]), torch.tensor([5.0, 6.0]))
    before = t.state_dict()
    with pytest.raises(error, match=match):
        t.load_state_dict(change(good_state()))
    after = t.state_dict()
    for k in ("last", "sum", "count", "stats"):
        assert torch.equal(before[k].nan_to_num(-1), after[k].nan_to_num(-1))


def test_load_state_dict_names_a_nested_state_by_its_prefix():
    with pytest.raises(TypeError, match=r"state\['table'\] should be a dict .* got state\['table'\] of type NoneType"):
        LossTable(4).load_state_dict(None, prefix="state['table']")  # type: ignore[arg-type]
    with pytest.raises(ValueError,
                       match=r"state\['table'\]\['size'\] should be an int, got state\['table'\]\['size'\]='x'"):
        LossTable(4).load_state_dict({**good_state(), "size": "x"}, prefix="state['table']")


def test_repr_is_short_and_does_not_fold():
    t = LossTable(4)
    assert repr(t) == "LossTable(size=4, device=cpu, staged=0)"
    t.record(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0, 3.0]))
    assert repr(t) == "LossTable(size=4, device=cpu, staged=3)"
    assert repr(t) == "LossTable(size=4, device=cpu, staged=3)"  # reading it folds nothing


def test_finalize_reduce_callback_sees_pending():
    t = LossTable(3)
    t.record(torch.tensor([0]), torch.tensor([2.0]))

    def double(table):
        total, count, stats = table.pending()
        total.mul_(2)
        count.mul_(2)
        stats.mul_(2)

    with pytest.raises(TypeError, match=r"^reduce should be a callable taking the table, or None, got reduce=3$"):
        t.finalize_epoch(3)
    stats = t.finalize_epoch(double)  # the refused call changed nothing: the record is still pending
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
         r"indices should be an int64, int32, int16, int8 or uint8 tensor \(.*\), got indices of dtype torch.float32"),
        (torch.tensor([True, False]), TypeError, "indices should be an int64, .* dtype torch.bool"),
        (torch.tensor([1, 2], dtype=torch.uint32), TypeError,
         r"indices should be an int64, int32, int16, int8 or uint8 tensor \(the dtypes torch indexes with; "
         r"indices.long\(\) converts\), got indices of dtype torch.uint32"),
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


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"keep": [True, False]}, r"keep should be a bool tensor or None .*got keep of type list"),
        ({"keep": torch.tensor([0.5, 0.0])}, r"keep should be a bool tensor or None .*got keep of dtype torch.float32"),
        ({"keep": torch.tensor([1, 0])}, r"keep should be a bool tensor .*got keep of dtype torch.int64"),
        ({"correct": [True, False]}, r"correct should be a bool tensor .* or None, got correct of type list"),
        ({"correct": torch.tensor([1, 0])},
         r"correct should be a bool tensor .* or None, got correct of dtype torch.int64"),
    ],
)
def test_record_checks_keep_and_correct(kw, match):
    t = LossTable(8)
    with pytest.raises(TypeError, match=match):
        t.record(torch.tensor([5, 6]), torch.tensor([1.0, 2.0]), **kw)
    assert t.finalize_epoch()["recorded"] == 0  # nothing of the bad batch was staged
    t.record(torch.tensor([5, 6]), torch.tensor([1.0, 2.0]), keep=torch.tensor([True, False]),
             correct=torch.tensor([0.5, math.nan]))
    stats = t.finalize_epoch()
    assert stats["recorded"] == 1 and stats["correct"] == 0.5 and stats["scored"] == 1


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


def test_select_high_loss_never_selects_a_sample_without_a_loss_when_known_losses_are_minus_inf():
    # A known loss of -inf (a preview's, or a float32 sum that overflowed) once tied with the samples without a
    # loss, which topk could then select.
    table = LossTable(5)
    given = torch.tensor([-math.inf, -math.inf, math.nan, math.nan, 1.0])
    assert sorted(table.select_high_loss(0.9, losses=given).tolist()) in ([0, 4], [1, 4])
    table = LossTable(8)
    table.record(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([-3e38, -3e38, -3e38, -3e38, 2.0]))  # sums overflow
    table.finalize_epoch()
    assert table.losses()[:2].tolist() == [-math.inf, -math.inf]
    assert sorted(table.select_high_loss(0.9).tolist()) in ([0, 2], [1, 2])


def test_select_high_loss_checks_the_losses_it_is_given():
    table = LossTable(10)
    with pytest.raises(ValueError, match=r"losses should have shape \(10,\), got losses of shape \(20,\)"):
        table.select_high_loss(0.5, losses=torch.arange(20.0))
    with pytest.raises(TypeError, match=r"losses should be a floating-point tensor of shape \(10,\), got losses of dtype torch.int64"):
        table.select_high_loss(0.5, losses=torch.arange(10))
    with pytest.raises(TypeError, match=r"losses should be a floating-point tensor .*got losses of type list"):
        table.select_high_loss(0.5, losses=[0.0] * 10)
    assert sorted(table.select_high_loss(0.5, losses=torch.arange(10.0)).tolist()) == [5, 6, 7, 8, 9]


def test_record_refuses_losses_that_are_not_floating_point():
    table = LossTable(4)
    ids = torch.arange(4)
    for bad in (torch.tensor([0, 1, 2, 1]), torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.complex64)):
        with pytest.raises(TypeError, match=f"losses should be a floating-point tensor, got losses of dtype {bad.dtype}"):
            table.record(ids, bad)  # labels passed by mistake would be ranked as losses
    table.record(ids, torch.ones(4, dtype=torch.float16))  # any float dtype
    table.finalize_epoch()
    assert table.losses().tolist() == [1.0] * 4


def test_uncounted_samples_enter_neither_the_table_nor_the_epochs_mean():
    table = LossTable(4)
    losses = torch.tensor([1.0, 5.0, 3.0, math.nan])
    keep = torch.tensor([True, True, False, True])  # sample 2 mixed: the mean only
    counted = torch.tensor([True, False, True, False])  # samples 1 and 3: nothing counted, no loss at all
    table.record(torch.arange(4), losses, keep=keep, counted=counted)
    table.record(torch.arange(2), torch.tensor([2.0, 7.0]), counted=torch.tensor([True, False]))
    stats = table.finalize_epoch()
    assert stats["loss_sum"] == pytest.approx(1.0 + 3.0 + 2.0) and stats["loss_count"] == 3
    assert stats["nonfinite"] == 0 and stats["recorded"] == 2
    assert table.losses().tolist()[0] == 1.5 and table.losses()[1:].isnan().all()


def test_record_checks_counted():
    with pytest.raises(TypeError, match=r"counted should be a bool tensor or None .*got counted of dtype torch.int64"):
        LossTable(2).record(torch.arange(2), torch.ones(2), counted=torch.ones(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"counted should have the shape of indices \(2,\), got counted of shape \(3,\)"):
        LossTable(2).record(torch.arange(2), torch.ones(2), counted=torch.ones(3, dtype=torch.bool))


def test_an_unchecked_index_out_of_range_still_fails_at_the_fold():
    # NOTE [ The cost of a record ]: the loader stages its own indices without the range check; one out of range
    # (a bug of ours) must still fail loudly, where the staged records are added to the table.
    table = LossTable(4)
    table._stage_batch(torch.tensor([0, 7]), torch.tensor([1.0, 2.0]), None, None, None)
    with pytest.raises(IndexError):
        table.losses()


def test_load_state_dict_takes_a_sum_that_overflowed():
    # Finite losses of a sample drawn twice in an epoch (a sampler with replacement) can overflow the float32 sum: the
    # table reaches that by itself, so its own state loads.
    t = LossTable(4)
    t.record(torch.tensor([1, 1]), torch.tensor([2e38, 2e38]))
    t.finalize_epoch()
    state = t.state_dict()
    assert state["last"][1].isinf()
    LossTable(4).load_state_dict(state)


def test_discard_epoch_drops_records_still_staged():
    # discard_epoch() must drop records not yet folded (fewer than 64 batches since the last fold).
    t = LossTable(4)
    t.record(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]), correct=torch.tensor([True, False]))
    t.discard_epoch()
    assert t.losses().isnan().all()
    stats = t.finalize_epoch()
    assert stats == {"correct": 0.0, "scored": 0.0, "loss_sum": 0.0, "loss_count": 0.0, "nonfinite": 0.0,
                     "recorded": 0.0}
    assert t.losses().isnan().all()


def test_finalize_epoch_returns_only_the_closed_epochs_counters():
    # The counters restart with each epoch; the second epoch's stats do not include the first's.
    t = LossTable(4)
    t.record(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]), correct=torch.tensor([True, True]))
    first = t.finalize_epoch()
    assert first["loss_sum"] == 3.0 and first["recorded"] == 2.0 and first["correct"] == 2.0
    t.record(torch.tensor([2]), torch.tensor([5.0]), correct=torch.tensor([False]))
    second = t.finalize_epoch()
    assert second == {"correct": 0.0, "scored": 1.0, "loss_sum": 5.0, "loss_count": 1.0, "nonfinite": 0.0,
                      "recorded": 1.0}
    third = t.finalize_epoch()  # an epoch with no record
    assert third["recorded"] == 0.0 and third["loss_count"] == 0.0 and third["scored"] == 0.0
    assert torch.equal(t.losses()[:3], torch.tensor([1.0, 2.0, 5.0])) and math.isnan(t.losses()[3])


def test_finite_float64_losses_beyond_float32_stay_finite():
    # The table holds float32: a float64 loss of 1e39 overflowed to inf and was reported as non-finite, left out of
    # the table, so the sample with the highest loss could never be removed.
    t = LossTable(4)
    t.record(torch.arange(4), torch.tensor([1.0, 1e39, -1e39, math.inf], dtype=torch.float64))
    stats = t.finalize_epoch()
    big = torch.finfo(torch.float32).max
    assert stats["nonfinite"] == 1.0 and stats["recorded"] == 3.0
    assert t.losses()[:3].tolist() == [1.0, big, -big] and math.isnan(t.losses()[3])
    assert t.select_high_loss(0.5).tolist() == [1]  # floor(0.5 * 3) = 1: the largest
