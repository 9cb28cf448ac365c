"""The v1 logger: `FrankaDataLogger` of data_logger.py, driven as fcs_main.py drives it.

Source: Jacob1we/Franka_Cube_Stacking, data_logger.py and fcs_main.py at 489f7f9 ("dino wm compatibility");
`seq_lengths=False` gives the earlier version (89fcc76), which wrote no seq_lengths.pkl. The write calls:

- per episode `NNNNNN/obses.pth`: `torch.save(torch.from_numpy(np.stack(observations)))`, (T, 256, 256, 3)
  uint8 (`rgb_image.astype(np.uint8)`, the camera's RGB);
- `NNNNNN/property_params.pkl`: `pickle.dump` of the dict fcs_main.py sets (seed, cube_positions as lists,
  target_position);
- `NNNNNN/images/frame_KKKK.png`: every 50th frame (save_png=True in fcs_main.py);
- `NNNNNN/{t:02d}.h5` per step (h5py was installed): numpy values of `additional_data` as datasets, the
  rest as attributes: `timestep` (attribute) and `cube_0_pos` (3,) (a dataset) from fcs_main.py's loop;
  `extras=False` logs as fcs_main_parallel.py does, without additional_data (attribute `timestep` only);
- root `states.pth` (N, T_max, 22) and `actions.pth` (N, T_max, 9): `torch.zeros(..., dtype=torch.float32)`
  filled up to each episode's length; `metadata.pkl` {n_rollouts, max_timesteps, state_dim, action_dim,
  episode_lengths, image_size (tuple), created}; `seq_lengths.pkl` (list of lengths); `cameras/` (empty
  unless calibration was set).

State (get_franka_state): [ee_pos(3), ee_quat wxyz(4), mean finger joint(1), q(7), qd(7)] float32.
Action (get_franka_action): [joint_positions[:7], joint_positions[7:9]] float32, the controller's command
applied after the frame was taken (forward).
"""

from __future__ import annotations

import pickle
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

from loggers.sim import SimFrame, simulate


