"""The colour map and its clamp as one fused Triton kernel, for 3-channel float32 batches on CUDA.

``GpuAugment`` applies a per-sample affine colour map ``y = clamp(M x + b, lo, hi)`` (NOTE [ Fused colour map ] in
``augment.py``). As separate PyTorch ops that is at least two passes over the batch and, for a 3x3 ``M``, either a
batched GEMM that the BLAS handles poorly or a chain of nine strided ``addcmul`` kernels (NOTE [ Applying the colour
map ]). This kernel reads each pixel's three channels once and writes the three outputs once, in the output's dtype
and memory format (channels_last included), with NaN propagated as ``torch.clamp`` does.

Triton ships with PyTorch's CUDA wheels; this module is imported only when a CUDA batch needs it, and
``augment.py`` falls back to the PyTorch ops where Triton is missing or fails to compile.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._fused import Unsupported, cdiv

__all__ = ["BLOCK", "affine3_clamp"]

BLOCK = 1024
MAX_BLOCKS = 65535  # CUDA's limit on the grid's second dimension


# Strides the kernel widens to int64 stay runtime values: Triton turns an int argument equal to 1 into a
# constant (a channels_last batch has a channel stride of 1), and a constant has no .to().
@triton.jit(do_not_specialize=["sxc", "syc"])
def _affine3_clamp_kernel(
    x_ptr, m_ptr, b_ptr, lo_ptr, hi_ptr, y_ptr, p,
    sxn, sxc, sxp, smn, smi, smj, sbn, sbc, syn, syc, syp,
    BLOCK: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < p
    xb = x_ptr + n * sxn + offs * sxp
    sxc64 = sxc.to(tl.int64)  # twice a channel stride can pass 2**31 (a channel-major view)
    x0 = tl.load(xb, mask=mask).to(tl.float32)
    x1 = tl.load(xb + sxc64, mask=mask).to(tl.float32)
    x2 = tl.load(xb + 2 * sxc64, mask=mask).to(tl.float32)
    m = m_ptr + n * smn
    yb = y_ptr + n * syn + offs * syp
    for i in tl.static_range(3):
        y = (tl.load(m + i * smi) * x0 + tl.load(m + i * smi + smj) * x1 + tl.load(m + i * smi + 2 * smj) * x2
             + tl.load(b_ptr + n * sbn + i * sbc))
        y = tl.maximum(y, tl.load(lo_ptr + i), propagate_nan=tl.PropagateNan.ALL)
        y = tl.minimum(y, tl.load(hi_ptr + i), propagate_nan=tl.PropagateNan.ALL)
        tl.store(yb + i * syc.to(tl.int64), y.to(y_ptr.dtype.element_ty), mask=mask)


def affine3_clamp(x: Tensor, mat: Tensor, bias: Tensor, lo: Tensor, hi: Tensor, out: Tensor) -> Tensor:
    """``out = clamp(mat @ x + bias[..., None], lo, hi)`` per sample, in one kernel; returns ``out``.

    Args:
        x: ``(N, 3, P)`` float32 pixels, any strides.
        mat: ``(N, 3, 3)`` float32 per-sample matrices, any strides.
        bias: ``(N, 3)`` float32 per-sample offsets, any strides (an expanded row works).
        lo: 3 contiguous float32 lower bounds, one per output channel.
        hi: 3 contiguous float32 upper bounds.
        out: ``(N, 3, P)`` output of any float dtype and strides (a channels_last batch viewed as ``(N, 3, H W)``).

    Returns:
        ``out``.
    """
    n, c, p = x.shape
    if c != 3 or mat.shape != (n, 3, 3) or bias.shape != (n, 3) or out.shape != x.shape:
        raise Unsupported(
            f"affine3_clamp needs x and out of shape (N, 3, P), mat (N, 3, 3) and bias (N, 3), got x {tuple(x.shape)}, "
            f"mat {tuple(mat.shape)}, bias {tuple(bias.shape)}, out {tuple(out.shape)}"
        )
    blocks = cdiv(p, BLOCK)
    if blocks > MAX_BLOCKS:
        raise Unsupported(f"affine3_clamp handles at most {MAX_BLOCKS * BLOCK} pixels per image, got P={p}")
    if n and p:
        # Triton launches on the current CUDA device, which need not be x's.
        with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
            _affine3_clamp_kernel[(n, blocks)](
                x, mat, bias, lo, hi, out, p, *x.stride(), *mat.stride(), *bias.stride(), *out.stride(), BLOCK=BLOCK
            )
    return out
