"""Commands on logger datasets and stores: `fcs layouts`, `synth`, `validate`, `convert`, `info`."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fcs.cli.core import (
    LayoutOpt,
    PlainHelpGroup,
    app,
    command,
    expect_input,
    layout_option,
    parse_episode_spec,
    write_json,
)
from fcs.cli.views import console, err_console, print_detection, print_report, progress_bar

layouts_app = typer.Typer(help="The logger layouts fcs reads: list them, print one, or detect a dataset's.",
                          epilog="[bold]Examples[/]\n\n  fcs layouts\n  fcs layouts detect ~/data/run1",
                          add_completion=False, rich_markup_mode="rich", cls=PlainHelpGroup)
app.add_typer(layouts_app, name="layouts")


@layouts_app.callback(invoke_without_command=True)
def layouts(ctx: typer.Context) -> None:
    """List the built-in logger layouts and their variants (`fcs layouts show NAME` prints one)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.markup import escape
    from rich.table import Table

    from fcs_data.schemas import DEFAULT_LAYOUT, builtin_layouts

    table = Table()
    table.add_column("name", no_wrap=True)
    for col in ("state", "action", "frames", "actions", "variants"):
        table.add_column(col, overflow="fold")
    for name, lay in builtin_layouts().items():
        o = lay.observation
        step = f", {'0' * (lay.sources.step_digits or 3)}.h5" if lay.sources.kind == "per_step_h5" else ""
        table.add_row(
            name + (" (default)" if name == DEFAULT_LAYOUT else ""),
            f"{lay.state_dim}: " + ", ".join(f.name for f in lay.state),
            f"{lay.action_dim}: " + ", ".join(f.name for f in lay.action),
            f"{o.height}x{o.width}x{o.channels} {o.dtype} {o.channel_order}{step}",
            lay.action_alignment,
            " ".join(f"+{v}" for v in lay.variants) or "-",
        )
    console.print(table)
    console.print("variants (NAME+variant, one per group; detected from the data when --layout is not given):")
    for name, lay in builtin_layouts().items():
        for v, d in lay.variants.items():
            console.print(f"  {name}+{v}: {escape(d.description)}")


@command(name="show", group=layouts_app, examples=["fcs layouts show franka_cube_stack_min+bgr > my_layout.yaml"])
def layouts_show(
    name: Annotated[str, typer.Argument(help="a layout, with variants (franka_cube_stack_min+rgb), or a file")],
) -> None:
    """Print a layout in full (YAML), to copy and adapt (then --layout my.yaml)."""
    import yaml

    console.print(yaml.safe_dump(layout_option(name).model_dump(mode="json"), sort_keys=False), end="")


@command(name="detect", group=layouts_app, examples=["fcs layouts detect ~/data/2025_01_20_cube_stack"])
def layouts_detect(
    dataset: Annotated[Path, typer.Argument(exists=True, help="a logger dataset directory, or an Isaac Lab / "
                                                              "robomimic HDF5 file")],
) -> None:
    """Which built-in layout (and variants) a dataset is in, and the evidence.

    Judged by file names, array names, shapes, dtypes and value ranges, and where the data can tell,
    by content: the channel order, the action alignment, the quaternion order, fused cameras. Exit 1
    when no layout matches (each layout's first mismatch is listed) or several do.
    """
    from rich.markup import escape

    from fcs_data.sources.detect import detect_layout

    det = detect_layout(dataset)
    console.print(det.layout.name)
    for line in det.evidence:
        console.print(f"  evidence: {escape(line)}")
    for line in det.assumed:
        console.print(f"  [yellow]assumed:[/] {escape(line)}")


@command(name="preview", group=layouts_app, examples=["fcs layouts preview ~/data/run1 --out first_frames.png", "fcs layouts preview ~/data/run1 --layout franka_cube_stack_min+bgr --out bgr.png"])
def layouts_preview(
    dataset: Annotated[Path, typer.Argument(exists=True, help="a logger dataset directory or HDF5 file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write")],
    layout: LayoutOpt = None,
    episode: Annotated[int, typer.Option(min=0, help="the episode to show")] = 0,
    max_frames: Annotated[int, typer.Option(min=1, help="frames on the sheet (the episode's first ones)")] = 16,
) -> None:
    """A contact sheet of an episode's first frames as fcs will train on them.

    The frames go through the layout's conversions (BGR -> RGB, float 0..255 -> uint8) exactly as
    `fcs convert` applies them. If the colours look wrong (a red cube shown blue), the data's channel order
    is not the one the layout declares: pass the other variant (--layout NAME+rgb, or +bgr) or set
    observation.channel_order in a layout file.
    """
    from fcs_data.preview import source_contact_sheet
    from fcs_data.sources.conventions import conversion_notes
    from fcs_data.sources.detect import detect_layout

    if layout is not None:
        lay = layout_option(layout)
    else:
        det = detect_layout(dataset)
        lay = det.layout
        print_detection(lay.name, det.lines)
    sheet, n = source_contact_sheet(dataset, lay, episode, max_frames=max_frames)
    sheet.save(out)
    notes = [note for note in conversion_notes(lay) if note.startswith("frames")]
    console.print(f"wrote {out}: episode {episode}, first {n} frames as layout {lay.name} converts them"
                  + (f" ({'; '.join(notes)})" if notes else " (unchanged)"))


