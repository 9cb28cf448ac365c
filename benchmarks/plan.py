"""Planning cost and planning success: FLOPs and time per plan for every solver, and closed-loop success.

    python benchmarks/plan.py [--presets tiny,full] [--samples 300 --iterations 30 --horizon 5]
                              [--full-samples 24 --full-iterations 2]
    python benchmarks/plan.py --closed-loop [--episodes 12] [--train-steps 1500] [--horizon 3]

1. Batching, per preset: the same CEM budget with candidates batched (fcs: the context encoded once,
   one rollout per iteration) and one at a time (the users' server: a full `model.rollout` per
   candidate); the time per plan of each, their ratio, the largest difference between the plans.
2. Solvers, per preset: one plan and one warm-started plan (MPC's next step) of every solver preset
   (`SOLVER_PRESETS`: CEM 300 x 30, CEM with warm-start budgets, iCEM, CEM -> gradient descent, and
   gradient descent) from the same context: FLOPs counted with FlopCounterMode on one batch,
   attention included (`fcs_train.planning.flops`), the time, and the FLOPs against CEM 300 x 30.
   The tiny preset is trained here on a synthetic primitive-logger store; the full model (DINOv2
   ViT-S/14 shapes, random weights: FLOPs and speed do not depend on them) runs at the full budget
   on CUDA; on a CPU the batching comparison runs at `--full-samples x --full-iterations` and the
   solvers' full-budget FLOPs are given (exact:
   they are linear in the candidates, counted per candidate and multiplied by the rollouts each
   solver spends) and no time: timing it is benchmarks/gpu.py's job, with `time_solvers`.
3. `--closed-loop`: the tiny model trained `--train-steps` steps on 48 synthetic primitive episodes;
   every solver preset in closed loop in the reference world through the planning server, the same
   seeds for all, against the oracle, mean and random baselines: success rate beside FLOPs per plan,
   from one run (`fcs plan-eval --closed-loop` is the same measurement on any synthetic store).

`time_solvers(...)` is importable (benchmarks/gpu.py): a full-model, full-budget bf16 plan per solver
on CUDA, refusing to run without a GPU unless asked for another device (tests run it on CPU).
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

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.schemas import get_layout
from fcs_data.store import open_store
from fcs_data.synth import synthesize
from fcs_train.config import load_config
from fcs_train.models import build_model, to_model_input
from fcs_train.planning.bundle import PlanningModel, load_planning_model
from fcs_train.planning.config import CemConfig, PlanConfig, load_plan_config, solver_configs
from fcs_train.planning.flops import planned_rollouts
from fcs_train.planning.mpc import Planner
from fcs_train.planning.solvers import cem
from fcs_train.trainer import Trainer

SOLVERS = ("cem", "cem-warm", "icem", "cem-gd", "gd")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_bundle(preset: str, device: torch.device, amp: str = "auto") -> PlanningModel:
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
    bf16 = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return PlanningModel(model=model.to(device).eval(), checkpoint=Path(f"<random {preset} model>"), layout=layout,
                         action_stats=stats.action, proprio_stats=stats.proprio, frameskip=cfg.data.frameskip,
                         num_hist=cfg.data.num_hist, image_shape=(256, 256, 3), device=device,
                         amp_dtype=torch.bfloat16 if bf16 else None)


def trained_bundle(device: torch.device, workdir: Path, *, episodes: int = 24, steps: int = 300
                   ) -> tuple[PlanningModel, Path]:
    """The tiny preset trained `steps` steps on `episodes` synthetic primitive-logger episodes (frameskip 1)."""
    src = synthesize(workdir / "src", episodes=episodes, min_len=16, max_len=24, seed=5,
                     layout="franka_cube_stack_primitive")
    store = convert_to_zarr(src, workdir / "s.zarr", workers=1).store
    sets = {"data.store": store, "train.run_dir": workdir / "run", "data.num_workers": 0, "data.frameskip": 1,
            "data.split_ratio": 0.75, "train.max_steps": steps, "train.epochs": 1000, "train.num_rollouts": 0,
            "log.print_every_steps": 100_000, "log.png_every_epochs": 1000}
    cfg = load_config(preset="tiny", overrides=[f"{k}={v}" for k, v in sets.items()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(cfg, show_progress=False)
    trainer.fit()
    trainer.close()
    return load_planning_model(workdir / "run" / "checkpoints" / "latest.pt", device=str(device)), store


def observations(bundle: PlanningModel, store: Path | None, seed: int = 0):
    """`num_hist + 1` frames `(H, W, 3)` uint8 with their proprio, the raw actions between the first
    `num_hist` (one row of `(fs, A)` per step), and the goal frame and proprio (the last)."""
    n, fs, a = bundle.num_hist, bundle.frameskip, bundle.action_dim
    if store is None:
        rng = np.random.default_rng(seed)
        frames = rng.integers(0, 256, (n + 1, *bundle.image_shape), dtype=np.uint8)
        proprio = np.repeat(np.asarray(bundle.proprio_stats.mean)[None], n + 1, axis=0)
        actions = np.repeat(np.asarray(bundle.action_stats.mean)[None, None], n, axis=0).repeat(fs, axis=1)
        return frames, proprio, actions
    s = open_store(store)
    ep = int(np.argmax(s.episode_lengths))
    g0, horizon = int(s.episode_starts[ep]), 5
    ids = g0 + np.arange(n + horizon) * fs
    frames = s.read_frames(ids)[[*range(n), n + horizon - 1]]
    proprio = s.read_rows("state", g0, g0 + (n + horizon) * fs)[::fs][[*range(n), n + horizon - 1]]
    actions = s.read_rows("action", g0, g0 + n * fs).reshape(n, fs, a)
    return frames, proprio[:, s.layout.proprio_slice], actions


def plan_cost(bundle: PlanningModel, cfg: PlanConfig, obs) -> dict[str, float]:
    """One plan from `num_hist` context frames, then the warm-started plan of MPC's next step (after the
    first plan's actions ran): FLOPs (counted) and seconds of each."""
    frames, proprio, actions = obs
    n = bundle.num_hist
    planner = Planner(bundle, cfg)
    planner.reset(frames[-1], proprio[-1])
    for j in range(n - 1):
        planner.observe(frames[j], proprio[j], actions[j - 1] if j else None)
    sync(bundle.device)
    first = planner.plan(frames[n - 1], proprio[n - 1], actions[n - 2] if n > 1 else None)
    warm = planner.plan(frames[n - 1], proprio[n - 1], first.actions)
    sync(bundle.device)
    return {"flops": first.flops, "seconds": first.seconds, "rollouts": first.rollouts + first.grad_rollouts,
            "warm_flops": warm.flops, "warm_seconds": warm.seconds}


