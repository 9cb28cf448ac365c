"""`WindowDataset`: DINO-WM training windows read straight from an fcs store.

A window of `F = num_hist + num_pred` frames at stride `fs = frameskip` starting at step `s` of an
episode yields (CONTEXT.md semantics, as the reference `TrajSlicerDataset`):

    visual  (F, 3, H, W) uint8     frames s, s + fs, ..., s + (F - 1) * fs of the first camera
            (F, C, 3, H, W)        with `cameras=[...]`: those cameras stacked
            (F, 3, H, C * W)       with `fuse="side_by_side"`; (F, 3, H, W) `[R0, G0, gray1]` with
                                   `fuse="channel_stack"` (two cameras), as the users' logger fused them
    state   (F, S) float32         the state at those frames (raw)
    proprio (F, P) float32         the layout's proprio slice of `state`, z-normalised
    action  (F, fs * A) float32    actions s .. s + F * fs - 1, z-normalised, fs per row
    frame_index (F,) int64         the frames' original frame numbers (keyframe stores only)
    episode, start                 store episode index and `s`

Nothing is preloaded and nothing calls `torch.load`: an item is a few `pread`s of the store, so
any number of DataLoader workers read in parallel with flat memory. Items stay uint8 so the
conversion to float and the resize happen on the training device. The dataset pickles to a path
and a few small arrays; each process opens its own file handles on first use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fcs_data import _cache
from fcs_data.errors import NonFiniteDataError, StoreError
from fcs_data.schemas.store import ArrayStats
from fcs_data.splits import DEFAULT_SPLIT_RATIO, DEFAULT_SPLIT_SEED, Split, split_episodes
from fcs_data.stats import Normalizer, training_stats
from fcs_data.store import Store
from fcs_data.window_index import ListedWindowIndex, WindowIndex
from fcs_data.window_spec import WindowSpec

log = logging.getLogger("fcs_data")


def training_normalizer(store: Store, train_episodes: np.ndarray) -> Normalizer:
    """The `Normalizer` of action and proprio statistics over the valid, finite steps of `train_episodes`.

    The default split's statistics were computed by the converter and live in the store's metadata;
    any other split is computed here (one pass over its low-dimensional rows) and remembered in the
    user cache (`fcs_data._cache`), keyed by what they depend on, `Store.content_key` of those episodes
    (the layout and their content hashes). Nothing is written into the store.
    """
    episodes = np.asarray(train_episodes, np.int64)
    stored = store.metadata.norm_stats
    if stored is not None and stored.train_episodes == episodes.tolist():
        return Normalizer(action=stored.action, proprio=stored.proprio)
    key = store.content_key(episodes)
    cached = _cache.load("norm_stats", key)
    if cached is not None:
        try:
            return Normalizer.model_validate(cached)
        except ValueError:
            pass  # an old or damaged entry: recompute
    starts, ends = store.episode_starts[episodes], store.episode_ends[episodes]
    rows = list(zip(starts.tolist(), ends.tolist(), strict=True))
    state = np.concatenate([store.read_rows("state", a, b) for a, b in rows])
    action = np.concatenate([store.read_rows("action", a, b) for a, b in rows])
    normalizer = Normalizer(**training_stats(state, action, store.layout.proprio_slice))
    _cache.save("norm_stats", key, normalizer.model_dump())
    return normalizer


class WindowDataset(torch.utils.data.Dataset):
    """DINO-WM windows of an fcs store (see the module docstring for the item layout).

    Args:
        store: path of an fcs store (or an open `Store`).
        num_hist, num_pred, frameskip: window shape; `F = num_hist + num_pred` frames `frameskip` apart.
        split: "train", "val" or "all" episodes (`split_episodes`); normalisation statistics always
            come from the train episodes of the same `split_ratio` and `seed`.
        episodes: restrict to these store episodes before splitting.
        normalize: z-normalise `action` and `proprio` (mean/std over valid train steps, std + 1e-6).
        cache: keep this split's frames in shared memory (`H * W * 3` bytes per frame and camera,
            shared by all DataLoader workers under fork, forkserver and spawn) instead of reading the store.
        cameras: the store's cameras to return (`Store.cameras`); None: the first camera only.
        fuse: combine `cameras` into one image: "side_by_side" or "channel_stack" (two cameras).
        max_frame_gap: keyframe stores: only windows whose consecutive frames are at most this many
            original frames apart (real time between the frames a window uses).
    """

    def __init__(
        self,
        store: str | Path | Store,
        num_hist: int,
        num_pred: int = 1,
        frameskip: int = 1,
        split: Split = "train",
        split_ratio: float = DEFAULT_SPLIT_RATIO,
        seed: int = DEFAULT_SPLIT_SEED,
        normalize: bool = True,
        episodes: Sequence[int] | None = None,
        cache: bool = False,
        cameras: Sequence[str] | None = None,
        fuse: Literal["side_by_side", "channel_stack"] | None = None,
        max_frame_gap: int | None = None,
    ):
        if num_hist < 1 or num_pred < 1 or frameskip < 1:
            raise ValueError(f"num_hist, num_pred and frameskip must be >= 1 (got {num_hist}, {num_pred}, {frameskip})")
        opened = store if isinstance(store, Store) else Store(store)
        self.store_path = str(opened.path)
        self._verify = opened.verify
        self._store: Store | None = opened
        self._pid = os.getpid()
        self.spec = WindowSpec(num_hist=num_hist, num_pred=num_pred, frameskip=frameskip,
                               action_dim=opened.layout.action_dim)
        self.num_hist, self.num_pred, self.frameskip = num_hist, num_pred, frameskip
        self.num_frames = self.spec.num_frames
        self.split, self.split_ratio, self.seed, self.normalize = split, split_ratio, seed, normalize
        layout = opened.layout
        self.proprio_slice = (layout.proprio_slice.start, layout.proprio_slice.stop)
        self.action_dim = layout.action_dim
        self.cameras, self.fuse = self._check_cameras(opened, cameras, fuse)
        self.frame_shape = tuple(opened.row_shape(opened.frames_name(self.cameras[0])))
        self.has_frame_index = "frame_index" in opened.layout.step_fields
        if max_frame_gap is not None and not self.has_frame_index:
            raise ValueError(f"max_frame_gap needs a keyframe store with frame indices; {opened.path} has none")
        self.max_frame_gap = max_frame_gap

        pool = np.arange(opened.num_episodes) if episodes is None else np.asarray(list(episodes), np.int64)
        if len(pool) and (pool.min() < 0 or pool.max() >= opened.num_episodes):
            raise IndexError(f"episodes must be in 0..{opened.num_episodes - 1}")
        chosen = split_episodes(pool, split, split_ratio, seed)
        lengths = opened.episode_lengths[chosen]
        need = self.spec.raw_steps
        short = lengths < need
        self.excluded_episodes = {int(e): int(n) for e, n in zip(chosen[short], lengths[short], strict=True)}
        if self.excluded_episodes:
            ids = sorted(self.excluded_episodes)
            log.warning(
                "%s split: %d of %d episodes are shorter than (num_hist + num_pred) * frameskip = %d frames and "
                "serve no window: %s%s", split, len(ids), len(chosen), need, ids[:20], " ..." if len(ids) > 20 else "",
            )
        self.episodes = chosen[~short]
        self.index: WindowIndex = WindowIndex(
            self.episodes, opened.episode_starts[self.episodes], lengths[~short], self.num_frames, frameskip)
        if max_frame_gap is not None:
            self.index = self._gap_filtered(opened, max_frame_gap)

        train = chosen if split in ("train", "all") else split_episodes(pool, "train", split_ratio, seed)
        if not len(train):
            raise StoreError(f"{self.store_path}: no training episodes to take normalisation statistics from")
        self.normalizer = training_normalizer(opened, train)

        self._frames: dict[str, torch.Tensor] = {}
        self._frame_pos: np.ndarray | None = None
        if cache:
            self._build_cache(opened)

    @staticmethod
    def _check_cameras(store: Store, cameras: Sequence[str] | None, fuse: str | None) -> tuple[list[str], str | None]:
        if cameras is None:
            if fuse is not None:
                raise ValueError("fuse needs cameras=[...] to fuse")
            return [store.cameras[0]], None
        cameras = list(cameras)
        unknown = [c for c in cameras if c not in store.cameras]
        if unknown or not cameras:
            raise ValueError(f"{store.path} has cameras {store.cameras}, not {unknown or cameras}")
        shapes = {store.row_shape(store.frames_name(c)) for c in cameras}
        if len(shapes) > 1:
            raise ValueError(f"cameras {cameras} have different frame shapes {sorted(shapes)}: they cannot be stacked")
        if fuse not in (None, "side_by_side", "channel_stack"):
            raise ValueError(f"fuse must be side_by_side or channel_stack, not {fuse!r}")
        if fuse == "channel_stack" and len(cameras) != 2:
            raise ValueError("channel_stack fuses exactly two cameras: [R0, G0, gray1]")
        return cameras, fuse

    def _gap_filtered(self, store: Store, gap: int) -> ListedWindowIndex:
        """The windows whose consecutive frames are at most `gap` original frames apart."""
        fs, f = self.frameskip, self.num_frames
        starts = []
        for e in self.index.episodes.tolist():
            a, b = int(store.episode_starts[e]), int(store.episode_ends[e])
            index = store.read_rows("frame_index", a, b)
            n = b - a - f * fs + 1
            ok = np.ones(max(n, 0), bool)
            for k in range(f - 1):
                ok &= (index[(k + 1) * fs : (k + 1) * fs + n] - index[k * fs : k * fs + n]) <= gap
            starts.append(np.flatnonzero(ok))
        return ListedWindowIndex(self.index.episodes, store.episode_starts[self.index.episodes], starts)

    # -- normalisation ---------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, ArrayStats]:
        """The training split's `{"action", "proprio"}` statistics (`normalizer`'s)."""
        return {"action": self.normalizer.action, "proprio": self.normalizer.proprio}

    def _packed(self, fn, action: np.ndarray | torch.Tensor) -> np.ndarray:
        """`fn` applied per raw action of packed actions `(..., fs * A)`."""
        a = np.atleast_2d(np.asarray(action, np.float32))
        return self.spec.pack(fn("action", self.spec.unpack(a))).reshape(np.shape(action))

    def unnormalize_action(self, action: np.ndarray | torch.Tensor) -> np.ndarray:
        """`(..., fs * A)` normalised actions -> raw units, `(..., fs * A)`."""
        return self._packed(self.normalizer.unnormalize, action)

    def unnormalize_proprio(self, proprio: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.normalizer.unnormalize("proprio", np.asarray(proprio, np.float32))

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        """`(..., fs * A)` raw actions -> normalised, `(..., fs * A)`."""
        return self._packed(self.normalizer.normalize, action)

    # -- per-process store ------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store = Store(self.store_path, verify=self._verify)
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
        pos = np.zeros(store.num_frames, np.int64)
        for camera in self.cameras:
            frames = torch.empty((total, *self.frame_shape), dtype=torch.uint8)
            at = 0
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                store.read_frames(np.arange(a, b), out=frames[at : at + b - a].numpy(), camera=camera)
                pos[a:b] = np.arange(at, at + b - a)
                at += b - a
            self._frames[camera] = frames.share_memory_()
        self._frame_pos = pos
        log.info("cached %d frames (%.0f MB) of the %s split in shared memory", total, self.cache_bytes / 1e6,
                 self.split)

    @property
    def cache_bytes(self) -> int:
        return sum(f.nbytes for f in self._frames.values())

    def _frames_of(self, camera: str, ids: np.ndarray) -> torch.Tensor:
        """`(n, H, W, 3)` uint8 frames of one camera."""
        if camera in self._frames:
            return self._frames[camera][torch.from_numpy(self._frame_pos[ids])]
        return torch.from_numpy(self.store.read_frames(ids, camera=camera))

    def _visual(self, ids: np.ndarray) -> torch.Tensor:
        """The item's `visual` (see the module docstring), a view of HWC frames."""
        frames = [self._frames_of(c, ids) for c in self.cameras]
        if self.fuse == "side_by_side":
            return torch.cat(frames, dim=2).permute(0, 3, 1, 2)
        if self.fuse == "channel_stack":
            gray = (frames[1].double() @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)).round().to(torch.uint8)
            return torch.stack([frames[0][..., 0], frames[0][..., 1], gray], dim=-1).permute(0, 3, 1, 2)
        if len(frames) == 1:
            return frames[0].permute(0, 3, 1, 2)
        return torch.stack(frames, dim=1).permute(0, 1, 4, 2, 3)

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
        visual = self._visual(ids)
        store = self.store
        state = store.read_rows("state", g, g + n * fs)[::fs]
        proprio = state[:, self.proprio_slice[0] : self.proprio_slice[1]]
        action = store.read_rows("action", g, g + n * fs)
        if not (np.isfinite(action).all() and np.isfinite(proprio).all()):
            raise self._nonfinite(episode, start, action, proprio)
        if self.normalize:
            proprio = self.normalizer.normalize("proprio", proprio)
            action = self.normalizer.normalize("action", action)
        item = {
            "visual": visual,
            "proprio": torch.from_numpy(np.ascontiguousarray(proprio, np.float32)),
            "action": torch.from_numpy(self.spec.pack(np.ascontiguousarray(action, np.float32))),
            "state": torch.from_numpy(np.ascontiguousarray(state)),
            "episode": episode,
            "start": start,
        }
        if self.has_frame_index:
            item["frame_index"] = torch.from_numpy(store.read_rows("frame_index", ids))
        return item

    def _nonfinite(self, episode: int, start: int, action: np.ndarray, proprio: np.ndarray) -> NonFiniteDataError:
        """The error for a window whose action or proprio rows hold NaN/Inf, naming episode, step and field."""
        layout = self.store.layout
        bad_a = np.argwhere(~np.isfinite(action))
        if len(bad_a):
            row, col = (int(v) for v in bad_a[0])
            step, group, fields, dim = start + row, "action", layout.action, col
        else:
            row, col = (int(v) for v in np.argwhere(~np.isfinite(proprio))[0])
            step, group, fields, dim = start + self.spec.raw_step(row), "state", layout.state, self.proprio_slice[0] + col
        name = next((f.name for f in fields if f.start <= dim < f.stop), "?")
        value = action[row, col] if group == "action" else proprio[row, col]
        return NonFiniteDataError(
            f"{self.store_path}: episode {episode} step {step}: {value} in {group}.{name} (dim {dim}), read by the "
            f"window starting at step {start}; `fcs validate {self.store_path}` lists every non-finite step"
        )

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
