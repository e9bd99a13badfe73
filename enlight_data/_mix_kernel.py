"""Mixup and CutMix in two fused Triton kernels, for batches on CUDA.

As PyTorch ops, per-sample mixing is two ``lerp`` (or ``where``) kernels over the batch, two more over the soft
targets, and, for CutMix, about twenty tiny kernels that turn the draws into boxes and paint them into a mask. On a
GPU each op costs several microseconds of host time: an H200 ran CutMix at a third of the bare ``lerp``'s speed, bound
by those launches (NOTE [ Few kernels per CutMix draw ] in ``mixing.py``). Here:

- :func:`cut_boxes` turns a batch's Beta draws and box centres into boxes and λ in one launch;
- :func:`blend` mixes every sample ``i`` with sample ``(i + shift) % B`` in one launch: ``lerp`` with a per-sample
  weight (Mixup, and the soft targets), or a copy of the partner's pixels inside a per-sample box (CutMix), which
  needs no mask in memory and reads each pixel from one of the two samples only. It reads any float or uint8 input
  and writes ``out``'s dtype, so an integer batch needs no separate conversion.

Both compute what ``mixing.py``'s PyTorch ops compute, in float32 (``torch.lerp``'s two-sided formula included); the
boxes are the same, λ and lerped values equal up to float rounding. Imported only when a CUDA batch needs it;
``mixing.py`` falls back to the PyTorch ops where Triton is missing or fails to compile.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._fused import Unsupported

__all__ = ["blend", "cut_boxes"]

BOX_BLOCK = 128
MAX_TILE = 2048  # elements per program of `blend`
MAX_BLOCKS = 65535  # CUDA's limit on the grid's second dimension


@triton.jit
def _cut_boxes_kernel(
    share_ptr, cx_ptr, cy_ptr, applied_ptr, box_ptr, lam_ptr, n, width, height, inv_area, s_share,
    HAS_APPLIED: tl.constexpr, BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    ratio = tl.sqrt_rn(tl.load(share_ptr + i * s_share, mask=mask, other=0.0))
    cx = tl.load(cx_ptr + i, mask=mask, other=0.0)
    cy = tl.load(cy_ptr + i, mask=mask, other=0.0)
    hx = tl.floor(ratio * (width * 0.5))
    hy = tl.floor(ratio * (height * 0.5))
    x1 = tl.maximum(cx - hx, 0.0)
    y1 = tl.maximum(cy - hy, 0.0)
    x2 = tl.minimum(cx + hx, width)
    y2 = tl.minimum(cy + hy, height)
    if HAS_APPLIED:  # an empty box where the sample's coin said no
        on = tl.load(applied_ptr + i, mask=mask, other=0) != 0
        x2 = tl.where(on, x2, x1)
        y2 = tl.where(on, y2, y1)
    area = (x2 - x1) * (y2 - y1)
    tl.store(lam_ptr + i, 1.0 - area * inv_area, mask=mask)
    tl.store(box_ptr + i * 4, x1, mask=mask)
    tl.store(box_ptr + i * 4 + 1, y1, mask=mask)
    tl.store(box_ptr + i * 4 + 2, x2, mask=mask)
    tl.store(box_ptr + i * 4 + 3, y2, mask=mask)


def cut_boxes(
    share: Tensor, cx: Tensor, cy: Tensor, applied: Tensor | None, *, size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """CutMix boxes ``(n, 4)`` float32 ``(x1, y1, x2, y2)`` and λ ``(n,)`` from the draws, in one kernel.

    Args:
        share: ``(n,)`` float32 Beta(α, α) draws (any stride), ``1 - λ_raw``; the box's sides are ``sqrt(share)``
            times the image's.
        cx: ``(n,)`` float32 integer-valued box centres along x, in ``[0, width)``.
        cy: ``(n,)`` float32 box centres along y, in ``[0, height)``.
        applied: ``(n,)`` bool, or None; the box is empty where False.
        size: The image's ``(height, width)``.

    Returns:
        ``(box, lam)``, ``lam = 1 - box_area / (height * width)``.
    """
    n = share.shape[0]
    height, width = (int(s) for s in size)
    if share.dim() != 1 or share.dtype != torch.float32:
        raise Unsupported(f"share should be a float32 (n,) tensor, got {share.dtype} {tuple(share.shape)}")
    for name, t in (("cx", cx), ("cy", cy)):
        if t.shape != (n,) or t.dtype != torch.float32 or not t.is_contiguous():
            raise Unsupported(f"{name} should be a contiguous float32 ({n},) tensor, got {t.dtype} {tuple(t.shape)}")
    if applied is not None and (applied.shape != (n,) or applied.dtype != torch.bool or not applied.is_contiguous()):
        raise Unsupported(f"applied should be None or a contiguous bool ({n},) tensor, got {applied.dtype} "
                         f"{tuple(applied.shape)}")
    box = torch.empty((n, 4), dtype=torch.float32, device=share.device)
    lam = torch.empty((n,), dtype=torch.float32, device=share.device)
    if n:
        flags = share if applied is None else applied.view(torch.uint8)
        with torch.cuda.device(share.device) if share.is_cuda else contextlib.nullcontext():
            _cut_boxes_kernel[(triton.cdiv(n, BOX_BLOCK),)](
                share, cx, cy, flags, box, lam, n, float(width), float(height), 1.0 / (height * width), share.stride(0),
                HAS_APPLIED=applied is not None, BLOCK=BOX_BLOCK,
            )
    return box, lam


@triton.jit
def _blend_kernel(
    x_ptr, out_ptr, weight_ptr, box_ptr, batch, shift, channels, height, width,
    sxn, sxc, sxh, sxw, son, soc, soh, sow, swn, sbn,
    HAS_BOX: tl.constexpr, COMPLEMENT: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    row = tl.program_id(0)  # sample * channels + channel
    i = row // channels
    c = row % channels
    p = (i + shift) % batch  # the partner
    tiles_w = tl.cdiv(width, BLOCK_W)
    h = (tl.program_id(1) // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    w = (tl.program_id(1) % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    mask = (h < height) & (w < width)
    pixel = c.to(tl.int64) * sxc + h.to(tl.int64) * sxh + w.to(tl.int64) * sxw
    own = x_ptr + i.to(tl.int64) * sxn + pixel
    partner = x_ptr + p.to(tl.int64) * sxn + pixel
    if HAS_BOX:  # CutMix: the partner's pixels inside the box, read from one sample only
        b = box_ptr + i.to(tl.int64) * sbn
        x1 = tl.load(b).to(tl.int32)
        y1 = tl.load(b + 1).to(tl.int32)
        x2 = tl.load(b + 2).to(tl.int32)
        y2 = tl.load(b + 3).to(tl.int32)
        inside = (w >= x1) & (w < x2) & (h >= y1) & (h < y2)
        a = tl.load(own, mask=mask & ~inside, other=0).to(tl.float32)
        z = tl.load(partner, mask=mask & inside, other=0).to(tl.float32)
        y = tl.where(inside, z, a)
    else:  # Mixup: torch.lerp's formula, exact at both ends
        t = tl.load(weight_ptr + i.to(tl.int64) * swn).to(tl.float32)
        if COMPLEMENT:
            t = 1.0 - t
        a = tl.load(own, mask=mask, other=0).to(tl.float32)
        z = tl.load(partner, mask=mask, other=0).to(tl.float32)
        d = z - a
        y = tl.where(tl.abs(t) < 0.5, a + t * d, z - d * (1.0 - t))
    dst = out_ptr + i.to(tl.int64) * son + c.to(tl.int64) * soc + h.to(tl.int64) * soh + w.to(tl.int64) * sow
    tl.store(dst, y.to(out_ptr.dtype.element_ty), mask=mask)


def _as_image(t: Tensor) -> Tensor:
    """``t`` as ``(B, C, H, W)``: images as they are, any other ``(B, ...)`` contiguous tensor as ``(B, 1, 1, F)``."""
    if t.dim() == 4:
        return t
    if not t.is_contiguous():
        raise Unsupported(f"blend needs a (B, C, H, W) or contiguous tensor, got shape {tuple(t.shape)} and strides "
                         f"{t.stride()}")
    return t.reshape(t.shape[0], 1, 1, -1)


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
            an expanded ``(1,)`` works): ``out[i] = lerp(x[i], x[partner], weight[i])``.
        box: ``(B, 4)`` float32 integer-valued ``(x1, y1, x2, y2)`` boxes (``B`` rows, stride 0 allowed), for
            ``(B, C, H, W)`` input: ``out[i]`` is the partner's pixels inside, ``x[i]``'s outside.
        complement: Use ``1 - weight`` as the weight (λ given, the partner's share wanted).

    Returns:
        ``out``.
    """
    if (weight is None) == (box is None):
        raise Unsupported("blend needs exactly one of weight and box")
    if out.shape != x.shape or not out.is_floating_point():
        raise Unsupported(f"out should be a float tensor of x's shape {tuple(x.shape)}, got {out.dtype} "
                         f"{tuple(out.shape)}")
    n = x.shape[0]
    if box is not None and (x.dim() != 4 or box.shape != (n, 4) or box.dtype != torch.float32):
        raise Unsupported(f"box should be a float32 ({n}, 4) tensor for (B, C, H, W) input, got box {box.dtype} "
                         f"{tuple(box.shape)} and x of shape {tuple(x.shape)}")
    if weight is not None and (weight.dim() == 0 or weight.shape[0] != n or weight.shape[1:].numel() != 1):
        raise Unsupported(f"weight should hold one value per sample ({n}), got shape {tuple(weight.shape)}")
    if box is not None and box.stride(-1) != 1:
        box = box.contiguous()  # the kernel reads a box's four values side by side
    xi, oi = _as_image(x), _as_image(out)
    _, c, h, w = xi.shape
    if n == 0 or xi.numel() == 0:
        return out
    block_w = min(triton.next_power_of_2(w), MAX_TILE)
    block_h = min(triton.next_power_of_2(h), max(1, MAX_TILE // block_w))
    tiles = triton.cdiv(h, block_h) * triton.cdiv(w, block_w)
    if tiles > MAX_BLOCKS:
        raise Unsupported(f"blend handles at most {MAX_BLOCKS} tiles of {block_h}x{block_w} per channel, got {tiles}")
    ref = box if box is not None else weight
    assert ref is not None  # exactly one of them, checked above
    shift %= n  # Triton's % keeps the sign of a negative shift: the partner index would point before the batch
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _blend_kernel[(n * c, tiles)](
            xi, oi, ref, ref, n, shift, c, h, w, *xi.stride(), *oi.stride(), ref.stride(0), ref.stride(0),
            HAS_BOX=box is not None, COMPLEMENT=complement, BLOCK_H=block_h, BLOCK_W=block_w,
        )
    return out
