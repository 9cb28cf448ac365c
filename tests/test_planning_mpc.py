"""Planner (MPC): one test per trap the users' planning server fell into."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fcs_data.store import open_store
from fcs_train.planning.bundle import PlanInputError, PlanningError, load_planning_model
from fcs_train.planning.config import PlanConfig, load_plan_config
from fcs_train.planning.mpc import Planner

SMALL = ["cem.samples=24", "cem.topk=4", "cem.iterations=2", "horizon=3"]


@pytest.fixture(scope="module")
def fs2(planning_fs2: tuple[Path, Path]):
    """The frameskip-2 bundle (dropout 0.1) and frames/proprio/actions of its store's first episode."""
    store, ckpt = planning_fs2
    bundle = load_planning_model(ckpt, device="cpu")
    s = open_store(store)
    n = int(s.episode_lengths[0])
    frames = s.read_frames(np.arange(n))
    state = s.read_rows("state", 0, n)
    return bundle, frames, state[:, s.layout.proprio_slice], s.read_rows("action", 0, n)


def _planner(bundle, *overrides: str) -> Planner:
    return Planner(bundle, load_plan_config(overrides=[*SMALL, *overrides]))


def _capture_starts(planner: Planner, monkeypatch) -> list[torch.Tensor]:
    """The initial mean each solve starts from."""
    starts: list[torch.Tensor] = []
    real = planner._solve
    monkeypatch.setattr(planner, "_solve", lambda start, *a: starts.append(start.clone()) or real(start, *a))
    return starts


def test_plans_run_in_eval_mode_even_when_the_model_was_left_training(fs2):
    bundle, frames, proprio, _ = fs2
    planner = _planner(bundle)
    planner.reset(frames[20], proprio[20])
    reference = planner.plan(frames[0], proprio[0]).plan
    bundle.model.train()  # dropout 0.1 would change every rollout
    planner.reset(frames[20], proprio[20])
    again = planner.plan(frames[0], proprio[0]).plan
    assert not bundle.model.training
    np.testing.assert_array_equal(reference, again)


def test_plans_are_deterministic_under_a_seed(fs2):
    bundle, frames, proprio, _ = fs2
    plans = []
    for seed in (3, 3, 4):
        planner = _planner(bundle, f"seed={seed}")
        planner.reset(frames[20], proprio[20])
        plans.append(planner.plan(frames[0], proprio[0]).plan)
    np.testing.assert_array_equal(plans[0], plans[1])
    assert not np.array_equal(plans[0], plans[2])


@pytest.mark.parametrize("executed", [1, 2])  # frameskip 2: one raw action (the users' trap), one planning step
def test_the_warm_start_is_shifted_by_exactly_the_raw_actions_executed_and_repeats_its_last(fs2, monkeypatch,
                                                                                            executed):
    bundle, frames, proprio, actions = fs2
    planner = _planner(bundle)
    starts = _capture_starts(planner, monkeypatch)
    planner.reset(frames[20], proprio[20])
    first = planner.plan(frames[0], proprio[0])
    planner.plan(frames[executed], proprio[executed], executed_actions=actions[:executed])
    raw_start = planner.space.to_raw(starts[1]).numpy()  # (H * fs, A)
    np.testing.assert_allclose(raw_start[:-executed], first.plan[executed:], atol=1e-5)
    # the tail repeats the last planned action, never zeros (the training mean only by accident)
    np.testing.assert_allclose(raw_start[-executed:], np.repeat(first.plan[-1:], executed, axis=0), atol=1e-5)
    assert starts[1][-1].abs().sum() > 0


