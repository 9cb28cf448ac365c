"""A stand-in for Isaac Sim: what the simulator hands a logger at each physics step.

The loggers under `tests/loggers/` take these values exactly where the real loggers take them from Isaac
Sim (`camera.get_rgba()[:, :, :3]`, `franka.end_effector.get_world_pose()`, the controller's
`ArticulationAction`, the pick-and-place controller's phase), so the files they write are shaped by the
logger code alone. Nothing here imports fcs.

The scene is a pick-and-place of one cube: the end effector moves smoothly through the phases of the
users' controller (0 above cube, 1 lower, 2 wait, 3 close, 4 lift, 5 move, 6 lower, 7 open, 8 lift,
9 return) with the gripper pointing down; frames are a small rendering of the table, the cube and the
end effector plus sensor noise (consecutive frames always differ, as rendered frames do).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JOINT_MID = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])  # inside the Franka joint limits
PHASE_WEIGHTS = [3, 3, 1, 1, 3, 4, 3, 1, 3, 3]  # relative durations of the controller's ten phases
CLOSED_PHASES = (3, 4, 5, 6)


@dataclass(frozen=True)
class SimFrame:
    """One physics step as Isaac Sim reports it."""

    rgb: np.ndarray  # (H, W, 3) uint8, camera 0 (get_rgba()[:, :, :3], RGB)
    rgb_cam1: np.ndarray  # (H, W, 3) uint8, a second camera
    depth: np.ndarray  # (H, W) float32 metres (the loggers pass zeros)
    ee_pos: np.ndarray  # (3,) float32, world frame
    ee_quat: np.ndarray  # (4,) float32, w x y z (Isaac Sim's get_world_pose order)
    cubes: list[tuple[float, float, float, float]]  # per cube (x, y, z, yaw)
    q: np.ndarray  # (7,) float32 arm joint positions
    qd: np.ndarray  # (7,) float32 arm joint velocities
    fingers: np.ndarray  # (2,) float32 finger joint positions (0.04 open)
    joint_targets: np.ndarray  # (9,) float32 the controller's ArticulationAction.joint_positions
    phase: int  # the controller's current event, 0..9
    closed: bool  # gripper closed (phases 3..6)


def _smooth(u: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(u, 0.0, 1.0))


def _waypoints(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    cube = np.array([rng.uniform(0.40, 0.55), rng.uniform(-0.20, 0.05), 0.025])
    target = np.array([rng.uniform(0.40, 0.55), rng.uniform(0.10, 0.25), 0.075])
    home = np.array([0.45, 0.0, 0.35])
    up, low = np.array([0.0, 0.0, 0.20]), np.array([0.0, 0.0, 0.005])
    points = [home, cube + up, cube + low, cube + low, cube + low, cube + up, target + up, target + low, target + low,
              target + up, home]
    # the gripper turns to the cube's yaw (the controller's "variable" orientation mode, cube yaw within +-45 deg)
    return np.array(points), target, float(rng.choice([-1, 1]) * rng.uniform(0.68, 0.78))


def _render(size: int, ee: np.ndarray, cube: np.ndarray, rng: np.random.Generator, view: int) -> np.ndarray:
    """A top-down-ish rendering: table gradient, the cube as a red square, the gripper as a dark disc."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([90 + 60 * xx, 100 + 50 * yy, 120 + 30 * (xx + yy)], axis=-1)
    sign = 1.0 if view == 0 else -1.0

    def pix(p: np.ndarray) -> tuple[float, float]:
        return (0.5 + sign * p[1] * 1.4) * size, (1.1 - p[0] * 1.4 - p[2] * 0.8) * size

    cu, cv = pix(cube)
    half = 0.035 * size
    img[(np.abs(xx * size - cu) < half) & (np.abs(yy * size - cv) < half)] = (200, 40, 40)
    eu, ev = pix(ee)
    img[(xx * size - eu) ** 2 + (yy * size - ev) ** 2 < (0.05 * size) ** 2] = (30, 30, 60 + 400 * ee[2])
    img += rng.normal(0.0, 2.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def simulate(seed: int, steps: int, size: int = 224) -> list[SimFrame]:
    """`steps` physics steps of one pick-and-place episode (60 Hz), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    points, target, yaw = _waypoints(rng)
    bounds = np.cumsum([0, *PHASE_WEIGHTS]) / sum(PHASE_WEIGHTS)
    dt = 1.0 / 60.0
    t = np.arange(steps) / max(steps - 1, 1)
    phase = np.minimum(np.searchsorted(bounds, t, side="right") - 1, 9)
    local = (t - bounds[phase]) / (bounds[phase + 1] - bounds[phase])
    ee = points[phase] + (points[phase + 1] - points[phase]) * _smooth(local)[:, None]
    half = np.full(steps, yaw / 2)
    quat = np.stack([np.zeros(steps), np.cos(half), np.sin(half), np.zeros(steps)], axis=1)  # gripper down
    w = 2 * np.pi / (steps * dt)
    amp = np.array([0.4, 0.3, 0.3, 0.4, 0.3, 0.3, 0.4])
    q = JOINT_MID + amp * np.sin(w * dt * np.arange(steps)[:, None] * np.linspace(0.5, 1.0, 7))
    qd = amp * w * np.linspace(0.5, 1.0, 7) * np.cos(w * dt * np.arange(steps)[:, None] * np.linspace(0.5, 1.0, 7))
    closed = np.isin(phase, CLOSED_PHASES)
    fingers = np.where(closed, 0.025, 0.04)
    cube0 = points[2] - [0, 0, 0.005]
    frames = []
    for k in range(steps):
        held = closed[k] and phase[k] >= 4
        cube = ee[k] - [0, 0, 0.005] if held else (cube0 if phase[k] < 4 else target)
        nxt = min(k + 1, steps - 1)
        finger_cmd = 0.0 if closed[nxt] else 0.04
        frames.append(SimFrame(
            rgb=_render(size, ee[k], cube, rng, 0), rgb_cam1=_render(size, ee[k], cube, rng, 1),
            depth=np.zeros((size, size), np.float32), ee_pos=ee[k].astype(np.float32),
            ee_quat=quat[k].astype(np.float32), cubes=[(float(cube[0]), float(cube[1]), float(cube[2]), yaw)],
            q=q[k].astype(np.float32), qd=qd[k].astype(np.float32),
            fingers=np.array([fingers[k], fingers[k]], np.float32),
            joint_targets=np.concatenate([q[nxt], [finger_cmd, finger_cmd]]).astype(np.float32),
            phase=int(phase[k]), closed=bool(closed[k]),
        ))
    return frames