def solver_plan_configs(samples: int, iterations: int, horizon: int, names: tuple[str, ...] = SOLVERS
                        ) -> dict[str, PlanConfig]:
    """The solver presets on top of CEM `samples x iterations` (`gd`: gradient descent's defaults)."""
    base = load_plan_config(overrides=[f"horizon={horizon}", f"cem.samples={samples}", f"cem.iterations={iterations}",
                                       f"max_batch={max(samples, 1)}"])
    presets = solver_configs(base, [s for s in names if s != "gd"])
    if "gd" in names:
        presets["gd"] = base.model_copy(update={"solver": "gd"})
    return presets


def time_solvers(preset: str = "full", *, device: str = "cuda", solvers: tuple[str, ...] = SOLVERS,
                 samples: int = 300, iterations: int = 30, horizon: int = 5, amp: str = "bf16") -> list[dict]:
    """A plan (and its warm-started successor) per solver on `device` with a random `preset` model:
    `[{solver, what, flops, seconds, warm_flops, warm_seconds, tflops_per_s}]`, after one warm-up plan.

    For benchmarks/gpu.py (the defaults: full model, full budget, bf16 on CUDA); refuses to run on a
    machine without CUDA rather than measure something else under the same name.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("time_solvers: no CUDA device here; pass device='cpu' to time on the CPU")
    bundle = random_bundle(preset, dev, amp="bf16" if amp == "bf16" and dev.type == "cuda" else "off")
    obs = observations(bundle, None)
    configs = solver_plan_configs(samples, iterations, horizon, solvers)
    plan_cost(bundle, next(iter(configs.values())).model_copy(update={"cem": CemConfig(samples=2, topk=2,
                                                                                       iterations=1)}), obs)
    rows = []
    for name, cfg in configs.items():
        cost = plan_cost(bundle, cfg, obs)
        rows.append({"solver": name, "what": cfg.describe_solver(), "device": str(dev),
                     "tflops_per_s": cost["flops"] / cost["seconds"] / 1e12, **cost})
    return rows


def counted_flops(bundle: PlanningModel, configs: dict[str, PlanConfig], obs) -> list[dict]:
    """FLOPs per plan (first and warm-started) of each config without running its solver: a candidate
    rollout from `num_hist` context frames (forward, and forward + backward) and an observation's
    encoding counted once with FlopCounterMode, times the rollouts the config spends (`planned_rollouts`).
    For the full model on a CPU, where the plans themselves would take hours."""
    frames, proprio, actions = obs
    n = bundle.num_hist
    first = next(iter(configs.values()))
    planner = Planner(bundle, first.model_copy(update={"solver": "cem", "cem": CemConfig(samples=2, topk=2,
                                                                                         iterations=1)}))
    planner.reset(frames[-1], proprio[-1])
    for j in range(n - 1):
        planner.observe(frames[j], proprio[j], actions[j - 1] if j else None)
    planner.plan(frames[n - 1], proprio[n - 1], actions[n - 2] if n > 1 else None)  # sets the n-frame context
    probe = torch.zeros(first.horizon, planner.space.width, device=bundle.device)
    cost, counter = planner.objective.cost, planner.rollout_flops
    fwd = counter.per_candidate(cost, probe, n)
    bwd = counter.per_candidate(cost, probe, n, grad=True) if any(c.solver in ("gd", "cem_gd")
                                                                  for c in configs.values()) else 0.0
    encode = planner._encode_flops or 0.0
    rows = []
    for name, cfg in configs.items():
        (f1, b1), (f2, b2) = planned_rollouts(cfg), planned_rollouts(cfg, warm=True)
        rows.append({"solver": name, "what": cfg.describe_solver(), "rollouts": f1 + b1,
                     "flops": f1 * fwd + b1 * bwd + encode, "warm_flops": f2 * fwd + b2 * bwd + encode,
                     "seconds": None, "warm_seconds": None, "tflops_per_s": None})
    print(f"  one candidate rollout from {n} context frames: {fwd / 1e9:.2f} GFLOP forward"
          + (f", {bwd / 1e9:.2f} GFLOP with the backward pass" if bwd else "") + f"; an observation's encoding "
          f"{encode / 1e9:.2f} GFLOP (FlopCounterMode, attention included)")
    return rows


def print_solver_costs(title: str, rows: list[dict]) -> None:
    """The table of `time_solvers` / `counted_flops` rows, FLOPs against the `cem` row's."""
    ref = next((r for r in rows if r["solver"] == "cem"), rows[0])
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(f"\n{title}")
    print(f"  {'solver':10} {'GFLOP/plan':>11} {'warm':>9} {'x CEM':>7} {'x warm':>7} {'s/plan':>8} {'warm s':>8} "
          f"{'TFLOP/s':>8}  what")
    for r in rows:
        print(f"  {r['solver']:10} {r['flops'] / 1e9:11.5g} {r['warm_flops'] / 1e9:9.5g} {r['flops'] / ref['flops']:7.3f} "
              f"{r['warm_flops'] / ref['flops']:7.3f} {fmt(r['seconds'], '8.3f')} {fmt(r['warm_seconds'], '8.3f')} "
              f"{fmt(r['tflops_per_s'], '8.3f')}  {r['what']}")


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


