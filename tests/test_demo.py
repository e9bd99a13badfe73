"""The digits demo, and the pieces of ``benchmarks/`` it shares: IDX reader, Welch's t-test, the driver."""

from __future__ import annotations

import gzip
import json
import math
import re
import struct
import sys
import warnings
from pathlib import Path

import pytest
import torch

from enlight_data import demo

# --------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_demo_quick_prints_a_table_and_leaves_global_state(capsys, forbid_global_rng):
    threads = torch.get_num_threads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert demo.main(["--quick", "--no-progress"]) == 0
    # ResourceWarning: an earlier test's unclosed file collected during the run is not the demo's.
    ours = [f"{w.category.__name__}: {w.message}" for w in caught
            if not issubclass(w.category, (DeprecationWarning, ResourceWarning))]
    assert ours == []  # the main job uses the library as the README says: nothing to warn about
    out = capsys.readouterr().out
    assert torch.get_num_threads() == threads
    rows = {}
    for name in ("Mixup throughout", "Mixup Pause", "High-Loss Removal"):
        match = re.search(rf"^{name}\s+([0-9.]+)\s+(\d+) ep\s+(\d+)", out, flags=re.M)
        assert match, f"no table row for {name} in:\n{out}"
        rows[name] = (float(match[1]), int(match[2]), int(match[3]))
    assert all(0.0 <= acc <= 1.0 for acc, _, _ in rows.values())
    assert rows["Mixup throughout"][1] == 0  # the baseline has no period
    assert rows["Mixup Pause"][1] == 1  # a tenth of 3 epochs, at least 1
    assert rows["High-Loss Removal"][1] == 2 and rows["High-Loss Removal"][2] > 0
    # The period is 1 epoch, but High-Loss Removal runs its 2-epoch minimum: the banner and the table say so.
    assert "period 1 epoch(s) (High-Loss Removal: 2, its 2-epoch minimum)" in out
    assert "High-Loss Removal ran a 2-epoch period, not 1" in out
    assert "removed: samples left out, summed over the epochs" in out
    # The per-epoch phase log: the pause has no Mixup in its period, Mixup after it.
    assert re.search(r"\[Mixup Pause\] epoch\s+0 \| in period \| alpha 0\.00", out)
    assert re.search(r"\[Mixup Pause\] epoch\s+1 \| after\s+\| alpha 0\.40", out)


