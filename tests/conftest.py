"""Shared fixtures: small synthetic datasets made by fcs's own generator, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fcs_data.synth import synthesize

V1_EPISODES = 3


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
