"""The primitive logger (primitive_data_logger.py), as its authors document it.

Its source is not in the public history of Jacob1we/Franka_Cube_Stacking (the snapshot ends at b182597,
2026-01-30; the logger came later). What it writes is documented in Jacob1we/dino_wm:
00_VIsualisierungen/DINO_WM_TRAINING_DOCUMENTATION.md (sections 2.1-2.4, "Datenfluss im
primitive_data_logger.py", "Implementierter Fix: START-Bild statt END-Bild", 12 "Kamera-Fusion") and the
message of commit cf82300 ("process_imgs(): Identische BGR->RGB Entfernung", "_save_primitive_h5():
Primitiv-Info mit gripper_start/gripper_end", 8-D actions). From those:

- the physics steps of an episode are cut into P primitives ("fixed" segmentation: equal step counts);
  per primitive one `NNNNNN/{t:02d}.h5`, written with the min logger's `save_h5`: `action` (8,) float64
  [x_s, y_s, z_s, g_s, x_e, y_e, z_e, g_e] (g 1 closed, 0 open; (6,) without track_gripper_state),
  `eef_states` (1, 1, 14) float64 [pos_obs, pos_other, quat_obs, quat_other], `positions` (1, n_cubes, 4)
  float32 [x, y, z, yaw], `info/{phase, primitive_name, primitive_type, n_steps, movement_distance,
  gripper_start, gripper_end}`, `observations/color/cam_i` (1, H, W, 3) float32 and
  `observations/depth/cam_i` (1, H, W) uint16 for every camera, through process_imgs;
- `NNNNNN/obses.pth` = `torch.stack(imgs_list).squeeze(1)`, (P, 224, 224, 3) float32: one image per
  primitive, the fused image when two cameras are fused (section 12: side by side of two half-width
  resizes, channels [R0, G0, gray(cam1)], or a 0.5/0.5 blend truncated to uint8);
- `property_params.pkl`; no metadata.pkl, no seq_lengths.pkl (issue 17).

Conventions with dates: `rgb=False` before cf82300 (2026-02-17, process_imgs reversed channels: BGR);
`forward=False` before 2026-02-21 (the image and EEF of the primitive's END were stored, so action[t]
produced obs[t]); `quaternion="xyzw"` as the users' notes describe them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from loggers.min_logger import combined, process_imgs, quat_stored, save_h5
from loggers.sim import SimFrame, simulate

NAMES = {0: "move_above", 1: "descend", 2: "wait", 3: "grasp", 4: "lift", 5: "transport", 6: "descend_place",
         7: "release", 8: "lift_up", 9: "return"}


def _area_half(img: np.ndarray) -> np.ndarray:
    """cv2.resize(img, (W // 2, H), interpolation=cv2.INTER_AREA) for an even width: column pairs averaged."""
    x = img.astype(np.float32)
    return np.rint((x[:, 0::2] + x[:, 1::2]) / 2).astype(np.uint8)


def fuse(cam0: np.ndarray, cam1: np.ndarray, mode: str) -> np.ndarray:
    """The documented fuse_cameras of two (H, W, 3) uint8 RGB images."""
    if mode == "side_by_side":
        return np.concatenate([_area_half(cam0), _area_half(cam1)], axis=1)
    if mode == "channel_stack":  # cv2.cvtColor(cam1, cv2.COLOR_RGB2GRAY): fixed-point ITU-R 601
        c = cam1.astype(np.int64)
        gray = ((c[..., 0] * 4899 + c[..., 1] * 9617 + c[..., 2] * 1868 + 8192) >> 14).astype(np.uint8)
        return np.stack([cam0[:, :, 0], cam0[:, :, 1], gray], axis=2)
    if mode == "alpha":
        blended = 0.5 * cam0.astype(np.float32) + 0.5 * cam1.astype(np.float32)
        return np.clip(blended, 0, 255).astype(np.uint8)
    raise ValueError(mode)


class PrimitiveDataLogger:
    def __init__(self, dataset_path: Path, n_cubes: int = 1, *, gripper: bool = True, cameras: int = 1,
                 fusion: str | None = None, rgb: bool = True, forward: bool = True, quaternion: str = "wxyz"):
        self.dataset_path = Path(dataset_path)
        self.n_cubes, self.gripper, self.cameras, self.fusion = n_cubes, gripper, cameras, fusion
        self.rgb, self.forward, self.quaternion = rgb, forward, quaternion
        self.dataset_path.mkdir(parents=True, exist_ok=True)
        (self.dataset_path / "cameras").mkdir(exist_ok=True)

    def _images(self, frame: SimFrame) -> list[np.ndarray]:
        return [frame.rgb, frame.rgb_cam1][: self.cameras]

    def _save_primitive_h5(self, folder: Path, t: int, obs: SimFrame, start: SimFrame, end: SimFrame,
                           n_steps: int) -> np.ndarray:
        """Write primitive t's file; return its observation image (1, H, W, 3) float32 for obses.pth."""
        other = end if obs is start else start
        g_s, g_e = float(start.closed), float(end.closed)
        parts = [start.ee_pos.astype(np.float64), [g_s], end.ee_pos.astype(np.float64), [g_e]]
        action = np.concatenate(parts if self.gripper else [parts[0], parts[2]]).astype(np.float64)
        q_obs, q_other = quat_stored(obs.ee_quat, self.quaternion), quat_stored(other.ee_quat, self.quaternion)
        eef_states = np.concatenate([obs.ee_pos, other.ee_pos, q_obs, q_other]).astype(np.float64)[None, None]
        positions = np.array([list(c) for c in obs.cubes], dtype=np.float32)[None]
        stack = np.stack([combined(img, obs.depth) for img in self._images(obs)])[None]  # (1, n_cam, H, W, 5)
        color, depth = process_imgs(stack, reverse=not self.rgb)
        save_h5(folder / f"{t:02d}.h5", {
            "info": {"phase": np.int64(start.phase), "primitive_name": NAMES[start.phase], "primitive_type": "fixed",
                     "n_steps": np.int64(n_steps),
                     "movement_distance": float(np.linalg.norm(end.ee_pos - start.ee_pos)),
                     "gripper_start": g_s, "gripper_end": g_e},
            "action": action, "positions": positions, "eef_states": eef_states,
            "observations": {"color": color, "depth": depth},
        })
        image = fuse(obs.rgb, obs.rgb_cam1, self.fusion) if self.fusion else obs.rgb
        obs_color, _ = process_imgs(combined(image, obs.depth)[None, None], reverse=not self.rgb)
        return obs_color["cam_0"].astype(np.float32)

    def write_episode(self, episode_id: int, frames: list[SimFrame], primitives: int) -> None:
        folder = self.dataset_path / f"{episode_id:06d}"
        folder.mkdir(exist_ok=True)
        cuts = np.linspace(0, len(frames) - 1, primitives + 1).round().astype(int)
        imgs_list = []
        for t in range(primitives):
            start, end = frames[cuts[t]], frames[cuts[t + 1]]
            obs = start if self.forward else end
            imgs_list.append(torch.from_numpy(self._save_primitive_h5(folder, t, obs, start, end,
                                                                      int(cuts[t + 1] - cuts[t]))))
        obses = torch.stack(imgs_list).squeeze(1)
        torch.save(obses, folder / "obses.pth")
        with open(folder / "property_params.pkl", "wb") as f:
            pickle.dump({"n_cubes": self.n_cubes, "n_primitives": primitives, "segmentation": "fixed"}, f)


def write_primitive(out: Path, primitives: list[int], seed: int = 0, frames_per_primitive: int = 4,
                    **variant) -> Path:
    """A primitive-logger dataset at `out`: episode i has `primitives[i]` steps; `variant` as the logger."""
    logger = PrimitiveDataLogger(out, **variant)
    for i, p in enumerate(primitives):
        logger.write_episode(i, simulate(seed * 1000 + i, p * frames_per_primitive + 1), p)
    return out
