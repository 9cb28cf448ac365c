"""Planning speed: one CEM plan with candidates batched (fcs) against one at a time (the users' server).

    python benchmarks/plan.py [--presets tiny,full] [--samples 300 --iterations 30 --horizon 5]
                              [--full-samples 24 --full-iterations 2] [--checkpoint CKPT --store STORE]

For each preset, with one model, one context (num_hist frames with the actions between them), one
goal and one seed, the same CEM budget runs twice in this process:

- batched (fcs): the context encoded once, every candidate of an iteration in one rollout
  (`Objective.cost`, chunked at `max_batch`);
- one at a time (the users' structure): a Python loop over the candidates, each a full
  `model.rollout` that encodes the context frames again.

It prints the time per plan of each, their ratio, the largest difference between the two plans, the
FLOPs of one iteration (counted by torch's FlopCounterMode) and the TFLOP/s achieved. The tiny preset
runs the full budget (300 samples x 30 iterations x horizon 5); the full model (DINOv2 ViT-S/14
shapes, random weights: speed does not depend on them) a smaller one, with the full budget's time
extrapolated from it, labelled as such.

Then, on the tiny model trained here on a synthetic primitive-logger store (or `--checkpoint`), the
solvers at equal final cost: how many candidate rollouts (and seconds) CEM, CEM with early stopping
and gradient descent need to reach the cost CEM reaches with the full budget (within 1%).

On CUDA the rollouts run in bf16; the goal there is a full-budget plan of the full model under 10 s
on an H100-class GPU (the users' server: 310-446 s on an RTX A5000).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.schemas import get_layout
from fcs_data.store import open_store
from fcs_data.synth import synthesize
from fcs_train.config import load_config
from fcs_train.models import build_model, to_model_input
from fcs_train.planning.bundle import PlanningModel, load_planning_model
from fcs_train.planning.config import CemConfig, GradientConfig, PlanConfig
from fcs_train.planning.mpc import Planner
from fcs_train.planning.solvers import cem, gradient_descent
from fcs_train.trainer import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_bundle(preset: str, device: torch.device) -> PlanningModel:
    """A model of `preset` with random weights, the v1 layout and statistics of a synthetic store."""
    cfg = load_config(preset=preset)
    layout = get_layout("franka_cube_stack_v1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random encoder: timing only
        model = build_model(cfg.model, proprio_dim=layout.proprio_dim, action_dim=layout.action_dim,
                            num_hist=cfg.data.num_hist, num_pred=cfg.data.num_pred, frameskip=cfg.data.frameskip)
    with tempfile.TemporaryDirectory() as tmp:
        store = convert_to_zarr(synthesize(Path(tmp) / "src", episodes=2, min_len=30, max_len=31, seed=0),
                                Path(tmp) / "s.zarr", workers=1).store
        stats = open_store(store).metadata.norm_stats
    return PlanningModel(model=model.to(device).eval(), checkpoint=Path(f"<random {preset} model>"), layout=layout,
                         action_stats=stats.action, proprio_stats=stats.proprio, frameskip=cfg.data.frameskip,
                         num_hist=cfg.data.num_hist, image_shape=(256, 256, 3), device=device,
                         amp_dtype=torch.bfloat16 if device.type == "cuda" else None)


def trained_bundle(device: torch.device, workdir: Path) -> tuple[PlanningModel, Path]:
    src = synthesize(workdir / "src", episodes=24, min_len=16, max_len=24, seed=5, layout="franka_cube_stack_primitive")
    store = convert_to_zarr(src, workdir / "s.zarr", workers=1).store
    sets = {"data.store": store, "train.run_dir": workdir / "run", "data.num_workers": 0, "data.frameskip": 1,
            "data.split_ratio": 0.75, "train.max_steps": 300, "train.epochs": 1000, "train.num_rollouts": 0,
            "log.print_every_steps": 100_000}
    cfg = load_config(preset="tiny", overrides=[f"{k}={v}" for k, v in sets.items()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(cfg, show_progress=False)
    trainer.fit()
    trainer.close()
    return load_planning_model(workdir / "run" / "checkpoints" / "latest.pt", device=str(device)), store


def scene(bundle: PlanningModel, store: Path | None, seed: int = 0):
    """Context obs `(1, n, ...)` in model units, the executed actions between them, goal obs, raw proprio."""
    model, n, fs, a = bundle.model, bundle.num_hist, bundle.frameskip, bundle.action_dim
    dev = bundle.device
    if store is None:
        g = torch.Generator().manual_seed(seed)
        h, w, _ = bundle.image_shape
        frames = torch.randint(0, 256, (n + 1, 3, h, w), generator=g, dtype=torch.uint8)
        proprio = torch.tensor(np.asarray(bundle.proprio_stats.mean), dtype=torch.float32).expand(n + 1, -1)
        executed = torch.zeros(1, n - 1, fs * a)
    else:
        s = open_store(store)
        ep = int(np.argmax(s.episode_lengths))
        g0, horizon = int(s.episode_starts[ep]), 5
        ids = g0 + np.arange(n + horizon) * fs
        frames = torch.from_numpy(s.read_frames(ids)).permute(0, 3, 1, 2)
        frames = torch.cat([frames[:n], frames[-1:]])
        state = s.read_rows("state", g0, g0 + (n + horizon) * fs)
        proprio = torch.tensor(state[::fs][[*range(n), n + horizon - 1]][:, s.layout.proprio_slice])
        act = torch.tensor(s.read_rows("action", g0, g0 + (n - 1) * fs))
        executed = ((act - torch.tensor(bundle.action_stats.mean)) / (torch.tensor(bundle.action_stats.std) + 1e-6))
        executed = executed.float().reshape(1, n - 1, fs * a)
    visual = to_model_input(frames.to(dev), model.image_size)
    p_norm = torch.stack([bundle.normalize_proprio(p.double().numpy())[0, 0] for p in proprio])
    obs = {"visual": visual[None, :n], "proprio": p_norm[None, :n]}
    goal = {"visual": visual[None, n:], "proprio": p_norm[None, n:]}
    return obs, executed.to(dev), goal, proprio[n - 1].to(dev)


def users_cost(model, obs, executed, z_goal, alpha: float, autocast):
    """The users' server: a loop over candidates, each a full rollout that encodes the context again."""
    @torch.no_grad()
    def cost(x: torch.Tensor) -> torch.Tensor:
        out = []
        for c in x:
            with autocast():
                z, _ = model.rollout(obs, torch.cat([executed, c[None]], dim=1))
            out.append(F.mse_loss(z["visual"][:, -1:].float(), z_goal["visual"])
                       + alpha * F.mse_loss(z["proprio"][:, -1:].float(), z_goal["proprio"]))
        return torch.stack(out)
    return cost


