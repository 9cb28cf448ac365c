"""Closed-loop planning evaluation (`fcs plan-eval --closed-loop`): MPC episodes in the reference world.

Each planner (a `PlanConfig`, e.g. one per solver) is served by a `PlanningServer` on a localhost port
and driven by `PlannerClient` over the WebSocket protocol, exactly as the users' Isaac Sim client
drives it: per episode `set_goal(goal image, goal EE position)`, then per MPC step
`plan(image, EE position, executed_actions)` and the returned raw actions executed in the world, the
ones that really ran sent back with the next plan. The whole path is under test: observation
encoding, history, warm start, executed actions, bounds, the wire format.

Baselines run the same episodes (same seeds, so the same scenes and goals) without a model: the
training mean action, random actions inside the planner's bounds, and the scripted oracle (the
motion that produced the goal). Success is the world's verdict (the EE within the success radius of
the goal, and the moved cube of a place task within it of its goal), never the model's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fcs_data.world import CubeWorld, WorldSpec
from fcs_train.planning.bundle import PlanningModel
from fcs_train.planning.client import PlannerClient
from fcs_train.planning.config import PlanConfig
from fcs_train.planning.mpc import Planner
from fcs_train.planning.server import PlanningServer
from fcs_train.planning.space import ActionSpace

BASELINE_DESCRIPTIONS = {"oracle": "the scripted motion that produced the goal",
                         "mean": "the training mean action at every step",
                         "random": "random actions inside the planner's bounds"}
BASELINES = tuple(BASELINE_DESCRIPTIONS)


def check_baselines(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`names` as a tuple, or a `ValueError` naming the unknown ones and the known `BASELINES`."""
    if unknown := sorted(set(names) - set(BASELINES)):
        raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; baselines: {', '.join(BASELINES)}")
    return tuple(names)


@dataclass
class EpisodeResult:
    """One episode of one controller. steps_to_success: MPC steps (plans, or chunks of the same
    number of raw actions for a baseline) until the world reported success; distances in m."""

    controller: str
    seed: int
    episode: int
    task: str
    success: bool
    steps_to_success: int | None
    steps: int
    raw_steps: int
    start_ee_distance: float
    final_ee_distance: float
    final_cube_distance: float | None
    seconds_per_plan: float | None = None
    flops_per_plan: float | None = None
    rollouts_per_plan: float | None = None
    strip: str | None = None


@dataclass
class ClosedLoopReport:
    checkpoint: str
    world: dict[str, Any]
    seeds: list[int]
    max_steps: int
    raw_actions_per_step: int
    controllers: dict[str, str]  # name -> what it is (solver description, or the baseline)
    episodes: list[EpisodeResult]
    reference: str | None = None  # the planner whose FLOPs the others are compared with
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per controller: success rate, mean final EE distance, mean steps to success, seconds and
        FLOPs per plan (planners), and FLOPs as a fraction of the reference planner's."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.controllers:
            rows = [e for e in self.episodes if e.controller == name]
            wins = [e.steps_to_success for e in rows if e.steps_to_success is not None]
            out[name] = {"episodes": len(rows), "successes": sum(e.success for e in rows),
                         "success_rate": _mean([float(e.success) for e in rows]),
                         "final_ee_distance": _mean([e.final_ee_distance for e in rows]),
                         "steps_to_success": _mean(wins) if wins else None,
                         "seconds_per_plan": _mean_of(rows, "seconds_per_plan"),
                         "flops_per_plan": _mean_of(rows, "flops_per_plan"),
                         "rollouts_per_plan": _mean_of(rows, "rollouts_per_plan")}
        ref = out.get(self.reference or "", {}).get("flops_per_plan")
        for row in out.values():
            row["flops_vs_reference"] = row["flops_per_plan"] / ref if ref and row["flops_per_plan"] else None
        return out

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "summary": self.summary()}, indent=2)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _mean_of(rows: list[EpisodeResult], key: str) -> float | None:
    values = [getattr(e, key) for e in rows if getattr(e, key) is not None]
    return _mean(values) if values else None


