"""Solvers: find the `(H, fs * A)` normalised action sequence of lowest cost inside an `ActionSpace`.

- `cem`: the cross-entropy method. Each iteration draws `samples` sequences from a normal truncated
  to the bounds (the current mean is always one of them), evaluates all of them in one batched
  rollout, and refits mean and sigma to the `topk` best.
- `gradient_descent`: Adam on `restarts` sequences at once (one batch) through the differentiable
  rollout, each projected into the bounds after every step.

Both return the best sequence they evaluated, with its cost and a trace of the best cost against the
number of candidate rollouts spent (the benchmark compares solvers at equal cost with it).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fcs_train.planning.config import CemConfig, GradientConfig
from fcs_train.planning.errors import PlanCancelled, PlanFailed
from fcs_train.planning.space import ActionSpace

CostFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SolverResult:
    """actions `(H, fs * A)` normalised: the best sequence evaluated; trace: (rollouts, best cost) per iteration."""

    actions: torch.Tensor
    cost: float
    iterations: int = 0
    rollouts: int = 0
    stopped: str = "budget"
    trace: list[tuple[int, float]] = field(default_factory=list)


class _Best:
    def __init__(self) -> None:
        self.actions: torch.Tensor | None = None
        self.cost = math.inf

    def update(self, x: torch.Tensor, cost: torch.Tensor) -> None:
        cost = torch.where(torch.isfinite(cost), cost, torch.full_like(cost, math.inf))
        i = int(torch.argmin(cost))
        if float(cost[i]) < self.cost:
            self.cost, self.actions = float(cost[i]), x[i].detach().clone()

    def result(self, **kw) -> SolverResult:
        if self.actions is None:
            raise PlanFailed("every candidate's rollout cost is NaN or infinite: the world model's predictions are "
                                "not finite from this context")
        return SolverResult(self.actions, self.cost, **kw)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise PlanCancelled("the plan was cancelled")


@torch.no_grad()
def cem(cost: CostFn, space: ActionSpace, mu: torch.Tensor, cfg: CemConfig, generator: torch.Generator,
        proprio_raw: torch.Tensor, cancel: threading.Event | None = None) -> SolverResult:
    """Cross-entropy method from mean `mu (H, fs * A)` (a warm start, or the training mean)."""
    mu = space.project(mu, proprio_raw)
    sigma = torch.full_like(mu, cfg.sigma_init)
    best, trace = _Best(), []
    rollouts, stale, stopped, iterations = 0, 0, "budget", 0
    for iterations in range(1, cfg.iterations + 1):  # noqa: B007 (reported after the loop)
        _check(cancel)
        x = space.sample(mu, sigma, cfg.samples, generator, proprio_raw)
        x[0] = mu
        c = cost(x).float()
        rollouts += len(x)
        before = best.cost
        best.update(x, c)
        trace.append((rollouts, best.cost))
        c = torch.where(torch.isfinite(c), c, torch.full_like(c, math.inf))
        elites = x[torch.argsort(c, stable=True)[: cfg.elites]]
        mu = elites.mean(dim=0)
        sigma = elites.std(dim=0).clamp_min(cfg.sigma_min) if len(elites) > 1 else torch.full_like(mu, cfg.sigma_min)
        if cfg.early_stop_patience is not None:
            improved = before - best.cost > cfg.early_stop_tol * abs(before) if math.isfinite(before) else True
            stale = 0 if improved else stale + 1
            if stale >= cfg.early_stop_patience:
                stopped = "early_stop"
                break
    return best.result(iterations=iterations, rollouts=rollouts, stopped=stopped, trace=trace)


def gradient_descent(cost: CostFn, space: ActionSpace, init: torch.Tensor, cfg: GradientConfig,
                     generator: torch.Generator, proprio_raw: torch.Tensor,
                     cancel: threading.Event | None = None) -> SolverResult:
    """Adam on `restarts` sequences: the first starts at `init (H, fs * A)`, the others around it."""
    init = space.project(init, proprio_raw)
    starts = [init[None]]
    if cfg.restarts > 1:
        sigma = torch.full_like(init, max(cfg.init_sigma, 1e-6))
        starts.append(space.sample(init, sigma, cfg.restarts - 1, generator, proprio_raw))
    x = torch.cat(starts).detach().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    best, trace, rollouts = _Best(), [], 0
    for _step in range(cfg.steps):
        _check(cancel)
        with torch.enable_grad():
            proposal = space.project(x, proprio_raw)
            c = cost(proposal)
            (grad,) = torch.autograd.grad(c.sum(), x)
        rollouts += len(x)
        best.update(proposal, c.detach().float())
        trace.append((rollouts, best.cost))
        x.grad = torch.nan_to_num(grad)
        opt.step()
        with torch.no_grad():
            x.copy_(space.project(x, proprio_raw))
    with torch.no_grad():
        final = space.project(x, proprio_raw)
        best.update(final, cost(final).float())
    rollouts += len(x)
    trace.append((rollouts, best.cost))
    return best.result(iterations=cfg.steps, rollouts=rollouts, trace=trace)
