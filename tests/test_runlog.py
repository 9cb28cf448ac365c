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


def test_wandb_gets_the_config_and_the_scalars_and_is_finished(tmp_path: Path, recorder) -> None:
    cfg = _cfg(tmp_path, **{"log.wandb": "true", "log.wandb_project": "cubes"})
    log = RunLog(cfg, enabled=True, show_progress=False)
    log.record("train", {"step": 7, "loss": 0.125})
    log.close()
    (run,) = recorder.instances
    assert run.kwargs["project"] == "cubes" and run.kwargs["config"] == cfg.model_dump(mode="json")
    assert run.kwargs["dir"] == str(RunDir.of_config(cfg).root)
    assert run.logged == [({"train/loss": 0.125}, 7)] and run.closed


def test_a_tracker_that_is_not_installed_is_skipped_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it raises ImportError
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.warns(UserWarning, match="tensorboard is not installed") as caught:
        log = RunLog(_cfg(tmp_path, **{"log.tensorboard": "true", "log.wandb": "true"}), enabled=True,
                     show_progress=False)
    assert any("wandb is not installed" in str(w.message) for w in caught)
    log.record("train", {"step": 1, "loss": 1.0})
    log.close()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"kind": "train"') == 1


def test_other_ranks_write_nothing(tmp_path: Path, recorder) -> None:
    log = RunLog(_cfg(tmp_path, **{"log.tensorboard": "true"}), enabled=False, show_progress=False)
    log.record("train", {"step": 1, "loss": 1.0})
    log.close()
    assert not recorder.instances and not (tmp_path / "run").exists()
