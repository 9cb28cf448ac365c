"""`make_loader`: a DataLoader over a `WindowDataset` with defaults that hold up in training.

- shuffling through a seeded `torch.Generator` (never the global RNGs), so an epoch's order is a
  function of `(seed, epoch)` and nothing else (`SeededSampler`);
- workers that each use one intra-op thread, persistent across epochs, with a timeout;
- pinned memory when CUDA is available;
- a collate that stacks frames in their stored HWC layout (one memcpy) and returns
  `visual (B, F, 3, H, W)` as a view, so no transpose copy happens in the worker.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate


class SeededSampler(Sampler[int]):
    """Shuffled (or sequential) indices whose order is a function of `(seed, epoch)` only.

    Each `iter()` uses the current epoch and then advances it, so the order does not depend on
    how many workers there are, whether they persist, or what else drew random numbers; `set_epoch`
    puts it anywhere (the trainer does, to resume mid-run). Mirrors `DistributedSampler`.
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True):
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        if not self.shuffle:
            return iter(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())


def collate_windows(items: list[dict]) -> dict:
    """Batch `WindowDataset` items; `visual` becomes `(B, F, [C,] 3, H, W)` uint8 (HWC in memory)."""
    visual = default_collate([it["visual"].movedim(-3, -1) for it in items]).movedim(-1, -3)
    rest = default_collate([{k: v for k, v in it.items() if k != "visual"} for it in items])
    return {"visual": visual, **rest}


def worker_init(worker_id: int) -> None:
    """One intra-op thread per worker: N workers on N cores, no oversubscription."""
    torch.set_num_threads(1)


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
) -> DataLoader:
    """A DataLoader for `WindowDataset` (or `ReferenceAdapter`) items.

    `sampler` (e.g. a `DistributedSampler`) replaces the seeded shuffle. `multiprocessing_context`
    may be "fork", "forkserver" or "spawn"; the dataset is safe under all three. `timeout` (s)
    bounds the wait for one batch from a worker (0 waits forever). `collate_fn` defaults to
    `collate_windows` for a `WindowDataset` and to PyTorch's default otherwise.
    """
    generator = torch.Generator().manual_seed(seed)  # worker base seeds: never the global RNG
    if sampler is None:
        sampler = SeededSampler(len(dataset), seed=seed, shuffle=shuffle)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_fn or (collate_windows if _yields_dicts(dataset) else None),
        pin_memory=pin_memory,
        worker_init_fn=worker_init if workers else None,
        persistent_workers=(workers if persistent_workers is None else persistent_workers) and workers,
        prefetch_factor=prefetch_factor if workers else None,
        multiprocessing_context=multiprocessing_context if workers else None,
        generator=generator,
        timeout=timeout if workers else 0.0,
    )


def _yields_dicts(dataset: Dataset) -> bool:
    from fcs_data.windows import WindowDataset

    return isinstance(dataset, WindowDataset)
