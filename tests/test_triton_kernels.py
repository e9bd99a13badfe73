"""The fused Triton kernels (GpuAugment's CUDA path), run on the CPU through Triton's interpreter in a subprocess."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import enlight_data._fused as fused
import enlight_data.augment as augment_module
from enlight_data.augment import GpuAugment

ROOT = Path(__file__).resolve().parents[1]

triton = pytest.importorskip("triton", reason="Triton is not installed (it ships with PyTorch's CUDA wheels)")


def _run_interpreted(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with TRITON_INTERPRET=1 (read when kernels are defined, hence a fresh process)."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)


# A kernel loop whose bounds are known only at run time (the mix kernel's loop over class blocks), as the interpreter
# runs it: Triton before triton-lang/triton#9171's fix takes ``int()`` of a 1-element array there, which numpy 2.4
# refuses ("only 0-dimensional arrays can be converted to Python scalars"). Compiled kernels are not affected.
_RUNTIME_LOOP_PROBE = """
import torch, triton, triton.language as tl

@triton.jit
def _sum_strided(out, n):
    acc = 0
    for i in range(tl.program_id(0), n, tl.num_programs(0)):
        acc += i
    tl.store(out + tl.program_id(0), acc)

out = torch.zeros(2, dtype=torch.int32)
_sum_strided[(2,)](out, 5)
assert out.tolist() == [0 + 2 + 4, 1 + 3], out
"""
_NUMPY_SCALAR_ERROR = "only 0-dimensional arrays can be converted to Python scalars"


@functools.cache
def _interpreter_runs_runtime_loops() -> bool:
    done = _run_interpreted(_RUNTIME_LOOP_PROBE)
    return done.returncode == 0 or _NUMPY_SCALAR_ERROR not in done.stderr


def _interpreted(code: str) -> None:
    """Run ``code`` with TRITON_INTERPRET=1 in a fresh process; a failure fails the test.

    A kernel that fails falls back to PyTorch ops with a RuntimeWarning: here that is an error, so a comparison
    against the PyTorch path never passes by running the PyTorch path twice. A failure that the interpreter's own
    loop bug explains (checked by running a probe kernel) skips the test instead, naming the versions.
    """
    done = _run_interpreted("import warnings\nwarnings.simplefilter('error', RuntimeWarning)\n" + textwrap.dedent(code))
    if done.returncode != 0 and _NUMPY_SCALAR_ERROR in done.stderr and not _interpreter_runs_runtime_loops():
        import numpy

        pytest.skip(f"Triton {triton.__version__}'s interpreter cannot run a kernel loop with run-time bounds under "
                    f"numpy {numpy.__version__} (triton-lang/triton#9171, fixed in later Triton releases)")
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

        x = torch.tensor([0.0, 0.5, 1.5, 2.5, 3.5, 2.4999998, 2.5000002, 7.0, 1e6 + 0.5, 12345.678,
                          2.0**23 + 1, 2.0**23 + 3, 12345679.0, 16777215.0, 0.49999997, 4194303.5])  # odd from 2**23
        y = torch.empty_like(x)
        rounded[(1,)](x, y, x.numel(), BLOCK=16)
        assert torch.equal(y, torch.round(x)), (y, torch.round(x))  # ties to even, as torch.round
    """)


def test_list_input_keeps_the_pytorch_draw(monkeypatch):
    # Per-image sizes are the PyTorch path's job: the kernel is for batches of one size.
    monkeypatch.setattr(augment_module, "_draw_backend", lambda device: "triton")
    monkeypatch.setattr(fused, "run", lambda *a, **k: pytest.fail("the kernel ran for a list input"))
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
    monkeypatch.setattr(augment_module, "_resample_backend", lambda *args: "triton")
    monkeypatch.setattr(fused, "kernel", lambda name: broken)
    monkeypatch.setattr(fused, "FAILED", {})
    with pytest.warns(RuntimeWarning, match="fused Triton (draw|resample|colour) kernel failed .RuntimeError: no compiler here"):
        first = aug(x, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = aug(x, generator=torch.Generator().manual_seed(1))  # not tried again, not warned again
    assert len(calls) == 3 and set(fused.FAILED) == {"draw", "resample", "colour"}
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)


def test_mix_params_kernel_gives_the_pytorch_draw():
    _interpreted("""
        import torch
        import enlight_data as ed
        import enlight_data.mixing as M
        for (h, w), b, phase in [((16, 16), 300, ed.Phase(cutmix_alpha=0.7)),
                                 ((13, 20), 200, ed.Phase(cutmix_alpha=0.7, mix_prob=0.5)),
                                 ((1, 7), 50, ed.Phase(cutmix_alpha=1.0)),
                                 ((224, 224), 129, ed.Phase(cutmix_alpha=1.0, mix_prob=0.3, mode="batch")),
                                 ((1, 1), 64, ed.Phase(mixup_alpha=0.8)),
                                 ((1, 1), 65, ed.Phase(mixup_alpha=0.4, mix_prob=0.5)),
                                 ((1, 1), 9, ed.Phase(mixup_alpha=0.01, mode="batch"))]:  # a small α: (n,) draws
            drawn = {}
            for fused in (False, True):
                M._fused = lambda name, device, f=fused: f
                drawn[fused] = M._draw(phase, b, h, w, generator=torch.Generator().manual_seed(b + h),
                                       device=torch.device("cpu"), host_generator=None)
            ref, got = drawn[False], drawn[True]
            assert got.soft is None and ref.soft is None  # no target given
            for name in ("box", "weight"):
                r, g = getattr(ref.params, name), getattr(got.params, name)
                assert (r is None) == (g is None), name
                if g is not None:
                    assert g.dtype == torch.float32 and g.shape == r.shape, name
                    assert torch.equal(g, r), (name, h, w, b)  # boxes are integers; the share is one division
            torch.testing.assert_close(got.params.lam, ref.params.lam, atol=1e-7, rtol=0)
            assert torch.equal(got.mixed, ref.mixed) and torch.equal(got.mixed, ref.params.lam < 1)
            assert got.params.size == ref.params.size and got.params.shift == ref.params.shift == b // 2
            if phase.mix_prob < 1:
                assert 0 < int(got.mixed.sum()) < b or phase.mode == "batch"
    """)


