"""`Planner`: model-predictive control with a trained world model.

    planner = Planner.from_checkpoint("runs/x/checkpoints/best.pt")
    planner.reset(goal_image, goal_proprio)            # a new episode toward this goal
    while not done:
        result = planner.plan(image, proprio, executed_actions=executed)
        executed = robot.execute(result.actions)       # (execute_steps * frameskip, A) raw actions

The planner keeps the last `num_hist` observations, each encoded once, with the raw actions that
were actually executed between them (given back by the caller; when not given, the actions it
returned are taken as executed). One planning step is `frameskip` raw actions: the history holds
frames exactly `frameskip` raw actions apart, so when a different number was executed the context
restarts from the newest frame (and says so). The next plan starts from the previous one shifted by
exactly the raw actions executed, its tail repeating the last planned action (never zeros, which
would be the training mean action only by accident). Every plan runs in `eval()` under
`torch.no_grad()` (the gradient solver's action tensor excepted) and is deterministic under
`PlanConfig.seed`: the i-th plan after a reset draws from a generator seeded with (seed, i).

A request that fails (a refused input, a plan that finds nothing finite, a cancelled plan) leaves the
planner as it was: the goal, the history and the warm start change only when a request succeeds.
Each plan reports its FLOPs, counted (`flops.py`): the candidates its solver evaluated and the
encoding of its observation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fcs_train.planning.bundle import PlanningModel, load_planning_model
from fcs_train.planning.config import PlanConfig
from fcs_train.planning.errors import PlanInputError
from fcs_train.planning.flops import RolloutFlops, count_flops
from fcs_train.planning.icem import icem
from fcs_train.planning.objective import Objective
from fcs_train.planning.solvers import SolverResult, cem, cem_gd, gradient_descent
from fcs_train.planning.space import ActionSpace


@dataclass(frozen=True)
class PlanResult:
    """One plan. `actions (execute_steps * fs, A)` raw: execute these, in order. `plan (H * fs, A)` raw:
    the whole sequence (its first rows are `actions`). `cost` the objective of the plan."""

    actions: np.ndarray
    plan: np.ndarray
    cost: float
    seconds: float
    iterations: int
    rollouts: int
    stopped: str
    context_frames: int
    warnings: list[str] = field(default_factory=list)
    trace: list[tuple[int, float]] = field(default_factory=list)
    grad_rollouts: int = 0
    flops: float = 0.0
    warm: bool = False


@dataclass
class _Frame:
    z: dict[str, torch.Tensor]  # visual (1, 1, N, D), proprio (1, 1, Ep)
    proprio_raw: np.ndarray


class Planner:
    def __init__(self, bundle: PlanningModel, config: PlanConfig | None = None):
        self.bundle = bundle
        self.config = config or PlanConfig()
        cfg = self.config
        self.model = bundle.model.eval()
        self.space = ActionSpace(bundle.layout, bundle.action_stats, frameskip=bundle.frameskip, horizon=cfg.horizon,
                                 bounds=cfg.bounds, device=bundle.device)
        self.objective = Objective(self.model, alpha=cfg.alpha, horizon_weighting=cfg.horizon_weighting,
                                   max_batch=cfg.max_batch, autocast=bundle.autocast)
        self._goal: dict[str, torch.Tensor] | None = None
        self.rollout_flops = RolloutFlops()
        self._encode_flops: float | None = None
        self.reset()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, config: PlanConfig | None = None, *,
                        store: str | Path | None = None, device: str = "auto") -> Planner:
        config = config or PlanConfig()
        return cls(load_planning_model(checkpoint, store=store, device=device, amp=config.amp), config)

    # -- episode state ---------------------------------------------------------------------------
    def reset(self, goal_image: Any = None, goal_proprio: Any = None, channel_order: str = "RGB") -> list[str]:
        """Start a new episode: forget the history and the warm start; set the goal when given.

        Returns warnings about the goal (proprio out of the training distribution, naming the dims;
        all-zero proprio; a scene unlike training; a frame that looks BGR).
        """
        z, warnings = None, []
        if goal_image is not None or goal_proprio is not None:
            if goal_image is None or goal_proprio is None:
                raise PlanInputError("a goal needs both an image and a proprio")
            z, _, warnings = self._encode(goal_image, goal_proprio, channel_order, "goal")  # may refuse: nothing changed
        self._frames: list[_Frame] = []
        self._executed: list[torch.Tensor] = []  # (fs * A,) normalised, between consecutive frames
        self._plan: torch.Tensor | None = None  # (H, fs * A) normalised, the last plan
        self._returned: np.ndarray | None = None  # raw actions the last plan returned, not yet accounted for
        self._plans = 0
        self._goal = z
        if z is not None:
            self.objective.set_goal(z)
        return warnings

    def _snapshot(self) -> tuple:
        return (list(self._frames), list(self._executed), self._plan, self._returned, self._plans)

    def _restore(self, snapshot: tuple) -> None:
        self._frames, self._executed, self._plan, self._returned, self._plans = snapshot

    @property
    def has_goal(self) -> bool:
        return self._goal is not None

    def state(self) -> dict[str, Any]:
        """Whether a goal is set, the observations in the context, the plans since the reset."""
        return {"goal": self.has_goal, "context_frames": len(self._frames), "plans": self._plans}

    def _encode(self, image: Any, proprio: Any, channel_order: str, what: str
                ) -> tuple[dict[str, torch.Tensor], np.ndarray, list[str]]:
        b, cfg = self.bundle, self.config
        x, warnings = b.image_input(image, channel_order, f"{what} image")
        raw = b.proprio_input(proprio, f"{what} proprio", cfg.input_range)
        warnings += b.proprio_warnings(raw, f"{what} proprio", cfg.ood_sigma)
        self.model.eval()
        p = b.normalize_proprio(raw)
        if self._encode_flops is None:
            self._encode_flops = float(count_flops(lambda: self._encode_model(x, p)))
        z, decoded = self._encode_model(x, p)
        if decoded is not None and b.recon_reference:
            error, reference = float(F.mse_loss(decoded, x)), b.recon_reference
            if error > cfg.scene_check_factor * reference:
                warnings.append(f"{what} image: its reconstruction error {error:.3g} is {error / reference:.0f}x "
                                f"the training frames' ({reference:.3g}): the scene (lighting, camera, colours) "
                                "differs from training, and the model's predictions from it cannot be trusted")
        return z, raw, warnings

    @torch.no_grad()
    def _encode_model(self, x: torch.Tensor, p: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The model's part of `_encode`: embeddings, and the decoded frame for the scene check."""
        with self.bundle.autocast():
            z = {k: v.float() for k, v in self.model.encode_obs({"visual": x, "proprio": p}).items()}
            decoded = self.model.decode_obs(z)[0]["visual"].float() if self.bundle.decoder_trained else None
        return z, decoded

    def observe(self, image: Any, proprio: Any, executed_actions: Any = None, channel_order: str = "RGB") -> list[str]:
        """Add an observation to the history without planning (e.g. frames before the first plan).

        executed_actions `(k, A)` raw: what the robot executed since the previous observation; None
        means the actions the last plan returned (or, with no plan since, unknown: the context restarts).
        """
        snapshot = self._snapshot()
        try:
            warnings, _ = self._observe(image, proprio, executed_actions, channel_order)
        except BaseException:
            self._restore(snapshot)
            raise
        return warnings

    def _observe(self, image: Any, proprio: Any, executed_actions: Any, channel_order: str
                 ) -> tuple[list[str], np.ndarray]:
        b, fs = self.bundle, self.bundle.frameskip
        executed = None if executed_actions is None else b.actions_input(executed_actions,
                                                                        range_factor=self.config.input_range)
        z, raw, warnings = self._encode(image, proprio, channel_order, "observation")
        if executed is None:
            executed = self._returned
        if self._frames:
            if executed is None:
                warnings.append("no executed actions since the last observation: the model's context restarts "
                                "from this frame")
                self._frames, self._executed = [], []
            elif len(executed) == fs:
                self._executed.append(self.space.from_raw(torch.tensor(executed, dtype=torch.float32,
                                                                       device=b.device))[0])
            else:
                if len(executed) != self.config.execute_steps * fs:
                    warnings.append(f"{len(executed)} raw actions executed since the last observation, not frameskip "
                                    f"= {fs}: the model's context restarts from this frame")
                self._frames, self._executed = [], []
        elif executed_actions is not None:
            warnings.append("executed_actions ignored: there is no earlier observation since the reset")
        if self._plan is not None:
            self._plan = self._shifted(self._plan, 0 if executed is None else len(executed))
        self._frames.append(_Frame(z, raw))
        if len(self._frames) > b.num_hist:
            self._frames = self._frames[-b.num_hist :]
            self._executed = self._executed[-(b.num_hist - 1) :] if b.num_hist > 1 else []
        self._returned = None
        return warnings, raw

    def _shifted(self, plan: torch.Tensor, k: int) -> torch.Tensor | None:
        """The plan `(H, fs * A)` after `k` of its raw actions were executed: those dropped, the tail
        repeating the last planned raw action. None when the whole plan was executed."""
        steps = plan.reshape(-1, self.bundle.action_dim)  # (H * fs, A), execution order
        if k >= len(steps):
            return None
        rest = torch.cat([steps[k:], steps[-1:].expand(k, -1)])
        return rest.reshape(plan.shape)

    # -- planning --------------------------------------------------------------------------------
    def plan(self, image: Any, proprio: Any, executed_actions: Any = None, channel_order: str = "RGB",
             cancel: threading.Event | None = None) -> PlanResult:
        """Observe, then plan from the last `num_hist` observations toward the goal.

        image `(H, W, 3)` uint8 (RGB, or BGR said by `channel_order`); proprio `(P,)` raw;
        executed_actions `(k, A)` raw, what was executed since the previous call (None: what the
        previous plan returned). `cancel` (set from another thread) stops the solver with `PlanCancelled`.
        """
        t0 = time.perf_counter()
        if self._goal is None:
            raise PlanInputError("no goal: call reset(goal_image, goal_proprio) (the client's set_goal) first")
        snapshot = self._snapshot()
        try:
            return self._plan_step(image, proprio, executed_actions, channel_order, cancel, t0)
        except BaseException:
            self._restore(snapshot)  # a failed plan leaves the history and the warm start as they were
            raise

    def _plan_step(self, image: Any, proprio: Any, executed_actions: Any, channel_order: str,
                   cancel: threading.Event | None, t0: float) -> PlanResult:
        warnings, raw = self._observe(image, proprio, executed_actions, channel_order)
        b, cfg = self.bundle, self.config
        self.model.eval()
        context = {k: torch.cat([f.z[k] for f in self._frames], dim=1) for k in ("visual", "proprio")}
        executed = (torch.stack(self._executed)[None] if self._executed
                    else torch.zeros(1, 0, self.space.width, device=b.device))
        self.objective.set_context(context, executed)
        proprio_t = torch.tensor(raw, dtype=torch.float32, device=b.device)
        warm = self._plan is not None
        start = self._plan if warm else torch.zeros(cfg.horizon, self.space.width, device=b.device)
        generator = torch.Generator(device=b.device).manual_seed(cfg.seed * 1_000_003 + self._plans)
        result = self._solve(start, generator, proprio_t, cancel, warm)
        flops = self._flops(result, start, len(self._frames))
        plan_raw = self.space.to_raw(result.actions).detach().cpu().numpy().astype(np.float32)
        self._plan = result.actions.detach()
        self._returned = plan_raw[: cfg.execute_steps * b.frameskip]
        self._plans += 1
        return PlanResult(actions=self._returned.copy(), plan=plan_raw, cost=result.cost,
                          seconds=time.perf_counter() - t0, iterations=result.iterations, rollouts=result.rollouts,
                          stopped=result.stopped, context_frames=len(self._frames), warnings=warnings,
                          trace=result.trace, grad_rollouts=result.grad_rollouts, flops=flops, warm=warm)

    def _solve(self, start: torch.Tensor, generator: torch.Generator, proprio: torch.Tensor,
               cancel: threading.Event | None, warm: bool = False) -> SolverResult:
        cfg, cost, space = self.config, self.objective.cost, self.space
        if cfg.solver == "cem":
            return cem(cost, space, start, cfg.cem, generator, proprio, cancel, warm)
        if cfg.solver == "icem":
            return icem(cost, space, start, cfg.icem, generator, proprio, cancel, warm)
        if cfg.solver == "cem_gd":
            return cem_gd(cost, space, start, cfg.cem, cfg.gd, generator, proprio, cancel, warm)
        return gradient_descent(cost, space, start, cfg.gd, generator, proprio, cancel)

    def _flops(self, result: SolverResult, probe: torch.Tensor, context: int) -> float:
        """FLOPs of this plan: its candidates' rollouts (counted per candidate once per context length)
        and the encoding of its observation."""
        cost, counter = self.objective.cost, self.rollout_flops
        total = result.rollouts * counter.per_candidate(cost, probe, context)
        if result.grad_rollouts:
            total += result.grad_rollouts * counter.per_candidate(cost, probe, context, grad=True)
        return total + (self._encode_flops or 0.0)

    def predicted_frames(self, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """The embeddings the model predicts for `actions (B, H, fs * A)` from the current context."""
        with torch.no_grad():
            return self.objective.predict(actions)