class FrankaDataLogger:
    """The episode bookkeeping and write calls of data_logger.py (489f7f9)."""

    def __init__(self, save_path: Path, object_name: str, image_size: tuple[int, int] = (256, 256),
                 save_png: bool = True, seq_lengths: bool = True):
        self.dataset_path = Path(save_path) / object_name
        self.image_size, self.save_png, self.seq_lengths = image_size, save_png, seq_lengths
        self.current_episode: dict | None = None
        self.episode_count = 0
        self.all_states: list[torch.Tensor] = []
        self.all_actions: list[torch.Tensor] = []
        self.all_episode_lengths: list[int] = []
        self.dataset_path.mkdir(parents=True, exist_ok=True)
        (self.dataset_path / "cameras").mkdir(exist_ok=True)

    def start_episode(self, episode_id: int) -> None:
        self.episode_count = episode_id
        self.current_episode = {"id": episode_id, "timestep": 0, "observations": [], "states": [], "actions": [],
                                "h5_data": [], "property_params": {}}

    def set_episode_params(self, params: dict) -> None:
        assert self.current_episode is not None
        self.current_episode["property_params"].update(params)

    def log_step(self, rgb_image: np.ndarray, state: np.ndarray, action: np.ndarray,
                 additional_data: dict | None = None) -> None:
        ep = self.current_episode
        assert ep is not None
        ep["observations"].append(rgb_image.astype(np.uint8))
        ep["states"].append(state.astype(np.float32))
        ep["actions"].append(action.astype(np.float32))
        h5_entry = {"timestep": ep["timestep"]}
        if additional_data:
            h5_entry.update(additional_data)
        ep["h5_data"].append(h5_entry)
        ep["timestep"] += 1

    def end_episode(self) -> None:
        ep = self.current_episode
        assert ep is not None
        observations = np.stack(ep["observations"], axis=0)
        self.all_states.append(torch.from_numpy(np.stack(ep["states"], axis=0)))
        self.all_actions.append(torch.from_numpy(np.stack(ep["actions"], axis=0)))
        self.all_episode_lengths.append(ep["timestep"])
        path = self.dataset_path / f"{ep['id']:06d}"
        path.mkdir(exist_ok=True)
        torch.save(torch.from_numpy(observations), path / "obses.pth")
        if self.save_png:
            (path / "images").mkdir(exist_ok=True)
            for k, idx in enumerate(range(0, len(observations), 50)):
                Image.fromarray(observations[idx]).save(path / "images" / f"frame_{k:04d}.png")
        with open(path / "property_params.pkl", "wb") as f:
            pickle.dump(ep["property_params"], f)
        for t, entry in enumerate(ep["h5_data"]):
            with h5py.File(path / f"{t:02d}.h5", "w") as f:
                for key, value in entry.items():
                    if isinstance(value, np.ndarray):
                        f.create_dataset(key, data=value)
                    else:
                        f.attrs[key] = value
        self.episode_count += 1
        self.current_episode = None

    def save_dataset(self) -> None:
        max_len = max(self.all_episode_lengths)
        n = len(self.all_states)
        states = torch.zeros((n, max_len, self.all_states[0].shape[-1]), dtype=torch.float32)
        actions = torch.zeros((n, max_len, self.all_actions[0].shape[-1]), dtype=torch.float32)
        for i, (s, a, length) in enumerate(zip(self.all_states, self.all_actions, self.all_episode_lengths,
                                               strict=True)):
            states[i, :length] = s
            actions[i, :length] = a
        torch.save(states, self.dataset_path / "states.pth")
        torch.save(actions, self.dataset_path / "actions.pth")
        metadata = {"n_rollouts": n, "max_timesteps": max_len, "state_dim": states.shape[-1],
                    "action_dim": actions.shape[-1], "episode_lengths": self.all_episode_lengths,
                    "image_size": self.image_size, "created": datetime.now().isoformat()}
        with open(self.dataset_path / "metadata.pkl", "wb") as f:
            pickle.dump(metadata, f)
        if self.seq_lengths:
            with open(self.dataset_path / "seq_lengths.pkl", "wb") as f:
                pickle.dump(self.all_episode_lengths, f)


def franka_state(frame: SimFrame) -> np.ndarray:
    """get_franka_state: (22,) float32."""
    return np.concatenate([frame.ee_pos, frame.ee_quat, [float(np.mean(frame.fingers))], frame.q,
                           frame.qd]).astype(np.float32)


def franka_action(frame: SimFrame) -> np.ndarray:
    """get_franka_action: the ArticulationAction's joint_positions[:7] and [7:9], (9,) float32."""
    return np.concatenate([frame.joint_targets[:7], frame.joint_targets[7:9]]).astype(np.float32)


def write_v1(out: Path, lengths: list[int], seed: int = 0, *, seq_lengths: bool = True, extras: bool = True) -> Path:
    """A v1 dataset at `out` with episodes of `lengths` steps, logged as fcs_main.py logs it."""
    logger = FrankaDataLogger(out.parent, out.name, seq_lengths=seq_lengths)
    for i, n in enumerate(lengths):
        frames = simulate(seed * 1000 + i, n, size=256)
        logger.start_episode(i)
        logger.set_episode_params({"seed": seed * 1000 + i, "cube_positions": [list(frames[0].cubes[0][:3])],
                                   "target_position": list(frames[-1].cubes[0][:3])})
        for step, frame in enumerate(frames):
            extra = {"timestep": step, "cube_0_pos": np.asarray(frame.cubes[0][:3], np.float32)} if extras else None
            logger.log_step(rgb_image=frame.rgb, state=franka_state(frame), action=franka_action(frame),
                            additional_data=extra)
        logger.end_episode()
    logger.save_dataset()
    return out
