"""Direct readers of the arrays in an fcs store: chunk files, `pread`, and the store's own codecs.

zarr-python costs about 1 ms per call (CONTEXT.md), which is more than reading a frame. These
readers parse the array's `zarr.json`, keep a small cache of shard indexes and open files, and read
exactly the bytes of the requested chunks: uncompressed frames go straight into the caller's buffer
with `preadv`, compressed ones through the numcodecs codec the metadata names. Anything outside the
layouts fcs writes raises `UnsupportedArray`, and the store falls back to zarr-python. Tests prove
both paths return identical arrays.

Readers hold file descriptors, so they are per process: they notice a fork (pid change), drop
what they inherited and reopen lazily. They pickle to their path only.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numcodecs
import numpy as np

_EMPTY = np.uint64(2**64 - 1)


class UnsupportedArray(Exception):
    """The array's metadata is valid Zarr but not a layout these readers handle."""


def _compressor(codecs: list[dict], what: str) -> numcodecs.abc.Codec | None:
    if not codecs or codecs[0]["name"] != "bytes":
        raise UnsupportedArray(f"{what}: expected a 'bytes' serializer first, got {codecs[:1]}")
    endian = codecs[0].get("configuration", {}).get("endian", "little")
    if endian != "little":
        raise UnsupportedArray(f"{what}: big-endian data")
    rest = codecs[1:]
    if not rest:
        return None
    if len(rest) > 1:
        raise UnsupportedArray(f"{what}: more than one bytes-to-bytes codec")
    name, conf = rest[0]["name"], rest[0].get("configuration", {})
    if name == "blosc":
        return numcodecs.Blosc()  # the blosc frame header carries cname, level and shuffle
    if name == "zstd":
        return numcodecs.Zstd(level=conf.get("level", 0))
    if name == "gzip":
        return numcodecs.GZip(level=conf.get("level", 1))
    raise UnsupportedArray(f"{what}: codec {name!r}")


def _check_key_encoding(meta: dict, what: str) -> None:
    """The readers build chunk paths as `c/i/j/...`: Zarr v3's default encoding with "/"."""
    enc = meta.get("chunk_key_encoding", {})
    if enc.get("name") != "default" or enc.get("configuration", {}).get("separator", "/") != "/":
        raise UnsupportedArray(f"{what}: chunk key encoding {enc}")


