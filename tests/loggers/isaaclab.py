"""Isaac Lab's recorder and Mimic data generation for Franka cube stacking, as its code writes them.

Sources (isaac-sim/IsaacLab):
- source/isaaclab/isaaclab/utils/datasets/hdf5_dataset_file_handler.py (`HDF5DatasetFileHandler`):
  `create` makes group `data` with attrs `total` = 0 and `env_args` = json.dumps({"env_name", "type": 2});
  `write_episode` makes `data/demo_{count}` with attrs `num_samples` = len(actions), `seed`, `success`, and
  one `create_dataset(key, data=value.cpu().numpy(), compression="gzip")` per tensor (nested dicts become
  groups), then adds num_samples to `total`;
- source/isaaclab/isaaclab/utils/datasets/episode_data.py (`EpisodeData.add`): each recorded value is
  `unsqueeze(0)`-ed and concatenated along a new time axis, keys split at "/";
- source/isaaclab/isaaclab/envs/mdp/recorders/recorders.py (ActionStateRecorderManagerCfg): `initial_state`
  after reset, `actions` (`action_manager.action`) and `obs` (`obs_buf["policy"]`) before each step,
  `states` (`scene.get_state(is_relative=True)`) and `processed_actions` after it;
- source/isaaclab_tasks/.../stack/config/franka/stack_ik_rel_visuomotor_env_cfg.py: the policy group
  (concatenate_terms False) holds actions (7), joint_pos (9, relative), joint_vel (9), object (39),
  cube_positions (9), cube_orientations (12), eef_pos (3), eef_quat (4, w x y z), gripper_pos (2),
  table_cam and wrist_cam (84, 84, 3) uint8 (`mdp.image(..., "rgb", normalize=False)`); the IK-Rel action is
  [dx, dy, dz, drx, dry, drz, gripper +1 open / -1 close];
- source/isaaclab_mimic (franka_stack_ik_rel_mimic_env.py and the datagen recorders): `obs/datagen_info`
  with object_pose/cube_i, eef_pose/franka, target_eef_pose/franka (T, 4, 4) and
  subtask_term_signals/{grasp_1, grasp_2, stack_1} (T,) bool.

The decimated control step is 20 Hz (sim dt 0.01, decimation 5).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch

from loggers.sim import SimFrame, simulate


class EpisodeData:
    """`EpisodeData.add`: values stacked along time, nested by "/" in the key."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.seed: int | None = None
        self.success: bool | None = None

    def add(self, key: str, value) -> None:
        if isinstance(value, dict):
            for sub_key, sub_value in value.items():
                self.add(f"{key}/{sub_key}", sub_value)
            return
        parts = key.split("/")
        node = self.data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        last = parts[-1]
        node[last] = value.unsqueeze(0).clone() if last not in node else torch.cat((node[last], value.unsqueeze(0)))


class HDF5DatasetFileHandler:
    def create(self, file_path: str, env_name: str) -> None:
        if not file_path.endswith(".hdf5"):
            file_path += ".hdf5"
        Path(file_path).parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(file_path, "w")
        self.data = self.file.create_group("data")
        self.data.attrs["total"] = 0
        self.demo_count = 0
        self.data.attrs["env_args"] = json.dumps({"env_name": env_name, "type": 2})

    def write_episode(self, episode: EpisodeData) -> None:
        group = self.data.create_group(f"demo_{self.demo_count}")
        group.attrs["num_samples"] = len(episode.data["actions"]) if "actions" in episode.data else 0
        if episode.seed is not None:
            group.attrs["seed"] = episode.seed
        if episode.success is not None:
            group.attrs["success"] = episode.success

        def create(parent, key, value):
            if isinstance(value, dict):
                sub = parent.create_group(key)
                for k, v in value.items():
                    create(sub, k, v)
            else:
                parent.create_dataset(key, data=value.cpu().numpy(), compression="gzip")

        for key, value in episode.data.items():
            create(group, key, value)
        self.data.attrs["total"] += group.attrs["num_samples"]
        self.demo_count += 1

    def close(self) -> None:
        self.file.close()


