"""Shared fixtures, built once per session and read-only (copy before changing): datasets written by the
loggers' own code (tests/loggers/), small synthetic datasets made by fcs's own generator (where a test is
about the generator or needs bulk data), the stores converted from them, trained tiny models, and the
full-size model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import train_tiny
from loggers.min_logger import write_min

from fcs_data.converters.to_zarr import convert_to_zarr
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
    """3 episodes of 20, 24 and 28 steps written by the min logger's code (min_data_logger.py, read-only)."""
    return write_min(tmp_path_factory.mktemp("logged") / "min", [20, 24, 28], seed=3)


@pytest.fixture(scope="session")
def v1_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 v1 episodes of 30..44 steps, converted (32-frame shards): enough windows for a few training
    epochs at num_hist 2, frameskip 2. Read-only."""
    root = tmp_path_factory.mktemp("v1_store")
    src = synthesize(root / "src", episodes=8, min_len=30, max_len=44, seed=4)
    return convert_to_zarr(src, root / "s.zarr", workers=1, shard_frames=32).store


@pytest.fixture(scope="session")
def pristine_v1_lz4(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pristine_v1` converted with lz4 frames in 16-frame shards. Read-only."""
    out = tmp_path_factory.mktemp("v1_lz4") / "s.zarr"
    return convert_to_zarr(pristine_v1, out, codec="lz4", workers=1, shard_frames=16).store


@pytest.fixture(scope="session")
def full_model():
    """`(model, warnings)`: the full 52M-parameter DINO-WM model of the default `ModelConfig` (random
    encoder, proprio 3, actions 9, num_hist 3, frameskip 5), built once, and the warnings building it gave."""
    import warnings

    from fcs_train.config import ModelConfig
    from fcs_train.models import build_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(ModelConfig(), proprio_dim=3, action_dim=9, num_hist=3, num_pred=1, frameskip=5)
    return model, caught


@pytest.fixture
def v1(pristine_v1: Path, tmp_path: Path) -> Path:
    """A private copy of the v1 dataset that the test may break."""
    return Path(shutil.copytree(pristine_v1, tmp_path / "v1"))


@pytest.fixture
def min_logger(pristine_min: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine_min, tmp_path / "min"))


@pytest.fixture(scope="session")
def planning_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(store, checkpoint): the tiny world model trained 300 steps on 24 primitive-logger episodes (frameskip 1,
    6 validation episodes), the users' current data. Read-only."""
    root = tmp_path_factory.mktemp("planning")
    src = synthesize(root / "src", episodes=24, min_len=16, max_len=24, seed=5, layout="franka_cube_stack_primitive")
    store = convert_to_zarr(src, root / "s.zarr", workers=1).store
    # validated (and pictured) once, at the end: validation draws no random number, so the weights are
    # those of a run validated every epoch
    return store, train_tiny(store, root / "run", **{"data.frameskip": 1, "data.split_ratio": 0.75,
                                                     "train.max_steps": 300, "train.val_every_epochs": 1000,
                                                     "log.png_every_epochs": 1000,
                                                     "train.checkpoint_every_epochs": 1000})


@pytest.fixture(scope="session")
def planning_fs2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(store, checkpoint): a v1 store and a tiny model with predictor dropout 0.1 at frameskip 2 after one training
    step (the planner's bookkeeping, not its skill, is under test). Read-only."""
    root = tmp_path_factory.mktemp("planning_fs2")
    src = synthesize(root / "src", episodes=4, min_len=30, max_len=36, seed=11)
    store = convert_to_zarr(src, root / "s.zarr", workers=1).store
    return store, train_tiny(store, root / "run", **{"data.frameskip": 2, "data.num_hist": 2, "train.max_steps": 1,
                                                     "train.batch_size": 2, "model.predictor.dropout": 0.1,
                                                     "data.split_ratio": 0.75})