def test_demo_rejects_bad_epochs(capsys):
    assert demo.main(["--epochs", "0", "--no-progress"]) == 2
    assert "--epochs should be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--fraction", "1.5"], r"--fraction should be in [0, 1), got 1.5"),
    (["--fraction", "-0.1"], r"--fraction should be in [0, 1), got -0.1"),
    (["--alpha", "-1"], r"--alpha should be 0 or in [1e-06, 1e+06], got -1.0"),
    (["--alpha", "nan"], r"--alpha should be 0 or in [1e-06, 1e+06], got nan"),
    (["--alpha", "inf"], r"--alpha should be 0 or in [1e-06, 1e+06], got inf"),
    (["--alpha", "1e-9"], r"--alpha should be 0 or in [1e-06, 1e+06], got 1e-09"),
    (["--seed", "-1"], r"--seed should be in [0, 2**64), got -1"),
    (["--seed", str(2**70)], rf"--seed should be in [0, 2**64), got {2**70}"),
    (["--period", "-1"], r"--period should be >= 1, got -1"),
    (["--period", "0"], r"--period should be >= 1, got 0"),
])
def test_demo_rejects_bad_hyper_parameters_before_training(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(demo, "train_and_evaluate", lambda *a, **k: pytest.fail("should stop before training"))
    assert demo.main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("usage: ")


def test_demo_of_one_epoch_says_nothing_of_a_longer_removal_period(capsys):
    assert demo.main(["--quick", "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^High-Loss Removal\s+[0-9.]+\s+1 ep", out, flags=re.M), out
    assert "2-epoch" not in out  # one epoch trained: every strategy's period is the whole run


def test_the_command_line_names_itself_and_asks_for_a_command(capsys, monkeypatch):
    from enlight_data.__main__ import main

    monkeypatch.setattr(sys, "argv", ["/x/enlight_data/__main__.py"])
    with pytest.raises(SystemExit) as stop:
        main([])
    assert stop.value.code == 2
    assert "python -m enlight_data: error: a command is required: demo" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["/usr/bin/enlight-data"])
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert capsys.readouterr().out.startswith("usage: enlight-data demo ")


def test_demo_help_says_high_loss_removal_runs_at_least_two_epochs(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "High-Loss Removal runs at least 2 epochs" in help_text


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_stratified_split_is_a_seeded_partition_per_class(fraction):
    labels = torch.arange(40) % 4
    kept, held = demo.stratified_split(labels, fraction=fraction, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.sort(torch.cat([kept, held])).values, torch.arange(40))
    assert torch.bincount(labels[held], minlength=4).tolist() == [round(10 * fraction)] * 4
    again = demo.stratified_split(labels, fraction=fraction, generator=torch.Generator().manual_seed(3))
    assert torch.equal(held, again[1])
    other = demo.stratified_split(labels, fraction=fraction, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(held, other[1])


def test_stratified_split_errors():
    with pytest.raises(ValueError, match=r"fraction should be in \(0, 1\), got fraction=1.0"):
        demo.stratified_split(torch.zeros(4), fraction=1.0, generator=torch.Generator())
    with pytest.raises(TypeError, match="generator should be a torch.Generator"):
        demo.stratified_split(torch.zeros(4), fraction=0.5, generator=0)  # type: ignore[arg-type]


def test_small_resnet_shapes_and_errors():
    model = demo.SmallResNet(1, 10, widths=(8, 16), blocks=2, stem_stride=2)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="stem_stride should be 1 or 2"):
        demo.SmallResNet(1, 10, stem_stride=3)
    with pytest.raises(ValueError, match="widths should be a non-empty sequence"):
        demo.SmallResNet(1, 10, widths=())


def test_train_and_evaluate_is_a_pure_function_of_its_seed(forbid_global_rng):
    import enlight_data as ed

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    images = torch.randn(64, 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1).float()
    data = demo.ImageSet(images, labels)
    kwargs = dict(train=data, test=data, num_classes=4, epochs=2, batch_size=16,
                  model_fn=lambda: demo.SmallResNet(1, 4, widths=(4,)))
    a = demo.train_and_evaluate(ed.mixup_pause(1, alpha=0.4), seed=5, **kwargs)
    b = demo.train_and_evaluate(ed.mixup_pause(1, alpha=0.4), seed=5, **kwargs)
    assert [h["accuracy"] for h in a.history] == [h["accuracy"] for h in b.history]
    assert a.test_accuracy == b.test_accuracy
    assert a.period_end_epoch == 1 and [h["in_period"] for h in a.history] == [True, False]


# --------------------------------------------------------------------------- IDX reader


def _idx_bytes(code: int, fmt: str, shape: tuple[int, ...], values: list) -> bytes:
    header = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return header + struct.pack(f">{len(values)}{fmt}", *values)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_plain_and_gzip(tmp_path, compress):
    from benchmarks.idx import read_idx

    opener = gzip.open if compress else open
    cases = {
        "u8": (0x08, "B", (2, 3, 4), list(range(24)), torch.uint8),
        "i32": (0x0C, "i", (3,), [-7, 0, 2**31 - 1], torch.int32),
        "f32": (0x0D, "f", (2, 2), [0.5, -1.25, 3.0, 1e-3], torch.float32),
        "i16": (0x0B, "h", (2,), [-300, 300], torch.int16),
    }
    for name, (code, fmt, shape, values, dtype) in cases.items():
        path = tmp_path / f"{name}.idx"
        with opener(path, "wb") as f:
            f.write(_idx_bytes(code, fmt, shape, values))
        t = read_idx(path)
        assert t.dtype == dtype and tuple(t.shape) == shape
        assert torch.allclose(t.double().flatten(), torch.tensor(values, dtype=torch.float64), rtol=1e-6)


def test_read_idx_errors(tmp_path):
    from benchmarks.idx import read_idx

    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="expected the magic bytes 00 00, got 01 00"):
        read_idx(bad)
    bad.write_bytes(_idx_bytes(0x08, "B", (4,), [1, 2, 3, 4])[:-1])
    with pytest.raises(ValueError, match="needs 4 data bytes, got 3"):
        read_idx(bad)
    bad.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="unknown IDX type code 0x07"):
        read_idx(bad)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