def compare_batching(preset: str, bundle: PlanningModel, store: Path | None, samples: int, iterations: int,
                     horizon: int) -> None:
    """The same CEM plan with candidates batched (fcs) and one at a time (the users' server)."""
    cfg = PlanConfig(horizon=horizon, max_batch=samples, cem=CemConfig(samples=samples, iterations=iterations))
    planner = Planner(bundle, cfg)
    frames, proprio, actions = observations(bundle, store)
    model, n, dev = bundle.model, bundle.num_hist, bundle.device
    visual = to_model_input(torch.from_numpy(frames).permute(0, 3, 1, 2).to(dev), model.image_size)
    p = torch.stack([bundle.normalize_proprio(np.asarray(x, np.float64))[0, 0] for x in proprio])
    obs = {"visual": visual[None, :n], "proprio": p[None, :n]}
    executed = planner.space.from_raw(torch.tensor(actions[: n - 1].reshape(-1, bundle.action_dim),
                                                   dtype=torch.float32, device=dev))[None]
    with torch.no_grad():
        z_goal = {k: v.float() for k, v in model.encode_obs({"visual": visual[None, n:], "proprio": p[None, n:]}).items()}
        planner.objective.set_goal(z_goal)
        planner.objective.set_context(model.encode_obs(obs), executed)
    batched, one = planner.objective.cost, users_cost(model, obs, executed, z_goal, cfg.alpha, bundle.autocast)
    start = torch.zeros(horizon, planner.space.width, device=dev)
    proprio_t = torch.tensor(proprio[n - 1], dtype=torch.float32, device=dev)
    times, plans = [], []
    for fn in (batched, one):
        fn(start[None].expand(2, -1, -1))  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        plans.append(cem(fn, planner.space, start, cfg.cem, torch.Generator(device=dev).manual_seed(0), proprio_t))
        sync(dev)
        times.append(time.perf_counter() - t0)
    print(f"\n{preset}: CEM {samples} x {iterations}, horizon {horizon}, {n} context frames, {dev}"
          f"{', bf16' if bundle.amp_dtype else ''}: batched {times[0]:.2f} s/plan, one at a time (the users' server) "
          f"{times[1]:.2f} s/plan: {times[1] / times[0]:.1f}x; the plans differ by at most "
          f"{float((plans[0].actions - plans[1].actions).abs().max()):.1e}")


