"""Creating and filling the arrays of an fcs store with zarr-python (layout in `fcs_data.format`).

Frames are written one whole shard at a time, each shard by exactly one writer, so no write is a
read-modify-write and parallel writers never touch the same file. Every chunk is written, even an
all-zero one (`write_empty_chunks`), and flushed to disk before it is recorded as done.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr

from fcs_data.format import (
    DATA,
    EPISODE_ENDS,
    META,
    RGB,
    ArraySpec,
    episode_ends_spec,
    frames_spec,
    rows_spec,
    shard_file,
    store_arrays,
)
from fcs_data.schemas import Layout
from fcs_data.schemas.codec import Codec


def create_arrays(path: str | Path, *, layout: Layout, episode_ends: np.ndarray, codec: Codec,
                  shard_frames: int) -> zarr.Group:
    """A new store at `path` with empty arrays of their final shapes and `meta/episode_ends` written."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    total = int(ends[-1]) if len(ends) else 0
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.create_group(DATA)
    root.create_group(META)
    specs: dict[str, ArraySpec] = {
        a.path: frames_spec(total, a.row_shape, codec, shard_frames) if a.is_frames
        else rows_spec(total, a.row_shape, a.dtype, a.name) for a in store_arrays(layout).values()}
    specs[EPISODE_ENDS] = episode_ends_spec(len(ends))
    for name, spec in specs.items():
        zarr.create_array(root.store, name=name, **spec.create_kwargs())
    if len(ends):
        writable(path, EPISODE_ENDS)[:] = ends
    return root


def writable(store: str | Path, array: str) -> zarr.Array:
    """An array of `store` opened for writing every chunk (the config is not persisted by zarr)."""
    return zarr.open_array(f"{store}/{array}", mode="r+").with_config({"write_empty_chunks": True})


def fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file under `path` (an array's chunk files)."""
    for p in Path(path).rglob("*"):
        if p.is_file():
            fsync_path(p)


class FrameWriter:
    """Writes whole shards of a camera array (one process per shard) and flushes them to disk."""

    def __init__(self, store: str | Path, array: str = RGB):
        self.store, self.name = Path(store), array
        self.array = writable(self.store, array)
        self.shard_frames = int(self.array.shards[0])

    def write_shard(self, shard: int, frames: np.ndarray) -> None:
        start = shard * self.shard_frames
        stop = min(start + self.shard_frames, self.array.shape[0])
        if len(frames) != stop - start:
            raise ValueError(f"shard {shard} holds {stop - start} frames, got {len(frames)}")
        self.array[start:stop] = frames
        fsync_path(shard_file(self.store, shard, self.name))
