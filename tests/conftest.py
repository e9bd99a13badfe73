"""Shared fixtures: no test leaks global RNG state, and library code can be checked not to use it."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# The property tests draw the same examples on every run unless HYPOTHESIS_PROFILE=explore: a CI run must not fail
# (or pass) by chance. `explore` draws new examples each run and keeps failures in .hypothesis/, to hunt for bugs.
settings.register_profile("derandomized", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derandomized"))


@pytest.fixture(autouse=True)
def _restore_global_rng():
    """Tests may not leak global RNG state into each other (torchvision's habit)."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


@pytest.fixture
def forbid_global_rng():
    """Fail the test if the code under test draws from or reseeds the global torch RNG."""
    before = torch.get_rng_state()
    yield
    assert torch.equal(before, torch.get_rng_state()), "the global torch RNG was used"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``needs_cuda`` where no GPU is present (``pytest -m needs_cuda`` runs just them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)