class _FileCache:
    """LRU of open read-only file descriptors, reset after a fork."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._pid = os.getpid()

    def get(self, path: str) -> int | None:
        if self._pid != os.getpid():
            for fd in self._fds.values():  # the child's copies; the parent keeps its own
                os.close(fd)
            self._fds.clear()
            self._pid = os.getpid()
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        self._fds[path] = fd
        if len(self._fds) > self.capacity:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds.clear()

    def __len__(self) -> int:
        return len(self._fds)


def _read_exact(fd: int, buf: memoryview, offset: int, path: str) -> None:
    got = os.preadv(fd, [buf], offset)
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], offset + got)
        if n == 0:
            raise OSError(f"{path}: unexpected end of file at byte {offset + got}")
        got += n


class ShardedFrames:
    """Frames `(N, H, W, C)` of a sharded array with one frame per inner chunk."""

    def __init__(self, array_dir: str | Path, max_open_files: int = 32, max_cached_indexes: int = 4096):
        self.array_dir = str(array_dir)
        meta = json.loads((Path(array_dir) / "zarr.json").read_text())
        what = f"{array_dir}"
        if meta.get("data_type") != "uint8":
            raise UnsupportedArray(f"{what}: dtype {meta.get('data_type')}")
        self.shape = tuple(meta["shape"])
        codecs = meta["codecs"]
        if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
            raise UnsupportedArray(f"{what}: not sharded")
        conf = codecs[0]["configuration"]
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        inner = conf["chunk_shape"]
        if len(self.shape) != 4 or inner != [1, *self.shape[1:]] or shard[1:] != list(self.shape[1:]):
            raise UnsupportedArray(f"{what}: shard {shard} / chunk {inner} is not one frame per chunk")
        _check_key_encoding(meta, what)
        self.shard_frames = int(shard[0])
        self.codec = _compressor(conf["codecs"], what)
        index_codecs = [c["name"] for c in conf["index_codecs"]]
        if index_codecs not in (["bytes"], ["bytes", "crc32c"]):
            raise UnsupportedArray(f"{what}: index codecs {index_codecs}")
        self._crc = numcodecs.CRC32C() if index_codecs[-1] == "crc32c" else None
        self.index_at_end = conf.get("index_location", "end") == "end"
        self.index_bytes = 16 * self.shard_frames + (4 if self._crc else 0)
        self.fill_value = int(meta.get("fill_value", 0))
        self.frame_bytes = int(np.prod(self.shape[1:]))
        self._files = _FileCache(max_open_files)
        self._indexes: OrderedDict[int, np.ndarray] = OrderedDict()
        self._max_indexes = max_cached_indexes
        self._indexes_pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"array_dir": self.array_dir}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["array_dir"])  # type: ignore[misc]

    def shard_path(self, shard: int) -> str:
        return f"{self.array_dir}/c/{shard}/0/0/0"

    def _index(self, shard: int, fd: int, path: str) -> np.ndarray:
        if self._indexes_pid != os.getpid():
            self._indexes.clear()
            self._indexes_pid = os.getpid()
        idx = self._indexes.get(shard)
        if idx is not None:
            self._indexes.move_to_end(shard)
            return idx
        offset = os.fstat(fd).st_size - self.index_bytes if self.index_at_end else 0
        raw = bytearray(self.index_bytes)
        _read_exact(fd, memoryview(raw), offset, path)
        body = self._crc.decode(raw) if self._crc else raw  # verifies the checksum
        idx = np.frombuffer(bytes(body), dtype="<u8").reshape(self.shard_frames, 2)
        self._indexes[shard] = idx
        if len(self._indexes) > self._max_indexes:
            self._indexes.popitem(last=False)
        return idx

    def read_into(self, frame_ids: np.ndarray, out: np.ndarray) -> None:
        """Fill `out (n, H, W, C) uint8` (C-contiguous rows) with frames `frame_ids (n,)`."""
        for j, g in enumerate(np.asarray(frame_ids, dtype=np.int64).tolist()):
            if not 0 <= g < self.shape[0]:
                raise IndexError(f"frame {g} out of range for {self.shape[0]} frames")
            shard, k = divmod(g, self.shard_frames)
            path = self.shard_path(shard)
            dst = out[j]
            fd = self._files.get(path)
            if fd is None:
                dst.fill(self.fill_value)
                continue
            off, nbytes = self._index(shard, fd, path)[k]
            if off == _EMPTY:
                dst.fill(self.fill_value)
            elif self.codec is None:
                if int(nbytes) != self.frame_bytes:
                    raise OSError(f"{path}: chunk {k} holds {nbytes} bytes, a frame has {self.frame_bytes}")
                _read_exact(fd, memoryview(dst).cast("B"), int(off), path)
            else:
                buf = bytearray(int(nbytes))
                _read_exact(fd, memoryview(buf), int(off), path)
                self.codec.decode(buf, out=memoryview(dst).cast("B"))

    def read(self, frame_ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(frame_ids), *self.shape[1:]), np.uint8)
        self.read_into(frame_ids, out)
        return out

    @property
    def open_files(self) -> int:
        return len(self._files)

    def close(self) -> None:
        self._files.close()
        self._indexes.clear()


class ChunkedRows:
    """Rows `(N, D)` of an uncompressed little-endian array chunked along the first axis."""

    def __init__(self, array_dir: str | Path, max_open_files: int = 16):
        self.array_dir = str(array_dir)
        meta = json.loads((Path(array_dir) / "zarr.json").read_text())
        what = str(array_dir)
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        self.shape = tuple(meta["shape"])
        chunk = meta["chunk_grid"]["configuration"]["chunk_shape"]
        if len(self.shape) != 2 or chunk[1] != self.shape[1]:
            raise UnsupportedArray(f"{what}: chunk {chunk} for shape {self.shape}")
        if any(c["name"] == "sharding_indexed" for c in meta["codecs"]):
            raise UnsupportedArray(f"{what}: sharded rows")
        if _compressor(meta["codecs"], what) is not None:
            raise UnsupportedArray(f"{what}: compressed rows")
        _check_key_encoding(meta, what)
        self.chunk_rows = int(chunk[0])
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self.fill_value = meta.get("fill_value", 0)
        self._files = _FileCache(max_open_files)

    def __getstate__(self) -> dict:
        return {"array_dir": self.array_dir}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["array_dir"])  # type: ignore[misc]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows `[start, stop)` as a new `(stop - start, D)` array."""
        if not 0 <= start <= stop <= self.shape[0]:
            raise IndexError(f"rows [{start}, {stop}) out of range for {self.shape[0]} rows")
        out = np.empty((stop - start, self.shape[1]), self.dtype)
        row = start
        while row < stop:
            chunk, r0 = divmod(row, self.chunk_rows)
            n = min(stop - row, self.chunk_rows - r0)
            path = f"{self.array_dir}/c/{chunk}/0"
            dst = out[row - start : row - start + n]
            fd = self._files.get(path)
            if fd is None:
                dst.fill(self.fill_value)
            else:
                _read_exact(fd, memoryview(dst).cast("B"), r0 * self.row_bytes, path)
            row += n
        return out

    def close(self) -> None:
        self._files.close()