def test_mix_params_kernel_makes_the_mixed_soft_targets_and_marks_bad_classes():
    _interpreted("""
        import torch
        import enlight_data as ed
        import enlight_data.mixing as M
        from enlight_data._mix_kernel import LABEL_BLOCK, mix_params
        g = torch.Generator().manual_seed(0)
        for b, classes, phase in [(10, 5, ed.Phase(mixup_alpha=0.8, label_smoothing=0.1)),
                                  (9, LABEL_BLOCK + 3, ed.Phase(cutmix_alpha=1.0, mix_prob=0.5)),  # two class tiles
                                  (4, 1, ed.Phase(mixup_alpha=1.0)),
                                  (6, 1, ed.Phase(mixup_alpha=1.0, label_smoothing=0.2))]:  # one binary score
            y = torch.randint(0, classes, (2 * b,), generator=g)[::2]  # strided targets
            for fused in (False, True):
                M._fused = lambda name, device, f=fused: f
                drawn = M._draw(phase, b, 8, 6, generator=torch.Generator().manual_seed(3),
                                device=torch.device("cpu"), host_generator=None, target=y, num_classes=classes)
                if fused:
                    soft = drawn.soft
                else:
                    assert drawn.soft is None
                    rows = ed.mixing.to_soft_targets(y, classes, label_smoothing=phase.label_smoothing)
                    want = ed.mixing.apply_mix(torch.zeros(b, 1, 8, 6), rows, drawn.params)[1]
            assert soft.shape == (b, classes) and soft.dtype == torch.float32
            torch.testing.assert_close(soft, want, atol=1e-6, rtol=1e-6)
            if classes > 1:  # a single column's rows are 1 - s/2 (towards 0.5), not 1
                torch.testing.assert_close(soft.sum(1), torch.ones(b))
        # A class out of range gives NaN rows (its own and its partner's), not a silent row of zeros.
        y = torch.tensor([0, 7, 1, 2])
        draw = torch.full((4, 2), 1.0)
        _, _, _, soft = mix_params(draw, batch_size=4, shift=2, target=y, num_classes=5)
        assert soft[[1, 3]].isnan().all() and not soft[[0, 2]].isnan().any()
    """)


def test_mix_kernel_gives_what_mix_params_and_blend_give():
    # NOTE [ One launch per mix ]: the one kernel against the two it fuses, on the same raw draws: per-sample and
    # per-batch draws, coins, uint8 input, more classes than the image has tiles (a class block loop), strided
    # targets, and a class out of range (NaN rows, as mix_params).
    _interpreted("""
        import torch
        import enlight_data.mixing as M
        from enlight_data._mix_kernel import LABEL_BLOCK, blend, mix, mix_params
        g = torch.Generator().manual_seed(0)
        cases = [((6, 3, 12, 10), True, 1.0, 5, 0.1), ((7, 1, 1, 9), False, 0.5, 2 * LABEL_BLOCK + 1, 0.0),
                 ((5, 2, 20, 3), True, 0.5, 3, 0.2), ((4, 3, 8, 8), False, 1.0, LABEL_BLOCK, 0.0),
                 ((6, 3, 8, 8), False, 1.0, 1, 0.2)]  # one binary score, smoothed towards 0.5
        for (b, c, h, w), cut, prob, classes, smoothing in cases:
            for n in (b, 1):
                x = torch.rand(b, c, h, w, generator=g)
                x = (x * 255).to(torch.uint8) if n == 1 else x
                y = torch.randint(0, classes, (2 * b,), generator=g)[::2]
                draw = torch._standard_gamma(torch.full((n, 2), 0.7), generator=g)
                coin = torch.rand(n, generator=g) if prob < 1 else None
                pixel = torch.randint(0, h * w, (n,), generator=g) if cut else None
                kw = dict(coin=coin, prob=prob, pixel=pixel, target=y, num_classes=classes, label_smoothing=smoothing)
                want = mix_params(draw, batch_size=b, shift=b // 2, size=(h, w), **kw)
                lam, second, mixed, soft = want
                want_x = blend(x, torch.empty(b, c, h, w), shift=b // 2,
                               **(dict(box=second) if cut else dict(weight=second)))
                out = torch.full((b, c, h, w), float("nan"))
                got = mix(x, out, draw, shift=b // 2, **kw)
                for g_t, w_t in zip(got, want):
                    torch.testing.assert_close(g_t, w_t, atol=0, rtol=0)  # the same formulas, in the same order
                torch.testing.assert_close(out, want_x, atol=0, rtol=0)
        y = torch.tensor([0, 7, 1, 2])
        _, _, _, soft = mix(torch.rand(4, 1, 2, 2), torch.empty(4, 1, 2, 2), torch.full((4, 2), 1.0), shift=2,
                            target=y, num_classes=5)
        assert soft[[1, 3]].isnan().all() and not soft[[0, 2]].isnan().any()
    """)


