"""`make_loader`: a DataLoader over a `WindowDataset` with defaults that hold up in training.

- shuffling through a seeded `torch.Generator` (never the global RNGs), so an epoch's order is a
  function of `(seed, epoch)` and nothing else (`SeededSampler`);
- workers that each use one intra-op thread, persistent across epochs, with a timeout;
- pinned memory when CUDA is available;
- a collate that stacks frames in their stored HWC layout (one memcpy) and returns
  `visual (B, F, 3, H, W)` as a view, so no transpose copy happens in the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from fcs_data.watchdog import LoaderWatchdog, WatchedCollate, WatchedDataset, WorkerInit


class SeededSampler(Sampler[int]):
    """This rank's indices of an epoch, in an order that is a function of `(seed, epoch)` only.

    The one sampling rule of fcs (`make_loader` and `fcs train` both use it): an epoch's order is
    `torch.randperm(length)` drawn from a generator seeded with `seed + epoch` (the rule of torch's
    `DistributedSampler`, so runs keep their order), or `0 .. length - 1` without shuffling; rank
    `rank` of `world_size` takes positions `rank, rank + world_size, ...` of it, after cutting it to a
    multiple of `world_size` when `drop_last` (every rank then takes as many steps), else the ranks'
    shares differ by at most one (validation: every index once over all ranks).

    Each `iter()` uses the current epoch and then advances it, so the order does not depend on how
    many workers there are, whether they persist, or what else drew random numbers; `set_epoch` puts
    it anywhere, and `resume_at(n)` starts the next epoch after its first `n` indices (a resume in
    the middle of an epoch).
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True, *, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, position: int) -> None:
        """The next epoch yields its indices from `position` on (those before were trained on)."""
        self._skip = position

    @property
    def epoch_length(self) -> int:
        """Indices this rank yields in a whole epoch."""
        total = self.length - self.length % self.world_size if self.drop_last else self.length
        return len(range(self.rank, total, self.world_size))

    def __len__(self) -> int:
        return self.epoch_length - self._skip

    def __iter__(self) -> Iterator[int]:
        epoch, skip = self.epoch, self._skip
        self.epoch, self._skip = epoch + 1, 0
        if self.shuffle:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        else:
            order = list(range(self.length))
        total = self.length - self.length % self.world_size if self.drop_last else self.length
        return iter(order[self.rank : total : self.world_size][skip:])


def collate_windows(items: list[dict]) -> dict:
    """Batch `WindowDataset` items; `visual` becomes `(B, F, [C,] 3, H, W)` uint8 (HWC in memory)."""
    visual = default_collate([it["visual"].movedim(-3, -1) for it in items]).movedim(-1, -3)
    rest = default_collate([{k: v for k, v in it.items() if k != "visual"} for it in items])
    return {"visual": visual, **rest}


class WatchedLoader(DataLoader):
    """A `DataLoader` whose workers report to `watchdog` (None when it has no workers)."""

    watchdog: LoaderWatchdog | None = None


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 2,
    drop_last: bool = True,
    sampler: Sampler | None = None,
    persistent_workers: bool | None = None,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = 4,
    multiprocessing_context: str | None = None,
    timeout: float = 0.0,
    collate_fn: Callable | None = None,
) -> WatchedLoader:
    """A DataLoader for `WindowDataset` (or `ReferenceAdapter`) items.

    `sampler` (e.g. a `SeededSampler` of one rank) replaces the seeded shuffle. `multiprocessing_context`
    may be "fork", "forkserver" or "spawn"; the dataset is safe under all three. `timeout` (s)
    bounds the wait for one batch from a worker (0 waits forever). `collate_fn` defaults to
    `collate_windows` for a `WindowDataset` and to PyTorch's default otherwise. With workers, the
    loader's `watchdog` (`LoaderWatchdog`) tells which worker is stuck or gone.
    """
    generator = torch.Generator().manual_seed(seed)  # worker base seeds: never the global RNG
    if sampler is None:
        sampler = SeededSampler(len(dataset), seed=seed, shuffle=shuffle)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    workers = num_workers > 0
    collate = collate_fn or (collate_windows if _yields_dicts(dataset) else default_collate)
    watchdog = LoaderWatchdog(num_workers, multiprocessing_context) if workers else None
    loader = WatchedLoader(
        WatchedDataset(dataset, watchdog) if watchdog else dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=WatchedCollate(collate, watchdog) if watchdog else collate,
        pin_memory=pin_memory,
        worker_init_fn=WorkerInit(watchdog) if watchdog else None,
        persistent_workers=(workers if persistent_workers is None else persistent_workers) and workers,
        prefetch_factor=prefetch_factor if workers else None,
        multiprocessing_context=multiprocessing_context if workers else None,
        generator=generator,
        timeout=timeout if workers else 0.0,
    )
    loader.watchdog = watchdog
    return loader


def _yields_dicts(dataset: Dataset) -> bool:
    from fcs_data.windows import WindowDataset

    return isinstance(dataset, WindowDataset)
