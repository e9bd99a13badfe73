"""``GpuAugment``'s per-sample parameters from its uniforms in one Triton kernel, for batches of one image size on CUDA.

``GpuAugment.draw`` turns ``(B, 28)`` uniforms into crop boxes, flips and jitter factors with about 45 small PyTorch
ops, each a kernel launch of several microseconds of host time (NOTE [ Few kernels per draw ] in ``augment.py``).
This kernel computes the same quantities, in float32, in one launch: per sample, the first of the ten (area, ratio)
candidates that fits, else torchvision's centred fallback (computed on the host: the batch shares one image size),
the crop's offset, the flip and jitter coins, and the four jitter factors. It consumes the uniforms exactly as the
PyTorch path does, so both give the same parameters up to float rounding (an FMA here and there can move a box
edge that sits on a rounding tie by one pixel); exp, sqrt and division are the correctly rounded (or CUDA libm)
ones, not the approximate PTX instructions ``tl.exp``/``tl.sqrt`` compile to.

Imported only when a CUDA batch needs it; ``augment.py`` falls back to the PyTorch ops where Triton is missing or
fails to compile.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.language.extra import libdevice

from ._fused import Unsupported, cdiv

__all__ = ["BLOCK", "draw_params"]

BLOCK = 128


@triton.jit
def _round_half_even(v):
    """``torch.round`` (ties to even) of non-negative floats.

    From the floor and the fraction, both exact: ``floor(v + 0.5)`` would round the sum itself for odd values from
    2**23 up (8388609 + 0.5 rounds to 8388610 in float32), one pixel off for sides that long.
    """
    r = tl.floor(v)
    d = v - r  # exact: v and its floor share their exponent or v < 1
    odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
    return tl.where((d > 0.5) | ((d == 0.5) & odd), r + 1.0, r)


@triton.jit
def _draw_kernel(
    u_ptr, consts_ptr, boxes_ptr, flags_ptr, factors_ptr, n,
    w, h, area_scale, area_shift, log_r0, log_span, fx, fy, fw, fh, flip_p, jitter_p,
    TRIES: tl.constexpr, K: tl.constexpr, JITTER: tl.constexpr, EXACT_EXP: tl.constexpr, BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    row = u_ptr + i * K
    cw = tl.zeros((BLOCK,), tl.float32)
    ch = tl.zeros((BLOCK,), tl.float32)
    found = tl.zeros((BLOCK,), tl.int32)  # 1 once a candidate fits
    for t in tl.static_range(TRIES):
        area = tl.load(row + t, mask=mask, other=0.0) * area_scale + area_shift
        # Correctly rounded exp, sqrt and division, as torch's CUDA kernels compute them: tl.exp and tl.sqrt are the
        # approximate PTX instructions on a GPU, whose ulp or two moved about 1 box in 26,000 off the PyTorch draw.
        log_aspect = tl.load(row + TRIES + t, mask=mask, other=0.0) * log_span + log_r0
        if EXACT_EXP:
            aspect = libdevice.exp(log_aspect)  # CUDA's expf, which torch.exp calls
        else:
            aspect = tl.exp(log_aspect)  # Triton's interpreter has no libdevice; numpy's exp is exact there
        tw = _round_half_even(tl.sqrt_rn(area * aspect))
        th = _round_half_even(tl.sqrt_rn(tl.div_rn(area, aspect)))
        take = (tw > 0.0) & (tw <= w) & (th > 0.0) & (th <= h) & (found == 0)
        cw = tl.where(take, tw, cw)
        ch = tl.where(take, th, ch)
        found = tl.where(take, 1, found)
    ux = tl.load(row + 2 * TRIES, mask=mask, other=0.0)
    uy = tl.load(row + 2 * TRIES + 1, mask=mask, other=0.0)
    fits = found != 0
    x1 = tl.where(fits, tl.minimum(tl.floor(ux * (w + 1.0 - cw)), w - cw), fx)
    y1 = tl.where(fits, tl.minimum(tl.floor(uy * (h + 1.0 - ch)), h - ch), fy)
    cw = tl.where(fits, cw, fw)
    ch = tl.where(fits, ch, fh)
    box = boxes_ptr + i * 4
    tl.store(box, x1, mask=mask)
    tl.store(box + 1, y1, mask=mask)
    tl.store(box + 2, x1 + cw, mask=mask)
    tl.store(box + 3, y1 + ch, mask=mask)
    flip = tl.load(row + 2 * TRIES + 2, mask=mask, other=1.0) < flip_p
    jitter = tl.load(row + 2 * TRIES + 3, mask=mask, other=1.0) < jitter_p
    tl.store(flags_ptr + i * 2, flip.to(tl.uint8), mask=mask)
    tl.store(flags_ptr + i * 2 + 1, jitter.to(tl.uint8), mask=mask)
    for j in tl.static_range(4):  # consts: 4 lower ends, 4 widths, 4 unjittered values
        f = tl.zeros((BLOCK,), tl.float32) + tl.load(consts_ptr + 8 + j)
        if JITTER:
            drawn = tl.load(consts_ptr + j) + tl.load(row + 2 * TRIES + 4 + j, mask=mask, other=0.0) * tl.load(
                consts_ptr + 4 + j
            )
            f = tl.where(jitter, drawn, f)
        tl.store(factors_ptr + i * 4 + j, f, mask=mask)


def draw_params(
    u: Tensor,
    consts: Tensor,
    *,
    tries: int,
    size: Sequence[float],
    area: Sequence[float],
    log_ratio: Sequence[float],
    fallback: Sequence[float],
    flip_p: float,
    jitter_p: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes ``(B, 4)``, flags ``(B, 2)`` uint8 (flip, jitter) and factors ``(B, 4)`` from ``(B, 2 T + 8)`` uniforms.

    Args:
        u: ``(B, 2 * tries + 8)`` float32 uniforms, contiguous, laid out as ``GpuAugment.draw`` documents.
        consts: 12 float32 values: the jitter factors' lower ends, widths and unjittered values.
        tries: Candidates per sample.
        size: The batch's image ``(width, height)``.
        area: ``(scale, shift)``: a candidate's area is ``u * scale + shift`` pixels.
        log_ratio: ``(lo, span)``: a candidate's log aspect ratio is ``u * span + lo``.
        fallback: The centred fallback crop ``(x, y, width, height)``.
        flip_p: Flip probability.
        jitter_p: Jitter probability (0 leaves every sample unjittered).

    Returns:
        ``(boxes, flags, factors)``.
    """
    n, k = u.shape
    size, area, log_ratio, fallback = (tuple(float(v) for v in t) for t in (size, area, log_ratio, fallback))
    if k != 2 * tries + 8 or not u.is_contiguous() or u.dtype != torch.float32:
        raise Unsupported(f"u should be a contiguous float32 (B, {2 * tries + 8}) tensor, got {u.dtype} {tuple(u.shape)}")
    if consts.numel() != 12 or not consts.is_contiguous() or consts.dtype != torch.float32:
        raise Unsupported(f"consts should hold 12 contiguous float32 values, got {consts.dtype} {tuple(consts.shape)}")
    boxes = torch.empty((n, 4), dtype=torch.float32, device=u.device)
    flags = torch.empty((n, 2), dtype=torch.uint8, device=u.device)
    factors = torch.empty((n, 4), dtype=torch.float32, device=u.device)
    if n:
        # Triton launches on the current CUDA device, which need not be u's.
        with torch.cuda.device(u.device) if u.is_cuda else contextlib.nullcontext():
            _draw_kernel[(cdiv(n, BLOCK),)](
                u, consts, boxes, flags, factors, n, *size, *area, *log_ratio, *fallback, float(flip_p), float(jitter_p),
                TRIES=tries, K=k, JITTER=jitter_p > 0, EXACT_EXP=os.environ.get("TRITON_INTERPRET") != "1", BLOCK=BLOCK,
            )
    return boxes, flags, factors