def _write_fashion(root: Path, n: int = 6) -> None:
    for split in ("train", "t10k"):
        pixels = [(i * 37) % 256 for i in range(n * 28 * 28)]
        with gzip.open(root / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(_idx_bytes(0x08, "B", (n, 28, 28), pixels))
        (root / f"{split}-labels-idx1-ubyte").write_bytes(_idx_bytes(0x08, "B", (n,), [i % 3 for i in range(n)]))


def test_load_fashion_mnist_from_tiny_files(tmp_path):
    from benchmarks.idx import fashion_mnist_available, load_fashion_mnist

    assert not fashion_mnist_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
    _write_fashion(tmp_path)
    assert fashion_mnist_available(tmp_path)
    train, test = load_fashion_mnist(tmp_path)
    assert train.images.shape == (6, 1, 28, 28) and train.images.dtype == torch.float32
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert train.labels.tolist() == [0, 1, 2, 0, 1, 2] and len(test) == 6


# --------------------------------------------------------------------------- Welch's t-test


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 12.0])
def test_student_t_p_matches_closed_forms(t):
    from benchmarks.stats import student_t_two_sided_p

    # df = 1 is the Cauchy distribution; df = 2 has a closed-form CDF too.
    assert student_t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-12)
    assert student_t_two_sided_p(-t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    # Large df tends to the normal: P(|Z| >= t) = erfc(t / sqrt(2)).
    assert student_t_two_sided_p(t, 1e6) == pytest.approx(math.erfc(t / math.sqrt(2)), abs=1e-5)


@pytest.mark.parametrize("x", [0.0, 0.1, 0.5, 0.93, 1.0])
def test_incomplete_beta_closed_forms(x):
    from benchmarks.stats import regularized_incomplete_beta as ib

    assert ib(1.0, 1.0, x) == pytest.approx(x, abs=1e-13)
    assert ib(3.5, 1.0, x) == pytest.approx(x ** 3.5, abs=1e-13)
    assert ib(1.0, 4.0, x) == pytest.approx(1 - (1 - x) ** 4, abs=1e-13)
    assert ib(2.0, 7.0, x) + ib(7.0, 2.0, 1 - x) == pytest.approx(1.0, abs=1e-13)


def test_welch_known_values():
    from benchmarks.stats import welch_t_test

    # By hand: means 3 and 6, variances 2.5 and 10, n = 5: se² = 0.5 + 2 = 2.5,
    # t = -3 / sqrt(2.5), df = 2.5² / (0.5² / 4 + 2² / 4) = 6.25 / 1.0625.
    r = welch_t_test([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert r.t == pytest.approx(-3 / math.sqrt(2.5), rel=1e-12)
    assert r.df == pytest.approx(6.25 / 1.0625, rel=1e-12)
    assert r.p_value == pytest.approx(0.10753119493062728, rel=1e-9)  # scipy.stats.ttest_ind(equal_var=False)
    r = welch_t_test([0.91, 0.93, 0.92, 0.95, 0.94], [0.90, 0.89, 0.92, 0.91, 0.90])
    assert (r.t, r.df) == (pytest.approx(2.982404540317297), pytest.approx(7.274559193954672))
    assert r.p_value == pytest.approx(0.019549834369887286, rel=1e-9)
    swapped = welch_t_test([0.90, 0.89, 0.92, 0.91, 0.90], [0.91, 0.93, 0.92, 0.95, 0.94])
    assert swapped.t == pytest.approx(-r.t) and swapped.p_value == pytest.approx(r.p_value)


def test_welch_degenerate_cases():
    from benchmarks.stats import welch_t_test

    assert welch_t_test([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    r = welch_t_test([1.0, 1.0], [0.5, 0.5])
    assert r.p_value == 0.0 and r.t == math.inf
    with pytest.raises(ValueError, match="at least 2 values per sample, got 1 and 3"):
        welch_t_test([1.0], [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- benchmark driver


@pytest.mark.slow
def test_reproduce_writes_records_tables_and_figures(tmp_path, capsys):
    from benchmarks import reproduce

    out = tmp_path / "results"
    doc = reproduce.main([
        "--quick", "--epochs", "2", "--seeds", "2", "--datasets", "digits", "fashion-mnist",
        "--strategies", "pause-accuracy", "high-loss-removal", "--no-tune", "--no-progress", "--jobs", "1",
        "--fashion-dir", str(tmp_path / "no-such-dir"), "--out", str(out),
    ])
    printed = capsys.readouterr()
    assert "apt-get install -y dataset-fashion-mnist" in printed.err
    assert "| Mixup throughout (baseline) | 2 |" in printed.out
    on_disk = json.loads((out / "reproduce.json").read_text())
    assert on_disk["records"] == json.loads(json.dumps(doc["records"]))
    assert len(doc["records"]) == 3 * 2
    for r in doc["records"]:
        assert r["dataset"] == "digits" and r["epochs"] == 2 and 0.0 <= r["test_accuracy"] <= 1.0
        assert len(r["curves"]["eval_accuracy"]) == 2
        assert (r["period_end_epoch"] is None) == (r["strategy"] == "mixup")
    hlr = [r for r in doc["records"] if r["strategy"] == "high-loss-removal"]
    assert all(r["period_end_epoch"] == 2 and r["curves"]["removed"][1] > 0 for r in hlr)
    rows = {r["strategy"]: r for r in doc["summary"]}
    assert rows["mixup"]["p_vs_baseline"] is None and 0.0 <= rows["high-loss-removal"]["p_vs_baseline"] <= 1.0
    assert "| High-Loss Removal | 2 |" in (out / "reproduce.md").read_text()
    for png in ("reproduce_curves.png", "reproduce_bars.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_reproduce_runs_do_not_depend_on_the_process_pool():
    import dataclasses

    from benchmarks import reproduce

    cfg = dataclasses.replace(reproduce.PRESETS["quick"].datasets[0], epochs=1)
    base = reproduce._Job(cfg, 0, "/nonexistent", "mixup", reproduce.Hyper(), 0, False, "cpu", False)
    jobs = [dataclasses.replace(base, strategy=k, seed=s) for k in ("mixup", "high-loss-removal") for s in (0, 1)]
    bar = type("Bar", (), {"set_description": lambda *a, **k: None, "set_postfix": lambda *a, **k: None,
                           "update": lambda *a, **k: None})()
    pool = reproduce._Executor(2, 1, bar)
    try:
        pooled = pool.map(jobs)
    finally:
        pool.close()
    with demo.torch_threads(1):  # as in the workers: float sums depend on the thread count
        local = reproduce._Executor(1, 1, bar).map(jobs)
    assert [r.history for r in pooled] == [r.history for r in local]
    assert [r.test_accuracy for r in pooled] == [r.test_accuracy for r in local]
