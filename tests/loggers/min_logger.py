"""The min logger: `MinDataLogger` of min_data_logger.py, driven as fcs_main_parallel.py drives it.

Source: Jacob1we/Franka_Cube_Stacking, min_data_logger.py and fcs_main_parallel.py at 440e8d7 (the last public
version). Per step `NNNNNN/{t:03d}.h5` through `save_h5`, one `create_dataset` per entry:

- `action` (6,) float64 = [previous EE position, current EE position] (the first step repeats the current);
- `eef_states` (1, 1, 14) float64 = [ee_pos, ee_pos, ee_quat, ee_quat], the quaternion as get_world_pose
  returns it (w, x, y, z);
- `positions` (1, n_cubes, 4) float32 = [x, y, z, 1.0] (the yaw fcs_main_parallel passes is dropped);
- `info/n_cams` 1, `info/timestamp` 1 (always 1), `info/n_particles` n_cubes (int64 scalars);
- `observations/color/cam_0` (1, 224, 224, 3) float32 and `observations/depth/cam_0` (1, 224, 224) uint16,
  from `process_imgs` of a (1, 1, H, W, 5) float32 [R, G, B, 0, depth] array: colour `[..., :3][..., ::-1]`
  (commented "BGR->RGB", but the input is the camera's RGB, so the result is BGR), depth `* 1000` as uint16.

At episode end `NNNNNN/obses.pth` = `torch.from_numpy(process_imgs(all steps)["cam_0"].astype(np.float32))`,
(T, 224, 224, 3) float32 0..255: the same channel reversal as the per-step copy. `property_params.pkl`
{n_cubes, cube_size, cube_mass, friction}; `first.png`/`last.png`; at the root only `cameras/` (intrinsic
(4, 4), extrinsic (4, 4, 4) float64 when calibration is set). No metadata.pkl, no seq_lengths.pkl, and
fcs_main_parallel.py never calls `save_global_data`, so no states.pth/actions.pth.

Later versions, the layout's variants (documented in Jacob1we/dino_wm: commit cf82300 and
DINO_WM_TRAINING_DOCUMENTATION.md "Gleicher Fix im MinDataLogger"): `rgb=True` process_imgs without the
reversal; `forward=True` the buffered write, step t holds image t with action [pos t, pos t+1] and the last
step a dummy [pos, pos]; `gripper=True` 8-D [x_s, y_s, z_s, g_s, x_e, y_e, z_e, g_e] with g = 1 closed.
`quaternion="xyzw"` stores quaternions scalar last, as the users' notes describe them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

from loggers.sim import SimFrame, simulate


def process_imgs(imgs_list: np.ndarray, reverse: bool = True) -> tuple[dict, dict]:
    """(T, n_cam, H, W, 5) -> colour `cam_i` (T, H, W, 3) (channels reversed when `reverse`) and depth
    `cam_i` (T, H, W) uint16."""
    _, n_cam, _, _, _ = imgs_list.shape
    color, depth = {}, {}
    for cam in range(n_cam):
        img = imgs_list[:, cam]
        color[f"cam_{cam}"] = img[:, :, :, :3][..., ::-1] if reverse else img[:, :, :, :3]
        depth[f"cam_{cam}"] = (img[:, :, :, -1] * 1000).astype(np.uint16)
    return color, depth


def save_h5(filename: Path, data: dict) -> None:
    with h5py.File(filename, "w") as f:
        for key, value in data.items():
            if key == "observations":
                for sub_key, sub_value in value.items():
                    for subsub_key, subsub_value in sub_value.items():
                        f.create_dataset(f"{key}/{sub_key}/{subsub_key}", data=subsub_value)
            elif key == "info":
                for sub_key, sub_value in value.items():
                    f.create_dataset(f"{key}/{sub_key}", data=sub_value)
            else:
                f.create_dataset(key, data=value)


def combined(frame_rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The loggers' (H, W, 5) float32 [R, G, B, 0, depth] image."""
    h, w = frame_rgb.shape[:2]
    img = np.zeros((h, w, 5), dtype=np.float32)
    img[:, :, :3] = frame_rgb.astype(np.float32)
    img[:, :, 4] = depth.astype(np.float32)
    return img


def quat_stored(quat_wxyz: np.ndarray, order: str) -> np.ndarray:
    return quat_wxyz[[1, 2, 3, 0]] if order == "xyzw" else quat_wxyz


