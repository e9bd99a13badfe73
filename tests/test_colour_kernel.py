"""The fused Triton colour map (CUDA's path), run on the CPU through Triton's interpreter in a subprocess."""

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


def test_kernel_matches_matmul_and_clamp_for_any_strides_and_dtype():
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


def test_gpu_augment_through_the_kernel_matches_the_pytorch_path():
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


def test_a_failing_kernel_falls_back_to_pytorch_ops_and_warns_once(monkeypatch):
    aug = GpuAugment(12, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, mean=(0.5,), std=(0.25,))
    x = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    params = aug.draw(4, 20, 20, generator=torch.Generator().manual_seed(1))
    expected = aug.apply(x, params)
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(augment_module, "_colour_backend", lambda device, dtype, c: "triton")
    monkeypatch.setattr(augment_module, "_triton_colour_map", lambda: broken)
    monkeypatch.setattr(augment_module, "_TRITON_FAILED", [])
    with pytest.warns(RuntimeWarning, match="fused Triton colour map failed .RuntimeError: no compiler here"):
        first = aug.apply(x, params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = aug.apply(x, params)  # not tried again, not warned again
    assert len(calls) == 1
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
