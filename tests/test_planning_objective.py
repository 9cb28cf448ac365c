"""Objective: batched candidate costs from a shared context, as the full rollout computes them one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fcs_train.planning.bundle import load_planning_model
from fcs_train.planning.objective import Objective


@pytest.fixture(scope="module")
def scene(planning_fs2: tuple[Path, Path]):
    """A model (eval mode), 2 context frames with the action executed between them, and a goal."""
    bundle = load_planning_model(planning_fs2[1], device="cpu")
    model = bundle.model
    g = torch.Generator().manual_seed(0)
    s, p, width = model.image_size, bundle.proprio_dim, bundle.frameskip * bundle.action_dim
    obs = {"visual": torch.rand(1, 2, 3, s, s, generator=g) * 2 - 1, "proprio": torch.randn(1, 2, p, generator=g)}
    goal = {"visual": torch.rand(1, 1, 3, s, s, generator=g) * 2 - 1, "proprio": torch.randn(1, 1, p, generator=g)}
    executed = torch.randn(1, 1, width, generator=g)
    candidates = torch.randn(40, 3, width, generator=g)
    return model, obs, goal, executed, candidates


def _objective(model, obs, goal, executed, **kw) -> Objective:
    obj = Objective(model, alpha=0.5, **kw)
    with torch.no_grad():
        obj.set_goal(model.encode_obs(goal))
        obj.set_context(model.encode_obs(obs), executed)
    return obj


@torch.no_grad()
def test_batched_cost_equals_each_candidate_rolled_out_alone_from_its_own_encoded_context(scene):
    model, obs, goal, executed, candidates = scene
    batched = _objective(model, obs, goal, executed, max_batch=300).cost(candidates)
    z_goal = model.encode_obs(goal)
    one_by_one = []
    for c in candidates:  # the users' structure: every candidate re-encodes the context
        z_obses, _ = model.rollout(obs, torch.cat([executed, c[None]], dim=1))
        one_by_one.append(F.mse_loss(z_obses["visual"][:, -1:], z_goal["visual"])
                          + 0.5 * F.mse_loss(z_obses["proprio"][:, -1:], z_goal["proprio"]))
    assert torch.allclose(batched, torch.stack(one_by_one), rtol=1e-4, atol=1e-6)


@torch.no_grad()
def test_chunked_evaluation_gives_the_same_costs(scene):
    model, obs, goal, executed, candidates = scene
    whole = _objective(model, obs, goal, executed, max_batch=300).cost(candidates)
    chunked = _objective(model, obs, goal, executed, max_batch=7).cost(candidates)
    assert torch.allclose(whole, chunked, rtol=1e-5, atol=1e-7)


@torch.no_grad()
def test_the_rollout_gets_the_executed_actions_then_the_plan_and_nothing_prepended(scene, monkeypatch):
    model, obs, goal, executed, candidates = scene
    seen = []
    real = model.rollout_embedded
    monkeypatch.setattr(model, "rollout_embedded", lambda z, act: seen.append(act.clone()) or real(z, act))
    obj = _objective(model, obs, goal, executed)
    pred = obj.predict(candidates[:5])
    (act,) = seen
    assert act.shape == (5, 1 + 3, executed.shape[-1])
    assert torch.equal(act[:, :1], executed.expand(5, -1, -1))
    assert torch.equal(act[:, 1:], candidates[:5])
    assert pred["visual"].shape[1] == 3  # one predicted frame per planned step


@torch.no_grad()
def test_horizon_weighting_counts_every_predicted_frame_by_its_weight(scene):
    model, obs, goal, executed, candidates = scene
    last = _objective(model, obs, goal, executed)
    weighted = _objective(model, obs, goal, executed, horizon_weighting=2.0)
    e = last.frame_errors(candidates)
    per_frame = e["visual"] + 0.5 * e["proprio"]
    assert torch.allclose(last.cost(candidates), per_frame[:, -1], rtol=1e-5)
    w = torch.tensor([2.0, 4.0, 8.0]) / 14.0
    assert torch.allclose(weighted.cost(candidates), per_frame @ w, rtol=1e-5)
    assert torch.allclose(last.distance(candidates)["total"], per_frame[:, -1], rtol=1e-5)


def test_the_cost_is_differentiable_in_the_actions_and_leaves_the_weights_alone(scene):
    model, obs, goal, executed, candidates = scene
    obj = _objective(model, obs, goal, executed)
    x = candidates[:4].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(obj.cost(x).sum(), x)
    assert grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
