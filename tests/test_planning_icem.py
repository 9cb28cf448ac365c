"""iCEM: coloured noise of the asked spectrum, a shrinking population, kept elites, convergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_planning_solvers import TARGET, _quadratic, _space

from fcs_train.planning.config import ICemConfig
from fcs_train.planning.icem import coloured_noise, icem


def _lag1(x: torch.Tensor) -> float:
    return float((x[:, 1:] * x[:, :-1]).mean() / x.pow(2).mean())


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_coloured_noise_has_unit_variance_and_correlates_more_as_beta_grows(beta):
    x = coloured_noise(4000, 16, 3, beta, torch.Generator().manual_seed(0))
    assert x.shape == (4000, 16, 3)
    assert float(x.var()) == pytest.approx(1.0, abs=0.08)
    assert abs(float(x.mean())) < 0.02
    lag1 = _lag1(x)
    assert {0.0: lag1 < 0.05, 1.0: 0.2 < lag1 < 0.8, 2.0: lag1 > 0.7}[beta], lag1


def test_the_population_shrinks_every_iteration_down_to_its_floor_and_elites_are_kept():
    space = _space()
    cost, calls = _quadratic(TARGET)
    cfg = ICemConfig(samples=64, topk=8, iterations=5, shrink=2.0, keep_elites=0.5, min_samples=10)
    r = icem(cost, space, torch.zeros(3, 18), cfg, torch.Generator().manual_seed(0), torch.zeros(3))
    drawn = [64, 32, 16, 10, 10]
    kept = [0, 4, 4, 4, 4]
    mean_added = [0, 0, 0, 0, 1]
    assert calls == [d + k + m for d, k, m in zip(drawn, kept, mean_added, strict=True)]
    assert r.rollouts == sum(calls) and r.iterations == 5
    assert [c for _, c in r.trace] == sorted((c for _, c in r.trace), reverse=True)


def test_icem_converges_toward_a_smooth_optimum_and_is_deterministic_under_a_seed():
    space = _space()
    time_, phase = torch.linspace(0, 1, 6)[:, None], torch.linspace(0, 3, 9)[None]
    target = (1.5 * torch.sin(2 * time_ + phase)).reshape(3, 18)  # (6 raw steps, 9 dims), smooth in time
    cost, _ = _quadratic(target)
    start = float(cost(torch.zeros(1, 3, 18))[0])
    cfg = ICemConfig(samples=300, topk=30, iterations=40, sigma_min=1e-3, min_samples=100)
    run = lambda seed: icem(cost, space, torch.zeros(3, 18), cfg, torch.Generator().manual_seed(seed),  # noqa: E731
                            torch.zeros(3))
    r = run(0)
    assert r.cost < 0.05 * start
    assert torch.equal(r.actions, run(0).actions) and not torch.equal(r.actions, run(1).actions)
    assert np.isfinite(r.cost)
