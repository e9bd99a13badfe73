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
    assert {f"enlight mix_batch {kind} elem{suffix}" for kind in ("mixup", "cutmix")
            for suffix in (bench.OP_MIX, bench.TWO_KERNELS)} <= names
    assert all(len(times[name]) == 1 for name in names if name in times)
    assert mixing._fused("blend", torch.device("cpu"))  # the PyTorch-op rows put the backend choice back
    assert forced  # and the fused rows asked for the kernels


def test_a_broken_fused_kernel_costs_its_own_row_only(tmp_path, monkeypatch):
    # On CUDA the colour and resample rows call their Triton launchers directly: one that fails to compile or launch
    # must be recorded and left out, not end the run before its JSON is written (the library itself falls back).
    import benchmarks.gpu_augment as bench
    import enlight_data._fused as fused
    import enlight_data.augment as augment

    def broken(*args, **kwargs):
        raise RuntimeError("simulated Triton compile failure")

    monkeypatch.setattr(fused, "FAILED", {})
    monkeypatch.setattr(fused, "kernel", lambda name: broken if name in ("colour", "resample") else None)
    monkeypatch.setattr(augment, "_resample_backend", lambda *args: "triton")
    monkeypatch.setattr(augment, "_colour_backend", lambda device, dtype, channels: "triton")
    out = tmp_path / "g.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's own fallback warning
        bench.main(["--quick", "--batch", "4", "--repeats", "1", "--device", "cpu", "--threads", "1",
                    "--out", str(out)])
    written = json.loads(out.read_text())
    assert set(written["fused_kernels_failed"]) == {"colour", "resample"}
    names = {row["name"] for row in written["results"]}
    assert "enlight GpuAugment" in names and not any("fused Triton" in name for name in names)


def test_mixing_is_held_to_both_lerp_floors(tmp_path, monkeypatch):
    # NOTE [ Two lerp floors ]: the strict floor and the anchors' lerp are both peers, and each of our rows gets a
    # paired ratio against each (times faked: the strict lerp 1 s, the anchors' 2 s, everything else 1.5 s).
    import benchmarks.gpu_augment as bench

    floors = {bench.LERP: 1.0, bench.ANCHOR_LERP: 2.0}

    def fake_times(fns, *, repeats, queued=None, **kwargs):
        if queued is not None:
            queued.update({name: 1 for name in fns})
        return {name: [floors.get(name, 1.5)] * repeats for name in fns}

    monkeypatch.setattr(bench, "time_interleaved", fake_times)
    out = tmp_path / "g.json"
    bench.main(["--quick", "--batch", "4", "--repeats", "1", "--device", "cpu", "--threads", "1", "--out", str(out)])
    ratios = json.loads(out.read_text())["ratios"]
    ours = {row["name"] for row in json.loads(out.read_text())["results"]
            if row["name"].startswith("enlight mix_batch") and not row["name"].endswith((bench.OP_MIX, bench.TWO_KERNELS))}
    assert len(ours) == 6 and set(ratios["mix_over_lerp"]) == set(ratios["mix_over_anchor_lerp"]) == ours
    assert all(v == pytest.approx(1 / 1.5) for v in ratios["mix_over_lerp"].values())
    assert all(v == pytest.approx(2 / 1.5) for v in ratios["mix_over_anchor_lerp"].values())
    assert not any(ratios["mix_over_lerp_met"].values()) and all(ratios["mix_over_anchor_lerp_met"].values())


def test_the_anchors_lerp_row_computes_the_anchor_scripts_lerp(monkeypatch):
    # What ../shared/anchors/gpu_anchor_bench.py times: the batch lerped towards its flipped copy.
    import torch

    import benchmarks.gpu_augment as bench

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, bench.NUM_CLASSES, (4,), generator=g)
    timed = {}
    real = bench.time_interleaved
    monkeypatch.setattr(bench, "time_interleaved", lambda fns, **kwargs: timed.update(fns) or real(fns, **kwargs))
    bench._mix_peers(x, y, torch.device("cpu"), repeats=1, calls=1)
    w = torch.rand((4, 1, 1, 1), generator=torch.Generator().manual_seed(0))  # the weights _mix_peers draws
    torch.testing.assert_close(timed[bench.ANCHOR_LERP](), x + w * (x.flip(0) - x))