def closed_loop(episodes: int, train_steps: int, horizon: int, device: torch.device) -> None:
    """Every solver preset in closed loop on one trained tiny model and the same seeds (module docstring, 3)."""
    from fcs.cli.views import print_closed_loop
    from fcs_data.world import world_spec_from_store
    from fcs_train.planning.closed_loop import evaluate_closed_loop

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bundle, store = trained_bundle(device, Path(tmp), episodes=48, steps=train_steps)
        print(f"trained the tiny model {train_steps} steps on 48 primitive-logger episodes in "
              f"{time.perf_counter() - t0:.0f} s")
        planners = solver_plan_configs(300, 30, horizon, SOLVERS[:4])
        spec = world_spec_from_store(store, goal_steps=horizon * bundle.frameskip)
        report = evaluate_closed_loop(bundle, spec, planners, seeds=list(range(episodes)), reference="cem")
        print_closed_loop(report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,full")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--full-samples", type=int, default=24, help="the full model's budget on CPU")
    ap.add_argument("--full-iterations", type=int, default=2)
    ap.add_argument("--closed-loop", action="store_true", help="closed-loop success per solver (section 3) only")
    ap.add_argument("--episodes", type=int, default=12, help="closed-loop episodes per controller")
    ap.add_argument("--train-steps", type=int, default=1500, help="training steps of the closed-loop model")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    if args.closed_loop:
        closed_loop(args.episodes, args.train_steps, args.horizon, device)
        return
    full = (args.samples, args.iterations)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            if preset == "tiny":
                bundle, store = trained_bundle(device, Path(tmp))
                compare_batching("tiny (trained)", bundle, store, *full, args.horizon)
                obs = observations(bundle, store)
                rows = [{"solver": name, "what": cfg.describe_solver(), **(cost := plan_cost(bundle, cfg, obs)),
                         "tflops_per_s": cost["flops"] / cost["seconds"] / 1e12}
                        for name, cfg in solver_plan_configs(*full, args.horizon).items()]
                print_solver_costs(f"solvers, tiny (trained), {device}", rows)
                continue
            bundle = random_bundle(preset, device)
            if device.type == "cuda":
                compare_batching(f"{preset} (random weights)", bundle, None, *full, args.horizon)
                rows = time_solvers(preset, device="cuda", samples=full[0], iterations=full[1], horizon=args.horizon)
                print_solver_costs(f"solvers, {preset} (random weights), {torch.cuda.get_device_name()}, bf16", rows)
                continue
            small = (args.full_samples, args.full_iterations)
            compare_batching(f"{preset} (random weights, budget {small[0]} x {small[1]})", bundle, None, *small,
                             args.horizon)
            print(f"\nsolvers, {preset} (random weights): FLOPs per plan at the full budget, counted per candidate "
                  "(no GPU here: not timed; benchmarks/gpu.py times them with time_solvers)")
            rows = counted_flops(bundle, solver_plan_configs(*full, args.horizon), observations(bundle, None))
            print_solver_costs(f"solvers, {preset} (random weights), full budget, counted", rows)


if __name__ == "__main__":
    main()
