"""TensorBoard and W&B: one W&B run kept across resumes, named and tagged, scalars and pictures to both."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import train_tiny

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_train.config import load_config
from fcs_train.errors import TrackerError
from fcs_train.trackers import check_trackers


class FakeWandb(types.ModuleType):
    """Records what fcs asks of `wandb` (no network): init kwargs, logged keys, images, finish."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.inits: list[dict] = []
        self.logged: list[tuple[dict, int]] = []
        self.finished = 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        run_id = kwargs.get("id") or f"run{len(self.inits)}"
        outer = self

        class Run:
            id = run_id
            url = f"https://wandb.example/{run_id}"

            def log(self, values: dict, step: int) -> None:
                outer.logged.append((values, step))

            def finish(self) -> None:
                outer.finished += 1

        return Run()

    class Image:
        def __init__(self, path: str, caption: str = "") -> None:
            self.path, self.caption = path, caption


class FakeWriter:
    calls: ClassVar[list[tuple[str, str, int]]] = []

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir

    def add_scalar(self, key: str, value: float, step: int) -> None:
        FakeWriter.calls.append(("scalar", key, step))

    def add_image(self, key: str, img, step: int, dataformats: str) -> None:
        assert img.ndim == 3 and dataformats == "HWC"
        FakeWriter.calls.append(("image", key, step))

    def close(self) -> None:
        pass


@pytest.fixture
def store(pristine_v1: Path, tmp_path: Path) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path / "s.zarr", workers=1).store


def test_a_tracker_that_is_not_installed_is_an_error_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(TrackerError, match=r"log.wandb=true but wandb is not installed: pip install 'fcs\[wandb\]'"):
        check_trackers(load_config(overrides=["log.wandb=true"]))
    check_trackers(load_config())


def test_one_wandb_run_is_kept_across_resume_with_its_name_tags_and_pictures(
        store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tb = types.ModuleType("torch.utils.tensorboard")
    tb.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", tb)
    run = tmp_path / "run"
    sets = {"log.wandb": "true", "log.tensorboard": "true", "log.wandb_name": "fs5-h3", "log.wandb_group": "sweep",
            "log.wandb_tags": "[franka,tiny]", "log.wandb_entity": "lab", "train.max_steps": 4,
            "log.every_steps": 2}
    train_tiny(store, run, **sets)
    first = fake.inits[0]
    assert (first["name"], first["group"], first["tags"], first["entity"]) == ("fs5-h3", "sweep", ["franka", "tiny"],
                                                                              "lab")
    assert json.loads((run / "wandb.json").read_text())["id"] == "run1"
    keys = {k for values, _ in fake.logged for k in values}
    assert "train/loss" in keys and any(k.startswith("val/") for k in keys)
    assert any(isinstance(v, FakeWandb.Image) for values, _ in fake.logged for v in values.values())
    assert ("image", "val/predictions", 4) in FakeWriter.calls
    assert any(c[0] == "scalar" and c[1] == "train/loss" for c in FakeWriter.calls)

    from fcs_train.trainer import Trainer

    cfg = load_config(preset="tiny", overrides=[f"data.store={store}", f"train.run_dir={run}", "data.num_workers=0",
                                                "train.num_rollouts=0", "train.max_steps=6",
                                                *(f"{k}={v}" for k, v in sets.items() if k != "train.max_steps")])
    trainer = Trainer(cfg, resume=True, show_progress=False)
    try:
        trainer.fit()
    finally:
        trainer.close()
    again = fake.inits[1]
    assert again["id"] == "run1" and again["resume"] == "must"
    assert fake.finished == 2
