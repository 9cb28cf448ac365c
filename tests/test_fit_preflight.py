"""`fcs train`'s memory check before the first step (fcs_train.fit.preflight)."""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.windows import WindowDataset
from fcs_train.config import load_config
from fcs_train.fit import FCS, Budget, StepShape, predict
from fcs_train.fit.preflight import DoesNotFit, device_budget
from fcs_train.trainer import Trainer

MiB = 1 << 20


@pytest.fixture(scope="module")
def store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("preflight") / "s.zarr", workers=1).store


def _trainer(store: Path, run_dir: Path, **sets: object) -> Trainer:
    base = {"data.store": store, "train.run_dir": run_dir, "data.num_workers": 0, "train.num_rollouts": 0, **sets}
    cfg = load_config(preset="tiny", overrides=[f"{k}={v}" for k, v in base.items()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Trainer(cfg, show_progress=False)


def test_training_refuses_a_config_predicted_not_to_fit_and_names_the_largest_batch_that_does(
        store: Path, tmp_path: Path) -> None:
    with pytest.raises(DoesNotFit) as e:
        _trainer(store, tmp_path / "run", **{"train.memory_limit": "40MiB", "train.batch_size": 16})
    line = str(e.value)
    assert "\n" not in line
    assert "does not fit" in line and "a 40MiB limit has 0.04 GiB" in line and "--set train.batch_size=" in line
    assert not (tmp_path / "run" / "checkpoints").exists()
    best = int(re.search(r"the largest batch that fits is (\d+)", line).group(1))
    assert 2 <= best < 16
    cfg = load_config(preset="tiny", overrides=[f"data.store={store}"])
    h, w = WindowDataset(store, num_hist=3, frameskip=5)[0]["visual"].shape[-2:]
    shape = StepShape(best, 3, 5, frame_shape=(h, w), proprio_dim=3, action_dim=9)
    budget = Budget("a 40MiB limit", 40 * MiB, overhead=0)
    assert budget.fits_run(predict(cfg, shape, FCS))
    assert not budget.fits_run(predict(cfg, replace(shape, batch_size=best + 1), FCS))


def test_not_even_batch_one_fitting_says_so(store: Path, tmp_path: Path) -> None:
    with pytest.raises(DoesNotFit, match="does not fit even at batch 1"):
        _trainer(store, tmp_path / "run", **{"train.memory_limit": "1MiB"})


def test_memory_check_warn_trains_anyway_and_a_fitting_run_says_it_fits(store: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    trainer = _trainer(store, tmp_path / "a", **{"train.memory_limit": "1MiB", "train.memory_check": "warn"})
    trainer.close()
    assert "trying anyway" in capsys.readouterr().out
    trainer = _trainer(store, tmp_path / "b", **{"train.memory_limit": "8GiB"})
    trainer.close()
    assert "memory check: predicted peak" in capsys.readouterr().out


def test_there_is_nothing_to_check_on_a_cpu_without_a_limit() -> None:
    cfg = load_config(preset="tiny")
    assert device_budget(cfg, torch.device("cpu")) is None
    with pytest.raises(DoesNotFit, match="memory_limit"):
        device_budget(cfg.model_copy(update={"train": cfg.train.model_copy(update={"memory_limit": "lots"})}),
                      torch.device("cpu"))
