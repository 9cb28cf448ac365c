"""`open_store(path)`: a read-only view of an fcs Zarr store.

The store is flat and time-major (`data/rgb`, `data/state`, `data/action`) with an index of
episode ends, so an episode or a window is a range of rows, never a copy. Every read goes through
the direct chunk readers of `_chunks`, which verify each chunk's checksum and turn any damage into a
`StoreDataError` naming the file, the array and the episodes and frames it holds. Opening a store
checks its metadata, `episode_ends` (strictly increasing, ending at the arrays' length) and every
array's shape, so a damaged store fails at once and by name, not in the middle of an epoch.
A `Store` pickles to its path and reopens its files lazily in each process.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from fcs_data._chunks import ArrayReader
from fcs_data.errors import StoreError
from fcs_data.format import (
    EPISODE_ENDS,
    EPISODES_ATTR,
    FORMAT_VERSION,
    META,
    PARTIAL_ATTR,
    ROOT_ATTR,
    StoreArray,
    store_arrays,
)
from fcs_data.schemas import Layout
from fcs_data.schemas.store import EpisodeMeta, StoreMetadata, StoreStats
from fcs_data.window_index import episode_starts, total_frames


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise StoreError(f"{path}: missing ({what})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: not valid JSON ({what}): {e}") from None
    except OSError as e:
        raise StoreError(f"{path}: cannot be read ({what}): {e.strerror or e}") from None
    if not isinstance(doc, dict):
        raise StoreError(f"{path}: holds a JSON {type(doc).__name__}, not Zarr metadata ({what})")
    return doc


def read_metadata(path: str | Path) -> StoreMetadata:
    """The root attributes of a store, validated; `StoreError` explains what is wrong."""
    path = Path(path)
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        raise StoreError(f"{path}: not a Zarr store (no zarr.json)")
    attrs = _read_json(meta_file, "the store's root metadata").get("attributes", {})
    if not isinstance(attrs, dict) or ROOT_ATTR not in attrs:
        partial = isinstance(attrs, dict) and PARTIAL_ATTR in attrs
        raise StoreError(
            f"{path}: an unfinished conversion; continue it with `fcs convert SRC -o ... --resume`"
            if partial else f"{path}: a Zarr group but not an fcs store (no '{ROOT_ATTR}' attribute)"
        )
    try:
        return StoreMetadata.model_validate(attrs[ROOT_ATTR])
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        raise StoreError(f"{meta_file}: store metadata is invalid at '{loc}': {first['msg']}{more}") from None


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
        return self._store.reader(self._name).meta.dtype

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
    """A read-only fcs store. Cheap to create; pickles to its path.

    `verify=False` skips the per-chunk checksums (only to measure what they cost).
    """

    def __init__(self, path: str | Path, *, verify: bool = True):
        self.path = Path(path)
        self.verify = verify
        self.metadata = read_metadata(self.path)
        if not self.metadata.complete:
            raise StoreError(f"{self.path}: the store is marked incomplete")
        self._pid = -1
        self._readers: dict[str, ArrayReader] = {}
        ends = ArrayReader(self.path, EPISODE_ENDS)
        if ends.shape[0] != self.metadata.num_episodes:
            raise StoreError(f"{self.path}: {EPISODE_ENDS} has {ends.shape[0]} entries, the metadata says "
                             f"{self.metadata.num_episodes} episodes")
        self.episode_ends = np.asarray(ends.read(0, ends.shape[0]), dtype=np.int64)
        ends.close()
        self.arrays: dict[str, StoreArray] = store_arrays(self.metadata.layout)
        self._check_shapes()

    def _check_shapes(self) -> None:
        ends, m = self.episode_ends, self.metadata
        if len(ends):
            steps = np.diff(ends, prepend=0)
            bad = np.flatnonzero(steps <= 0)
            if len(bad):
                i = int(bad[0])
                prev = int(ends[i - 1]) if i else 0
                raise StoreError(f"{self.path}: {EPISODE_ENDS} is not strictly increasing: episode {i} ends at "
                                 f"row {int(ends[i])}, not after row {prev} where "
                                 f"{'episode ' + str(i - 1) if i else 'the store'} starts it")
        if total_frames(ends) != m.num_frames:
            raise StoreError(f"{self.path}: {EPISODE_ENDS} ends at row {total_frames(ends)}, the metadata says "
                             f"{m.num_frames} frames")
        self._open_readers()
        for name, array in self.arrays.items():
            shape = self._readers[name].shape
            expected = (m.num_frames, *array.row_shape)
            if tuple(shape) != expected:
                raise StoreError(f"{self.path}: {array.path} has shape {tuple(shape)}, expected {expected} "
                                 f"from {EPISODE_ENDS} and the layout")

    def __getstate__(self) -> dict:
        return {"path": str(self.path), "verify": self.verify}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], verify=state.get("verify", True))  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}: {self.num_episodes} episodes, {self.num_frames} frames)"

    # -- what the store holds ------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        return self.metadata.layout

    @property
    def format_version(self) -> int:
        return self.metadata.fcs_format

    @property
    def is_current_format(self) -> bool:
        return self.metadata.fcs_format == FORMAT_VERSION

    @property
    def stats(self) -> StoreStats:
        if self.metadata.stats is None:
            raise StoreError(f"{self.path}: the store has no statistics in its metadata")
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
        path = self.path / META / "zarr.json"
        records = _read_json(path, "per-episode metadata").get("attributes", {}).get(EPISODES_ATTR, [])
        try:
            return [EpisodeMeta.model_validate(e) for e in records]
        except ValidationError as e:
            raise StoreError(f"{path}: per-episode metadata is invalid: {e.errors()[0]['msg']}") from None

    def content_key(self, episodes: Sequence[int] | np.ndarray | None = None) -> str:
        """A hash of what `episodes` (all by default) hold: the layout their rows were stored in, and each
        episode's content hash (its source files and state/action rows, kept by the converter) and
        length. Equal for two conversions of the same data in the same layout, wherever and whenever
        they were written; different as soon as one episode differs."""
        chosen = range(self.num_episodes) if episodes is None else np.asarray(episodes, np.int64).tolist()
        meta = self.episode_meta
        if len(meta) != self.num_episodes:
            raise StoreError(f"{self.path}: meta has {len(meta)} episode records for {self.num_episodes} episodes; "
                             f"run `fcs validate {self.path}`")
        blob = json.dumps([self.layout.model_dump(mode="json"), [meta[e].content_hash for e in chosen],
                           self.episode_lengths[list(chosen)].tolist()])
        return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()

    @cached_property
    def identity(self) -> str:
        """What this store holds (`content_key` of every episode): checkpoints record it, and `--resume`,
        `fcs train-decoder` and `fcs plan-eval` compare it to tell the store a model was trained on."""
        return self.content_key()

    @cached_property
    def legacy_fingerprint(self) -> str:
        """The identity checkpoints of fcs <= 0.2 (format 1) recorded: a hash of the creation time and
        the episode ends, which two stores converted in the same second with equal lengths share.
        Compared only with such checkpoints (`StoreRef.matches`), so they still resume."""
        m = self.metadata
        blob = json.dumps([m.provenance.created, m.num_frames, m.num_episodes, self.episode_ends.tolist()])
        return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()

    @property
    def cameras(self) -> list[str]:
        """The cameras this store holds frames of: the observation's first (`data/rgb`)."""
        return self.layout.camera_names

    def row_shape(self, name: str) -> tuple[int, ...]:
        """Shape of one row of array `name` (`rgb`, `rgb_<camera>`, `state`, `action`, a per-step field)."""
        if name not in self.arrays:
            raise KeyError(f"{self.path} has no array {name!r} (arrays: {', '.join(self.arrays)})")
        return self.arrays[name].row_shape

    def where(self, start: int, stop: int) -> str:
        """Rows `[start, stop)` in a user's words: `episode 3 (frames 20..99), episode 4 (frames 0..27)`."""
        ends, starts = self.episode_ends, self.episode_starts
        first = int(np.searchsorted(ends, start, side="right"))
        parts = []
        for e in range(first, len(ends)):
            if starts[e] >= stop:
                break
            a, b = max(start, int(starts[e])) - int(starts[e]), min(stop, int(ends[e])) - int(starts[e])
            parts.append(f"episode {e} (frame {a})" if b - a == 1 else f"episode {e} (frames {a}..{b - 1})")
        if len(parts) > 4:
            parts = [*parts[:3], f"... {len(parts) - 3} more episodes"]
        return ", ".join(parts)

    # -- reading -----------------------------------------------------------------------------
    def _open_readers(self) -> None:
        if self._pid == os.getpid():
            return
        self._readers = {name: ArrayReader(self.path, array.path, where=self.where, verify=self.verify)
                         for name, array in self.arrays.items()}
        self._pid = os.getpid()

    def reader(self, name: str) -> ArrayReader:
        """The chunk reader of array `name` (`rgb`, `rgb_<camera>`, `state`, `action`, ...) in this process."""
        self._open_readers()
        if name not in self._readers:
            raise KeyError(f"{self.path} has no array {name!r} (arrays: {', '.join(self._readers)})")
        return self._readers[name]

    def frames_name(self, camera: str | None = None) -> str:
        """The array name of a camera's frames: `rgb` for the observation's camera (or None)."""
        camera = camera or self.layout.observation.camera
        name = next((a.name for a in self.arrays.values() if a.camera == camera), None)
        if name is None:
            raise KeyError(f"{self.path} has no camera {camera!r} (cameras: {', '.join(self.cameras)})")
        return name

    def read_frames(self, frame_ids: np.ndarray, out: np.ndarray | None = None, camera: str | None = None
                    ) -> np.ndarray:
        """Frames of `camera` (the observation's by default) at global indices `frame_ids (n,)` ->
        `(n, H, W, 3)` uint8."""
        name = self.frames_name(camera)
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        if out is None:
            out = np.empty((len(frame_ids), *self.row_shape(name)), np.uint8)
        self.reader(name).read_into(frame_ids, out)
        return out

    def read_rows(self, name: str, start: int | np.ndarray, stop: int | None = None) -> np.ndarray:
        """Rows of an array (`rgb`, `state`, `action`, ...): a range `[start, stop)` or global indices `start (n,)`."""
        reader = self.reader(name)
        if stop is None:  # only the chunks holding `start` are read (each decoded once, then cached)
            idx = np.asarray(start, dtype=np.int64)
            out = np.empty((len(idx), *self.row_shape(name)), reader.meta.dtype)
            reader.read_into(idx, out)
            return out
        return reader.read(int(start), stop)

    def episode(self, i: int) -> Episode:
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range for {self.num_episodes} episodes")
        i %= self.num_episodes
        a, b = int(self.episode_starts[i]), int(self.episode_ends[i])
        return Episode(i, LazyArray(self, "rgb", a, b), LazyArray(self, "state", a, b),
                       LazyArray(self, "action", a, b), self.episode_meta[i])

    def zarr_group(self):
        """The store as a plain zarr-python group (read-only)."""
        import zarr

        return zarr.open_group(str(self.path), mode="r")

    def close(self) -> None:
        if self._pid == os.getpid():
            for r in self._readers.values():
                r.close()
        self._pid = -1


def open_store(path: str | Path, *, verify: bool = True) -> Store:
    """Open an fcs store read-only. Raises `StoreError` naming what is missing, damaged or unsupported."""
    return Store(path, verify=verify)
