"""Commands that plan with a trained world model: `fcs plan-eval` (offline) and `fcs serve` (a server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fcs.cli.core import command, config_error, expect_input, write_json
from fcs.cli.views import console, err_console, print_closed_loop, print_plan_eval, progress_bar

PlanConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", exists=True, dir_okay=False,
    help="planning YAML (solver, horizon, alpha, cem, gd, bounds; see docs/PLANNING.md)")]
PlanSetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="override, e.g. --set cem.samples=100 --set 'bounds.fixed={end_gripper: 0}' (repeatable)")]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", exists=True, dir_okay=False,
                                             help="an fcs checkpoint (fcs train or fcs import-checkpoint)")]


def _plan_config(config: Path | None, overrides: list[str] | None):
    from pydantic import ValidationError

    from fcs_train.planning.config import load_plan_config

    try:
        return load_plan_config(config, overrides or [])
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(config_error(e), param_hint="--config/--set") from e


@command(name="plan-eval", examples=[
    "fcs plan-eval run1.zarr --checkpoint runs/dino_wm/latest/checkpoints/best.pt",
    "fcs plan-eval run1.zarr --checkpoint best.pt --set cem.samples=100 --json -",
    "fcs plan-eval world.zarr --checkpoint best.pt --closed-loop --solvers cem,icem --episodes 20"])
def plan_eval(
    store: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="an fcs store of the model's layout")],
    checkpoint: CheckpointOpt,
    pairs: Annotated[int, typer.Option(min=1, help="(start, goal) pairs (offline)")] = 8,
    config: PlanConfigOpt = None,
    set_: PlanSetOpt = None,
    success_radius: Annotated[float, typer.Option(min=0.0, help="m: success is the EE within this distance of the "
                                                                "goal's EE position")] = 0.05,
    random_samples: Annotated[int, typer.Option("--random", min=1, help="random sequences for the random "
                                                                        "baseline (offline)")] = 64,
    seed: Annotated[int, typer.Option(help="which pairs (offline) or episodes (closed loop) are drawn")] = 0,
    closed_loop: Annotated[bool, typer.Option("--closed-loop", help="MPC episodes in the reference world through the "
                                                                   "planning server (STORE: made by fcs synth)")]
    = False,
    episodes: Annotated[int, typer.Option(min=1, help="closed-loop episodes per controller")] = 8,
    solvers: Annotated[str, typer.Option(help="closed loop: solver presets to compare, comma-separated "
                                              "(cem, cem-warm, icem, cem-gd), each on top of --config/--set")] = "cem",
    baselines: Annotated[str, typer.Option(help="closed loop: baselines, comma-separated (oracle, mean, random; "
                                                "'' for none)")] = "oracle,mean,random",
    goal_steps: Annotated[int | None, typer.Option(min=1, help="closed loop: logged steps from start to goal "
                                                              "(default horizon x frameskip)")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="closed loop: MPC steps per episode (default twice "
                                                             "the steps to the goal)")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for the PNGs (default: RUN/plan_eval or "
                                                  "RUN/closed_loop beside the checkpoints)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the full report as JSON here ('-': "
                                                                  "stdout, and no tables)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
) -> None:
    """Plan with a trained model and measure it: offline on held-out episodes, or in closed loop.

    Offline: for each pair (start, goal HORIZON planning steps later) the planner plans from the start
    toward the goal; success is where the planned actions put the EE (within --success-radius of the
    goal's), beside the logged actions (oracle), the mean action and random actions; latent distances
    are diagnostics. With --closed-loop: MPC episodes in the reference world (fcs_data.world) driven
    through the planning server as Isaac Sim drives it, each solver preset against the oracle, mean and
    random baselines; success rate, EE distance, steps, time and FLOPs per plan, a PNG strip per episode.
    """
    from fcs_train.run_dir import RunDir

    expect_input(store, "store", role="an fcs store")
    expect_input(checkpoint, "fcs_checkpoint", role="an fcs checkpoint")
    cfg = _plan_config(config, set_)
    run = RunDir.of_checkpoint(checkpoint)
    if closed_loop:
        out = out or (run.closed_loop if run is not None else checkpoint.parent / "closed_loop")
        report = _closed_loop(store, checkpoint, cfg, device, episodes=episodes, seed=seed, solvers=solvers,
                              baselines=baselines, goal_steps=goal_steps, max_steps=max_steps,
                              success_radius=success_radius, out=out)
        show = print_closed_loop
    else:
        from fcs_train.planning.evaluate import evaluate_planning
        from fcs_train.planning.mpc import Planner

        planner = Planner.from_checkpoint(checkpoint, cfg, store=store, device=device)
        out = out or (run.plan_eval if run is not None else checkpoint.parent / "plan_eval")
        with progress_bar("plan", "pairs") as update:
            report = evaluate_planning(planner, store, pairs=pairs, seed=seed, success_radius=success_radius,
                                       random_samples=random_samples, out_dir=out, progress=update)
        show = print_plan_eval
    if json_path is not None and str(json_path) == "-":
        sys.stdout.write(report.to_json() + "\n")
        return
    show(report)
    console.print(f"PNGs: {out}")
    if json_path is not None:
        write_json(json_path, report.to_json())
        console.print(f"wrote {json_path}")


def _closed_loop(store: Path, checkpoint: Path, cfg, device: str, *, episodes: int, seed: int, solvers: str,
                 baselines: str, goal_steps: int | None, max_steps: int | None, success_radius: float, out: Path):
    """`fcs plan-eval --closed-loop`: the world of STORE, a server per solver preset, the baselines."""
    from pydantic import ValidationError

    from fcs_data.world import world_spec_from_store
    from fcs_train.planning.bundle import load_planning_model
    from fcs_train.planning.closed_loop import check_baselines, evaluate_closed_loop
    from fcs_train.planning.config import solver_configs

    names = [n.strip() for n in solvers.split(",") if n.strip()]
    try:
        planners = solver_configs(cfg, names)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--solvers") from e
    try:
        chosen = check_baselines([b.strip() for b in baselines.split(",") if b.strip()])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--baselines") from e
    bundle = load_planning_model(checkpoint, store=store, device=device, amp=cfg.amp)
    steps = goal_steps or cfg.horizon * bundle.frameskip
    try:
        spec = world_spec_from_store(store, goal_steps=steps, success_radius=success_radius)
    except ValidationError as e:
        raise typer.BadParameter(config_error(e), param_hint="--goal-steps") from e
    with progress_bar("closed loop", "episodes") as update:
        return evaluate_closed_loop(bundle, spec, planners, seeds=list(range(seed, seed + episodes)),
                                    baselines=chosen, max_steps=max_steps, out_dir=out, progress=update)


@command(examples=["fcs serve --checkpoint runs/dino_wm/latest/checkpoints/best.pt --host 0.0.0.0 --port 8765"])
def serve(
    checkpoint: CheckpointOpt,
    host: Annotated[str, typer.Option(help="interface to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one)")] = 8765,
    config: PlanConfigOpt = None,
    set_: PlanSetOpt = None,
    store: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="the store the model was trained "
                                                                                  "on (only for a checkpoint imported "
                                                                                  "from the reference)")] = None,
    plan_timeout: Annotated[float, typer.Option(min=1.0, help="seconds a plan may take before it is cancelled")]
    = 300.0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
) -> None:
    """Serve plans to Isaac Sim (or any process) over a WebSocket, msgpack messages, never pickle.

    Clients use fcs_train.planning.client.PlannerClient (numpy, msgpack and websockets only):
    set_goal(image, proprio), plan(image, proprio, executed_actions) -> raw actions, reset(), info().
    Every message is validated and a bad one gets an error reply; each plan's cost and time are
    logged. Protocol and an MPC client example: docs/PLANNING.md. Ctrl-C stops the server.
    """
    import asyncio
    import logging

    from rich.logging import RichHandler

    from fcs_train.planning.bundle import load_planning_model
    from fcs_train.planning.server import PlanningServer

    expect_input(checkpoint, "fcs_checkpoint", role="an fcs checkpoint")
    if store is not None:
        expect_input(store, "store", role="an fcs store")
    cfg = _plan_config(config, set_)
    bundle = load_planning_model(checkpoint, store=store, device=device, amp=cfg.amp)
    server = PlanningServer(bundle, cfg, plan_timeout=plan_timeout)
    logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=err_console, show_path=False, markup=False)])
    logging.getLogger("websockets").setLevel(logging.WARNING)
    meta = server.metadata()
    h, w, _ = bundle.image_shape
    console.print(f"[bold]fcs serve[/] {escape(str(checkpoint))} ({bundle.layout.name}) on {bundle.device}: "
                  f"{cfg.describe_solver()}, horizon {cfg.horizon} x frameskip {bundle.frameskip}")
    console.print(f"  send: image ({h}, {w}, 3) uint8 RGB, proprio {meta['proprio']['field']} "
                  f"({meta['proprio']['dim']},) {meta['proprio']['unit']}; get: "
                  f"({cfg.execute_steps * bundle.frameskip}, {bundle.action_dim}) raw actions "
                  f"[{', '.join(f['name'] for f in meta['action']['fields'])}]")
    for note in bundle.notes:
        console.print(f"  note: {escape(note)}")

    def ready(bound: int) -> None:
        console.print(f"listening on ws://{host}:{bound} (Ctrl-C to stop)")

    try:
        asyncio.run(server.serve(host, port, on_ready=ready))
    except KeyboardInterrupt:
        err_console.print("[yellow]stopped[/]")
        raise typer.Exit(130) from None
