"""The world's physics rules: joint tracking, grasping, carrying and releasing cubes."""

from __future__ import annotations

import numpy as np
import pytest

from fcs_data.synth.kinematics import CUBE_HALF, Q_READY, forward_kinematics, inverse_kinematics
from fcs_data.world.scene import Physics, SceneState, apply_joint_targets, move_ee_to

PHYSICS = Physics()
YAW = 0.3


def _scene(cubes: list[list[float]], q: np.ndarray | None = None) -> SceneState:
    q = Q_READY.copy() if q is None else q
    return SceneState(q=q, opening=0.04, cubes=np.array(cubes, float), colors=np.zeros((len(cubes), 3), np.uint8),
                      held=None, yaw=YAW, closed=False)


def _over(point: list[float], dz: float) -> np.ndarray:
    return np.array(point) + np.array([0.0, 0.0, dz])


def test_joints_track_their_targets_up_to_the_speed_limit_and_inside_the_joint_limits():
    s = _scene([[0.5, 0.2, CUBE_HALF]])
    target = Q_READY + np.array([0.5, 0, 0, 0, 0, 0, 0.01])
    apply_joint_targets(s, target, 0.04, PHYSICS)
    step = PHYSICS.max_joint_speed * PHYSICS.dt
    np.testing.assert_allclose(s.q - Q_READY, [step, 0, 0, 0, 0, 0, 0.01], atol=1e-12)
    s.q = Q_READY.copy()
    apply_joint_targets(s, Q_READY + np.array([0, 0, 0, 10.0, 0, 0, 0]), 0.04, PHYSICS)  # q4 above its -0.0698 limit
    assert s.q[3] <= -0.0698


def test_a_closed_gripper_passing_through_a_cube_carries_it_and_opening_drops_it_onto_the_cube_below():
    cube, base = [0.45, -0.1, CUBE_HALF], [0.6, 0.15, CUBE_HALF]
    s = _scene([cube, base])
    move_ee_to(s, _over(cube, 0.10), False, PHYSICS)
    assert s.held is None and s.opening == 0.04
    move_ee_to(s, _over(cube, 0.005), True, PHYSICS)  # closes at the cube
    assert s.held == 0 and s.opening == CUBE_HALF
    move_ee_to(s, _over(base, 0.15), True, PHYSICS)  # carried to above the other cube
    np.testing.assert_allclose(s.cubes[0], s.ee_pos, atol=1e-12)
    move_ee_to(s, _over(base, 0.08), False, PHYSICS)  # released 8 cm above: it falls onto the base cube
    assert s.held is None
    np.testing.assert_allclose(s.cubes[0], [s.ee_pos[0], s.ee_pos[1], 3 * CUBE_HALF], atol=1e-12)
    np.testing.assert_allclose(s.cubes[1], base)


def test_a_gripper_closing_away_from_every_cube_closes_on_nothing_and_a_dropped_cube_lands_on_the_table():
    cube = [0.45, -0.1, CUBE_HALF]
    s = _scene([cube])
    move_ee_to(s, _over(cube, 0.12), True, PHYSICS)
    assert s.held is None and s.opening == 0.0
    s = _scene([cube])
    move_ee_to(s, _over(cube, 0.0), True, PHYSICS)
    move_ee_to(s, [0.3, 0.3, 0.2], True, PHYSICS)
    move_ee_to(s, [0.3, 0.3, 0.2], False, PHYSICS)
    np.testing.assert_allclose(s.cubes[0], [*s.ee_pos[:2], CUBE_HALF], atol=1e-12)


@pytest.mark.parametrize("dz", [0.0, 0.02])
def test_the_grasp_counts_the_straight_path_of_a_step_not_only_where_it_ends(dz):
    cube = [0.5, 0.0, CUBE_HALF]
    s = _scene([cube])
    move_ee_to(s, _over(cube, 0.15), True, PHYSICS)  # closed above it: nothing held
    s.cubes[0] = _over(cube, dz)
    move_ee_to(s, [0.5, 0.0, -0.05 + dz], True, PHYSICS)  # the path passes through its centre, ends below
    assert s.held == 0


def test_the_ik_target_stays_above_the_table_and_the_hand_points_down_at_the_scene_yaw():
    s = _scene([[0.5, 0.2, CUBE_HALF]])
    move_ee_to(s, [0.5, -0.1, -0.3], None, PHYSICS)
    assert s.ee_pos[2] == pytest.approx(0.0, abs=2e-4)
    r = forward_kinematics(s.q)[-1, :3, :3]
    np.testing.assert_allclose(r[:, 2], [0, 0, -1], atol=2e-3)
    np.testing.assert_allclose(s.q, inverse_kinematics(np.array([0.5, -0.1, 0.0]), YAW, Q_READY), atol=0.05)
