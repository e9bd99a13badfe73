"""track(criterion): the returned loss is the criterion's own, and per-sample losses are what the table needs."""

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import enlight_data as ed
from enlight_data.tracking import TrackedLoss


class Captured:
    """A recorder that keeps what it is given."""

    def __init__(self):
        self.calls = []

    def record(self, per_sample_loss, *, output=None, target=None, ignore_index=None, threshold=0.0, multi_label=False):
        self.calls.append((per_sample_loss, ignore_index))


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, generator=g, requires_grad=True)
    labels = torch.randint(0, 5, (6,), generator=g)
    labels[1] = -100  # ignored by default
    seq_logits = torch.randn(6, 5, 7, generator=g, requires_grad=True)  # (B, C, T)
    seq_labels = torch.randint(0, 5, (6, 7), generator=g)
    seq_labels[0, 3:] = -100  # padding
    seq_labels[2, 1:] = 3
    probs = torch.softmax(torch.randn(6, 5, generator=g), 1)
    binary = torch.randint(0, 2, (6, 5), generator=g).float()
    return logits, labels, seq_logits, seq_labels, probs, binary


WEIGHT = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])


def _cases():
    logits, labels, seq_logits, seq_labels, probs, binary = _data()
    hard = labels.clamp_min(0)
    return [
        ("CE, ignore_index -100 present", nn.CrossEntropyLoss(), logits, labels),
        ("CE, weight and -100", nn.CrossEntropyLoss(weight=WEIGHT), logits, labels),
        ("CE, weight, smoothing, -100", nn.CrossEntropyLoss(weight=WEIGHT, label_smoothing=0.2), logits, labels),
        ("CE, ignore_index=3", nn.CrossEntropyLoss(ignore_index=3), logits, hard),
        ("CE, sequences with padding", nn.CrossEntropyLoss(), seq_logits, seq_labels),
        ("CE, weighted sequences", nn.CrossEntropyLoss(weight=WEIGHT), seq_logits, seq_labels),
        ("CE, soft targets, weight", nn.CrossEntropyLoss(weight=WEIGHT), logits, probs),
        ("CE, sum", nn.CrossEntropyLoss(reduction="sum"), logits, labels),
        ("NLL, weight", nn.NLLLoss(weight=WEIGHT), torch.log_softmax(logits, 1), labels),
        ("BCE with logits, weight", nn.BCEWithLogitsLoss(weight=WEIGHT), logits, binary),
        ("BCE with logits, pos_weight", nn.BCEWithLogitsLoss(pos_weight=WEIGHT), logits, binary),
        ("KLDiv, batchmean", nn.KLDivLoss(reduction="batchmean"), torch.log_softmax(logits, 1), probs),
        ("MSE", nn.MSELoss(), logits, probs),
        ("F.cross_entropy", F.cross_entropy, logits, labels),
        ("partial, weight", functools.partial(F.cross_entropy, weight=WEIGHT), logits, labels),
        ("partial, sum", functools.partial(F.cross_entropy, reduction="sum"), logits, labels),
        ("partial, ignore_index", functools.partial(F.cross_entropy, ignore_index=3), logits, hard),
        ("MultiMarginLoss, weight (not known: evaluated again)", nn.MultiMarginLoss(weight=WEIGHT), logits, hard),
        ("a callable with **kwargs", lambda out, y, **kw: F.cross_entropy(out, y, **kw), logits, labels),
    ]


@pytest.mark.parametrize("name, criterion, output, target", _cases(), ids=[c[0] for c in _cases()])
def test_the_tracked_loss_is_the_criterions_value_and_gradient(name, criterion, output, target):
    tracked = TrackedLoss(criterion, Captured())
    ours = tracked(output, target)
    theirs = criterion(output, target)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    (g_ours,) = torch.autograd.grad(ours, output)
    (g_theirs,) = torch.autograd.grad(theirs, output)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-7)


def test_per_sample_losses_of_padded_sequences_average_the_counted_positions():
    _, _, seq_logits, seq_labels, _, _ = _data()
    recorder = Captured()
    TrackedLoss(nn.CrossEntropyLoss(), recorder)(seq_logits, seq_labels)
    (per_sample, ignore_index), = recorder.calls
    assert ignore_index == -100
    full = F.cross_entropy(seq_logits, seq_labels, reduction="none").detach()
    torch.testing.assert_close(per_sample[0], full[0, :3].mean())  # padding does not dilute the loss
    torch.testing.assert_close(per_sample[1:], full[1:].mean(1))
    everything_padded = seq_labels.clone()
    everything_padded[4] = -100
    recorder = Captured()
    TrackedLoss(nn.CrossEntropyLoss(), recorder)(seq_logits, everything_padded)
    assert recorder.calls[0][0][4] == 0.0


def _loader(inputs, targets, schedule=None):
    dataset = TensorDataset(inputs, targets)
    return ed.enlighten(DataLoader(dataset, batch_size=len(dataset)), schedule or ed.high_loss_removal(2, fraction=0.25))


def test_accuracy_of_a_single_logit_is_its_sign_against_the_label():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1]).float()
    loader = _loader(x, y)
    logits = torch.tensor([-1.0, 2.0, -0.5, 0.3, 1.0, -2.0, 0.5, 0.1]).unsqueeze(1)  # right: 0, 1, 4, 5, 7
    criterion = loader.track(nn.BCEWithLogitsLoss())
    for _, target in loader:
        criterion(logits, target.unsqueeze(1))
    assert loader.history[-1]["accuracy"] == 5 / 8


