"""The package ships ``py.typed``: its annotations must hold under mypy (configured in ``pyproject.toml``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_package_type_checks_under_mypy(tmp_path):
    pytest.importorskip("mypy", reason="mypy is a dev dependency (pip install -e '.[dev]')")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), "--no-error-summary"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, f"mypy found problems:\n{done.stdout}{done.stderr}"
