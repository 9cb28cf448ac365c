"""DINO-WM window arithmetic, in numpy and without one object per window.

A window of `F = num_hist + num_pred` frames at stride `fs = frameskip` starts at `s` and covers
frames `s, s + fs, ..., s + (F - 1) * fs` and actions `s .. s + F * fs - 1`, so the valid starts of
an episode of length `T` are `0 <= s <= T - F * fs`: `T - F * fs + 1` windows, none if negative.
"""

from __future__ import annotations

import numpy as np


def episode_starts(episode_ends: np.ndarray) -> np.ndarray:
    """First row of each episode of a flat store, from the exclusive `episode_ends (N,)`."""
    ends = np.asarray(episode_ends, np.int64)
    return np.concatenate([[0], ends[:-1]]).astype(np.int64)


def total_frames(episode_ends: np.ndarray) -> int:
    return int(episode_ends[-1]) if len(episode_ends) else 0


def windows_per_episode(lengths: np.ndarray | list[int], num_frames: int, frameskip: int) -> np.ndarray:
    """Number of windows each episode serves, `(N,)` int64."""
    if num_frames < 1 or frameskip < 1:
        raise ValueError(f"num_frames and frameskip must be >= 1 (got {num_frames}, {frameskip})")
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.maximum(lengths - num_frames * frameskip + 1, 0)


class WindowIndex:
    """All windows of a set of episodes, as arithmetic on per-episode arrays.

    Window `i` lives in the episode `k` with `cum[k] <= i < cum[k + 1]` and starts `i - cum[k]`
    frames into it. Memory is `O(episodes)`: ten million windows cost a few kilobytes.
    """

    def __init__(self, episodes: np.ndarray, starts: np.ndarray, lengths: np.ndarray, num_frames: int,
                 frameskip: int):
        self.num_frames = num_frames
        self.frameskip = frameskip
        self._count(episodes, starts, windows_per_episode(lengths, num_frames, frameskip))

    def _count(self, episodes: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> None:
        """Keep the episodes that serve a window: their ids, first rows and cumulative window counts."""
        keep = counts > 0
        self.episodes = np.asarray(episodes, np.int64)[keep]
        self.starts = np.asarray(starts, np.int64)[keep]
        self.cum = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.cum[-1])

    @property
    def nbytes(self) -> int:
        return self.episodes.nbytes + self.starts.nbytes + self.cum.nbytes

    def _start_in_episode(self, idx: np.ndarray | int, k: np.ndarray | int) -> np.ndarray | int:
        """Start within its episode `k` of window `idx`."""
        return idx - self.cum[k]

    def locate(self, i: int) -> tuple[int, int, int]:
        """`(episode, start within the episode, global frame index of the start)` of window `i`."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows")
        i %= n
        k = int(np.searchsorted(self.cum, i, side="right")) - 1
        s = int(self._start_in_episode(i, k))
        return int(self.episodes[k]), s, int(self.starts[k]) + s

    def locate_many(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised `locate` for window indices `idx (n,)`."""
        idx = np.asarray(idx, np.int64)
        k = np.searchsorted(self.cum, idx, side="right") - 1
        s = self._start_in_episode(idx, k)
        return self.episodes[k], s, self.starts[k] + s


class ListedWindowIndex(WindowIndex):
    """Windows at explicit starts (e.g. those within a frame gap), with `WindowIndex`'s interface.

    `starts[k]` lists the valid starts of episode `k`; memory is 8 bytes per window.
    """

    def __init__(self, episodes: np.ndarray, episode_starts: np.ndarray, starts: list[np.ndarray]):
        self._count(episodes, episode_starts, np.array([len(s) for s in starts], np.int64))
        self.local = np.concatenate([s for s in starts if len(s)] or [np.empty(0, np.int64)]).astype(np.int64)

    @property
    def nbytes(self) -> int:
        return super().nbytes + self.local.nbytes

    def _start_in_episode(self, idx: np.ndarray | int, k: np.ndarray | int) -> np.ndarray | int:
        return self.local[idx]
