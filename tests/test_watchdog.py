"""`LoaderWatchdog`: the main process learns which DataLoader worker is stuck or gone, and its pid."""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch.utils.data import Dataset

from fcs_data.loader import make_loader


class _Items(Dataset):
    """Index `bad` stalls (or kills its worker); the others are instant."""

    def __init__(self, bad: int, kill: bool = False):
        self.bad, self.kill = bad, kill

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == self.bad:
            if self.kill:
                os._exit(3)
            time.sleep(4)  # longer than the loader's timeout, short enough to end the workers quickly
        return torch.tensor([i])


def test_a_timeout_names_the_worker_busy_the_longest_with_its_pid() -> None:
    loader = make_loader(_Items(bad=0), batch_size=2, shuffle=False, num_workers=2, multiprocessing_context="fork",
                         timeout=2)
    it = iter(loader)
    with pytest.raises(RuntimeError, match="timed out"):
        next(it)
    stuck = loader.watchdog.stuck()
    assert stuck is not None and stuck.worker == 0 and stuck.busy_s >= 2  # index 0 is worker 0's first batch
    assert stuck.pid in {w.pid for w in loader.watchdog.workers()} and stuck.pid != os.getpid()
    assert not loader.watchdog.dead()
    del it


def test_a_worker_that_died_is_named_by_the_watchdog() -> None:
    loader = make_loader(_Items(bad=2, kill=True), batch_size=2, shuffle=False, num_workers=2,
                         multiprocessing_context="fork", timeout=30)
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        list(loader)
    dead = loader.watchdog.dead()
    assert [w.worker for w in dead] == [1], "index 2 is in worker 1's first batch"


def test_without_workers_there_is_no_watchdog() -> None:
    assert make_loader(_Items(bad=-1), batch_size=2, num_workers=0).watchdog is None