# -- controllers ---------------------------------------------------------------------------------------
class Controller(Protocol):
    def begin(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None: ...

    def act(self, obs: dict[str, np.ndarray], executed: np.ndarray | None) -> np.ndarray:
        """`(k, A)` raw actions to execute next; `executed`: what ran since the previous call."""
        ...


class ServedPlanner:
    """A planner behind `fcs serve`, asked over the protocol as the Isaac Sim client asks it."""

    def __init__(self, client: PlannerClient):
        self.client = client
        self.replies: list[dict[str, Any]] = []

    def begin(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.replies = []
        self.client.set_goal(info["goal_image"], info["goal_proprio"])

    def act(self, obs: dict[str, np.ndarray], executed: np.ndarray | None) -> np.ndarray:
        actions = self.client.plan(obs["image"], obs["proprio"], executed_actions=executed)
        self.replies.append(self.client.last_reply)
        return actions


def _proprio(space: ActionSpace, obs: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.tensor(obs["proprio"], dtype=torch.float32, device=space.device)


def _first_raw(space: ActionSpace, sequence: torch.Tensor, k: int) -> np.ndarray:
    """The first `k` raw actions of a normalised `(H, fs * A)` sequence."""
    return space.to_raw(sequence).cpu().numpy()[:k]


class MeanAction:
    """The training mean action at every step (chained segments start at the current EE position)."""

    def __init__(self, space: ActionSpace, k: int):
        self.space, self.k = space, k

    def begin(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray], executed: np.ndarray | None) -> np.ndarray:
        return _first_raw(self.space, self.space.mean_sequence(_proprio(self.space, obs)), self.k)


class RandomActions:
    """Sequences drawn uniformly inside the planner's bounds, from a generator seeded per episode."""

    def __init__(self, space: ActionSpace, k: int, seed: int):
        self.space, self.k, self.seed = space, k, seed
        self.generator = torch.Generator(device=space.device)

    def begin(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.generator.manual_seed(self.seed * 7919 + int(info["episode"]) % 1_000_003)

    def act(self, obs: dict[str, np.ndarray], executed: np.ndarray | None) -> np.ndarray:
        return _first_raw(self.space, self.space.uniform(1, self.generator, _proprio(self.space, obs))[0], self.k)


class ScriptedOracle:
    """The scripted pick-and-place motion that produced the goal, then holding the goal pose."""

    def __init__(self, world: CubeWorld, k: int):
        self.world, self.k = world, k

    def begin(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray], executed: np.ndarray | None) -> np.ndarray:
        return self.world.scripted_actions(self.k)


# -- episodes ------------------------------------------------------------------------------------------
def run_episode(world: CubeWorld, controller: Controller, name: str, seed: int, max_steps: int,
                strip_dir: Path | None = None) -> EpisodeResult:
    """One episode: reset the world with `seed`, then up to `max_steps` controller steps, each executing
    its raw actions one by one until the world reports success (or truncates)."""
    obs, info = world.reset(seed=seed)
    start = dict(info)
    controller.begin(obs, info)
    frames, labels = [obs["image"]], ["start"]
    executed: np.ndarray | None = None
    steps = raw = 0
    success = False
    progress = info
    while steps < max_steps and not success:
        actions = np.asarray(controller.act(obs, executed))
        steps += 1
        ran = []
        for a in actions:
            obs, _, success, truncated, progress = world.step(a)
            ran.append(a)
            raw += 1
            if success or truncated:
                break
        executed = np.asarray(ran)
        frames.append(obs["image"])
        labels.append(f"step {steps}" + (" (success)" if success else ""))
        if not success and progress.get("steps", 0) >= world.world_spec.step_limit:
            break
    replies = getattr(controller, "replies", None) or []
    result = EpisodeResult(
        controller=name, seed=seed, episode=int(start["episode"]), task=str(start["task"]), success=bool(success),
        steps_to_success=steps if success else None, steps=steps, raw_steps=raw,
        start_ee_distance=float(start["ee_distance"]), final_ee_distance=float(progress["ee_distance"]),
        final_cube_distance=progress["cube_distance"],
        seconds_per_plan=_mean([r["seconds"] for r in replies]) if replies else None,
        flops_per_plan=_mean([r["flops"] for r in replies]) if replies else None,
        rollouts_per_plan=_mean([r["rollouts"] + r["grad_rollouts"] for r in replies]) if replies else None)
    if strip_dir is not None:
        from fcs_train.planning.strips import save_strip

        title = (f"{name}, seed {seed} ({result.task}): {'success' if success else 'failure'} after {steps} step(s), "
                 f"EE {100 * result.final_ee_distance:.1f} cm from the goal")
        path = strip_dir / f"{name}_seed{seed:04d}.png"
        result.strip = str(save_strip(path, [*frames, start["goal_image"]], [*labels, "goal"], title))
    return result


def evaluate_closed_loop(bundle: PlanningModel, spec: WorldSpec, planners: dict[str, PlanConfig], *,
                         seeds: list[int], baselines: tuple[str, ...] = BASELINES, max_steps: int | None = None,
                         out_dir: str | Path | None = None, reference: str | None = None,
                         progress: Callable[[int, int], None] | None = None) -> ClosedLoopReport:
    """Run every planner (through its own server) and baseline on the episodes `seeds` of `spec`'s world.

    max_steps: MPC steps per episode (default: twice the planning steps to the goal). One planning
    step is `execute_steps x frameskip` raw actions of the first planner's config; the baselines
    execute the same number per step. PNG strips (start, the frame after each step, goal) go to `out_dir`.
    """
    first = next(iter(planners.values()), PlanConfig())
    k = first.execute_steps * bundle.frameskip
    if max_steps is None:
        max_steps = 2 * math.ceil(spec.goal_steps / k)
    spec = spec.model_copy(update={"max_steps": max_steps * k})
    world = CubeWorld(spec)
    space = Planner(bundle, first).space
    strip_dir = Path(out_dir) if out_dir is not None else None
    if strip_dir is not None:
        strip_dir.mkdir(parents=True, exist_ok=True)
    controllers = {name: cfg.describe_solver() for name, cfg in planners.items()}
    controllers |= {b: BASELINE_DESCRIPTIONS[b] for b in check_baselines(baselines)}
    total, done, results = len(controllers) * len(seeds), 0, []

    def run_all(name: str, controller: Controller) -> None:
        nonlocal done
        for seed in seeds:
            results.append(run_episode(world, controller, name, seed, max_steps, strip_dir))
            done += 1
            if progress:
                progress(done, total)

    for name, cfg in planners.items():
        server = PlanningServer(bundle, cfg)
        with server.in_thread() as uri, PlannerClient(uri, timeout=3600) as client:
            run_all(name, ServedPlanner(client))
    makers: dict[str, Callable[[], Controller]] = {
        "oracle": lambda: ScriptedOracle(world, k), "mean": lambda: MeanAction(space, k),
        "random": lambda: RandomActions(space, k, first.seed)}
    for name in baselines:
        run_all(name, makers[name]())
    return ClosedLoopReport(checkpoint=str(bundle.checkpoint), world=spec.model_dump(mode="json"), seeds=list(seeds),
                            max_steps=max_steps, raw_actions_per_step=k, controllers=controllers, episodes=results,
                            reference=reference if reference in planners else next(iter(planners), None),
                            notes=list(bundle.notes))
