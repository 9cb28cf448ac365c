"""The store's on-disk layout: the one module that knows array paths, chunk files, codecs and versions.

The writer (`converters`), the readers (`_chunks`, `store`) and the validator take every path,
chunk shape and codec from here, and the set of arrays a store of a layout holds from
`store_arrays(layout)`; docs/FORMAT.md describes the same thing in words.

Format 2 (written by this fcs):

    data/rgb            (N, H, W, 3) uint8   one frame per chunk, `shard_frames` frames per shard file
    data/rgb_<camera>   (N, H, W, 3) uint8   further cameras of the layout, chunked like data/rgb
    data/state          (N, S) float32       256 rows per chunk, 16384 rows per shard file
    data/action         (N, A) float32       likewise
    data/<step field>   (N,) or (N, D)       per-step metadata of the layout (e.g. frame_index), likewise
    meta/episode_ends   (E,) int64           one chunk

Every chunk of every array ends with a crc32c of its encoded bytes (Zarr v3's `crc32c` codec after
the compressor), every shard index has its own crc32c, and every chunk is written, even one that
is all zeros, so a missing file or chunk is always damage. Format 1 stores (no chunk checksums,
unsharded low-dimensional arrays, all-zero shards possibly omitted) stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcs_data.schemas.codec import Codec

if TYPE_CHECKING:
    from fcs_data.schemas.layout import Layout

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)

ROOT_ATTR = "fcs"  # root attribute holding `StoreMetadata`
PARTIAL_ATTR = "fcs_partial"  # root attribute of a store being written
PROGRESS_FILE = "fcs-progress.jsonl"  # inside OUT.partial while converting
EPISODES_ATTR = "episodes"  # attribute of the `meta` group: `EpisodeMeta` per episode

DATA, META = "data", "meta"
RGB = "data/rgb"
STATE = "data/state"
ACTION = "data/action"
EPISODE_ENDS = "meta/episode_ends"

DEFAULT_SHARD_FRAMES = 128
LOWDIM_CHUNK_ROWS = 256  # a window's rows cost one or two 20 KB chunk reads, checksum included
LOWDIM_SHARD_ROWS = 16384
CHECKSUM_BYTES = 4

# `fcs convert --codec`; chosen by benchmarks/convert.py and benchmarks/loader.py (docs/FORMAT.md)
CODEC_PRESETS: dict[str, Codec] = {
    "none": Codec(preset="none"),
    "lz4": Codec(preset="lz4", blosc_cname="lz4", blosc_clevel=5, blosc_shuffle="noshuffle"),
    "lz4-bit": Codec(preset="lz4-bit", blosc_cname="lz4", blosc_clevel=5, blosc_shuffle="bitshuffle"),
    "zstd": Codec(preset="zstd", blosc_cname="zstd", blosc_clevel=3, blosc_shuffle="noshuffle"),
}
AUTO_CODEC = "auto"  # lz4 when it saves at least AUTO_MIN_SAVING on a sample of the frames, else none
AUTO_MIN_SAVING = 0.15
DEFAULT_CODEC = AUTO_CODEC
CODEC_CHOICES = (AUTO_CODEC, *CODEC_PRESETS)


def codec_preset(name: str) -> Codec:
    """A concrete preset (`auto` is resolved by the converter before this is asked)."""
    if name not in CODEC_PRESETS:
        raise KeyError(f"unknown codec {name!r}; presets: {', '.join(CODEC_CHOICES)}")
    return CODEC_PRESETS[name]


def camera_array(camera: str | None) -> str:
    """`data/rgb` for the layout's first camera (None), `data/rgb_<camera>` for the others."""
    return RGB if camera is None else f"{RGB}_{camera}"


def step_array(name: str) -> str:
    """Array of a per-step metadata field of the layout (e.g. `data/frame_index`)."""
    return f"{DATA}/{name}"