def test_blend_kernel_matches_lerp_and_where():
    _interpreted("""
        import torch
        import enlight_data.mixing as M
        g = torch.Generator().manual_seed(0)
        x = torch.rand(7, 3, 9, 13, generator=g)
        box = M._cut_boxes(1.0, 7, 9, 13, generator=g, device=torch.device("cpu"))[0]
        weight = torch.rand(7, generator=g).view(7, 1, 1, 1)
        labels = torch.rand(7, 10, generator=g)
        cases = [  # (input, keyword arguments of _blend)
            (x, dict(box=box)),
            (x.contiguous(memory_format=torch.channels_last), dict(box=box)),
            (x[:, :, 1:, ::2], dict(box=box[:, [0, 1, 2, 3]] // 2)),  # a strided view
            ((x * 255).to(torch.uint8), dict(box=box)),  # read as float32, written as float32
            ((x * 255).to(torch.uint8), dict(weight=weight)),
            (x, dict(weight=weight)),
            (x.half(), dict(weight=weight)),
            (x, dict(weight=torch.tensor([0.3]).expand(7))),  # one λ for the batch
            (x, dict(box=box[:1].expand(7, 4))),
            (labels, dict(weight=weight.view(7))),
            (labels, dict(weight=weight.view(7), complement=True)),
            (x.view(7, -1), dict(weight=weight)),
            (x[:1], dict(box=box[:1])),  # one sample: its own partner
        ]
        for k, (inp, kw) in enumerate(cases):
            results = {}
            for fused in (False, True):
                M._fused = lambda name, device, f=fused: f
                results[fused] = M._blend(inp, inp.shape[0] // 2, **kw)
            ref, got = results[False], results[True]
            assert got.dtype == ref.dtype and got.shape == inp.shape, k
            if "box" in kw:
                assert torch.equal(got, ref), k  # pixels are copied, not computed
            else:
                tol = 2e-3 if inp.dtype == torch.half else 1e-6  # the kernel computes in float32, rounds once
                torch.testing.assert_close(got, ref, atol=tol, rtol=tol, msg=str(k))
        out = torch.full_like(x, float("nan"))
        M._blend(x, 3, box=box, out=out)
        M._fused = lambda name, device: False
        assert torch.equal(out, M._blend(x, 3, box=box))
    """)


def test_mix_batch_through_the_kernels_matches_the_pytorch_path():
    _interpreted("""
        import torch
        import enlight_data as ed
        import enlight_data.mixing as M
        x = torch.rand(6, 3, 12, 10, generator=torch.Generator().manual_seed(0))
        y = torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(1))

        def compare(phase, x=x, y=y, out=None, kernels=lambda name, device: True):
            results = {}
            for fused in (False, True):
                M._fused = kernels if fused else (lambda name, device: False)
                results[fused] = ed.mix_batch(x, y, phase, num_classes=5, generator=torch.Generator().manual_seed(2),
                                              out=out)
                assert out is None or results[fused][0] is out
                results[fused] = tuple(t.clone() for t in results[fused])
            (rx, ry, rm), (gx, gy, gm) = results[False], results[True]
            torch.testing.assert_close(gx, rx, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(gy, ry, atol=1e-6, rtol=1e-6)
            assert torch.equal(gm, rm)

        both = ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.5, label_smoothing=0.1)
        for phase in [ed.Phase(mixup_alpha=0.8), ed.Phase(cutmix_alpha=1.0), both,
                      ed.Phase(cutmix_alpha=1.0, mode="batch"), ed.Phase(cutmix_alpha=0.5, mix_prob=0.5),
                      ed.Phase(mixup_alpha=0.4, mode="batch", mix_prob=0.5, label_smoothing=0.2),
                      ed.Phase(mixup_alpha=0.05), ed.Phase(cutmix_alpha=0.1, mode="batch")]:  # small α: (n,) draws
            compare(phase)
            compare(phase, out=torch.empty_like(x))  # the kernel path writes into out too
            compare(phase, x=x[:2, :, :, :1], y=y[:2].int())  # B = 2 (a shift of 1), W = 1, int32 classes
            compare(phase, x=(x[:5] * 255).to(torch.uint8), y=y[:5].to(torch.uint8))  # B odd, uint8 input
        compare(ed.Phase(mixup_alpha=0.8), x=x.view(6, -1))  # not an image
        compare(ed.Phase(cutmix_alpha=1.0), x=x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
                out=torch.empty_like(x).contiguous(memory_format=torch.channels_last))  # channels_last in and out
        compare(ed.Phase(mixup_alpha=0.8), y=torch.stack([y, y], 1)[:, 0])  # class indices with a stride of 2
        compare(ed.Phase(mixup_alpha=0.8), x=torch.rand(6, 0))  # empty samples: the kernel declines them
        compare(ed.Phase(mixup_alpha=0.8), x=torch.rand(6, 3, 0, 5), out=torch.empty(6, 3, 0, 5))
        # float64 keeps its precision (the kernels compute in float32 and decline it): exactly the PyTorch ops.
        big = torch.full((6, 1, 2, 2), 2.0**24 + 1, dtype=torch.float64)
        for phase in (ed.Phase(mixup_alpha=1.0), ed.Phase(cutmix_alpha=1.0)):
            mixed = ed.mix_batch(big, y, phase, num_classes=5, generator=torch.Generator().manual_seed(2))[0]
            assert mixed.dtype == torch.float64 and torch.equal(mixed, big), (mixed - big).abs().max()
        # The parameters' kernel and the blend, where the one-launch kernel does not run (NOTE [ One launch per mix ]).
        for phase in [ed.Phase(mixup_alpha=0.8), ed.Phase(cutmix_alpha=0.5, mix_prob=0.5, label_smoothing=0.1)]:
            compare(phase, kernels=lambda name, device: name != "mix")
        M._choice_generator = lambda generator, host: None  # the choice made on the device, as a CUDA generator's
        compare(both)

        # Classes out of range are refused on the CPU, whichever path would mix them (the kernel writes NaN rows).
        M._fused = lambda name, device: True
        try:
            ed.mix_batch(x, torch.tensor([0, 1, 2, 3, 4, 5]), ed.Phase(mixup_alpha=0.8), num_classes=5,
                         generator=torch.Generator())
        except ValueError as e:
            assert "class indices in [0, 5)" in str(e), e
        else:
            raise AssertionError("class 5 of 5 was accepted")
    """)


