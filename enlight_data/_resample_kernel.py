"""``GpuAugment``'s crop, bilinear resize and flip in one Triton kernel, reading uint8 or float input, for CUDA.

The PyTorch path converts the batch to float32 (a full pass), builds a sampling grid from the boxes with about ten
small ops, then calls ``grid_sample``, which took 0.37 ms of a 0.69 ms call on an H200 (batch 256, 256² -> 224²),
the call's largest kernel. This kernel computes each output pixel's sample position from its sample's box and flip,
reads the four neighbouring input pixels in their own dtype and writes the bilinear blend: one launch, no float copy
of the input, no grid in memory. With ``scale``/``shift`` it also applies a per-channel affine map (the normalisation
of an unjittered batch) and writes the output's dtype and memory format, so such a batch is done in this one kernel.

The sampling is that of ``augment._crop_resize_flip_grid``: output pixel ``k`` of ``m`` samples the crop at
``x1 + (k + 0.5) / m * (x2 - x1)`` in pixel-edge coordinates (``m - 1 - k`` when flipped), clamped to the crop's
outermost pixel centres, so neither pixels around the crop nor the padding of a list batch leak in; the bilinear
weights are ``grid_sample``'s. The two agree up to float rounding of the sample position (computed here in pixel
units, there in ``[-1, 1]``). Imported only when a CUDA batch needs it; ``augment.py`` falls back to the PyTorch ops
where Triton is missing or fails to compile.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._fused import Unsupported, cdiv

__all__ = ["BLOCK", "resample"]

BLOCK = 512
MAX_BLOCKS = 65535  # CUDA's limit on the grid's second dimension
MAX_CHANNELS = 16  # the channel loop is unrolled


@triton.jit
def _tap(base, iy, ix, sxh, sxw, mask):
    return tl.load(base + iy.to(tl.int64) * sxh + ix.to(tl.int64) * sxw, mask=mask, other=0).to(tl.float32)


# Strides the kernel widens to int64 stay runtime values: Triton turns an int argument equal to 1 into a
# constant (a channels_last batch has a channel stride of 1), and a constant has no .to().
@triton.jit(do_not_specialize=["sxc", "soc"])
def _resample_kernel(
    x_ptr, box_ptr, flip_ptr, out_ptr, scale_ptr, shift_ptr, oh, ow, inv_oh, inv_ow, ih, iw,
    sxn, sxc, sxh, sxw, son, soc, soh, sow, sbn, sfn,
    C: tl.constexpr, AFFINE: tl.constexpr, BLOCK: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < oh * ow
    oy = offs // ow
    ox = offs - oy * ow
    box = box_ptr + n * sbn
    x1 = tl.load(box)
    y1 = tl.load(box + 1)
    x2 = tl.load(box + 2)
    y2 = tl.load(box + 3)
    flip = tl.load(flip_ptr + n * sfn) != 0
    kx = tl.where(flip, ow - 1 - ox, ox)
    # Sample positions in pixel-centre units, clamped to the crop's first and last pixel centres, then to the
    # image's (grid_sample's border mode: a box drawn for a larger image never reads outside this one).
    x_last = tl.minimum(x2, iw) - 1.0
    y_last = tl.minimum(y2, ih) - 1.0
    sx = tl.maximum(tl.minimum(tl.maximum(x1 + (kx + 0.5) * inv_ow * (x2 - x1) - 0.5, x1), x_last), 0.0)
    sy = tl.maximum(tl.minimum(tl.maximum(y1 + (oy + 0.5) * inv_oh * (y2 - y1) - 0.5, y1), y_last), 0.0)
    fx = tl.floor(sx)
    fy = tl.floor(sy)
    wx = sx - fx
    wy = sy - fy
    ix0 = fx.to(tl.int32)
    iy0 = fy.to(tl.int32)
    # The far neighbour stays inside the crop (its weight is 0 when the sample sits on the last pixel centre).
    ix1 = tl.maximum(tl.minimum(ix0 + 1, x_last.to(tl.int32)), 0)
    iy1 = tl.maximum(tl.minimum(iy0 + 1, y_last.to(tl.int32)), 0)
    w00 = (1.0 - wx) * (1.0 - wy)
    w01 = wx * (1.0 - wy)
    w10 = (1.0 - wx) * wy
    w11 = wx * wy
    dst = out_ptr + n * son + oy.to(tl.int64) * soh + ox.to(tl.int64) * sow
    for c in tl.static_range(C):
        base = x_ptr + n * sxn + c * sxc.to(tl.int64)  # a channel-major view's stride times C can pass 2**31
        v = (_tap(base, iy0, ix0, sxh, sxw, mask) * w00 + _tap(base, iy0, ix1, sxh, sxw, mask) * w01
             + _tap(base, iy1, ix0, sxh, sxw, mask) * w10 + _tap(base, iy1, ix1, sxh, sxw, mask) * w11)
        if AFFINE:
            v = v * tl.load(scale_ptr + c) + tl.load(shift_ptr + c)
        tl.store(dst + c * soc.to(tl.int64), v.to(out_ptr.dtype.element_ty), mask=mask)


def resample(
    x: Tensor,
    boxes: Tensor,
    flip: Tensor,
    out: Tensor,
    *,
    scale: Tensor | None = None,
    shift: Tensor | None = None,
) -> Tensor:
    """Crop every box of ``x``, resize it bilinearly to ``out``'s size and flip where asked, into ``out``.

    Args:
        x: ``(B, C, H, W)`` uint8 or float input, any strides.
        boxes: ``(B, 4)`` float32 integer-valued ``(x1, y1, x2, y2)`` crops, each at least one pixel wide and high;
            sample positions are also clamped to the image, as ``grid_sample``'s border mode does.
        flip: ``(B,)`` bool horizontal flips.
        out: ``(B, C, h, w)`` float output, any strides (channels_last included).
        scale: Optional ``C`` contiguous float32 per-channel factors, given with ``shift``: ``out = v * scale + shift``.
        shift: Optional ``C`` contiguous float32 per-channel offsets.

    Returns:
        ``out``.
    """
    n, c, _, _ = x.shape
    if boxes.dim() == 2 and boxes.stride(-1) != 1:
        boxes = boxes.contiguous()  # the kernel reads a box's four values side by side
    if out.dim() != 4 or out.shape[:2] != (n, c) or not out.is_floating_point():
        raise Unsupported(f"out should be a float (B, C, h, w) tensor with x's B and C {(n, c)}, got {out.dtype} "
                         f"{tuple(out.shape)}")
    if boxes.shape != (n, 4) or boxes.dtype != torch.float32 or flip.shape != (n,) or flip.dtype != torch.bool:
        raise Unsupported(f"boxes and flip should be float32 ({n}, 4) and bool ({n},), got {boxes.dtype} "
                         f"{tuple(boxes.shape)} and {flip.dtype} {tuple(flip.shape)}")
    if (scale is None) != (shift is None) or (
        scale is not None and shift is not None and (scale.numel() != c or shift.numel() != c)
    ):
        raise Unsupported(f"scale and shift should be given together, {c} values each")
    if c > MAX_CHANNELS:
        raise Unsupported(f"resample handles at most {MAX_CHANNELS} channels, got C={c}")
    oh, ow = out.shape[2:]
    blocks = cdiv(oh * ow, BLOCK)
    if blocks > MAX_BLOCKS:
        raise Unsupported(f"resample handles at most {MAX_BLOCKS * BLOCK} output pixels per image, got {oh * ow}")
    if n and oh * ow:
        affine = scale is not None
        with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
            _resample_kernel[(n, blocks)](
                x, boxes, flip.view(torch.uint8), out, scale if affine else boxes, shift if affine else boxes,
                oh, ow, 1.0 / oh, 1.0 / ow, float(x.shape[2]), float(x.shape[3]), *x.stride(), *out.stride(),
                boxes.stride(0), flip.stride(0),
                C=c, AFFINE=affine, BLOCK=BLOCK,
            )
    return out
