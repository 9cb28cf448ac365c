"""`WindowDataset`: DINO-WM training windows read straight from an fcs store.

A window of `F = num_hist + num_pred` frames at stride `fs = frameskip` starting at step `s` of an
episode yields (CONTEXT.md semantics, as the reference `TrajSlicerDataset`):

    visual  (F, 3, H, W) uint8     frames s, s + fs, ..., s + (F - 1) * fs
    state   (F, S) float32         the state at those frames (raw)
    proprio (F, P) float32         the layout's proprio slice of `state`, z-normalised
    action  (F, fs * A) float32    actions s .. s + F * fs - 1, z-normalised, fs per row
    episode, start                 store episode index and `s`

Nothing is preloaded and nothing calls `torch.load`: an item is a few `pread`s of the store, so
any number of DataLoader workers read in parallel with flat memory. Items stay uint8 so the
conversion to float and the resize happen on the training device. The dataset pickles to a path
and a few small arrays; each process opens its own file handles on first use.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import zarr

from fcs_data.errors import StoreError
from fcs_data.schemas.store import ArrayStats
from fcs_data.stats import array_stats, normalize, unnormalize
from fcs_data.store import Store
from fcs_data.window_index import WindowIndex, frames_needed

log = logging.getLogger("fcs_data")

Split = Literal["train", "val", "all"]
CACHE_GROUP = "cache"


def split_episodes(episodes: Sequence[int], split: Split, split_ratio: float, seed: int) -> np.ndarray:
    """Episode-level split: a seeded permutation, the first `round(ratio * N)` for train.

    Depends only on the episode ids, `split_ratio` and `seed`, so train and val are disjoint and
    stable across runs and machines. With two or more episodes and `split_ratio < 1`, both sides
    get at least one episode.
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    if not 0 < split_ratio <= 1:
        raise ValueError(f"split_ratio must be in (0, 1], got {split_ratio}")
    ids = np.asarray(sorted(set(int(e) for e in episodes)), np.int64)
    if split == "all":
        return ids
    perm = ids[np.random.default_rng(seed).permutation(len(ids))]
    n_train = round(split_ratio * len(ids))
    if len(ids) >= 2 and split_ratio < 1:
        n_train = min(max(n_train, 1), len(ids) - 1)
    return np.sort(perm[:n_train] if split == "train" else perm[n_train:])