def timed_cem(cost, planner: Planner, cfg: CemConfig, proprio: torch.Tensor, seed: int):
    dev = planner.bundle.device
    sync(dev)
    t0 = time.perf_counter()
    r = cem(cost, planner.space, torch.zeros(planner.config.horizon, planner.space.width, device=dev), cfg,
            torch.Generator(device=dev).manual_seed(seed), proprio)
    sync(dev)
    return r, time.perf_counter() - t0


def compare_batching(preset: str, bundle: PlanningModel, store: Path | None, samples: int, iterations: int,
                     horizon: int, full_budget: tuple[int, int]) -> None:
    cfg = PlanConfig(horizon=horizon, max_batch=samples, cem=CemConfig(samples=samples, iterations=iterations))
    planner = Planner(bundle, cfg)
    obs, executed, goal, proprio = scene(bundle, store)
    model = bundle.model
    with torch.no_grad():
        z_goal = {k: v.float() for k, v in model.encode_obs(goal).items()}
        planner.objective.set_goal(z_goal)
        planner.objective.set_context(model.encode_obs(obs), executed)
    batched, one = planner.objective.cost, users_cost(model, obs, executed, z_goal, cfg.alpha, bundle.autocast)
    probe = torch.zeros(samples, horizon, planner.space.width, device=bundle.device)
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        batched(probe)
    with torch.no_grad():
        batched(probe[:2])  # warm-up
        one(probe[:2])
    r_b, t_b = timed_cem(batched, planner, cfg.cem, proprio, seed=0)
    r_s, t_s = timed_cem(one, planner, cfg.cem, proprio, seed=0)
    per_iter = flops.get_total_flops()
    rollouts = samples * iterations
    print(f"\n{preset}: CEM {samples} samples x {iterations} iterations, horizon {horizon}, {bundle.num_hist} context "
          f"frames, {bundle.device}{', bf16' if bundle.amp_dtype else ''}")
    print(f"  {'':30} {'s/plan':>9} {'rollouts/s':>11} {'x':>6}")
    print(f"  {'one at a time (users)':30} {t_s:9.2f} {rollouts / t_s:11.0f} {1.0:6.2f}")
    print(f"  {'batched, context shared (fcs)':30} {t_b:9.2f} {rollouts / t_b:11.0f} {t_s / t_b:6.2f}")
    diff = float((r_b.actions - r_s.actions).abs().max())
    print(f"  same samples and seed: plans differ by at most {diff:.2e} (normalised units); costs "
          f"{r_b.cost:.6g} vs {r_s.cost:.6g}")
    print(f"  {per_iter / samples / 1e9:.2f} GFLOP per candidate rollout, {per_iter * iterations / 1e12:.3f} TFLOP per "
          f"plan: {per_iter * iterations / t_b / 1e12:.3f} TFLOP/s batched, "
          f"{per_iter * iterations / t_s / 1e12:.3f} TFLOP/s one at a time")
    full_s, full_i = full_budget
    if (samples, iterations) != (full_s, full_i):
        scale = full_s * full_i / rollouts
        print(f"  extrapolated to the full budget ({full_s} x {full_i} = {full_s * full_i:,} rollouts, "
              f"{per_iter / samples * full_s * full_i / 1e15:.2f} PFLOP): batched {t_b * scale:.0f} s, one at a time "
              f"{t_s * scale:.0f} s per plan on this device")


