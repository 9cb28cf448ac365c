"""Planning evaluation during training: figures logged per epoch, and best.pt kept by one of them."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from helpers import train_tiny
from pydantic import ValidationError

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.synth import synthesize
from fcs_train.checkpoint import RunState, load_checkpoint
from fcs_train.config import load_config
from fcs_train.planning.during_training import PlanSelection

PLAN = {"train.plan_eval_every": 1, "train.plan_eval_episodes": 2,
        "train.plan_eval_set": "[horizon=2, cem.samples=16, cem.topk=4, cem.iterations=2]",
        "data.frameskip": 1, "data.split_ratio": 0.75, "train.max_steps": 12, "train.batch_size": 8,
        "log.png_every_epochs": 100}


def _store(root: Path, synthetic: bool = True) -> Path:
    src = synthesize(root / "src", episodes=8, min_len=16, max_len=20, seed=31, layout="franka_cube_stack_primitive")
    if not synthetic:  # property_params without fcs synth's keys: not a store the world can reproduce
        for ep in sorted(src.glob("0*/property_params.pkl")):
            params = pickle.loads(ep.read_bytes())
            params.pop("cube_colors")
            ep.write_bytes(pickle.dumps(params))
    return convert_to_zarr(src, root / "s.zarr", workers=1).store


def _records(run: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def test_a_synthetic_store_is_evaluated_in_closed_loop_every_epoch_and_best_pt_follows_the_figure(tmp_path):
    run = tmp_path / "run"
    train_tiny(_store(tmp_path), run, **PLAN, **{"train.select_by": "plan_ee_distance"})
    plans = _records(run, "plan")
    assert len(plans) >= 2 and [p["epoch"] for p in plans] == sorted({p["epoch"] for p in plans})
    for p in plans:
        assert p["plan_closed_loop"] == 1.0 and 0.0 <= p["plan_success_rate"] <= 1.0 and p["plan_ee_distance"] > 0
    best_epoch = min(plans, key=lambda p: p["plan_ee_distance"])["epoch"]
    best = load_checkpoint(run / "checkpoints" / "best.pt").state
    assert best.epoch in (best_epoch, best_epoch + 1)  # the epoch counter moves on before the save
    assert best.plan_best == [min(p["plan_ee_distance"] for p in plans)]
    epochs = [json.loads(line) for line in (run / "epochs.log").read_text().splitlines()]
    assert all("plan_success_rate" in e for e in epochs)


def test_a_store_the_world_cannot_reproduce_is_evaluated_offline_on_its_validation_episodes(tmp_path):
    run = tmp_path / "run"
    train_tiny(_store(tmp_path, synthetic=False), run, **{**PLAN, "train.max_steps": 6})
    (plan,) = _records(run, "plan")
    assert plan["plan_closed_loop"] == 0.0 and 0.0 <= plan["plan_success_rate"] <= 1.0 and plan["plan_ee_distance"] > 0


def test_selecting_by_a_planning_figure_needs_the_planning_evaluation():
    with pytest.raises(ValidationError, match="select_by plan_success_rate needs plan_eval_every"):
        load_config(preset="tiny", overrides=["train.select_by=plan_success_rate"])


def test_the_success_rate_selects_and_the_ee_distance_breaks_ties():
    state = RunState()
    pick = PlanSelection("plan_success_rate", state)
    assert pick.improved({"plan_success_rate": 0.25, "plan_ee_distance": 0.10})
    assert not pick.improved({"plan_success_rate": 0.25, "plan_ee_distance": 0.12})
    assert pick.improved({"plan_success_rate": 0.25, "plan_ee_distance": 0.08})
    assert pick.improved({"plan_success_rate": 0.5, "plan_ee_distance": 0.3})
    assert not pick.improved({"plan_success_rate": float("nan"), "plan_ee_distance": 0.01})
    assert not pick.improved({"val_loss": 0.1})
    assert state.plan_best == [-0.5, 0.3]
