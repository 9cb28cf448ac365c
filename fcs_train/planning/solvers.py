"""Solvers: find the `(H, fs * A)` normalised action sequence of lowest cost inside an `ActionSpace`.

- `cem`: the cross-entropy method. Each iteration draws `samples` sequences from a normal truncated
  to the bounds (the current mean is always one of them), evaluates all of them in one batched
  rollout, and refits mean and sigma to the `topk` best. A warm-started plan (MPC after the first
  step) can run fewer iterations from a smaller sigma (`warm_iterations`, `warm_sigma_init`).
- `gradient_descent`: Adam on `restarts` sequences at once (one batch) through the differentiable
  rollout, each projected into the bounds after every step.
- `cem_gd`: CEM, then gradient descent from its best candidates (the refinement costs a few forward
  and backward rollouts of a handful of sequences instead of more CEM iterations).
- `icem` (in `icem.py`): coloured noise, kept elites, a shrinking population.

Each returns the best sequence it evaluated, with its cost, the candidate rollouts it spent (forward
only, and with a backward pass: FLOPs per plan follow from them) and a trace of the best cost
against the rollouts spent.
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
    """actions `(H, fs * A)` normalised: the best sequence evaluated. rollouts: candidates evaluated
    forward only; grad_rollouts: with a backward pass too. trace: (rollouts so far, best cost) per
    iteration. elites `(k, H, fs * A)`: the last iteration's best candidates (CEM-type solvers)."""

    actions: torch.Tensor
    cost: float
    iterations: int = 0
    rollouts: int = 0
    grad_rollouts: int = 0
    stopped: str = "budget"
    trace: list[tuple[int, float]] = field(default_factory=list)
    elites: torch.Tensor | None = None


class Best:
    """The lowest finite cost seen so far and its sequence."""

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


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise PlanCancelled("the plan was cancelled")


def finite(cost: torch.Tensor) -> torch.Tensor:
    """NaN and infinite costs as +inf, so they sort last."""
    return torch.where(torch.isfinite(cost), cost, torch.full_like(cost, math.inf))


class EarlyStop:
    """Stops after `patience` iterations without a relative improvement above `tol` (None: never)."""

    def __init__(self, patience: int | None, tol: float):
        self.patience, self.tol, self.stale = patience, tol, 0

    def __call__(self, before: float, after: float) -> bool:
        if self.patience is None:
            return False
        improved = before - after > self.tol * abs(before) if math.isfinite(before) else True
        self.stale = 0 if improved else self.stale + 1
        return self.stale >= self.patience


def budget(cfg: CemConfig, warm: bool) -> tuple[int, float]:
    """(iterations, initial sigma) of a plan: the warm-start settings when it starts from a warm start."""
    if warm:
        return cfg.warm_iterations or cfg.iterations, cfg.warm_sigma_init or cfg.sigma_init
    return cfg.iterations, cfg.sigma_init


@torch.no_grad()
def cem(cost: CostFn, space: ActionSpace, mu: torch.Tensor, cfg: CemConfig, generator: torch.Generator,
        proprio_raw: torch.Tensor, cancel: threading.Event | None = None, warm: bool = False) -> SolverResult:
    """Cross-entropy method from mean `mu (H, fs * A)` (a warm start when `warm`, else the training mean)."""
    mu = space.project(mu, proprio_raw)
    n_iterations, sigma0 = budget(cfg, warm)
    sigma = torch.full_like(mu, sigma0)
    best, trace, stop = Best(), [], EarlyStop(cfg.early_stop_patience, cfg.early_stop_tol)
    rollouts, stopped, iterations, elites = 0, "budget", 0, mu[None]
    for iterations in range(1, n_iterations + 1):  # noqa: B007 (reported after the loop)
        check_cancel(cancel)
        x = space.sample(mu, sigma, cfg.samples, generator, proprio_raw)
        x[0] = mu
        c = cost(x).float()
        rollouts += len(x)
        before = best.cost
        best.update(x, c)
        trace.append((rollouts, best.cost))
        elites = x[torch.argsort(finite(c), stable=True)[: cfg.elites]]
        mu = elites.mean(dim=0)
        sigma = elites.std(dim=0).clamp_min(cfg.sigma_min) if len(elites) > 1 else torch.full_like(mu, cfg.sigma_min)
        if stop(before, best.cost):
            stopped = "early_stop"
            break
    return best.result(iterations=iterations, rollouts=rollouts, stopped=stopped, trace=trace, elites=elites)


def gradient_descent(cost: CostFn, space: ActionSpace, init: torch.Tensor, cfg: GradientConfig,
                     generator: torch.Generator, proprio_raw: torch.Tensor, cancel: threading.Event | None = None,
                     starts: torch.Tensor | None = None) -> SolverResult:
    """Adam on `restarts` sequences: the first starts at `init (H, fs * A)`, the others around it; or on
    the given `starts (R, H, fs * A)` (e.g. CEM's elites)."""
    if starts is None:
        init = space.project(init, proprio_raw)
        chosen = [init[None]]
        if cfg.restarts > 1:
            sigma = torch.full_like(init, max(cfg.init_sigma, 1e-6))
            chosen.append(space.sample(init, sigma, cfg.restarts - 1, generator, proprio_raw))
        starts = torch.cat(chosen)
    x = space.project(starts, proprio_raw).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    best, trace, grad_rollouts = Best(), [], 0
    for _step in range(cfg.steps):
        check_cancel(cancel)
        with torch.enable_grad():
            proposal = space.project(x, proprio_raw)
            c = cost(proposal)
            (grad,) = torch.autograd.grad(c.sum(), x)
        grad_rollouts += len(x)
        best.update(proposal, c.detach().float())
        trace.append((grad_rollouts, best.cost))
        x.grad = torch.nan_to_num(grad)
        opt.step()
        with torch.no_grad():
            x.copy_(space.project(x, proprio_raw))
    with torch.no_grad():
        final = space.project(x, proprio_raw)
        best.update(final, cost(final).float())
    trace.append((grad_rollouts + len(x), best.cost))
    return best.result(iterations=cfg.steps, rollouts=len(x), grad_rollouts=grad_rollouts, trace=trace)


def cem_gd(cost: CostFn, space: ActionSpace, mu: torch.Tensor, cem_cfg: CemConfig, gd_cfg: GradientConfig,
           generator: torch.Generator, proprio_raw: torch.Tensor, cancel: threading.Event | None = None,
           warm: bool = False) -> SolverResult:
    """CEM, then Adam from its best `gd.restarts` candidates (its best sequence among them)."""
    coarse = cem(cost, space, mu, cem_cfg, generator, proprio_raw, cancel, warm)
    assert coarse.elites is not None
    starts = torch.cat([coarse.actions[None], coarse.elites])[: gd_cfg.restarts]
    fine = gradient_descent(cost, space, coarse.actions, gd_cfg, generator, proprio_raw, cancel, starts=starts)
    winner = fine if fine.cost <= coarse.cost else coarse
    trace = coarse.trace + [(coarse.rollouts + n, min(c, coarse.cost)) for n, c in fine.trace]
    return SolverResult(winner.actions, winner.cost, iterations=coarse.iterations + fine.iterations,
                        rollouts=coarse.rollouts + fine.rollouts, grad_rollouts=fine.grad_rollouts,
                        stopped=coarse.stopped, trace=trace, elites=coarse.elites)
