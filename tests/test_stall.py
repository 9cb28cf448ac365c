"""A run that stops making progress is stopped with the culprit named, its stacks on disk and a checkpoint."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.windows import WindowDataset
from fcs_train.checkpoint import load_checkpoint
from fcs_train.config import load_config
from fcs_train.errors import LoaderFailure, StallError
from fcs_train.stall import WorkerReport, culprit
from fcs_train.trainer import Trainer

_real_getitem = WindowDataset.__getitem__
_calls: dict[int, int] = {}  # __getitem__ calls per process


@pytest.fixture(scope="module")
def store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("stall") / "s.zarr", workers=1).store


def _run(store: Path, run_dir: Path) -> None:
    sets = {"data.store": store, "data.num_workers": 1, "data.multiprocessing_context": "fork", "data.num_hist": 2,
            "data.frameskip": 2, "train.run_dir": run_dir, "train.batch_size": 4, "train.num_rollouts": 0,
            "train.max_steps": 1000, "train.loader_timeout": 0, "train.stall_timeout": 4}
    trainer = Trainer(load_config(preset="tiny", overrides=[f"{k}={v}" for k, v in sets.items()]), show_progress=False)
    try:
        trainer.fit()
    finally:
        trainer.close()


def _stop_itself(self, i):
    """In the worker: after six batches, the process stops (SIGSTOP), as a worker frozen by the OS."""
    _calls[os.getpid()] = n = _calls.get(os.getpid(), 0) + 1
    if n == 25 and os.getpid() != _parent:
        os.kill(os.getpid(), signal.SIGSTOP)
    return _real_getitem(self, i)


def _hang(self, i):
    """In the worker: after six batches, a read that never returns (a dead network mount)."""
    _calls[os.getpid()] = n = _calls.get(os.getpid(), 0) + 1
    if n >= 25 and os.getpid() != _parent:
        time.sleep(3600)
    return _real_getitem(self, i)


_parent = os.getpid()


@pytest.mark.parametrize("getitem,status", [(_stop_itself, "stopped"), (_hang, "sleeping on one batch")])
def test_a_stopped_or_stuck_worker_is_named_its_stacks_written_and_a_checkpoint_kept(
        store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, getitem, status: str) -> None:
    monkeypatch.setattr(WindowDataset, "__getitem__", getitem)
    _calls.clear()
    t0 = time.monotonic()
    with pytest.raises(StallError) as info:
        _run(store, tmp_path / "run")
    message = str(info.value)
    assert time.monotonic() - t0 < 90
    assert "train.stall_timeout" in message and f"of the train loader is {status}" in message
    assert "worker 0 (pid " in message and "continue with fcs train --resume" in message
    report = next((tmp_path / "run").glob("stall-*.txt"))
    text = report.read_text()
    assert str(report) in message and "threads of the main process" in text and "train loader worker 0" in text
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt").state.global_step >= 1
    assert isinstance(info.value, LoaderFailure)


def test_the_culprit_is_a_stopped_worker_first_then_the_longest_busy() -> None:
    busy = WorkerReport("train", 0, 10, "sleeping", 50.0)
    busier = WorkerReport("train", 1, 11, "running", 80.0)
    stopped = WorkerReport("validation", 0, 12, "stopped", 0.0)
    assert culprit([busy, busier, stopped]) is stopped
    assert culprit([busy, busier]) is busier
    assert culprit([WorkerReport("train", 0, 10, "sleeping", 0.0)]) is None