def test_history_frames_are_paired_with_the_actions_actually_executed(fs2):
    bundle, frames, proprio, actions = fs2
    planner = _planner(bundle)
    planner.reset(frames[20], proprio[20])
    returned = planner.plan(frames[0], proprio[0]).actions
    executed = actions[0:2]  # what the robot really did, not what the plan said
    assert not np.allclose(executed, returned)
    planner.plan(frames[2], proprio[2], executed_actions=executed)
    history = planner.objective.history
    assert history.shape == (1, 1, 2 * bundle.action_dim)
    expected = planner.space.from_raw(torch.tensor(executed, dtype=torch.float32))
    torch.testing.assert_close(history[0], expected, rtol=1e-5, atol=1e-5)
    assert planner.state()["context_frames"] == 2


def test_without_executed_actions_the_returned_ones_are_taken_as_executed(fs2):
    bundle, frames, proprio, _ = fs2
    planner = _planner(bundle)
    planner.reset(frames[20], proprio[20])
    returned = planner.plan(frames[0], proprio[0]).actions
    result = planner.plan(frames[2], proprio[2])
    assert result.context_frames == 2 and not result.warnings
    expected = planner.space.from_raw(torch.tensor(returned))
    torch.testing.assert_close(planner.objective.history[0], expected, rtol=1e-5, atol=1e-5)


def test_another_number_of_executed_actions_restarts_the_context_and_says_so(fs2):
    bundle, frames, proprio, actions = fs2
    planner = _planner(bundle)
    planner.reset(frames[20], proprio[20])
    planner.plan(frames[0], proprio[0])
    result = planner.plan(frames[1], proprio[1], executed_actions=actions[0:1])
    assert result.context_frames == 1
    assert any("1 raw actions executed" in w and "frameskip = 2" in w for w in result.warnings)


def test_the_returned_actions_are_the_first_frameskip_raw_actions_of_the_plan(fs2):
    bundle, frames, proprio, _ = fs2
    planner = _planner(bundle, "execute_steps=2")
    planner.reset(frames[20], proprio[20])
    r = planner.plan(frames[0], proprio[0])
    assert r.actions.shape == (4, bundle.action_dim) and r.plan.shape == (6, bundle.action_dim)
    np.testing.assert_array_equal(r.actions, r.plan[:4])


def test_a_goal_proprio_out_of_the_training_distribution_is_warned_naming_the_dims(fs2):
    bundle, frames, proprio, _ = fs2
    stats = bundle.proprio_stats
    goal = np.array(stats.mean, dtype=np.float64)
    goal[1] += 3.5 * stats.std[1]  # the users' home pose: 3.5 sigma out
    warnings = _planner(bundle).reset(frames[20], goal)
    assert len(warnings) == 1
    assert "ee_pos[1]" in warnings[0] and "+3.5 sigma" in warnings[0] and "ee_pos[0]" not in warnings[0]
    assert _planner(bundle).reset(frames[20], proprio[20]) == []


def test_proprio_sent_as_zeros_is_warned(fs2):
    bundle, frames, proprio, _ = fs2
    planner = _planner(bundle)
    planner.reset(frames[20], proprio[20])
    result = planner.plan(frames[0], np.zeros(3))
    assert any("all zeros" in w for w in result.warnings)


def test_planning_without_a_goal_is_refused(fs2):
    bundle, frames, proprio, _ = fs2
    with pytest.raises(PlanInputError, match="no goal"):
        _planner(bundle).plan(frames[0], proprio[0])


@pytest.mark.parametrize(("image", "proprio", "match"), [
    (np.zeros((10, 10, 3), np.uint8), np.zeros(3), r"shape \(10, 10, 3\), expected"),
    (None, np.zeros(3), "expected uint8"),
    ("rgba", np.zeros(3), "RGBA"),
    ("ok", np.zeros(4), r"expected \(3,\)"),
    ("ok", np.array([0.1, np.nan, 0.2]), "nan at dim 1"),
])
def test_observations_of_the_wrong_shape_dtype_or_values_are_refused(fs2, image, proprio, match):
    bundle, frames, _, _ = fs2
    if image is None:
        image = frames[0].astype(np.float32)
    elif isinstance(image, str):
        image = np.concatenate([frames[0], frames[0][..., :1]], axis=-1) if image == "rgba" else frames[0]
    planner = _planner(bundle)
    planner.reset(frames[20], bundle.proprio_stats.mean)
    with pytest.raises(PlanInputError, match=match):
        planner.plan(image, proprio)