# --------------------------------------------------------------------------- results paths and the "quick" field
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _stub_loader_overhead(monkeypatch):
    import benchmarks.loader_overhead as bench

    row = {"num_workers": 0, "plain_img_per_s": 1.0, "enlighten_img_per_s": 1.0, "time_ratio_median": 1.0,
           "time_ratio_min": 1.0, "time_ratio_max": 1.0, "time_ratio_of_medians": 1.0,
           "main_process_cpu_ratio_median": 1.0, "gc_per_1k_samples": {"plain": [0.0], "enlighten": [0.0]}}
    costs = {"record_step_us": 1.0, "record_single_call_median_us": 1.0, "select_10pct_ms": 1.0,
             "finalize_epoch_ms": 1.0}
    monkeypatch.setattr(bench, "_throughput", lambda args, workers: dict(row, num_workers=workers))
    monkeypatch.setattr(bench, "_table_costs", lambda repeats: costs)
    monkeypatch.setattr(bench, "_breakdown", lambda args: {"num_workers": 0, "epochs": 1,
                                                           "us_per_sample": {"plain": 1.0}, "time_ratio_median": {}})
    return bench, ["--workers", "0"]


def _stub_distributed_sync(monkeypatch):
    import benchmarks.distributed_sync as bench

    check = {"median_s": 1e-4, "min_s": 1e-4, "max_s": 2e-4, "repeats": 10}
    # No processes: the JSON's plumbing only.
    monkeypatch.setattr(bench, "_spawn", lambda *args, **kwargs: {"rows": [], "pass_check": check})
    return bench, []


def _tiny_streaming(monkeypatch):
    import benchmarks.streaming as bench

    # Real, tiny: 16 photos, one round, no workers; --decode-compare adds the GpuAugment peer (item 12's warning).
    return bench, ["--samples", "16", "--rounds", "1", "--workers", "0", "--batch-size", "8", "--buffer", "8",
                   "--device", "cpu", "--decode-compare"]


def _tiny_gpu_augment(monkeypatch):
    import benchmarks.gpu_augment as bench

    return bench, ["--batch", "4", "--repeats", "1", "--device", "cpu", "--threads", "1"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # webdataset's unclosed tar files
@pytest.mark.parametrize("name, setup", [
    ("loader_overhead", _stub_loader_overhead),
    ("distributed_sync", _stub_distributed_sync),
    ("streaming", _tiny_streaming),
    ("gpu_augment", _tiny_gpu_augment),
])
def test_quick_runs_write_to_the_quick_folder_and_say_so(tmp_path, monkeypatch, name, setup):
    import benchmarks.common as common

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    bench, extra = setup(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. high_loss_removal(fraction=0.0) for a peer that removes nothing
        # but not another package's deprecations (an older matplotlib's, of its own dependencies' APIs)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(?!enlight_data|benchmarks)")
        bench.main(["--quick", *extra])
    assert not (tmp_path / f"{name}.json").exists()  # the full run's file is untouched
    written = json.loads((tmp_path / "quick" / f"{name}.json").read_text())
    assert written["quick"] is True


def test_full_runs_default_to_the_results_folder(tmp_path, monkeypatch):
    import benchmarks.common as common

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    bench, extra = _stub_loader_overhead(monkeypatch)
    bench.main(extra)
    assert json.loads((tmp_path / "loader_overhead.json").read_text())["quick"] is False
    assert common.default_out("streaming", True) == tmp_path / "quick" / "streaming.json"


# --------------------------------------------------------------------------- every script runs as a file
RUNNABLE = ("distributed_sync", "gpu_augment", "loader_overhead", "profile_augment", "reproduce", "run_all",
            "streaming")


def test_every_benchmark_script_runs_as_a_file_from_any_folder(tmp_path):
    # `python benchmarks/x.py` puts benchmarks/ (not the repository root) first on sys.path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    procs = {name: subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--help"], cwd=tmp_path,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in RUNNABLE}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}.py --help failed:\n{err}"
        assert "usage:" in out


# --------------------------------------------------------------------------- loader_overhead: recording cost
def test_record_step_cost_counts_the_fold_of_every_64th_call(monkeypatch):
    import benchmarks.common as common
    import benchmarks.loader_overhead as bench
    import enlight_data as ed
    from enlight_data.feedback import _FOLD_EVERY

    clock = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])

    class FoldingTable:  # 1 us per call, and every 64th call also folds: 64 us more
        def __init__(self, size: int) -> None:
            self.calls = 0

        def record(self, *args, **kwargs) -> None:
            self.calls += 1
            clock[0] += 1e-6 + (64e-6 if self.calls % _FOLD_EVERY == 0 else 0.0)

        def state_dict(self) -> dict:
            return {}

        def load_state_dict(self, state: dict) -> None:
            pass

        def select_high_loss(self, fraction: float) -> None:
            pass

        def finalize_epoch(self) -> None:
            pass

    monkeypatch.setattr(ed, "LossTable", FoldingTable)
    costs = bench._table_costs(repeats=3)
    assert costs["record_step_us"] == pytest.approx(2.0)  # (64 * 1 + 64) / 64: the fold is in the per-step cost
    assert costs["record_single_call_median_us"] == pytest.approx(1.0)  # what the single-call median sees