def test_the_kernels_copy_an_unmixed_sample_whatever_its_partner_holds():
    # NOTE [ Exact unmixed samples ]: a weight of 0 copies the sample without reading its partner (lerp would carry a
    # NaN or inf across); the one-launch kernel, the blend kernel (apply_mix) and the PyTorch ops agree, also where a
    # Beta draw too small to move λ from 1 leaves a sample unmixed.
    _interpreted("""
        import math
        import warnings
        import torch
        import enlight_data as ed
        import enlight_data.mixing as M
        from enlight_data._mix_kernel import blend
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)  # numpy's, for inf - inf
        same = lambda a, b: torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True)
        x = torch.rand(6, 3, 5, 7, generator=torch.Generator().manual_seed(0))
        x[3, 0, 1, 1], x[4, 2, 0, 0] = math.nan, math.inf  # the partners of samples 0 and 1 (shift 3)
        weight = torch.tensor([0.0, 0.0, 0.3, 1.0, 0.5, 0.0]).view(6, 1, 1, 1)
        out = blend(x, torch.full_like(x, 7.0), shift=3, weight=weight)
        for i in (0, 1, 5):
            same(out[i], x[i])
        assert not out[4].isfinite().all()  # its own inf, mixed: as lerp
        M._fused = lambda name, device: False
        ref = M._blend(x, 3, weight=weight)  # the PyTorch ops: NaN for NaN (sample 3's own, at a weight of 1)
        assert torch.equal(out.isnan(), ref.isnan())
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6, equal_nan=True)
        y = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(1))
        unmixed = 0
        for phase in (ed.Phase(mixup_alpha=1.0, mix_prob=0.5), ed.Phase(mixup_alpha=1.0, mix_prob=0.5, mode="batch"),
                      ed.Phase(mixup_alpha=0.05)):  # Beta(0.05, 0.05): shares too small to move λ from 1
            for seed in range(5):
                results = {}
                for fused in (False, True):
                    M._fused = lambda name, device, f=fused: f
                    mixed = ed.mix_batch(x, y, phase, num_classes=4, generator=torch.Generator().manual_seed(seed))
                    params = M.draw_mix(phase, 6, 5, 7, generator=torch.Generator().manual_seed(seed))
                    applied = M.apply_mix(x, M.to_soft_targets(y, 4), params)
                    results[fused] = (*mixed, params, *applied)
                (rx, ry, rm, rp, rax, ray), (gx, gy, gm, gp, gax, gay) = results[False], results[True]
                assert torch.equal(gm, rm) and torch.equal(gp.lam, rp.lam)
                for i in (~rm).nonzero().flatten().tolist():
                    unmixed += 1
                    same(gx[i], x[i])
                    same(rx[i], x[i])
                for i in (~rp.mixed).nonzero().flatten().tolist():
                    same(gax[i], x[i])
                    same(rax[i], x[i])
                torch.testing.assert_close(gy, ry, atol=1e-6, rtol=1e-6)
                torch.testing.assert_close(gay, ray, atol=1e-6, rtol=1e-6)
        assert unmixed >= 5, unmixed
    """)


def test_a_loader_mixing_through_the_kernels_hands_out_the_pytorch_paths_batches():
    # enlighten()'s loader mixes through the same function as mix_batch: the kernel path (forced on the CPU, run by
    # the interpreter) gives the batches, soft targets and recorded mixed flags of the PyTorch path.
    _interpreted("""
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        import enlight_data as ed
        import enlight_data.mixing as M
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.rand(20, 3, 8, 6, generator=g), torch.randint(0, 4, (20,), generator=g))
        schedules = [ed.Schedule(1, during=ed.Phase(mixup_alpha=0.8, label_smoothing=0.1),
                                 after=ed.Phase(cutmix_alpha=1.0, mix_prob=0.5)),
                     ed.Schedule(1, during=ed.Phase(mixup_alpha=1.0, cutmix_alpha=1.0, mode="batch"))]
        runs = {}
        for fused in (False, True):
            M._fused = lambda name, device, f=fused: f
            runs[fused] = []
            for schedule in schedules:
                loader = ed.enlighten(DataLoader(data, batch_size=8, shuffle=True), schedule, num_classes=4, seed=3)
                for epoch in range(2):
                    for x, y in loader:
                        runs[fused].append((x, y, loader._batch[1]))
        assert len(runs[True]) == len(runs[False]) == 12
        for (kx, ky, km), (px, py, pm) in zip(runs[True], runs[False]):
            torch.testing.assert_close(kx, px, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(ky, py, atol=1e-6, rtol=1e-6)
            assert (km is None and pm is None) or torch.equal(km, pm)  # None: an epoch that does not mix
        assert sum(m is not None for _, _, m in runs[True]) == 9  # 3 of the 4 epochs mix
    """)


def test_fused_mixing_launches_a_handful_of_kernels():
    # The point of the kernels: on a GPU every op costs host time (NOTE [ Few kernels per CutMix draw ]).
    _interpreted("""
        import sys
        sys.path.insert(0, "tests")
        import torch
        import enlight_data as ed
        import enlight_data.mixing as M
        from helpers import CountLaunches, CountOps

        x, y = torch.rand(6, 3, 12, 10), torch.randint(0, 5, (6,))
        mixup, cutmix = ed.Phase(mixup_alpha=0.8), ed.Phase(cutmix_alpha=1.0)
        coin_cut = ed.Phase(cutmix_alpha=1.0, mix_prob=0.5, label_smoothing=0.1)
        coin_mix = ed.Phase(mixup_alpha=0.8, mix_prob=0.5, mode="batch")
        # Every kernel (NOTE [ One launch per mix ]): the Gamma pairs and one kernel for the draw, the input and the
        # labels; CutMix's box centres, the coin: one launch each.
        everything = [(mixup, ["mix"], 2), (cutmix, ["mix"], 3), (coin_cut, ["mix"], 4), (coin_mix, ["mix"], 3)]
        # Without it (the kernel missing or declining): mix_params for the draw and the labels, then the input's
        # blend kernel (NOTE [ Which blends are fused ]).
        split = [(mixup, ["mix_params", "blend"], 3), (cutmix, ["mix_params", "blend"], 4),
                 (coin_cut, ["mix_params", "blend"], 5), (coin_mix, ["mix_params", "blend"], 4)]
        for fused, budgets in ((lambda name, device: True, everything),
                               (lambda name, device: name != "mix", split)):
            M._fused = fused
            for phase, kernels, budget in budgets:
                ed.mix_batch(x, y, phase, num_classes=5, generator=torch.Generator())  # constants are made once
                with CountOps() as ops, CountLaunches() as launched:
                    ed.mix_batch(x, y, phase, num_classes=5, generator=torch.Generator())
                assert launched == kernels, launched
                ops = [op for op in ops if op not in ("empty", "empty_like", "aminmax")]  # allocations, a CPU check
                assert len(ops) + len(launched) <= budget, (phase, ops, launched)
    """)


