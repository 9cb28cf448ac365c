"""`Objective`: the cost of candidate action sequences, from one context toward one goal.

The cost of a sequence is the MSE between the predicted final frame's patch embeddings and the
goal's, plus `alpha` x the MSE of the proprio embeddings (the reference planner's `objective_fn_last`);
with `horizon_weighting = b` every predicted frame i = 1..H counts, weighted b^i / sum_j b^j, so a
plan is also judged by where it passes, not only where it ends (a plan optimised only at its end
while its first step is executed oscillates).

The context (the last `n <= num_hist` observed frames, already encoded, and the `n - 1` actions
actually executed between them) is shared by every candidate: a rollout of `B` candidates gets the
actions `[executed (n - 1), planned (H)]` and predicts `H` frames; nothing is prepended. Candidates
are evaluated in batches of at most `max_batch` sequences.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from fcs_train.models import VWorldModel


class Objective:
    def __init__(self, model: VWorldModel, *, alpha: float, horizon_weighting: float | None = None,
                 max_batch: int = 300, autocast: Callable[[], contextlib.AbstractContextManager] | None = None):
        self.model, self.alpha, self.horizon_weighting, self.max_batch = model, alpha, horizon_weighting, max_batch
        self._autocast = autocast or contextlib.nullcontext
        self.goal: dict[str, torch.Tensor] | None = None
        self.context: dict[str, torch.Tensor] | None = None
        self.history: torch.Tensor | None = None

    def set_goal(self, z_goal: dict[str, torch.Tensor]) -> None:
        """z_goal: `visual (1, 1, N, D)`, `proprio (1, 1, Ep)` from `encode_obs`."""
        self.goal = {k: v.detach() for k, v in z_goal.items()}

    def set_context(self, z_context: dict[str, torch.Tensor], executed: torch.Tensor) -> None:
        """z_context: `visual (1, n, N, D)`, `proprio (1, n, Ep)`; executed `(1, n - 1, fs * A)` normalised."""
        n = z_context["visual"].shape[1]
        if executed.shape[1] != n - 1:
            raise ValueError(f"{n} context frames need {n - 1} executed actions between them, got {executed.shape[1]}")
        self.context = {k: v.detach() for k, v in z_context.items()}
        self.history = executed

    def predict(self, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """`(B, H, fs * A)` normalised -> the H predicted frames: `visual (B, H, N, D)`, `proprio (B, H, Ep)`."""
        if self.context is None or self.history is None:
            raise RuntimeError("set_context first")
        n = self.context["visual"].shape[1]
        act = torch.cat([self.history.expand(actions.shape[0], -1, -1), actions], dim=1)
        with self._autocast():
            z_obses, _ = self.model.rollout_embedded(self.context, act)
        return {k: v[:, n:].float() for k, v in z_obses.items()}

    def frame_errors(self, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per candidate and predicted frame: `visual`, `proprio` MSE to the goal, `(B, H)` each."""
        if self.goal is None:
            raise RuntimeError("set_goal first")
        pred = self.predict(actions)
        return {k: (pred[k] - self.goal[k]).pow(2).flatten(2).mean(dim=2) for k in ("visual", "proprio")}

    def _weights(self, horizon: int, device: torch.device) -> torch.Tensor:
        if self.horizon_weighting is None:
            w = torch.zeros(horizon, device=device)
            w[-1] = 1.0
            return w
        w = self.horizon_weighting ** torch.arange(1, horizon + 1, dtype=torch.float64, device=device)
        return (w / w.sum()).float()

    def _cost_batch(self, actions: torch.Tensor) -> torch.Tensor:
        e = self.frame_errors(actions)
        per_frame = e["visual"] + self.alpha * e["proprio"]
        return per_frame @ self._weights(per_frame.shape[1], per_frame.device)

    def cost(self, actions: torch.Tensor) -> torch.Tensor:
        """`(B, H, fs * A)` -> `(B,)` costs, in batches of `max_batch` (differentiable when grad is on)."""
        return torch.cat([self._cost_batch(actions[i : i + self.max_batch])
                          for i in range(0, actions.shape[0], self.max_batch)])

    def distance(self, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """The final predicted frame's distance to the goal, `(B,)` each: `visual`, `proprio`, and
        `total` = visual + alpha * proprio (the cost without horizon weighting)."""
        parts = [self.frame_errors(actions[i : i + self.max_batch]) for i in range(0, actions.shape[0], self.max_batch)]
        out = {k: torch.cat([p[k][:, -1] for p in parts]) for k in ("visual", "proprio")}
        out["total"] = out["visual"] + self.alpha * out["proprio"]
        return out