def test_the_overhead_breakdown_pairs_each_wrapped_loop_with_the_plain_one(monkeypatch):
    # Four real loops over tiny data, interleaved in a fixed order (plain, recorded, unrecorded, no removal); each
    # epoch's wall time is faked by that order. The ratios are per sample, so a removal epoch's fewer samples count.
    import argparse
    import itertools

    import benchmarks.loader_overhead as bench

    walls = itertools.cycle([1.0, 1.2, 0.9, 0.95])
    monkeypatch.setattr(bench, "_timed_epoch", lambda run: (run(), next(walls), 0.0))
    result = bench._breakdown(argparse.Namespace(samples=1024, epochs=3))
    ratios, per_sample = result["time_ratio_median"], result["us_per_sample"]
    assert list(ratios) == ["removal, recording every step", "removal, no recording", "no removal, no recording"]
    assert per_sample["plain"] == pytest.approx(1e6 / 1024)
    kept = 1024 - 102  # 10 % removed
    assert ratios["removal, recording every step"] == pytest.approx(1.2 * 1024 / kept)
    assert ratios["removal, no recording"] == pytest.approx(0.9 * 1024 / kept)
    assert ratios["no removal, no recording"] == pytest.approx(0.95)


# --------------------------------------------------------------------------- streaming: paired ratios, device
def test_streaming_headline_ratios_are_paired_with_ratios_of_medians_beside():
    from benchmarks.streaming import _ratios

    # Round 3 ran on a slow machine for every peer: round by round, stream is 1.0x webdataset and removal 0.8x.
    times = {"webdataset": [1.0, 1.0, 10.0], "stream": [1.0, 1.0, 10.0], "stream_removed": [0.8, 0.8, 8.0]}
    times["stream"] = [1.0, 1.2, 10.0]
    times["webdataset"] = [1.0, 1.0, 12.5]
    r = _ratios(times, times, {k: [1 / t for t in v] for k, v in times.items()})
    assert r["ratio_stream_vs_webdataset"] == pytest.approx(1.0)  # median of 1.0, 1.2, 0.8
    assert r["ratio_of_medians_stream_vs_webdataset"] == pytest.approx(1.2)  # median 1.2 / median 1.0
    assert r["ratio_removed_vs_full"] == pytest.approx(0.8)
    assert r["cpu_ratio_stream_vs_webdataset"] == pytest.approx(1.0)
    assert "ratio_gpu_decode_vs_cpu_decode" not in r


def test_streaming_defaults_to_cuda_when_present(monkeypatch):
    import benchmarks.streaming as bench

    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    assert bench._parser().parse_args([]).device == "cuda"
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    assert bench._parser().parse_args([]).device == "cpu"


