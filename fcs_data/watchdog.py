"""`LoaderWatchdog`: what each DataLoader worker of a loader is doing, seen from the main process.

Every worker records its pid when it starts, and for the batch it is reading the time it started
it (0 once the batch is collated), in memory shared with the main process. When the DataLoader's
own `timeout` expires or a worker vanishes, the main process asks the watchdog which worker it is:
the one busy the longest (`stuck`), or one whose process is gone (`dead`), by id and pid. Nothing
of the DataLoader's private state is read.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info


@dataclass(frozen=True)
class WorkerState:
    worker: int
    pid: int
    busy_s: float  # seconds on its current batch (0: idle)


class LoaderWatchdog:
    """Shared per-worker state of one loader of `num_workers` workers (created in the main process,
    before the workers start, from the loader's `multiprocessing_context`)."""

    def __init__(self, num_workers: int, context: str | None = None):
        ctx = multiprocessing.get_context(context)
        self.num_workers = num_workers
        self._pid = ctx.RawArray("q", num_workers)  # each slot written by its worker only
        self._since = ctx.RawArray("d", num_workers)  # time.monotonic() its batch started, 0 when idle

    # -- in the worker ---------------------------------------------------------------------------
    def worker_started(self, worker: int) -> None:
        self._pid[worker] = os.getpid()
        self._since[worker] = 0.0

    def reading(self) -> None:
        info = get_worker_info()
        if info is not None and not self._since[info.id]:
            self._since[info.id] = time.monotonic()

    def batch_done(self) -> None:
        info = get_worker_info()
        if info is not None:
            self._since[info.id] = 0.0

    # -- in the main process ---------------------------------------------------------------------
    def workers(self) -> list[WorkerState]:
        now = time.monotonic()
        return [WorkerState(w, int(self._pid[w]), now - self._since[w] if self._since[w] else 0.0)
                for w in range(self.num_workers) if self._pid[w]]

    def stuck(self) -> WorkerState | None:
        """The worker that has been on its batch the longest, if any is busy."""
        busy = [w for w in self.workers() if w.busy_s > 0]
        return max(busy, key=lambda w: w.busy_s) if busy else None

    def dead(self) -> list[WorkerState]:
        """Workers whose process is gone (or a zombie: ended, not yet reaped)."""
        import psutil

        out = []
        for w in self.workers():
            try:
                gone = psutil.Process(w.pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                gone = True
            if gone:
                out.append(w)
        return out


class WatchedDataset(Dataset):
    """`dataset` whose items tell the watchdog that their worker is reading."""

    def __init__(self, dataset: Dataset, watchdog: LoaderWatchdog):
        self.dataset, self.watchdog = dataset, watchdog

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        self.watchdog.reading()
        return self.dataset[i]


class WatchedCollate:
    """`collate_fn` that tells the watchdog when its worker's batch is done."""

    def __init__(self, collate_fn: Callable[[list], Any], watchdog: LoaderWatchdog):
        self.collate_fn, self.watchdog = collate_fn, watchdog

    def __call__(self, items: list) -> Any:
        try:
            return self.collate_fn(items)
        finally:
            self.watchdog.batch_done()


class WorkerInit:
    """`worker_init_fn`: one intra-op thread per worker (N workers on N cores), the pid recorded, and
    SIGUSR1 / SIGINT ignored: SLURM's pre-emption warning and Ctrl-C reach every process of the job, and
    a worker that died of them would turn the main process's checkpoint-and-exit into a worker failure
    (SIGTERM stays fatal: the DataLoader itself ends workers with it)."""

    def __init__(self, watchdog: LoaderWatchdog):
        self.watchdog = watchdog

    def __call__(self, worker_id: int) -> None:
        torch.set_num_threads(1)
        for s in (signal.SIGUSR1, signal.SIGINT):  # the main process stops the run (and them)
            signal.signal(s, signal.SIG_IGN)
        self.watchdog.worker_started(worker_id)
