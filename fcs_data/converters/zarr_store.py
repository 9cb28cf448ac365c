"""Creating and filling the arrays of an fcs store with zarr-python (layout in docs/FORMAT.md).

Frames are written one whole shard at a time, each shard by exactly one writer, so no write is a
read-modify-write and parallel writers never touch the same file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from fcs_data.schemas.store import Codec

# Chosen by benchmarks/convert.py and benchmarks/loader.py; the figures are in docs/FORMAT.md.
CODEC_PRESETS: dict[str, Codec] = {
    "none": Codec(preset="none"),
    "lz4": Codec(preset="lz4", blosc_cname="lz4", blosc_clevel=5, blosc_shuffle="noshuffle"),
    "lz4-bit": Codec(preset="lz4-bit", blosc_cname="lz4", blosc_clevel=5, blosc_shuffle="bitshuffle"),
    "zstd": Codec(preset="zstd", blosc_cname="zstd", blosc_clevel=3, blosc_shuffle="noshuffle"),
}
DEFAULT_CODEC = "lz4"
DEFAULT_SHARD_FRAMES = 128
LOWDIM_CHUNK = 16384

RGB, STATE, ACTION, EPISODE_ENDS = "data/rgb", "data/state", "data/action", "meta/episode_ends"


def codec_preset(name: str) -> Codec:
    if name not in CODEC_PRESETS:
        raise KeyError(f"unknown codec {name!r}; presets: {', '.join(CODEC_PRESETS)}")
    return CODEC_PRESETS[name]


def _compressors(codec: Codec) -> list | None:
    if codec.blosc_cname is None:
        return None
    return [BloscCodec(cname=codec.blosc_cname, clevel=codec.blosc_clevel, shuffle=codec.blosc_shuffle)]


def create_arrays(
    path: str | Path,
    *,
    frame_shape: tuple[int, int, int],
    episode_ends: np.ndarray,
    state_dim: int,
    action_dim: int,
    codec: Codec,
    shard_frames: int,
) -> zarr.Group:
    """A new store at `path` with empty arrays of their final shapes and `meta/episode_ends` written."""
    total = int(episode_ends[-1]) if len(episode_ends) else 0
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    data = root.create_group("data")
    meta = root.create_group("meta")
    data.create_array(
        "rgb", shape=(total, *frame_shape), dtype="uint8", chunks=(1, *frame_shape),
        shards=(shard_frames, *frame_shape), compressors=_compressors(codec), fill_value=0,
        dimension_names=("time", "height", "width", "channel"),
    )
    rows = max(1, min(LOWDIM_CHUNK, total))
    for name, dim in (("state", state_dim), ("action", action_dim)):
        data.create_array(name, shape=(total, dim), dtype="float32", chunks=(rows, dim), compressors=None,
                          fill_value=0.0, dimension_names=("time", name))
    ends = np.asarray(episode_ends, dtype=np.int64)
    meta.create_array("episode_ends", shape=ends.shape, dtype="int64", chunks=(max(1, len(ends)),),
                      compressors=None, fill_value=0, dimension_names=("episode",))
    if len(ends):
        meta["episode_ends"][:] = ends
    return root


def shard_file(store: str | Path, shard: int) -> Path:
    return Path(store) / RGB / "c" / str(shard) / "0" / "0" / "0"


def fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FrameWriter:
    """Writes whole shards of `data/rgb` (one process per shard) and flushes them to disk."""

    def __init__(self, store: str | Path):
        self.store = Path(store)
        self.array = zarr.open_array(str(self.store / RGB), mode="r+")
        self.shard_frames = int(self.array.shards[0])

    def write_shard(self, shard: int, frames: np.ndarray) -> None:
        start = shard * self.shard_frames
        stop = min(start + self.shard_frames, self.array.shape[0])
        if len(frames) != stop - start:
            raise ValueError(f"shard {shard} holds {stop - start} frames, got {len(frames)}")
        self.array[start:stop] = frames
        path = shard_file(self.store, shard)
        if path.exists():  # an all-zero shard may be left unwritten
            fsync_path(path)
