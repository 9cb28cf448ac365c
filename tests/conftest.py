"""Shared fixtures: small synthetic datasets made by fcs's own generator, copied per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fcs_data.synth import synthesize

V1_EPISODES = 3
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fcs's user cache (split statistics, crash reports) lives in a temporary folder during tests."""
    path = tmp_path_factory.mktemp("fcs-cache")
    os.environ["FCS_CACHE_DIR"] = str(path)
    return path


@pytest.fixture
def format1_store(tmp_path: Path) -> Path:
    """A store written by fcs 0.1.0 (format 1: no chunk checksums, unsharded rows), 32 x 32 frames."""
    return Path(shutil.copytree(DATA / "format1_fcs010.zarr", tmp_path / "format1.zarr"))


@pytest.fixture(scope="session")
def pristine_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 episodes of 24..36 steps in the v1 layout (read-only: copy before changing)."""
    return synthesize(tmp_path_factory.mktemp("synth") / "v1", episodes=V1_EPISODES, min_len=24, max_len=36, seed=7)


@pytest.fixture(scope="session")
def pristine_min(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 episodes in the per-step HDF5 'min logger' layout (read-only)."""
    return synthesize(tmp_path_factory.mktemp("synth") / "min", episodes=3, min_len=20, max_len=28, seed=3,
                      layout="franka_cube_stack_min")


@pytest.fixture
def v1(pristine_v1: Path, tmp_path: Path) -> Path:
    """A private copy of the v1 dataset that the test may break."""
    return Path(shutil.copytree(pristine_v1, tmp_path / "v1"))


@pytest.fixture
def min_logger(pristine_min: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine_min, tmp_path / "min"))