def test_executed_actions_of_the_wrong_width_are_refused_naming_the_fields(fs2):
    bundle, frames, proprio, actions = fs2
    planner = _planner(bundle)
    planner.reset(frames[20], proprio[20])
    planner.plan(frames[0], proprio[0])
    with pytest.raises(PlanInputError, match="joint_target"):
        planner.plan(frames[2], proprio[2], executed_actions=actions[0:2, :8])  # the wrong index into the action


def test_bgr_frames_are_converted_when_declared_and_detected_when_not(fs2):
    bundle, frames, proprio, _ = fs2
    planner = _planner(bundle)
    mean = np.asarray(bundle.image_mean)
    assert abs(mean[0] - mean[2]) > 10  # the synthetic scene tells red from blue
    bgr = np.ascontiguousarray(frames[20][..., ::-1])
    assert any("BGR" in w for w in planner.reset(bgr, proprio[20]))
    assert planner.reset(bgr, proprio[20], channel_order="BGR") == []
    rgb_goal = planner._goal["visual"].clone()
    planner.reset(frames[20], proprio[20])
    torch.testing.assert_close(planner._goal["visual"], rgb_goal)


def test_a_scene_unlike_training_is_warned_by_its_reconstruction_error(planning_run):
    store, ckpt = planning_run
    bundle = load_planning_model(ckpt, device="cpu")
    assert bundle.decoder_trained
    s = open_store(store)
    frame, p = s.read_frames(np.array([0]))[0], s.read_rows("state", 0, 1)[0, :3]
    planner = Planner(bundle, PlanConfig())
    assert not any("reconstruction" in w for w in planner.reset(frame, p))
    lit = np.full_like(frame, 255)  # the lights went out the other way
    assert any("reconstruction error" in w for w in planner.reset(lit, p))


def test_a_store_of_another_layout_is_refused(planning_fs2, planning_run):
    with pytest.raises(PlanningError, match="other action or proprio fields"):
        load_planning_model(planning_fs2[1], store=planning_run[0])


def test_a_checkpoint_without_statistics_needs_its_store(planning_fs2, tmp_path):
    store, ckpt = planning_fs2
    raw = torch.load(ckpt, weights_only=True)
    for key in ("normalizer", "layout"):
        raw.pop(key)
    bare = tmp_path / "imported.pt"
    torch.save(raw, bare)
    with pytest.raises(PlanningError, match="give the store"):
        load_planning_model(bare)
    bundle = load_planning_model(bare, store=store)
    assert bundle.layout.name == "franka_cube_stack_v1" and any("default split" in n for n in bundle.notes)


def test_the_gradient_solver_plans_through_the_planner_within_the_bounds(fs2):
    bundle, frames, proprio, _ = fs2
    overrides = ["solver=gd", "gd.restarts=3", "gd.steps=4", "horizon=2"]
    plans = []
    for _ in range(2):
        planner = Planner(bundle, load_plan_config(overrides=overrides))
        planner.reset(frames[20], proprio[20])
        result = planner.plan(frames[0], proprio[0])
        plans.append(result.plan)
    fs, a = bundle.frameskip, bundle.action_dim
    assert result.actions.shape == (fs, a) and result.plan.shape == (2 * fs, a)
    assert (result.iterations, result.grad_rollouts, result.rollouts) == (4, 3 * 4, 3), \
        "restarts x steps with a backward pass, then the final sequences forward only"
    costs = [c for _, c in result.trace]
    assert costs == sorted(costs, reverse=True) and result.cost == costs[-1], "the best cost never rises"
    space = planner.space
    assert (result.plan >= space.lo_raw - 1e-4).all() and (result.plan <= space.hi_raw + 1e-4).all()
    np.testing.assert_array_equal(plans[0], plans[1])