class MinDataLogger:
    """log_step writes each step's file at once (backward) or one step later (forward, the buffered fix)."""

    def __init__(self, dataset_path: Path, n_cubes: int = 1, *, rgb: bool = False, forward: bool = False,
                 gripper: bool = False, quaternion: str = "wxyz", save_png: bool = True):
        self.dataset_path = Path(dataset_path)
        self.n_cubes, self.rgb, self.forward, self.gripper = n_cubes, rgb, forward, gripper
        self.quaternion, self.save_png = quaternion, save_png
        self.current_episode: dict | None = None
        self.episode_count = 0
        self.dataset_path.mkdir(parents=True, exist_ok=True)
        (self.dataset_path / "cameras").mkdir(exist_ok=True)

    def start_episode(self, episode_id: int) -> None:
        self.episode_count = episode_id
        folder = self.dataset_path / f"{episode_id:06d}"
        folder.mkdir(exist_ok=True)
        self.current_episode = {"id": episode_id, "folder": folder, "imgs_list": [], "timestep": 0,
                                "prev": None, "buffer": None}

    def _write(self, timestep: int, obs: dict, action: np.ndarray) -> None:
        ep = self.current_episode
        assert ep is not None
        img = obs["img"]
        pos_xyz = np.array([p[:3] for p in obs["cubes"]], dtype=np.float32)
        positions = np.concatenate([pos_xyz, np.ones((len(pos_xyz), 1), np.float32)], axis=1)[np.newaxis, ...]
        quat = quat_stored(obs["ee_quat"], self.quaternion)
        eef_states = np.concatenate([obs["ee_pos"], obs["ee_pos"], quat, quat]).astype(np.float64)[np.newaxis,
                                                                                                 np.newaxis, ...]
        color, depth = process_imgs(img[np.newaxis, np.newaxis, ...], reverse=not self.rgb)
        save_h5(ep["folder"] / f"{timestep:03d}.h5", {
            "info": {"n_cams": 1, "timestamp": 1, "n_particles": self.n_cubes},
            "action": action, "positions": positions, "eef_states": eef_states,
            "observations": {"color": color, "depth": depth},
        })
        ep["imgs_list"].append(img[np.newaxis, ...])

    def _action(self, start: dict, end: dict) -> np.ndarray:
        parts = [start["ee_pos"].astype(np.float64)]
        if self.gripper:
            parts.append([start["g"]])
        parts.append(end["ee_pos"].astype(np.float64))
        if self.gripper:
            parts.append([end["g"]])
        return np.concatenate(parts).astype(np.float64)

    def log_step(self, rgb_image: np.ndarray, depth_image: np.ndarray, ee_pos: np.ndarray, ee_quat: np.ndarray,
                 cube_positions: list, gripper_state: float = 0.0) -> None:
        ep = self.current_episode
        assert ep is not None
        obs = {"img": combined(rgb_image, depth_image), "ee_pos": ee_pos, "ee_quat": ee_quat, "cubes": cube_positions,
               "g": float(gripper_state)}
        if self.forward:
            if ep["buffer"] is not None:
                self._write(ep["timestep"], ep["buffer"], self._action(ep["buffer"], obs))
                ep["timestep"] += 1
            ep["buffer"] = obs
            return
        prev = ep["prev"] if ep["prev"] is not None else obs
        self._write(ep["timestep"], obs, self._action(prev, obs))
        ep["prev"] = obs
        ep["timestep"] += 1

    def end_episode(self) -> None:
        ep = self.current_episode
        assert ep is not None
        if self.forward and ep["buffer"] is not None:  # the last image with a dummy action [pos, pos]
            self._write(ep["timestep"], ep["buffer"], self._action(ep["buffer"], ep["buffer"]))
            ep["timestep"] += 1
        color, _ = process_imgs(np.stack(ep["imgs_list"], axis=0), reverse=not self.rgb)
        obses = color["cam_0"].astype(np.float32)
        torch.save(torch.from_numpy(obses), ep["folder"] / "obses.pth")
        with open(ep["folder"] / "property_params.pkl", "wb") as f:
            pickle.dump({"n_cubes": self.n_cubes, "cube_size": 0.05, "cube_mass": 0.1, "friction": 0.5}, f)
        if self.save_png:
            for idx, name in ((0, "first"), (-1, "last")):
                Image.fromarray(color["cam_0"][idx].astype(np.uint8)).save(ep["folder"] / f"{name}.png")
        self.episode_count += 1
        self.current_episode = None

    def save_camera_calibration(self) -> None:
        intrinsic = np.eye(4, dtype=np.float64)
        intrinsic[:3, :3] = [[300.0, 0, 112], [0, 300.0, 112], [0, 0, 1]]
        np.save(self.dataset_path / "cameras" / "intrinsic.npy", intrinsic)
        np.save(self.dataset_path / "cameras" / "extrinsic.npy", np.stack([np.eye(4)] * 4, axis=0))


def log_frames(logger: MinDataLogger, frames: list[SimFrame]) -> None:
    for frame in frames:
        logger.log_step(rgb_image=frame.rgb, depth_image=frame.depth, ee_pos=frame.ee_pos, ee_quat=frame.ee_quat,
                        cube_positions=frame.cubes, gripper_state=1.0 if frame.closed else 0.0)


def write_min(out: Path, lengths: list[int], seed: int = 0, **variant) -> Path:
    """A min-logger dataset at `out`: episodes of `lengths` physics steps; `variant` as `MinDataLogger`."""
    logger = MinDataLogger(out, **variant)
    for i, n in enumerate(lengths):
        logger.start_episode(i)
        log_frames(logger, simulate(seed * 1000 + i, n))
        logger.end_episode()
    logger.save_camera_calibration()
    return out
