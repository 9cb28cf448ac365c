"""Planning evaluation during training (`train.plan_eval_every`), and keeping `best.pt` by it (`train.select_by`).

A validation loss says how well the model predicts; whether it is useful is whether planning with it
reaches goals. Every `plan_eval_every` epochs the model being trained (no checkpoint is read) plans:

- in closed loop in the reference world, when the store was made by `fcs synth` (the world
  reproduces its scenes): `plan_eval_episodes` MPC episodes, always the same seeds, so epochs compare;
- otherwise offline, on the store's validation episodes: success is where the planned actions put
  the EE (see `evaluate.py`).

The figures (`PLAN_FIGURES`) go into the epoch row, metrics.jsonl, TensorBoard and W&B like every
other, and `PlanSelection` decides whether this epoch's model is the best so far by one of them.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcs_data.stats import Normalizer
from fcs_data.store import Store
from fcs_train.checkpoint import RunState, StoreRef
from fcs_train.config import TrainConfig, TrainSection
from fcs_train.dist import DistInfo, mean_across
from fcs_train.models import VWorldModel
from fcs_train.planning.bundle import PlanningModel, model_image_shape
from fcs_train.planning.config import PlanConfig, load_plan_config

PLAN_FIGURES = ("plan_success_rate", "plan_ee_distance", "plan_closed_loop", "plan_seconds")


def plan_eval_due(train: TrainSection, epoch: int, stopped: bool) -> bool:
    """Whether this epoch ends with a planning evaluation."""
    return train.plan_eval_every is not None and (stopped or epoch % train.plan_eval_every == 0)


def training_bundle(model: VWorldModel, store: Store, normalizer: Normalizer, cfg: TrainConfig,
                    device: torch.device) -> PlanningModel:
    """The model being trained as a `PlanningModel`, with the statistics and layout it is trained with."""
    d = cfg.data
    return PlanningModel(
        model=model, checkpoint=Path(f"<training: {cfg.train.run_dir}>"), layout=store.layout,
        action_stats=normalizer.action, proprio_stats=normalizer.proprio, frameskip=d.frameskip, num_hist=d.num_hist,
        image_shape=model_image_shape(store.layout, d.model_dump()), device=device, trained_store=StoreRef.of(store),
        split={"split_ratio": d.split_ratio, "split_seed": d.split_seed}, cameras=d.cameras, fuse=d.fuse)


def _evaluate(bundle: PlanningModel, store: Store, plan: PlanConfig, episodes: int) -> dict[str, float]:
    from fcs_data.world import WorldError, world_spec_from_store

    try:
        spec = world_spec_from_store(store, goal_steps=plan.horizon * bundle.frameskip)
    except WorldError:
        spec = None
    if spec is not None:
        from fcs_train.planning.closed_loop import evaluate_closed_loop

        report = evaluate_closed_loop(bundle, spec, {"planner": plan}, seeds=list(range(episodes)), baselines=())
        row = report.summary()["planner"]
        return {"plan_success_rate": row["success_rate"], "plan_ee_distance": row["final_ee_distance"],
                "plan_closed_loop": 1.0}
    from fcs_train.planning.evaluate import evaluate_planning
    from fcs_train.planning.mpc import Planner

    report = evaluate_planning(Planner(bundle, plan), store.path, pairs=episodes)
    s = report.summary()
    if s["success_rate"] is None:
        return {"plan_success_rate": math.nan, "plan_ee_distance": math.nan, "plan_closed_loop": 0.0}
    return {"plan_success_rate": s["success_rate"]["planned"], "plan_ee_distance": s["ee_error"]["planned"],
            "plan_closed_loop": 0.0}


def plan_eval_during_training(model: VWorldModel, store: Store, normalizer: Normalizer, cfg: TrainConfig,
                              device: torch.device, info: DistInfo) -> dict[str, float]:
    """`PLAN_FIGURES` for the model as it is now: computed by rank 0, the same on every rank. The model is
    left in the mode it was in."""
    values = dict.fromkeys(PLAN_FIGURES, 0.0)
    if info.is_main:
        t0 = time.perf_counter()
        training = model.training
        plan = load_plan_config(overrides=cfg.train.plan_eval_set)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # out-of-distribution notes are the evaluation's business here
                values = _evaluate(training_bundle(model, store, normalizer, cfg, device), store, plan,
                                   cfg.train.plan_eval_episodes)
        finally:
            model.train(training)
        values["plan_seconds"] = time.perf_counter() - t0
    return mean_across(values, info, weight=1.0 if info.is_main else 0.0)


class PlanSelection:
    """Keeps `best.pt` by a planning figure: the highest success rate (ties: the lower EE distance), or the
    lowest EE distance. The best score so far (lower is better) lives in the run's `RunState.plan_best`,
    so a resumed run compares with the epochs before it."""

    def __init__(self, select_by: str, state: RunState):
        self.select_by, self.state = select_by, state

    def _score(self, row: dict[str, Any]) -> list[float] | None:
        success, distance = row.get("plan_success_rate"), row.get("plan_ee_distance")
        if success is None or distance is None or not np.isfinite([success, distance]).all():
            return None
        return [-success, distance] if self.select_by == "plan_success_rate" else [distance]

    def improved(self, row: dict[str, Any]) -> bool:
        """Whether the epoch `row` beats every earlier one (and remember it in the state if so)."""
        score = self._score(row)
        best = self.state.plan_best
        if score is None or (best is not None and score >= best):
            return False
        self.state.plan_best = score
        return True
