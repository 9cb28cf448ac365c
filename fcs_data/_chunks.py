"""Direct readers of the arrays in an fcs store: chunk files, `pread`, checksums and the store's codecs.

zarr-python costs about 1 ms per call (CONTEXT.md), more than reading a frame. `ArrayReader` parses
an array's `zarr.json` once, keeps a small cache of shard indexes and open files, and reads exactly
the bytes of the chunks asked for: an uncompressed frame goes straight into the caller's buffer
with `preadv` (its checksum into a 4-byte buffer beside it), a compressed one through the numcodecs
codec the metadata names. Every chunk's crc32c is verified on every read (format 2).

Nothing is ever filled in: a missing shard file, an absent chunk, a truncated file, a checksum or a
decoder that fails is a `StoreDataError` naming the store, the file, the array and the rows (and,
through `where`, the episodes and frames) it holds. An array laid out in a way these readers do not
know is a `StoreError` when it is opened, never a silent fallback.

Readers hold file descriptors, so they are per process: they notice a fork (pid change), drop what
they inherited and reopen lazily.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np

from fcs_data.errors import StoreDataError, StoreError
from fcs_data.format import CHECKSUM_BYTES, chunk_key

_EMPTY = 2**64 - 1
Where = Callable[[int, int], str]


def _crc32c(buf: memoryview | bytearray) -> int:
    return google_crc32c.value(np.frombuffer(buf, np.uint8))  # the C extension takes arrays, not memoryviews


@dataclass(frozen=True)
class ArrayMeta:
    """What the readers need from an array's `zarr.json`."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_rows: int  # rows per chunk; a chunk spans every other axis whole
    shard_rows: int | None  # rows per shard file; None: one file per chunk
    codec: numcodecs.abc.Codec | None
    chunk_crc: bool
    index_crc: bool
    index_at_end: bool

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @cached_property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    @cached_property
    def chunk_bytes(self) -> int:
        return self.chunk_rows * self.row_bytes

    @property
    def num_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_rows)

    @cached_property
    def chunks_per_shard(self) -> int:
        return 1 if self.shard_rows is None else self.shard_rows // self.chunk_rows


class _Unsupported(Exception):
    pass


def _bytes_codecs(codecs: list[dict]) -> tuple[numcodecs.abc.Codec | None, bool]:
    """`(compressor or None, ends with crc32c)` of a chunk's codec list."""
    if not codecs or codecs[0].get("name") != "bytes":
        raise _Unsupported(f"expected a 'bytes' serializer first, got {codecs[:1]}")
    if codecs[0].get("configuration", {}).get("endian", "little") != "little":
        raise _Unsupported("big-endian data")
    rest = [c.get("name") for c in codecs[1:]]
    crc = bool(rest) and rest[-1] == "crc32c"
    if crc:
        codecs, rest = codecs[:-1], rest[:-1]
    if len(rest) > 1:
        raise _Unsupported(f"more than one compressor: {rest}")
    if not rest:
        return None, crc
    name, conf = rest[0], codecs[1].get("configuration", {})
    if name == "blosc":
        return numcodecs.Blosc(), crc  # the blosc frame header carries cname, level and shuffle
    if name == "zstd":
        return numcodecs.Zstd(level=conf.get("level", 0)), crc
    if name == "gzip":
        return numcodecs.GZip(level=conf.get("level", 1)), crc
    raise _Unsupported(f"codec {name!r}")