@dataclass(frozen=True)
class StoreArray:
    """One array of a store of some layout: how readers name it, where it lives, what one row is.

    name      `rgb` (the observation's camera), `rgb_<camera>`, `state`, `action`, a per-step field
    path      `data/rgb`, `data/rgb_<camera>`, `data/state`, ...
    row_shape `(H, W, 3)` for frames, `(S,)` / `(A,)` for state / action, `()` for a per-step field
    camera    the camera of a frame array (None for rows)
    """

    name: str
    path: str
    row_shape: tuple[int, ...]
    dtype: str
    camera: str | None = None

    @property
    def is_frames(self) -> bool:
        return self.camera is not None


def store_arrays(layout: Layout) -> dict[str, StoreArray]:
    """Every array a store of `layout` holds besides `meta/episode_ends`, by reader name: the one list
    the writer creates, the reader opens and the validator checks."""
    obs = layout.observation
    arrays = [StoreArray("rgb", RGB, obs.shape, "uint8", obs.camera),
              *(StoreArray(f"rgb_{c.name}", camera_array(c.name), c.shape, "uint8", c.name) for c in layout.cameras),
              StoreArray("state", STATE, (layout.state_dim,), "float32"),
              StoreArray("action", ACTION, (layout.action_dim,), "float32"),
              *(StoreArray(f, step_array(f), (), "int64") for f in layout.step_fields)]
    return {a.name: a for a in arrays}


def chunk_key(array: str, index: int, ndim: int) -> str:
    """The key (path inside the store) of chunk or shard `index` along the first axis of an `ndim`-D array."""
    return f"{array}/c/{index}" + "/0" * (ndim - 1)


def chunk_file(store: str | Path, array: str, index: int, ndim: int) -> Path:
    """The file of chunk (or shard) `index` along the first axis of an `ndim`-D array."""
    return Path(store) / chunk_key(array, index, ndim)


def shard_file(store: str | Path, shard: int, array: str = RGB) -> Path:
    """The file of frame shard `shard` of a camera array (4-D)."""
    return chunk_file(store, array, shard, 4)


@dataclass(frozen=True)
class ArraySpec:
    """How one array is created: `zarr.create_array(path, **spec.create_kwargs())`."""

    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    dimension_names: tuple[str, ...]
    compressors: list[Any] = field(default_factory=list)

    def create_kwargs(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": self.dtype, "chunks": self.chunks, "shards": self.shards,
                "compressors": self.compressors, "fill_value": 0, "dimension_names": self.dimension_names,
                "config": {"write_empty_chunks": True}}


def _compressors(codec: Codec) -> list[Any]:
    """The bytes-to-bytes codecs of a chunk: the preset's compressor, then always crc32c."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    out: list[Any] = []
    if codec.blosc_cname is not None:
        out.append(BloscCodec(cname=codec.blosc_cname, clevel=codec.blosc_clevel, shuffle=codec.blosc_shuffle))
    return [*out, Crc32cCodec()]


def frames_spec(num_frames: int, frame_shape: tuple[int, int, int], codec: Codec, shard_frames: int) -> ArraySpec:
    return ArraySpec(shape=(num_frames, *frame_shape), dtype="uint8", chunks=(1, *frame_shape),
                     shards=(shard_frames, *frame_shape), dimension_names=("time", "height", "width", "channel"),
                     compressors=_compressors(codec))


def rows_spec(num_rows: int, row_shape: tuple[int, ...], dtype: str, name: str) -> ArraySpec:
    """A time-major array of rows (state, action, per-step metadata), uncompressed with checksums."""
    chunk = max(1, min(LOWDIM_CHUNK_ROWS, num_rows))
    shard = max(chunk, min(LOWDIM_SHARD_ROWS, -(-num_rows // chunk) * chunk))
    return ArraySpec(shape=(num_rows, *row_shape), dtype=dtype, chunks=(chunk, *row_shape),
                     shards=(shard, *row_shape), dimension_names=("time", *(name for _ in row_shape)),
                     compressors=_compressors(CODEC_PRESETS["none"]))


def episode_ends_spec(num_episodes: int) -> ArraySpec:
    n = max(1, num_episodes)
    return ArraySpec(shape=(num_episodes,), dtype="int64", chunks=(n,), shards=None, dimension_names=("episode",),
                     compressors=_compressors(CODEC_PRESETS["none"]))