@pytest.mark.parametrize("kind", ["module", "function"])
def test_accuracy_of_bce_on_probabilities_thresholds_them_at_one_half(kind):
    x, y = torch.zeros(8, 3), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1]).float()
    loader = _loader(x, y)
    # Probabilities, all in (0, 1): a threshold at 0 would call every one positive (4/8 right).
    probs = torch.tensor([0.1, 0.9, 0.4, 0.6, 0.7, 0.2, 0.55, 0.8])  # right: 0, 1, 4, 5, 7
    criterion = loader.track(nn.BCELoss() if kind == "module" else F.binary_cross_entropy)
    for _, target in loader:
        criterion(probs, target)
    assert loader.history[-1]["accuracy"] == 5 / 8


def test_multi_label_accuracy_is_the_fraction_of_labels_right():
    x = torch.zeros(2, 3)
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # multi-hot
    logits = torch.tensor([[3.0, -1.0, -2.0, -1.0], [-1.0, 2.0, 1.0, 4.0]])  # 3/4 and 2/4 right
    loader = _loader(x, target)
    criterion = loader.track(nn.BCEWithLogitsLoss(), multi_label=True)
    for _, t in loader:
        criterion(logits, t)
    # The argmax would score sample 0 right and sample 1 wrong (1/2); the labels say (3/4 + 2/4) / 2.
    assert loader.history[-1]["accuracy"] == (0.75 + 0.5) / 2


def test_bce_on_single_label_rows_is_scored_top_1_so_an_accuracy_period_does_not_end_at_once():
    # BCE on one-hot (or mixed) rows of single-label data, as DeiT/timm train: a label-wise score would be about
    # 1 - 2/C for any prediction (here 0.8) and end a 50 % accuracy period after epoch 0.
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (40,), generator=g)
    rows = F.one_hot(labels, 10).float()
    logits = torch.randn(40, 10, generator=g)
    loader = _loader(torch.zeros(40, 3), rows, ed.high_loss_removal(ed.Period(until_accuracy=0.5, max_epochs=5), fraction=0.25))
    criterion = loader.track(nn.BCEWithLogitsLoss())
    for _, t in loader:
        criterion(logits, t)
    assert loader.history[-1]["accuracy"] == (logits.argmax(1) == labels).sum().item() / 40 < 0.5
    assert loader.in_period


def test_track_checks_the_forward_of_a_compiled_module():
    class Plain(nn.Module):
        def forward(self, output, target):
            return F.cross_entropy(output, target)

    compiled = torch.compile(Plain())
    with pytest.raises(TypeError, match="track\\(\\) needs a criterion that can return per-sample losses"):
        TrackedLoss(compiled, Captured())


def test_record_checks_threshold_and_multi_label():
    loader = _loader(torch.zeros(2, 3), torch.zeros(2, 4))
    for _, t in loader:
        with pytest.raises(ValueError, match="threshold should be finite, got threshold=nan"):
            loader.record(torch.ones(2), output=torch.zeros(2, 4), target=t, threshold=float("nan"))
        for bad in (True, "0.5"):
            with pytest.raises(TypeError, match="threshold should be a real number"):
                loader.record(torch.ones(2), output=torch.zeros(2, 4), target=t, threshold=bad)
        with pytest.raises(TypeError, match="multi_label should be a bool, got multi_label=1 of type int"):
            loader.record(torch.ones(2), output=torch.zeros(2, 4), target=t, multi_label=1)
        with pytest.raises(ValueError, match=r"target should have the output's shape \(2, 4\), got target of shape \(2,\)"):
            loader.record(torch.ones(2), output=torch.zeros(2, 4), target=t[:, 0], multi_label=True)
        # One of output/target alone would silently score nothing (an accuracy period could then never end); a
        # target alone only masks a sequence's padded positions.
        with pytest.raises(ValueError, match="output should come with target= .* got output= without target="):
            loader.record(torch.ones(2), output=torch.zeros(2, 4))
        with pytest.raises(ValueError, match=r"target= without output= only tells a sequence's positions at "
                                             r"ignore_index \(class indices of the losses' shape \(2,\)\), got target "
                                             r"of shape \(2, 4\) and dtype torch.float32; to score the training "
                                             r"accuracy, pass output= too"):
            loader.record(torch.ones(2), target=t)
        with pytest.raises(ValueError, match=r"ignore_index should come with target= .* got ignore_index=0 without "
                                             r"target="):
            loader.record(torch.ones(2), ignore_index=0)
        # Labels passed as losses would be ranked as losses.
        with pytest.raises(TypeError, match="per_sample_loss should be a floating-point tensor .* got per_sample_loss "
                                            "of dtype torch.int64"):
            loader.record(torch.ones(2, dtype=torch.long))
        loader.record(torch.ones(2))


def test_track_refuses_a_loss_class_for_an_instance():
    # Without the parentheses the class "accepts" reduction= (its __init__ does), and the first step failed deep in
    # torch ("Boolean value of Tensor ... is ambiguous").
    with pytest.raises(TypeError, match=r"criterion should be a loss \(an instance or a function\), got the class "
                                        r"CrossEntropyLoss: pass CrossEntropyLoss\(\)"):
        TrackedLoss(nn.CrossEntropyLoss, Captured())


