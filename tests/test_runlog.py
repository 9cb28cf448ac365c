"""What a run shows besides metrics.jsonl: TensorBoard and W&B scalars when asked for (fakes, no network)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

from fcs_train.config import load_config
from fcs_train.run_dir import RunDir
from fcs_train.runlog import RunLog


def _cfg(tmp_path: Path, **sets):
    return load_config(preset="tiny", overrides=[f"train.run_dir={tmp_path / 'run'}",
                                                 *(f"{k}={v}" for k, v in sets.items())])


class _Recorder:
    """Stands in for `SummaryWriter` and for a W&B run: keeps what it is given."""

    instances: ClassVar[list[_Recorder]] = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.scalars, self.logged, self.closed = args, kwargs, [], [], False
        _Recorder.instances.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def log(self, values: dict, step: int) -> None:
        self.logged.append((values, step))

    def close(self) -> None:
        self.closed = True

    finish = close


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[_Recorder]:
    _Recorder.instances = []
    tensorboard = types.ModuleType("torch.utils.tensorboard")
    tensorboard.SummaryWriter = _Recorder
    wandb = types.ModuleType("wandb")
    wandb.init = _Recorder
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", tensorboard)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    return _Recorder


def test_tensorboard_gets_every_scalar_of_every_record_at_its_step(tmp_path: Path, recorder) -> None:
    cfg = _cfg(tmp_path, **{"log.tensorboard": "true"})
    log = RunLog(cfg, enabled=True, show_progress=False)
    log.record("train", {"step": 3, "epoch": 1, "loss": 0.5, "note": "text"})
    log.record("val", {"step": 4, "epoch": 1, "z_visual_loss": 0.25})
    log.close()
    (writer,) = recorder.instances
    assert writer.args == (str(RunDir.of_config(cfg).tensorboard),)
    assert writer.scalars == [("train/epoch", 1, 3), ("train/loss", 0.5, 3), ("val/epoch", 1, 4),
                              ("val/z_visual_loss", 0.25, 4)]
    assert writer.closed


def test_other_ranks_write_nothing(tmp_path: Path, recorder) -> None:
    log = RunLog(_cfg(tmp_path, **{"log.tensorboard": "true"}), enabled=False, show_progress=False)
    log.record("train", {"step": 1, "loss": 1.0})
    log.close()
    assert not recorder.instances and not (tmp_path / "run").exists()


def test_a_full_disk_during_a_metrics_write_names_the_file_and_leaves_no_torn_line(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    import errno
    import os

    from fcs_train import runlog

    path = tmp_path / "metrics.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        runlog.append_line(fd, path, '{"step": 1}')
        real_write = os.write
        monkeypatch.setattr(runlog.os, "write", lambda f, data: real_write(f, data[: len(data) // 2]))
        with pytest.raises(OSError) as caught:
            runlog.append_line(fd, path, '{"step": 2, "loss": 0.123456789}')
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_text() == '{"step": 1}\n'
