"""The keyframe logger: `KeyframeDataLogger` of keyframe_data_logger.py.

Source: Jacob1we/Franka_Cube_Stacking, keyframe_data_logger.py at 574c501 (wired in as the
KEYFRAME_LOGGING_GUIDE.md of that commit describes: `phase=controller.get_current_event()`, sparse_interval 5,
min_z_threshold 0.001). `log_step` buffers every physics step and marks keyframes (the first frame, phase
changes, local z minima, every `sparse_interval` frames without one; the last frame at the end);
`end_episode` writes the min logger's files for the keyframes only (`save_h5` and `process_imgs` as in
min_data_logger.py, so the per-step colour copy and obses.pth are both channel-reversed), with
`info/original_frame_idx` (int64 scalar) in each step file, `action` = [previous keyframe EE, current
keyframe EE] (backward), and `property_params.pkl` {n_cubes, keyframe_indices, keyframe_stats}. save_png is
off by default. No metadata.pkl, no seq_lengths.pkl.

Variants as for the min logger: `rgb`, `forward` (action [current keyframe, next keyframe], a dummy for the
last), `quaternion="xyzw"`.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from loggers.min_logger import combined, process_imgs, quat_stored, save_h5
from loggers.sim import SimFrame, simulate

KEYFRAME_PHASES = {1, 2, 3, 6, 7}


class KeyframeDataLogger:
    def __init__(self, dataset_path: Path, n_cubes: int = 1, sparse_interval: int = 5,
                 min_z_threshold: float = 0.001, *, rgb: bool = False, forward: bool = False, quaternion: str = "wxyz"):
        self.dataset_path = Path(dataset_path)
        self.n_cubes, self.sparse_interval, self.min_z_threshold = n_cubes, sparse_interval, min_z_threshold
        self.rgb, self.forward, self.quaternion = rgb, forward, quaternion
        self.current_episode: dict | None = None
        self.dataset_path.mkdir(parents=True, exist_ok=True)
        (self.dataset_path / "cameras").mkdir(exist_ok=True)

    def start_episode(self, episode_id: int) -> None:
        folder = self.dataset_path / f"{episode_id:06d}"
        folder.mkdir(exist_ok=True)
        self.current_episode = {"id": episode_id, "folder": folder, "all_frames": [], "keyframes": [],
                                "keyframe_indices": [], "frame_count": 0, "last_phase": None, "last_z": None,
                                "z_decreasing": False, "frames_since_keyframe": 0,
                                "stats": {"total_frames": 0, "keyframes_phase": 0, "keyframes_z_min": 0,
                                          "keyframes_sparse": 0}}

    def log_step(self, rgb_image: np.ndarray, depth_image: np.ndarray, ee_pos: np.ndarray, ee_quat: np.ndarray,
                 cube_positions: list, phase: int) -> None:
        ep = self.current_episode
        assert ep is not None
        idx = ep["frame_count"]
        data = {"rgb": rgb_image.copy(), "depth": depth_image.copy(), "ee_pos": ee_pos.copy(), "ee_quat": ee_quat.copy(),
                "cube_positions": list(cube_positions), "phase": phase, "frame_idx": idx}
        ep["all_frames"].append(data)
        key = False
        z = ee_pos[2]
        if ep["last_phase"] is not None and phase != ep["last_phase"]:
            key = True
            ep["stats"]["keyframes_phase"] += 1
        if ep["last_z"] is not None and not key:
            dz = z - ep["last_z"]
            if ep["z_decreasing"] and dz > self.min_z_threshold:
                key = True
                ep["stats"]["keyframes_z_min"] += 1
            ep["z_decreasing"] = dz < -self.min_z_threshold
        if not key:
            ep["frames_since_keyframe"] += 1
            if ep["frames_since_keyframe"] >= self.sparse_interval:
                key = True
                ep["stats"]["keyframes_sparse"] += 1
        if idx == 0:
            key = True
        if key:
            ep["keyframes"].append(data)
            ep["keyframe_indices"].append(idx)
            ep["frames_since_keyframe"] = 0
        ep["last_phase"], ep["last_z"] = phase, z
        ep["frame_count"] += 1
        ep["stats"]["total_frames"] += 1

    def end_episode(self) -> None:
        ep = self.current_episode
        assert ep is not None
        if ep["all_frames"] and ep["keyframe_indices"][-1] != ep["frame_count"] - 1:
            ep["keyframes"].append(ep["all_frames"][-1])
            ep["keyframe_indices"].append(ep["all_frames"][-1]["frame_idx"])
        keys = ep["keyframes"]
        imgs_list = []
        prev = None
        for k, kf in enumerate(keys):
            img = combined(kf["rgb"], kf["depth"])
            imgs_list.append(img[np.newaxis, ...])
            ee = kf["ee_pos"].astype(np.float64)
            if self.forward:
                nxt = keys[min(k + 1, len(keys) - 1)]["ee_pos"].astype(np.float64)
                action = np.concatenate([ee, nxt])
            else:
                prev = ee if prev is None else prev
                action = np.concatenate([prev, ee])
                prev = ee.copy()
            pos_xyz = np.array([p[:3] for p in kf["cube_positions"]], dtype=np.float32)
            positions = np.concatenate([pos_xyz, np.ones((len(pos_xyz), 1), np.float32)], axis=1)
            quat = quat_stored(kf["ee_quat"], self.quaternion)
            eef_states = np.concatenate([kf["ee_pos"], kf["ee_pos"], quat, quat]).astype(np.float64)[np.newaxis,
                                                                                                   np.newaxis, ...]
            color, depth = process_imgs(img[np.newaxis, np.newaxis, ...], reverse=not self.rgb)
            save_h5(ep["folder"] / f"{k:03d}.h5", {
                "info": {"n_cams": 1, "timestamp": 1, "n_particles": self.n_cubes,
                         "original_frame_idx": kf["frame_idx"]},
                "action": action, "positions": positions[np.newaxis, ...], "eef_states": eef_states,
                "observations": {"color": color, "depth": depth},
            })
        imgs_array = np.stack(imgs_list, axis=0)[:, 0]
        color, _ = process_imgs(imgs_array[:, np.newaxis, ...], reverse=not self.rgb)
        torch.save(torch.from_numpy(color["cam_0"].astype(np.float32)), ep["folder"] / "obses.pth")
        params = {"n_cubes": self.n_cubes, "keyframe_indices": ep["keyframe_indices"], "keyframe_stats": ep["stats"]}
        with open(ep["folder"] / "property_params.pkl", "wb") as f:
            pickle.dump(params, f)
        self.current_episode = None


def write_keyframe(out: Path, lengths: list[int], seed: int = 0, **variant) -> Path:
    """A keyframe-logger dataset at `out`: episodes of `lengths` physics steps (fewer keyframes are written)."""
    logger = KeyframeDataLogger(out, **variant)
    for i, n in enumerate(lengths):
        logger.start_episode(i)
        frames: list[SimFrame] = simulate(seed * 1000 + i, n)
        for frame in frames:
            logger.log_step(rgb_image=frame.rgb, depth_image=frame.depth, ee_pos=frame.ee_pos, ee_quat=frame.ee_quat,
                            cube_positions=frame.cubes, phase=frame.phase)
        logger.end_episode()
    return out