def test_track_refuses_a_module_whose_forward_takes_no_reduction():
    class Plain(nn.Module):  # Module.__call__ takes **kwargs: its forward is what decides
        def forward(self, output, target):
            return F.cross_entropy(output, target)

    class Reducing(nn.Module):
        def forward(self, output, target, reduction="mean"):
            return F.cross_entropy(output, target, reduction=reduction)

    with pytest.raises(TypeError, match=r"track\(\) needs a criterion that can return per-sample losses.*Plain\(\)"):
        TrackedLoss(Plain(), Captured())
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    recorder = Captured()
    torch.testing.assert_close(TrackedLoss(Reducing(), recorder)(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(recorder.calls[0][0], F.cross_entropy(logits, labels, reduction="none"))


def test_accuracy_of_padded_sequences_counts_the_unpadded_positions():
    x = torch.zeros(2, 3)
    target = torch.tensor([[1, 2, -100, -100], [0, 0, 0, 0]])
    loader = _loader(x, target)
    logits = torch.zeros(2, 3, 4)
    logits[0, 1, 0] = logits[0, 0, 1] = 5.0  # sample 0: right at position 0, wrong at 1; padding after
    logits[1, 0, :] = 5.0  # sample 1: all right
    criterion = loader.track(nn.CrossEntropyLoss())
    for _, t in loader:
        criterion(logits, t)
    assert loader.history[-1]["accuracy"] == (0.5 + 1.0) / 2


class _Focal(nn.CrossEntropyLoss):
    """A subclass that reduces its own way: the tracked value must still be its own."""

    def forward(self, output, target):
        ce = F.cross_entropy(output, target, weight=self.weight, reduction="none")
        focal = (1 - torch.exp(-ce)) ** 2 * ce
        return focal.mean() if self.reduction == "mean" else focal if self.reduction == "none" else focal.sum()


class _KeywordLoss(nn.Module):
    """A module without a `reduction` attribute whose forward takes one."""

    def forward(self, output, target, reduction="mean"):
        return F.cross_entropy(output, target, reduction=reduction)


def test_subclasses_keyword_modules_changed_settings_and_uint8_labels_keep_the_criterions_value():
    logits, labels, *_ = _data()
    hard = labels.clamp_min(0)
    for criterion, target in [(_Focal(weight=WEIGHT), hard), (_KeywordLoss(), hard),
                              (nn.CrossEntropyLoss(weight=WEIGHT), hard.to(torch.uint8))]:
        torch.testing.assert_close(TrackedLoss(criterion, Captured())(logits, target), criterion(logits, target))
    criterion = nn.CrossEntropyLoss(weight=WEIGHT)
    tracked = TrackedLoss(criterion, Captured())
    criterion.weight = torch.tensor([5.0, 0.1, 1.0, 1.0, 2.0])  # re-balanced after wrapping
    criterion.ignore_index = 3
    torch.testing.assert_close(tracked(logits, hard), criterion(logits, hard))
    torch.testing.assert_close(tracked.double()(logits.double(), hard), criterion(logits.double(), hard))


def test_the_reduction_of_a_criterion_taking_kwargs_is_unknown_and_its_loss_its_own():
    def summed(output, target, **kwargs):  # its default reduction hides in **kwargs: "sum"
        return F.cross_entropy(output, target, reduction=kwargs.get("reduction", "sum"))

    logits, labels, *_ = _data()
    tracked = TrackedLoss(summed, Captured())
    assert tracked.reduction == "?"
    torch.testing.assert_close(tracked(logits, labels), summed(logits, labels))
    assert TrackedLoss(F.cross_entropy, Captured()).reduction == "mean"  # a visible default is read
    assert TrackedLoss(functools.partial(F.cross_entropy, reduction="sum"), Captured()).reduction == "sum"


def test_wrapping_a_compiled_criterion_leaves_it_alone():
    criterion = nn.CrossEntropyLoss()
    compiled = torch.compile(criterion, backend="eager")
    logits, labels, *_ = _data()
    tracked = TrackedLoss(compiled, Captured())
    assert criterion.reduction == "mean" and compiled(logits, labels).dim() == 0
    torch.testing.assert_close(tracked(logits, labels), criterion(logits, labels))


def test_a_fully_padded_sample_is_neither_scored_nor_recorded():
    x = torch.zeros(4, 3)
    target = torch.tensor([[1, 2, 0], [-100, -100, -100], [0, 0, 0], [-100, -100, -100]])
    loader = _loader(x, target)
    logits = torch.zeros(4, 3, 3)
    logits[0, 1, 0] = logits[0, 2, 1] = logits[0, 0, 2] = 5.0  # all right
    logits[2, 1, :] = 5.0  # all wrong
    criterion = loader.track(nn.CrossEntropyLoss())
    for _, t in loader:
        criterion(logits, t)
    assert loader.history[-1]["accuracy"] == 0.5  # samples 0 and 2 only
    recorded = loader.losses()
    assert recorded[[1, 3]].isnan().all() and not recorded[[0, 2]].isnan().any()


def test_an_iterator_closed_late_leaves_a_newer_epochs_batch_alone():
    loader = _loader(torch.randn(16, 3), torch.randint(0, 3, (16,)))
    old = iter(loader)
    next(old)  # epoch 0 left open, its iterator kept
    for step, (x, y) in enumerate(loader):  # epoch 1
        if step == 0:
            old.close()  # e.g. a stored traceback dropped, or a garbage collection
        loader.record(torch.ones(len(y)))  # still a current batch
    assert loader.history[-1]["recorded"] == 16


def test_binary_segmentation_accuracy_is_per_pixel_and_regression_gives_none():
    x = torch.zeros(2, 3)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])  # (B, 1, H, W)
    loader = _loader(x, mask)
    logits = torch.tensor([[[[2.0, -1.0], [3.0, -1.0]]], [[[1.0, 1.0], [1.0, -1.0]]]])  # 3/4 right each
    criterion = loader.track(nn.BCEWithLogitsLoss())
    for _, t in loader:
        criterion(logits, t)
    assert loader.history[-1]["accuracy"] == 0.75
    regression = _loader(x, torch.randn(2, 4))
    criterion = regression.track(nn.MSELoss())
    for _, t in regression:
        criterion(torch.zeros(2, 4), t)
    assert regression.history[-1]["accuracy"] is None and regression.history[-1]["recorded"] == 2


