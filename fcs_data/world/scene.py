"""The closed-loop world's physics: a Panda, its gripper and the cubes, under the rules the synthetic
datasets were made with.

The rules, chosen so that replaying a synthetic episode's logged actions reproduces its states:

- Joint targets (v1 actions) are tracked up to `max_joint_speed` per joint (the synthetic episodes
  peak at about 6.9 rad/s, faster than a real Panda's 2.2-2.6 rad/s) and clipped to the joint limits.
- An EE target (the end of a segment action) is reached through the damped least-squares IK the
  datasets were made with, the hand pointing down at the scene's grasp yaw, from the current joints.
- The fingers move toward their target at `finger_speed` (m/s; a segment action is long enough to
  finish the motion). A gripper commanded closed holds the free cube whose centre the TCP passed
  within `grasp_radius` of during the step (straight from where it was to where it is; the cube is
  then held centred between the fingers, as the datasets draw it) and closes on
  the cube (opening = its half width) or on nothing (opening 0). Opening the gripper releases the
  cube straight down onto whatever is below it: the table or the top of another cube.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fcs_data.synth.kinematics import (
    CUBE_HALF,
    JOINT_HIGH,
    JOINT_LOW,
    forward_kinematics,
    inverse_kinematics,
    rotation_to_quat_wxyz,
)

FINGER_OPEN = 0.04
CLOSED_BELOW = 0.02  # a finger target (m) below this is a command to close


@dataclass(frozen=True)
class Physics:
    """The world's constants. dt: seconds per raw action of the dense layouts (1 / control_hz)."""

    dt: float = 1 / 60
    max_joint_speed: float = 8.0
    finger_speed: float = 0.1
    grasp_radius: float = 0.03
    ik_iterations: int = 100


@dataclass
class SceneState:
    """Where everything is. q `(7,)` rad; opening (m, per finger); cubes `(n, 3)` centres (m);
    colors `(n, 3)` uint8; held: the index of the cube between the fingers, or None; yaw: the hand's
    rotation about world z (rad), fixed for the episode; closed: the gripper's last command."""

    q: np.ndarray
    opening: float
    cubes: np.ndarray
    colors: np.ndarray
    held: int | None
    yaw: float
    closed: bool
    qd: np.ndarray | None = None

    def copy(self) -> SceneState:
        return SceneState(self.q.copy(), self.opening, self.cubes.copy(), self.colors.copy(), self.held, self.yaw,
                          self.closed, None if self.qd is None else self.qd.copy())

    @property
    def frames(self) -> np.ndarray:
        """Joint frames `(9, 4, 4)` of the current configuration (the renderer draws them)."""
        return forward_kinematics(self.q)

    @property
    def ee_pos(self) -> np.ndarray:
        """The TCP position `(3,)`, m (the models' proprio)."""
        return self.frames[-1, :3, 3].copy()

    @property
    def ee_quat_wxyz(self) -> np.ndarray:
        return rotation_to_quat_wxyz(self.frames[-1, :3, :3])


def _support_height(cubes: np.ndarray, i: int) -> float:
    """The centre height cube `i` comes to rest at when dropped: on the table, or on the highest cube
    below whose footprint overlaps its own."""
    z = CUBE_HALF
    for j, other in enumerate(cubes):
        if j != i and np.all(np.abs(other[:2] - cubes[i, :2]) < 2 * CUBE_HALF) and other[2] < cubes[i, 2]:
            z = max(z, other[2] + 2 * CUBE_HALF)
    return z


def _path_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances `(n,)` of `points (n, 3)` to the straight path from `a` to `b`."""
    ab = b - a
    t = np.clip((points - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(a + t[:, None] * ab - points, axis=1)


def update_grasp(state: SceneState, closed: bool, grasp_radius: float, came_from: np.ndarray | None = None) -> None:
    """Apply a gripper command after the arm moved (its TCP from `came_from`, in a straight line, to where
    it is): grasp, carry, or release (see the module docstring)."""
    tcp = state.ee_pos
    if closed and state.held is None:
        d = _path_distance(state.cubes, tcp if came_from is None else came_from, tcp)
        if d.min() < grasp_radius:
            state.held = int(np.argmin(d))
    if state.held is not None:
        if closed:
            state.cubes[state.held] = tcp
        else:
            i, state.held = state.held, None
            state.cubes[i] = tcp
            state.cubes[i, 2] = _support_height(state.cubes, i)
    state.closed = closed


def finger_goal(state: SceneState, target: float) -> float:
    """The opening the fingers settle at for a finger target: open as far as asked, closed onto the
    held cube (its half width) or fully (0) when there is none."""
    if target >= CLOSED_BELOW:
        return min(target, FINGER_OPEN)
    return CUBE_HALF if state.held is not None else 0.0


def apply_joint_targets(state: SceneState, q_target: np.ndarray, finger_target: float, physics: Physics) -> None:
    """One raw v1 action: joints toward `q_target (7,)`, fingers toward `finger_target` (m)."""
    q_prev, came_from = state.q, state.ee_pos
    step = physics.max_joint_speed * physics.dt
    q = q_prev + np.clip(np.asarray(q_target, np.float64) - q_prev, -step, step)
    state.q = np.clip(q, JOINT_LOW, JOINT_HIGH)
    state.qd = (state.q - q_prev) / physics.dt
    update_grasp(state, finger_target < CLOSED_BELOW, physics.grasp_radius, came_from)
    goal = finger_goal(state, finger_target)
    move = physics.finger_speed * physics.dt
    state.opening = float(state.opening + np.clip(goal - state.opening, -move, move))


def move_ee_to(state: SceneState, position: np.ndarray, closed: bool | None, physics: Physics) -> None:
    """One segment action: the TCP to `position (3,)` through IK (not below the table), then the gripper
    command (None: unchanged, for layouts whose actions carry no gripper)."""
    target = np.asarray(position, np.float64).copy()
    target[2] = max(target[2], 0.0)
    came_from = state.ee_pos
    state.q = inverse_kinematics(target, state.yaw, state.q, iters=physics.ik_iterations)
    state.qd = np.zeros(7)
    update_grasp(state, state.closed if closed is None else closed, physics.grasp_radius, came_from)
    state.opening = finger_goal(state, 0.0 if state.closed else FINGER_OPEN)
