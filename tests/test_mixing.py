import math

import pytest
import torch

import enlight_data as ed
from enlight_data.mixing import MixParams, apply_mix, draw_mix, mix_batch, to_soft_targets
from helpers import CountOps


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(b=64, c=3, h=16, w=16, classes=10):
    g = gen(123)
    return torch.rand(b, c, h, w, generator=g), torch.randint(0, classes, (b,), generator=g)


@pytest.mark.parametrize(
    "phase",
    [
        ed.Phase(mixup_alpha=0.8),
        ed.Phase(cutmix_alpha=1.0),
        ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0),
        ed.Phase(mixup_alpha=0.4, mode="batch"),
        ed.Phase(cutmix_alpha=1.0, mode="batch"),
        ed.Phase(mixup_alpha=1.0, mix_prob=0.5, label_smoothing=0.1),
    ],
)
def test_soft_targets_are_distributions_and_inputs_untouched(phase):
    x, y = batch()
    x0, y0 = x.clone(), y.clone()
    xm, ym, mixed = mix_batch(x, y, phase, num_classes=10, generator=gen())
    assert torch.equal(x, x0) and torch.equal(y, y0)  # never in place
    assert xm.shape == x.shape and ym.shape == (64, 10) and ym.dtype == torch.float32
    torch.testing.assert_close(ym.sum(1), torch.ones(64))
    assert (ym >= 0).all() and mixed.dtype == torch.bool and mixed.shape == (64,)


def test_mixup_is_lerp_with_partner_and_label_weight():
    x, y = batch(b=8)
    xm, ym, _ = mix_batch(x, y, ed.Phase(mixup_alpha=1.0), num_classes=10, generator=gen(1))
    params = draw_mix(ed.Phase(mixup_alpha=1.0), 8, 16, 16, generator=gen(1))
    partner = (torch.arange(8) + params.shift) % 8
    lam = params.lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[partner])
    onehot = torch.nn.functional.one_hot(y, 10).float()
    torch.testing.assert_close(ym, params.lam[:, None] * onehot + (1 - params.lam[:, None]) * onehot[partner])


def test_elem_lambda_follows_beta():
    alpha = 0.5
    params = draw_mix(ed.Phase(mixup_alpha=alpha), 20000, 1, 1, generator=gen(2))
    lam = params.lam
    assert abs(lam.mean().item() - 0.5) < 0.01
    expected_var = 1.0 / (4 * (2 * alpha + 1))  # Beta(a, a) variance
    assert abs(lam.var().item() - expected_var) < 0.01
    # U-shaped for alpha < 1: more mass near the ends than in the middle
    assert ((lam < 0.1) | (lam > 0.9)).float().mean() > ((lam > 0.4) & (lam < 0.6)).float().mean()


@pytest.mark.parametrize("alpha", [1e-6, 1e-3, 0.01, 0.049, 0.05, 0.3])
def test_small_alphas_keep_the_beta_law_instead_of_collapsing_to_one_half(alpha):
    # Beta(α, α) puts almost all its mass at 0 and 1 for small α; a ratio of two underflowed Gamma draws gave 0.5.
    from scipy.stats import beta

    n = 40000
    lam = draw_mix(ed.Phase(mixup_alpha=alpha), n, 1, 1, generator=gen(9)).lam.double()
    assert (lam == 0.5).sum() <= 2
    for lo, hi in ((0.01, 0.99), (0.3, 0.7), (0.0, 0.5)):
        expected = beta(alpha, alpha).cdf(hi) - beta(alpha, alpha).cdf(lo)
        share = ((lam >= lo) & (lam < hi)).double().mean().item()
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 1e-3, (lo, hi, share, expected)


def test_alphas_beyond_float_precision_are_refused_by_name():
    with pytest.raises(ValueError, match=r"mixup_alpha should be 0 \(off\) or in \[1e-06, 1e\+06\] .*got mixup_alpha=1e\+39"):
        ed.Phase(mixup_alpha=1e39)
    with pytest.raises(ValueError, match=r"cutmix_alpha should be 0 \(off\) or in"):
        ed.Phase(cutmix_alpha=2e6)
    for tiny in (1e-40, 5e-324, 1e-7):  # the log-space draw gave NaN from about 1e-38 down
        with pytest.raises(ValueError, match=rf"mixup_alpha should be 0 \(off\) or in .*got mixup_alpha={tiny!r}"):
            ed.Phase(mixup_alpha=tiny)
    assert ed.Phase(mixup_alpha=1e6).mixup_alpha == 1e6 and ed.Phase(cutmix_alpha=1e-6).cutmix_alpha == 1e-6


def test_batch_mode_shares_one_lambda():
    params = draw_mix(ed.Phase(mixup_alpha=1.0, mode="batch"), 32, 4, 4, generator=gen(3))
    assert torch.unique(params.lam).numel() == 1


def test_mix_prob_applies_per_sample():
    params = draw_mix(ed.Phase(mixup_alpha=1.0, mix_prob=0.3), 10000, 1, 1, generator=gen(4))
    assert abs(params.mixed.float().mean().item() - 0.3) < 0.03
    none = draw_mix(ed.Phase(mixup_alpha=1.0, mix_prob=0.0), 100, 1, 1, generator=gen(4))
    assert none is None


def test_cutmix_lambda_is_the_kept_area():
    b, h, w = 256, 16, 20
    own = torch.zeros(b, 1, h, w)
    own += torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1)
    y = torch.arange(b) % 10
    phase = ed.Phase(cutmix_alpha=1.0)
    xm, ym, mixed = mix_batch(own, y, phase, num_classes=10, generator=gen(5))
    params = draw_mix(phase, b, h, w, generator=gen(5))
    kept = (xm == own).float().mean(dim=(1, 2, 3))
    torch.testing.assert_close(kept, params.lam)
    # pasted pixels come from the partner only, in one rectangle
    partner = (torch.arange(b) + params.shift) % b
    pasted = xm != own
    assert torch.equal(xm[pasted], own[partner][pasted])
    assert (params.lam <= 1).all() and (params.lam >= 0).all() and mixed.any()


