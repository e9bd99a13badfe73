"""The scripts under examples/ run as documented, and a resumed run trains exactly like one that never stopped."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("strategy", ["high-loss-removal", "mixup-pause"])
def test_train_classifier_resumed_from_its_checkpoint_matches_an_uninterrupted_run(tmp_path, strategy):
    example = _load("train_classifier")
    common = ["--strategy", strategy, "--period", "2", "--batch-size", "256", "--quiet"]
    with torch.random.fork_rng(devices=[]):  # the example seeds the global RNG for its model
        whole = example.main([*common, "--epochs", "3", "--checkpoint", str(tmp_path / "whole.pt")])
        example.main([*common, "--epochs", "2", "--checkpoint", str(tmp_path / "part.pt")])
        resumed = example.main([*common, "--epochs", "3", "--checkpoint", str(tmp_path / "part.pt"), "--resume"])
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2]
    assert resumed["history"] == whole["history"]
    if strategy == "high-loss-removal":  # the period removed samples, and they came back after it
        assert [h["removed"] > 0 for h in whole["history"]] == [False, True, False]
    else:
        assert [h["mixup_alpha"] for h in whole["history"]] == [0.0, 0.0, 0.4]
    for name, value in whole["model"].state_dict().items():
        torch.testing.assert_close(resumed["model"].state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_ddp_example_runs_on_two_processes_and_removes_samples_during_the_period():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(EXAMPLES.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(EXAMPLES / "ddp_train.py"), "--epochs", "6", "--strategy", "high-loss-removal"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = re.findall(r"epoch +(\d+) +in_period=(\w+) .*removed= *(\d+) +batches/rank=(\d+)", result.stdout)
    assert [(int(e), p == "True") for e, p, _, _ in epochs] == [(e, e < 2) for e in range(6)], result.stdout
    removed = [int(r) for _, _, r, _ in epochs]
    batches = [int(b) for *_, b in epochs]
    assert removed[0] == 0 and removed[1] > 0 and removed[2:] == [0] * 4, result.stdout
    assert batches[1] < batches[0] == batches[2], result.stdout  # each rank's share shrinks, then comes back


def test_noisy_sequences_removal_finds_mostly_the_mislabelled_sequences():
    example = _load("noisy_sequences")
    with torch.random.fork_rng(devices=[]):
        run = example.main(["--sequences", "1000", "--epochs", "4", "--period", "3", "--quiet"])
    removed = [h["removed"] for h in run["history"]]
    assert removed == [0, 200, 200, 0]
    base = run["noisy"].float().mean().item()
    assert 0.15 < base < 0.25
    assert run["noisy_removed"][2] / 200 > 2.5 * base, run["noisy_removed"]  # the noisy ones, far above chance