def test_a_tracked_loss_makes_no_reference_cycle_that_keeps_the_loader_alive():
    # A loader kept alive until a garbage collection keeps its persistent workers too: their shutdown then runs at
    # some later, arbitrary point (seen as 5-10 s stalls in unrelated tests).
    import gc
    import weakref

    gc.disable()
    try:
        for criterion in (nn.CrossEntropyLoss(weight=WEIGHT), F.cross_entropy):
            loader = _loader(torch.zeros(4, 5), torch.tensor([0, 1, 2, 3]))
            tracked = loader.track(criterion)
            for _, y in loader:
                tracked(torch.zeros(4, 5), y)
            alive = weakref.ref(loader)
            del loader, tracked
            assert alive() is None
    finally:
        gc.enable()


def test_tracked_loss_takes_keyword_arguments_as_torch_losses_do():
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    loader = ed.enlighten(DataLoader(TensorDataset(x, y), batch_size=4), ed.high_loss_removal(2, fraction=0.25))
    tracked = loader.track(nn.CrossEntropyLoss())
    for xb, yb in loader:
        value = tracked(input=xb, target=yb)
    torch.testing.assert_close(value, F.cross_entropy(x, y))
    assert loader.history[-1]["recorded"] == 4


def test_tracked_loss_needs_a_recorder():
    with pytest.raises(TypeError, match="recorder should have a record\\(\\) method .*got recorder of type NoneType"):
        TrackedLoss(nn.CrossEntropyLoss(), None)


@pytest.mark.parametrize("tracked", [False, True])
def test_a_batch_recorded_in_chunks_equals_it_recorded_whole(tracked):
    # Gradient accumulation: each batch of 8 is split into chunks of 3, 3 and 2 rows, recorded one by one.
    x, y = torch.randn(32, 5, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 5
    model = nn.Linear(5, 5)

    def run(chunked):
        loader = ed.enlighten(DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True),
                              ed.high_loss_removal(ed.Period(until_accuracy=0.99, max_epochs=3), fraction=0.25))
        criterion = loader.track(nn.CrossEntropyLoss())
        for _ in range(3):
            for xb, yb in loader:
                bounds = [(0, 3), (3, 6), (6, 8)] if chunked else [(0, 8)]
                for a, b in bounds:
                    rows = slice(a, b) if chunked else None
                    if tracked:
                        criterion(model(xb[a:b]), yb[a:b], rows=rows)
                    else:
                        losses = F.cross_entropy(model(xb[a:b]), yb[a:b], reduction="none")
                        loader.record(losses, output=model(xb[a:b]), target=yb[a:b], rows=rows)
        return loader

    with torch.no_grad():
        whole, chunks = run(False), run(True)
    torch.testing.assert_close(chunks.losses(), whole.losses(), equal_nan=True)
    assert [h["accuracy"] for h in chunks.history] == [h["accuracy"] for h in whole.history]
    assert [h["removed"] for h in chunks.history] == [h["removed"] for h in whole.history]
    assert chunks.history[-1]["removed"] > 0