def test_mix_kernels_reject_arguments_they_cannot_mix():
    from enlight_data._mix_kernel import blend, mix, mix_params

    x, box = torch.rand(4, 3, 8, 8), torch.zeros(4, 4)
    with pytest.raises(ValueError, match="exactly one of weight and box"):
        blend(x, torch.empty_like(x), shift=2, weight=torch.rand(4), box=box)
    with pytest.raises(ValueError, match=r"box should be a float32 \(4, 4\) tensor for \(B, C, H, W\) input"):
        blend(x.view(4, -1), torch.empty(4, 192), shift=2, box=box)
    with pytest.raises(ValueError, match=r"weight should hold one value per sample \(4\), got shape \(4, 3\)"):
        blend(x, torch.empty_like(x), shift=2, weight=torch.rand(4, 3))
    with pytest.raises(ValueError, match=r"out should be a float32, float16 or bfloat16 tensor of x's shape \(4, 3, 8, 8\)"):
        blend(x, torch.empty(4, 3, 8, 8, dtype=torch.uint8), shift=2, box=box)
    draw = torch.rand(4, 2)
    with pytest.raises(ValueError, match=r"draw should be a contiguous float32 \(n,\) or \(n, 2\) tensor, n = 1 or 4"):
        mix_params(torch.rand(3, 2), batch_size=4, shift=2)
    with pytest.raises(ValueError, match=r"draw should be a contiguous float32"):
        mix_params(draw.double(), batch_size=4, shift=2)
    with pytest.raises(ValueError, match=r"pixel should hold integer indices, got torch.float32"):
        mix_params(draw, batch_size=4, shift=2, pixel=torch.zeros(4), size=(8, 8))
    with pytest.raises(ValueError, match=r"coin should hold float32 uniforms, got torch.bool"):
        mix_params(draw, batch_size=4, shift=2, coin=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"target should be \(4,\) integer class indices, got torch.float32"):
        mix_params(draw, batch_size=4, shift=2, target=torch.zeros(4), num_classes=3)
    # The one-launch kernel checks the draws as mix_params does, the input and output as blend does, and more.
    with pytest.raises(ValueError, match=r"draw should be a contiguous float32 \(n,\) or \(n, 2\) tensor, n = 1 or 4"):
        mix(x, torch.empty_like(x), torch.rand(2, 2), shift=2)
    with pytest.raises(ValueError, match=r"out should be a float32, float16 or bfloat16 tensor of x's shape \(4, 3, 8, 8\)"):
        mix(x, torch.empty(4, 3, 8, 7), draw, shift=2)
    with pytest.raises(ValueError, match=r"CutMix needs \(B, C, H, W\) input, got shape \(4, 192\)"):
        mix(x.view(4, -1), torch.empty(4, 192), draw, shift=2, pixel=torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"mix needs a batch of two samples or more"):
        mix(x[:1], torch.empty_like(x[:1]), draw[:1], shift=0)
    # The kernels compute in float32: float64 (which the PyTorch ops keep) and complex input are declined, and so
    # is an output they cannot write.
    for bad_x, bad_out in ((x.double(), x.double()), (x.double(), x), (x.to(torch.complex64), x),
                           (x, x.double())):
        with pytest.raises(ValueError, match="should be an integer, float32|should be a float32, float16 or bfloat16"):
            blend(bad_x, torch.empty_like(bad_out), shift=2, weight=torch.rand(4))
        with pytest.raises(ValueError, match="should be an integer, float32|should be a float32, float16 or bfloat16"):
            mix(bad_x, torch.empty_like(bad_out), draw, shift=2)
    for empty in (torch.rand(4, 3, 0, 8), torch.rand(4, 3, 8, 0), torch.rand(0, 3, 8, 8), torch.rand(4, 0)):
        # Nothing to write: blend returns out as it is (no launch), mix declines (not a failure of the kernel).
        out = torch.empty_like(empty)
        assert blend(empty, out, shift=0, weight=torch.rand(empty.shape[0])) is out
        with pytest.raises(ValueError, match=r"mix needs a batch of two samples or more, each of one element"):
            mix(empty, out, torch.rand(empty.shape[0], 2), shift=0)


def test_resample_kernel_matches_grid_sample_for_boxes_flips_and_layouts():
    _interpreted("""
        import torch
        import enlight_data.augment as A
        from enlight_data._resample_kernel import resample
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (5, 3, 30, 37), dtype=torch.uint8, generator=g)
        aug = A.GpuAugment((11, 13), scale=(0.02, 1.0), ratio=(0.2, 5.0))
        p = aug.draw(5, 30, 37, generator=g)
        p = A.AugmentParams(torch.cat((p.boxes[:4], torch.tensor([[36.0, 0.0, 37.0, 1.0]]))),  # a 1-pixel crop
                            *(getattr(p, f) for f in ("flip", "jitter", "brightness", "contrast", "saturation", "hue")))
        ref = A._crop_resize_flip_grid(x.float(), p, (11, 13))
        assert p.flip.any() and not p.flip.all()
        got = resample(x, p.boxes, p.flip, torch.empty(5, 3, 11, 13))
        torch.testing.assert_close(got, ref, atol=2e-3, rtol=1e-5)  # 0..255 units: float rounding of positions
        assert torch.equal(got[4], x[4, :, :1, 36:].float().expand(3, 11, 13))
        walled = x.float()
        walled[4] = float("nan")  # nothing outside a crop is read, not even with weight 0 (0 * NaN is NaN)
        walled[4, :, 0, 36] = x[4, :, 0, 36].float()
        walled[3, :, int(p.boxes[3, 3]):] = float("inf")
        walled[3, :, :, int(p.boxes[3, 2]):] = float("inf")
        got = resample(walled, p.boxes, p.flip, torch.empty(5, 3, 11, 13))
        assert got.isfinite().all() and torch.equal(got[4], x[4, :, :1, 36:].float().expand(3, 11, 13))
        # Strided float input, channels_last float16 output with a per-channel affine map.
        xs = x.float().div(255).contiguous(memory_format=torch.channels_last)
        scale, shift = torch.tensor([2.0, 3.0, 4.0]), torch.tensor([-1.0, 0.0, 1.0])
        out = torch.empty(5, 3, 11, 13, dtype=torch.float16, memory_format=torch.channels_last)
        resample(xs, p.boxes, p.flip, out, scale=scale, shift=shift)
        expected = A._crop_resize_flip_grid(xs, p, (11, 13)) * scale.view(1, 3, 1, 1) + shift.view(1, 3, 1, 1)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out.float(), expected, atol=5e-3, rtol=2e-3)
    """)


