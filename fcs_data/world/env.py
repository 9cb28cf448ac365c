"""`CubeWorld`: a closed-loop reference world for planning, as a Gymnasium environment.

    world = CubeWorld(WorldSpec(layout="franka_cube_stack_primitive", dataset_seed=5, goal_steps=3))
    obs, info = world.reset(seed=0)        # obs: image (H, W, 3) uint8 RGB, proprio (3,) EE position (m)
    goal_image, goal_proprio = info["goal_image"], info["goal_proprio"]   # what the Isaac Sim client sends
    obs, reward, terminated, truncated, info = world.step(action)        # one raw action of the layout

An episode is a scene of the synthetic dataset the spec names (same generator, renderer, camera and
table texture; episode indices from `EPISODE_BASE` on, never in a dataset) at one of its logged
steps, and the goal is the scene `goal_steps` logged steps later along its scripted pick-and-place
motion: a goal image and a goal EE position, reachable, and at least `min_goal_distance` away. A
place task is one in which a cube ends further than `success_radius` from where it starts. `step` applies the layout's
action semantics (`scene.py`): v1 joint and finger targets, or the end of an EE segment through IK
and the gripper command. Success is measured here, by the world, never by a model: the EE within
`success_radius` of the goal EE position and, in a place task, each moved cube within it of its goal.
Everything is deterministic from the reset seed. `reset(options={"episode": i, "length": n})` poses the
task on episode i (of n logged steps) of the dataset instead, e.g. to compare with the dataset itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from fcs_data.schemas import Layout
from fcs_data.synth import dataset_renderers, episode_trajectory, logger_family, scripted_actions
from fcs_data.synth.kinematics import JOINT_HIGH, JOINT_LOW, Trajectory
from fcs_data.world.scene import FINGER_OPEN, Physics, SceneState, apply_joint_targets, move_ee_to
from fcs_data.world.spec import EPISODE_BASE, WorldError, WorldSpec

REACH = 0.9  # m: positions the segment actions may name (beyond the Panda's 0.855 m reach)
_DRAWS = 200  # (episode, start) draws before a reset gives up


@dataclass(frozen=True)
class Task:
    """One episode's task. start, goal: logged steps of the scripted episode; moved: the cubes that must be
    carried to their goal_cubes position; kind: "place" when there is one, else "reach"."""

    episode: int
    length: int
    start: int
    goal: int
    goal_proprio: np.ndarray
    goal_cubes: np.ndarray
    moved: tuple[int, ...]

    @property
    def kind(self) -> str:
        return "place" if self.moved else "reach"


def _action_kind(layout: Layout) -> str:
    kinds = {f.kind for f in layout.action}
    if "target" in kinds and any(f.kind == "target" and f.width == 7 for f in layout.action):
        return "joint"
    ends = [f for f in layout.action if f.kind == "position_end" and f.of == layout.proprio and f.width == 3]
    if ends:
        return "segment"
    raise WorldError(f"layout {layout.name}: the world speaks 7 joint targets (v1) or EE segment actions "
                     "(kinds position_start/position_end); this layout has neither")


class CubeWorld(gym.Env):
    """The synthetic datasets' Panda cube-stacking scene, stepped in closed loop (module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, spec: WorldSpec | None = None, physics: Physics | None = None):
        self.world_spec = spec or WorldSpec()
        layout = self.world_spec.resolved_layout()
        if layout.observation.fused is not None or layout.cameras:
            raise WorldError(f"layout {layout.name}: the world renders one camera, unfused")
        self.layout, self.family, self.kind = layout, logger_family(layout), _action_kind(layout)
        self.physics = physics or Physics(dt=1.0 / layout.control_hz)
        size = self.world_spec.size
        self.renderer = dataset_renderers(self.world_spec.dataset_seed, size, ["cam_0"])["cam_0"]
        self.renderer.noise = self.world_spec.noise
        self.render_mode = "rgb_array"
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (size, size, 3), np.uint8),
            "proprio": spaces.Box(np.array([-REACH, -REACH, -0.1]), np.array([REACH, REACH, REACH + 0.333]), (3,),
                                  np.float64),
        })
        self.action_space = self._action_space()
        self.state: SceneState | None = None
        self.task: Task | None = None
        self.steps = 0
        self._trajectory: tuple[Trajectory, np.ndarray] | None = None
        self._script: np.ndarray | None = None  # (length, A) the episode's logged actions

    def _action_space(self) -> spaces.Box:
        lo, hi = np.full(self.layout.action_dim, -np.inf), np.full(self.layout.action_dim, np.inf)
        for f in self.layout.action:
            if self.kind == "joint" and f.kind == "target":
                lo[f.slice], hi[f.slice] = JOINT_LOW, JOINT_HIGH
            elif f.kind in ("position_start", "position_end"):
                lo[f.slice], hi[f.slice] = [-REACH, -REACH, 0.0], [REACH, REACH, REACH + 0.333]
            elif f.kind == "gripper_command":
                lo[f.slice], hi[f.slice] = 0.0, 1.0
            elif self.kind == "joint":  # the finger targets
                lo[f.slice], hi[f.slice] = 0.0, FINGER_OPEN
        return spaces.Box(lo, hi, dtype=np.float64)

    # -- episodes --------------------------------------------------------------------------------------
    def _pose_task(self, episode: int | None = None, length: int | None = None) -> Task:
        """A task on a drawn synthetic episode (or on `episode` of `length` logged steps, when given)."""
        spec, rng = self.world_spec, self.np_random
        for _ in range(1 if episode is not None else _DRAWS):
            index = episode if episode is not None else EPISODE_BASE + int(rng.integers(0, 2**31 - EPISODE_BASE))
            n = length if length is not None else int(rng.integers(spec.min_len, spec.max_len + 1))
            traj, idx, _ = episode_trajectory(self.layout, n, spec.dataset_seed, index)
            starts = [s for s in range(n - spec.goal_steps) if self._poses_a_task(traj, idx, s)]
            if not starts:
                continue
            s = int(starts[int(rng.integers(len(starts)))])
            g = s + spec.goal_steps
            cubes0, cubes1 = traj.cubes[idx[s]], traj.cubes[idx[g]]
            far = np.linalg.norm(cubes1 - cubes0, axis=1) > spec.success_radius  # cubes that must be carried
            moved = tuple(int(i) for i in np.flatnonzero(far))
            self._trajectory, self._script = (traj, idx), None
            return Task(index, n, s, g, traj.ee_pos[idx[g]].copy(), cubes1.copy(), moved)
        which = f"episode {episode}" if episode is not None else f"no episode of {spec.min_len}..{spec.max_len} steps"
        raise WorldError(f"{which} has no goal {spec.goal_steps} steps ahead at least {spec.min_goal_distance} m from "
                         "its start; lower min_goal_distance or goal_steps")

    def _poses_a_task(self, traj: Trajectory, idx: np.ndarray, s: int) -> bool:
        g = s + self.world_spec.goal_steps
        if np.linalg.norm(traj.ee_pos[idx[g]] - traj.ee_pos[idx[s]]) < self.world_spec.min_goal_distance:
            return False
        grip = any(f.kind == "gripper_command" for f in self.layout.action) or self.kind == "joint"
        return grip or _held(traj, idx[s]) == _held(traj, idx[g])  # no gripper in the actions: no grasp changes

    def scene_at(self, step: int) -> SceneState:
        """The scene at logged step `step` of the current episode's scripted motion."""
        if self._trajectory is None:
            raise WorldError("call reset() first")
        traj, idx = self._trajectory
        t = int(idx[step])
        return SceneState(q=traj.q[t].copy(), opening=float(traj.gripper[t]), cubes=traj.cubes[t].copy(),
                          colors=traj.cube_colors.copy(), held=_held(traj, t), yaw=traj.yaw,
                          closed=bool(traj.finger_cmd[t] == 0), qd=traj.qd[t].copy())

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"episode", "length"}
        if unknown:
            raise WorldError(f"reset options {sorted(unknown)}: the world takes episode and length (a synthetic "
                             "episode of the dataset to pose the task on)")
        self.task = self._pose_task(options.get("episode"), options.get("length"))
        self.renderer.rng = np.random.default_rng([self.world_spec.dataset_seed, 2**33, self.task.episode])
        self.state = self.scene_at(self.task.start)
        self.steps = 0
        goal = self.scene_at(self.task.goal)
        info = {"goal_image": self.render_scene(goal), "goal_proprio": self.task.goal_proprio.copy(),
                "goal_cubes": self.task.goal_cubes.copy(), "task": self.task.kind, "episode": self.task.episode,
                "start_step": self.task.start, "goal_step": self.task.goal}
        return self._observation(), info | self._progress()

    # -- stepping --------------------------------------------------------------------------------------
    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.state is None or self.task is None:
            raise WorldError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.layout.action_dim,) or not np.isfinite(a).all():
            raise WorldError(f"an action is ({self.layout.action_dim},) finite values of {self.layout.name}; got "
                             f"shape {a.shape}" + ("" if a.shape != (self.layout.action_dim,) else " with NaN/Inf"))
        fields = {f.name: f for f in self.layout.action}
        if self.kind == "joint":
            target = next(f for f in self.layout.action if f.kind == "target")
            fingers = [f for f in self.layout.action if f.kind != "target"]
            finger = float(np.mean(np.concatenate([a[f.slice] for f in fingers]))) if fingers else FINGER_OPEN
            apply_joint_targets(self.state, a[target.slice], finger, self.physics)
        else:
            end = next(f for f in self.layout.action if f.kind == "position_end" and f.of == self.layout.proprio)
            grip = fields.get("end_gripper") or next((f for f in self.layout.action if f.kind == "gripper_command"
                                                      and f.start > end.start), None)
            closed = None if grip is None else bool(a[grip.slice][0] >= 0.5)
            move_ee_to(self.state, np.clip(a[end.slice], self.action_space.low[end.slice],
                                           self.action_space.high[end.slice]), closed, self.physics)
        self.steps += 1
        progress = self._progress()
        terminated = bool(progress["success"])
        truncated = not terminated and self.steps >= self.world_spec.step_limit
        return self._observation(), float(terminated), terminated, truncated, progress

    def _progress(self) -> dict[str, Any]:
        assert self.state is not None and self.task is not None
        ee = float(np.linalg.norm(self.state.ee_pos - self.task.goal_proprio))
        cubes = [float(np.linalg.norm(self.state.cubes[i] - self.task.goal_cubes[i])) for i in self.task.moved]
        r = self.world_spec.success_radius
        return {"ee_distance": ee, "cube_distance": max(cubes) if cubes else None,
                "success": ee <= r and all(c <= r for c in cubes), "steps": self.steps}

    # -- observations ----------------------------------------------------------------------------------
    def render_scene(self, state: SceneState) -> np.ndarray:
        """`(H, W, 3)` uint8 RGB: the datasets' renderer drawing `state` (with sensor noise)."""
        return self.renderer.draw(state.frames, state.cubes, state.colors, state.opening)

    def render(self) -> np.ndarray:
        if self.state is None:
            raise WorldError("call reset() first")
        return self.render_scene(self.state)

    def _observation(self) -> dict[str, np.ndarray]:
        assert self.state is not None
        return {"image": self.render(), "proprio": self.state.ee_pos}

    def logged_state(self) -> np.ndarray:
        """`(state_dim,)` float32: the current scene as the layout's logger writes its state row."""
        assert self.state is not None
        s, quat = self.state, self.state.ee_quat_wxyz
        if self.family == "v1":
            qd = np.zeros(7) if s.qd is None else s.qd
            return np.concatenate([s.ee_pos, quat, [s.opening], s.q, qd]).astype(np.float32)
        if self.layout.state_field("ee_quat").kind == "quaternion_xyzw":
            quat = quat[[1, 2, 3, 0]]
        return np.concatenate([s.ee_pos, s.ee_pos, quat, quat]).astype(np.float32)

    def scripted_actions(self, k: int = 1) -> np.ndarray:
        """`(k, A)`: the actions the episode's script logs from this step on (the oracle: the motion that
        produced the goal); past the goal, actions that hold the goal's pose and gripper."""
        if self._trajectory is None or self.task is None or self.state is None:
            raise WorldError("call reset() first")
        if self._script is None:
            self._script = scripted_actions(self.layout, *self._trajectory)
        first = self.task.start + self.steps
        rows = [self._script[t] if t < self.task.goal else self.hold_action(self.scene_at(self.task.goal))
                for t in range(first, first + k)]
        return np.stack(rows).astype(np.float64)

    def hold_action(self, scene: SceneState | None = None) -> np.ndarray:
        """An action that keeps the arm at `scene`'s pose (default: where it is), the gripper as it is."""
        scene = scene or self.state
        assert scene is not None
        a = np.zeros(self.layout.action_dim)
        for f in self.layout.action:
            if f.kind == "target":
                a[f.slice] = scene.q
            elif f.kind in ("position_start", "position_end"):
                a[f.slice] = scene.ee_pos
            elif f.kind == "gripper_command":
                a[f.slice] = float(scene.closed)
            else:
                a[f.slice] = 0.0 if scene.closed else FINGER_OPEN
        return a


def _held(traj: Trajectory, t: int) -> int | None:
    """The cube the script carries at dense step t (it follows the hand exactly), or None."""
    if traj.finger_cmd[t] != 0:
        return None
    return traj.grasped if np.allclose(traj.cubes[t, traj.grasped], traj.ee_pos[t], atol=1e-9) else None

