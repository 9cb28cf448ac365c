"""`fcs runs`: the training runs under a folder, their state and figures; `fcs runs compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from fcs.cli.core import PlainHelpGroup, app, command, fail, write_json
from fcs.cli.views import console

runs_app = typer.Typer(help="Training runs: list them with their state and best figures, or compare some.",
                       epilog="[bold]Examples[/]\n\n  fcs runs\n  fcs runs --root runs/dino_wm --json -",
                       rich_markup_mode="rich", cls=PlainHelpGroup)
app.add_typer(runs_app, name="runs")

RootOpt = Annotated[Path, typer.Option("--root", help="folder holding the runs")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="write it as JSON here ('-': stdout, and no table)")]


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@runs_app.callback(invoke_without_command=True)
def runs(ctx: typer.Context, root: RootOpt = Path("runs"), json_out: JsonOpt = None) -> None:
    """List the runs under ROOT (default runs/): state, step, best validation loss, final skill.

    Example: fcs runs --root runs/tiny
    """
    if ctx.invoked_subcommand is not None:
        return
    from fcs_train.runs import find_runs

    found = find_runs(root)
    if json_out is not None:
        write_json(json_out, json.dumps([r.summary() for r in found], indent=2))
        if str(json_out) == "-":
            return
    if not found:
        console.print(f"no runs under {root}")
        return
    t = Table(title=f"runs under {root}", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("run", "state", "step", "best val loss", "z visual skill", "z proprio skill"):
        t.add_column(col, justify="left" if col in ("run", "state") else "right", no_wrap=col == "run")
    for r in found:
        final = r.final()
        t.add_row(str(r.path), r.state, str(r.step), _fmt(r.best()), _fmt(final.get("val_z_visual_skill")),
                  _fmt(final.get("val_z_proprio_skill")))
    console.print(t, crop=False)


@command(name="compare", group=runs_app, examples=["fcs runs compare runs/dino_wm/2026-12-01_10-00-00 runs/dino_wm/latest"])
def compare(
    paths: Annotated[list[Path], typer.Argument(metavar="RUN...", help="run directories (two or more)")],
    json_out: JsonOpt = None,
) -> None:
    """Compare runs: the settings that differ, then the final figures side by side.

    The skill is 1 - loss / (the loss of copying the last frame): above 0 the model has learned
    dynamics. When several settings differ, a difference in the figures cannot be put down to
    any one of them.

    Example: fcs runs compare runs/tiny/2026-12-03_10-00-00 runs/tiny/latest
    """
    from fcs_train.runs import config_differences, read_run

    if len(paths) < 2:
        raise typer.BadParameter("give two or more run directories", param_hint="RUN...")
    missing = [p for p in paths if not (p / "config.yaml").is_file()]
    if missing:
        fail(f"{missing[0]}: not a run directory (no config.yaml)", 2)
    runs = [read_run(p) for p in paths]
    diff = config_differences(runs)
    finals = [r.final() for r in runs]
    if json_out is not None:
        write_json(json_out, json.dumps({"runs": [str(p) for p in paths], "differences": diff,
                                         "final": finals, "state": [r.state for r in runs]}, indent=2))
        if str(json_out) == "-":
            return
    t = Table(title="settings that differ", title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("setting", no_wrap=True)
    for i, _ in enumerate(runs):
        t.add_column(f"run {i + 1}", justify="right")
    for key, values in diff.items():
        t.add_row(key, *(_fmt(v) for v in values))
    if not diff:
        t.add_row("(none: the runs share every setting)", *("" for _ in runs))
    console.print(t, crop=False)
    f = Table(title="final figures (last validation)", title_justify="left", box=box.SIMPLE_HEAD)
    f.add_column("figure", no_wrap=True)
    for i, _ in enumerate(runs):
        f.add_column(f"run {i + 1}", justify="right")
    keys = sorted({k for fin in finals for k in fin})
    f.add_row("state, step", *(f"{r.state}, {r.step}" for r in runs))
    for k in keys:
        f.add_row(k.removeprefix("val_"), *(_fmt(fin.get(k)) for fin in finals))
    console.print(f, crop=False)
    for i, p in enumerate(paths, 1):
        console.print(f"run {i}: {p}")
    if len(diff) > 1:
        console.print(f"[yellow]note:[/] {len(diff)} settings differ ({', '.join(diff)}): a difference in the figures "
                      "cannot be put down to any one of them")
