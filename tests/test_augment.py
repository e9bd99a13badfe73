"""Behaviour contracts of enlight_data.augment: GpuAugment (draw, then apply) and apply_augment."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from enlight_data import augment as augment_module
from enlight_data.augment import AugmentParams, GpuAugment, apply_augment
from helpers import CountOps

needs_cuda = pytest.mark.needs_cuda  # skipped without a GPU by conftest.py

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def images(n: int = 4, c: int = 3, h: int = 32, w: int = 40, *, seed: int = 0, dtype=torch.uint8) -> torch.Tensor:
    x = torch.randint(0, 256, (n, c, h, w), generator=gen(seed), dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255


def params(n: int, h: int, w: int, **kw) -> AugmentParams:
    """Whole-image crop, no flip, identity jitter; override fields with ``kw``."""
    fields = dict(
        boxes=torch.tensor([[0.0, 0.0, float(w), float(h)]]).expand(n, 4).contiguous(),
        flip=torch.zeros(n, dtype=torch.bool),
        jitter=torch.ones(n, dtype=torch.bool),
        brightness=torch.ones(n),
        contrast=torch.ones(n),
        saturation=torch.ones(n),
        hue=torch.zeros(n),
    )
    fields.update(kw)
    return AugmentParams(**fields)


def reference_crop(x: torch.Tensor, p: AugmentParams, size: tuple[int, int]) -> torch.Tensor:
    """Per-sample loop: slice the box, bilinear resize (align_corners=False, no antialias), flip."""
    out = []
    for i in range(x.shape[0]):
        x1, y1, x2, y2 = (int(v) for v in p.boxes[i].tolist())
        r = F.interpolate(x[i : i + 1, :, y1:y2, x1:x2].float(), size=size, mode="bilinear", align_corners=False)
        out.append(r.flip(-1) if bool(p.flip[i]) else r)
    return torch.cat(out)


def torchvision_crop_stats(h: int, w: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Area fractions and aspect ratios of ``n`` torchvision RandomResizedCrop draws (global RNG, forked)."""
    from torchvision.transforms import RandomResizedCrop

    img = torch.zeros(1, h, w)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        boxes = torch.tensor([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])
    ch, cw = boxes[:, 2].float(), boxes[:, 3].float()
    return cw * ch / (h * w), cw / ch


def test_all_is_sorted_and_exported():
    assert augment_module.__all__ == sorted(augment_module.__all__) == ["AugmentParams", "GpuAugment", "apply_augment"]


# ------------------------------------------------------------------------------------------------ random resized crop


@pytest.mark.parametrize(("h", "w"), [(256, 256), (200, 320)])
def test_crop_area_and_ratio_follow_the_requested_ranges(h, w):
    aug = GpuAugment(224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    p = aug.draw(2000, h, w, generator=gen(1))
    x1, y1, x2, y2 = p.boxes.unbind(1)
    cw, ch = x2 - x1, y2 - y1
    assert torch.equal(p.boxes, p.boxes.round())
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
    assert (cw >= 1).all() and (ch >= 1).all()
    area = cw * ch / (h * w)
    ratio = cw / ch
    # Rounding to whole pixels moves area and ratio a little outside the continuous ranges.
    assert area.min() >= 0.08 * 0.9 and area.max() <= 1.0
    assert ratio.min() >= 3 / 4 * 0.9 and ratio.max() <= 4 / 3 * 1.1
    # Distribution: the area fraction covers its range; log-ratio is symmetric around 0 on a square image.
    assert area.min() < 0.12
    assert area.max() > (0.95 if h == w else 0.8)  # a 200x320 image holds at most a 200x266 crop: 83% of it
    if h == w:
        assert abs(ratio.log().mean().item()) < 0.03
    # Same distribution as torchvision's sampler (large crops fail to fit more often, which skews both).
    tv_area, tv_ratio = torchvision_crop_stats(h, w, 2000)
    for ours, theirs in ((area, tv_area), (ratio, tv_ratio)):
        q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
        torch.testing.assert_close(ours.quantile(q), theirs.quantile(q), atol=0.04, rtol=0.0)
    # Offsets spread over the free room (not always centred).
    free_x = (w - cw).clamp(min=1)
    assert 0.4 < (x1 / free_x).mean().item() < 0.6


def test_crop_falls_back_to_a_centred_crop_with_clamped_ratio():
    # A 10x100 strip cannot hold a square of 90% of its area: torchvision's fallback takes h=H, w=round(H*max ratio).
    aug = GpuAugment(8, scale=(0.9, 1.0), ratio=(1.0, 1.0))
    p = aug.draw(5, 10, 100, generator=gen())
    assert torch.equal(p.boxes, torch.tensor([[45.0, 0.0, 55.0, 10.0]]).expand(5, 4))


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    lo=st.floats(0.01, 1.0),
    span=st.floats(0.0, 1.0),
    r_lo=st.floats(0.2, 3.0),
    r_span=st.floats(1.0, 3.0),
    strength=st.floats(0.0, 1.0),
)
def test_crop_boxes_always_lie_inside_the_image(h, w, lo, span, r_lo, r_span, strength):
    aug = GpuAugment(16, scale=(lo, lo + span * (1 - lo)), ratio=(r_lo, r_lo * r_span))
    p = aug.draw(64, h, w, generator=gen(), strength=strength)
    x1, y1, x2, y2 = p.boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
    assert (x2 - x1 >= 1).all() and (y2 - y1 >= 1).all()


@pytest.mark.parametrize(("h", "w"), [(20, 10), (10, 20)])
def test_a_crop_spanning_the_image_fits_and_takes_every_offset_along_the_other_side(h, w):
    # Square crops of half a 2:1 image's area span its short side exactly: such a crop fits (torchvision's
    # `w <= width`, not the centred fallback), and its offset along the long side is uniform over all 11 positions,
    # both ends included (torchvision's randint(0, width - w + 1)).
    aug = GpuAugment(8, scale=(0.5, 0.5), ratio=(1.0, 1.0))
    x1, y1, x2, y2 = aug.draw(2000, h, w, generator=gen(12)).boxes.unbind(1)
    assert torch.equal(x2 - x1, torch.full((2000,), 10.0)) and torch.equal(y2 - y1, torch.full((2000,), 10.0))
    along, across = (y1, x1) if h > w else (x1, y1)
    assert (across == 0).all()
    counts = torch.bincount(along.long(), minlength=11)
    assert counts.numel() == 11 and (counts > 2000 / 11 / 2).all(), counts  # about 182 each


def test_the_fallback_crop_is_never_empty():
    # A 1-pixel image and a ratio range of (1/4, 1/4): no candidate fits, and torchvision's fallback would be 0 wide.
    aug = GpuAugment(4, scale=(1.0, 1.0), ratio=(0.25, 0.25))
    for heights, widths in [(1, 1), (torch.ones(8), torch.ones(8))]:
        x1, y1, x2, y2 = aug.draw(8, heights, widths, generator=gen()).boxes.unbind(1)
        assert torch.equal(x2 - x1, torch.ones(8)) and torch.equal(y2 - y1, torch.ones(8))


def test_crop_resize_flip_equals_slice_then_interpolate_then_flip():
    aug = GpuAugment((20, 28))
    x = images(16, h=30, w=44, dtype=torch.float32)
    p = aug.draw(16, 30, 44, generator=gen(3))
    assert p.flip.any() and not p.flip.all()
    torch.testing.assert_close(aug.apply(x, p), reference_crop(x, p, (20, 28)), atol=1e-5, rtol=0)


