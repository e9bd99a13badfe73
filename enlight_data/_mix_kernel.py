"""Mixup and CutMix in fused Triton kernels, for batches on CUDA.

As PyTorch ops, per-sample mixing is two ``lerp`` (or ``where``) kernels over the batch, two more over the soft
targets, two to make the soft targets, and the kernels that turn the draws into λ (and, for CutMix, into boxes). On a
GPU each op costs several microseconds of host time: an H200 ran Mixup at about half of a bare ``lerp``'s speed and
CutMix at a third, bound by those launches (NOTE [ Few kernels per CutMix draw ] in ``mixing.py``). Here:

- :func:`mix_params` turns a batch's raw draws (Gamma pairs, coins, box centres) into λ, the Mixup weights or the
  CutMix boxes, the mixed flags and, from class indices, the mixed soft targets, in one launch;
- :func:`blend` mixes every sample ``i`` with sample ``(i + shift) % B`` in one launch: ``lerp`` with a per-sample
  weight, or a copy of the partner's pixels inside a per-sample box (CutMix), which needs no mask in memory and reads
  each pixel from one of the two samples only. It reads any float or uint8 input and writes ``out``'s dtype, so an
  integer batch needs no separate conversion;
- :func:`mix` is the two in one launch: each program makes its sample's parameters from the raw draws, blends a tile
  of the sample, and the programs of a sample's first channel write λ, the weight or box, the mixed flag and the soft
  targets (NOTE [ One launch per mix ] in ``mixing.py``). ``mix_batch`` and the loader use it for class indices;
  ``draw_mix`` (parameters only) and soft-row targets use the other two.

All compute what ``mixing.py``'s PyTorch ops compute, in float32 (``torch.lerp``'s two-sided formula included, but a
weight of 0 copies the sample without reading its partner: NOTE [ Exact unmixed samples ]); the boxes are the same, λ
and lerped values equal up to float rounding. Imported only when a CUDA batch needs it;
``mixing.py`` falls back to the PyTorch ops where Triton is missing or fails to compile.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._fused import Unsupported, cdiv, next_power_of_2, smoothing_values

__all__ = ["blend", "mix", "mix_params"]

BOX_BLOCK = 128  # samples per program of `mix_params` without soft targets
LABEL_ROWS = 8  # samples per program of `mix_params` with soft targets
LABEL_BLOCK = 256  # classes per program of `mix_params`
MAX_TILE = 2048  # elements per program of `blend`
MAX_BLOCKS = 65535  # CUDA's limit on the grid's second dimension
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)  # what the blends read and write as floats


@triton.jit
def _sample_params(
    draw_ptr, coin_ptr, pixel_ptr, k, valid, prob, fwidth, fheight, iwidth, inv_area,
    GAMMA: tl.constexpr, COIN: tl.constexpr, CUT: tl.constexpr,
):
    """λ, the partner's share and the box of the samples whose draws sit at ``k`` (a block of samples, or one)."""
    if GAMMA:  # share = G1 / (G1 + G2), two positive Gamma(α) draws
        g1 = tl.load(draw_ptr + 2 * k, mask=valid, other=1.0)
        g2 = tl.load(draw_ptr + 2 * k + 1, mask=valid, other=1.0)
        share = tl.div_rn(g1, g1 + g2)
    else:
        share = tl.load(draw_ptr + k, mask=valid, other=0.0)
    if COIN:
        on = tl.load(coin_ptr + k, mask=valid, other=0.0) < prob
    x1 = share  # no box (Mixup): unused
    y1 = share
    x2 = share
    y2 = share
    if CUT:  # a box of side sqrt(share) times the image's, centred on the drawn pixel, clipped to the image
        pixel = tl.load(pixel_ptr + k, mask=valid, other=0)
        cx = (pixel % iwidth).to(tl.float32)
        cy = (pixel // iwidth).to(tl.float32)
        ratio = tl.sqrt_rn(share)
        hx = tl.floor(ratio * (fwidth * 0.5))
        hy = tl.floor(ratio * (fheight * 0.5))
        x1 = tl.maximum(cx - hx, 0.0)
        y1 = tl.maximum(cy - hy, 0.0)
        x2 = tl.minimum(cx + hx, fwidth)
        y2 = tl.minimum(cy + hy, fheight)
        if COIN:  # an empty box where the sample's coin said no
            x2 = tl.where(on, x2, x1)
            y2 = tl.where(on, y2, y1)
        lam = 1.0 - (x2 - x1) * (y2 - y1) * inv_area
    else:
        if COIN:
            share = tl.where(on, share, 0.0)
        lam = 1.0 - share
        share = tl.where(lam < 1.0, share, 0.0)  # λ = 1: no partner weight (NOTE [ Exact unmixed samples ])
    return lam, share, x1, y1, x2, y2


@triton.jit
def _store_params(lam_ptr, mixed_ptr, second_ptr, i, lam, share, x1, y1, x2, y2, first, CUT: tl.constexpr):
    """Write samples ``i``'s λ, mixed flag and box (CutMix) or partner's weight (Mixup) where ``first``."""
    tl.store(lam_ptr + i, lam, mask=first)
    tl.store(mixed_ptr + i, (lam < 1.0).to(tl.int8), mask=first)
    if CUT:
        tl.store(second_ptr + i * 4, x1, mask=first)
        tl.store(second_ptr + i * 4 + 1, y1, mask=first)
        tl.store(second_ptr + i * 4 + 2, x2, mask=first)
        tl.store(second_ptr + i * 4 + 3, y2, mask=first)
    else:
        tl.store(second_ptr + i, share, mask=first)


@triton.jit
def _soft_row(own_class, partner_class, c, lam, share, classes, off, hot, CUT: tl.constexpr):
    """The mixed soft targets at classes ``c``: what the soft rows' lerp gives; NaN for a class out of range."""
    own = tl.where(c == own_class, hot, off)
    other = tl.where(c == partner_class, hot, off)
    if CUT:  # lerp(partner, own, λ), as the PyTorch path's complement blend
        start, end, t = other, own, lam
    else:  # lerp(own, partner, share)
        start, end, t = own, other, share
    d = end - start
    row = tl.where(tl.abs(t) < 0.5, start + t * d, end - d * (1.0 - t))
    bad = (own_class < 0) | (own_class >= classes) | (partner_class < 0) | (partner_class >= classes)
    return tl.where(bad, float("nan"), row)  # a class out of range: a NaN row (a non-finite loss), not a silent one


@triton.jit
def _mix_params_kernel(
    draw_ptr, coin_ptr, pixel_ptr, y_ptr, lam_ptr, second_ptr, mixed_ptr, soft_ptr,
    batch, shift, per_sample, s_y, prob, fwidth, fheight, iwidth, inv_area, classes, off, hot,
    GAMMA: tl.constexpr, COIN: tl.constexpr, CUT: tl.constexpr, LABELS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    valid = i < batch
    k = i * per_sample  # the draw of sample i: its own, or the batch's one (per_sample = 0)
    lam, share, x1, y1, x2, y2 = _sample_params(draw_ptr, coin_ptr, pixel_ptr, k, valid, prob, fwidth, fheight,
                                                iwidth, inv_area, GAMMA, COIN, CUT)
    first = valid & (tl.program_id(1) == 0)  # the per-sample outputs, written once
    _store_params(lam_ptr, mixed_ptr, second_ptr, i, lam, share, x1, y1, x2, y2, first, CUT)
    if LABELS:  # the mixed soft targets, from the class indices
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
        partner = (i + shift) % batch
        own_class = tl.load(y_ptr + i.to(tl.int64) * s_y, mask=valid, other=0).to(tl.int64)[:, None]
        partner_class = tl.load(y_ptr + partner.to(tl.int64) * s_y, mask=valid, other=0).to(tl.int64)[:, None]
        row = _soft_row(own_class, partner_class, c, lam[:, None], share[:, None], classes, off, hot, CUT)
        dst = soft_ptr + i.to(tl.int64)[:, None] * classes + c
        tl.store(dst, row, mask=valid[:, None] & (c < classes))


def _check_draws(draw: Tensor, coin: Tensor | None, pixel: Tensor | None, target: Tensor | None, b: int) -> None:
    """Raise :class:`Unsupported` for draws (and class indices) the kernels do not read."""
    n = draw.shape[0] if draw.dim() else -1
    if draw.dtype != torch.float32 or not draw.is_contiguous() or draw.shape[1:] not in ((), (2,)) or n not in (1, b):
        raise Unsupported(f"draw should be a contiguous float32 (n,) or (n, 2) tensor, n = 1 or {b}, got {draw.dtype} "
                         f"{tuple(draw.shape)}")
    for name, t in (("coin", coin), ("pixel", pixel)):
        if t is not None and (t.shape != (n,) or not t.is_contiguous()):
            raise Unsupported(f"{name} should be None or a contiguous ({n},) tensor, got {tuple(t.shape)}")
    if coin is not None and coin.dtype != torch.float32:
        raise Unsupported(f"coin should hold float32 uniforms, got {coin.dtype}")
    if pixel is not None and (pixel.is_floating_point() or pixel.dtype == torch.bool):
        raise Unsupported(f"pixel should hold integer indices, got {pixel.dtype}")
    if target is not None and (target.shape != (b,) or target.is_floating_point() or target.dtype == torch.bool):
        raise Unsupported(f"target should be ({b},) integer class indices, got {target.dtype} {tuple(target.shape)}")


def _outputs(
    b: int, cut: bool, target: Tensor | None, num_classes: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The empty ``(lam, weight_or_box, mixed, soft)`` a kernel fills."""
    lam = torch.empty((b,), dtype=torch.float32, device=device)
    second = torch.empty((b, 4) if cut else (b,), dtype=torch.float32, device=device)
    mixed = torch.empty((b,), dtype=torch.bool, device=device)
    soft = None if target is None else torch.empty((b, num_classes), dtype=torch.float32, device=device)
    return lam, second, mixed, soft


def mix_params(
    draw: Tensor,
    *,
    batch_size: int,
    shift: int,
    coin: Tensor | None = None,
    prob: float = 1.0,
    pixel: Tensor | None = None,
    size: tuple[int, int] = (1, 1),
    target: Tensor | None = None,
    num_classes: int = 0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Turn a batch's raw draws into Mixup or CutMix parameters, and the mixed soft targets, in one kernel.

    Args:
        draw: The Beta(α, α) draws: ``(n, 2)`` float32 positive Gamma(α) pairs (``share = G1 / (G1 + G2)``), or
            ``(n,)`` float32 shares. ``n`` is ``batch_size`` (per sample) or 1 (one draw for the batch).
        batch_size: B.
        shift: Sample ``i``'s partner is ``(i + shift) % B``; ``0 <= shift < B``.
        coin: ``(n,)`` float32 uniforms, or None: sample ``i`` is mixed where ``coin < prob``.
        prob: The mixing probability the coin is held against.
        pixel: ``(n,)`` integer box centres as flat pixel indices ``y * W + x`` (CutMix), or None (Mixup).
        size: The image's ``(H, W)`` (CutMix).
        target: ``(B,)`` integer class indices (any stride), or None: no soft targets.
        num_classes: The soft targets' width, with ``target``.
        label_smoothing: Folded into the soft targets as ``(off, hot)`` of :func:`~enlight_data._fused.smoothing_values`.

    Returns:
        ``(lam, weight_or_box, mixed, soft)``: λ ``(B,)`` float32; the partner's weight ``(B,)`` (Mixup) or the boxes
        ``(B, 4)`` ``(x1, y1, x2, y2)`` (CutMix); ``mixed = lam < 1`` ``(B,)`` bool; the mixed soft targets
        ``(B, num_classes)`` float32 (NaN rows where a class is out of range), or None without ``target``.
    """
    b = int(batch_size)
    _check_draws(draw, coin, pixel, target, b)
    height, width = (int(s) for s in size)
    lam, second, mixed, soft = _outputs(b, pixel is not None, target, num_classes, draw.device)
    if b == 0:
        return lam, second, mixed, soft
    off, hot = smoothing_values(label_smoothing, num_classes) if target is not None else (0.0, 1.0)
    block_n = LABEL_ROWS if soft is not None else BOX_BLOCK
    tiles = cdiv(num_classes, LABEL_BLOCK) if soft is not None else 1
    if tiles > MAX_BLOCKS:
        raise Unsupported(f"mix_params handles at most {MAX_BLOCKS * LABEL_BLOCK} classes, got {num_classes}")
    with torch.cuda.device(draw.device) if draw.is_cuda else contextlib.nullcontext():
        _mix_params_kernel[(cdiv(b, block_n), tiles)](
            draw, draw if coin is None else coin, draw if pixel is None else pixel, draw if target is None else target,
            lam, second, mixed.view(torch.int8), lam if soft is None else soft,
            b, shift % b, int(draw.shape[0] == b), 1 if target is None else target.stride(0), float(prob),
            float(width), float(height), width, 1.0 / (height * width), num_classes, off, hot,
            GAMMA=draw.dim() == 2, COIN=coin is not None, CUT=pixel is not None, LABELS=soft is not None,
            BLOCK_N=block_n, BLOCK_C=LABEL_BLOCK,
        )
    return lam, second, mixed, soft


@triton.jit
def _blend_tile(
    x_ptr, out_ptr, i, c, p, h, w, height, width, sxn, sxc, sxh, sxw, son, soc, soh, sow, t, x1, y1, x2, y2,
    HAS_BOX: tl.constexpr,
):
    """Write the tile ``(h, w)`` of channel ``c`` of ``out[i]``: ``x[i]`` blended with its partner ``x[p]``."""
    mask = (h < height) & (w < width)
    pixel = c.to(tl.int64) * sxc + h.to(tl.int64) * sxh + w.to(tl.int64) * sxw
    own = x_ptr + i.to(tl.int64) * sxn + pixel
    partner = x_ptr + p.to(tl.int64) * sxn + pixel
    if HAS_BOX:  # CutMix: the partner's pixels inside the box, read from one sample only
        inside = (w >= x1) & (w < x2) & (h >= y1) & (h < y2)
        a = tl.load(own, mask=mask & ~inside, other=0).to(tl.float32)
        z = tl.load(partner, mask=mask & inside, other=0).to(tl.float32)
        y = tl.where(inside, z, a)
    else:  # Mixup: torch.lerp's formula; a weight of 0 copies the sample (NOTE [ Exact unmixed samples ])
        a = tl.load(own, mask=mask, other=0).to(tl.float32)
        z = tl.load(partner, mask=tl.where(t != 0.0, mask, False), other=0).to(tl.float32)
        d = z - a
        y = tl.where(tl.abs(t) < 0.5, a + t * d, z - d * (1.0 - t))
        y = tl.where(t == 0.0, a, y)
    dst = out_ptr + i.to(tl.int64) * son + c.to(tl.int64) * soc + h.to(tl.int64) * soh + w.to(tl.int64) * sow
    tl.store(dst, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _tile_of(batch, shift, channels, width, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's sample, channel, partner and tile rows and columns (grid: ``(B * C, tiles)``)."""
    row = tl.program_id(0)  # sample * channels + channel
    i = row // channels
    tiles_w = tl.cdiv(width, BLOCK_W)
    h = (tl.program_id(1) // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    w = (tl.program_id(1) % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    return i, row % channels, (i + shift) % batch, h, w


@triton.jit
def _blend_kernel(
    x_ptr, out_ptr, weight_ptr, box_ptr, batch, shift, channels, height, width,
    sxn, sxc, sxh, sxw, son, soc, soh, sow, swn, sbn,
    HAS_BOX: tl.constexpr, COMPLEMENT: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    i, c, p, h, w = _tile_of(batch, shift, channels, width, BLOCK_H, BLOCK_W)
    t = 0.0  # the box or the weight, whichever this blend has
    x1 = 0
    y1 = 0
    x2 = 0
    y2 = 0
    if HAS_BOX:
        b = box_ptr + i.to(tl.int64) * sbn
        x1 = tl.load(b).to(tl.int32)
        y1 = tl.load(b + 1).to(tl.int32)
        x2 = tl.load(b + 2).to(tl.int32)
        y2 = tl.load(b + 3).to(tl.int32)
    else:
        t = tl.load(weight_ptr + i.to(tl.int64) * swn).to(tl.float32)
        if COMPLEMENT:
            t = 1.0 - t
    _blend_tile(x_ptr, out_ptr, i, c, p, h, w, height, width, sxn, sxc, sxh, sxw, son, soc, soh, sow,
                t, x1, y1, x2, y2, HAS_BOX)


@triton.jit
def _mix_kernel(
    x_ptr, out_ptr, draw_ptr, coin_ptr, pixel_ptr, y_ptr, lam_ptr, second_ptr, mixed_ptr, soft_ptr,
    batch, shift, channels, height, width, sxn, sxc, sxh, sxw, son, soc, soh, sow,
    per_sample, s_y, prob, fwidth, fheight, inv_area, classes, off, hot,
    GAMMA: tl.constexpr, COIN: tl.constexpr, CUT: tl.constexpr, LABELS: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    i, c, p, h, w = _tile_of(batch, shift, channels, width, BLOCK_H, BLOCK_W)
    # Each program makes its sample's parameters from the raw draws (a few scalar ops), so the draw, the blend and
    # the labels are one launch (NOTE [ One launch per mix ]).
    lam, share, x1, y1, x2, y2 = _sample_params(draw_ptr, coin_ptr, pixel_ptr, i * per_sample, i < batch, prob,
                                                fwidth, fheight, width, inv_area, GAMMA, COIN, CUT)
    _blend_tile(x_ptr, out_ptr, i, c, p, h, w, height, width, sxn, sxc, sxh, sxw, son, soc, soh, sow,
                share, x1.to(tl.int32), y1.to(tl.int32), x2.to(tl.int32), y2.to(tl.int32), CUT)
    tile = tl.program_id(1)
    first = (c == 0) & (tile == 0)  # the per-sample outputs, written once
    _store_params(lam_ptr, mixed_ptr, second_ptr, i, lam, share, x1, y1, x2, y2, first, CUT)
    if LABELS:
        if c == 0:  # the soft row, its blocks of classes shared among the sample's channel-0 programs
            own_class = tl.load(y_ptr + i.to(tl.int64) * s_y).to(tl.int64)
            partner_class = tl.load(y_ptr + p.to(tl.int64) * s_y).to(tl.int64)
            for block in range(tile, tl.cdiv(classes, BLOCK_C), tl.num_programs(1)):
                k = block * BLOCK_C + tl.arange(0, BLOCK_C)
                row = _soft_row(own_class, partner_class, k, lam, share, classes, off, hot, CUT)
                tl.store(soft_ptr + i.to(tl.int64) * classes + k, row, mask=k < classes)


def _as_image(t: Tensor) -> Tensor:
    """``t`` as ``(B, C, H, W)``: images as they are, any other ``(B, ...)`` contiguous tensor as ``(B, 1, 1, F)``."""
    if t.dim() == 4:
        return t
    if not t.is_contiguous():
        raise Unsupported(f"blend needs a (B, C, H, W) or contiguous tensor, got shape {tuple(t.shape)} and strides "
                         f"{t.stride()}")
    return t.reshape(t.shape[0], 1, 1, -1)


def _tiling(x: Tensor, out: Tensor) -> tuple[Tensor, Tensor, int, int]:
    """``x`` and ``out`` as images, and the blend's tile ``(BLOCK_H, BLOCK_W)``; :class:`Unsupported` for what the
    blend kernels cannot write (a grid too large, ``out`` not a float tensor of ``x``'s shape)."""
    if out.shape != x.shape or out.dtype not in _FLOATS:
        raise Unsupported(f"out should be a float32, float16 or bfloat16 tensor of x's shape {tuple(x.shape)}, got "
                         f"{out.dtype} {tuple(out.shape)}")
    if x.is_complex() or (x.is_floating_point() and x.dtype not in _FLOATS):
        # The kernels compute in float32: float64 would lose precision (the PyTorch ops keep it), complex its
        # imaginary part, and float8 does not load.
        raise Unsupported(f"x should be an integer, float32, float16 or bfloat16 tensor, got {x.dtype}")
    xi, oi = _as_image(x), _as_image(out)
    h, w = xi.shape[-2:]
    block_w = min(next_power_of_2(max(w, 1)), MAX_TILE)  # an empty image: a tile of one, no program
    block_h = min(next_power_of_2(max(h, 1)), max(1, MAX_TILE // block_w))
    tiles = cdiv(h, block_h) * cdiv(w, block_w)
    if tiles > MAX_BLOCKS:
        raise Unsupported(f"blend handles at most {MAX_BLOCKS} tiles of {block_h}x{block_w} per channel, got {tiles}")
    return xi, oi, block_h, block_w


def blend(
    x: Tensor,
    out: Tensor,
    *,
    shift: int,
    weight: Tensor | None = None,
    box: Tensor | None = None,
    complement: bool = False,
) -> Tensor:
    """Mix sample ``i`` of ``x`` with sample ``(i + shift) % B`` into ``out``, in one kernel; returns ``out``.

    Exactly one of ``weight`` and ``box`` is given.

    Args:
        x: ``(B, ...)`` float or uint8 input, any strides for ``(B, C, H, W)``, else contiguous.
        out: Float output of ``x``'s shape, not overlapping ``x``; any strides for ``(B, C, H, W)``.
        shift: The partner offset, ``0 <= shift < B`` (or 0 for an empty batch).
        weight: Per-sample partner weights, any tensor of ``B`` elements along dim 0 (e.g. ``(B, 1, 1, 1)``,
            an expanded ``(1,)`` works): ``out[i] = lerp(x[i], x[partner], weight[i])``, exactly ``x[i]`` where the
            weight is 0.
        box: ``(B, 4)`` float32 integer-valued ``(x1, y1, x2, y2)`` boxes (``B`` rows, stride 0 allowed), for
            ``(B, C, H, W)`` input: ``out[i]`` is the partner's pixels inside, ``x[i]``'s outside.
        complement: Use ``1 - weight`` as the weight (λ given, the partner's share wanted).

    Returns:
        ``out``.
    """
    if (weight is None) == (box is None):
        raise Unsupported("blend needs exactly one of weight and box")
    n = x.shape[0]
    if box is not None and (x.dim() != 4 or box.shape != (n, 4) or box.dtype != torch.float32):
        raise Unsupported(f"box should be a float32 ({n}, 4) tensor for (B, C, H, W) input, got box {box.dtype} "
                         f"{tuple(box.shape)} and x of shape {tuple(x.shape)}")
    if weight is not None and (weight.dim() == 0 or weight.shape[0] != n or weight.shape[1:].numel() != 1):
        raise Unsupported(f"weight should hold one value per sample ({n}), got shape {tuple(weight.shape)}")
    if box is not None and box.stride(-1) != 1:
        box = box.contiguous()  # the kernel reads a box's four values side by side
    xi, oi, block_h, block_w = _tiling(x, out)
    _, c, h, w = xi.shape
    if n == 0 or xi.numel() == 0:
        return out
    ref = box if box is not None else weight
    assert ref is not None  # exactly one of them, checked above
    shift %= n  # Triton's % keeps the sign of a negative shift: the partner index would point before the batch
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _blend_kernel[(n * c, cdiv(h, block_h) * cdiv(w, block_w))](
            xi, oi, ref, ref, n, shift, c, h, w, *xi.stride(), *oi.stride(), ref.stride(0), ref.stride(0),
            HAS_BOX=box is not None, COMPLEMENT=complement, BLOCK_H=block_h, BLOCK_W=block_w,
        )
    return out


def mix(
    x: Tensor,
    out: Tensor,
    draw: Tensor,
    *,
    shift: int,
    coin: Tensor | None = None,
    prob: float = 1.0,
    pixel: Tensor | None = None,
    target: Tensor | None = None,
    num_classes: int = 0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """:func:`mix_params` and :func:`blend` in one kernel: mix ``x`` into ``out`` from the raw draws.

    Args:
        x: ``(B, ...)`` input, as :func:`blend` takes it; CutMix (``pixel`` given) needs ``(B, C, H, W)``, its boxes
            drawn for ``(H, W)``.
        out: The float output, as :func:`blend` takes it.
        draw: The Beta(α, α) draws, as :func:`mix_params` takes them (``n`` = B or 1).
        shift: Sample ``i``'s partner is ``(i + shift) % B``; ``0 <= shift < B``.
        coin: As :func:`mix_params`.
        prob: As :func:`mix_params`.
        pixel: As :func:`mix_params`.
        target: As :func:`mix_params`.
        num_classes: As :func:`mix_params`.
        label_smoothing: As :func:`mix_params`.

    Returns:
        ``(lam, weight_or_box, mixed, soft)`` as :func:`mix_params` gives them; ``out`` holds the mixed input.
    """
    b = x.shape[0] if x.dim() else 0
    if b < 2 or x.numel() == 0:
        raise Unsupported(f"mix needs a batch of two samples or more, each of one element at least, got {tuple(x.shape)}")
    _check_draws(draw, coin, pixel, target, b)
    if pixel is not None and x.dim() != 4:
        raise Unsupported(f"CutMix needs (B, C, H, W) input, got shape {tuple(x.shape)}")
    xi, oi, block_h, block_w = _tiling(x, out)
    _, c, height, width = xi.shape
    lam, second, mixed, soft = _outputs(b, pixel is not None, target, num_classes, x.device)
    off, hot = smoothing_values(label_smoothing, num_classes) if target is not None else (0.0, 1.0)
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _mix_kernel[(b * c, cdiv(height, block_h) * cdiv(width, block_w))](
            xi, oi, draw, draw if coin is None else coin, draw if pixel is None else pixel,
            draw if target is None else target, lam, second, mixed.view(torch.int8), lam if soft is None else soft,
            b, shift % b, c, height, width, *xi.stride(), *oi.stride(), int(draw.shape[0] == b),
            1 if target is None else target.stride(0), float(prob), float(width), float(height),
            1.0 / (height * width), num_classes, off, hot,
            GAMMA=draw.dim() == 2, COIN=coin is not None, CUT=pixel is not None, LABELS=soft is not None,
            BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_C=LABEL_BLOCK,
        )
    return lam, second, mixed, soft