def _parse(meta: dict) -> ArrayMeta:
    enc = meta.get("chunk_key_encoding", {})
    if enc.get("name") != "default" or enc.get("configuration", {}).get("separator", "/") != "/":
        raise _Unsupported(f"chunk key encoding {enc}")  # the readers build paths as c/i/j/...
    shape = tuple(int(s) for s in meta["shape"])
    dtype = np.dtype(meta["data_type"]).newbyteorder("<")
    grid = [int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"]]
    codecs = meta["codecs"]
    if len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
        conf = codecs[0]["configuration"]
        inner = [int(c) for c in conf["chunk_shape"]]
        index = [c["name"] for c in conf["index_codecs"]]
        if index not in (["bytes"], ["bytes", "crc32c"]):
            raise _Unsupported(f"index codecs {index}")
        codec, crc = _bytes_codecs(conf["codecs"])
        shard_rows, index_crc, at_end = grid[0], index[-1] == "crc32c", conf.get("index_location", "end") == "end"
    else:
        inner, (codec, crc), shard_rows, index_crc, at_end = grid, _bytes_codecs(codecs), None, False, True
    if list(inner[1:]) != list(shape[1:]) or list(grid[1:]) != list(shape[1:]):
        raise _Unsupported(f"chunks {inner} (shards {grid}) do not span whole rows of shape {list(shape)}")
    if shard_rows is not None and shard_rows % inner[0]:
        raise _Unsupported(f"shard of {shard_rows} rows is not a whole number of {inner[0]}-row chunks")
    return ArrayMeta(shape, dtype, inner[0], shard_rows, codec, crc, index_crc, at_end)


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
        except (FileNotFoundError, NotADirectoryError):
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


class ArrayReader:
    """Rows `(N, *row)` of one array of an fcs store, chunk by chunk, checksums verified.

    Args:
        store: the store directory; `array` its array path (`data/rgb`).
        where: describes rows `[a, b)` in a user's words (episodes and frames) for error messages.
        verify: check each chunk's crc32c (format 2); `False` only to measure what checking costs.
    """

    def __init__(self, store: str | Path, array: str, *, where: Where | None = None, verify: bool = True,
                 max_open_files: int = 32, max_cached_indexes: int = 4096, max_cached_chunks: int = 64):
        self.store, self.array = str(store), array
        self.array_dir = f"{self.store}/{array}"
        self._where = where
        self.verify = verify
        meta_file = Path(self.array_dir) / "zarr.json"
        try:
            doc = json.loads(meta_file.read_bytes())
            self.meta = _parse(doc)
        except FileNotFoundError:
            raise StoreError(f"{self.store}: {array}/zarr.json is missing") from None
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise StoreError(f"{self.store}: {array}/zarr.json is not valid Zarr v3 array metadata "
                             f"({type(e).__name__}: {e})") from None
        except _Unsupported as e:
            raise StoreError(f"{self.store}: {array}/zarr.json: {e}; fcs reads arrays laid out as docs/FORMAT.md "
                             "describes") from None
        self.shape = self.meta.shape
        self._index_bytes = 16 * self.meta.chunks_per_shard + (CHECKSUM_BYTES if self.meta.index_crc else 0)
        self._files = _FileCache(max_open_files)
        self._paths: dict[int, str] = {}
        self._indexes: OrderedDict[int, tuple[np.ndarray, int]] = OrderedDict()
        self._max_indexes = max_cached_indexes
        self._pid = os.getpid()
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()  # decoded multi-row chunks, checksums verified
        self._max_chunks = max_cached_chunks

    # -- errors ----------------------------------------------------------------------------------
    def _rows_of_file(self, file_index: int) -> tuple[int, int]:
        rows = self.meta.shard_rows or self.meta.chunk_rows
        return file_index * rows, min((file_index + 1) * rows, self.shape[0])

    def _rows_of_chunk(self, k: int) -> tuple[int, int]:
        return k * self.meta.chunk_rows, min((k + 1) * self.meta.chunk_rows, self.shape[0])

    def _error(self, path: str, rows: tuple[int, int], problem: str) -> StoreDataError:
        rel = os.path.relpath(path, self.store)
        where = self._where(*rows) if self._where is not None else ""
        return StoreDataError(self.store, rel, self.array, rows, problem, where)

    # -- locating chunks ---------------------------------------------------------------------------
    def _file(self, file_index: int) -> tuple[str, int]:
        path = self._paths.get(file_index)
        if path is None:
            path = self._paths[file_index] = f"{self.store}/{chunk_key(self.array, file_index, len(self.shape))}"
        fd = self._files.get(path)
        if fd is None:
            what = "shard file" if self.meta.shard_rows is not None else "chunk file"
            raise self._error(path, self._rows_of_file(file_index), f"{what} is missing")
        return path, fd

    def _index(self, shard: int, fd: int, path: str) -> tuple[np.ndarray, int]:
        if self._pid != os.getpid():
            self._indexes.clear()
            self._pid = os.getpid()
        hit = self._indexes.get(shard)
        if hit is not None:
            self._indexes.move_to_end(shard)
            return hit
        rows = self._rows_of_file(shard)
        size = os.fstat(fd).st_size
        if size < self._index_bytes:
            raise self._error(path, rows, f"truncated: {size} bytes, shorter than its {self._index_bytes}-byte index")
        start = size - self._index_bytes if self.meta.index_at_end else 0
        raw = bytearray(self._index_bytes)
        self._pread(fd, [memoryview(raw)], start, path, rows)
        body = memoryview(raw)[: 16 * self.meta.chunks_per_shard]
        if self.meta.index_crc and _crc32c(body) != int.from_bytes(raw[-CHECKSUM_BYTES:], "little"):
            raise self._error(path, rows, "the shard index fails its crc32c checksum (corrupt file)")
        idx = np.frombuffer(bytes(body), dtype="<u8").reshape(-1, 2)
        used = idx[:, 0] != _EMPTY
        data_end = size - self._index_bytes if self.meta.index_at_end else size
        if np.any(idx[used, 0] + idx[used, 1] > data_end):
            raise self._error(path, rows, f"truncated or corrupt: the index points past the data ({size} bytes)")
        self._indexes[shard] = (idx, size)
        if len(self._indexes) > self._max_indexes:
            self._indexes.popitem(last=False)
        return idx, size

    def _locate(self, k: int) -> tuple[str, int, int, int]:
        """`(path, fd, offset, nbytes)` of chunk `k`'s encoded bytes."""
        if self.meta.shard_rows is None:
            path, fd = self._file(k)
            return path, fd, 0, os.fstat(fd).st_size
        shard, inner = divmod(k, self.meta.chunks_per_shard)
        path, fd = self._file(shard)
        idx, _ = self._index(shard, fd, path)
        off, nbytes = idx[inner].tolist()
        if off == _EMPTY:
            raise self._error(path, self._rows_of_chunk(k), f"chunk {inner} of the shard is absent")
        return path, fd, off, nbytes

    def _pread(self, fd: int, bufs: list[memoryview], offset: int, path: str, rows: tuple[int, int]) -> None:
        want = sum(len(b) for b in bufs)
        got = os.preadv(fd, bufs, offset)
        while got < want:  # a short read: continue where it stopped
            rest, skip = [], got
            for b in bufs:
                if skip >= len(b):
                    skip -= len(b)
                    continue
                rest.append(b[skip:])
                skip = 0
            n = os.preadv(fd, rest, offset + got)
            if n == 0:
                raise self._error(path, rows, f"truncated: ends at byte {offset + got}, {want - got} bytes early")
            got += n

    # -- reading chunks ---------------------------------------------------------------------------
    def read_chunk(self, k: int, dst: memoryview) -> None:
        """Decode chunk `k` into `dst` (`chunk_bytes` bytes), verifying its checksum."""
        m = self.meta
        path, fd, off, nbytes = self._locate(k)
        rows = self._rows_of_chunk(k)
        crc = CHECKSUM_BYTES if m.chunk_crc else 0
        if m.codec is None:
            if nbytes != m.chunk_bytes + crc:
                raise self._error(path, rows, f"chunk holds {nbytes} bytes, expected {m.chunk_bytes + crc}")
            tail = bytearray(crc)
            self._pread(fd, [dst, memoryview(tail)] if crc else [dst], off, path, rows)
            payload = dst
        else:
            buf = bytearray(nbytes)
            self._pread(fd, [memoryview(buf)], off, path, rows)
            payload, tail = memoryview(buf)[: nbytes - crc], buf[nbytes - crc :]
        if crc and self.verify and _crc32c(payload) != int.from_bytes(tail, "little"):
            raise self._error(path, rows, "fails its crc32c checksum (the bytes on disk changed)")
        if m.codec is not None:
            try:
                out = m.codec.decode(payload, out=dst)
            except (RuntimeError, ValueError, TypeError, OverflowError) as e:
                raise self._error(path, rows, f"does not decode ({type(e).__name__}: {e})") from None
            if out is not None and memoryview(out).nbytes != m.chunk_bytes:
                raise self._error(path, rows, "decodes to the wrong size")

    def _chunk_rows_into(self, k: int, lo: int, hi: int, dst: np.ndarray) -> None:
        """Rows `[lo, hi)` of chunk `k` (offsets within the chunk) into `dst`."""
        m = self.meta
        contiguous = dst.flags.c_contiguous
        if lo == 0 and hi == m.chunk_rows and contiguous:
            self.read_chunk(k, memoryview(dst.reshape(-1).view(np.uint8)))
            return
        if m.codec is None and not m.chunk_crc and contiguous:  # format 1 rows: read just those rows
            path, fd, off, nbytes = self._locate(k)
            rows = self._rows_of_chunk(k)
            if nbytes < hi * m.row_bytes:
                raise self._error(path, rows, f"truncated: {nbytes} bytes, rows up to {hi} need {hi * m.row_bytes}")
            self._pread(fd, [memoryview(dst.reshape(-1).view(np.uint8))], off + lo * m.row_bytes, path, rows)
            return
        chunk = self._chunks.get(k)
        if chunk is None:
            chunk = np.empty((m.chunk_rows, *m.row_shape), m.dtype)
            self.read_chunk(k, memoryview(chunk.reshape(-1).view(np.uint8)))
            self._chunks[k] = chunk
            if len(self._chunks) > self._max_chunks:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(k)
        dst[...] = chunk[lo:hi]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows `[start, stop)` as a new array."""
        if not 0 <= start <= stop <= self.shape[0]:
            raise IndexError(f"rows [{start}, {stop}) out of range for {self.shape[0]} rows of {self.array}")
        out = np.empty((stop - start, *self.meta.row_shape), self.meta.dtype)
        cr = self.meta.chunk_rows
        row = start
        while row < stop:
            k, r0 = divmod(row, cr)
            n = min(stop - row, cr - r0)
            self._chunk_rows_into(k, r0, r0 + n, out[row - start : row - start + n])
            row += n
        return out

    def read_into(self, ids: np.ndarray, out: np.ndarray) -> None:
        """Rows `ids (n,)` into `out (n, *row)` (C-contiguous rows): one chunk each for frames."""
        n = self.shape[0]
        for j, g in enumerate(np.asarray(ids, dtype=np.int64).tolist()):
            if not 0 <= g < n:
                raise IndexError(f"row {g} out of range for {n} rows of {self.array}")
            k, r = divmod(g, self.meta.chunk_rows)
            self._chunk_rows_into(k, r, r + 1, out[j : j + 1])

    def check(self, k: int) -> None:
        """Read and verify chunk `k` (raises `StoreDataError`); used by `fcs validate STORE`."""
        buf = np.empty(self.meta.chunk_bytes, np.uint8)
        self.read_chunk(k, memoryview(buf))

    @property
    def num_chunks(self) -> int:
        return self.meta.num_chunks

    def chunk_rows(self, k: int) -> tuple[int, int]:
        return self._rows_of_chunk(k)

    @property
    def open_files(self) -> int:
        return len(self._files)

    def close(self) -> None:
        self._files.close()
        self._indexes.clear()
        self._chunks.clear()
