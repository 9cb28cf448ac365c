"""DINO-WM window arithmetic, in numpy and without one object per window.

A window of `F = num_hist + num_pred` frames at stride `fs = frameskip` starts at `s` and covers
frames `s, s + fs, ..., s + (F - 1) * fs` and actions `s .. s + F * fs - 1`, so the valid starts of
an episode of length `T` are `0 <= s <= T - F * fs`: `T - F * fs + 1` windows, none if negative.
"""

from __future__ import annotations

import numpy as np


def windows_per_episode(lengths: np.ndarray | list[int], num_frames: int, frameskip: int) -> np.ndarray:
    """Number of windows each episode serves, `(N,)` int64."""
    if num_frames < 1 or frameskip < 1:
        raise ValueError(f"num_frames and frameskip must be >= 1 (got {num_frames}, {frameskip})")
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.maximum(lengths - num_frames * frameskip + 1, 0)


def frames_needed(num_frames: int, frameskip: int) -> int:
    """Shortest episode that serves one window."""
    return num_frames * frameskip