def test_switch_prob_chooses_per_batch():
    x, y = batch(b=32)
    always_cut = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)
    xm, _, _ = mix_batch(x, y, always_cut, num_classes=10, generator=gen(6))
    partner = x[(torch.arange(32) + 16) % 32]
    assert ((xm == x) | (xm == partner)).all()  # pure pastes, no blending
    never_cut = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.0)
    xm, _, _ = mix_batch(x, y, never_cut, num_classes=10, generator=gen(6))
    assert not ((xm == x) | (xm == partner)).all()


def test_same_generator_seed_same_result_and_different_seed_differs():
    x, y = batch()
    phase = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0)
    a = mix_batch(x, y, phase, num_classes=10, generator=gen(7))
    b = mix_batch(x, y, phase, num_classes=10, generator=gen(7))
    c = mix_batch(x, y, phase, num_classes=10, generator=gen(8))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_non_image_input_and_uint8():
    x = torch.arange(40, dtype=torch.float32).view(8, 5)
    xm, ym, _ = mix_batch(x, torch.arange(8) % 3, ed.Phase(mixup_alpha=1.0), num_classes=3, generator=gen())
    assert xm.shape == (8, 5)
    u8 = torch.full((4, 3, 4, 4), 200, dtype=torch.uint8)
    xm, _, _ = mix_batch(u8, torch.zeros(4, dtype=torch.long), ed.Phase(mixup_alpha=1.0), num_classes=2, generator=gen())
    assert xm.dtype == torch.float32 and torch.allclose(xm, torch.full_like(xm, 200.0))
    with pytest.raises(ValueError, match="CutMix needs"):
        mix_batch(x, torch.arange(8) % 3, ed.Phase(cutmix_alpha=1.0), num_classes=3, generator=gen())


def test_to_soft_targets_forms_and_errors():
    idx = torch.tensor([0, 2])
    soft = to_soft_targets(idx, 3, label_smoothing=0.3)
    torch.testing.assert_close(soft, torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]))
    rows = torch.tensor([[0.2, 0.8, 0.0]])
    assert torch.equal(to_soft_targets(rows, 3), rows)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\).*got values in \[0, 3\]"):
        to_soft_targets(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match=r"num_classes=3 columns, got target of shape \(2, 4\)$"):
        to_soft_targets(torch.zeros(2, 4), 3)
    with pytest.raises(ValueError, match=r"got target of shape \(2, 1\) and dtype torch.int64: class indices in a "
                                         r"column\? pass them as shape \(B,\), target.squeeze\(1\)"):
        to_soft_targets(torch.tensor([[2], [0]]), 3)  # as a dataset returning torch.tensor([label]) gives
    with pytest.raises(ValueError, match=r"got target of shape \(2, 1\)$"):
        to_soft_targets(torch.zeros(2, 1), 3)  # a float column: rows of the wrong width
    with pytest.raises(ValueError, match="shape"):
        to_soft_targets(torch.zeros(2, 3, 1), 3)
    with pytest.raises(TypeError, match="target should be a Tensor"):
        to_soft_targets([0, 1], 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"label_smoothing should be in \[0, 1\), got label_smoothing=1.5"):
        to_soft_targets(idx, 3, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"label_smoothing should be in \[0, 1\), got label_smoothing=-0.2"):
        to_soft_targets(idx, 3, label_smoothing=-0.2)
    with pytest.raises(ValueError, match=r"num_classes should be >= 1, got num_classes=0"):
        to_soft_targets(idx, 0)
    for bad in (2.5, True):
        with pytest.raises(TypeError, match=f"num_classes should be an int, got num_classes={bad}"):
            to_soft_targets(idx, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"integer target rows should hold only 0 and 1.*got values in \[0, 2\]"):
        to_soft_targets(torch.tensor([[2], [0]]), 1)  # class indices with a trailing dimension
    with pytest.raises(ValueError, match=r"integer target rows should hold only 0 and 1.*got values in \[-1, 1\]"):
        to_soft_targets(torch.tensor([[1, -1, 0], [0, 1, 0]]), 3)  # a negative weight would spread to the partner
    assert torch.equal(to_soft_targets(torch.tensor([[True, False]]), 2), torch.tensor([[1.0, 0.0]]))
    assert torch.equal(to_soft_targets(torch.tensor([[0, 1, 1]]), 3), torch.tensor([[0.0, 1.0, 1.0]]))  # multi-hot


def test_label_smoothing_of_one_binary_score_goes_towards_one_half():
    # A single column (BCEWithLogitsLoss on (B, 1) outputs) is smoothed as two classes would be: 0 and 1 become s/2
    # and 1 - s/2 (with s / num_classes, 0 became s and 1 stayed 1: one-sided).
    rows = torch.tensor([[0.0], [1.0], [0.25]])
    torch.testing.assert_close(to_soft_targets(rows, 1, label_smoothing=0.2), torch.tensor([[0.1], [0.9], [0.3]]))
    torch.testing.assert_close(to_soft_targets(torch.zeros(2, dtype=torch.long), 1, label_smoothing=0.2),
                               torch.full((2, 1), 0.9))
    # Mixed: samples 0-3 are negatives, 4-7 positives, and sample i's partner is (i + 4) % 8, of the other label.
    x = torch.arange(8.0).unsqueeze(1)
    binary = (torch.arange(8) >= 4).float().unsqueeze(1)
    xm, ym, mixed = mix_batch(x, binary, ed.Phase(mixup_alpha=1.0, label_smoothing=0.2), num_classes=1,
                              generator=gen())
    partner = x.roll(-4, 0)
    lam = (xm - partner) / (x - partner)  # each sample's own weight, read off the mixed input
    smoothed = binary * 0.8 + 0.1
    assert mixed.all()
    torch.testing.assert_close(ym, lam * smoothed + (1 - lam) * smoothed.roll(-4, 0))


