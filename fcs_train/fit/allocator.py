"""The CUDA caching allocator, replayed on a `Trace`: what `max_memory_allocated` and
`max_memory_reserved` would read, and whether the step runs out of memory under a limit.

The rules modelled are PyTorch's (c10/cuda/CUDACachingAllocator.cpp):

- every request is rounded up to a multiple of 512 bytes (`kMinBlockSize`);
- requests up to 1 MiB come from the small pool, carved out of 2 MiB segments; larger ones from
  the large pool: a 20 MiB segment for requests under 10 MiB, else a segment of the request
  rounded up to 2 MiB;
- a request takes the smallest free block of its pool that fits (best fit, then lowest address)
  and splits it when the rest is large enough to keep (>= 512 B in the small pool, > 1 MiB in the
  large one); freed blocks merge with free neighbours of the same segment, never across segments;
- with a memory limit, a request that needs a new segment beyond it first frees every cached
  segment that holds no live block and tries again; if that is not enough, it is out of memory.
- `expandable_segments:True` (what `fcs train` sets): one segment per pool that grows in 2 MiB
  (small) / 20 MiB (large) pages, so freed memory is reused by any request that fits in a free
  range, and under a limit free pages are unmapped before giving up.

Reserved memory is the sum of segment sizes (mapped pages with expandable segments).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fcs_train.fit.tracker import ALLOC, Trace

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20
SMALL_BUFFER = 2 << 20
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20
LARGE_BUFFER = 20 << 20


def round_size(nbytes: np.ndarray | int) -> np.ndarray | int:
    """Bytes the caching allocator hands out for a request of `nbytes` (0 stays 0)."""
    return -(-nbytes // MIN_BLOCK) * MIN_BLOCK


def segment_size(size: int) -> int:
    """Bytes of the segment (cudaMalloc) a rounded request of `size` bytes makes when nothing cached fits."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


class OutOfMemory(Exception):
    """The modelled allocator cannot serve a request under its limit."""


class _Block:
    __slots__ = ("addr", "free", "next", "prev", "segment", "size", "small")

    def __init__(self, segment: int, addr: int, size: int, small: bool):
        self.segment, self.addr, self.size, self.small = segment, addr, size, small
        self.free = True
        self.prev: _Block | None = None
        self.next: _Block | None = None


class _Pool:
    def __init__(self, small: bool):
        self.small = small
        self.free: list[tuple[int, int, int]] = []  # (size, addr, id) sorted
        self.blocks: dict[int, _Block] = {}

    def insert(self, b: _Block) -> None:
        self.blocks[id(b)] = b
        bisect.insort(self.free, (b.size, b.addr, id(b)))

    def remove(self, b: _Block) -> None:
        i = bisect.bisect_left(self.free, (b.size, b.addr, id(b)))
        del self.free[i]

    def best_fit(self, size: int) -> _Block | None:
        i = bisect.bisect_left(self.free, (size, -1, -1))
        if i == len(self.free):
            return None
        b = self.blocks[self.free[i][2]]
        self.remove(b)
        return b


