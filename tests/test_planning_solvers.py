"""Solvers on costs whose minimum is known: CEM, gradient descent and CEM -> GD find it, inside the bounds."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fcs_data.schemas import get_layout
from fcs_data.schemas.store import ArrayStats
from fcs_train.planning.config import BoundsConfig, CemConfig, GradientConfig
from fcs_train.planning.errors import PlanCancelled, PlanFailed
from fcs_train.planning.solvers import cem, cem_gd, gradient_descent
from fcs_train.planning.space import ActionSpace

V1 = get_layout("franka_cube_stack_v1")  # 9-D actions, no segments


def _space(horizon: int = 3) -> ActionSpace:
    a = V1.action_dim
    stats = ArrayStats(mean=[0.0] * a, std=[1.0] * a, min=[-3.0] * a, max=[3.0] * a, q01=[-2.0] * a,
                       q99=[2.0] * a, count=10)
    return ActionSpace(V1, stats, frameskip=2, horizon=horizon, bounds=BoundsConfig())


def _quadratic(target: torch.Tensor):
    calls = []

    def cost(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return (x - target).pow(2).flatten(1).sum(dim=1)

    return cost, calls


TARGET = torch.linspace(-1.5, 1.5, 3 * 18).reshape(3, 18)
OUTSIDE = TARGET.clone()
OUTSIDE[0, 0] = 5.0  # beyond the bound of 2: the best feasible value is 2


def test_cem_finds_the_minimum_inside_the_bounds_with_one_batched_call_per_iteration():
    space = _space()
    cost, calls = _quadratic(OUTSIDE)
    cfg = CemConfig(samples=200, topk=20, iterations=40, sigma_min=1e-3)
    r = cem(cost, space, torch.zeros(3, 18), cfg, torch.Generator().manual_seed(0), torch.zeros(3))
    expected = OUTSIDE.clamp(-2.0, 2.0)
    assert torch.allclose(r.actions, expected, atol=0.05)
    assert calls == [200] * 40 and r.rollouts == 8000 and r.iterations == 40
    assert [c for _, c in r.trace] == sorted([c for _, c in r.trace], reverse=True)  # best cost never worsens


def test_cem_is_deterministic_under_a_seed_and_changes_with_it():
    space = _space()
    cfg = CemConfig(samples=50, topk=5, iterations=3)
    run = lambda seed: cem(_quadratic(TARGET)[0], space, torch.zeros(3, 18), cfg,  # noqa: E731
                           torch.Generator().manual_seed(seed), torch.zeros(3)).actions
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_cem_stops_early_when_the_best_cost_stops_improving():
    space = _space()
    cost, calls = _quadratic(torch.zeros(3, 18))  # the initial mean is already optimal
    cfg = CemConfig(samples=20, topk=4, iterations=30, early_stop_patience=2, early_stop_tol=1e-3)
    r = cem(cost, space, torch.zeros(3, 18), cfg, torch.Generator().manual_seed(0), torch.zeros(3))
    assert r.stopped == "early_stop" and r.iterations == 3 and len(calls) == 3
    assert float(r.cost) == 0.0


def test_gradient_descent_finds_the_minimum_inside_the_bounds():
    space = _space()
    cost, calls = _quadratic(OUTSIDE)
    cfg = GradientConfig(restarts=4, steps=200, lr=0.05)
    r = gradient_descent(cost, space, torch.zeros(3, 18), cfg, torch.Generator().manual_seed(0), torch.zeros(3))
    assert torch.allclose(r.actions, OUTSIDE.clamp(-2.0, 2.0), atol=0.02)
    assert set(calls) == {4} and r.grad_rollouts == 4 * 200 and r.rollouts == 4  # the final check is forward only


def test_a_cancelled_plan_raises_plan_cancelled():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PlanCancelled):
        cem(_quadratic(TARGET)[0], _space(), torch.zeros(3, 18), CemConfig(samples=10, topk=2),
            torch.Generator(), torch.zeros(3), cancel)


def test_non_finite_costs_everywhere_are_an_error_not_a_plan():
    def nan_cost(x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), float("nan"))

    with pytest.raises(PlanFailed, match="not finite"):
        cem(nan_cost, _space(), torch.zeros(3, 18), CemConfig(samples=10, topk=2, iterations=2),
            torch.Generator(), torch.zeros(3))


def test_some_non_finite_costs_are_never_chosen():
    def cost(x: torch.Tensor) -> torch.Tensor:
        c = x.pow(2).flatten(1).sum(1)
        c[1::2] = float("nan")
        return c

    r = cem(cost, _space(), torch.zeros(3, 18), CemConfig(samples=40, topk=5, iterations=3),
            torch.Generator().manual_seed(0), torch.zeros(3))
    assert np.isfinite(r.cost) and float(cost(r.actions[None])[0]) == pytest.approx(r.cost)


def test_a_warm_started_plan_runs_the_warm_budget_from_the_warm_sigma():
    space = _space()
    cost, calls = _quadratic(TARGET)
    cfg = CemConfig(samples=20, topk=4, iterations=6, warm_iterations=2, warm_sigma_init=0.1)
    cold = cem(cost, space, TARGET, cfg, torch.Generator().manual_seed(0), torch.zeros(3))
    warm = cem(cost, space, TARGET, cfg, torch.Generator().manual_seed(0), torch.zeros(3), warm=True)
    assert (cold.iterations, warm.iterations) == (6, 2) and calls == [20] * 8
    first = lambda c: cem(cost, space, TARGET, c, torch.Generator().manual_seed(1), torch.zeros(3),  # noqa: E731
                          warm=True).trace[0][1]
    wide = cfg.model_copy(update={"warm_sigma_init": 2.0, "warm_iterations": 1})
    # samples around a good warm start drawn with a small sigma cost less than with a large one
    assert first(cfg.model_copy(update={"warm_iterations": 1})) <= first(wide)


def test_cem_then_gradient_refinement_beats_its_cem_phase_and_counts_backward_rollouts():
    space = _space()
    cost, calls = _quadratic(TARGET)
    cem_cfg = CemConfig(samples=30, topk=5, iterations=2)
    coarse = cem(cost, space, torch.zeros(3, 18), cem_cfg, torch.Generator().manual_seed(0), torch.zeros(3))
    r = cem_gd(cost, space, torch.zeros(3, 18), cem_cfg, GradientConfig(restarts=3, steps=50, lr=0.05),
               torch.Generator().manual_seed(0), torch.zeros(3))
    assert r.cost < 0.1 * coarse.cost
    assert r.rollouts == 2 * 30 + 3 and r.grad_rollouts == 50 * 3
    assert calls == [30, 30, 30, 30] + [3] * 51  # the CEM phase (run twice here), then one batch per Adam step