def test_mix_batch_checks_that_target_matches_the_batch():
    x, y = batch(b=4)
    for phase in (ed.Phase(mixup_alpha=1.0), ed.Phase(label_smoothing=0.1)):
        with pytest.raises(ValueError, match=r"target should have x's batch size.*x of shape \(4, 3, 16, 16\) and "
                                             r"target of shape \(3,\)"):
            mix_batch(x, y[:3], phase, num_classes=10, generator=gen())


@pytest.mark.parametrize("phase", [ed.Phase(mixup_alpha=0.4), ed.Phase(cutmix_alpha=1.0),
                                   ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0)])
def test_no_generator_is_refused_and_the_global_rng_is_never_used(phase):
    x, y = batch(b=8, h=6, w=6)
    before = torch.get_rng_state()
    with pytest.raises(TypeError, match=r"generator should be a torch.Generator .*got generator=None of type NoneType"):
        mix_batch(x, y, phase, num_classes=10, generator=None)
    with pytest.raises(TypeError, match=r"generator should be a torch.Generator .*got generator=None"):
        draw_mix(phase, 8, 6, 6, generator=None, device="cpu")
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("call", ["mix_batch", "draw_mix"])
def test_phase_and_host_generator_are_checked(call):
    x, y = batch(b=4, h=6, w=6)
    both = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0)

    def run(phase, **kw):
        if call == "mix_batch":
            return mix_batch(x, y, phase, num_classes=10, generator=gen(), **kw)
        return draw_mix(phase, 4, 6, 6, generator=gen(), **kw)

    with pytest.raises(TypeError, match=r"phase should be a Phase, got phase=None of type NoneType"):
        run(None)
    with pytest.raises(TypeError, match=r"host_generator should be a CPU torch.Generator or None, got host_generator=5 "
                                        r"of type int"):
        run(both, host_generator=5)
    run(both, host_generator=gen(1))  # a CPU generator is fine
    run(both, host_generator=None)


@pytest.mark.parametrize("phase", [ed.Phase(mixup_alpha=1.0), ed.Phase(cutmix_alpha=1.0), ed.Phase(mixup_alpha=1.0,
                                                                                                   cutmix_alpha=1.0)])
def test_a_one_sample_batch_has_no_partner_and_is_not_mixed(phase):
    x, y = batch(b=1)
    xm, soft, mixed = mix_batch(x, y, phase, num_classes=10, generator=gen())
    assert not mixed.any()
    assert torch.equal(xm, x) and torch.equal(soft, to_soft_targets(y, 10))


@pytest.mark.parametrize(
    "phase",
    [
        ed.Phase(mixup_alpha=0.8),
        ed.Phase(cutmix_alpha=1.0),
        ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5),
        ed.Phase(cutmix_alpha=1.0, mode="batch"),
    ],
)
def test_out_buffer_gives_the_same_batch_and_is_reused(phase):
    x, y = batch(b=33)  # odd B: the pairing is not mutual
    fresh = mix_batch(x, y, phase, num_classes=10, generator=gen(9))
    out = torch.full_like(x, float("nan"))  # stale contents must all be overwritten
    into = mix_batch(x, y, phase, num_classes=10, generator=gen(9), out=out)
    assert into[0] is out
    assert all(torch.equal(u, v) for u, v in zip(fresh, into))


def test_out_buffer_copies_when_the_phase_does_not_mix_and_converts_uint8():
    x, y = batch(b=4)
    out = torch.zeros_like(x)
    xm, _, mixed = mix_batch(x, y, ed.Phase(), num_classes=10, generator=gen(), out=out)
    assert xm is out and torch.equal(out, x) and not mixed.any()
    u8 = torch.full((4, 3, 4, 4), 200, dtype=torch.uint8)
    out = torch.empty(4, 3, 4, 4)
    xm, _, _ = mix_batch(u8, y, ed.Phase(mixup_alpha=1.0), num_classes=10, generator=gen(), out=out)
    assert xm is out and torch.equal(out, torch.full_like(out, 200.0))