@command(examples=["fcs synth demo/raw --episodes 20", "fcs synth demo/prim --layout franka_cube_stack_primitive"])
def synth(
    out: Annotated[Path, typer.Argument(help="directory to create")],
    episodes: Annotated[int, typer.Option(min=0, help="number of episodes")] = 8,
    min_len: Annotated[int, typer.Option(min=2, help="shortest episode (steps)")] = 40,
    max_len: Annotated[int, typer.Option(min=2, help="longest episode (steps)")] = 80,
    seed: Annotated[int, typer.Option(help="random seed; episode i depends only on (seed, i)")] = 0,
    layout: LayoutOpt = None,
    previews: Annotated[int, typer.Option(min=0, help="PNG previews per episode in NNNNNN/images/")] = 0,
    step_digits: Annotated[int | None, typer.Option(min=1, help="per-step HDF5 name width, to break the layout's "
                                                                "(default: the layout's)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace OUT if it exists")] = False,
) -> None:
    """Write a synthetic dataset in a logger layout (v1 by default) and variant, e.g. --layout
    franka_cube_stack_primitive+6d+cams2: rendered frames, consistent states, the files the logger writes."""
    from fcs_data.synth import synthesize

    if max_len < min_len:
        raise typer.BadParameter(f"--max-len {max_len} < --min-len {min_len}", param_hint="--max-len")
    lay = layout_option(layout)
    with progress_bar("synth") as update:
        path = synthesize(out, episodes=episodes, min_len=min_len, max_len=max_len, seed=seed, layout=lay,
                          previews=previews, step_digits=step_digits, overwrite=overwrite, progress=update)
    console.print(f"wrote {episodes} episodes ({lay.name}) to {path}")


@command(examples=["fcs validate ~/data/run1", "fcs validate ~/data/run1 --json - | jq .summary", "fcs validate demo/store.zarr --strict"])
def validate(
    path: Annotated[Path, typer.Argument(exists=True, help="a logger dataset directory or an fcs store")],
    layout: Annotated[
        str | None,
        typer.Option("--layout", "-l", help="layout of a logger dataset (NAME, NAME+variant or a YAML/JSON file); "
                                            "detected when not given; stores carry theirs"),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full report as JSON here ('-': stdout, "
                                                             "the table goes to stderr); written even when no "
                                                             "layout matches (docs/REPORT.md)")] = None,
    strict: Annotated[bool, typer.Option(help="warnings fail too (exit 1)")] = False,
    episodes: Annotated[str | None, typer.Option(help="only these episodes, e.g. 0-9,15")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="processes checking episodes in parallel")] = None,
    quick: Annotated[bool, typer.Option(help="stores: check metadata and shapes, skip decoding and "
                                             "checksumming every chunk")] = False,
) -> None:
    """Check a dataset or store; print each kind of finding with its first examples.

    A store is checked in full by default: every chunk of every array is read, checksummed and
    decoded, and each damaged or missing one is reported with its episode and frames.
    Exit 0 when clean (warnings allowed unless --strict), 1 on errors, 2 on a bad command line.
    """
    from fcs_data.errors import DetectionError
    from fcs_data.validation import detection_report
    from fcs_data.validation import validate as run_validate

    lay = layout_option(layout) if layout is not None else None
    selected = parse_episode_spec(episodes) if episodes else None
    to_stdout = json_out is not None and str(json_out) == "-"
    out = err_console if to_stdout else console
    with progress_bar("validate") as update:
        try:
            report = run_validate(path, lay, episodes=selected, workers=workers, quick=quick, progress=update)
        except LookupError as e:
            raise typer.BadParameter(str(e).strip("'\""), param_hint="--episodes") from e
        except DetectionError as e:
            report = detection_report(path, e)
    print_detection(report.layout, report.detected, out)
    print_report(report, strict, out)
    if to_stdout:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    elif json_out is not None:
        json_out.write_text(report.model_dump_json(indent=2))
        out.print(f"full report: {json_out}")
    raise typer.Exit(report.exit_code(strict))


