"""FLOPs counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` on one batch, attention included.

On CPU, PyTorch's fused attention kernels have no FLOP formula, so a count taken as the model runs
leaves attention out (117 GFLOP per full-model candidate rollout instead of 159). `count_flops`
runs the counted call with attention in its math form, where it is two matrix products the counter
sees. A plan's FLOPs then follow from what its solver spent: every candidate of a batched rollout
costs the same, so a plan costs `rollouts x forward + grad_rollouts x (forward + backward)` FLOPs
per candidate, plus the encoding of its observation; `planned_rollouts` gives those counts from a
config alone (e.g. for the full model on a CPU, where running the plan would take hours).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from fcs_train.planning.config import PlanConfig

PROBE_BATCH = 2  # candidates in the batch a rollout's FLOPs are counted on


def count_flops(fn: Callable[[], Any]) -> int:
    """The FLOPs `fn()` performs (forward and, if it runs one, backward), attention counted."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class RolloutFlops:
    """FLOPs of one candidate's rollout through `cost`, per context length, counted once on a batch.

    `cost(actions (B, H, fs * A)) -> (B,)` evaluated from the context currently set (its length `n`
    decides the predictor's window); forward only, and forward plus the backward pass to the actions.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, bool], float] = {}

    def per_candidate(self, cost: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor, context: int,
                      grad: bool = False) -> float:
        """probe `(H, fs * A)`: any sequence of the plan's shape (the count does not depend on values)."""
        key = (context, probe.shape[0], grad)
        if key not in self._cache:
            batch = probe.detach()[None].expand(PROBE_BATCH, *probe.shape).clone()
            if grad:
                def run() -> None:
                    x = batch.requires_grad_(True)
                    with torch.enable_grad():
                        torch.autograd.grad(cost(x).sum(), x)
            else:
                def run() -> None:
                    with torch.no_grad():
                        cost(batch)
            self._cache[key] = count_flops(run) / PROBE_BATCH
        return self._cache[key]


def planned_rollouts(cfg: PlanConfig, warm: bool = False) -> tuple[int, int]:
    """(forward, forward + backward) candidate rollouts a plan of `cfg` spends, from its budget alone (an
    upper bound under early stopping); `warm`: a plan that starts from the previous one shifted."""
    if cfg.solver == "gd":
        return cfg.gd.restarts, cfg.gd.restarts * cfg.gd.steps
    section = cfg.icem if cfg.solver == "icem" else cfg.cem
    iterations = (section.warm_iterations or section.iterations) if warm else section.iterations
    if cfg.solver == "icem":
        i = cfg.icem
        kept = round(i.keep_elites * i.elites)
        forward = sum(i.population(k) for k in range(iterations)) + kept * (iterations - 1) + 1
        return forward, 0
    forward = cfg.cem.samples * iterations
    if cfg.solver == "cem_gd":
        restarts = min(cfg.gd.restarts, 1 + cfg.cem.elites)
        return forward + restarts, restarts * cfg.gd.steps
    return forward, 0