def test_rows_are_checked_and_recorded_once():
    loader = ed.enlighten(DataLoader(TensorDataset(torch.zeros(8, 2), torch.zeros(8)), batch_size=8),
                          ed.high_loss_removal(2, fraction=0.25))
    for _ in loader:
        for bad, error, match in [
            ([0, 1], TypeError, r"rows should be a slice of the batch's rows with step 1 \(e.g. slice\(0, 32\)\), got"),
            (slice(0, 8, 2), TypeError, "with step 1"),
            (slice(4, 9), ValueError, r"rows should lie within the batch's 8 rows and hold one at least, got"),
            (slice(5, 5), ValueError, "hold one at least"),
            (slice(-9, None), ValueError, r"lie within the batch's 8 rows.*got rows=slice\(-9, None, None\)"),
            (slice(6, -3), ValueError, "hold one at least"),  # rows 6 to 5
            (slice(0, 2.5), TypeError, "rows.stop should be an int"),
        ]:
            with pytest.raises(error, match=match):
                loader.record(torch.ones(2), rows=bad)
        with pytest.raises(ValueError, match=r"per_sample_loss should have the 4 rows of rows=slice\(0, 4\) as its "
                                             r"first dimension, got shape \(3,\)"):
            loader.record(torch.ones(3), rows=slice(0, 4))
        # A chunk's losses without rows=: the error points at rows= (gradient accumulation); not for a larger first
        # dimension, nor for a target that disagrees with a whole batch's losses: neither is a chunk.
        with pytest.raises(ValueError, match=r"the batch size 8 as its first dimension, got shape \(4,\); for a chunk "
                                             r"of the batch \(gradient accumulation\), pass the chunk's rows, e\.g\. "
                                             r"rows=slice\(0, 4\)$"):
            loader.record(torch.ones(4))
        with pytest.raises(ValueError, match=r"target should have the batch size 8 .*got shape \(2,\)$"):
            loader.record(torch.ones(8), output=torch.zeros(8, 3), target=torch.zeros(2, dtype=torch.long))
        with pytest.raises(ValueError, match=r"got shape \(9,\)$"):
            loader.record(torch.ones(9))
        loader.record(torch.full((4,), 1.0), rows=slice(0, 4))
        with pytest.warns(UserWarning, match="called again for rows of the batch already recorded"):
            loader.record(torch.full((2,), 9.0), rows=slice(3, 5))  # row 3 is recorded: the call is ignored
        loader.record(torch.full((2,), 2.0), rows=slice(4, -2))  # a negative bound counts from the end, as x[4:-2]
        loader.record(torch.full((2,), 3.0), rows=slice(-2, None))
        loader.record(torch.full((8,), 9.0))  # every row recorded: ignored (warned once already)
    assert loader.losses().tolist() == [1.0] * 4 + [2.0] * 2 + [3.0] * 2


def test_a_checkpoint_between_chunks_warns_that_the_other_rows_go_unrecorded():
    loader = ed.enlighten(DataLoader(TensorDataset(torch.zeros(16, 2), torch.zeros(16)), batch_size=8),
                          ed.high_loss_removal(2, fraction=0.25))
    for _ in loader:
        loader.record(torch.ones(3), rows=slice(0, 3))
        with pytest.warns(UserWarning, match=r"taken after 3 of the current batch's 8 rows were recorded") as caught:
            loader.state_dict()
        assert caught[0].filename == __file__
        loader.record(torch.ones(5), rows=slice(3, 8))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # after the batch's last chunk: nothing lost
            loader.state_dict()


def test_a_checkpoint_before_a_batchs_loss_is_recorded_warns_that_it_never_will_be():
    loader = ed.enlighten(DataLoader(TensorDataset(torch.zeros(16, 2), torch.zeros(16)), batch_size=4),
                          ed.high_loss_removal(2, fraction=0.25))
    for step, _ in enumerate(loader):
        if step == 2:  # at the top of the step, after two recorded steps
            with pytest.warns(UserWarning, match=r"taken after batch 2 of epoch 0 was handed out and before its "
                                                 r"losses were recorded.*\(warned once\)") as caught:
                loader.state_dict()
            assert caught[0].filename == __file__
        if step == 3:  # once: a loop that records only some batches would hear it at every checkpoint
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                loader.state_dict()
        loader.record(torch.ones(4))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # after the step: nothing lost
            loader.state_dict()
    data = TensorDataset(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long))
    unrecorded = ed.enlighten(DataLoader(data, batch_size=4), ed.mixup_pause(1, alpha=0.2), num_classes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a loop that records nothing: nothing to lose
        for _ in unrecorded:
            unrecorded.state_dict()


def test_fully_padded_samples_stay_out_of_the_epochs_mean_loss():
    # The criterion's own mean leaves ignored samples out, and so does history's mean_loss (no loss of 0 for them).
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 5, generator=g)
    target = torch.randint(0, 5, (8,), generator=g)
    target[::2] = -100
    loader = _loader(x, target)
    criterion = loader.track(nn.CrossEntropyLoss())
    for xb, yb in loader:
        value = criterion(xb, yb)
    entry = loader.history[-1]
    assert entry["mean_loss"] == pytest.approx(value.item(), rel=1e-6)
    assert entry["recorded"] == 4 and entry["nonfinite"] == 0


def test_record_of_a_sequence_loss_averages_the_positions_that_count_as_track_does():
    _, _, seq_logits, seq_labels, _, _ = _data()
    tables = []
    for use_record in (False, True):
        loader = _loader(torch.zeros(6, 1), seq_labels)
        criterion = loader.track(nn.CrossEntropyLoss())
        for _, yb in loader:
            if use_record:
                per_position = F.cross_entropy(seq_logits, yb, reduction="none")  # (B, T), 0 at padding
                loader.record(per_position, output=seq_logits, target=yb, ignore_index=-100)
            else:
                criterion(seq_logits, yb)
        tables.append((loader.losses(), loader.history[-1]["mean_loss"]))
    (tracked, tracked_mean), (recorded, recorded_mean) = tables
    torch.testing.assert_close(recorded, tracked)
    assert recorded_mean == pytest.approx(tracked_mean)


def test_a_fully_padded_binary_sequence_has_no_loss_through_record():
    # (B, 1, T) single-logit targets score by the threshold, not by class index: the padding still decides which
    # samples have a loss at all (none of 0 for a sample with nothing to count).
    target = torch.tensor([[[1, 0, -100]], [[-100, -100, -100]], [[0, 1, 1]]])
    loader = _loader(torch.zeros(3, 1), target)
    logits = torch.zeros(3, 1, 3)
    for _, t in loader:
        per_position = torch.tensor([[[1.0, 2.0, 0.0]], [[0.0, 0.0, 0.0]], [[3.0, 3.0, 3.0]]])
        loader.record(per_position, output=logits, target=t, ignore_index=-100)
    table = loader.losses()
    assert table[0].item() == 1.5 and table[1].isnan() and table[2].item() == 3.0
    assert loader.history[-1]["mean_loss"] == pytest.approx((1.5 + 3.0) / 2)


