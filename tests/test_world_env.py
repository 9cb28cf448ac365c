"""The closed-loop world: deterministic, rendered as the datasets are, success decided by the world."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from fcs_data.schemas import get_layout
from fcs_data.synth import dataset_renderers, synth_episode, synthesize
from fcs_data.world import CubeWorld, WorldError, WorldSpec

V1 = WorldSpec(layout="franka_cube_stack_v1", dataset_seed=3, min_len=40, max_len=60, goal_steps=20)
PRIM = WorldSpec(layout="franka_cube_stack_primitive", dataset_seed=5, min_len=16, max_len=24, goal_steps=3)


@pytest.fixture(scope="module")
def v1_world() -> CubeWorld:
    return CubeWorld(V1)


@pytest.fixture(scope="module")
def prim_world() -> CubeWorld:
    return CubeWorld(PRIM)


def _episode(world: CubeWorld, seed: int, actions) -> tuple[list[np.ndarray], list[dict]]:
    obs, info = world.reset(seed=seed)
    images, infos = [obs["image"]], [info]
    for a in actions(world):
        obs, _, terminated, truncated, info = world.step(a)
        images.append(obs["image"])
        infos.append(info)
        if terminated or truncated:
            break
    return images, infos


def _oracle(world: CubeWorld):
    while True:
        yield world.scripted_actions(1)[0]


def _still(world: CubeWorld):
    while True:
        yield world.hold_action()


@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space")  # joint limits and metres, as logged
def test_the_world_passes_gymnasium_s_environment_checks(prim_world):
    check_env(CubeWorld(PRIM), skip_render_check=True)
    obs, info = prim_world.reset(seed=0)
    assert prim_world.observation_space.contains(obs)
    assert info["goal_image"].shape == obs["image"].shape == (224, 224, 3) and info["goal_image"].dtype == np.uint8
    assert info["goal_proprio"].shape == (3,) and info["task"] in ("reach", "place")


@pytest.mark.parametrize("world", ["v1_world", "prim_world"])
def test_an_episode_is_deterministic_from_its_seed(world, request):
    w = request.getfixturevalue(world)
    a, infos = _episode(w, 11, lambda w: [w.hold_action()] * 3)
    b, _ = _episode(w, 11, lambda w: [w.hold_action()] * 3)
    assert len(a) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other, _ = _episode(w, 12, lambda w: [w.hold_action()] * 3)
    assert not np.array_equal(a[0], other[0])
    assert infos[0]["ee_distance"] >= w.world_spec.min_goal_distance  # doing nothing is never already a success


@pytest.mark.parametrize("layout", ["franka_cube_stack_v1", "franka_cube_stack_primitive"])
def test_the_world_renders_a_state_exactly_as_the_synthetic_dataset_does(layout):
    lay = get_layout(layout)
    length, seed, index = (30, 4, 2) if layout.endswith("v1") else (18, 4, 2)
    renderers = dataset_renderers(seed, lay.observation.height, ["cam_0"])
    for r in renderers.values():
        r.noise = 0
    logged = synth_episode(lay, length, seed, index, renderers)
    world = CubeWorld(WorldSpec(layout=layout, dataset_seed=seed, min_len=length, max_len=length, goal_steps=2,
                                min_goal_distance=0.0, noise=0))
    world.reset(seed=0, options={"episode": index, "length": length})
    for t in range(length):
        np.testing.assert_array_equal(world.render_scene(world.scene_at(t)),
                                      np.asarray(logged.frames[t], dtype=np.uint8))


def test_the_world_s_frames_match_a_written_dataset_up_to_its_sensor_noise(tmp_path):
    src = synthesize(tmp_path / "v1", episodes=1, min_len=24, max_len=24, seed=9)
    frames = torch.load(src / "000000" / "obses.pth", weights_only=True).numpy()
    world = CubeWorld(WorldSpec(layout="franka_cube_stack_v1", dataset_seed=9, min_len=24, max_len=24, goal_steps=2,
                                min_goal_distance=0.0))
    world.reset(seed=0, options={"episode": 0, "length": 24})
    for t in (0, 12, 23):
        diff = np.abs(world.render_scene(world.scene_at(t)).astype(int) - frames[t].astype(int))
        assert diff.max() <= 2 * world.world_spec.noise and diff.mean() < 2.0


@pytest.mark.parametrize("world", ["v1_world", "prim_world"])
def test_the_scripted_oracle_succeeds_in_every_episode_and_holding_still_in_none(world, request):
    w = request.getfixturevalue(world)
    kinds = set()
    for seed in range(6):
        _, oracle = _episode(w, seed, _oracle)
        _, still = _episode(w, seed, _still)
        kinds.add(oracle[0]["task"])
        assert oracle[-1]["success"] and oracle[-1]["ee_distance"] <= w.world_spec.success_radius
        assert not still[-1]["success"] and still[-1]["steps"] == w.world_spec.step_limit
    assert kinds == {"reach", "place"}


def test_replaying_logged_v1_joint_targets_reproduces_the_logged_states():
    lay = get_layout("franka_cube_stack_v1")
    logged = synth_episode(lay, 80, 3, 7, dataset_renderers(3, 64, ["cam_0"]))
    world = CubeWorld(V1.model_copy(update={"min_len": 80, "max_len": 80, "min_goal_distance": 0.0, "max_steps": 200,
                                            "image_size": 64}))
    world.reset(seed=0, options={"episode": 7, "length": 80})
    world.state = world.scene_at(0)
    world.steps = 0
    for t in range(79):
        world.step(logged.action[t])
        np.testing.assert_allclose(world.logged_state()[:3], logged.state[t + 1, :3], atol=1e-6)
        np.testing.assert_allclose(world.state.q, logged.state[t + 1, 8:15], atol=1e-6)


def test_success_is_the_world_s_measure_and_a_place_task_needs_the_cube_there(prim_world):
    for seed in range(60):
        _, info = prim_world.reset(seed=seed)
        if info["task"] == "place":
            break
    task, state = prim_world.task, prim_world.state
    assert task.kind == "place" and info["cube_distance"] > PRIM.success_radius
    state.held, state.closed = None, False  # the cube let go where it is
    state.q = prim_world.scene_at(task.goal).q.copy()  # and the EE at the goal
    _, _, terminated, _, progress = prim_world.step(prim_world.hold_action())
    assert progress["ee_distance"] < 1e-3 and progress["cube_distance"] > PRIM.success_radius
    assert not terminated and not progress["success"]


def test_malformed_actions_and_unknown_options_are_refused_by_name(prim_world):
    prim_world.reset(seed=0)
    with pytest.raises(WorldError, match=r"\(8,\) finite values"):
        prim_world.step(np.zeros(5))
    with pytest.raises(WorldError, match="NaN"):
        prim_world.step(np.full(8, np.nan))
    with pytest.raises(WorldError, match="episode and length"):
        prim_world.reset(seed=0, options={"goal": 3})
    with pytest.raises(WorldError, match="one camera"):
        CubeWorld(WorldSpec(layout="franka_cube_stack_primitive+cams2"))