def test_out_buffer_is_validated():
    x, y = batch(b=4)
    phase = ed.Phase(mixup_alpha=1.0)
    with pytest.raises(ValueError, match=r"out should have shape \(4, 3, 16, 16\).*got out of shape \(4, 3, 16, 15\)"):
        mix_batch(x, y, phase, num_classes=10, generator=gen(), out=torch.empty(4, 3, 16, 15))
    with pytest.raises(ValueError, match="dtype torch.float32.*got out of .*dtype torch.float64"):
        mix_batch(x, y, phase, num_classes=10, generator=gen(), out=torch.empty(4, 3, 16, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="out should not share memory with the input x"):
        mix_batch(x, y, phase, num_classes=10, generator=gen(), out=x)
    big = torch.rand(8, 3, 16, 16)
    with pytest.raises(ValueError, match="out should not share memory"):
        mix_batch(big[:4], y, phase, num_classes=10, generator=gen(), out=big[4:])
    with pytest.raises(TypeError, match="out should be a Tensor or None, got out of type list"):
        mix_batch(x, y, phase, num_classes=10, generator=gen(), out=[])  # type: ignore[arg-type]
    expanded = torch.empty(1, 3, 16, 16).expand(4, 3, 16, 16)  # every sample written to one place
    with pytest.raises(ValueError, match=r"out should not overlap itself, got out with strides \(0, 256, 16, 1\)"):
        mix_batch(x, y, phase, num_classes=10, generator=gen(), out=expanded)
    interleaved = torch.empty(4 * 3 * 16 * 16).as_strided((4, 3, 16, 16), (1, 256, 16, 1))  # samples 1 apart
    with pytest.raises(ValueError, match=r"out should not overlap itself, got out with strides \(1, 256, 16, 1\)"):
        mix_batch(x, y, phase, num_classes=10, generator=gen(), out=interleaved)
    expected = mix_batch(x, y, phase, num_classes=10, generator=gen())[0]
    for layout in (torch.empty(8, 3, 16, 16)[::2], torch.empty(4, 3, 16, 16, memory_format=torch.channels_last),
                   torch.empty(16, 16, 4, 3).permute(2, 3, 0, 1), torch.empty(4, 3, 16, 20)[..., 2:18]):
        assert torch.equal(mix_batch(x, y, phase, num_classes=10, generator=gen(), out=layout)[0], expected)


def test_input_that_cannot_be_mixed_is_refused():
    y = torch.arange(4) % 3
    for x in (torch.complex(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)), torch.rand(4, 3, 8, 8) > 0.5):
        with pytest.raises(TypeError, match=f"x should be a float or integer tensor to mix, got x of dtype {x.dtype}"):
            mix_batch(x, y, ed.Phase(mixup_alpha=1.0), num_classes=3, generator=gen())
        with pytest.raises(TypeError, match="x should be a float or integer tensor to mix"):
            mix_batch(x, y, ed.Phase(), num_classes=3, generator=gen())  # whether or not the phase mixes
    with pytest.raises(ValueError, match="generator should be on device meta .* got a generator on cpu"):
        draw_mix(ed.Phase(mixup_alpha=1.0), 4, 8, 8, generator=gen(), device="meta")


def test_mix_params_check_the_shift():
    lam = torch.ones(4)
    for shift in (-1, 4, 1.0, True):
        with pytest.raises(ValueError, match=f"shift should be an int in \\[0, 4\\) \\(the batch size 4\\), got shift={shift}"):
            MixParams(lam=lam, weight=None, box=torch.zeros(4, 4), shift=shift)
    assert MixParams(lam=lam, weight=None, box=torch.zeros(4, 4), shift=3).shift == 3


def test_cutmix_box_is_the_outer_product_of_its_row_and_column_ranges():
    b, h, w = 64, 12, 17
    params = draw_mix(ed.Phase(cutmix_alpha=1.0), b, h, w, generator=gen(10))
    box = params.mask[:, 0]
    rows, cols = box.any(dim=2), box.any(dim=1)
    assert torch.equal(box, rows[:, :, None] & cols[:, None, :])
    for r in (rows, cols):  # each a single contiguous run
        ones = r.sum(1)
        first = r.float().argmax(1)
        span = torch.arange(r.shape[1]) - first[:, None]
        assert torch.equal(r, (span >= 0) & (span < ones[:, None]))
    torch.testing.assert_close(1.0 - box.float().mean(dim=(1, 2)), params.lam)