def test_roi_align_variant_agrees_inside_the_crop():
    x = images(8, h=32, w=32, dtype=torch.float32)
    p = GpuAugment(16).draw(8, 32, 32, generator=gen(4))
    grid = augment_module._crop_resize_flip_grid(x, p, (16, 16))
    roi = augment_module._crop_resize_flip_roi(x, p, (16, 16))
    # They differ only at the crop's border, where roi_align also reads the pixels around the crop.
    torch.testing.assert_close(grid[..., 1:-1, 1:-1], roi[..., 1:-1, 1:-1], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------------------ flip


def test_flip_frequency_matches_the_probability():
    p = GpuAugment(8, flip=0.3).draw(4000, 16, 16, generator=gen(5))
    assert p.flip.dtype == torch.bool
    assert abs(p.flip.float().mean().item() - 0.3) < 0.03


def test_flipped_output_is_the_mirror_of_the_unflipped_replay():
    aug = GpuAugment((12, 18), flip=0.5, **JITTER, jitter_prob=1.0, mean=MEAN, std=STD)
    x = images(8, h=24, w=30)
    p = dataclasses.replace(aug.draw(8, 24, 30, generator=gen(6)), flip=torch.ones(8, dtype=torch.bool))
    unflipped = dataclasses.replace(p, flip=torch.zeros(8, dtype=torch.bool))
    torch.testing.assert_close(aug.apply(x, p), aug.apply(x, unflipped).flip(-1), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------- jitter


def test_jitter_factors_lie_in_torchvision_ranges_and_apply_with_jitter_prob():
    aug = GpuAugment(8, brightness=0.4, contrast=1.5, saturation=0.2, hue=0.1, jitter_prob=0.7)
    p = aug.draw(4000, 16, 16, generator=gen(7))
    on = p.jitter
    assert abs(on.float().mean().item() - 0.7) < 0.03
    for values, lo, hi in ((p.brightness, 0.6, 1.4), (p.contrast, 0.0, 2.5), (p.saturation, 0.8, 1.2)):
        assert values[on].min() >= lo and values[on].max() <= hi
        assert values[on].min() < lo + 0.05 and values[on].max() > hi - 0.05
        assert (values[~on] == 1).all()
    assert p.hue[on].abs().max() <= 0.1 and p.hue[on].abs().max() > 0.095
    assert (p.hue[~on] == 0).all()


def test_hue_shifts_spread_over_both_directions():
    # Uniform in [-hue, hue] (torchvision's ColorJitter), not only one side of 0.
    hue = GpuAugment(8, hue=0.1, jitter_prob=1.0).draw(4000, 16, 16, generator=gen(13)).hue
    assert hue.min() < -0.095 and hue.max() > 0.095
    assert abs(hue.mean().item()) < 0.005  # the mean of 4000 uniforms on [-0.1, 0.1]: standard error about 0.0009
    assert 0.4 < (hue < 0).float().mean().item() < 0.6


def test_no_jitter_configured_means_no_sample_flagged():
    p = GpuAugment(8).draw(100, 16, 16, generator=gen())
    assert not p.jitter.any() and (p.brightness == 1).all() and (p.hue == 0).all()


@pytest.mark.parametrize(
    ("field", "fn"),
    [("brightness", TF.adjust_brightness), ("contrast", TF.adjust_contrast), ("saturation", TF.adjust_saturation)],
)
def test_brightness_contrast_saturation_match_torchvision_when_nothing_clips(field, fn):
    x = 0.25 + 0.5 * images(4, h=8, w=8, dtype=torch.float32)
    factors = torch.tensor([0.7, 0.9, 1.1, 1.3])
    out = GpuAugment(8, **JITTER).apply(x, params(4, 8, 8, **{field: factors}))
    expected = torch.stack([fn(x[i], float(factors[i])) for i in range(4)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_brightness_and_contrast_together_match_torchvision_applied_in_order():
    # Contrast blends with the mean gray level of the brightness-adjusted image, as torchvision's ColorJitter
    # (brightness first) gives it: the mean of the input itself would be off by the brightness factor.
    x = 0.3 + 0.3 * images(4, h=8, w=8, dtype=torch.float32)
    bright = torch.tensor([0.8, 1.2, 0.9, 1.1])
    contrast = torch.tensor([1.2, 0.8, 0.7, 1.25])
    out = GpuAugment(8, **JITTER).apply(x, params(4, 8, 8, brightness=bright, contrast=contrast))
    expected = torch.stack(
        [TF.adjust_contrast(TF.adjust_brightness(x[i], float(bright[i])), float(contrast[i])) for i in range(4)]
    )
    assert expected.min() > 0 and expected.max() < 1  # nothing clips
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_hue_is_a_rotation_about_the_gray_axis():
    aug = GpuAugment(8, hue=0.5)
    x = images(4, h=8, w=8, dtype=torch.float32)
    # Exactly torchvision's HSV shift at 1/3 turn: a cyclic permutation of the channels (red -> green).
    third = torch.tensor([1 / 3, -1 / 3, 1 / 3, 0.0])
    expected = torch.stack([TF.adjust_hue(x[i], float(third[i])) for i in range(4)])
    torch.testing.assert_close(aug.apply(x, params(4, 8, 8, hue=third)), expected, atol=1e-5, rtol=0)
    # Gray stays gray; the channel mean is kept where nothing clips.
    gray = torch.full((2, 3, 8, 8), 0.4)
    torch.testing.assert_close(aug.apply(gray, params(2, 8, 8, hue=torch.tensor([0.1, -0.3]))), gray)
    mid = 0.4 + 0.2 * x
    shifted = aug.apply(mid, params(4, 8, 8, hue=torch.tensor([0.05, -0.05, 0.1, 0.0])))
    torch.testing.assert_close(shifted.mean(1), mid.mean(1), atol=1e-5, rtol=0)


def test_jitter_is_skipped_for_samples_not_flagged():
    aug = GpuAugment(8, **JITTER, jitter_prob=0.5)
    x = images(64, h=8, w=8, dtype=torch.float32)
    p = aug.draw(64, 8, 8, generator=gen(8))
    # Whole image, no flip: the output should equal the input where jitter is off.
    p = dataclasses.replace(p, boxes=params(64, 8, 8).boxes, flip=params(64, 8, 8).flip)
    out = aug.apply(x, p)
    off = ~p.jitter
    assert off.any() and p.jitter.any()
    torch.testing.assert_close(out[off], x[off], atol=1e-6, rtol=0)
    assert (out[p.jitter] - x[p.jitter]).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_grayscale_input_ignores_saturation_and_hue():
    x = images(6, c=1, h=16, w=16)
    p = GpuAugment(8, **JITTER, jitter_prob=1.0).draw(6, 16, 16, generator=gen(9))
    with_sat_hue = GpuAugment(8, **JITTER).apply(x, p)
    without = GpuAugment(8, brightness=0.4, contrast=0.4).apply(x, p)
    assert with_sat_hue.shape == (6, 1, 8, 8)
    torch.testing.assert_close(with_sat_hue, without)


def test_jitter_on_other_channel_counts_raises():
    aug = GpuAugment(8, brightness=0.2)
    with pytest.raises(ValueError, match=r"colour jitter needs 1 or 3 channels, got x.shape=\(2, 4, 16, 16\)"):
        aug(images(2, c=4, h=16, w=16), generator=gen())
    assert GpuAugment(8)(images(2, c=4, h=16, w=16), generator=gen()).shape == (2, 4, 8, 8)


@pytest.mark.parametrize("c", [2, 4])
def test_other_channel_counts_are_normalised_per_channel(c):
    x = images(3, c=c, h=16, w=16)
    mean, std = tuple(0.1 * (i + 1) for i in range(c)), tuple(0.2 + 0.1 * i for i in range(c))
    plain = GpuAugment(8)(x, generator=gen(), strength=0.0)
    normed = GpuAugment(8, mean=mean, std=std)(x, generator=gen(), strength=0.0)
    expected = (plain - torch.tensor(mean).view(1, c, 1, 1)) / torch.tensor(std).view(1, c, 1, 1)
    torch.testing.assert_close(normed, expected, atol=1e-5, rtol=0)
    one = GpuAugment(8, mean=(0.5,), std=(0.25,))(x, generator=gen(), strength=0.0)  # one value for every channel
    torch.testing.assert_close(one, (plain - 0.5) / 0.25, atol=1e-5, rtol=0)


def test_output_is_clamped_to_the_unit_range_before_normalising():
    aug = GpuAugment(8, brightness=5.0, contrast=5.0, saturation=5.0, jitter_prob=1.0, mean=MEAN, std=STD)
    out = aug(images(32, h=16, w=16), generator=gen(10))
    lo = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()


# -------------------------------------------------------------------------------------- normalisation, dtype, format


def test_normalisation_uses_mean_and_std_in_unit_range():
    x = images(4, h=16, w=16)
    plain = GpuAugment(16)(x, generator=gen(), strength=0.0)
    normed = GpuAugment(16, mean=MEAN, std=STD, **JITTER)(x, generator=gen(), strength=0.0)
    torch.testing.assert_close(plain, x.float() / 255, atol=1e-6, rtol=0)
    expected = (plain - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normed, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("jitter", [False, True])
def test_shape_dtype_and_memory_format(out_dtype, channels_last, jitter):
    kw = JITTER if jitter else {}
    aug = GpuAugment((12, 20), out_dtype=out_dtype, channels_last=channels_last, mean=MEAN, std=STD, **kw)
    out = aug(images(3, h=24, w=24), generator=gen())
    assert out.shape == (3, 3, 12, 20) and out.dtype == out_dtype
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    ref = GpuAugment((12, 20), mean=MEAN, std=STD, **kw)(images(3, h=24, w=24), generator=gen())
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.01)


def test_float64_input_is_computed_in_float64():
    x = images(2, h=16, w=16, dtype=torch.float64)
    out = GpuAugment(8, out_dtype=torch.float64)(x, generator=gen())
    assert out.dtype == torch.float64


# ------------------------------------------------------------------------------------------- determinism and state


def test_same_seed_same_output_different_seed_different(forbid_global_rng):
    aug = GpuAugment(16, **JITTER, mean=MEAN, std=STD)
    x = images(8, h=32, w=32)
    a, b, c = aug(x, generator=gen(1)), aug(x, generator=gen(1)), aug(x, generator=gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_own_generator_is_seeded_kept_and_restored_from_state_dict(tmp_path, forbid_global_rng):
    x = images(4, h=32, w=32)
    aug = GpuAugment(16, **JITTER, seed=7)
    assert aug.state_dict()["generator_state"] is None
    first = aug(x)
    assert torch.equal(first, GpuAugment(16, **JITTER, seed=7)(x))
    torch.save(aug.state_dict(), tmp_path / "aug.pt")
    second = aug(x)
    assert not torch.equal(first, second)  # the generator advances across calls
    fresh = GpuAugment(16, **JITTER, seed=7)
    fresh.load_state_dict(torch.load(tmp_path / "aug.pt", weights_only=True))
    assert fresh.seed == 7
    assert torch.equal(fresh(x), second)


def test_pickle_keeps_the_generator_state():
    aug = GpuAugment(16, **JITTER)
    x = images(4, h=32, w=32)
    aug(x)
    clone = pickle.loads(pickle.dumps(aug))
    assert torch.equal(clone(x), aug(x))


def test_strength_zero_is_a_deterministic_resize_of_the_whole_image():
    x = images(6, h=30, w=50)
    aug = GpuAugment((20, 24), flip=1.0, **JITTER, jitter_prob=1.0)
    outs = [aug(x, generator=gen(s), strength=0.0) for s in range(3)]
    expected = F.interpolate(x.float() / 255, size=(20, 24), mode="bilinear", align_corners=False)
    for out in outs:
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    p = aug.draw(6, 30, 50, generator=gen(), strength=0.0)
    assert not p.flip.any() and not p.jitter.any()
    assert torch.equal(p.boxes, torch.tensor([[0.0, 0.0, 50.0, 30.0]]).expand(6, 4))


def test_strength_scales_probabilities_magnitudes_and_crop_ranges():
    aug = GpuAugment(8, scale=(0.2, 1.0), ratio=(0.5, 2.0), flip=1.0, brightness=0.8, jitter_prob=1.0)
    p = aug.draw(4000, 64, 64, generator=gen(11), strength=0.5)
    assert abs(p.flip.float().mean().item() - 0.5) < 0.03
    assert abs(p.jitter.float().mean().item() - 0.5) < 0.03
    b = p.brightness[p.jitter]
    assert b.min() >= 0.6 and b.max() <= 1.4 and b.max() > 1.38
    cw, ch = p.boxes[:, 2] - p.boxes[:, 0], p.boxes[:, 3] - p.boxes[:, 1]
    area = cw * ch / 64**2
    assert area.min() >= 0.6 * 0.95  # 1 - 0.5 * (1 - 0.2)
    ratio = cw / ch
    assert ratio.min() >= 2**-0.5 * 0.95 and ratio.max() <= 2**0.5 * 1.05


def test_uint8_and_float_input_agree():
    aug = GpuAugment(16, **JITTER, mean=MEAN, std=STD)
    x = images(8, h=32, w=32)
    torch.testing.assert_close(aug(x, generator=gen(3)), aug(x.float() / 255, generator=gen(3)), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ variable-size image lists


def test_list_of_variable_size_images_crops_each_inside_its_own_image():
    sizes = [(20, 30), (41, 17), (8, 8), (33, 50)]
    xs = [images(1, h=h, w=w, seed=i)[0] for i, (h, w) in enumerate(sizes)]
    aug = GpuAugment(12, **JITTER, mean=MEAN, std=STD)
    out = aug(xs, generator=gen(12))
    assert out.shape == (4, 3, 12, 12)
    p = aug.draw(
        4,
        torch.tensor([h for h, _ in sizes], dtype=torch.float32),
        torch.tensor([w for _, w in sizes], dtype=torch.float32),
        generator=gen(12),
    )
    for i, (h, w) in enumerate(sizes):
        x1, y1, x2, y2 = p.boxes[i].tolist()
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        # Padding never leaks in: each sample equals the same params applied to its image alone.
        alone = aug.apply(xs[i][None], p[i])
        torch.testing.assert_close(out[i : i + 1], alone, atol=1e-4, rtol=0)


def test_list_strength_zero_resizes_each_whole_image():
    xs = [images(1, h=h, w=w, seed=h)[0] for h, w in [(10, 30), (25, 12)]]
    out = GpuAugment(8)(xs, generator=gen(), strength=0.0)
    for i, x in enumerate(xs):
        expected = F.interpolate(x[None].float() / 255, size=(8, 8), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-5, rtol=0)


def test_list_with_mixed_channels_raises():
    with pytest.raises(ValueError, match=r"same C, dtype and device, got x\[1\]"):
        GpuAugment(8)([torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(1, 8, 8, dtype=torch.uint8)])


# ------------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(size=0), ValueError, r"size should be positive, got size=0$"),
        (dict(size=(4, -2)), ValueError, r"size should be positive, got size=\(4, -2\)"),
        (dict(size=(8, 8, 8)), TypeError, r"size should be an int or a pair of ints"),
        (dict(size=8.0), TypeError, r"size should be an int or a pair of ints \(height, width\), got size=8.0"),
        (dict(scale=(0.5, 0.1)), ValueError, r"scale should satisfy 0 < lo <= hi <= 1, got scale=\(0.5, 0.1\)"),
        (dict(scale=(0.0, 1.0)), ValueError, r"scale should satisfy 0 < lo"),
        (dict(scale=0.5), TypeError, r"scale should be a pair of real numbers \(lo, hi\), got scale=0.5"),
        (dict(ratio=(2.0, 1.0)), ValueError, r"ratio should satisfy 0 < lo <= hi < inf, got ratio=\(2.0, 1.0\)"),
        (dict(ratio=(1.0, math.inf)), ValueError, r"ratio should satisfy 0 < lo <= hi < inf, got ratio=\(1.0, inf\)"),
        (dict(brightness=math.inf), ValueError, r"brightness should be in \[0, inf\), finite, got brightness=inf"),
        (dict(contrast=math.nan), ValueError, r"contrast should be in \[0, inf\), finite, got contrast=nan"),
        (dict(mean=(0.5, math.nan, 0.5), std=STD), ValueError, r"mean should hold finite numbers, got mean="),
        (dict(mean=MEAN, std=(math.inf,) * 3), ValueError, r"std should hold finite numbers, got std=\(inf, inf, inf\)"),
        (dict(flip=1.5), ValueError, r"flip should be in \[0, 1\], got flip=1.5"),
        (dict(flip="0.5"), TypeError, r"flip should be a real number in \[0, 1\], got flip='0.5'"),
        (dict(brightness=-0.1), ValueError, r"brightness should be in \[0, inf\), finite, got brightness=-0.1"),
        (dict(contrast=True), TypeError, r"contrast should be a real number, got contrast=True of type bool"),
        (dict(saturation=-1), ValueError, r"saturation should be in \[0, inf\), finite, got saturation=-1"),
        (dict(hue=0.6), ValueError, r"hue should be in \[0, 0.5\], got hue=0.6"),
        (dict(jitter_prob=-0.1), ValueError, r"jitter_prob should be in \[0, 1\], got jitter_prob=-0.1"),
        (dict(mean=MEAN), ValueError, r"mean and std should be given together"),
        (dict(mean=MEAN, std=(0.2, 0.2)), ValueError, r"same length, got len\(mean\)=3, len\(std\)=2"),
        (dict(mean=MEAN, std=(0.2, 0.0, 0.2)), ValueError, r"std should be positive, got std=\(0.2, 0.0, 0.2\)"),
        (dict(mean="abc", std=STD), TypeError, r"mean should be None or a non-empty sequence of real numbers"),
        (dict(mean=(), std=()), ValueError, r"mean should be None or a non-empty sequence .* got mean=\(\)"),
        (dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)), ValueError,  # ImageNet's, 0-255 scale
         r"mean and std should be in \[0, 1\] units .* got mean=\(123.675, 116.28, 103.53\), std=\(58.395, "),
        (dict(mean=MEAN, std=(2.0, 2.0, 2.0)), ValueError, r"mean and std should be in \[0, 1\] units"),
        (dict(mean=(-0.1, 0.5, 0.5), std=STD), ValueError, r"mean and std should be in \[0, 1\] units"),
        (dict(out_dtype=torch.uint8), ValueError, r"floating point dtype, got out_dtype=torch.uint8"),
        (dict(out_dtype="float32"), TypeError, r"out_dtype should be a torch.dtype, got out_dtype='float32'"),
        (dict(channels_last=1), TypeError, r"channels_last should be a bool, got channels_last=1"),
        (dict(seed=-1), ValueError, r"seed should be in \[0, 2\*\*64\), got seed=-1"),
        (dict(seed=1.0), TypeError, r"seed should be an int, got seed=1.0"),
    ],
)
def test_bad_parameters_raise(kwargs, error, match):
    kwargs = {"size": 8, **kwargs}
    size = kwargs.pop("size")
    with pytest.raises(error, match=match):
        GpuAugment(size, **kwargs)


def test_hyper_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        GpuAugment(8, (0.5, 1.0))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("strength", "error", "match"),
    [
        (1.5, ValueError, r"strength should be in \[0, 1\], got strength=1.5"),
        (-0.1, ValueError, r"strength should be in \[0, 1\], got strength=-0.1"),
        (torch.tensor(0.5), TypeError, r"strength should be a real number in \[0, 1\]"),
    ],
)
def test_bad_strength_raises(strength, error, match):
    aug = GpuAugment(8)
    with pytest.raises(error, match=match):
        aug(images(2), generator=gen(), strength=strength)
    with pytest.raises(error, match=match):
        apply_augment(aug, images(2), generator=gen(), strength=strength)


def test_bad_inputs_raise():
    aug = GpuAugment(8)
    with pytest.raises(ValueError, match=r"x should be a \(B, C, H, W\) tensor with H, W > 0, or a list of \(C, H, W\) "
                                         r"images, got x.shape=\(3, 8, 8\): a batch of one-channel images\? pass "
                                         r"x.unsqueeze\(1\); one image\? pass \[x\] or x.unsqueeze\(0\)$"):
        aug(torch.zeros(3, 8, 8), generator=gen())
    with pytest.raises(ValueError, match=r"got x.shape=\(16, 12, 3\), which looks channels-last \(C=3 last\): pass "
                                         r"x.permute\(2, 0, 1\)$"):
        aug(torch.zeros(16, 12, 3), generator=gen())  # one (H, W, C) image
    with pytest.raises(TypeError, match=r"x should be uint8 or floating point, got x.dtype=torch.int64"):
        aug(torch.zeros(1, 3, 8, 8, dtype=torch.long), generator=gen())
    with pytest.raises(ValueError, match=r"x should be a tensor or a non-empty list"):
        aug([], generator=gen())
    p = aug.draw(3, 8, 8, generator=gen())
    with pytest.raises(ValueError, match=r"params should be drawn for the batch size 2, got len\(params\)=3"):
        aug.apply(images(2, h=8, w=8), p)
    with pytest.raises(TypeError, match=r"generator should be a torch.Generator, got generator=0"):
        aug.draw(2, 8, 8, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"heights should have shape \(2,\), got heights.shape=\(3,\)"):
        aug.draw(2, torch.ones(3), 8, generator=gen())
    for bad in ([8.0, 0.0], [8.0, math.nan], [8.0, 2.5], [8.0, math.inf]):
        with pytest.raises(ValueError, match=r"widths should hold positive whole numbers \(pixels\), got widths="):
            aug.draw(2, 8, torch.tensor(bad), generator=gen())
    with pytest.raises(ValueError, match=r"H, W > 0, or a list of \(C, H, W\) images, got x.shape=\(2, 3, 0, 8\)"):
        aug(torch.zeros(2, 3, 0, 8), generator=gen())
    empty = [images(1, h=8, w=8)[0], torch.zeros(3, 5, 0, dtype=torch.uint8)]
    with pytest.raises(ValueError, match=r"H, W > 0, .*got x\[1\] of shape \(3, 5, 0\)"):
        aug(empty, generator=gen())


def test_settings_are_read_only_after_construction():
    aug = GpuAugment(8, mean=MEAN, std=STD)
    before = aug(images(2, h=8, w=8), generator=gen())
    for name, value in [("mean", (0.0, 0.0, 0.0)), ("brightness", 0.5), ("size", (4, 4)), ("seed", 3)]:
        with pytest.raises(AttributeError, match=f"settings are fixed at construction, got an assignment to {name}="):
            setattr(aug, name, value)
    torch.testing.assert_close(aug(images(2, h=8, w=8), generator=gen()), before)
    with pytest.raises(ValueError, match=r"state\['seed'\] should be this augmenter's seed=0 .*got state\['seed'\]=5"):
        aug.load_state_dict({**aug.state_dict(), "seed": 5})  # nor does loading a state change the seed
    assert aug.seed == 0


def _used_state(seed=0):
    aug = GpuAugment(8, seed=seed)
    aug(images(2, h=8, w=8))
    return aug.state_dict()


@pytest.mark.parametrize(
    "state, error, match",
    [
        (None, TypeError, r"state should be a dict \(from GpuAugment.state_dict\(\)\), got state of type NoneType"),
        ("abc", TypeError, "state should be a dict .* got state of type str"),
        ({"seed": 0}, ValueError,
         r"state should have keys .* got state missing \['generator_device', 'generator_state'\]"),
        ({"seed": -5, "generator_state": None, "generator_device": None}, ValueError,
         r"state\['seed'\] should be an int in \[0, 2\*\*64\), got state\['seed'\]=-5"),
        ({"seed": "x", "generator_state": None, "generator_device": None}, ValueError,
         r"state\['seed'\] should be an int in \[0, 2\*\*64\), got state\['seed'\]='x'"),
        ({"seed": True, "generator_state": None, "generator_device": None}, ValueError,
         r"state\['seed'\] should be an int"),
        (_used_state(seed=9), ValueError, r"state\['seed'\] should be this augmenter's seed=0 .*GpuAugment\(seed=9\).* "
                                          r"got state\['seed'\]=9"),
        ({"seed": 0, "generator_state": None, "generator_device": "cpu"}, ValueError,
         r"should both be None \(the generator not used yet\) or both be set"),
        ({**_used_state(), "generator_state": torch.zeros(3)}, ValueError,
         r"state\['generator_state'\] should be a 1-D uint8 tensor .* got a tensor of dtype torch.float32"),
        ({**_used_state(), "generator_state": [1, 2]}, ValueError,
         r"state\['generator_state'\] should be a 1-D uint8 tensor .* of type list"),
        ({**_used_state(), "generator_state": torch.zeros(3, dtype=torch.uint8)}, ValueError,
         r"state\['generator_state'\] should be the state of a cpu generator, got a uint8 tensor of 3 bytes"),
        ({**_used_state(), "generator_device": "foo"}, ValueError,
         r"state\['generator_device'\] should be a device string such as 'cpu' or 'cuda:0', got .*='foo'"),
        ({**_used_state(), "generator_device": 5}, ValueError,
         r"state\['generator_device'\] should be a device string"),
    ],
)
def test_load_state_dict_checks_the_state_and_changes_nothing_when_it_refuses(state, error, match):
    aug = GpuAugment(8, seed=0)
    x = images(2, h=8, w=8)
    aug(x)
    before = aug.state_dict()
    with pytest.raises(error, match=match):
        aug.load_state_dict(state)
    after = aug.state_dict()
    assert aug.seed == 0 and "seed=0)" in repr(aug)
    assert torch.equal(before["generator_state"], after["generator_state"])


def test_a_ramped_strength_does_not_grow_the_constant_cache():
    aug = GpuAugment(8, **JITTER)
    for i in range(100):
        aug(images(2, h=8, w=8), generator=gen(), strength=i / 100)
    assert len(aug._consts) <= 20


# ---------------------------------------------------------------------------------------------------- apply_augment


def test_apply_augment_passes_generator_and_strength_to_gpu_augment(forbid_global_rng):
    aug = GpuAugment(16, **JITTER)
    x = images(4, h=32, w=32)
    expected = aug(x, generator=gen(5), strength=0.3)
    torch.testing.assert_close(apply_augment(aug, x, generator=gen(5), strength=0.3), expected)


def kornia_pipeline():
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomResizedCrop((16, 16)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.Normalize(mean=torch.tensor(MEAN), std=torch.tensor(STD)),
    )


def test_apply_augment_runs_kornia_reproducibly_on_uint8(forbid_global_rng):
    pipe = kornia_pipeline()
    x = images(8, h=32, w=32)
    a = apply_augment(pipe, x, generator=gen(1))
    b = apply_augment(pipe, x, generator=gen(1))
    c = apply_augment(pipe, x, generator=gen(2))
    assert a.shape == (8, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_apply_augment_accepts_a_single_kornia_augmentation():
    import kornia.augmentation as K

    x = images(4, h=16, w=16)
    out = apply_augment(K.RandomHorizontalFlip(p=1.0), x, generator=gen())
    torch.testing.assert_close(out, x.flip(-1).float() / 255)


def test_a_plain_sequential_of_kornia_augmentations_is_kornia():
    # nn.Sequential(K.…, K.…), as Kornia's own examples chain them: uint8 converted, the layout checked.
    import kornia.augmentation as K

    x = images(4, h=16, w=16)
    chain = torch.nn.Sequential(K.RandomHorizontalFlip(p=1.0), K.RandomVerticalFlip(p=1.0))
    torch.testing.assert_close(apply_augment(chain, x, generator=gen()), x.flip(-1, -2).float() / 255)
    with pytest.raises(ValueError, match="channels"):
        apply_augment(chain, x.permute(0, 2, 3, 1), generator=gen())
    # A Sequential holding anything else (or nothing), or a subclass with a forward of its own, is a
    # plain callable: its input is its own to take, as it comes.
    class Seen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def forward(self, t):
            self.dtypes.append(t.dtype)
            return t.float()

    class Own(torch.nn.Sequential):  # of Kornia modules only, with a forward that converts for itself
        def __init__(self, *modules):
            super().__init__(*modules)
            self.dtypes = []

        def forward(self, t):
            self.dtypes.append(t.dtype)
            return super().forward(t.float() / 255)

    own = Own(K.RandomHorizontalFlip(p=1.0))
    torch.testing.assert_close(apply_augment(own, x, generator=gen()), x.flip(-1).float() / 255)
    assert own.dtypes == [torch.uint8]  # not converted twice

    class Named(torch.nn.Sequential):  # a subclass for its name only: nn.Sequential's forward, Kornia inside
        pass

    torch.testing.assert_close(apply_augment(Named(K.RandomHorizontalFlip(p=1.0)), x, generator=gen()),
                               x.flip(-1).float() / 255)
    for make in (lambda s: torch.nn.Sequential(s, K.RandomHorizontalFlip(p=1.0)), lambda s: torch.nn.Sequential(s)):
        seen = Seen()
        apply_augment(make(seen), x, generator=gen())
        assert seen.dtypes == [torch.uint8]
    assert apply_augment(torch.nn.Sequential(), x, generator=gen()).dtype == torch.uint8


def test_apply_augment_calls_other_callables_with_x_only():
    seen = []
    out = apply_augment(lambda x: seen.append(x) or x + 1, torch.zeros(2, 3), generator=gen())
    assert torch.equal(out, torch.ones(2, 3)) and len(seen) == 1
    # Only a GpuAugment can scale its augmentation: a strength for anything else would be silently ignored.
    with pytest.raises(ValueError, match="strength scales a GpuAugment only, got strength=0.5 with augment of type"):
        apply_augment(lambda x: seen.append(x) or x, torch.zeros(2, 3), generator=gen(), strength=0.5)
    assert len(seen) == 1


def test_apply_refuses_boxes_that_are_not_whole_pixel_edges():
    aug = GpuAugment(8)
    p = aug.draw(3, 32, 40, generator=gen())
    for bad in (7.5, math.nan):
        boxes = p.boxes.clone()
        boxes[1, 2] = bad
        with pytest.raises(ValueError, match=r"params.boxes should hold whole pixel edges .* at rows \[1\]"):
            aug.apply(images(3), dataclasses.replace(p, boxes=boxes))


def test_apply_augment_checks_what_a_callable_gives_back():
    # A callable that forgot its return, or dropped samples, would misalign the batch with its targets.
    with pytest.raises(TypeError, match=r"augment should return the augmented batch, got None from augment <lambda> "
                                        r"\(a missing return\?\)"):
        apply_augment(lambda x: None, images(4), generator=gen())
    with pytest.raises(ValueError, match=r"augment should keep the batch size 4 as its output's first dimension, got "
                                         r"an output of shape \(2, 3, 32, 40\) from augment <lambda>"):
        apply_augment(lambda x: x[:2], images(4), generator=gen())
    with pytest.raises(ValueError, match=r"batch size 2 .* got an output of shape \(\)"):
        apply_augment(lambda x: torch.tensor(1.0), [images(1)[0], images(1)[0]], generator=gen())
    assert apply_augment(lambda x: x["a"], {"a": torch.zeros(3)}, generator=gen()).shape == (3,)  # not an image batch
    views = apply_augment(lambda x: (x.flip(-1), x), images(4), generator=gen())  # two views: the callable's choice
    assert isinstance(views, tuple) and len(views) == 2
    assert len(apply_augment(lambda x: list(x), images(3), generator=gen())) == 3  # per-image results


def test_an_augmentation_class_is_refused_for_an_instance():
    import kornia.augmentation as K

    import enlight_data as ed

    match = r"augment should be an augmentation \(an instance\) or None, got the class RandomHorizontalFlip: pass " \
            r"RandomHorizontalFlip\(...\)"
    with pytest.raises(TypeError, match=match):
        ed.enlighten(_uint8_loader(), ed.mixup_pause(1, alpha=0.2), num_classes=4, augment=K.RandomHorizontalFlip)
    with pytest.raises(TypeError, match=match):
        ed.Phase(augment=K.RandomHorizontalFlip)


def test_apply_augment_rejects_non_callables_and_bad_generators():
    for strength in (1.0, 0.5):  # a non-callable is named as such whatever the strength
        with pytest.raises(TypeError, match=r"augment should be a GpuAugment, a Kornia augmentation or a callable"):
            apply_augment(42, images(2), generator=gen(), strength=strength)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"generator should be a torch.Generator, got generator=None"):
        apply_augment(GpuAugment(8), images(2), generator=None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.parametrize("jitter", [False, True])
def test_cpu_and_cuda_agree_for_the_same_params(jitter):
    kw = JITTER if jitter else {}
    aug = GpuAugment((20, 24), mean=MEAN, std=STD, **kw)
    x = images(16, h=40, w=48)
    p = aug.draw(16, 40, 48, generator=gen(13))
    cpu = aug.apply(x, p)
    cuda = aug.apply(x.cuda(), p.to("cuda"))
    # CUDA resamples in one kernel that computes sample positions in pixel units, grid_sample in [-1, 1]: the two
    # differ by float rounding, up to 3e-5 here and 3e-4 (0.02 grey levels) at 256 -> 224 through Triton's interpreter.
    torch.testing.assert_close(cuda.cpu(), cpu, atol=2e-4, rtol=1e-4)


@needs_cuda
def test_draw_and_apply_never_synchronise_on_cuda():
    aug = GpuAugment(16, **JITTER, mean=MEAN, std=STD, out_dtype=torch.float16, channels_last=True)
    x = images(8, h=32, w=32).cuda()
    xs = [images(1, h=h, w=w, seed=h)[0].cuda() for h, w in [(20, 30), (33, 17)]]
    g = gen(0, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = aug(x, generator=g, strength=0.7)
        out_list = aug(xs, generator=g)
        own = GpuAugment(16, **JITTER)(x)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.shape == (8, 3, 16, 16) and out_list.shape == (2, 3, 16, 16) and own.is_cuda


@needs_cuda
def test_kornia_on_cuda_is_reproducible():
    pipe = kornia_pipeline().cuda()
    x = images(4, h=32, w=32).cuda()
    a = apply_augment(pipe, x, generator=gen(1, "cuda"))
    b = apply_augment(pipe, x, generator=gen(1, "cuda"))
    assert torch.equal(a, b)


def test_hue_bases_form_a_rotation():
    bases = [torch.tensor(b, dtype=torch.float64) for b in augment_module._HUE_BASES]
    for theta in (0.3, 1.7, -2.2):
        r = bases[0] + math.cos(theta) * bases[1] + math.sin(theta) * bases[2]
        torch.testing.assert_close(r @ r.T, torch.eye(3, dtype=torch.float64))
        torch.testing.assert_close(torch.linalg.det(r), torch.tensor(1.0, dtype=torch.float64))


def test_draw_and_apply_stay_within_a_kernel_budget():
    # NOTE [ Few kernels per draw ]: each op is a launch on a GPU; the budget guards against launch-bound regressions.
    aug = GpuAugment(16, **JITTER, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    aug(x, generator=gen(0))  # constants are made on the first call
    with CountOps() as ops:
        aug(x, generator=gen(0))
    assert len(ops) <= 80, ops
    # Clamps: the grid's two, and the colour map's, one per channel on the CPU (host bounds; one op on a GPU).
    assert ops.count("grid_sampler_2d") == 1 and ops.count("baddbmm") == 1 and ops.count("clamp") == 2 + 3, ops


def test_a_list_of_images_costs_one_copy_per_image_and_no_float_copy():
    # NOTE [ Padding a list of images ]: one fill and one copy per image, in the images' own dtype.
    aug = GpuAugment(12, **JITTER)
    g = torch.Generator().manual_seed(0)
    counts = []
    for n in (3, 24):
        images = [torch.randint(0, 256, (3, 14 + i % 5, 17 + i % 3), dtype=torch.uint8, generator=g) for i in range(n)]
        aug(images, generator=gen(0))
        with CountOps() as ops:
            aug(images, generator=gen(0))
        counts.append((len(ops), ops.count("copy_")))
    assert counts[1][0] - counts[0][0] == 21 and counts[1][1] - counts[0][1] == 21, counts


@pytest.mark.parametrize("c", [1, 3])
def test_colour_map_kernels_agree_with_a_matmul(c):
    g = gen(5)
    flat, mat, bias = torch.rand(4, c, 30, generator=g), torch.randn(4, c, c, generator=g), torch.randn(4, c, generator=g)
    expected = torch.einsum("nij,njp->nip", mat, flat) + bias.unsqueeze(2)
    for name, kernel in augment_module._COLOUR_MAPS.items():
        torch.testing.assert_close(kernel(flat, mat, bias, torch.empty_like(flat)), expected, msg=name)


# ------------------------------------------------------------------ through enlighten(), on the CPU


def _uint8_loader(n: int = 48, batch: int = 8, *, shuffle: bool = True) -> torch.utils.data.DataLoader:
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.randint(0, 256, (n, 3, 20, 20), dtype=torch.uint8, generator=gen(11))
    return DataLoader(TensorDataset(x, torch.arange(n) % 4), batch_size=batch, shuffle=shuffle)


def _train(loader, epochs: int, device: str = "cpu") -> list[torch.Tensor]:
    """The README loop, unchanged: model, tracked loss, backward; returns the batches it saw."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4)).to(device)
    criterion = loader.track(torch.nn.CrossEntropyLoss())
    seen = []
    for _ in range(epochs):
        for x, y in loader:
            criterion(model(x), y).backward()
            seen.append(x)
    return seen


@pytest.mark.parametrize("kind", ["gpu_augment", "kornia"])
def test_enlighten_runs_the_augmentation_in_an_unchanged_loop(kind, forbid_global_rng):
    import enlight_data as ed

    def make(seed: int):
        augment = GpuAugment(16, **JITTER, mean=MEAN, std=STD) if kind == "gpu_augment" else kornia_pipeline()
        schedule = ed.Schedule(2, during=ed.Phase(drop_high_loss=0.25), after=ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0))
        return ed.enlighten(_uint8_loader(), schedule, num_classes=4, seed=seed, augment=augment)

    loader = make(0)
    seen = _train(loader, epochs=3)
    assert all(x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32 for x in seen)
    assert len(seen) == 6 + 5 + 6  # epoch 1 leaves out the 12 highest-loss of 48 samples
    expected = "GpuAugment" if kind == "gpu_augment" else "AugmentationSequential"
    assert [h["augment"] for h in loader.history] == [expected] * 3
    again, other = _train(make(0), epochs=3), _train(make(1), epochs=3)
    assert all(torch.equal(a, b) for a, b in zip(seen, again))  # same seed, same augmented and mixed batches
    assert not torch.equal(seen[0], other[0])


@needs_cuda
@pytest.mark.parametrize("kind", ["gpu_augment", "kornia"])
def test_enlighten_runs_the_augmentation_on_cuda_in_an_unchanged_loop(kind):
    import enlight_data as ed

    def make(seed: int):
        augment = GpuAugment(16, **JITTER, mean=MEAN, std=STD) if kind == "gpu_augment" else kornia_pipeline()
        schedule = ed.Schedule(2, during=ed.Phase(drop_high_loss=0.25), after=ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0))
        return ed.enlighten(_uint8_loader(), schedule, num_classes=4, seed=seed, augment=augment, device="cuda")

    seen = _train(make(0), epochs=3, device="cuda")
    assert all(x.is_cuda and x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32 for x in seen)
    assert len(seen) == 6 + 5 + 6
    again = _train(make(0), epochs=3, device="cuda")
    assert all(torch.equal(a, b) for a, b in zip(seen, again))


def test_phase_strength_and_augment_swap_go_through_the_loader():
    import enlight_data as ed

    aug = GpuAugment(16, **JITTER)
    raw = torch.cat([x for x, _ in _uint8_loader(16, batch=16, shuffle=False)])
    schedule = ed.Schedule(1, during=ed.Phase(augment_strength=0.0), after=ed.Phase(augment_strength=0.5))
    loader = ed.enlighten(_uint8_loader(16, batch=16, shuffle=False), schedule, augment=aug)
    (period,), (after,) = ([x for x, _ in loader] for _ in range(2))
    torch.testing.assert_close(period, aug(raw, generator=gen(123), strength=0.0))  # a plain resize, any draw
    assert not torch.allclose(after, period)
    assert [h["augment_strength"] for h in loader.history] == [0.0, 0.5]

    zeros = lambda x: torch.zeros(x.shape[0], 3, 16, 16)  # noqa: E731
    swapped = ed.enlighten(_uint8_loader(16, batch=16), ed.Schedule(1, during=ed.Phase(augment=zeros), after=ed.Phase()),
                           augment=aug)
    (first,), (second,) = ([x for x, _ in swapped] for _ in range(2))
    assert torch.equal(first, torch.zeros(16, 3, 16, 16)) and second.abs().sum() > 0
    assert [h["augment"] for h in swapped.history] == ["<lambda>", "GpuAugment"]
    assert [h["augment_from"] for h in swapped.history] == ["during", "enlighten"]
    assert [h["augment_from"] for h in loader.history] == ["enlighten"] * 2


def test_a_list_of_images_needs_an_augmentation_in_every_phase_from_the_first_batch():
    import enlight_data as ed
    from torch.utils.data import DataLoader

    images = [(torch.randint(0, 256, (3, 10 + i, 12), dtype=torch.uint8, generator=gen(i)), i % 3) for i in range(8)]

    def as_list(items):
        return [x for x, _ in items], torch.tensor([y for _, y in items])

    def make(**phases):
        return ed.enlighten(DataLoader(images, batch_size=4, collate_fn=as_list),
                            ed.Schedule(1, **phases), num_classes=3)

    only_during = make(during=ed.Phase(mixup_alpha=0.8, augment=GpuAugment(8)), after=ed.Phase(mixup_alpha=0.8))
    with pytest.raises(TypeError, match=r"input should be a Tensor, or a list of images with an augmentation in every "
                                        r"phase .* its 'after' phase has no augment \(nor has enlighten\(\)\), got a "
                                        r"list of 4 images"):
        next(iter(only_during))  # epoch 0 augments; without the check, epoch 1 would fail
    both = make(during=ed.Phase(mixup_alpha=0.8, augment=GpuAugment(8)),
                after=ed.Phase(mixup_alpha=0.8, augment=GpuAugment(8, flip=0.0)))
    assert [tuple(x.shape) for _ in range(2) for x, _ in both] == [(4, 3, 8, 8)] * 4


def test_a_later_phases_augmentation_checks_the_first_batchs_layout():
    # The period trains without it; a batch it cannot take must fail at the first batch, not when the period ends.
    import kornia.augmentation as K
    from torch.utils.data import DataLoader

    import enlight_data as ed

    hwc = [(torch.randint(0, 256, (10, 12, 3), dtype=torch.uint8, generator=gen(i)), i % 3) for i in range(8)]
    channels_last = r"x should be channels-first, \(B, C, H, W\), got x.shape=\(4, 10, 12, 3\)"
    for during, after, augment in [(ed.Phase(), ed.Phase(augment=GpuAugment(8)), None),
                                   (ed.Phase(augment=lambda x: x), ed.Phase(), GpuAugment(8)),
                                   (ed.Phase(), ed.Phase(augment=K.RandomHorizontalFlip()), None)]:
        schedule = ed.Schedule(2, during=during, after=after)
        loader = ed.enlighten(DataLoader(hwc, batch_size=4), schedule, augment=augment)
        with pytest.raises(ValueError, match=channels_last):
            next(iter(loader))
    images = [(torch.randint(0, 256, (3, 10 + i, 12), dtype=torch.uint8, generator=gen(i)), i % 3) for i in range(8)]
    as_list = lambda items: ([x for x, _ in items], torch.tensor([y for _, y in items]))  # noqa: E731
    kornia_later = ed.enlighten(DataLoader(images, batch_size=4, collate_fn=as_list),
                                ed.Schedule(1, after=ed.Phase(augment=K.RandomResizedCrop((8, 8)))),
                                augment=GpuAugment(8))
    with pytest.raises(TypeError, match=r"a Kornia augmentation needs a \(B, C, H, W\) tensor, got x=list"):
        next(iter(kornia_later))
    fine = ed.enlighten(DataLoader(images, batch_size=4, collate_fn=as_list),
                        ed.Schedule(1, after=ed.Phase(augment=GpuAugment(8, flip=0.0))), augment=GpuAugment(8))
    assert [tuple(x.shape) for _ in range(2) for x, _ in fine] == [(4, 3, 8, 8)] * 4


def test_a_phase_scale_change_of_uint8_input_is_warned_at_the_first_batch():
    # GpuAugment and Kornia read uint8 as 0-255 and give [0, 1]; a phase without augmentation keeps 0-255 (mixing
    # too): the model's input would jump by 255x when the period ends. Warned once, at the first batch.
    import warnings

    import enlight_data as ed

    def run(during, after, *, floats=False, augment=None):
        loader = _uint8_loader(16, batch=8)
        if floats:
            x, y = loader.dataset.tensors
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x / 255.0, y), batch_size=8)
        wrapped = ed.enlighten(loader, ed.Schedule(1, during=during, after=after), num_classes=4, augment=augment)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = next(iter(wrapped))[0]
            at_first = len(caught)
            later = [x for _ in range(2) for x, _ in wrapped]  # both epochs, both phases
        said = [str(w.message) for w in caught if "changes scale" in str(w.message)]
        assert all("changes scale" not in str(w.message) for w in caught[at_first:])  # once, at the first batch
        return said, first, later

    said, first, later = run(ed.Phase(augment=GpuAugment(16)), ed.Phase(mixup_alpha=1.0))
    assert said == [
        "the input changes scale when the period ends: the 'during' phase's augmentation (GpuAugment) gives floats in "
        "[0, 1] (or normalised) from this uint8 input, and the 'after' phase has none, so there the input keeps "
        "its 0-255 scale (mixing keeps it too); give both phases an augmentation (e.g. Phase(augment=...)), or make "
        "the input float in [0, 1] in the dataset"
    ]
    assert first.max() <= 1.0 and later[-1].max() > 1.0  # what it warns about
    # A plain callable's output scale is unknown: nothing is said of it.
    assert run(ed.Phase(augment=lambda x: x), ed.Phase(), augment=kornia_pipeline())[0] == []
    # The period without augmentation, a Kornia module after it: warned from the first batch, epochs before.
    said, _, _ = run(ed.Phase(), ed.Phase(augment=kornia_pipeline()))
    assert len(said) == 1 and "the 'after' phase's augmentation (AugmentationSequential)" in said[0]
    assert "the 'during' phase has none" in said[0]
    # One scale throughout: float input in [0, 1], or an augmentation in both phases.
    assert run(ed.Phase(augment=GpuAugment(16)), ed.Phase(mixup_alpha=1.0), floats=True)[0] == []
    assert run(ed.Phase(), ed.Phase(mixup_alpha=1.0), augment=GpuAugment(16))[0] == []
    assert run(ed.Phase(augment=GpuAugment(16)), ed.Phase(augment=kornia_pipeline()))[0] == []


def test_augmented_batches_resume_mid_epoch_exactly():
    import enlight_data as ed

    def make():
        schedule = ed.Schedule(1, during=ed.Phase(augment_strength=0.5), after=ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0))
        return ed.enlighten(_uint8_loader(), schedule, num_classes=4, seed=3, augment=GpuAugment(16, **JITTER))

    whole = make()
    list(whole)  # epoch 0
    it = iter(whole)
    head = [next(it) for _ in range(2)]
    state = whole.state_dict()
    rest = list(it)
    resumed = make()
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(head) + len(again) == 6 and len(again) == len(rest)
    for (x, y), (x2, y2) in zip(rest, again):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_augment_strength_needs_an_augmentation_that_scales():
    import enlight_data as ed

    def noisy(x):
        return x.float() + torch.rand(x.shape)

    cases = [
        (noisy, ed.Phase(augment_strength=0.0), "augment of type function"),
        (None, ed.Phase(augment_strength=0.5), "augment=None"),
    ]
    for augment, during, what in cases:
        with pytest.raises(ValueError, match=rf"augment_strength scales a GpuAugment only, got "
                                             rf"augment_strength={during.augment_strength} in the during phase with "
                                             rf"{what}; swap the augmentation per phase with Phase\(augment=...\)"):
            ed.enlighten(_uint8_loader(), ed.Schedule(1, during=during, after=ed.Phase()), augment=augment)
    # A phase's own GpuAugment scales, whatever the loader-wide augmentation.
    ed.enlighten(_uint8_loader(), ed.Schedule(1, during=ed.Phase(augment=GpuAugment(16), augment_strength=0.5), after=ed.Phase()),
                 augment=noisy)


def test_a_plain_callable_augmentation_draws_from_the_loaders_seeds():
    # torchvision v2 transforms and other callables draw from torch's global RNG: the loader runs them under a seed
    # of its own per batch (as Kornia modules), so the global state is left alone and a resume gives the same draws.
    import enlight_data as ed

    def noisy(x):
        return x.float() + torch.rand(x.shape)

    def make():
        return ed.enlighten(_uint8_loader(), ed.mixup_pause(1, alpha=0.2), num_classes=4, seed=5, augment=noisy)

    torch.manual_seed(0)
    before = torch.get_rng_state()
    whole = make()
    first = [x for x, _ in whole]
    assert torch.equal(torch.get_rng_state(), before)
    it = iter(whole)
    head = [next(it) for _ in range(2)]
    state = whole.state_dict()
    rest = [x for x, _ in it]
    torch.manual_seed(123)  # another global state: the same batches
    resumed = make()
    assert all(torch.equal(a, b) for a, b in zip(first, [x for x, _ in make()]))
    resumed.load_state_dict(state)
    again = [x for x, _ in resumed]
    assert len(head) + len(again) == 6 and all(torch.equal(a, b) for a, b in zip(rest, again))


def test_gpu_augment_of_an_empty_batch_is_an_empty_batch():
    aug = GpuAugment(6, **JITTER)
    for x in (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), torch.zeros(0, 3, 8, 8)):
        out = aug(x, generator=gen())
        assert out.shape == (0, 3, 6, 6) and out.dtype == torch.float32


def test_a_callable_augmentation_of_a_batch_that_is_not_a_tensor():
    seen = []

    def keep(batch):
        seen.append(batch)
        return batch

    for batch in ({"image": torch.zeros(2, 3, 4, 4)}, ["a", "b"], []):
        assert apply_augment(keep, batch, generator=gen()) is batch
    assert len(seen) == 3


def test_numpy_scalars_are_accepted_as_the_rest_of_the_api_does():
    import numpy as np

    aug = GpuAugment(np.int64(8), seed=np.int64(3), channels_last=np.bool_(True))
    assert aug.size == (8, 8) and aug.seed == 3 and aug.channels_last is True and type(aug.seed) is int
    assert aug(images(2), generator=gen()).shape == (2, 3, 8, 8)


def test_a_call_under_inference_mode_leaves_the_augmenter_usable_outside_it():
    aug = GpuAugment(8, **JITTER, mean=MEAN, std=STD)
    for x in (images(4), images(4).float() / 255):
        with torch.inference_mode():
            preview = aug(x, generator=gen())
        assert preview.is_inference()
        out = aug(x, generator=gen())  # the scratch buffers made in inference mode were normal tensors
        assert not out.is_inference()
        torch.testing.assert_close(out, preview)


def test_kornia_auto_augment_policies_get_float_input():
    from kornia.augmentation import auto

    x = images(4, h=16, w=16)
    for policy in (auto.RandAugment(n=2, m=5), auto.TrivialAugment(), auto.AutoAugment()):
        out = apply_augment(policy, x, generator=gen())
        assert out.dtype == torch.float32 and 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_augment_params_check_types_shapes_and_devices():
    p = GpuAugment(8, **JITTER).draw(4, 10, 10, generator=gen())
    with pytest.raises(TypeError, match="boxes should be a Tensor, got boxes of type NoneType"):
        dataclasses.replace(p, boxes=None)
    with pytest.raises(TypeError, match="flip should be a bool tensor, got flip of dtype torch.float32"):
        dataclasses.replace(p, flip=p.flip.float())
    with pytest.raises(TypeError, match="hue should be a floating-point tensor, got hue of dtype torch.bool"):
        dataclasses.replace(p, hue=p.flip)
    with pytest.raises(ValueError, match=r"hue should have shape \(4,\) and boxes' device cpu, got hue of shape \(3,\)"):
        dataclasses.replace(p, hue=p.hue[:3])
    with pytest.raises(ValueError, match=r"boxes should have shape \(4, 4\)"):
        dataclasses.replace(p, boxes=p.boxes[:, :3])


def test_draw_and_empty_batches_check_their_arguments():
    aug = GpuAugment(8)
    with pytest.raises(ValueError, match="device should name a torch device such as 'cuda:0', got device='xyz'"):
        aug.draw(2, 8, 8, generator=gen(), device="xyz")
    with pytest.raises(TypeError, match="generator should be a torch.Generator, got generator='g'"):
        aug(images(0), generator="g")


@pytest.mark.parametrize("applier", [dict(brightness=0.3), dict(), dict(hue=0.2)])
def test_drawn_parameters_are_applied_as_drawn_by_any_augmenter(applier):
    # Replaying parameters with an augmenter of other magnitudes applies every drawn factor: the contrast offset,
    # the hue rotation and the jitter as a whole are chosen from the parameters, not from the applying augmenter.
    x = images(6, h=20, w=20)
    drawer = GpuAugment(12, brightness=0.2, contrast=0.6, saturation=0.5, hue=0.3, jitter_prob=1.0, mean=MEAN, std=STD)
    p = drawer.draw(6, 20, 20, generator=gen(5))
    assert p.colour_ops == ("brightness", "contrast", "saturation", "hue")
    expected = drawer.apply(x, p)
    got = GpuAugment(12, **applier, mean=MEAN, std=STD).apply(x, p)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_colour_ops_follow_the_drawing_augmenter_and_strength():
    assert GpuAugment(8, contrast=0.4).draw(2, 9, 9, generator=gen()).colour_ops == ("contrast",)
    assert GpuAugment(8, hue=0.1, saturation=0.2).draw(2, 9, 9, generator=gen()).colour_ops == ("saturation", "hue")
    assert GpuAugment(8, **JITTER, jitter_prob=0.0).draw(2, 9, 9, generator=gen()).colour_ops == ()
    assert GpuAugment(8, **JITTER).draw(2, 9, 9, generator=gen(), strength=0.0).colour_ops == ()
    assert GpuAugment(8).draw(2, 9, 9, generator=gen()).colour_ops == ()


def test_hand_built_parameters_apply_every_factor_and_check_colour_ops():
    x = images(2, h=10, w=10).float() / 255
    p = params(2, 10, 10, contrast=torch.tensor([0.5, 1.0]))
    assert p.colour_ops is None
    got = GpuAugment((10, 10)).apply(x, p)  # an augmenter without jitter still applies the given contrast
    torch.testing.assert_close(got[0], TF.adjust_contrast(x[0], 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], x[1], atol=1e-6, rtol=0)
    # Other channel counts have no colour jitter: hand-built parameters apply there as before (crop and flip).
    x4 = images(2, c=4, h=10, w=10)
    four = GpuAugment((10, 10)).apply(x4, params(2, 10, 10))
    torch.testing.assert_close(four, x4.float() / 255)
    with pytest.raises(ValueError, match=r"colour jitter needs 1 or 3 channels.*colour_ops=\('hue',\)"):
        GpuAugment((10, 10)).apply(x4, params(2, 10, 10, colour_ops={"hue"}))
    assert params(2, 10, 10, colour_ops=["hue", "brightness"]).colour_ops == ("brightness", "hue")
    with pytest.raises(ValueError, match=r"colour_ops should name operations among .*got colour_ops=\['gamma'\]"):
        params(2, 10, 10, colour_ops={"gamma"})
    with pytest.raises(TypeError, match="colour_ops should be None or a collection of strings"):
        params(2, 10, 10, colour_ops="hue")


def test_parameters_load_with_weights_only(tmp_path):
    p = GpuAugment(8, **JITTER).draw(3, 12, 12, generator=gen(2))
    torch.save(p, tmp_path / "p.pt")
    with torch.serialization.safe_globals([AugmentParams]):
        back = torch.load(tmp_path / "p.pt", weights_only=True)
    assert back.colour_ops == p.colour_ops and torch.equal(back.boxes, p.boxes)


def test_parameters_refuse_an_index_out_of_range_or_of_another_kind():
    p = GpuAugment(8).draw(4, 12, 12, generator=gen(2))
    assert torch.equal(p[torch.tensor(1)].boxes, p[1].boxes) and torch.equal(p[-4].boxes, p[0].boxes)
    for bad in (4, -5, 100):
        with pytest.raises(IndexError, match=rf"index {bad} is out of range for parameters of 4 samples"):
            p[bad]
    for bad in (True, None, (0, 1)):
        with pytest.raises(TypeError, match="index should be an int, a slice or a 1-D tensor"):
            p[bad]
    for bad in (torch.tensor(True), torch.tensor(1.0), torch.zeros(2, 2, dtype=torch.long), torch.tensor([0.0])):
        with pytest.raises(TypeError, match=r"index should be an integer tensor \(0-dim or 1-D\) or a 1-D bool mask"):
            p[bad]
    q = GpuAugment(8).draw(4, 12, 12, generator=gen(2))
    assert p != q and p == p and len({p, q}) == 2  # by identity: tensors have no truth value


def test_parameters_index_like_the_batch():
    aug = GpuAugment(8, **JITTER)
    x = images(5)
    p = aug.draw(5, 32, 40, generator=gen(3))
    for index in (2, -1, slice(1, 4), torch.tensor([4, 0]), torch.tensor([True, False, True, False, False])):
        sub = p[index]
        assert sub.colour_ops == p.colour_ops
        picked = torch.arange(5)[index].reshape(-1)
        torch.testing.assert_close(aug.apply(x[picked], sub), aug.apply(x, p)[picked], atol=1e-5, rtol=0)


def test_draw_takes_numpy_integer_sizes():
    import numpy as np

    aug = GpuAugment(8)
    got = aug.draw(np.int64(3), np.int64(20), np.int32(30), generator=gen(1))
    want = aug.draw(3, 20, 30, generator=gen(1))
    torch.testing.assert_close(got.boxes, want.boxes)


def test_float64_input_keeps_the_float64_path_where_the_fused_kernel_would_run(monkeypatch):
    # The fused resampling kernel computes in float32; float64 input is resampled by grid_sample in float64.
    monkeypatch.setattr(augment_module._fused, "kernel", lambda name: object())
    cuda = torch.device("cuda")
    assert augment_module._resample_backend(cuda, torch.float32) == "triton"
    assert augment_module._resample_backend(cuda, torch.uint8) == "triton"
    assert augment_module._resample_backend(cuda, torch.float64) == "grid"


@pytest.mark.parametrize("as_list", [False, True])
def test_gpu_augment_refuses_input_that_requires_grad(as_list):
    # Not differentiable: the CUDA kernels would drop the gradient silently, the CPU jitter path fails on out= ops;
    # both devices refuse alike. Under no_grad it augments.
    aug = GpuAugment(8, **JITTER, mean=MEAN, std=STD)
    x = torch.rand(3, 3, 12, 10, requires_grad=True)
    arg = list(x.unbind(0)) if as_list else x
    with pytest.raises(ValueError, match=r"x should not require grad: GpuAugment is not differentiable"):
        aug(arg, generator=torch.Generator().manual_seed(0))
    params = aug.draw(3, 12, 10, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="x should not require grad"):
        aug.apply(arg, params)
    with torch.no_grad():
        out = aug(arg, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, aug(x.detach(), generator=torch.Generator().manual_seed(0)))


def test_a_list_that_is_not_of_tensors_names_what_it_holds():
    # A list of decoded numpy arrays (or PIL images) is refused naming the element, not only "list".
    aug = GpuAugment(8)
    image = images(1, h=8, w=8)[0]
    with pytest.raises(TypeError, match=r"non-empty list of \(C, H, W\) tensors, got x\[1\] of type ndarray"):
        aug([image, image.numpy()], generator=gen())
    with pytest.raises(ValueError, match=r"non-empty list of \(C, H, W\) tensors, got an empty list"):
        aug([], generator=gen())
    with pytest.raises(TypeError, match=r"non-empty list of \(C, H, W\) tensors, got x of type ndarray"):
        aug(image.numpy(), generator=gen())


@pytest.mark.parametrize("as_list", [False, True])
def test_a_call_under_autocast_computes_as_outside_it(as_list):
    # out_dtype says what comes out: an ambient autocast must not run the colour map's matmuls in bfloat16 (errors of
    # a few 0-255 levels in a float32 output), as it would for a model.
    aug = GpuAugment(8, **JITTER, jitter_prob=1.0, mean=MEAN, std=STD)
    x = images(4, h=16, w=20)
    arg = list(x.unbind(0)) if as_list else x
    want = aug(arg, generator=gen(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = aug(arg, generator=gen(3))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_channels_last_images_are_refused_naming_the_permute():
    # Stacked PIL/numpy images are (B, H, W, C): taken as H channels, they would be cropped along the wrong axes
    # with no other error (no jitter, no mean/std to disagree with).
    aug = GpuAugment(8)
    hwc = images(2, h=16, w=12).permute(0, 2, 3, 1)
    with pytest.raises(ValueError, match=r"channels-first.*x.shape=\(2, 16, 12, 3\).*x.permute\(0, 3, 1, 2\)"):
        aug(hwc, generator=gen())
    with pytest.raises(ValueError, match=r"x\[0\] should be channels-first, \(C, H, W\), got x\[0\].shape=\(16, 12, 3\).*"
                                         r"x\[0\].permute\(2, 0, 1\)"):
        aug(list(hwc), generator=gen())
    with pytest.raises(ValueError, match=r"x\[0\].shape=\(16, 12, 3\)"):  # not "the same C" of images apart
        aug([hwc[0], hwc[1, :10]], generator=gen())
    assert aug(hwc.permute(0, 3, 1, 2), generator=gen()).shape == (2, 3, 8, 8)
    assert aug(images(2, c=4, h=16, w=3), generator=gen()).shape == (2, 4, 8, 8)  # C <= 4: channels-first as given
    import kornia.augmentation as K

    crop = K.RandomResizedCrop((8, 8))
    with pytest.raises(ValueError, match=r"x.shape=\(2, 16, 12, 3\).*x.permute\(0, 3, 1, 2\)"):
        apply_augment(crop, hwc, generator=gen())
    assert apply_augment(crop, hwc.permute(0, 3, 1, 2), generator=gen()).shape == (2, 3, 8, 8)


def test_mean_and_std_may_be_tensors_or_numpy_arrays():
    import numpy as np

    x = images(2, h=16, w=16)
    ref = GpuAugment(8, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    for kind in (torch.tensor, np.array):  # float32 and float64: the values as held, as Python floats
        aug = GpuAugment(8, mean=kind([0.485, 0.456, 0.406]), std=kind([0.229, 0.224, 0.225]))
        assert aug.mean == pytest.approx(ref.mean) and aug.std == pytest.approx(ref.std)
        assert all(type(v) is float for v in aug.mean + aug.std)
        torch.testing.assert_close(aug(x, generator=gen()), ref(x, generator=gen()))
    with pytest.raises(ValueError, match=r"mean should be 1-D, one value per channel, got mean of shape \(1, 3\)"):
        GpuAugment(8, mean=torch.zeros(1, 3), std=(1.0,))
    with pytest.raises(ValueError, match="std should hold finite numbers"):
        GpuAugment(8, mean=(0.5,), std=np.array([np.inf]))


def test_an_empty_batch_checks_mean_against_its_channels_as_a_full_one_does():
    aug = GpuAugment(8, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    for n in (0, 2):
        with pytest.raises(ValueError, match="mean and std should have 1 or C=2 values, got len\\(mean\\)=3"):
            aug(images(n, c=2, h=16, w=16), generator=gen())


def test_strength_scales_every_jitter_range_symmetrically():
    aug = GpuAugment(8, brightness=0.8, contrast=0.6, saturation=0.4, hue=0.2, jitter_prob=1.0)
    p = aug.draw(4000, 16, 16, generator=torch.Generator().manual_seed(5), strength=0.5)
    on = p.jitter
    for values, lo, hi in ((p.brightness, 0.6, 1.4), (p.contrast, 0.7, 1.3), (p.saturation, 0.8, 1.2),
                           (p.hue, -0.1, 0.1)):
        v = values[on]
        assert v.min() >= lo - 1e-6 and v.max() <= hi + 1e-6
        assert v.min() < lo + 0.01 and v.max() > hi - 0.01
    assert abs(p.hue[on].mean().item()) < 0.005  # uniform on [-0.1, 0.1]: centred on 0