def test_run_all_passes_the_device_and_records_each_benchmarks_device(tmp_path, monkeypatch):
    import benchmarks.run_all as run_all

    commands: list[list[str]] = []
    fake = {
        "loader_overhead": {"env": {"device": "cpu (x86_64)"}, "throughput": []},
        "streaming": {"device": "NVIDIA H200", "ratio_stream_vs_webdataset": 1.0, "ratio_removed_vs_full": 0.8},
    }

    def run(cmd, **kwargs):
        commands.append(cmd)
        name = cmd[2].split(".")[1]
        Path(cmd[cmd.index("--out") + 1]).write_text(json.dumps(fake[name]))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(run_all.subprocess, "run", run)
    monkeypatch.setattr(run_all.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(run_all, "environment", lambda device: {"device": device})
    monkeypatch.setattr(run_all, "_chart", lambda rows, path: None)
    summary = run_all.main(["--only", "loader_overhead", "streaming", "--out", str(tmp_path / "all.json")])
    streaming_cmd = next(c for c in commands if c[2] == "benchmarks.streaming")
    assert streaming_cmd[streaming_cmd.index("--device") + 1] == "cuda"
    assert "--device" not in next(c for c in commands if c[2] == "benchmarks.loader_overhead")
    assert summary["devices"] == {"loader_overhead": "cpu (x86_64)", "streaming": "NVIDIA H200"}
    assert json.loads((tmp_path / "all.json").read_text())["devices"] == summary["devices"]


def test_run_all_records_a_failed_benchmark_and_still_runs_the_others(tmp_path, monkeypatch):
    # E.g. streaming on a machine without webdataset: the other benchmarks' results still reach all.json, the failure
    # is recorded there, and the command exits non-zero.
    import benchmarks.run_all as run_all

    ran: list[str] = []

    def run(cmd, **kwargs):
        name = cmd[2].split(".")[1]
        ran.append(name)
        if name == "streaming":
            return subprocess.CompletedProcess(cmd, 1)
        Path(cmd[cmd.index("--out") + 1]).write_text(json.dumps({"env": {"device": "cpu"}, "throughput": []}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(run_all.subprocess, "run", run)
    monkeypatch.setattr(run_all, "environment", lambda device: {"device": device})
    monkeypatch.setattr(run_all, "_chart", lambda rows, path: None)
    with pytest.raises(SystemExit, match="streaming"):
        run_all.main(["--only", "streaming", "loader_overhead", "--out", str(tmp_path / "all.json")])
    assert ran == ["streaming", "loader_overhead"]
    written = json.loads((tmp_path / "all.json").read_text())
    assert written["failed"] == {"streaming": 1} and set(written["results"]) == {"loader_overhead"}


# --------------------------------------------------------------------------- distributed_sync
def test_distributed_sync_interleaves_dense_and_sparse_rounds():
    from benchmarks.distributed_sync import _rounds

    order = _rounds(["dense", "sparse"], 3)
    assert order == [(0, "dense"), (0, "sparse"), (1, "sparse"), (1, "dense"), (2, "dense"), (2, "sparse"),
                     (3, "sparse"), (3, "dense")]
    assert _rounds(["sparse"], 2) == [(0, "sparse"), (1, "sparse"), (2, "sparse")]


@pytest.mark.parametrize("argv, message", [
    (["--world-size", "1"], "--world-size should be >= 2 .*got 1"),
    (["--repeats", "0"], "--repeats should be >= 1, got 0"),
])
def test_distributed_sync_rejects_arguments_it_cannot_run(argv, message, capsys, monkeypatch):
    import re

    import benchmarks.distributed_sync as bench

    monkeypatch.setattr(bench, "_spawn", lambda *a, **k: pytest.fail("should stop before spawning"))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


# --------------------------------------------------------------------------- gpu_augment
@pytest.mark.parametrize("argv, message", [
    (["--batch", "7"], "--batch should be an even number >= 2 .*got 7"),
    (["--batch", "0"], "--batch should be an even number >= 2 .*got 0"),
    (["--repeats", "0"], "--repeats should be >= 1, got 0"),
])
def test_gpu_augment_rejects_batches_timm_cannot_pair(argv, message, capsys):
    import re

    import benchmarks.gpu_augment as bench

    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--device", "cpu", *argv])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


# --------------------------------------------------------------------------- profile_augment
def test_profiled_host_time_is_the_unprofiled_time_before_the_sync(monkeypatch):
    import torch

    import benchmarks.profile_augment as bench

    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(bench, "sync", lambda device: clock.__setitem__(0, clock[0] + 10.0))  # a long device wait

    def call() -> None:  # 2 ms of host work per call
        clock[0] += 2e-3

    r = bench.profile_calls(call, torch.device("cpu"), calls=4, top=3)
    assert r["host_ms_per_call"] == pytest.approx(2.0)  # the wait for the device is not host time
    assert r["wall_ms_per_call"] == pytest.approx(2.0 + 10.0 / 4 * 1e3)
    assert "profiled_self_cpu_ms_per_call" in r


# --------------------------------------------------------------------------- .ci/device_check.sh
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
@pytest.mark.parametrize("failing", [None, "gpu_augment", "skip"])
def test_device_check_records_each_steps_exit_code_and_fails_when_one_fails(tmp_path, failing):
    # The GPU is replaced by stubs: `python3` echoes its arguments and fails for the step named in FAIL_STEP.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stub'\n")
    (fake_bin / "python3").write_text(
        "#!/bin/sh\ncat >/dev/null\necho \"stub python3 $*\"\n"
        "case \"$*\" in *\"$FAIL_STEP\"*) [ -n \"$FAIL_STEP\" ] && exit 3;; esac\nexit 0\n")
    for f in fake_bin.iterdir():
        f.chmod(0o755)
    out = tmp_path / "out"
    skip = failing == "skip"
    failing = None if skip else failing
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", OUT=str(out), FAIL_STEP=failing or "",
               SKIP="streaming profile_augment" if skip else "")
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "device_check.sh")], cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    steps = (out / "steps.txt").read_text().splitlines()
    if skip:
        assert steps[3:5] == ["profile_augment skipped", "streaming skipped"]
        assert steps[-1].startswith("device_check: all steps passed (3 steps ran, ")
        return
    names = ["kernels", "cuda_tests", "gpu_augment", "profile_augment", "streaming"]
    assert [line.split()[0] for line in steps[:-1]] == names  # every step ran and wrote its exit code
    for name, line in zip(names, steps):
        assert f"rc={3 if name == failing else 0}" in line
    assert (out / "cuda_tests.txt").read_text().count("stub python3 -m pytest") == 1  # written as the step ended
    if failing:
        assert proc.returncode == 1
        assert steps[-1].startswith(f"device_check: FAILED {failing}:3")
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert steps[-1].startswith("device_check: all steps passed")


