"""`make_loader`: identical batches with any number of workers and any start method; no leaks."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch

from fcs_data.loader import collate_windows, make_loader
from fcs_data.windows import WindowDataset


@pytest.fixture(scope="module")
def store(v1_store: Path) -> Path:
    return v1_store


def _batches(loader) -> list[dict]:
    return [b for b in loader]


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_collate_keeps_shapes_and_hwc_memory(store: Path) -> None:
    ds = WindowDataset(store, num_hist=3, frameskip=2, split="all")
    batch = collate_windows([ds[0], ds[1]])
    assert batch["visual"].shape == (2, 4, 3, 256, 256)
    assert batch["visual"].permute(0, 1, 3, 4, 2).is_contiguous()
    assert torch.equal(batch["visual"][1], ds[1]["visual"])
    assert batch["action"].shape == (2, 4, 18) and batch["episode"].tolist() == [ds[0]["episode"], ds[1]["episode"]]


@pytest.mark.parametrize("context,persistent", [("fork", True), ("spawn", False), ("forkserver", True)])
def test_two_workers_yield_exactly_the_windows_of_zero_workers(store: Path, context: str, persistent: bool) -> None:
    ds = WindowDataset(store, num_hist=2, frameskip=3, split="all")
    base = make_loader(ds, batch_size=5, seed=9, num_workers=0)
    loader = make_loader(ds, batch_size=5, seed=9, num_workers=2, multiprocessing_context=context,
                         persistent_workers=persistent, timeout=120)
    for _epoch in range(2):  # the second epoch reuses persistent workers and continues the seeded order
        _same(_batches(base), _batches(loader))


def test_shuffle_is_seeded(store: Path) -> None:
    ds = WindowDataset(store, num_hist=1, split="all")
    order = lambda seed: torch.cat([b["start"] * 1000 + b["episode"] for b in make_loader(ds, 8, seed=seed,  # noqa: E731
                                                                                           num_workers=0)])
    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_soak_thousands_of_windows_with_two_workers_in_bounded_time_without_fd_leaks(store: Path) -> None:
    ds = WindowDataset(store, num_hist=1, frameskip=1, split="all")
    before = _open_fds()
    seen = 0
    for persistent, epochs in ((True, 10), (False, 2)):
        loader = make_loader(ds, batch_size=16, seed=1, num_workers=2, multiprocessing_context="fork",
                             persistent_workers=persistent, timeout=60)
        for _epoch in range(epochs):
            for batch in loader:
                seen += len(batch["episode"])
        del loader, batch
    gc.collect()
    assert seen >= 2000  # a stuck worker would hit the 60 s DataLoader timeout and fail the loop
    assert _open_fds() <= before


def test_one_sampling_rule_for_make_loader_and_every_rank_of_the_trainer() -> None:
    from torch.utils.data import DistributedSampler

    from fcs_data.loader import SeededSampler

    n, seed = 23, 5
    single = SeededSampler(n, seed)
    single.set_epoch(3)
    order = list(single)
    assert sorted(order) == list(range(n)) and single.epoch == 4, "each iter() advances the epoch"
    ranks = []
    for rank in range(2):
        s = SeededSampler(n, seed, rank=rank, world_size=2, drop_last=True)
        s.set_epoch(3)
        ranks.append(list(s))
        assert len(ranks[-1]) == s.epoch_length == n // 2
    assert [i for pair in zip(*ranks, strict=True) for i in pair] == order[: n - n % 2], "ranks share one order"
    # runs written before this rule existed (torch's DistributedSampler) resume in the same order
    torch_order = DistributedSampler(range(n), num_replicas=2, rank=1, shuffle=True, seed=seed, drop_last=True)
    torch_order.set_epoch(3)
    assert list(torch_order) == ranks[1]
    resumed = SeededSampler(n, seed, rank=1, world_size=2, drop_last=True)
    resumed.set_epoch(3)
    resumed.resume_at(4)
    assert len(resumed) == n // 2 - 4 and list(resumed) == ranks[1][4:]
    val = [list(SeededSampler(n, shuffle=False, rank=r, world_size=2)) for r in range(2)]
    assert sorted(val[0] + val[1]) == list(range(n)), "without drop_last every index once over the ranks"