def test_gpu_augment_through_the_resample_kernel_matches_the_pytorch_path():
    _interpreted("""
        import torch
        import enlight_data.augment as A
        jitter = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 256, (6, 3, 40, 44), dtype=torch.uint8, generator=g)
        images = [torch.randint(0, 256, (3, 20 + 5 * i, 31 - 4 * i), dtype=torch.uint8, generator=g) for i in range(4)]
        cases = [(x, {}), (x, dict(jitter, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))),
                 (x, dict(mean=(0.5,), std=(0.25,), out_dtype=torch.float16, channels_last=True)),
                 (x.float() / 255, dict(jitter, channels_last=True)), (images, dict(jitter)), (images, {}),
                 (torch.cat((x, x[:, :1]), dim=1), {}),  # RGBA: no jitter, but normalised (identity colour map)
                 (torch.cat((x, x[:, :1]), dim=1), dict(mean=(0.5,) * 4, std=(0.25,) * 4)), (x[:, :2], {})]
        for k, (inp, kw) in enumerate(cases):
            aug = A.GpuAugment(24, **kw)
            results = {}
            for backend in ("grid", "triton"):
                A._resample_backend = lambda *args, b=backend: b  # the CUDA choice, forced on the CPU
                results[backend] = aug(inp, generator=torch.Generator().manual_seed(2))
            ref, got = results["grid"], results["triton"]
            assert got.dtype == ref.dtype and got.shape == ref.shape, k
            assert got.is_contiguous(memory_format=torch.channels_last) == bool(kw.get("channels_last")), k
            tol = 2e-3 if got.dtype == torch.float16 else 1e-4
            torch.testing.assert_close(got.float(), ref.float(), atol=tol, rtol=tol, msg=str(k))
    """)


def test_fused_gpu_augment_launches_a_handful_of_kernels():
    # 77 launches per call on the PyTorch-op path (H200 profile); NOTE [ Few kernels per draw ].
    _interpreted("""
        import sys
        sys.path.insert(0, "tests")
        import torch
        import enlight_data.augment as A
        from helpers import CountLaunches, CountOps

        A._draw_backend = A._resample_backend = lambda *args: "triton"  # the CUDA choices, forced on the CPU
        A._colour_backend = lambda device, dtype, c: "triton"
        x = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
        norm = dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
        for kw, kernels, budget in [(dict(norm, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
                                     ["draw", "resample", "colour"], 18),
                                    (norm, ["draw", "resample"], 3)]:
            aug = A.GpuAugment(24, **kw)
            aug(x, generator=torch.Generator())  # constants are made once per device
            with CountOps() as ops, CountLaunches() as launched:
                aug(x, generator=torch.Generator())
            assert launched == kernels, launched
            ops = [op for op in ops if op not in ("empty", "empty_like")]  # allocations launch nothing
            assert len(ops) + len(launched) <= budget, (kw, ops, launched)
    """)


def test_gpu_augment_benchmark_times_each_fused_kernel_beside_its_pytorch_ops():
    # The rows a CUDA run adds, run here through the interpreter so that a GPU session does not find their bugs.
    _interpreted("""
        import torch
        import enlight_data.augment as A
        import enlight_data.mixing as M
        import benchmarks.gpu_augment as bench
        A._draw_backend = A._resample_backend = lambda *args: "triton"
        A._colour_backend = lambda device, dtype, c: "triton"
        M._fused = lambda name, device: True
        x = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8)
        rows, times = bench._augment_peers(x, 12, torch.device("cpu"), repeats=1, tv_batch=2, calls=2)
        names = {row["name"] for row in rows}
        assert {"enlight GpuAugment, PyTorch-op draw", "enlight GpuAugment, grid_sample",
                "crop+resize+flip: fused Triton", "colour map: fused Triton"} <= names, names
        assert A._draw_backend(None) == A._resample_backend(None, None) == "triton"  # put back after their rows
        rows, times = bench._mix_peers(x.float(), torch.randint(0, 10, (2,)), torch.device("cpu"), repeats=1, calls=1)
        names = {row["name"] for row in rows}
        assert {f"enlight mix_batch {kind} elem{suffix}" for kind in ("mixup", "cutmix")
                for suffix in (bench.OP_MIX, bench.TWO_KERNELS)} <= names, names
    """)