@pytest.mark.parametrize("size", [(16, 16), (13, 20), (1, 7)])
def test_cutmix_box_matches_the_clipped_rectangle_of_the_paper(size):
    # Reference: side floor(S * sqrt(1 - λ_raw)), halves floor(side / 2) each way from a uniform
    # pixel centre, clipped to the image (timm's rand_bbox); same draws, same generator order.
    from enlight_data.mixing import _beta, _box_mask, _cut_boxes

    h, w = size
    n, alpha = 500, 0.7
    boxes, lam = _cut_boxes(alpha, n, h, w, generator=gen(11), device=torch.device("cpu"))
    assert boxes.shape == (n, 4) and boxes.dtype == torch.float32
    assert (boxes[:, :2] <= boxes[:, 2:]).all() and (boxes >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    box = _box_mask(boxes, h, w)
    g = gen(11)
    ratio = torch.sqrt(_beta(alpha, n, generator=g, device=torch.device("cpu")))
    pixel = torch.randint(0, h * w, (n,), generator=g)  # the centre: a uniform pixel, y * W + x
    expected = []
    for s, centre in ((h, (pixel // w).float()), (w, (pixel % w).float())):
        half = torch.floor(s * ratio) // 2
        lo, hi = (centre - half).clamp(0, s), (centre + half).clamp(0, s)
        idx = torch.arange(s).float()
        expected.append((idx >= lo[:, None]) & (idx < hi[:, None]))
    rows, cols = expected
    assert torch.equal(box[:, 0], rows[:, :, None] & cols[:, None, :])
    torch.testing.assert_close(lam, 1.0 - rows.sum(1) * cols.sum(1) / (h * w))


@pytest.mark.parametrize(
    "phase, budget",
    [(ed.Phase(mixup_alpha=0.8), 18), (ed.Phase(cutmix_alpha=1.0), 36), (ed.Phase(mixup_alpha=0.8, mix_prob=0.5), 24)],
)
def test_mixing_stays_within_a_kernel_budget(phase, budget):
    # Each op is a kernel launch on a GPU, where mixing runs per batch: see NOTE [ Few kernels per CutMix draw ].
    # Mixup's include NOTE [ Exact unmixed samples ]: the draw zeroes the partner's weight where λ = 1 (2 ops), the
    # blend finds the rows to copy (2), on the CPU, and copies them (one op per row).
    x, y = batch(b=8)
    mix_batch(x, y, phase, num_classes=10, generator=gen())  # a first call also caches the Beta draws' concentration
    with CountOps() as ops:
        mix_batch(x, y, phase, num_classes=10, generator=gen())
    assert len(ops) <= budget, ops


# ------------------------------------------------------------------------------------------------------------- CUDA

CUDA_PHASES = [
    ed.Phase(mixup_alpha=0.8),
    ed.Phase(cutmix_alpha=1.0),
    ed.Phase(cutmix_alpha=1.0, mode="batch", mix_prob=0.5),
    ed.Phase(mixup_alpha=0.4, mix_prob=0.5, label_smoothing=0.1),
]


@pytest.mark.needs_cuda
@pytest.mark.parametrize("phase", CUDA_PHASES)
def test_cpu_and_cuda_mixing_agree_for_the_same_params(phase):
    import enlight_data._fused as fused
    from enlight_data.mixing import apply_mix

    x, y = batch(b=12, h=20, w=24)
    soft = to_soft_targets(y, 10, label_smoothing=phase.label_smoothing)
    params = draw_mix(phase, 12, 20, 24, generator=gen(4))
    cpu_x, cpu_y = apply_mix(x, soft, params)
    cuda_x, cuda_y = apply_mix(x.cuda(), soft.cuda(), params.to("cuda"))
    if params.box is not None:
        assert torch.equal(cuda_x.cpu(), cpu_x)  # pasted pixels are copies
    torch.testing.assert_close(cuda_x.cpu(), cpu_x, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cuda_y.cpu(), cpu_y, atol=1e-6, rtol=1e-6)
    assert not fused.FAILED, fused.FAILED  # the fused kernels ran (where Triton is present) and did not fall back


@pytest.mark.needs_cuda
@pytest.mark.parametrize("phase", CUDA_PHASES)
def test_fused_mixing_on_cuda_gives_what_the_pytorch_ops_give(monkeypatch, phase):
    # The same CUDA generator through the one-launch kernel (NOTE [ One launch per mix ]), through mix_params and
    # the blend (where that kernel does not run), and through the PyTorch ops.
    import enlight_data._fused as fused
    import enlight_data.mixing as mixing

    assert fused.kernel("mix") is not None, "Triton is not importable here"
    x, y = batch(b=12, h=20, w=24)
    x, y = x.cuda(), y.cuda()
    results = {}
    for kernels in ("all", "split", "none"):
        pick = {"all": lambda name: True, "split": lambda name: name != "mix", "none": lambda name: False}[kernels]
        monkeypatch.setattr(mixing, "_fused", lambda name, device, p=pick: p(name) and device.type == "cuda")
        results[kernels] = mix_batch(x, y, phase, num_classes=10, generator=torch.Generator("cuda").manual_seed(5))
    px, py, pm = results["none"]
    for kx, ky, km in (results["all"], results["split"]):
        torch.testing.assert_close(kx, px, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ky, py, atol=1e-6, rtol=1e-6)
        assert torch.equal(km, pm)
    assert not fused.FAILED, fused.FAILED


@pytest.mark.needs_cuda
def test_mixing_never_synchronises_on_cuda():
    x, y = batch(b=16)
    x, y = x.cuda(), y.cuda()
    images = (x * 255).to(torch.uint8)
    g = torch.Generator(device="cuda").manual_seed(0)
    out = torch.empty_like(x)
    mix_batch(x, y, CUDA_PHASES[1], num_classes=10, generator=g)  # warm-up: constants are made once per device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        results = [mix_batch(x, y, phase, num_classes=10, generator=g) for phase in CUDA_PHASES]
        results.append(mix_batch(images, y, CUDA_PHASES[1], num_classes=10, generator=g, out=out))
        both = mix_batch(x, y, ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0), num_classes=10, generator=g)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(r[0].is_cuda and r[1].shape == (16, 10) for r in [*results, both])
    assert results[-1][0] is out


@pytest.mark.parametrize("mix_prob", [1.0, 0.5])
def test_mixup_or_cutmix_chosen_on_the_device_mixes_as_the_choice_says(monkeypatch, mix_prob):
    # A CUDA generator without a host one: both are drawn and the choice is made on the device (a (B, 1, H, W)
    # weight). Forced here on the CPU; each batch must come out as pure Mixup or pure CutMix.
    import enlight_data.mixing as mixing

    monkeypatch.setattr(mixing, "_choice_generator", lambda generator, host: None)
    x, y = batch(b=16, h=12, w=10)
    phase = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=mix_prob)
    kinds = set()
    for seed in range(12):
        params = draw_mix(phase, 16, 12, 10, generator=gen(seed))
        assert params.box is None and params.weight.shape == (16, 1, 12, 10) and params.size == (12, 10)
        xm, ym = mixing.apply_mix(x, to_soft_targets(y, 10), params)
        partner = x[(torch.arange(16) + 8) % 16]
        w = params.weight
        if ((w == 0) | (w == 1)).all():  # CutMix: pixels copied, λ the kept area
            kinds.add("cutmix")
            assert torch.equal(xm, torch.where(w.bool(), partner, x))
            torch.testing.assert_close(params.lam, 1.0 - w.mean(dim=(1, 2, 3)))
        else:  # Mixup: one weight per sample
            kinds.add("mixup")
            assert (w == w[:, :, :1, :1]).all()
            torch.testing.assert_close(xm, torch.lerp(x, partner, w))
            torch.testing.assert_close(params.lam, 1.0 - w[:, 0, 0, 0])
        onehot = torch.nn.functional.one_hot(y, 10).float()
        lam = params.lam[:, None]
        torch.testing.assert_close(ym, lam * onehot + (1 - lam) * onehot[(torch.arange(16) + 8) % 16])
    assert kinds == {"mixup", "cutmix"}


def test_mix_batch_refuses_rows_that_would_spread_nan_or_negative_weights():
    x, y = batch(b=8, classes=4)
    rows = torch.eye(4)[y % 4]
    phase = ed.Phase(mixup_alpha=1.0)
    for bad in (math.nan, -0.5, math.inf):
        broken = rows.clone()
        broken[3, 1] = bad
        with pytest.raises(ValueError, match=r"target rows should be finite and non-negative, got rows .* at batch "
                                             r"positions \[3\]"):
            mix_batch(x, broken, phase, num_classes=4, generator=gen())


def test_float_class_ids_are_refused_as_a_dtype_error():
    x, y = batch(b=8, classes=4)
    with pytest.raises(TypeError, match=r"target of shape \(B,\) should hold integer class indices, got target of "
                                        r"dtype torch.float32"):
        mix_batch(x, y.float(), ed.Phase(mixup_alpha=1.0), num_classes=4, generator=gen())


@pytest.mark.parametrize("b", [1, 2, 5])
def test_mix_batch_gives_integer_input_one_dtype_whatever_the_batch_size(b):
    x = torch.randint(0, 256, (b, 3, 8, 8), dtype=torch.uint8)
    y = torch.zeros(b, dtype=torch.long)
    mixed, _, _ = mix_batch(x, y, ed.Phase(mixup_alpha=1.0), num_classes=2, generator=gen())
    assert mixed.dtype == torch.float32  # a batch of one has no partner, but comes out as a mixed batch does
    unmixed, _, _ = mix_batch(x, y, ed.Phase(), num_classes=2, generator=gen())
    assert unmixed is x  # a phase that does not mix leaves the input as it is


def test_mixing_refuses_input_that_requires_grad():
    # Not differentiable: on CUDA the kernels would drop the gradient silently, on the CPU the out= ops fail; both
    # devices refuse alike, naming the argument. Under no_grad (or with x.detach()) it mixes.
    x, y = batch(b=4)
    x.requires_grad_(True)
    phase = ed.Phase(cutmix_alpha=1.0)
    with pytest.raises(ValueError, match=r"x should not require grad: mixing is not differentiable .*x\.detach\(\)"):
        mix_batch(x, y, phase, num_classes=10, generator=gen(0))
    with pytest.raises(ValueError, match="x should not require grad"):
        mix_batch(x, y, ed.Phase(), num_classes=10, generator=gen(0))  # refused whether or not the phase mixes
    params = draw_mix(phase, 4, *x.shape[-2:], generator=gen(0))
    with pytest.raises(ValueError, match="x should not require grad"):
        ed.mixing.apply_mix(x, to_soft_targets(y, 10), params)
    out = torch.empty(x.shape, requires_grad=True)  # a kernel would write into it unseen by autograd
    with pytest.raises(ValueError, match="out should not require grad: mixing is not differentiable"):
        mix_batch(x.detach(), y, phase, num_classes=10, generator=gen(0), out=out)
    with torch.no_grad():
        mixed, _, _ = mix_batch(x, y, phase, num_classes=10, generator=gen(0))
    torch.testing.assert_close(mixed, mix_batch(x.detach(), y, phase, num_classes=10, generator=gen(0))[0])


def test_draw_mix_and_apply_mix_name_a_bad_size():
    from enlight_data.mixing import apply_mix

    g = torch.Generator().manual_seed(0)
    cut = ed.Phase(cutmix_alpha=1.0)
    for args, error, message in (
        ((-1, 6, 6), ValueError, "batch_size should be >= 0, got batch_size=-1"),
        ((2.5, 6, 6), TypeError, "batch_size should be an int, got batch_size=2.5 of type float"),
        ((8, 0, 6), ValueError, "height should be >= 1, got height=0"),
        ((8, 6, True), TypeError, "width should be an int, got width=True of type bool"),
    ):
        with pytest.raises(error, match=message):
            draw_mix(cut, *args, generator=g)
    assert draw_mix(cut, 1, 6, 6, generator=g) is None  # one sample: no partner
    params = draw_mix(ed.Phase(mixup_alpha=1.0), 8, 6, 6, generator=g)
    x, soft = torch.randn(8, 3, 6, 6), to_soft_targets(torch.arange(8) % 3, 3)
    for args, error, message in (
        ((x[:4], soft), ValueError, r"x should have the batch size the parameters were drawn for \(8\) as its first "
                                    r"dimension, got x of shape \(4, 3, 6, 6\)"),
        ((x, soft[:4]), ValueError, r"soft_targets should have the batch size .* \(8\) .* got soft_targets of shape "
                                    r"\(4, 3\)"),
        ((x, soft[:, 0]), ValueError, r"soft_targets should be \(B, num_classes\) rows, got soft_targets of shape "
                                      r"\(8,\)"),
        (([0.0] * 8, soft), TypeError, "x should be a Tensor, got x of type list"),
    ):
        with pytest.raises(error, match=message):
            apply_mix(*args, params)
    with pytest.raises(TypeError, match="params should be a MixParams .* got params of type dict"):
        apply_mix(x, soft, {})  # type: ignore[arg-type]
    mixed_x, mixed_y = apply_mix(x, soft, params)
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(8))


def test_the_choice_made_on_the_device_follows_switch_prob(monkeypatch):
    # A CUDA generator without a host one chooses Mixup or CutMix on the device (forced here on the CPU):
    # switch_prob is the chance of CutMix there too, not of Mixup.
    import enlight_data.mixing as mixing

    monkeypatch.setattr(mixing, "_choice_generator", lambda generator, host: None)

    def cutmix_batches(switch_prob, seeds):
        phase = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob)
        weights = [draw_mix(phase, 4, 6, 6, generator=gen(seed)).weight for seed in range(seeds)]
        return sum(bool(((w == 0) | (w == 1)).all()) for w in weights)  # CutMix: a 0/1 mask; Mixup: one weight

    assert cutmix_batches(0.0, 20) == 0
    assert cutmix_batches(1.0, 20) == 20
    assert 25 < cutmix_batches(0.25, 200) < 80  # about 50; 150 if the choice were inverted


