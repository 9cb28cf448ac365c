"""Closed-loop planning in the reference world, through the planning server, against baselines that can lose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import train_tiny
from PIL import Image

from fcs_data.world import world_spec_from_store
from fcs_train.planning.bundle import load_planning_model
from fcs_train.planning.closed_loop import evaluate_closed_loop
from fcs_train.planning.config import load_plan_config, solver_configs
from fcs_train.planning.evaluate import evaluate_planning
from fcs_train.planning.mpc import Planner
from fcs_train.planning.strips import LABEL, TILE, TITLE

BUDGET = ["horizon=2", "cem.samples=48", "cem.topk=6", "cem.iterations=4", "icem.samples=48", "icem.topk=6",
          "icem.iterations=4"]
SEEDS = list(range(6))


@pytest.fixture(scope="module")
def run(planning_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    store, ckpt = planning_run
    bundle = load_planning_model(ckpt, device="cpu")
    spec = world_spec_from_store(store, goal_steps=2)
    planners = solver_configs(load_plan_config(overrides=BUDGET), ["cem", "icem"])
    out = tmp_path_factory.mktemp("closed_loop")
    return bundle, spec, planners, evaluate_closed_loop(bundle, spec, planners, seeds=SEEDS, out_dir=out)


def test_the_oracle_succeeds_and_the_planner_beats_mean_and_random_actions(run):
    s = run[3].summary()
    assert s["oracle"]["success_rate"] == 1.0
    assert s["mean"]["successes"] == s["random"]["successes"] == 0
    for planner in ("cem", "icem"):  # the tiny model, 300 steps of training: weak, but it reaches goals they miss
        assert s[planner]["successes"] >= 1, (planner, s[planner])
        assert s[planner]["final_ee_distance"] < s["mean"]["final_ee_distance"]
        assert s[planner]["final_ee_distance"] < s["random"]["final_ee_distance"]


def test_every_plan_came_through_the_server_with_its_budget_and_its_flops(run):
    report = run[3]
    for e in report.episodes:
        if e.controller == "cem":
            assert e.rollouts_per_plan == 48 * 4 and e.flops_per_plan > 0 and e.seconds_per_plan > 0
        elif e.controller in ("oracle", "mean", "random"):
            assert e.flops_per_plan is None and e.seconds_per_plan is None
    s = report.summary()
    assert s["cem"]["flops_vs_reference"] == 1.0 and 0 < s["icem"]["flops_vs_reference"] < 1.0


def test_controllers_meet_the_same_scenes_and_goals(run):
    report = run[3]
    by = {(e.controller, e.seed): e for e in report.episodes}
    for seed in SEEDS:
        starts = {by[(c, seed)].start_ee_distance for c in report.controllers}
        episodes = {by[(c, seed)].episode for c in report.controllers}
        assert len(starts) == 1 and len(episodes) == 1


def test_each_episode_has_a_labelled_strip_from_start_to_goal(run):
    for e in run[3].episodes:
        with Image.open(e.strip) as im:
            assert im.size[1] == TITLE + TILE + LABEL + 4
            assert im.size[0] == (e.steps + 2) * (TILE + 2) + 2  # start, one frame per step, goal


def test_the_report_round_trips_as_json_and_a_second_run_gives_the_same_episodes(run):
    bundle, spec, planners, report = run
    data = json.loads(report.to_json())
    assert data["summary"]["cem"]["episodes"] == len(SEEDS) and data["world"]["layout"] == spec.layout
    again = evaluate_closed_loop(bundle, spec, {"cem": planners["cem"]}, seeds=SEEDS[:2], baselines=("random",))
    first = {(e.controller, e.seed): e for e in report.episodes}
    for e in again.episodes:
        old = first[(e.controller, e.seed)]
        assert (e.success, e.steps, e.final_ee_distance) == (old.success, old.steps, old.final_ee_distance)


def _logged_one_step_late(store: Path, out: Path) -> Path:
    """A copy of `store` whose observations (frames and EE state) were logged after their step's action:
    the users' early primitive-logger bug, written into the store itself, where no check of the logger's
    files can see it any more."""
    shutil.copytree(store, out)
    ends = zarr.open_array(str(out / "meta/episode_ends"), mode="r")[:]
    for name in ("data/rgb", "data/state"):
        array = zarr.open_array(str(out / name), mode="r+")
        rows = array[:]
        for start, end in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True):
            rows[start : end - 1] = rows[start + 1 : end].copy()
        array[:] = rows
    return out


def test_a_store_logged_one_step_late_fools_latent_distances_but_not_the_closed_loop(planning_run, tmp_path):
    store, ckpt = planning_run
    late = _logged_one_step_late(store, tmp_path / "late.zarr")
    late_ckpt = train_tiny(late, tmp_path / "run", **{"data.frameskip": 1, "data.split_ratio": 0.75,
                                                      "train.max_steps": 300, "train.val_every_epochs": 1000,
                                                      "log.png_every_epochs": 1000,
                                                      "train.checkpoint_every_epochs": 1000})
    cfg = load_plan_config(overrides=BUDGET)
    for checkpoint, data in ((ckpt, store), (late_ckpt, late)):  # offline, each model plans "better" than the log
        planner = Planner.from_checkpoint(checkpoint, cfg, store=data, device="cpu")
        latent = evaluate_planning(planner, data, pairs=8, seed=0, random_samples=16).summary()["distance"]
        assert latent["planned"] < latent["oracle"] < latent["mean"], (checkpoint, latent)
    spec = world_spec_from_store(store, goal_steps=2)
    seeds = list(range(24))
    good, bad = (evaluate_closed_loop(load_planning_model(c, device="cpu"), spec, solver_configs(cfg, ["cem"]),
                                      seeds=seeds, baselines=()).summary()["cem"] for c in (ckpt, late_ckpt))
    assert good["successes"] >= bad["successes"] + 4, (good, bad)  # measured: 9/24 against 2/24
    assert bad["final_ee_distance"] > 1.3 * good["final_ee_distance"], (good, bad)  # 14.9 cm against 7.6 cm