def test_the_epochs_mean_loss_counts_mixed_samples_that_the_table_leaves_out():
    # A mixed sample's loss is not its own: it stays out of the table (recorded), but it is a training loss of the
    # epoch, so history's mean_loss averages every sample's loss, mixed or not.
    g = torch.Generator().manual_seed(5)
    dataset = TensorDataset(torch.rand(16, 3, 4, 4, generator=g), torch.arange(16) % 4)
    schedule = ed.Schedule(1, during=ed.Phase(mixup_alpha=1.0, mix_prob=0.5))
    loader = ed.enlighten(DataLoader(dataset, batch_size=16), schedule, num_classes=4)
    losses = torch.arange(1.0, 17.0)
    for _ in loader:
        loader.record(losses)
    entry = loader.history[-1]
    assert 0 < entry["recorded"] < 16  # some samples mixed, some not
    assert entry["mean_loss"] == pytest.approx(losses.mean().item())
    table = loader.losses()
    assert table.isnan().sum().item() == 16 - entry["recorded"]


class _WeightedNLL(nn.NLLLoss):  # keeps NLLLoss's forward: class indices only
    pass


class _SoftNLL(nn.NLLLoss):  # its own forward takes soft rows
    def forward(self, input, target):
        return -(target * input).sum(1)


@pytest.mark.parametrize("criterion", [nn.NLLLoss(), functools.partial(F.nll_loss), F.nll_loss, nn.MultiMarginLoss(),
                                       nn.MultiLabelMarginLoss(), _WeightedNLL(), torch.compile(F.nll_loss),
                                       torch.compile(nn.NLLLoss())], ids=lambda c: getattr(c, "__name__", repr(c)))
def test_track_refuses_a_loss_of_class_indices_when_targets_are_soft_rows(criterion):
    data = DataLoader(TensorDataset(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), batch_size=4)
    mixing = ed.enlighten(data, ed.mixup_pause(1, alpha=0.4), num_classes=3)
    with pytest.raises(TypeError, match=r"criterion should take soft target rows \(B, num_classes\), since the "
                                        r"schedule mixes or smooths labels, got criterion=\w+, which takes class "
                                        r"indices only"):
        mixing.track(criterion)
    removal = ed.enlighten(data, ed.high_loss_removal(2, fraction=0.25))  # targets stay class indices: accepted
    assert isinstance(removal.track(criterion), TrackedLoss)


def test_track_takes_a_subclass_of_a_class_index_loss_whose_forward_takes_soft_rows():
    data = DataLoader(TensorDataset(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), batch_size=4)
    assert isinstance(ed.enlighten(data, ed.mixup_pause(1, alpha=0.4), num_classes=3).track(_SoftNLL()), TrackedLoss)


def test_track_warns_when_the_criterion_smooths_labels_the_schedule_smooths_too():
    data = DataLoader(TensorDataset(torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), batch_size=4)
    smoothing = ed.Schedule(ed.Period(epochs=1), during=ed.Phase(), after=ed.Phase(label_smoothing=0.1))
    loader = ed.enlighten(data, smoothing, num_classes=3)
    for criterion in (nn.CrossEntropyLoss(label_smoothing=0.2), functools.partial(F.cross_entropy, label_smoothing=0.2),
                      torch.compile(nn.CrossEntropyLoss(label_smoothing=0.2))):
        with pytest.warns(UserWarning, match=r"the schedule smooths labels \(label_smoothing=0.1\) and so does the "
                                             r"criterion \(\w+, label_smoothing=0.2\): the targets are smoothed twice"):
            loader.track(criterion)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.track(nn.CrossEntropyLoss())  # only the schedule smooths
        ed.enlighten(data, ed.mixup_pause(1, alpha=0.4), num_classes=3).track(nn.CrossEntropyLoss(label_smoothing=0.1))


def test_a_tracked_loss_called_twice_in_a_step_records_the_first_call_and_says_so():
    data = DataLoader(TensorDataset(torch.zeros(8, 2), torch.arange(8) % 2), batch_size=8)
    loader = ed.enlighten(data, ed.high_loss_removal(2, fraction=0.25))
    criterion = loader.track(nn.CrossEntropyLoss(reduction="none"))
    for x, y in loader:
        criterion(torch.zeros(8, 2), y)  # ln 2 each: the step's first call is the one recorded
        with pytest.warns(UserWarning, match=r"recorded once, by the step's first call, so this call records "
                                             r"nothing.*make it the step's first"):
            criterion(torch.tensor([[9.0, 0.0]]).expand(8, 2), y)
    assert torch.allclose(loader.losses(), torch.full((8,), 0.6931), atol=1e-4)
    with pytest.raises(RuntimeError, match=r"call the criterion itself \(tracked.criterion\), which records nothing"):
        criterion(torch.zeros(8, 2), y)  # a validation pass after the loop


