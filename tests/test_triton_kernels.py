"""The fused Triton kernels (GpuAugment's CUDA path), run on the CPU through Triton's interpreter in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import enlight_data.augment as augment_module
from enlight_data.augment import GpuAugment

ROOT = Path(__file__).resolve().parents[1]

triton = pytest.importorskip("triton", reason="Triton is not installed (it ships with PyTorch's CUDA wheels)")


def _interpreted(code: str) -> None:
    """Run ``code`` with TRITON_INTERPRET=1 (read when kernels are defined, hence a fresh process)."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr


def test_colour_kernel_matches_matmul_and_clamp_for_any_strides_and_dtype():
    _interpreted("""
        import torch
        from enlight_data._colour_kernel import BLOCK, affine3_clamp
        g = torch.Generator().manual_seed(0)
        n, h, w = 3, 37, 41  # P = 1517: one full block and a masked tail
        assert h * w > BLOCK
        x = torch.rand(n, 3, h * w, generator=g)
        x[0, 1, 5] = float("nan")
        mat = torch.randn(n, 3, 3, generator=g).transpose(1, 2)  # non-contiguous
        bias = torch.randn(3, generator=g).expand(n, 3)  # stride 0 over samples
        lo, hi = torch.tensor([-0.5, -1.0, 0.0]), torch.tensor([1.0, 0.5, 2.0])
        ref = torch.clamp(torch.einsum("nij,njp->nip", mat, x) + bias[:, :, None], lo[:, None], hi[:, None])
        out = affine3_clamp(x, mat, bias, lo, hi, torch.empty(n, 3, h * w))
        torch.testing.assert_close(out, ref, equal_nan=True)
        assert out.isnan().sum() == 3  # pixel 5 of sample 0: NaN in every output channel, as torch.clamp gives
        last = torch.empty(n, 3, h, w, dtype=torch.float16, memory_format=torch.channels_last)
        affine3_clamp(x, mat, bias, lo, hi, last.view(n, 3, h * w))
        torch.testing.assert_close(last.float().view(n, 3, -1), ref, equal_nan=True, atol=2e-3, rtol=2e-3)
        try:
            affine3_clamp(x[:, :2], mat, bias, lo, hi, torch.empty(n, 2, h * w))
        except ValueError as e:
            assert "(N, 3, P)" in str(e)
        else:
            raise AssertionError("a 2-channel batch was accepted")
    """)


def test_gpu_augment_through_the_colour_kernel_matches_the_pytorch_path():
    _interpreted("""
        import torch
        import enlight_data.augment as A
        jitter = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
        x = torch.randint(0, 256, (6, 3, 40, 44), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        for kw in ({}, {"out_dtype": torch.float16, "channels_last": True}):
            aug = A.GpuAugment(24, **jitter, jitter_prob=0.8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), **kw)
            params = aug.draw(6, 40, 44, generator=torch.Generator().manual_seed(2))
            expected = aug.apply(x, params)
            A._colour_backend = lambda device, dtype, c: "triton"  # the CUDA choice, forced on the CPU
            got = aug.apply(x, params)
            A._colour_backend = lambda device, dtype, c: "bmm"
            assert got.dtype == expected.dtype and got.is_contiguous(memory_format=torch.channels_last) == bool(kw)
            tol = 1e-5 if not kw else 2e-3
            torch.testing.assert_close(got.float(), expected.float(), atol=tol, rtol=tol)
    """)


def test_draw_kernel_gives_the_pytorch_draw():
    _interpreted("""
        import torch
        import enlight_data.augment as A
        jitter = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
        cases = [  # (n, height, width, strength, augmenter arguments)
            (1000, 375, 500, 1.0, dict(jitter, jitter_prob=0.8)),  # not a multiple of the block
            (300, 375, 500, 0.6, dict(jitter, jitter_prob=0.8, scale=(0.3, 0.9), ratio=(0.5, 2.0))),
            (200, 8, 300, 1.0, dict(jitter, scale=(0.9, 1.0))),  # no candidate fits: the centred fallback
            (200, 300, 8, 1.0, dict(scale=(0.9, 1.0))),  # the other way round, no jitter
            (50, 64, 64, 0.0, dict(jitter)),  # strength 0: the whole image, unjittered
            (0, 64, 64, 1.0, dict(jitter)),
        ]
        for n, h, w, s, kw in cases:
            draws = {}
            for backend in ("torch", "triton"):
                A._draw_backend = lambda device, b=backend: b
                aug = A.GpuAugment(24, **kw)
                draws[backend] = aug.draw(n, h, w, generator=torch.Generator().manual_seed(n + h), strength=s)
            ref, got = draws["torch"], draws["triton"]
            assert got.flip.dtype == torch.bool and got.jitter.dtype == torch.bool and len(got) == n
            for name in ("boxes", "flip", "jitter"):
                assert torch.equal(getattr(got, name), getattr(ref, name)), (name, n, h, w, s)
            for name in ("brightness", "contrast", "saturation", "hue"):
                torch.testing.assert_close(getattr(got, name), getattr(ref, name), atol=1e-6, rtol=1e-6)
            if n and h == 8:
                assert torch.equal(got.boxes, ref.boxes) and (got.boxes[:, 3] - got.boxes[:, 1] == 8).all()
    """)


def test_rounding_in_the_draw_kernel_is_torch_round():
    _interpreted("""
        import torch
        import triton
        import triton.language as tl
        from enlight_data._draw_kernel import _round_half_even

        @triton.jit
        def rounded(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
            i = tl.arange(0, BLOCK)
            tl.store(y_ptr + i, _round_half_even(tl.load(x_ptr + i, mask=i < n)), mask=i < n)

        x = torch.tensor([0.0, 0.5, 1.5, 2.5, 3.5, 2.4999998, 2.5000002, 7.0, 1e6 + 0.5, 12345.678])
        y = torch.empty_like(x)
        rounded[(1,)](x, y, x.numel(), BLOCK=16)
        assert torch.equal(y, torch.round(x)), (y, torch.round(x))  # ties to even, as torch.round
    """)


def test_list_input_keeps_the_pytorch_draw(monkeypatch):
    # Per-image sizes are the PyTorch path's job: the kernel is for batches of one size.
    monkeypatch.setattr(augment_module, "_draw_backend", lambda device: "triton")
    monkeypatch.setattr(augment_module, "_run_triton", lambda *a, **k: pytest.fail("the kernel ran for a list input"))
    aug = GpuAugment(8, brightness=0.2)
    images = [torch.randint(0, 256, (3, 10 + i, 12), dtype=torch.uint8) for i in range(3)]
    assert aug(images, generator=torch.Generator().manual_seed(0)).shape == (3, 3, 8, 8)


def test_a_failing_kernel_falls_back_to_pytorch_ops_and_warns_once(monkeypatch):
    aug = GpuAugment(12, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, mean=(0.5,), std=(0.25,))
    x = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = aug(x, generator=torch.Generator().manual_seed(1))
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(augment_module, "_colour_backend", lambda device, dtype, c: "triton")
    monkeypatch.setattr(augment_module, "_draw_backend", lambda device: "triton")
    monkeypatch.setattr(augment_module, "_triton_kernel", lambda name: broken)
    monkeypatch.setattr(augment_module, "_TRITON_FAILED", {})
    with pytest.warns(RuntimeWarning, match="fused Triton (draw|colour) kernel failed .RuntimeError: no compiler here"):
        first = aug(x, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = aug(x, generator=torch.Generator().manual_seed(1))  # not tried again, not warned again
    assert len(calls) == 2 and set(augment_module._TRITON_FAILED) == {"draw", "colour"}
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
