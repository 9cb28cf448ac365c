"""`RunCheckpoint`: one typed, versioned format; format-1 files of fcs 0.2 still load; foreign files refused."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from fcs_data.window_spec import WindowSpec
from fcs_train.checkpoint import (
    RunCheckpoint,
    RunState,
    StoreRef,
    load_checkpoint,
    load_world_model,
    save_checkpoint,
)
from fcs_train.config import load_config
from fcs_train.errors import CheckpointError
from fcs_train.models import PARTS, ModelSpec

TINY = load_config(preset="tiny").model
SPEC = ModelSpec(model=TINY, window=WindowSpec(num_hist=2, num_pred=1, frameskip=3, action_dim=9), proprio_dim=3)


def _weights() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SPEC.build()
    return {name: getattr(model, name).state_dict() for name in PARTS if getattr(model, name) is not None}


def _format1(weights: dict) -> dict:
    """A checkpoint exactly as fcs 0.2's trainer wrote it (format 1: the shape in three places)."""
    cfg = load_config(preset="tiny", overrides=["data.store=/data/s.zarr", "data.num_hist=2", "data.frameskip=3"])
    stats = {"mean": [0.0] * 3, "std": [1.0] * 3, "min": [-1.0] * 3, "max": [1.0] * 3, "q01": [-1.0] * 3,
             "q99": [1.0] * 3, "count": 10}
    return {"fcs_checkpoint": 1, "model": weights, "model_config": TINY.model_dump(mode="json"),
            "dims": {"proprio_dim": 3, "action_dim": 9, "num_hist": 2, "num_pred": 1, "frameskip": 3},
            "epoch": 4, "global_step": 40, "step_in_epoch": 0, "optimizers": {}, "scaler": {}, "rng": {},
            "world_size": 1, "config": cfg.model_dump(mode="json"), "store": {"path": "/data/s.zarr",
                                                                             "fingerprint": "abc123"},
            "norm_stats": {"action": {**stats, "mean": [0.0] * 9, "std": [1.0] * 9, "min": [-1.0] * 9,
                                      "max": [1.0] * 9, "q01": [-1.0] * 9, "q99": [1.0] * 9},
                           "proprio": stats},
            "best_val_loss": 0.25, "decoder_trained": True, "layout": None, "image_stats": None, "val_metrics": {}}


def test_a_format_1_checkpoint_of_fcs_0_2_loads_with_one_spec(tmp_path: Path) -> None:
    torch.save(_format1(_weights()), tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert ckpt.spec == SPEC
    assert (ckpt.state.epoch, ckpt.state.global_step, ckpt.state.best_val_loss) == (4, 40, 0.25)
    assert ckpt.store == StoreRef(path="/data/s.zarr", fingerprint="abc123") and ckpt.split.ratio == 0.9
    assert ckpt.normalizer.proprio.count == 10
    cfg = ckpt.train_config()
    assert (cfg.data.num_hist, cfg.data.frameskip, str(cfg.data.store)) == (2, 3, "/data/s.zarr")
    assert cfg.model == TINY
    model, _ = load_world_model(tmp_path / "old.pt")
    assert model.num_hist == 2 and model.action_encoder.in_chans == 27


def test_the_model_shape_is_written_once_and_rebuilds_the_model(tmp_path: Path) -> None:
    weights = _weights()
    cfg = load_config(preset="tiny", overrides=["data.num_hist=2", "data.frameskip=3"])
    ckpt = RunCheckpoint(spec=SPEC, weights=weights, state=RunState(epoch=2, global_step=7),
                         config=RunCheckpoint.config_rest(cfg))
    save_checkpoint(ckpt, tmp_path / "new.pt")
    raw = torch.load(tmp_path / "new.pt", weights_only=True)
    assert raw["fcs_checkpoint"] == 2 and {"model_config", "dims", "model"}.isdisjoint(raw)
    assert "model" not in raw["config"] and {"num_hist", "frameskip", "split_ratio"}.isdisjoint(raw["config"]["data"])
    back = load_checkpoint(tmp_path / "new.pt")
    assert back.spec == SPEC and back.state == ckpt.state and back.train_config().data.num_hist == 2
    model, _ = load_world_model(tmp_path / "new.pt")
    for name, sd in weights.items():
        for k, v in sd.items():
            assert torch.equal(getattr(model, name).state_dict()[k], v)
    assert math.isinf(back.state.best_val_loss)


def test_foreign_newer_and_damaged_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    torch.save({"predictor": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"plain\.pt: not an fcs checkpoint \(it holds a dict of predictor\)"):
        load_checkpoint(tmp_path / "plain.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"tensor\.pt: not an fcs checkpoint \(it holds a Tensor\)"):
        load_checkpoint(tmp_path / "tensor.pt")
    torch.save({"fcs_checkpoint": 3}, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match=r"newer\.pt: fcs checkpoint format 3; .*upgrade fcs"):
        load_checkpoint(tmp_path / "newer.pt")
    torch.save({"fcs_checkpoint": 2, "weights": {}}, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match=r"damaged\.pt: a damaged fcs checkpoint \(format 2\)"):
        load_checkpoint(tmp_path / "damaged.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"junk\.pt: cannot be loaded"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
