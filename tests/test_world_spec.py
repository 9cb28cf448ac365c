"""A world from a store: recognised as fcs synth output and proven by regenerating its first episode."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.synth import synthesize
from fcs_data.world import WorldError, WorldSpec, world_spec_from_store


def _store(tmp_path: Path, edit=None) -> Path:
    src = synthesize(tmp_path / "src", episodes=2, min_len=16, max_len=20, seed=21,
                     layout="franka_cube_stack_primitive")
    if edit is not None:
        path = src / "000000" / "property_params.pkl"
        params = pickle.loads(path.read_bytes())
        edit(params)
        path.write_bytes(pickle.dumps(params))
    return convert_to_zarr(src, tmp_path / "s.zarr", workers=1).store


def test_a_synthetic_store_names_its_world(tmp_path):
    spec = world_spec_from_store(_store(tmp_path), goal_steps=4)
    assert (spec.layout, spec.dataset_seed, spec.image_size, spec.goal_steps) == (
        "franka_cube_stack_primitive", 21, 224, 4)
    assert 16 <= spec.min_len <= spec.max_len <= 20


def test_a_store_not_made_by_fcs_synth_is_refused(tmp_path):
    with pytest.raises(WorldError, match="not made by fcs synth"):
        world_spec_from_store(_store(tmp_path, lambda p: p.pop("grasped_cube")))


def test_a_store_whose_episodes_are_not_what_its_seed_makes_is_refused(tmp_path):
    with pytest.raises(WorldError, match="first EE position differs"):
        world_spec_from_store(_store(tmp_path, lambda p: p.update(seed=22)))


def test_a_goal_further_than_the_shortest_episode_is_a_validation_error():
    with pytest.raises(ValidationError, match="goal_steps"):
        WorldSpec(min_len=10, max_len=12, goal_steps=10)
