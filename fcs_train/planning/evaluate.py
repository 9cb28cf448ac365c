"""Offline planning evaluation (`fcs plan-eval`): plan between observations of held-out episodes.

For N (start, goal) pairs `horizon` planning steps apart in validation episodes, the planner gets
the start observation (with the `num_hist - 1` earlier frames and the logged actions between them,
as in MPC) and the goal observation, and plans. Each plan is compared with three other action
sequences from the same context:

- oracle: the logged actions that really led from start to goal;
- mean: the training mean action at every step;
- random: sequences drawn uniformly inside the planner's bounds.

Success is decided outside the model, on where the actions put the end effector: the last EE
position a sequence commands (the end of its last segment for EE-segment actions; the Panda's
forward kinematics of its last joint target for v1 actions, checked against the data first) within
`success_radius` of the goal's logged EE position. The oracle is the sanity check of that
measure; the mean and random baselines can lose, and usually do. The model's own latent distance
(final predicted frame's visual embedding MSE to the goal + alpha x the proprio embedding MSE) stays
as a diagnostic only: a plan can reach a small latent distance by fooling the model. The closed
loop (`closed_loop.py`) is the measure that counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcs_data.splits import split_episodes
from fcs_data.store import open_store
from fcs_data.windows import WindowDataset
from fcs_train.planning.bundle import PlanningModel
from fcs_train.planning.errors import PlanningError
from fcs_train.planning.mpc import Planner
from fcs_train.planning.reach import commanded_ee, reach_kind

BASELINES = ("planned", "oracle", "mean", "random")


@dataclass
class PairResult:
    """One (start, goal) pair. ee_error: per BASELINES, the distance (m) from the EE position the actions
    command last to the goal's logged EE position (random: the mean over the random sequences);
    success: 1/0 per BASELINES (random: the fraction of random sequences) within the success radius;
    None where the layout's actions do not say where the EE goes. distance/visual/proprio: the model's
    latent distances of the final predicted frame (diagnostics)."""

    episode: int
    start: int
    goal: int
    context_frames: int
    ee_error: dict[str, float] | None
    success: dict[str, float] | None
    distance: dict[str, float]
    visual: dict[str, float]
    proprio: dict[str, float]
    action_error: dict[str, dict[str, float]]  # planned / mean -> field -> mean abs error (display unit)
    final_action_error: dict[str, dict[str, float]]  # the same for the last raw action of the plan
    seconds: float
    iterations: int
    warnings: list[str] = field(default_factory=list)
    png: str | None = None


@dataclass
class EvalReport:
    checkpoint: str
    store: str
    episodes: list[int]
    episodes_are: str
    config: dict[str, Any]
    solver: str
    success_radius: float
    random_samples: int
    units: dict[str, str]
    pairs: list[PairResult]
    notes: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        """Whether success could be measured (the actions say where the EE goes)."""
        return all(p.success is not None for p in self.pairs) and bool(self.pairs)

    def summary(self) -> dict[str, Any]:
        """Means over the pairs of every figure, the success rate of each BASELINES entry and the time per plan."""
        p = self.pairs
        mean = lambda values: float(np.mean(values)) if len(values) else float("nan")  # noqa: E731
        out: dict[str, Any] = {
            "pairs": len(p),
            "distance": {k: mean([r.distance[k] for r in p]) for k in BASELINES},
            "visual": {k: mean([r.visual[k] for r in p]) for k in BASELINES},
            "proprio": {k: mean([r.proprio[k] for r in p]) for k in BASELINES},
            "success_rate": {k: mean([r.success[k] for r in p]) for k in BASELINES} if self.measured else None,
            "ee_error": {k: mean([r.ee_error[k] for r in p]) for k in BASELINES} if self.measured else None,
            "successes": int(sum(r.success["planned"] for r in p)) if self.measured else None,
            "seconds_per_plan": mean([r.seconds for r in p]),
            "seconds_min": min((r.seconds for r in p), default=float("nan")),
            "seconds_max": max((r.seconds for r in p), default=float("nan")),
        }
        for key in ("action_error", "final_action_error"):
            out[key] = {who: {f: mean([getattr(r, key)[who][f] for r in p]) for f in self.units}
                        for who in ("planned", "mean")}
        return out

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "summary": self.summary()}, indent=2)


def _units(bundle: PlanningModel) -> dict[str, tuple[str, float]]:
    """Action field -> (display unit, factor from raw): metres are shown in mm."""
    return {f.name: ("mm", 1000.0) if f.unit == "m" else (f.unit, 1.0) for f in bundle.layout.action}


def _field_errors(planned: np.ndarray, logged: np.ndarray, bundle: PlanningModel) -> dict[str, float]:
    units = _units(bundle)
    return {f.name: float(np.abs(planned[..., f.start : f.stop] - logged[..., f.start : f.stop]).mean()
                          * units[f.name][1]) for f in bundle.layout.action}


def choose_pairs(lengths: dict[int, int], n: int, *, horizon: int, frameskip: int, num_hist: int,
                 seed: int) -> list[tuple[int, int]]:
    """Up to `n` `(episode, start)` drawn uniformly over every start with `num_hist - 1` earlier frames
    and a goal `horizon` steps ahead (each step `frameskip` raw steps) inside the episode."""
    first = (num_hist - 1) * frameskip
    candidates = [(e, s) for e, length in lengths.items()
                  for s in range(first, length - (horizon + 1) * frameskip + 1)]
    if not candidates:
        need = first + (horizon + 1) * frameskip
        raise PlanningError(f"no episode has the {need} steps a pair needs ((num_hist - 1 + horizon + 1) x frameskip "
                            f"= ({num_hist - 1} + {horizon} + 1) x {frameskip}); lower the horizon")
    picks = np.random.default_rng(seed).choice(len(candidates), size=min(n, len(candidates)), replace=False)
    return sorted(candidates[i] for i in picks)


def evaluate_planning(planner: Planner, store: str | Path, *, pairs: int = 8, seed: int = 0,
                      success_radius: float = 0.05, random_samples: int = 64, out_dir: str | Path | None = None,
                      episodes: list[int] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> EvalReport:
    """Plan for `pairs` (start, goal) pairs of `store`'s validation episodes (see the module docstring).

    Validation episodes are the checkpoint's own split when `store` is the store it was trained on;
    any other store of the same layout is held-out data, and all its episodes are used. PNGs (start,
    decoded plan, goal; and the logged frames) go to `out_dir` when given.
    """
    bundle, cfg = planner.bundle, planner.config
    fs, n_hist, horizon = bundle.frameskip, bundle.num_hist, cfg.horizon
    opened = open_store(store)
    if (opened.layout.action_dim, opened.layout.proprio_dim) != (bundle.action_dim, bundle.proprio_dim):
        raise PlanningError(f"{store} has {opened.layout.action_dim}-D actions and {opened.layout.proprio_dim}-D "
                            f"proprio; the model takes {bundle.action_dim} and {bundle.proprio_dim}")
    notes = list(bundle.notes)
    if episodes is not None:
        chosen, what = np.asarray(episodes, np.int64), "given"
    elif bundle.trained_on(opened):
        chosen = split_episodes(range(opened.num_episodes), "val", bundle.split.get("split_ratio", 0.9),
                                bundle.split.get("split_seed", 42))
        what = "validation"
        if len(chosen) == 0:
            chosen, what = np.arange(opened.num_episodes), "all (the run had no validation split)"
    else:
        chosen, what = np.arange(opened.num_episodes), "all (held-out store)"
        notes.append(f"{store} is not the store the model was trained on: every episode is held out")
    ds = WindowDataset(opened, num_hist=1, num_pred=1, frameskip=fs, split="all", normalize=False,
                       episodes=chosen.tolist(), cameras=bundle.cameras, fuse=bundle.fuse)
    lengths = {int(e): int(opened.episode_lengths[e]) for e in chosen}
    picked = choose_pairs(lengths, pairs, horizon=horizon, frameskip=fs, num_hist=n_hist, seed=seed)
    out = Path(out_dir) if out_dir is not None else None
    results = []
    for i, (episode, start) in enumerate(picked):
        if progress:
            progress(i, len(picked))
        results.append(_evaluate_pair(planner, ds, episode, start, success_radius, random_samples, seed + i, out))
    if progress:
        progress(len(picked), len(picked))
    units = {name: unit for name, (unit, _) in _units(bundle).items()}
    kind = reach_kind(bundle.layout)
    if kind is None:
        notes.append(f"{bundle.layout.name}'s actions do not say where the EE goes: success is not measured offline "
                     "(the closed loop measures it)")
    elif kind == "joint" and results and np.median([r.ee_error["oracle"] for r in results]) > success_radius / 5:
        notes.append("the Panda's forward kinematics of the logged joint targets do not land on the logged EE "
                     "positions (another robot, or a base offset): success is not measured offline")
        for r in results:
            r.ee_error = r.success = None
    return EvalReport(checkpoint=str(bundle.checkpoint), store=str(opened.path), episodes=chosen.tolist(),
                      episodes_are=what, config=cfg.model_dump(mode="json"), solver=cfg.describe_solver(),
                      success_radius=success_radius,
                      random_samples=random_samples, units=units, pairs=results, notes=notes)


def _evaluate_pair(planner: Planner, ds: WindowDataset, episode: int, start: int, success_radius: float,
                   random_samples: int, seed: int, out: Path | None) -> PairResult:
    bundle, cfg, space = planner.bundle, planner.config, planner.space
    fs, a, horizon = bundle.frameskip, bundle.action_dim, cfg.horizon
    n = bundle.num_hist
    first = start - (n - 1) * fs
    w = ds.window(episode, first, n + horizon)  # context frames, then the horizon's frames; the last is the goal
    frames = w["visual"].permute(0, 2, 3, 1).numpy()  # (n + H, H, W, 3) uint8
    proprio = w["state"][:, bundle.layout.proprio_slice].numpy()
    actions = w["action"].numpy().reshape(n + horizon, fs, a)  # raw; row i: the fs actions after frame i
    warnings = planner.reset(frames[-1], proprio[-1])
    for j in range(n - 1):
        warnings += planner.observe(frames[j], proprio[j], actions[j - 1] if j else None)
    result = planner.plan(frames[n - 1], proprio[n - 1], actions[n - 2] if n > 1 else None)
    warnings += result.warnings

    logged = actions[n - 1 : n - 1 + horizon].reshape(horizon * fs, a)
    proprio_t = torch.tensor(proprio[n - 1], dtype=torch.float32, device=bundle.device)
    generator = torch.Generator(device=bundle.device).manual_seed(seed)
    candidates = torch.cat([
        space.from_raw(torch.tensor(result.plan, device=bundle.device))[None],
        space.from_raw(torch.tensor(logged, dtype=torch.float32, device=bundle.device))[None],
        space.mean_sequence(proprio_t)[None],
        space.uniform(random_samples, generator, proprio_t),
    ])
    with torch.no_grad():
        d = {k: v.cpu().numpy() for k, v in planner.objective.distance(candidates).items()}
    pick = lambda v: {"planned": float(v[0]), "oracle": float(v[1]), "mean": float(v[2]),  # noqa: E731
                      "random": float(v[3:].mean())}
    raw = space.to_raw(candidates).cpu().numpy()  # (3 + random, H * fs, A)
    mean_raw = raw[2]
    reached = commanded_ee(bundle.layout, raw)
    ee_error = success = None
    if reached is not None:
        err = np.linalg.norm(reached - proprio[-1], axis=-1)
        ee_error = {"planned": float(err[0]), "oracle": float(err[1]), "mean": float(err[2]),
                    "random": float(err[3:].mean())}
        ok = (err <= success_radius).astype(np.float64)
        success = {"planned": float(ok[0]), "oracle": float(ok[1]), "mean": float(ok[2]), "random": float(ok[3:].mean())}
    png = None
    if out is not None:
        png = str(_save_pair_png(planner, candidates[:1], w["visual"], n, out / f"pair_{episode:04d}_{start:04d}.png"))
    return PairResult(
        episode=episode, start=start, goal=start + horizon * fs, context_frames=result.context_frames,
        distance=pick(d["total"]), visual=pick(d["visual"]), proprio=pick(d["proprio"]),
        action_error={"planned": _field_errors(result.plan, logged, bundle),
                      "mean": _field_errors(mean_raw, logged, bundle)},
        final_action_error={"planned": _field_errors(result.plan[-1], logged[-1], bundle),
                            "mean": _field_errors(mean_raw[-1], logged[-1], bundle)},
        ee_error=ee_error, success=success, seconds=result.seconds,
        iterations=result.iterations, warnings=sorted(set(warnings)), png=png)


def _save_pair_png(planner: Planner, planned: torch.Tensor, visual: torch.Tensor, n: int, path: Path) -> Path:
    """Row 1: start, the decoded predicted frames of the plan, goal. Row 2: start, the logged frames, goal.

    Without a trained decoder only row 2 is written. visual `(n + H, 3, H, W)` uint8.
    """
    from fcs_train.models import to_model_input
    from fcs_train.plots import save_image_rows

    model = planner.model
    real = to_model_input(visual.to(planner.bundle.device), model.image_size)  # (n + H, 3, S, S)
    start, goal = real[n - 1], real[-1]
    rows = [torch.cat([start[None], real[n:], goal[None]])]
    labels = ["logged frames"]
    if planner.bundle.decoder_trained:
        with torch.no_grad():
            z = planner.predicted_frames(planned)
            decoded, _ = model.decode_obs(z)
        rows.insert(0, torch.cat([start[None], decoded["visual"][0].float(), goal[None]]))
        labels.insert(0, "plan (decoded prediction)")
    columns = ["start", *(f"step {k + 1}" for k in range(rows[0].shape[0] - 2)), "goal"]
    return save_image_rows(path, rows, labels, columns, title=f"{path.stem}: start, each planning step, goal")