def test_the_choice_made_on_the_device_follows_mix_prob_and_batch_mode(monkeypatch):
    # The same path: mix_prob is the chance that a sample is mixed, and mode="batch" shares one draw (one λ, one
    # weight or mask) across the batch.
    import enlight_data.mixing as mixing

    monkeypatch.setattr(mixing, "_choice_generator", lambda generator, host: None)
    phase = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.2)
    for seed in range(4):  # 32x32: a CutMix box is empty (λ = 1) only for a partner's share below 1/256
        params = draw_mix(phase, 2000, 32, 32, generator=gen(seed))
        mixed = params.mixed
        assert abs(mixed.float().mean().item() - 0.2) < 0.04  # 0.8 if the coin were inverted
        assert (params.lam[~mixed] == 1).all() and (params.weight[~mixed] == 0).all()
    batch_phase = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, mode="batch")
    for seed in range(6):
        params = draw_mix(batch_phase, 16, 6, 6, generator=gen(seed))
        assert torch.unique(params.lam).numel() == 1 and params.lam[0] < 1
        assert (params.weight == params.weight[:1]).all()


def test_mixing_refuses_targets_that_require_grad():
    # Soft rows from a teacher model left attached to its graph: the rows' out= blends failed with torch's own
    # RuntimeError (and CUDA's kernels would drop the gradient); refused as x is, naming the argument.
    x, y = batch(b=4, classes=3)
    rows = torch.eye(3)[y % 3].requires_grad_(True)
    phase = ed.Phase(mixup_alpha=1.0)
    with pytest.raises(ValueError, match=r"target should not require grad: mixing is not differentiable .*"
                                         r"target\.detach\(\)"):
        mix_batch(x, rows, phase, num_classes=3, generator=gen(0))
    params = draw_mix(phase, 4, 1, 1, generator=gen(0))
    with pytest.raises(ValueError, match="soft_targets should not require grad"):
        ed.mixing.apply_mix(x, rows, params)
    with torch.no_grad():
        _, mixed, _ = mix_batch(x, rows, phase, num_classes=3, generator=gen(0))
    torch.testing.assert_close(mixed, mix_batch(x, rows.detach(), phase, num_classes=3, generator=gen(0))[1])