def _pose(pos: np.ndarray, quat_wxyz: np.ndarray) -> torch.Tensor:
    w, x, y, z = quat_wxyz
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                    [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                    [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, pos
    return torch.tensor(out, dtype=torch.float32)


def _policy_obs(frame: SimFrame, last_action: torch.Tensor, wrist: bool) -> dict[str, torch.Tensor]:
    f = torch.float32
    cube = torch.tensor(frame.cubes[0][:3], dtype=f)
    cubes = torch.cat([cube, cube + torch.tensor([0.1, 0.0, 0.0]), cube + torch.tensor([0.0, 0.1, 0.0])])
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0] * 3, dtype=f)
    ee = torch.tensor(frame.ee_pos, dtype=f)
    obj = torch.cat([cubes[0:3], quats[0:4], cubes[3:6], quats[4:8], cubes[6:9], quats[8:12], cubes[0:3] - ee,
                     cubes[3:6] - ee, cubes[6:9] - ee, cubes[0:3] - cubes[3:6], cubes[3:6] - cubes[6:9],
                     cubes[0:3] - cubes[6:9]])
    obs = {"actions": last_action, "joint_pos": torch.tensor(np.r_[frame.q, frame.fingers] - np.r_[frame.q * 0, 0.04, 0.04],
                                                             dtype=f),
           "joint_vel": torch.tensor(np.r_[frame.qd, 0.0, 0.0], dtype=f), "object": obj, "cube_positions": cubes,
           "cube_orientations": quats, "eef_pos": ee, "eef_quat": torch.tensor(frame.ee_quat, dtype=f),
           "gripper_pos": torch.tensor([frame.fingers[0], -frame.fingers[1]], dtype=f),
           "table_cam": torch.from_numpy(frame.rgb.copy())}
    if wrist:
        obs["wrist_cam"] = torch.from_numpy(frame.rgb_cam1.copy())
    return obs


def _state(frame: SimFrame) -> dict:
    f = torch.float32
    robot = {"root_pose": torch.tensor([0, 0, 0, 1, 0, 0, 0], dtype=f), "root_velocity": torch.zeros(6),
             "joint_position": torch.tensor(np.r_[frame.q, frame.fingers], dtype=f),
             "joint_velocity": torch.tensor(np.r_[frame.qd, 0.0, 0.0], dtype=f)}
    cube = {"root_pose": torch.tensor([*frame.cubes[0][:3], 1, 0, 0, 0], dtype=f), "root_velocity": torch.zeros(6)}
    return {"articulation": {"robot": robot}, "rigid_object": {"cube_1": cube, "cube_2": cube, "cube_3": cube}}


def record_episode(frames: list[SimFrame], seed: int, *, wrist: bool = True, mimic: bool = True) -> EpisodeData:
    """One demo: per control step the pre-step recorders (actions, obs, datagen_info) then the post-step ones."""
    ep = EpisodeData()
    ep.seed = seed
    ep.add("initial_state", _state(frames[0]))
    last = torch.zeros(7)
    for t, frame in enumerate(frames):
        nxt = frames[min(t + 1, len(frames) - 1)]
        delta = torch.tensor(nxt.ee_pos - frame.ee_pos, dtype=torch.float32)
        action = torch.cat([delta, torch.zeros(3), torch.tensor([-1.0 if nxt.closed else 1.0])])
        ep.add("actions", action)
        ep.add("obs", _policy_obs(frame, last, wrist))
        if mimic:
            pose = _pose(frame.ee_pos, frame.ee_quat)
            ep.add("obs/datagen_info", {
                "object_pose": {f"cube_{k}": _pose(np.array(frame.cubes[0][:3]), np.array([1.0, 0, 0, 0]))
                                for k in (1, 2, 3)},
                "eef_pose": {"franka": pose}, "target_eef_pose": {"franka": _pose(nxt.ee_pos, nxt.ee_quat)},
            })
            ep.add("obs/datagen_info/subtask_term_signals", {
                "grasp_1": torch.tensor(frame.phase >= 4), "grasp_2": torch.tensor(False),
                "stack_1": torch.tensor(frame.phase >= 8)})
        ep.add("states", _state(nxt))
        ep.add("processed_actions", torch.cat([delta, torch.zeros(3), torch.tensor([0.04, 0.04])]))
        last = action
    ep.success = True
    return ep


def write_isaaclab(out: Path, lengths: list[int], seed: int = 0, *, wrist: bool = True, mimic: bool = True,
                   env_name: str = "Isaac-Stack-Cube-Franka-IK-Rel-Visuomotor-Mimic-v0") -> Path:
    """`out` (a .hdf5 file) with one demo per entry of `lengths` (control steps)."""
    handler = HDF5DatasetFileHandler()
    handler.create(str(out), env_name=env_name)
    for i, n in enumerate(lengths):
        handler.write_episode(record_episode(simulate(seed * 1000 + i, n, size=84), seed * 1000 + i, wrist=wrist,
                                             mimic=mimic))
    handler.close()
    return out if str(out).endswith(".hdf5") else Path(str(out) + ".hdf5")
