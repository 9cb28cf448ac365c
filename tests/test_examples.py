"""The scripts in examples/ keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fcs_data.converters.to_zarr import convert_to_zarr

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("ex") / "s.zarr", workers=1).store


def test_own_training_loop_runs(store: Path) -> None:
    res = subprocess.run([sys.executable, str(EXAMPLES / "own_training_loop.py"), str(store), "--steps", "3",
                          "--workers", "0"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "step 3: train loss" in res.stdout and "val loss" in res.stdout