def test_mix_batch_names_a_generator_or_target_on_another_device():
    # A CPU generator or CPU targets beside a CUDA batch failed inside torch ("Expected a 'cuda' device type for
    # generator", a lerp across devices), naming neither argument. The meta device stands in for CUDA here (where
    # a CPU generator went unnoticed: the check is mix_batch's own, as draw_mix's).
    x, y = batch(b=4, classes=3)
    phase = ed.Phase(mixup_alpha=1.0)
    with pytest.raises(ValueError, match=r"generator should be on x's device \(meta\), got a generator on cpu"):
        mix_batch(x.to("meta"), y.to("meta"), phase, num_classes=3, generator=gen(0))
    with pytest.raises(ValueError, match=r"target should be on x's device \(cpu\), got target on meta"):
        mix_batch(x, y.to("meta"), phase, num_classes=3, generator=gen(0))
    with pytest.raises(ValueError, match=r"target should be on x's device \(cpu\), got target on meta"):
        mix_batch(x, torch.eye(3)[y].to("meta"), ed.Phase(cutmix_alpha=1.0), num_classes=3, generator=gen(0))


def test_cutmix_names_an_image_without_pixels():
    # H or W of 0 (an empty crop) failed in torch.randint ("random_ expects 'from' to be less than 'to'"); Mixup of
    # such a batch has nothing to blend and passes.
    y = torch.tensor([0, 1, 2, 1])
    for shape in ((4, 3, 0, 5), (4, 3, 5, 0)):
        with pytest.raises(ValueError, match=r"CutMix needs \(B, C, H, W\) input with H and W at least 1, got input "
                                             rf"of shape \({shape[0]}, 3, {shape[2]}, {shape[3]}\)"):
            mix_batch(torch.rand(shape), y, ed.Phase(cutmix_alpha=1.0), num_classes=3, generator=gen(0))
        assert mix_batch(torch.rand(shape), y, ed.Phase(mixup_alpha=1.0), num_classes=3,
                         generator=gen(0))[0].shape == shape


def test_cutmix_refuses_channels_last_images_that_mixup_takes():
    # (B, H, W, C) images (stacked PIL or numpy) would have their boxes cut across W and C.
    y = torch.tensor([0, 1, 2, 1])
    hwc = torch.rand(4, 16, 12, 3)
    with pytest.raises(ValueError, match=r"CutMix needs \(B, C, H, W\) input, got input of shape \(4, 16, 12, 3\), "
                                         r"which looks channels-last \(C=3 last\): pass x.permute\(0, 3, 1, 2\)"):
        mix_batch(hwc, y, ed.Phase(cutmix_alpha=1.0), num_classes=3, generator=gen(0))
    assert mix_batch(hwc, y, ed.Phase(mixup_alpha=1.0), num_classes=3, generator=gen(0))[0].shape == hwc.shape
    chw = hwc.permute(0, 3, 1, 2)
    assert mix_batch(chw, y, ed.Phase(cutmix_alpha=1.0), num_classes=3, generator=gen(0))[0].shape == chw.shape
    wide = torch.rand(4, 4, 16, 3)  # 4 channels and a width of 3: taken as given
    assert mix_batch(wide, y, ed.Phase(cutmix_alpha=1.0), num_classes=3, generator=gen(0))[0].shape == wide.shape


