"""Franka Panda kinematics and smooth pick-and-place trajectories for synthetic episodes.

Forward kinematics use the published modified-DH parameters of the Panda; a damped least-squares
IK finds joint configurations for Cartesian waypoints; minimum-jerk segments between them give
joint positions and their exact time derivatives. Everything is vectorised numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (a, d, alpha) per joint, modified DH (Craig); then the flange (d=0.107) and the hand TCP (d=0.1034).
_DH = np.array(
    [
        [0.0, 0.333, 0.0],
        [0.0, 0.0, -np.pi / 2],
        [0.0, 0.316, np.pi / 2],
        [0.0825, 0.0, np.pi / 2],
        [-0.0825, 0.384, -np.pi / 2],
        [0.0, 0.0, np.pi / 2],
        [0.088, 0.0, np.pi / 2],
    ]
)
_FLANGE_D = 0.107
_TCP_D = 0.1034

JOINT_LOW = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
JOINT_HIGH = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
Q_READY = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def _mdh(a: float, d: float, alpha: float, theta: np.ndarray) -> np.ndarray:
    """Modified-DH transforms `(..., 4, 4)` for joint angles `theta (...)`."""
    ct, st = np.cos(theta), np.sin(theta)
    ca, sa = np.cos(alpha), np.sin(alpha)
    t = np.zeros((*theta.shape, 4, 4))
    t[..., 0, 0], t[..., 0, 1], t[..., 0, 3] = ct, -st, a
    t[..., 1, 0], t[..., 1, 1], t[..., 1, 2], t[..., 1, 3] = st * ca, ct * ca, -sa, -sa * d
    t[..., 2, 0], t[..., 2, 1], t[..., 2, 2], t[..., 2, 3] = st * sa, ct * sa, ca, ca * d
    t[..., 3, 3] = 1.0
    return t


def forward_kinematics(q: np.ndarray) -> np.ndarray:
    """Frames of joints 1..7, the flange and the TCP: `(..., 9, 4, 4)` for `q (..., 7)`."""
    q = np.asarray(q, dtype=np.float64)
    frames = []
    t = np.broadcast_to(np.eye(4), (*q.shape[:-1], 4, 4))
    for i, (a, d, alpha) in enumerate(_DH):
        t = t @ _mdh(a, d, alpha, q[..., i])
        frames.append(t)
    zero = np.zeros(q.shape[:-1])
    t = t @ _mdh(0.0, _FLANGE_D, 0.0, zero)
    frames.append(t)
    t = t @ _mdh(0.0, _TCP_D, 0.0, zero - np.pi / 4)
    frames.append(t)
    return np.stack(frames, axis=-3)


def rotation_to_quat_wxyz(r: np.ndarray) -> np.ndarray:
    """Unit quaternions `(..., 4)` (w, x, y, z; w >= 0) for rotation matrices `(..., 3, 3)`."""
    m = r.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    cand = np.stack(
        [
            1 + tr,
            1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
            1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
            1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2],
        ],
        axis=1,
    )
    k = cand.argmax(axis=1)
    q = np.empty((m.shape[0], 4))
    s = np.sqrt(np.maximum(cand[np.arange(len(k)), k], 1e-12)) * 2  # s = 4 * |component|
    rows = np.arange(len(k))
    for idx in range(4):
        sel = rows[k == idx]
        if not len(sel):
            continue
        mm, ss = m[sel], s[sel]
        if idx == 0:
            q[sel] = np.stack([ss / 4, (mm[:, 2, 1] - mm[:, 1, 2]) / ss, (mm[:, 0, 2] - mm[:, 2, 0]) / ss,
                               (mm[:, 1, 0] - mm[:, 0, 1]) / ss], axis=1)
        elif idx == 1:
            q[sel] = np.stack([(mm[:, 2, 1] - mm[:, 1, 2]) / ss, ss / 4, (mm[:, 0, 1] + mm[:, 1, 0]) / ss,
                               (mm[:, 0, 2] + mm[:, 2, 0]) / ss], axis=1)
        elif idx == 2:
            q[sel] = np.stack([(mm[:, 0, 2] - mm[:, 2, 0]) / ss, (mm[:, 0, 1] + mm[:, 1, 0]) / ss, ss / 4,
                               (mm[:, 1, 2] + mm[:, 2, 1]) / ss], axis=1)
        else:
            q[sel] = np.stack([(mm[:, 1, 0] - mm[:, 0, 1]) / ss, (mm[:, 0, 2] + mm[:, 2, 0]) / ss,
                               (mm[:, 1, 2] + mm[:, 2, 1]) / ss, ss / 4], axis=1)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.reshape(*r.shape[:-2], 4)


def _jacobian(frames: np.ndarray) -> np.ndarray:
    """Geometric Jacobian `(6, 7)` of the TCP from the frames of one configuration."""
    p_e = frames[-1, :3, 3]
    j = np.zeros((6, 7))
    for i in range(7):
        z, p = frames[i, :3, 2], frames[i, :3, 3]
        j[:3, i] = np.cross(z, p_e - p)
        j[3:, i] = z
    return j


def _rotation_error(r_now: np.ndarray, r_goal: np.ndarray) -> np.ndarray:
    e = r_goal @ r_now.T
    return 0.5 * np.array([e[2, 1] - e[1, 2], e[0, 2] - e[2, 0], e[1, 0] - e[0, 1]])


def inverse_kinematics(position: np.ndarray, yaw: float, q_start: np.ndarray, iters: int = 100) -> np.ndarray:
    """Joint angles putting the TCP at `position`, pointing down, rotated `yaw` about world z."""
    c, s = np.cos(yaw), np.sin(yaw)
    r_goal = np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])  # TCP z-axis points down
    q = q_start.copy()
    for _ in range(iters):
        frames = forward_kinematics(q)
        err = np.concatenate([position - frames[-1, :3, 3], _rotation_error(frames[-1, :3, :3], r_goal)])
        if np.linalg.norm(err[:3]) < 1e-4 and np.linalg.norm(err[3:]) < 1e-3:
            break
        j = _jacobian(frames)
        j_pinv = j.T @ np.linalg.inv(j @ j.T + 1e-4 * np.eye(6))
        # task step plus a pull towards a comfortable posture inside the Jacobian's null space
        dq = j_pinv @ err + (np.eye(7) - j_pinv @ j) @ (0.1 * (Q_READY - q))
        q = np.clip(q + dq, JOINT_LOW + 0.05, JOINT_HIGH - 0.05)
    return q


def _min_jerk(tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    ds = 30 * tau**2 - 60 * tau**3 + 30 * tau**4
    return s, ds


@dataclass(frozen=True)
class Trajectory:
    """One synthetic episode's kinematics, all `(T, ...)` float64."""

    q: np.ndarray  # (T, 7) joint positions, rad
    qd: np.ndarray  # (T, 7) joint velocities, rad/s (exact derivatives)
    gripper: np.ndarray  # (T,) finger opening, m
    finger_cmd: np.ndarray  # (T,) commanded finger target, m (0 closed, 0.04 open)
    frames: np.ndarray  # (T, 9, 4, 4) joint frames for rendering
    cubes: np.ndarray  # (T, n_cubes, 3) cube centres (the grasped one follows the hand)
    cube_colors: np.ndarray  # (n_cubes, 3) uint8
    target: np.ndarray  # (3,) where the grasped cube is placed
    grasped: int  # index of the carried cube
    yaw: float = 0.0  # the hand's rotation about world z at every waypoint (rad)

    @property
    def ee_pos(self) -> np.ndarray:
        return self.frames[:, -1, :3, 3]

    @property
    def ee_quat(self) -> np.ndarray:
        return rotation_to_quat_wxyz(self.frames[:, -1, :3, :3])


