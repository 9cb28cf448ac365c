"""The CUDA caching allocator model (fcs_train.fit.allocator) against PyTorch's documented rules."""

from __future__ import annotations

import numpy as np
import pytest

from fcs_train.fit.allocator import (
    LARGE_BUFFER,
    SMALL_BUFFER,
    CachingAllocator,
    OutOfMemory,
    replay,
    round_size,
    segment_size,
)
from fcs_train.fit.tracker import ALLOC, FREE, Trace

MiB = 1 << 20


def test_requests_are_rounded_up_to_512_bytes() -> None:
    assert round_size(0) == 0
    assert round_size(1) == 512
    assert round_size(512) == 512
    assert round_size(513) == 1024
    assert list(round_size(np.array([4, 1000, 4096]))) == [512, 1024, 4096]


def test_segment_sizes_follow_the_small_and_large_pools() -> None:
    assert segment_size(512) == SMALL_BUFFER  # up to 1 MiB: 2 MiB small-pool segments
    assert segment_size(1 * MiB) == SMALL_BUFFER
    assert segment_size(1 * MiB + 512) == LARGE_BUFFER  # under 10 MiB: a 20 MiB segment
    assert segment_size(10 * MiB + 512) == 12 * MiB  # from 10 MiB: rounded up to 2 MiB


def test_small_requests_share_one_segment_and_freed_blocks_are_reused() -> None:
    a = CachingAllocator(expandable=False)
    blocks = [a.malloc(1000) for _ in range(100)]
    assert a.reserved == SMALL_BUFFER and a.allocated == 100 * 1024
    a.free(blocks[10])
    a.malloc(600)  # best fit: the freed 1024-byte block
    assert a.reserved == SMALL_BUFFER and a.allocated == 100 * 1024


def test_large_block_is_split_and_merged_back() -> None:
    a = CachingAllocator(expandable=False)
    x = a.malloc(12 * MiB)
    a.free(x)
    y, z = a.malloc(4 * MiB), a.malloc(4 * MiB)  # both carved out of the cached 12 MiB segment
    assert a.reserved == 12 * MiB
    a.free(y)
    a.free(z)
    a.malloc(12 * MiB)  # the pieces merged back into one block
    assert a.reserved == 12 * MiB


def test_classic_segments_fragment_where_expandable_segments_do_not() -> None:
    classic, expandable = CachingAllocator(expandable=False), CachingAllocator(expandable=True)
    for a in (classic, expandable):
        a.free(a.malloc(30 * MiB))
        a.malloc(40 * MiB)  # too large for the cached 30 MiB segment
    assert classic.reserved == 70 * MiB
    assert expandable.reserved == 40 * MiB  # the free tail grew instead (20 MiB pages)


def test_a_limit_frees_cached_segments_before_running_out() -> None:
    a = CachingAllocator(expandable=False, limit=50 * MiB)
    a.free(a.malloc(30 * MiB))
    a.malloc(40 * MiB)
    assert a.retries == 1 and a.reserved == 40 * MiB


def test_out_of_memory_when_live_blocks_exceed_the_limit() -> None:
    a = CachingAllocator(expandable=False, limit=50 * MiB)
    a.malloc(30 * MiB)
    with pytest.raises(OutOfMemory):
        a.malloc(40 * MiB)


def _trace(ops: list[tuple[int, int]], sizes: list[int]) -> Trace:
    return Trace(np.asarray(ops, np.int64).reshape(-1, 2), np.asarray(sizes, np.int64), np.zeros((0, 4), np.int64))


def test_replay_reports_each_range_with_the_state_carried_over() -> None:
    t = _trace([(ALLOC, 0), (ALLOC, 1), (FREE, 1), (ALLOC, 2), (FREE, 2)], [12 * MiB, 30 * MiB, 20 * MiB])
    first, second = replay(t, t.sizes, [(0, 3), (3, 5)], expandable=False)
    assert first.peak_allocated == 42 * MiB and first.peak_reserved == 42 * MiB
    assert second.peak_allocated == 32 * MiB  # the 12 MiB block still lives
    assert second.peak_reserved == 42 * MiB and second.fragmentation == 10 * MiB  # the 30 MiB segment cached
    assert not second.out_of_memory


def test_replay_flags_out_of_memory_in_the_range_where_it_happens() -> None:
    t = _trace([(ALLOC, 0), (FREE, 0), (ALLOC, 1), (ALLOC, 2)], [12 * MiB, 30 * MiB, 30 * MiB])
    first, second = replay(t, t.sizes, [(0, 2), (2, 4)], expandable=True, limit=50 * MiB)
    assert not first.out_of_memory and second.out_of_memory