def compare_solvers(bundle: PlanningModel, store: Path, samples: int, iterations: int, horizon: int) -> None:
    cfg = PlanConfig(horizon=horizon, cem=CemConfig(samples=samples, iterations=iterations))
    planner = Planner(bundle, cfg)
    obs, executed, goal, proprio = scene(bundle, store)
    with torch.no_grad():
        planner.objective.set_goal({k: v.float() for k, v in bundle.model.encode_obs(goal).items()})
        planner.objective.set_context(bundle.model.encode_obs(obs), executed)
    cost, dev = planner.objective.cost, bundle.device
    start = torch.zeros(horizon, planner.space.width, device=dev)
    runs = {}
    for name, solve in (
        ("CEM (full budget)", lambda: cem(cost, planner.space, start, cfg.cem, torch.Generator(dev).manual_seed(0),
                                          proprio)),
        ("CEM, early stop (patience 3)", lambda: cem(
            cost, planner.space, start, cfg.cem.model_copy(update={"early_stop_patience": 3}),
            torch.Generator(dev).manual_seed(0), proprio)),
        ("gradient descent (8 restarts)", lambda: gradient_descent(
            cost, planner.space, start, GradientConfig(restarts=8, steps=400, lr=0.1),
            torch.Generator(dev).manual_seed(0), proprio)),
        ("gradient descent (32 restarts)", lambda: gradient_descent(
            cost, planner.space, start, GradientConfig(restarts=32, steps=200, lr=0.1),
            torch.Generator(dev).manual_seed(0), proprio)),
    ):
        sync(dev)
        t0 = time.perf_counter()
        r = solve()
        sync(dev)
        runs[name] = (r, time.perf_counter() - t0)
    target = runs["CEM (full budget)"][0].cost * 1.01
    print(f"\nsolvers at equal cost (trained tiny model, horizon {horizon}): rollouts to reach CEM's full-budget cost "
          f"{target / 1.01:.5g} (+1%)")
    print(f"  {'solver':32} {'rollouts':>9} {'seconds':>8} {'best cost':>10} {'spent':>8}")
    for name, (r, seconds) in runs.items():
        reached = next((n for n, c in r.trace if c <= target), None)
        per_rollout = seconds / max(r.rollouts, 1)
        what = (f"{reached:9,} {reached * per_rollout:8.2f}" if reached is not None else f"{'never':>9} {'-':>8}")
        print(f"  {name:32} {what} {r.cost:10.5g} {r.rollouts:8,}")
    print("  (a gradient step costs a forward and a backward rollout; seconds are each solver's own rate)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,full")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--full-samples", type=int, default=24, help="the full model's budget on CPU")
    ap.add_argument("--full-iterations", type=int, default=2)
    ap.add_argument("--checkpoint", type=Path, help="a trained tiny checkpoint for the solver comparison")
    ap.add_argument("--store", type=Path, help="its store (with --checkpoint)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    if device.type == "cpu":
        print("no GPU here: the goal of a full-budget plan of the full model under 10 s on an H100 is not measured")
    full = (args.samples, args.iterations)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            if preset == "tiny":
                if args.checkpoint is not None:
                    bundle, store = load_planning_model(args.checkpoint, device=str(device)), args.store
                else:
                    bundle, store = trained_bundle(device, Path(tmp))
                compare_batching("tiny (trained)", bundle, store, args.samples, args.iterations, args.horizon,
                                 full)
                compare_solvers(bundle, store, args.samples, args.iterations, args.horizon)
            else:
                big = device.type == "cuda"
                samples, iterations = full if big else (args.full_samples, args.full_iterations)
                compare_batching(f"{preset} (random weights)", random_bundle(preset, device), None, samples,
                                 iterations, args.horizon, full)


if __name__ == "__main__":
    main()