def test_device_check_caps_fit_the_suggested_timeout():
    import re

    script = (ROOT / ".ci" / "device_check.sh").read_text()
    suggested = int(re.search(r'run\(command="bash \.ci/device_check\.sh".*timeout_s=(\d+)\)', script)[1])
    main_part = script.split('if [ "${REPRODUCE:-0}" = 1 ]')[0] + script.split("\nfi\n", 2)[-1]
    caps = [int(c) for c in re.findall(r"^\s*(?:timeout|step \w+) (\d+) ", main_part, flags=re.M)]
    assert len(caps) == 7 and sum(caps) <= suggested - 20
    reproduce = re.search(r"step reproduce (\d+) ", script)
    assert sum(caps[:2]) + int(reproduce[1]) <= suggested - 20
    assert suggested <= 600  # the device tool's limit for one command


def test_time_interleaved_queues_one_call_per_round_for_a_slow_peer(capsys):
    import time

    counts = {"fast": 0, "slow": 0}

    def fast():
        counts["fast"] += 1

    def slow():
        counts["slow"] += 1
        time.sleep(0.3)

    queued = {}
    # A threshold far from both peers' times, so that a descheduled fast call on a loaded machine is still fast.
    times = time_interleaved({"fast": fast, "slow": slow}, repeats=3, warmup=1, calls=4, slow_s=0.15, progress=True,
                             queued=queued)
    assert queued == {"fast": 4, "slow": 1}
    # warmup, the warm classifying call, then the rounds: 4 calls of the fast peer, 1 of the slow one
    assert counts == {"fast": 1 + 1 + 3 * 4, "slow": 1 + 1 + 3}
    assert len(times["slow"]) == 3 and min(times["slow"]) >= 0.3
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0].strip() for line in lines] == ["warm call of fast", "warm call of slow"]
    assert lines[0].endswith("4 per round") and lines[1].endswith("1 per round")


# --------------------------------------------------------------------------- a peer library that is not installed
@pytest.mark.parametrize("calls", ["1", "2"])
def test_gpu_augment_and_profile_skip_kornia_where_it_is_missing(tmp_path, monkeypatch, calls):
    # Kornia is one peer among several: without it (a bare CUDA machine) its rows are skipped, as timm's are, and
    # the ratio against it is None, instead of an ImportError before any JSON is written.
    import benchmarks.gpu_augment as bench
    import benchmarks.profile_augment as profile

    for name in ("kornia", "kornia.augmentation"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    out = tmp_path / "g.json"
    bench.main(["--quick", "--batch", "4", "--repeats", "1", "--device", "cpu", "--threads", "1",
                "--calls-per-round", calls, "--out", str(out)])
    written = json.loads(out.read_text())
    skipped = {row["name"] for row in written["results"] if row["img_per_s"] is None}
    assert {bench.KORNIA, "kornia RandomMixUpV2", "kornia RandomCutMixV2"} <= skipped
    assert written["ratios"]["gpu_augment_over_kornia"] is None
    assert written["ratios"]["gpu_augment_over_kornia_sync_per_call"] is None
    assert written["ratios"]["gpu_augment_over_kornia_met"] is None
    assert "enlight GpuAugment" in {row["name"] for row in written["results"] if row["img_per_s"]}
    result = profile.main(["--device", "cpu", "--batch", "4", "--in-size", "16", "--out-size", "8", "--calls", "1",
                           "--out", str(tmp_path / "p.json")])
    assert result["ratios"]["wall_kornia_over_gpu_augment"] is None and "enlight GpuAugment" in result["results"]


def test_profile_augment_writes_to_the_results_folder_whatever_the_working_directory():
    import benchmarks.common as common
    import benchmarks.profile_augment as profile

    assert profile.DEFAULT_OUT == common.RESULTS_DIR / "profile_augment.json"
    assert profile._parser().parse_args([]).out.is_absolute()