def _cache_key(store: Store, episodes: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(store.metadata.provenance.created.encode())
    h.update(str(store.num_frames).encode())
    h.update(np.asarray(episodes, np.int64).tobytes())
    return h.hexdigest()


def norm_stats(store: Store, episodes: np.ndarray) -> dict[str, ArrayStats]:
    """Action and proprio statistics over the valid steps of `episodes`, cached in the store.

    The cache lives in the attributes of the store's `cache` group, keyed by the episode set, so
    the first run pays one pass over the low-dimensional rows and later runs none. A read-only
    store just gets no cache.
    """
    key = _cache_key(store, episodes)
    path = store.path / CACHE_GROUP
    try:
        cached = zarr.open_group(str(path), mode="r").attrs.asdict().get("norm_stats", {}).get(key)
    except (FileNotFoundError, KeyError, ValueError, OSError):
        cached = None
    if cached is not None:
        return {k: _strip(v) for k, v in cached.items()}
    starts, ends = store.episode_starts[episodes], store.episode_ends[episodes]
    state = np.concatenate([store.read_rows("state", int(a), int(b)) for a, b in zip(starts, ends, strict=True)])
    action = np.concatenate([store.read_rows("action", int(a), int(b)) for a, b in zip(starts, ends, strict=True)])
    stats = {"action": array_stats(action), "proprio": array_stats(state[:, store.layout.proprio_slice])}
    try:
        group = zarr.open_group(str(path), mode="a")
        table = dict(group.attrs.asdict().get("norm_stats", {}))
        table[key] = {k: v.model_dump() | {"episodes": len(episodes)} for k, v in stats.items()}
        group.attrs.update({"norm_stats": table})
    except (OSError, PermissionError) as e:
        log.debug("normalisation statistics not cached in %s: %s", store.path, e)
    return stats


def _strip(stats: dict) -> ArrayStats:
    return ArrayStats.model_validate({k: v for k, v in stats.items() if k != "episodes"})


class WindowDataset(torch.utils.data.Dataset):
    """DINO-WM windows of an fcs store (see the module docstring for the item layout).

    Args:
        store: path of an fcs store (or an open `Store`).
        num_hist, num_pred, frameskip: window shape; `F = num_hist + num_pred` frames `frameskip` apart.
        split: "train", "val" or "all" episodes (`split_episodes`); normalisation statistics always
            come from the train episodes of the same `split_ratio` and `seed`.
        episodes: restrict to these store episodes before splitting.
        normalize: z-normalise `action` and `proprio` (mean/std over valid train steps, std + 1e-6).
        cache: keep this split's frames in shared memory (`H * W * 3` bytes per frame, shared by all
            DataLoader workers under fork, forkserver and spawn) instead of reading the store.
    """

    def __init__(
        self,
        store: str | Path | Store,
        num_hist: int,
        num_pred: int = 1,
        frameskip: int = 1,
        split: Split = "train",
        split_ratio: float = 0.9,
        seed: int = 42,
        normalize: bool = True,
        episodes: Sequence[int] | None = None,
        cache: bool = False,
    ):
        if num_hist < 1 or num_pred < 1 or frameskip < 1:
            raise ValueError(f"num_hist, num_pred and frameskip must be >= 1 (got {num_hist}, {num_pred}, {frameskip})")
        opened = store if isinstance(store, Store) else Store(store)
        self.store_path = str(opened.path)
        self._store: Store | None = opened
        self._pid = os.getpid()
        self.num_hist, self.num_pred, self.frameskip = num_hist, num_pred, frameskip
        self.num_frames = num_hist + num_pred
        self.split, self.split_ratio, self.seed, self.normalize = split, split_ratio, seed, normalize
        layout = opened.layout
        self.proprio_slice = (layout.proprio_slice.start, layout.proprio_slice.stop)
        self.action_dim = layout.action_dim
        self.frame_shape = tuple(opened.metadata.frame_shape)

        pool = np.arange(opened.num_episodes) if episodes is None else np.asarray(list(episodes), np.int64)
        if len(pool) and (pool.min() < 0 or pool.max() >= opened.num_episodes):
            raise IndexError(f"episodes must be in 0..{opened.num_episodes - 1}")
        chosen = split_episodes(pool, split, split_ratio, seed)
        lengths = opened.episode_lengths[chosen]
        need = frames_needed(self.num_frames, frameskip)
        short = lengths < need
        self.excluded_episodes = {int(e): int(n) for e, n in zip(chosen[short], lengths[short], strict=True)}
        if self.excluded_episodes:
            ids = sorted(self.excluded_episodes)
            log.warning(
                "%s split: %d of %d episodes are shorter than (num_hist + num_pred) * frameskip = %d frames and "
                "serve no window: %s%s", split, len(ids), len(chosen), need, ids[:20], " ..." if len(ids) > 20 else "",
            )
        self.episodes = chosen[~short]
        self.index = WindowIndex(self.episodes, opened.episode_starts[self.episodes], lengths[~short],
                                 self.num_frames, frameskip)

        train = chosen if split == "train" else split_episodes(pool, "train", split_ratio, seed)
        if split == "all":
            train = chosen
        self.stats = norm_stats(opened, train) if len(train) else None
        self._action_mean, self._action_std = self._moments("action")
        self._proprio_mean, self._proprio_std = self._moments("proprio")

        self._frames: torch.Tensor | None = None
        self._frame_pos: np.ndarray | None = None
        if cache:
            self._build_cache(opened)

    # -- normalisation ---------------------------------------------------------------------------
    def _moments(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if self.stats is None:
            raise StoreError(f"{self.store_path}: no training episodes to take normalisation statistics from")
        s = self.stats[name]
        return np.asarray(s.mean, np.float32), (np.asarray(s.std, np.float64) + 1e-6).astype(np.float32)

    def unnormalize_action(self, action: np.ndarray | torch.Tensor) -> np.ndarray:
        """`(..., fs * A)` normalised actions -> raw units, `(..., fs * A)`."""
        a = np.asarray(action, np.float32)
        assert self.stats is not None
        raw = unnormalize(a.reshape(*a.shape[:-1], -1, self.action_dim), self.stats["action"])
        return raw.reshape(a.shape)

    def unnormalize_proprio(self, proprio: np.ndarray | torch.Tensor) -> np.ndarray:
        assert self.stats is not None
        return unnormalize(np.asarray(proprio, np.float32), self.stats["proprio"])

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        assert self.stats is not None
        a = np.asarray(action, np.float32)
        return normalize(a.reshape(*a.shape[:-1], -1, self.action_dim), self.stats["action"]).reshape(a.shape)

    # -- per-process store ------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store = Store(self.store_path)
            self._pid = os.getpid()
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None  # reopened lazily in the receiving process
        return state

    # -- in-memory cache ---------------------------------------------------------------------------
    def _build_cache(self, store: Store) -> None:
        starts, ends = store.episode_starts[self.episodes], store.episode_ends[self.episodes]
        total = int((ends - starts).sum())
        frames = torch.empty((total, *self.frame_shape), dtype=torch.uint8)
        pos = np.zeros(store.num_frames, np.int64)
        at = 0
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            store.read_frames(np.arange(a, b), out=frames[at : at + b - a].numpy())
            pos[a:b] = np.arange(at, at + b - a)
            at += b - a
        self._frames = frames.share_memory_()
        self._frame_pos = pos
        log.info("cached %d frames (%.0f MB) of the %s split in shared memory", total, frames.nbytes / 1e6, self.split)

    @property
    def cache_bytes(self) -> int:
        return 0 if self._frames is None else self._frames.nbytes

    # -- items ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        episode, start, g = self.index.locate(int(i))
        return self._read(episode, start, g, self.num_frames)

    def window(self, episode: int, start: int, num_frames: int) -> dict[str, Any]:
        """Any window of this dataset's episodes, e.g. a long one for an open-loop rollout.

        Same item layout as `dataset[i]`, with `num_frames` frames `frameskip` apart from step
        `start`; the episode must hold `start + num_frames * frameskip` steps.
        """
        store = self.store
        length = int(store.episode_lengths[episode])
        if start < 0 or start + num_frames * self.frameskip > length:
            raise IndexError(f"episode {episode} ({length} steps) has no window of {num_frames} frames at "
                             f"frameskip {self.frameskip} from step {start}")
        return self._read(episode, start, int(store.episode_starts[episode]) + start, num_frames)

    def _read(self, episode: int, start: int, g: int, n: int) -> dict[str, Any]:
        fs = self.frameskip
        ids = g + np.arange(n, dtype=np.int64) * fs
        if self._frames is not None:
            visual = self._frames[torch.from_numpy(self._frame_pos[ids])]
        else:
            visual = torch.from_numpy(self.store.read_frames(ids))
        store = self.store
        state = store.read_rows("state", g, g + n * fs)[::fs]
        proprio = state[:, self.proprio_slice[0] : self.proprio_slice[1]]
        action = store.read_rows("action", g, g + n * fs)
        if self.normalize:
            proprio = (proprio - self._proprio_mean) / self._proprio_std
            action = (action - self._action_mean) / self._action_std
        return {
            "visual": visual.permute(0, 3, 1, 2),
            "proprio": torch.from_numpy(np.ascontiguousarray(proprio, np.float32)),
            "action": torch.from_numpy(np.ascontiguousarray(action, np.float32).reshape(n, fs * self.action_dim)),
            "state": torch.from_numpy(np.ascontiguousarray(state)),
            "episode": episode,
            "start": start,
        }

    def describe(self) -> str:
        return (
            f"WindowDataset({self.store_path}, split={self.split}: {len(self.episodes)} episodes, {len(self):,} windows "
            f"of {self.num_frames} frames at frameskip {self.frameskip}; "
            f"{len(self.excluded_episodes)} episodes too short)"
        )

    def __repr__(self) -> str:
        return self.describe()


class ReferenceAdapter(torch.utils.data.Dataset):
    """The reference DINO-WM item `(obs, act, state)` with `obs = {"visual", "proprio"}`.

    `visual` stays uint8 unless a `transform` (applied to the `(F, 3, H, W)` tensor) says otherwise.
    """

    def __init__(self, dataset: WindowDataset, transform=None):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        item = self.dataset[i]
        visual = item["visual"] if self.transform is None else self.transform(item["visual"])
        return {"visual": visual, "proprio": item["proprio"]}, item["action"], item["state"]