def test_arguments_a_kernel_does_not_handle_fall_back_for_that_call_only(monkeypatch):
    with pytest.raises(ValueError, match="name should be one of"):
        fused.kernel("nonsense")

    def picky(*args, **kwargs):
        raise fused.Unsupported("not for this kernel")

    monkeypatch.setattr(fused, "kernel", lambda name: picky)
    monkeypatch.setattr(fused, "FAILED", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fused.run("blend", 1, 2) is None  # no warning: the PyTorch ops run for this call
    assert fused.FAILED == {}  # and the kernel is tried again next time


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory"), torch.AcceleratorError("illegal address")])
def test_device_errors_propagate_and_leave_the_kernel_enabled(monkeypatch, error):
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise error
        return "ran"

    monkeypatch.setattr(fused, "kernel", lambda name: failing_once)
    monkeypatch.setattr(fused, "FAILED", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(type(error), match=str(error)):
            fused.run("mix", 1)
    assert fused.FAILED == {}  # not the kernel's failure: no fallback for the rest of the process
    assert fused.run("mix", 2) == "ran" and len(calls) == 2


def test_every_kernel_compiles_for_a_hopper_gpu(tmp_path):
    # The interpreter runs kernels as numpy code and accepts what the GPU compiler may reject (types, ops); this
    # compiles each kernel, in the specialisations the library launches, to an sm_90 (H100/H200) binary without a
    # GPU, through Triton's bundled ptxas.
    code = """
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from enlight_data import _colour_kernel, _draw_kernel, _mix_kernel, _resample_kernel

        F32 = "*fp32"

        def floats(*names):
            return dict.fromkeys(names, "fp32")

        # Pointer and float arguments by name; every other runtime argument is an i32 (sizes, strides).
        cases = [
            *[(_mix_kernel._mix_params_kernel,  # all 16 combinations of its flags, with int32 and uint8 classes
               dict(draw_ptr=F32, coin_ptr=F32, pixel_ptr="*i64", y_ptr="*i32" if gamma else "*u8", lam_ptr=F32,
                    second_ptr=F32, mixed_ptr="*i8", soft_ptr=F32,
                    **floats("prob", "fwidth", "fheight", "inv_area", "off", "hot")),
               dict(GAMMA=gamma, COIN=coin, CUT=cut, LABELS=labels,
                    BLOCK_N=_mix_kernel.LABEL_ROWS if labels else _mix_kernel.BOX_BLOCK, BLOCK_C=_mix_kernel.LABEL_BLOCK))
              for gamma in (False, True) for coin in (False, True) for cut in (False, True) for labels in (False, True)],
            *[(_mix_kernel._mix_kernel,  # all 16 combinations of its flags, uint8 or half input
               dict(x_ptr="*u8" if cut else "*fp16", out_ptr=F32 if gamma else "*bf16", draw_ptr=F32, coin_ptr=F32,
                    pixel_ptr="*i64", y_ptr="*i32" if coin else "*u8", lam_ptr=F32, second_ptr=F32, mixed_ptr="*i8",
                    soft_ptr=F32, **floats("prob", "fwidth", "fheight", "inv_area", "off", "hot")),
               dict(GAMMA=gamma, COIN=coin, CUT=cut, LABELS=labels, BLOCK_H=8, BLOCK_W=256,
                    BLOCK_C=_mix_kernel.LABEL_BLOCK))
              for gamma in (False, True) for coin in (False, True) for cut in (False, True) for labels in (False, True)],
            (_mix_kernel._blend_kernel, dict(x_ptr="*u8", out_ptr=F32, weight_ptr=F32, box_ptr=F32),
             dict(HAS_BOX=True, COMPLEMENT=False, BLOCK_H=8, BLOCK_W=256)),
            (_mix_kernel._blend_kernel, dict(x_ptr="*fp16", out_ptr="*fp16", weight_ptr=F32, box_ptr=F32, sxn="i64"),
             dict(HAS_BOX=False, COMPLEMENT=True, BLOCK_H=1, BLOCK_W=1024)),
            (_resample_kernel._resample_kernel, dict(x_ptr="*u8", box_ptr=F32, flip_ptr="*u8", out_ptr=F32,
                                                     scale_ptr=F32, shift_ptr=F32, **floats("inv_oh", "inv_ow", "ih", "iw")),
             dict(C=3, AFFINE=False, BLOCK=_resample_kernel.BLOCK)),
            (_resample_kernel._resample_kernel, dict(x_ptr=F32, box_ptr=F32, flip_ptr="*u8", out_ptr="*bf16",
                                                     scale_ptr=F32, shift_ptr=F32, **floats("inv_oh", "inv_ow", "ih", "iw")),
             dict(C=1, AFFINE=True, BLOCK=_resample_kernel.BLOCK)),
            (_colour_kernel._affine3_clamp_kernel, dict(x_ptr=F32, m_ptr=F32, b_ptr=F32, lo_ptr=F32, hi_ptr=F32,
                                                        y_ptr="*fp16"), dict(BLOCK=_colour_kernel.BLOCK)),
            (_draw_kernel._draw_kernel,
             dict(u_ptr=F32, consts_ptr=F32, boxes_ptr=F32, flags_ptr="*u8", factors_ptr=F32,
                  **floats("w", "h", "area_scale", "area_shift", "log_r0", "log_span", "fx", "fy", "fw", "fh",
                           "flip_p", "jitter_p")),
             dict(TRIES=10, K=28, JITTER=True, EXACT_EXP=True, BLOCK=_draw_kernel.BLOCK)),
        ]
        for fn, types, consts in cases:
            signature = {a: "constexpr" if a in consts else types.get(a, "i32") for a in fn.arg_names}
            binary = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts),
                                    target=GPUTarget("cuda", 90, 32))
            assert len(binary.asm["cubin"]) > 1000, fn.__name__
    """
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path), PYTHONPATH=os.pathsep.join([str(ROOT),
               os.environ.get("PYTHONPATH", "")]))
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)
    if done.returncode and "ptxas" in done.stderr and ("not found" in done.stderr or "No such file" in done.stderr):
        pytest.skip("this Triton has no bundled ptxas")
    assert done.returncode == 0, done.stdout + done.stderr


def test_resample_kernel_clamps_to_the_image_like_grid_samples_border_mode():
    # Parameters drawn for a larger image, applied to a smaller one: the PyTorch path clamps to the border; the kernel
    # must too, never reading outside the input (on a GPU: garbage or an illegal address at the next sync).
    _interpreted("""
        import torch
        import enlight_data.augment as A
        aug = A.GpuAugment(16)
        params = aug.draw(4, 96, 96, generator=torch.Generator().manual_seed(3))
        storage = torch.full((4 * 3 * 32 * 32 + 4096,), 255, dtype=torch.uint8)  # 255s just past the batch
        x = storage[: 4 * 3 * 32 * 32].view(4, 3, 32, 32)
        x.copy_(torch.randint(0, 200, x.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(4)))
        results = {}
        for backend in ("grid", "triton"):
            A._resample_backend = lambda *args, b=backend: b
            results[backend] = aug.apply(x, params)
        torch.testing.assert_close(results["triton"], results["grid"], atol=2e-4, rtol=0)
    """)


