"""The train/validation split of a store's episodes: by episode, seeded, stable.

Defined once here because the converter stores the default split's statistics and the window
sampler (and `fcs train`) must draw exactly the same split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Split = Literal["train", "val", "all"]
DEFAULT_SPLIT_RATIO = 0.9
DEFAULT_SPLIT_SEED = 42


def split_episodes(episodes: Sequence[int] | np.ndarray, split: Split, split_ratio: float, seed: int) -> np.ndarray:
    """Episode-level split: a seeded permutation, the first `round(ratio * N)` for train.

    Depends only on the episode ids, `split_ratio` and `seed`, so train and val are disjoint and
    stable across runs and machines. With two or more episodes and `split_ratio < 1`, both sides
    get at least one episode. Returns sorted int64 episode ids.
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    if not 0 < split_ratio <= 1:
        raise ValueError(f"split_ratio must be in (0, 1], got {split_ratio}")
    ids = np.asarray(sorted({int(e) for e in episodes}), np.int64)
    if split == "all":
        return ids
    perm = ids[np.random.default_rng(seed).permutation(len(ids))]
    n_train = round(split_ratio * len(ids))
    if len(ids) >= 2 and split_ratio < 1:
        n_train = min(max(n_train, 1), len(ids) - 1)
    return np.sort(perm[:n_train] if split == "train" else perm[n_train:])


class EpisodeSplit(BaseModel):
    """The split a run used (`split_episodes` with these settings); the defaults are the store's default split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ratio: float = Field(default=DEFAULT_SPLIT_RATIO, gt=0, le=1)
    seed: int = DEFAULT_SPLIT_SEED

    def episodes(self, num_episodes: int, split: Split) -> np.ndarray:
        """The sorted episode ids of `split` among a store's `num_episodes` episodes."""
        return split_episodes(range(num_episodes), split, self.ratio, self.seed)
