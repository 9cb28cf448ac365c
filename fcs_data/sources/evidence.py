"""Evidence the data gives about its own conventions, shared by validation and layout detection.

Pure functions of arrays: how much a gripper points down under a quaternion order, whether frames
match an independently written copy as they are or with reversed channels, whether they are
the logger's own copy of themselves.
"""

from __future__ import annotations

import numpy as np

SEGMENT_TOL = 2e-3  # m: a segment's logged start/end against the EE position observed
_CHANNEL_MAD = 8.0  # mean absolute difference (0..255) under which two frames are the same picture


def gripper_down(quat_wxyz: np.ndarray) -> np.ndarray:
    """How much the tool's z axis points down (1: straight down), for `(T, 4)` wxyz quaternions."""
    unit = quat_wxyz / np.maximum(np.linalg.norm(quat_wxyz, axis=1, keepdims=True), 1e-12)
    x, y = unit[:, 1], unit[:, 2]
    return 2 * (x**2 + y**2) - 1  # -(R[2, 2]): R's third column is the tool z axis in the world


def quaternion_evidence(quat: np.ndarray, declared: str) -> tuple[str | None, float, float]:
    """`(verdict, declared_down, opposite_down)` for `(T, 4)` quaternions declared `wxyz` or `xyzw`:
    the median `gripper_down` read in the declared order and in the other one. A stacking gripper
    stays within ~15 degrees of vertical, so verdict `same` (the declared order points it down),
    `swapped` (only the other does) or None (both or neither: the data cannot tell)."""
    q = quat.astype(np.float64)
    as_wxyz, other = (q, q[:, [3, 0, 1, 2]]) if declared == "wxyz" else (q[:, [3, 0, 1, 2]], q)
    d, o = float(np.median(gripper_down(as_wxyz))), float(np.median(gripper_down(other)))
    if d < 0.8 and o > 0.95:
        return "swapped", d, o
    if o < 0.8 and d > 0.95:
        return "same", d, o
    return None, d, o


def channel_evidence(frames_rgb: np.ndarray, colors_rgb: np.ndarray) -> tuple[str | None, float, float]:
    """`(verdict, same, swapped)`: mean absolute differences of frames `(n, H, W, 3)` read as RGB against
    an independently written copy `(n, H, W, 3)` known to be RGB, as they are and with reversed channels;
    verdict `same`, `swapped` or None. Meaningful only when the copy did not pass through the frames' own
    channel conversion (`Observation.color_independent`)."""
    f = frames_rgb.astype(np.float32)
    c = colors_rgb.astype(np.float32)
    same, swapped = float(np.abs(f - c).mean()), float(np.abs(f - c[..., ::-1]).mean())
    if swapped < _CHANNEL_MAD and swapped < 0.5 * same:
        return "swapped", same, swapped
    if same < _CHANNEL_MAD and same < 0.5 * swapped:
        return "same", same, swapped
    return None, same, swapped


def same_picture(frames: np.ndarray, copy: np.ndarray) -> tuple[bool, float]:
    """Whether frames `(n, H, W, 3)` and the logger's copy of them (same shape) hold the same pictures
    (mean absolute difference under 1 on 0..255), and that difference."""
    mad = float(np.abs(frames.astype(np.float32) - copy.astype(np.float32)).mean())
    return mad < 1.0, mad
