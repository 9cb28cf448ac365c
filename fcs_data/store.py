"""`open_store(path)`: a read-only view of an fcs Zarr store.

The store is flat and time-major (`data/rgb`, `data/state`, `data/action`) with an index of
episode ends, so an episode or a window is a range of rows, never a copy. Reads go through the
direct chunk readers of `_chunks` (falling back to zarr-python for arrays written differently).
A `Store` pickles to its path and reopens its files lazily in each process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import zarr
from pydantic import ValidationError

from fcs_data._chunks import ChunkedRows, ShardedFrames, UnsupportedArray
from fcs_data.converters.zarr_store import ACTION, EPISODE_ENDS, RGB, STATE
from fcs_data.errors import StoreError
from fcs_data.schemas import Layout
from fcs_data.schemas.store import EpisodeMeta, StoreMetadata, StoreStats
from fcs_data.window_index import episode_starts, total_frames

ROOT_ATTR = "fcs"


def read_metadata(path: str | Path) -> StoreMetadata:
    """The root attributes of a store, validated; `StoreError` explains what is wrong."""
    path = Path(path)
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        raise StoreError(f"{path}: not a Zarr store (no zarr.json)")
    try:
        attrs = json.loads(meta_file.read_text()).get("attributes", {})
    except json.JSONDecodeError as e:
        raise StoreError(f"{meta_file}: not valid JSON ({e})") from e
    if ROOT_ATTR not in attrs:
        partial = "fcs_partial" in attrs
        raise StoreError(
            f"{path}: an unfinished conversion; continue it with `fcs convert SRC -o ... --resume`"
            if partial else f"{path}: a Zarr group but not an fcs store (no '{ROOT_ATTR}' attribute)"
        )
    try:
        return StoreMetadata.model_validate(attrs[ROOT_ATTR])
    except ValidationError as e:
        raise StoreError(f"{path}: store metadata is invalid:\n{e}") from e


class _ZarrFrames:
    """zarr-python fallback with the `ShardedFrames` interface."""

    def __init__(self, array_dir: str):
        self.array = zarr.open_array(array_dir, mode="r")
        self.shape = self.array.shape

    def read(self, frame_ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.array.get_orthogonal_selection((np.asarray(frame_ids, np.int64),)))

    def read_into(self, frame_ids: np.ndarray, out: np.ndarray) -> None:
        out[...] = self.read(frame_ids)

    def close(self) -> None:
        pass


class _ZarrRows:
    def __init__(self, array_dir: str):
        self.array = zarr.open_array(array_dir, mode="r")
        self.shape = self.array.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])

    def close(self) -> None:
        pass


class LazyArray:
    """Rows `[start, stop)` of a store array, read on indexing: `x[5]`, `x[2:9]`, `x[[0, 4]]`, `np.asarray(x)`."""

    def __init__(self, store: Store, name: str, start: int, stop: int):
        self._store, self._name = store, name
        self._start, self._stop = start, stop

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._stop - self._start, *self._store.row_shape(self._name))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self._name == "rgb" else np.dtype(np.float32)

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, key: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        n = len(self)
        if isinstance(key, int | np.integer):
            if not -n <= key < n:
                raise IndexError(f"index {key} out of range for length {n}")
            return self[np.array([int(key) % n])][0]
        if isinstance(key, slice):
            idx = np.arange(n)[key]
            if len(idx) and key.step in (None, 1):
                return self._store.read_rows(self._name, self._start + int(idx[0]), self._start + int(idx[-1]) + 1)
        else:
            idx = np.asarray(key, dtype=np.int64)
            if ((idx < -n) | (idx >= n)).any():
                raise IndexError(f"index out of range for length {n}")
            idx = idx % n
        return self._store.read_rows(self._name, self._start + idx)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


@dataclass(frozen=True)
class Episode:
    """One episode of a store: lazy `rgb (T, H, W, 3) uint8`, `state (T, S)`, `action (T, A)` float32."""

    index: int
    rgb: LazyArray
    state: LazyArray
    action: LazyArray
    meta: EpisodeMeta

    def __len__(self) -> int:
        return len(self.rgb)


class Store:
    """A read-only fcs store. Cheap to create; pickles to its path."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        if not self.metadata.complete:
            raise StoreError(f"{self.path}: the store is marked incomplete")
        try:
            ends = zarr.open_array(str(self.path / EPISODE_ENDS), mode="r")[:]
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise StoreError(f"{self.path}: cannot read {EPISODE_ENDS} ({e})") from e
        self.episode_ends = np.asarray(ends, dtype=np.int64)
        self._pid = -1

    def __getstate__(self) -> dict:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}: {self.num_episodes} episodes, {self.num_frames} frames)"

    # -- layout ------------------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        return self.metadata.layout

    @property
    def stats(self) -> StoreStats:
        assert self.metadata.stats is not None
        return self.metadata.stats

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def num_frames(self) -> int:
        return total_frames(self.episode_ends)

    @cached_property
    def episode_starts(self) -> np.ndarray:
        return episode_starts(self.episode_ends)

    @cached_property
    def episode_lengths(self) -> np.ndarray:
        return self.episode_ends - self.episode_starts

    @cached_property
    def episode_meta(self) -> list[EpisodeMeta]:
        attrs = zarr.open_group(str(self.path / "meta"), mode="r").attrs.asdict()
        return [EpisodeMeta.model_validate(e) for e in attrs.get("episodes", [])]

    def row_shape(self, name: str) -> tuple[int, ...]:
        if name == "rgb":
            return tuple(self.metadata.frame_shape)
        return (self.layout.state_dim if name == "state" else self.layout.action_dim,)

    # -- reading -----------------------------------------------------------------------------
    def _open_readers(self) -> None:
        if self._pid == os.getpid():
            return
        base = str(self.path)
        try:
            self._frames: ShardedFrames | _ZarrFrames = ShardedFrames(f"{base}/{RGB}")
        except UnsupportedArray:
            self._frames = _ZarrFrames(f"{base}/{RGB}")
        self._rows: dict[str, ChunkedRows | _ZarrRows] = {}
        for name, sub in (("state", STATE), ("action", ACTION)):
            try:
                self._rows[name] = ChunkedRows(f"{base}/{sub}")
            except UnsupportedArray:
                self._rows[name] = _ZarrRows(f"{base}/{sub}")
        self._pid = os.getpid()

    @property
    def frame_reader(self) -> ShardedFrames | _ZarrFrames:
        self._open_readers()
        return self._frames

    def read_frames(self, frame_ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Frames at global indices `frame_ids (n,)` -> `(n, H, W, 3)` uint8."""
        self._open_readers()
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        if out is None:
            out = np.empty((len(frame_ids), *self.metadata.frame_shape), np.uint8)
        self._frames.read_into(frame_ids, out)
        return out

    def read_rows(self, name: str, start: int | np.ndarray, stop: int | None = None) -> np.ndarray:
        """Rows of `rgb`, `state` or `action`: a range `[start, stop)` or global indices `start (n,)`."""
        self._open_readers()
        if stop is None:
            idx = np.asarray(start, dtype=np.int64)
            if name == "rgb":
                return self.read_frames(idx)
            if len(idx) == 0:
                return np.empty((0, *self.row_shape(name)), np.float32)
            lo, hi = int(idx.min()), int(idx.max()) + 1
            return self._rows[name].read(lo, hi)[idx - lo]
        if name == "rgb":
            return self.read_frames(np.arange(int(start), stop))
        return self._rows[name].read(int(start), stop)

    def episode(self, i: int) -> Episode:
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range for {self.num_episodes} episodes")
        i %= self.num_episodes
        a, b = int(self.episode_starts[i]), int(self.episode_ends[i])
        return Episode(i, LazyArray(self, "rgb", a, b), LazyArray(self, "state", a, b),
                       LazyArray(self, "action", a, b), self.episode_meta[i])

    def zarr_group(self) -> zarr.Group:
        """The store as a plain zarr-python group (read-only)."""
        return zarr.open_group(str(self.path), mode="r")

    def close(self) -> None:
        if self._pid == os.getpid():
            self._frames.close()
            for r in self._rows.values():
                r.close()
        self._pid = -1


def open_store(path: str | Path) -> Store:
    """Open an fcs store read-only. Raises `StoreError` naming what is missing or unsupported."""
    return Store(path)
