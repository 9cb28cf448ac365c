"""Offline planning evaluation on the tiny model trained on a synthetic primitive-logger store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.synth import synthesize
from fcs_train.planning.bundle import PlanningError
from fcs_train.planning.config import load_plan_config
from fcs_train.planning.evaluate import choose_pairs, evaluate_planning
from fcs_train.planning.mpc import Planner

BUDGET = ["horizon=2", "cem.samples=100", "cem.iterations=10"]


@pytest.fixture(scope="module")
def report(planning_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    store, ckpt = planning_run
    planner = Planner.from_checkpoint(ckpt, load_plan_config(overrides=BUDGET), device="cpu")
    return evaluate_planning(planner, store, pairs=10, seed=0, out_dir=tmp_path_factory.mktemp("plan_eval"))


def test_success_is_where_the_actions_put_the_ee_and_the_baselines_can_lose(report):
    s = report.summary()
    assert report.episodes_are == "validation" and {p.episode for p in report.pairs} <= set(report.episodes)
    assert report.measured and s["success_rate"]["oracle"] == 1.0  # the logged actions reach the logged goal
    assert s["ee_error"]["oracle"] < 1e-3
    assert s["success_rate"]["mean"] < 0.5 and s["success_rate"]["random"] < 0.1
    assert s["ee_error"]["planned"] < s["ee_error"]["mean"] and s["ee_error"]["planned"] < s["ee_error"]["random"]
    assert s["success_rate"]["planned"] > s["success_rate"]["random"]
    d = s["distance"]  # the model's own latent distance: a diagnostic, reported beside
    assert d["planned"] < d["mean"] and d["planned"] < d["random"]


def test_a_v1_store_s_success_comes_from_the_panda_s_forward_kinematics(planning_fs2):
    store, ckpt = planning_fs2
    planner = Planner.from_checkpoint(ckpt, load_plan_config(overrides=["horizon=2", "cem.samples=8", "cem.topk=2",
                                                                        "cem.iterations=1"]), device="cpu")
    r = evaluate_planning(planner, store, pairs=3)
    assert r.measured and not r.notes
    assert all(p.ee_error["oracle"] < 1e-4 and p.success["oracle"] == 1.0 for p in r.pairs)


def test_planned_actions_approach_the_logged_ones(report):
    s = report.summary()
    planned, mean = s["final_action_error"]["planned"]["end_pos"], s["final_action_error"]["mean"]["end_pos"]
    assert report.units["end_pos"] == "mm"
    assert planned < 0.8 * mean


def test_the_report_has_a_png_per_pair_and_round_trips_as_json(report):
    cell = 128  # the tiny model's 64 px frames, scaled up so the labelled grid stays legible
    for p in report.pairs:
        with Image.open(p.png) as im:  # start, H = 2 frames, goal; decoded plan above the logged frames; labels
            assert 4 * cell < im.width < 4 * cell + 300 and 2 * cell < im.height < 2 * cell + 80
    data = json.loads(report.to_json())
    assert len(data["pairs"]) == 10 and data["summary"]["pairs"] == 10
    assert 0.0 <= data["summary"]["success_rate"]["planned"] <= 1.0


def test_another_store_of_the_same_layout_is_held_out_data(planning_run, tmp_path):
    src = synthesize(tmp_path / "src", episodes=2, min_len=16, max_len=18, seed=99,
                     layout="franka_cube_stack_primitive")
    other = convert_to_zarr(src, tmp_path / "other.zarr", workers=1).store
    planner = Planner.from_checkpoint(planning_run[1], load_plan_config(overrides=[*BUDGET, "cem.iterations=2"]),
                                      device="cpu")
    r = evaluate_planning(planner, other, pairs=2)
    assert r.episodes_are.startswith("all") and r.episodes == [0, 1]
    assert any("not the store the model was trained on" in n for n in r.notes)


def test_pairs_need_enough_steps_and_the_error_says_how_many():
    with pytest.raises(PlanningError, match=r"the 12 steps a pair needs"):
        choose_pairs({0: 11, 1: 5}, 4, horizon=3, frameskip=2, num_hist=3, seed=0)
    pairs = choose_pairs({0: 12, 1: 13}, 10, horizon=3, frameskip=2, num_hist=3, seed=0)
    assert pairs == [(0, 4), (1, 4), (1, 5)]  # every start with 2 earlier frames and the goal + fs inside
