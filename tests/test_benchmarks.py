"""The shared timing plumbing of ``benchmarks/`` (the benchmarks themselves are scripts, not tests)."""

from benchmarks.common import paired_ratio, time_interleaved


def test_time_interleaved_runs_each_function_once_per_round_in_order():
    calls: list[str] = []
    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds
    assert set(times) == {"a", "b"} and all(len(t) == 3 and min(t) >= 0 for t in times.values())


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # Round 2 ran on a slow machine for both peers: the paired ratio is unaffected.
    slow, fast = [2.0, 40.0, 2.2, 1.8], [1.0, 20.0, 1.1, 0.9]
    assert paired_ratio(slow, fast) == 2.0
    assert paired_ratio([3.0, 1.0, 2.0], [1.0, 1.0, 1.0]) == 2.0


def test_time_interleaved_queues_calls_per_round_and_reports_seconds_per_call(monkeypatch):
    import pytest

    import benchmarks.common as common

    clock = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    calls: list[str] = []

    def work() -> None:  # each call takes 2 s on the fake clock
        calls.append("a")
        clock[0] += 2.0

    times = time_interleaved({"a": work}, repeats=2, warmup=1, calls=3)
    assert calls == ["a"] * 7  # one warm-up call, then two rounds of three
    assert times["a"] == [2.0, 2.0]  # seconds per call, not per round of three
    with pytest.raises(ValueError, match="calls should be >= 1, got calls=0"):
        time_interleaved({"a": work}, repeats=1, calls=0)


def test_the_rejected_conv1d_colour_map_computes_the_same_map():
    import torch

    from benchmarks.gpu_augment import _colour_map_conv

    g = torch.Generator().manual_seed(0)
    flat, mat, bias = torch.rand(4, 3, 30, generator=g), torch.randn(4, 3, 3, generator=g), torch.randn(4, 3, generator=g)
    expected = torch.einsum("nij,njp->nip", mat, flat) + bias.unsqueeze(2)
    torch.testing.assert_close(_colour_map_conv(flat, mat, bias, torch.empty_like(flat)), expected)


def test_mixing_rows_time_the_pytorch_op_path_beside_the_fused_one(monkeypatch):
    # On CUDA the benchmark adds rows of mix_batch without the fused kernels; here the CPU stands in for it.
    import torch

    import benchmarks.gpu_augment as bench
    import enlight_data._fused as fused
    import enlight_data.mixing as mixing

    forced = []
    monkeypatch.setattr(mixing, "_fused", lambda name, device: forced.append(name) or True)
    monkeypatch.setattr(fused, "run", lambda *args, **kwargs: None)  # "the kernel could not run": PyTorch ops
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, bench.NUM_CLASSES, (4,), generator=g)
    rows, times = bench._mix_peers(x, y, torch.device("cpu"), repeats=1, calls=1)
    names = {row["name"] for row in rows}
    assert {f"enlight mix_batch {kind} elem{bench.OP_MIX}" for kind in ("mixup", "cutmix")} <= names
    assert all(len(times[name]) == 1 for name in names if name in times)
    assert mixing._fused("blend", torch.device("cpu"))  # the PyTorch-op rows put the backend choice back
    assert forced  # and the fused rows asked for the kernels