def test_blend_kernel_takes_a_negative_shift_as_its_positive_equivalent():
    _interpreted("""
        import torch
        from enlight_data import _mix_kernel
        x = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).view(4, 2, 3, 3)
        weight = torch.full((4,), 0.25)
        got = _mix_kernel.blend(x, torch.empty_like(x), shift=-1, weight=weight)
        want = _mix_kernel.blend(x, torch.empty_like(x), shift=3, weight=weight)
        assert torch.equal(got, want)
        torch.testing.assert_close(got, torch.lerp(x, x.roll(1, 0), 0.25))
    """)


_COMPILE_FOR_CUDA = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.errors import CompilationError
from enlight_data._colour_kernel import _affine3_clamp_kernel
from enlight_data._draw_kernel import _draw_kernel
from enlight_data._mix_kernel import _blend_kernel, _mix_kernel, _mix_params_kernel
from enlight_data._resample_kernel import _resample_kernel

# Each kernel with the constexprs its launcher passes, and its float (not int) scalar arguments.
CASES = [
    (_affine3_clamp_kernel, {"BLOCK": 1024}, set()),
    (_resample_kernel, {"C": 3, "AFFINE": True, "BLOCK": 512}, {"inv_oh", "inv_ow", "ih", "iw"}),
    (_resample_kernel, {"C": 1, "AFFINE": False, "BLOCK": 512}, {"inv_oh", "inv_ow", "ih", "iw"}),
    (_draw_kernel, {"TRIES": 10, "K": 28, "JITTER": True, "EXACT_EXP": True, "BLOCK": 128},
     {"w", "h", "area_scale", "area_shift", "log_r0", "log_span", "fx", "fy", "fw", "fh", "flip_p", "jitter_p"}),
    (_mix_params_kernel, {"GAMMA": True, "COIN": True, "CUT": True, "LABELS": True, "BLOCK_N": 8, "BLOCK_C": 256},
     {"prob", "fwidth", "fheight", "inv_area", "off", "hot"}),
    (_mix_params_kernel, {"GAMMA": False, "COIN": False, "CUT": False, "LABELS": True, "BLOCK_N": 8, "BLOCK_C": 256},
     {"prob", "fwidth", "fheight", "inv_area", "off", "hot"}),
    (_blend_kernel, {"HAS_BOX": True, "COMPLEMENT": False, "BLOCK_H": 8, "BLOCK_W": 256}, set()),
    (_blend_kernel, {"HAS_BOX": False, "COMPLEMENT": True, "BLOCK_H": 1, "BLOCK_W": 2048}, set()),
    (_mix_kernel, {"GAMMA": True, "COIN": True, "CUT": True, "LABELS": True, "BLOCK_H": 8, "BLOCK_W": 256,
                   "BLOCK_C": 256}, {"prob", "fwidth", "fheight", "inv_area", "off", "hot"}),
    (_mix_kernel, {"GAMMA": False, "COIN": False, "CUT": False, "LABELS": True, "BLOCK_H": 1, "BLOCK_W": 2048,
                   "BLOCK_C": 256}, {"prob", "fwidth", "fheight", "inv_area", "off", "hot"}),
]
# Pointers are *fp32 unless named here.
POINTERS = {"pixel_ptr": "*i64", "y_ptr": "*i64", "mixed_ptr": "*i8"}
failed = []
for kernel, consts, floats in CASES:
    names = kernel.arg_names
    runtime = {names[i] if isinstance(i, int) else i for i in kernel.do_not_specialize}
    for ones in (False, True):
        signature, constexprs = {}, {}
        for i, name in enumerate(names):
            if name in consts:
                signature[name], constexprs[(i,)] = "constexpr", consts[name]
            elif name.endswith("_ptr"):
                signature[name] = POINTERS.get(name, "*fp32")
            elif name in floats:
                signature[name] = "fp32"
            elif ones and name not in runtime:  # what Triton's JIT makes of an int argument equal to 1
                signature[name], constexprs[(i,)] = "constexpr", 1
            else:
                signature[name] = "i32"
        try:
            triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                           target=GPUTarget("cuda", 90, 32))
        except CompilationError as e:
            failed.append(f"{kernel.fn.__name__} {consts} ints {'= 1' if ones else 'i32'}: {str(e)[-300:]}")
        except Exception as e:  # no CUDA backend in this Triton (ptxas, LLVM): nothing to check here
            print(f"SKIP {type(e).__name__}: {str(e)[:200]}")
            sys.exit(3)
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_kernel_compiles_for_a_gpu_with_the_int_arguments_triton_makes_constants(tmp_path):
    # Triton's interpreter (the other tests) runs the kernels as Python: it does not specialise arguments. A real
    # launch turns an int argument equal to 1 (a channels_last batch's channel stride) into a constant, and the
    # colour kernel failed to compile on an H200 because of it (`.to()` on a constant). Compiling for sm_90 needs no
    # GPU: this catches that class of failure here.
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path), PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, "-c", _COMPILE_FOR_CUDA], env=env, capture_output=True, text=True,
                          timeout=240)
    if done.returncode == 3:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_launchers_grid_arithmetic_is_tritons():
    # The launchers size their grids with plain-Python cdiv and next_power_of_2 (Triton's cost host time per call).
    import triton

    from enlight_data._fused import cdiv, next_power_of_2

    for a in range(0, 70):
        assert next_power_of_2(a) == max(triton.next_power_of_2(a), 1), a
        for b in (1, 2, 3, 8, 256):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)
    assert next_power_of_2(2**31 + 1) == 2**32 and cdiv(2**40 + 1, 2**20) == 2**20 + 1