class Target(StrEnum):
    zarr = "zarr"


@command(examples=["fcs convert ~/data/run1 -o run1.zarr", "fcs convert ~/data/run1 -o run1.zarr --resume", "fcs convert ~/data/run1 --layout franka_cube_stack_min+bgr --skip-bad"])
def convert(
    src: Annotated[Path, typer.Argument(exists=True, help="logger dataset directory (or an Isaac Lab HDF5 file)")],
    to: Annotated[Target, typer.Option("--to", help="output format")] = Target.zarr,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="store to create (default: SRC.zarr)")] = None,
    layout: LayoutOpt = None,
    codec: Annotated[str, typer.Option(help="frame codec: auto (lz4 if it saves >= 15 % on a sample, else none), "
                                           "none (fastest reads), lz4, lz4-bit or zstd (smaller, slower reads)")]
    = "auto",
    workers: Annotated[int | None, typer.Option(min=1, help="worker processes (default: min(4, cores))")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted conversion (OUT.partial)")] = False,
    skip_bad: Annotated[bool, typer.Option(help="convert the episodes without errors, list the others")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace OUT (and any OUT.partial)")] = False,
    verify: Annotated[bool, typer.Option(help="re-read every frame and array and compare with the source")] = False,
    shard_frames: Annotated[int, typer.Option(min=1, help="frames per shard file (see docs/FORMAT.md)")] = 128,
) -> None:
    """Convert a logger dataset into one chunked, compressed fcs Zarr store.

    Validates first (errors refuse, unless --skip-bad), writes OUT.partial and renames it to OUT
    only when complete; Ctrl-C or a crash leaves no OUT, and --resume continues where it stopped.
    """
    from fcs.cli.views import Phases, print_conversion
    from fcs_data.converters.to_zarr import ConvertProgress, convert_to_zarr
    from fcs_data.errors import ConversionRefused
    from fcs_data.format import CODEC_CHOICES

    if codec not in CODEC_CHOICES:
        raise typer.BadParameter(f"{codec!r}; choices: {', '.join(CODEC_CHOICES)}", param_hint="--codec")
    expect_input(src, "logger_dataset", role="a logger dataset")
    lay = layout_option(layout) if layout is not None else None
    try:
        with Phases() as phases:
            result = convert_to_zarr(
                src, out, layout=lay, codec=codec, workers=workers, resume=resume, skip_bad=skip_bad,
                overwrite=overwrite, verify=verify, shard_frames=shard_frames, command=sys.argv,
                progress=ConvertProgress(
                    validate=phases.callback("validate"), episodes=phases.callback("episodes"),
                    frames=phases.throughput("frames"), verify=phases.callback("verify", "units"),
                ),
            )
    except ConversionRefused as e:
        print_report(e.report, strict=False)
        err_console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        target = out or src.with_name(src.name + ".zarr")
        err_console.print(f"[yellow]interrupted[/]: no {target} was written; continue with the same command "
                          "and --resume")
        raise typer.Exit(130) from None
    print_detection(result.report.layout, result.detected)
    print_conversion(result)


@command(examples=["fcs info run1.zarr", "fcs info run1.zarr --json -", "fcs info run1.zarr --preview 3 --out ep3.png"])
def info(
    store: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="an fcs store")],
    preview: Annotated[int | None, typer.Option(help="write a contact sheet of this episode (with --out)")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG file for --preview")] = None,
    max_frames: Annotated[int, typer.Option(min=1, help="frames on the contact sheet")] = 48,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the summary as JSON here ('-': stdout, "
                                                                 "and no tables)")] = None,
) -> None:
    """Summarise a store: episodes, frames, lengths, codec, size, statistics; or preview an episode.

    Example: fcs info demo/store.zarr --json - | jq .num_episodes
    """
    import json

    from fcs.cli.views import print_store_info, store_summary
    from fcs_data.preview import contact_sheet
    from fcs_data.store import open_store

    expect_input(store, "store", role="an fcs store")
    s = open_store(store)
    if preview is None:
        if out is not None:
            raise typer.BadParameter("--out needs --preview EPISODE", param_hint="--out")
        if json_out is not None:
            write_json(json_out, json.dumps(store_summary(s), indent=2))
            if str(json_out) == "-":
                return
        print_store_info(s)
        return
    if out is None:
        raise typer.BadParameter("--preview needs --out sheet.png", param_hint="--out")
    if not 0 <= preview < s.num_episodes:
        raise typer.BadParameter(f"episode {preview} not in 0..{s.num_episodes - 1}", param_hint="--preview")
    contact_sheet(s, preview, max_frames=max_frames).save(out)
    console.print(f"wrote {out}: episode {preview}, {s.episode_lengths[preview]} frames")