class CachingAllocator:
    """A model of one device's caching allocator (one stream). `limit`: bytes it may reserve (None: no limit)."""

    def __init__(self, *, expandable: bool = False, limit: int | None = None):
        self.expandable = expandable
        self.limit = limit
        self.pools = {True: _Pool(True), False: _Pool(False)}
        self.segments: dict[int, int] = {}  # segment -> bytes reserved for it
        self.allocated = self.reserved = 0
        self.peak_allocated = self.peak_reserved = 0
        self.retries = 0
        self._next_segment = 0
        self._next_addr = 0
        self._tops: dict[bool, _Block | None] = {True: None, False: None}  # expandable: last block per pool

    def _split_ok(self, small: bool, rest: int) -> bool:
        return rest >= MIN_BLOCK if small else rest > SMALL_SIZE

    def _take(self, pool: _Pool, b: _Block, size: int) -> _Block:
        rest = b.size - size
        if self._split_ok(pool.small, rest):
            tail = _Block(b.segment, b.addr + size, rest, b.small)
            tail.prev, tail.next = b, b.next
            if b.next is not None:
                b.next.prev = tail
            b.next = tail
            b.size = size
            pool.insert(tail)
            if self.expandable and self._tops[pool.small] is b:
                self._tops[pool.small] = tail
        b.free = False
        return b

    def _grow(self, small: bool, size: int) -> _Block:
        """A new segment (or, expandable, more pages at the end of the pool's segment) holding `size` bytes."""
        pool = self.pools[small]
        if not self.expandable:
            nbytes = segment_size(size)
            self._reserve(lambda: nbytes)
            self._next_segment += 1
            seg = self._next_segment
            self.segments[seg] = nbytes
            b = _Block(seg, self._next_addr, nbytes, small)
            self._next_addr += nbytes
            pool.blocks[id(b)] = b
            return b
        page = SMALL_BUFFER if small else LARGE_BUFFER

        def extra() -> int:
            top = self._tops[small]
            have = top.size if top is not None and top.free else 0
            return -(-(size - have) // page) * page

        grow = self._reserve(extra)
        top = self._tops[small]
        seg = int(small)
        self.segments[seg] = self.segments.get(seg, 0) + grow
        if top is not None and top.free:
            pool.remove(top)
            top.size += grow
            return top
        b = _Block(seg, self._next_addr, grow, small)
        self._next_addr += grow
        if top is not None:
            top.next, b.prev = b, top
        self._tops[small] = b
        pool.blocks[id(b)] = b
        return b

    def _reserve(self, nbytes: Callable[[], int]) -> int:
        """Reserve `nbytes()` more (asked again after the cache is released under the limit); returns it."""
        n = nbytes()
        if self.limit is not None and self.reserved + n > self.limit:
            self.retries += 1
            self._release()
            n = nbytes()
            if self.reserved + n > self.limit:
                raise OutOfMemory(f"{n} more bytes reserved would exceed the limit of {self.limit}")
        self.reserved += n
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return n

    def _release(self) -> None:
        """Give back cached memory: whole free segments (classic) or free pages (expandable)."""
        for small, pool in self.pools.items():
            if self.expandable:
                top = self._tops[small]
                if top is not None and top.free:  # free pages at the end of the segment are unmapped
                    pool.remove(top)
                    self.reserved -= top.size
                    self.segments[int(small)] -= top.size
                    self._tops[small] = top.prev
                    if top.prev is not None:
                        top.prev.next = None
                    del pool.blocks[id(top)]
                continue
            for size, _addr, bid in list(pool.free):
                b = pool.blocks[bid]
                if b.prev is None and b.next is None:  # an unsplit segment with nothing live in it
                    pool.remove(b)
                    del pool.blocks[bid]
                    self.reserved -= self.segments.pop(b.segment)
                    assert size == b.size

    def malloc(self, nbytes: int) -> _Block:
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        pool = self.pools[small]
        b = pool.best_fit(size)
        if b is None:
            b = self._grow(small, size)
        b = self._take(pool, b, size)
        self.allocated += size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return b

    def free(self, b: _Block) -> None:
        pool = self.pools[b.small]
        self.allocated -= b.size
        b.free = True
        for other in (b.prev, b.next):
            if other is not None and other.free and other.segment == b.segment:
                pool.remove(other)
                del pool.blocks[id(other)]
                if other is b.prev:
                    b.addr, b.prev = other.addr, other.prev
                    if other.prev is not None:
                        other.prev.next = b
                else:
                    b.next = other.next
                    if other.next is not None:
                        other.next.prev = b
                    if self.expandable and self._tops[pool.small] is other:
                        self._tops[pool.small] = b
                b.size += other.size
        pool.insert(b)


@dataclass(frozen=True)
class Replay:
    """What the allocator did over one range of a trace: peaks (bytes), the event where reserved memory
    peaked, the fragmentation there (reserved - allocated), allocation retries under the limit, and
    whether the range ran out of memory."""

    peak_allocated: int
    peak_reserved: int
    reserved_at: int
    fragmentation: int
    retries: int
    out_of_memory: bool


def replay(trace: Trace, sizes: np.ndarray, ranges: list[tuple[int, int]], *, expandable: bool = True,
           limit: int | None = None) -> list[Replay]:
    """Run `trace`'s allocations (raw `sizes (A,)`) through the allocator model, once, and report each
    `(start, stop)` event range (memory allocated before a range still occupies the allocator in it).
    After an out-of-memory event the run stops: that range and the later ones report it."""
    alloc = CachingAllocator(expandable=expandable, limit=limit)
    blocks: dict[int, _Block] = {}
    kinds, refs = trace.events[:, 0].tolist(), trace.events[:, 1].tolist()
    sizes_l = sizes.tolist()
    out: list[Replay] = []
    pos = 0
    for start, stop in ranges:
        peak_alloc = peak_res = at = frag = 0
        retries0, oom = alloc.retries, False
        for i in range(pos, stop):
            ref = refs[i]
            if kinds[i] == ALLOC:
                if sizes_l[ref] == 0:
                    continue
                try:
                    blocks[ref] = alloc.malloc(sizes_l[ref])
                except OutOfMemory:
                    oom = True
                    break
            else:
                b = blocks.pop(ref, None)
                if b is not None:
                    alloc.free(b)
            if i >= start:
                if alloc.allocated > peak_alloc:
                    peak_alloc = alloc.allocated
                if alloc.reserved > peak_res:
                    peak_res, at, frag = alloc.reserved, i, alloc.reserved - alloc.allocated
        pos = stop
        out.append(Replay(peak_alloc, peak_res, at, frag, alloc.retries - retries0, oom))
        if oom:
            out += [Replay(0, 0, stop, 0, 0, True)] * (len(ranges) - len(out))
            break
    return out