CUBE_HALF = 0.025
_COLORS = np.array([[200, 40, 40], [40, 160, 60], [40, 80, 210], [220, 190, 40]], dtype=np.uint8)


def pick_and_place(length: int, rng: np.random.Generator, dt: float = 1 / 60) -> Trajectory:
    """A cube-stacking motion: reach, grasp, lift, carry, place on another cube, retreat."""
    n_cubes = int(rng.integers(2, 4))
    cubes0 = np.zeros((n_cubes, 3))
    placed = 0
    while placed < n_cubes:
        xy = np.array([rng.uniform(0.35, 0.62), rng.uniform(-0.25, 0.25)])
        if placed and np.min(np.linalg.norm(cubes0[:placed, :2] - xy, axis=1)) < 0.09:
            continue
        cubes0[placed] = [xy[0], xy[1], CUBE_HALF]
        placed += 1
    grasped, base = 0, 1
    target = cubes0[base] + np.array([0.0, 0.0, 2 * CUBE_HALF])
    yaw = float(rng.uniform(-1.2, 1.2))  # the grasp follows the cube: any yaw a top-down grasp can reach
    hover = np.array([0.0, 0.0, 0.12])
    waypoints_xyz = [
        cubes0[grasped] + hover,
        cubes0[grasped],
        cubes0[grasped] + hover,
        target + hover,
        target,
        target + hover,
    ]
    q_home = np.clip(Q_READY + rng.normal(0, 0.05, 7), JOINT_LOW + 0.05, JOINT_HIGH - 0.05)
    qs = [q_home]
    for p in waypoints_xyz:
        qs.append(inverse_kinematics(p, yaw, qs[-1]))
    qs = np.stack(qs)
    # segment durations proportional to joint distance (with a floor), scaled to fill `length` steps
    dist = np.linalg.norm(np.diff(qs, axis=0), axis=1) + 0.15
    knots = np.concatenate([[0.0], np.cumsum(dist)])
    knots *= (length - 1) * dt / knots[-1]
    t = np.arange(length) * dt
    seg = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(dist) - 1)
    dur = knots[seg + 1] - knots[seg]
    tau = np.clip((t - knots[seg]) / dur, 0.0, 1.0)
    s, ds = _min_jerk(tau)
    dq = qs[seg + 1] - qs[seg]
    q = qs[seg] + dq * s[:, None]
    qd = dq * (ds / dur)[:, None]
    frames = forward_kinematics(q)

    # gripper: open, close during the grasp segment, open again when placing
    close_start, close_end = knots[1] + 0.4 * (knots[2] - knots[1]), knots[2]
    open_start, open_end = knots[4] + 0.5 * (knots[5] - knots[4]), knots[5]
    closed = CUBE_HALF  # each finger rests on the cube
    g = np.full(length, 0.04)
    closing = np.clip((t - close_start) / max(close_end - close_start, dt), 0, 1)
    opening = np.clip((t - open_start) / max(open_end - open_start, dt), 0, 1)
    g = 0.04 - (0.04 - closed) * _min_jerk(closing)[0] + (0.04 - closed) * _min_jerk(opening)[0]
    finger_cmd = np.where((t >= close_start) & (t < open_start), 0.0, 0.04)

    carried = (t >= close_end) & (t < open_start)
    cubes = np.repeat(cubes0[None], length, axis=0)
    hand = frames[:, -1, :3, 3]
    cubes[carried, grasped] = hand[carried]
    after = t >= open_start
    cubes[after, grasped] = target
    return Trajectory(
        q=q,
        qd=qd,
        gripper=g,
        finger_cmd=finger_cmd,
        frames=frames,
        cubes=cubes,
        cube_colors=_COLORS[rng.permutation(len(_COLORS))[:n_cubes]],
        target=target,
        grasped=grasped,
        yaw=yaw,
    )