def test_a_compiled_step_records_what_an_eager_one_does():
    data = TensorDataset(torch.randn(48, 8, generator=torch.Generator().manual_seed(0)), torch.arange(48) % 4)

    def run(compiled):
        torch.compiler.reset()
        loader = ed.enlighten(DataLoader(data, batch_size=16), ed.high_loss_removal(2, fraction=0.25))
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = nn.Linear(8, 4)
        criterion = loader.track(nn.CrossEntropyLoss())

        def step(x, y):
            return criterion(model(x), y)

        fn = torch.compile(step, backend="eager") if compiled else step
        for _ in range(3):
            for x, y in loader:
                fn(x, y).backward()
        return loader.losses(), [(h["removed"], h["recorded"], h["accuracy"]) for h in loader.history]

    eager, compiled = run(False), run(True)
    assert torch.allclose(eager[0], compiled[0]) and eager[1] == compiled[1]
    assert [removed for removed, _, _ in eager[1]] == [0, 12, 0]


# ---------------------------------------------------------------------- sequences and other losses
def _padded(seed=0):
    """Four sequences of 6 tokens over 5 classes, the last positions of three padded with -100."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 6, 5, generator=g)
    labels = torch.randint(0, 5, (4, 6), generator=g)
    for row, length in enumerate((6, 2, 4, 1)):
        labels[row, length:] = -100
    return logits, labels


def _masked_means(per_position, labels):
    valid = labels != -100
    return torch.stack([per_position[i][valid[i]].mean() for i in range(len(labels))])


def test_record_leaves_minus_100_padding_out_by_default_and_a_target_alone_masks():
    # Without ignore_index=, record() leaves out torch's default -100 as track() does: a padded sequence's loss is
    # the mean over its tokens (not a mean diluted by zeros, which would rank sequences by length), and its accuracy
    # is over its tokens.
    logits, labels = _padded()
    per_position = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    want = _masked_means(per_position, labels)
    for kwargs in (dict(target=labels), dict(output=logits.transpose(1, 2), target=labels)):
        loader = _loader(torch.zeros(4, 1), torch.arange(4))
        for _ in loader:
            loader.record(per_position, **kwargs)
        torch.testing.assert_close(loader.losses(), want)
        if "output" in kwargs:
            right = (logits.argmax(2) == labels) & (labels != -100)
            want_accuracy = (right.sum(1) / (labels != -100).sum(1)).mean().item()
            assert loader.history[-1]["accuracy"] == pytest.approx(want_accuracy)
    # ignore_index=None counts every position, as before.
    loader = _loader(torch.zeros(4, 1), torch.arange(4))
    for _ in loader:
        loader.record(per_position, target=labels.clamp_min(0), ignore_index=None)
    torch.testing.assert_close(loader.losses(), per_position.mean(1))


def test_a_flattened_sequence_loss_or_classes_last_get_a_hint():
    logits, labels = _padded()
    loader = _loader(torch.zeros(4, 1), torch.arange(4))
    for _ in loader:
        flat = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), reduction="none")
        with pytest.raises(ValueError, match=r"got shape \(24,\); a sequence's loss flattened to \(B \* T,\)\? give it "
                                             r"as \(B, T\), loss.view\(4, -1\), with target= of that shape"):
            loader.record(flat)
        with pytest.raises(ValueError, match=r"got output of shape \(4, 6, 5\) .* \(classes along the last "
                                             r"dimension\? .* pass output.movedim\(-1, 1\)\)"):
            loader.record(flat.view(4, 6), output=logits, target=labels)


def test_a_sequence_loss_of_ones_own_leaves_minus_100_out_of_each_mean():
    def seq_ce(logits, labels, reduction="mean"):  # ignores -100 as torch does; track() cannot read that
        return F.cross_entropy(logits.transpose(1, 2), labels, reduction=reduction)

    logits, labels = _padded()
    loader = _loader(torch.zeros(4, 1), torch.arange(4))
    criterion = loader.track(seq_ce)
    for _ in loader:
        torch.testing.assert_close(criterion(logits, labels), seq_ce(logits, labels))
    torch.testing.assert_close(loader.losses(), _masked_means(seq_ce(logits, labels, reduction="none"), labels))
    # Its (B, T, C) logits are scored with classes last, over each sequence's tokens.
    right = (logits.argmax(2) == labels) & (labels != -100)
    assert loader.history[-1]["accuracy"] == pytest.approx((right.sum(1) / (labels != -100).sum(1)).mean().item())


def test_a_bf16_loss_is_averaged_per_sample_in_float32():
    # Rounded to bf16, many samples' means would tie, and the tie-break would pick the removed set.
    g = torch.Generator().manual_seed(0)
    output, target = torch.randn(64, 30, generator=g).bfloat16(), torch.randn(64, 30, generator=g).bfloat16()
    loader = _loader(torch.zeros(64, 1), torch.arange(64))
    criterion = loader.track(nn.MSELoss())
    for _ in loader:
        criterion(output, target)
    want = F.mse_loss(output, target, reduction="none").float().mean(1)  # bf16 elements, averaged in float32
    torch.testing.assert_close(loader.losses(), want, rtol=1e-6, atol=1e-6)
    assert loader.losses().unique().numel() == 64


def test_a_criterion_with_more_arguments_gets_them():
    g = torch.Generator().manual_seed(0)
    mean, target, var = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g), torch.rand(8, 3, generator=g)
    loader = _loader(torch.zeros(8, 1), torch.arange(8))
    criterion = loader.track(nn.GaussianNLLLoss())
    for _ in loader:
        torch.testing.assert_close(criterion(mean, target, var), nn.GaussianNLLLoss()(mean, target, var))
    torch.testing.assert_close(loader.losses(), nn.GaussianNLLLoss(reduction="none")(mean, target, var).mean(1))


def test_a_regression_loss_under_an_accuracy_period_is_warned_about():
    loader = _loader(torch.zeros(8, 1), torch.zeros(8), ed.high_loss_removal(ed.Period(until_accuracy=0.5,
                                                                                       max_epochs=4), fraction=0.1))
    with pytest.warns(UserWarning, match=r"criterion=MSELoss gives no training accuracy \(a regression loss\), but the "
                                         r"period ends on training accuracy \(until_accuracy=0.5\): it ends at "
                                         r"max_epochs=4; end it on epochs instead"):
        loader.track(nn.MSELoss())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.track(nn.CrossEntropyLoss())  # scores accuracy: nothing to say
        _loader(torch.zeros(8, 1), torch.zeros(8)).track(nn.MSELoss())  # a period of epochs: nothing to say


def test_a_known_loss_called_with_its_own_weight_or_ignore_index_gives_its_own_value():
    # Arguments of the call change what a known function's mean is: its value is its own, and a call's ignore_index
    # is the one its padded positions are left out by.
    logits, labels = _padded()
    labels = labels.clamp_min(0)  # padding by 0 here
    weight = torch.tensor([0.5, 1.0, 2.0, 1.0, 3.0])
    loader = _loader(torch.zeros(4, 1), torch.arange(4))
    criterion = loader.track(F.cross_entropy)
    out = logits.transpose(1, 2)
    for _ in loader:
        torch.testing.assert_close(criterion(out, labels, weight=weight, ignore_index=0),
                                   F.cross_entropy(out, labels, weight=weight, ignore_index=0))
    want = _masked_means(F.cross_entropy(out, labels, weight=weight, ignore_index=0, reduction="none"),
                         labels.masked_fill(labels == 0, -100))
    torch.testing.assert_close(loader.losses(), want, equal_nan=True)  # NaN: a sample with no position left


def test_a_gaussian_or_poisson_nll_gives_no_accuracy():
    loader = _loader(torch.zeros(8, 1), torch.zeros(8), ed.high_loss_removal(ed.Period(until_accuracy=0.9,
                                                                                       max_epochs=3), fraction=0.1))
    for criterion in (nn.GaussianNLLLoss(), F.gaussian_nll_loss, nn.PoissonNLLLoss(), F.poisson_nll_loss):
        with pytest.warns(UserWarning, match="gives no training accuracy"):
            assert not loader.track(criterion).scores


def test_square_outputs_of_a_loss_of_ones_own_are_warned_about_once():
    # (B, T, C) with C == T: classes along dim 1 or the last dim; the accuracy takes dim 1, and says so.
    def seq_ce(logits, labels, reduction="mean"):
        return F.cross_entropy(logits.transpose(1, 2), labels, reduction=reduction)

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(4, 6, 6, generator=g), torch.randint(0, 6, (4, 6), generator=g)
    loader = ed.enlighten(DataLoader(TensorDataset(torch.zeros(8, 1), torch.arange(8)), batch_size=4),
                          ed.high_loss_removal(2, fraction=0.25))
    criterion = loader.track(seq_ce)
    with pytest.warns(UserWarning, match=r"the output of shape \(4, 6, 6\) against targets of shape \(4, 6\) may hold "
                                         r"the classes along dim 1 or along the last dim") as caught:
        for _ in loader:
            criterion(logits, labels)
    assert len([w for w in caught if "along the last dim" in str(w.message)]) == 1


def test_a_call_by_position_or_with_its_own_reduction_is_the_functions_own():
    logits, labels = _padded()
    labels = labels.clamp_min(0)
    out = logits.transpose(1, 2)
    loader = _loader(torch.zeros(4, 1), torch.arange(4))
    criterion = loader.track(F.cross_entropy)
    for _ in loader:
        # ignore_index by position (weight, size_average, ignore_index): its padded positions leave the means too.
        torch.testing.assert_close(criterion(out, labels, None, None, 0), F.cross_entropy(out, labels, None, None, 0))
    want = _masked_means(F.cross_entropy(out, labels, ignore_index=0, reduction="none"),
                         labels.masked_fill(labels == 0, -100))
    torch.testing.assert_close(loader.losses(), want, equal_nan=True)
    for reduction in ("sum", "none"):  # this call's reduction, not the function's default
        loader = _loader(torch.zeros(4, 1), torch.arange(4))
        criterion = loader.track(F.cross_entropy)
        for _ in loader:
            torch.testing.assert_close(criterion(out, labels, reduction=reduction),
                                       F.cross_entropy(out, labels, reduction=reduction))


def test_square_outputs_of_torchs_class_losses_are_not_warned_about():
    class MyCE(nn.CrossEntropyLoss):  # keeps CrossEntropyLoss's forward: classes along dim 1 for certain
        pass

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(4, 6, 6, generator=g), torch.randint(0, 6, (4, 6), generator=g)
    for criterion in (MyCE(), functools.partial(F.cross_entropy, label_smoothing=0.1)):
        loader = ed.enlighten(DataLoader(TensorDataset(torch.zeros(4, 1), torch.arange(4)), batch_size=4),
                              ed.high_loss_removal(2, fraction=0.25))
        tracked = loader.track(criterion)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in loader:
                tracked(logits, labels)