@pytest.mark.parametrize("mode", ["elem", "batch"])
@pytest.mark.parametrize("alphas", [dict(mixup_alpha=1.0), dict(cutmix_alpha=1.0),
                                    dict(mixup_alpha=1.0, cutmix_alpha=1.0)])
def test_an_unmixed_sample_comes_out_as_it_went_in_whatever_its_partner_holds(mode, alphas):
    # NOTE [ Exact unmixed samples ]: lerp with a zero weight carries a partner's NaN or inf (0 * inf is NaN) into a
    # sample its coin left unmixed, whose loss the table then keeps as non-finite.
    phase = ed.Phase(mix_prob=0.5, mode=mode, **alphas)
    unmixed_seen = 0
    for seed in range(12):
        x, y = batch(b=8, classes=4)
        x[0, 1, 2, 2], x[5, 0, 0, 0] = math.nan, math.inf  # the partners (shift 4) of the clean samples 4 and 1
        x[2].fill_(math.nan)  # and of 6
        xm, ym, mixed = mix_batch(x, y, phase, num_classes=4, generator=gen(seed))
        for i in range(8):
            if not mixed[i]:
                unmixed_seen += 1
                assert torch.equal(xm[i], x[i]) or i in (0, 2, 5), (seed, i)
                assert torch.equal(ym[i], to_soft_targets(y, 4)[i]), (seed, i)
        # Through draw_mix and apply_mix, the same.
        params = draw_mix(phase, 8, 16, 16, generator=gen(seed))
        xa, _ = apply_mix(x, to_soft_targets(y, 4), params)
        keep = ~params.mixed
        keep[[0, 2, 5]] = False
        assert torch.equal(xa[keep], x[keep])
    assert unmixed_seen >= 12


def test_a_device_side_cutmix_keeps_the_pixels_outside_the_box_whatever_the_partner_holds():
    # Mixup and CutMix both drawn, chosen on the device (a CUDA generator without a host one): the box is a (B, 1, H, W)
    # weight, 0 outside it. Forced here with a CPU generator.
    import enlight_data.mixing as mixing

    x, y = batch(b=8, classes=4)
    x[4:].fill_(math.inf)  # every partner of samples 0-3
    phase = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)  # CutMix always wins
    drawn = mixing._draw_both(phase, 8, 16, 16, generator=gen(3), device=torch.device("cpu"))
    xm, _ = mixing._apply(x, to_soft_targets(y, 4), drawn.params, out=None)
    outside = drawn.params.weight[:4].expand(4, 3, 16, 16) == 0
    assert outside.any() and torch.equal(xm[:4][outside], x[:4][outside])


def test_apply_mix_refuses_boxes_that_are_not_whole_pixel_edges():
    # The CUDA kernel reads an edge as an int, the PyTorch ops compare pixel indices with it: a fractional or NaN edge
    # would paste different pixels on each path.
    x, y = batch(b=4, classes=4)
    params = draw_mix(ed.Phase(cutmix_alpha=1.0), 4, 16, 16, generator=gen())
    for bad in (2.5, math.nan, math.inf):
        box = params.box.clone()
        box[2, 0] = bad
        broken = MixParams(lam=params.lam, weight=None, box=box, shift=2, size=(16, 16))
        with pytest.raises(ValueError, match=r"params.box should hold whole pixel edges \(finite, integer-valued\), "
                                             r"got .* at rows \[2\]"):
            apply_mix(x, to_soft_targets(y, 4), broken)


def test_a_share_too_small_to_move_lambda_leaves_the_sample_unmixed_and_exact():
    # Beta(0.1, 0.1) draws below float32's resolution at 1 make λ = 1 (unmixed, as the mixed flags say): their
    # partner weight is 0, so their input is copied too (NOTE [ Exact unmixed samples ]).
    phase = ed.Phase(mixup_alpha=0.1)
    unmixed_seen = 0
    for seed in range(30):
        params = draw_mix(phase, 64, 8, 8, generator=gen(seed))
        unmixed = params.lam == 1.0
        assert torch.equal(params.weight.view(-1)[unmixed], torch.zeros(int(unmixed.sum())))
        x, y = batch(b=64, h=8, w=8, classes=4)
        x[::7] = math.nan
        xm, _, mixed = mix_batch(x, y, phase, num_classes=4, generator=gen(seed))
        clean = ~mixed & x.flatten(1).isfinite().all(1)
        assert torch.equal(xm[clean], x[clean])
        unmixed_seen += int(clean.sum())
    assert unmixed_seen >= 10, unmixed_seen


@pytest.mark.parametrize("b", [3, 5, 7])
@pytest.mark.parametrize("phase", [ed.Phase(mixup_alpha=1.0), ed.Phase(cutmix_alpha=1.0),
                                   ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0)])
def test_odd_batches_pair_each_sample_with_the_one_half_a_batch_on(b, phase):
    g = torch.Generator().manual_seed(0)
    params = draw_mix(phase, b, 8, 8, generator=g)
    assert params.shift == b // 2
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, 8, 8).contiguous()
    mixed_x, soft, mixed = mix_batch(x, torch.arange(b), phase, num_classes=b,
                                     generator=torch.Generator().manual_seed(1))
    assert mixed.any()
    for i in range(b):
        partner = (i + b // 2) % b
        allowed = {i, partner}
        assert set(soft[i].nonzero().flatten().tolist()) <= allowed
        lo, hi = min(i, partner), max(i, partner)
        assert mixed_x[i].min() >= lo - 1e-5 and mixed_x[i].max() <= hi + 1e-5  # a blend of the pair only
