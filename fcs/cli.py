"""`fcs`: validate, convert and train on Isaac Sim Franka cube-stacking episodes.

Exit codes: 0 success, 1 the data or the job failed, 2 the command line was wrong, 130 Ctrl-C.
A failure is one line saying what, where and what to do, never a traceback; an unexpected internal
error is one line plus the file holding its traceback (`FCS_DEBUG=1` prints it instead).
"""

from __future__ import annotations

import datetime
import errno
import functools
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from typer.exceptions import TyperException

from fcs import __version__
from fcs.views import console, err_console, print_detection, print_plan_eval, print_report, progress_bar
from fcs_data.errors import FcsError

TRAIN_EXTRAS = {"timm", "torchmetrics", "matplotlib", "torchvision", "websockets", "msgpack"}

app = typer.Typer(
    name="fcs",
    help="Isaac Sim Franka cube-stacking episodes -> validated Zarr stores -> DINO-WM world models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

LayoutOpt = Annotated[
    str | None,
    typer.Option("--layout", "-l", help="built-in layout (see `fcs layouts`, variants as NAME+variant) or a layout "
                                        "YAML/JSON file; detected from the data when not given"),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _os_error(e: OSError) -> str:
    what = e.strerror or str(e)
    where = f"{e.filename}: " if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}{what}: the disk is full; free space and run the command again"
    if isinstance(e, FileExistsError | FileNotFoundError | PermissionError) and not e.filename:
        return str(e)
    return f"{where}{what}"


def _crash_report(e: BaseException) -> NoReturn:
    """An error fcs did not expect: one line, the traceback in a file (or on screen with FCS_DEBUG=1)."""
    if os.environ.get("FCS_DEBUG"):
        raise e
    from fcs_data._cache import cache_dir

    text = "".join(traceback.format_exception(e))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for folder in (cache_dir() / "crash", Path("/tmp")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"fcs-crash-{stamp}-{os.getpid()}.txt"
            path.write_text(f"fcs {__version__}\n{' '.join(sys.argv)}\n\n{text}")
            break
        except OSError:
            path = None
    first = (str(e).strip().splitlines() or [""])[0]
    where = f"the traceback is in {path}" if path else "the traceback could not be written"
    fail(f"internal error ({type(e).__name__}: {first}); {where}; set FCS_DEBUG=1 to print it, and please "
         "report it")


def _reflow(doc: str) -> str:
    """Docstring paragraphs as single lines (the terminal wraps them); indented or listed lines stay."""
    out = []
    for para in doc.split("\n\n"):
        lines = para.splitlines()
        keep = any(line.startswith(("  ", "- ")) for line in lines)
        out.append(para if keep else " ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def command(fn: Callable | None = None, *, name: str | None = None, group: typer.Typer | None = None) -> Callable:
    """Register a command whose failures print one line: exit 1 (2 for the command line, 130 for Ctrl-C)."""

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, TyperException, KeyboardInterrupt):
                raise
            except FcsError as e:
                fail(str(e))
            except OSError as e:
                fail(_os_error(e))
            except ImportError as e:
                if (e.name or "").split(".")[0] in TRAIN_EXTRAS:
                    fail(f"{e.name} is not installed: this command needs the training extras "
                         "(pip install 'fcs[train]')")
                _crash_report(e)
            except Exception as e:
                _crash_report(e)

        return (group or app).command(name=name, help=_reflow(inspect.getdoc(fn) or ""))(wrapper)

    return register(fn) if fn is not None else register


def parse_episode_spec(spec: str) -> list[int]:
    """`"0-9,15,20-22"` -> [0, ..., 9, 15, 20, 21, 22]."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise typer.BadParameter(f"{part!r} is not an episode number or range like 3-7", param_hint="--episodes")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise typer.BadParameter(f"range {part!r} runs backwards", param_hint="--episodes")
        out.update(range(lo, hi + 1))
    return sorted(out)


def _layout(name: str | None):
    from fcs_data.schemas import get_layout

    try:
        return get_layout(name)
    except (KeyError, FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e).strip("'\""), param_hint="--layout") from e


def _config_error(e: Exception) -> str:
    """A config's validation errors as `section.key: message`, one per line (no pydantic URLs)."""
    from pydantic import ValidationError

    if not isinstance(e, ValidationError):
        return str(e)
    lines = []
    for err in e.errors():
        where = ".".join(str(part) for part in err["loc"])
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}" if where else err["msg"])
    return "; ".join(lines)


def _version(value: bool) -> None:
    if value:
        console.print(f"fcs {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")]
    = False,
) -> None:
    """Isaac Sim Franka cube-stacking episodes -> validated Zarr stores -> DINO-WM world models."""


layouts_app = typer.Typer(help="The logger layouts fcs reads: list them, print one, or detect a dataset's.",
                          add_completion=False, rich_markup_mode="rich")
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


@command(name="show", group=layouts_app)
def layouts_show(
    name: Annotated[str, typer.Argument(help="a layout, with variants (franka_cube_stack_min+rgb), or a file")],
) -> None:
    """Print a layout in full (YAML), to copy and adapt (then --layout my.yaml)."""
    import yaml

    console.print(yaml.safe_dump(_layout(name).model_dump(mode="json"), sort_keys=False), end="")


@command(name="detect", group=layouts_app)
def layouts_detect(
    dataset: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="a logger dataset directory")],
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


@command
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
    lay = _layout(layout)
    with progress_bar("synth") as update:
        path = synthesize(out, episodes=episodes, min_len=min_len, max_len=max_len, seed=seed, layout=lay,
                          previews=previews, step_digits=step_digits, overwrite=overwrite, progress=update)
    console.print(f"wrote {episodes} episodes ({lay.name}) to {path}")


@command
def validate(
    path: Annotated[Path, typer.Argument(exists=True, help="a logger dataset directory or an fcs store")],
    layout: Annotated[
        str | None,
        typer.Option("--layout", "-l", help="layout of a logger dataset (NAME, NAME+variant or a YAML/JSON file); "
                                            "detected when not given; stores carry theirs"),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full report as JSON here")] = None,
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
    from fcs_data.validation import validate as run_validate

    lay = _layout(layout) if layout is not None else None
    selected = parse_episode_spec(episodes) if episodes else None
    with progress_bar("validate") as update:
        try:
            report = run_validate(path, lay, episodes=selected, workers=workers, quick=quick, progress=update)
        except LookupError as e:
            raise typer.BadParameter(str(e).strip("'\""), param_hint="--episodes") from e
    print_detection(report.layout, report.detected)
    print_report(report, strict)
    if json_out is not None:
        json_out.write_text(report.model_dump_json(indent=2))
        console.print(f"full report: {json_out}")
    raise typer.Exit(report.exit_code(strict))


class Target(StrEnum):
    zarr = "zarr"


@command
def convert(
    src: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="logger dataset directory")],
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
    from fcs.views import Phases, print_conversion
    from fcs_data.converters.to_zarr import ConversionRefused, ConvertProgress, convert_to_zarr
    from fcs_data.format import CODEC_CHOICES

    if codec not in CODEC_CHOICES:
        raise typer.BadParameter(f"{codec!r}; choices: {', '.join(CODEC_CHOICES)}", param_hint="--codec")
    lay = _layout(layout) if layout is not None else None
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


@command
def info(
    store: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="an fcs store")],
    preview: Annotated[int | None, typer.Option(help="write a contact sheet of this episode (with --out)")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG file for --preview")] = None,
    max_frames: Annotated[int, typer.Option(min=1, help="frames on the contact sheet")] = 48,
) -> None:
    """Summarise a store: episodes, frames, lengths, codec, size, statistics; or preview an episode."""
    from fcs.views import print_store_info
    from fcs_data.preview import contact_sheet
    from fcs_data.store import open_store

    s = open_store(store)
    if preview is None:
        if out is not None:
            raise typer.BadParameter("--out needs --preview EPISODE", param_hint="--out")
        print_store_info(s)
        return
    if out is None:
        raise typer.BadParameter("--preview needs --out sheet.png", param_hint="--out")
    if not 0 <= preview < s.num_episodes:
        raise typer.BadParameter(f"episode {preview} not in 0..{s.num_episodes - 1}", param_hint="--preview")
    contact_sheet(s, preview, max_frames=max_frames).save(out)
    console.print(f"wrote {out}: episode {preview}, {s.episode_lengths[preview]} frames")


@command(name="import-checkpoint")
def import_checkpoint(
    old: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="reference DINO-WM checkpoint (.pth)")],
    new: Annotated[Path, typer.Argument(help="fcs checkpoint to write")],
    overwrite: Annotated[bool, typer.Option(help="replace NEW if it exists")] = False,
    image_size: Annotated[int | None, typer.Option(min=16, help="image size the model was trained at, when the "
                                                                "tensors leave it open")] = None,
    num_hist: Annotated[int | None, typer.Option(min=1, help="context frames, when the tensors leave it open")] = None,
    frameskip: Annotated[int | None, typer.Option(min=1, help="frameskip of the run (the action encoder takes "
                                                              "frameskip x action dim inputs)")] = None,
    action_dim: Annotated[int | None, typer.Option(min=1, help="raw action dimension (instead of --frameskip)")]
    = None,
) -> None:
    """Convert a reference DINO-WM checkpoint (pickled modules and optimizers) into an fcs checkpoint.

    Nothing in OLD is executed and the reference code is not needed: every class in the file is read
    as an inert container, and any global outside the reference's modules, torch.nn, torch.optim,
    accelerate and DINOv2 refuses the import. The model's shape (image size, num_hist, concat_dim,
    dims) comes from the tensors and the run's hydra.yaml when it sits beside checkpoints/; the
    options settle what neither says. Optimizer states (Adam, AdamW) are kept when every parameter maps
    onto fcs's optimizers: `fcs train --resume-from-reference NEW` continues with them.
    """
    from fcs_train.reference_import import Hints, import_reference_checkpoint

    if new.exists() and not overwrite:
        raise FileExistsError(f"{new} exists; pass --overwrite to replace it")
    summary = import_reference_checkpoint(old, new, Hints(image_size, num_hist, frameskip, action_dim))
    for part, n in summary["parts"].items():
        console.print(f"  {part:16} {n:>12,} values")
    cfg, dims = summary["model_config"], summary["dims"]
    console.print(f"  model: image {cfg.image_size}, num_hist {dims['num_hist']}, frameskip {dims['frameskip']}, "
                  f"proprio {dims['proprio_dim']}, action {dims['action_dim']}, concat_dim {cfg.concat_dim}, "
                  f"predictor depth {cfg.predictor.depth} x {cfg.predictor.heads} heads")
    for note in summary["notes"]:
        console.print(f"  note: {note}")
    if summary["dropped"]:
        console.print(f"  dropped (not model weights): {', '.join(summary['dropped'])}")
    console.print(f"wrote {new} (epoch {summary['epoch']}); continue training with "
                  f"fcs train ... --resume-from-reference {new}, or start from its weights with "
                  f"--set train.init_from={new}")


@command
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", exists=True, dir_okay=False,
                                                help="YAML config (sections data, model, optim, train, log)")] = None,
    preset: Annotated[str | None, typer.Option(help="start from a preset: tiny (CPU demo) or full")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set train.batch_size=8 "
                                                                 "(repeatable)")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="print the resolved config and exit")] = False,
    resume: Annotated[bool, typer.Option(help="continue the run in train.run_dir from checkpoints/latest.pt")]
    = False,
    resume_from_reference: Annotated[Path | None, typer.Option(
        "--resume-from-reference", exists=True, dir_okay=False,
        help="continue a reference DINO-WM run: its weights, optimizer moments and epoch count (a checkpoint from "
             "fcs import-checkpoint, or the reference .pth itself, imported first)")] = None,
    progress: Annotated[bool, typer.Option(help="live progress line (terminals only)")] = True,
) -> None:
    """Train DINO-WM on an fcs store; several GPUs (or CPU processes) with torchrun.

    The resolved config is saved in the run directory with metrics.jsonl, checkpoints (latest,
    best, every k epochs), PNG grids and loss plots. Ctrl-C writes a checkpoint first; --resume
    continues exactly where it stopped. Multi-process: torchrun --nproc_per_node N -m fcs train ...
    """
    from pydantic import ValidationError

    from fcs_train.config import PRESETS, load_config

    if preset is not None and preset not in PRESETS:
        raise typer.BadParameter(f"{preset!r}; presets: {', '.join(PRESETS)}", param_hint="--preset")
    try:
        cfg = load_config(config, preset=preset, overrides=set_ or [])
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(_config_error(e), param_hint="--config/--set") from e
    if resume_from_reference is not None:
        if resume:
            raise typer.BadParameter("use --resume or --resume-from-reference, not both", param_hint="--resume")
        cfg.train.init_from = _fcs_checkpoint(resume_from_reference, cfg)
        cfg.train.init_optimizers = True
    if print_config:
        console.print(cfg.to_yaml(), end="")
        return
    from fcs_train.trainer import Trainer

    trainer = Trainer(cfg, resume=resume, show_progress=progress)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        trainer.close()


def _fcs_checkpoint(path: Path, cfg) -> Path:
    """`path` if it is an fcs checkpoint, else the reference checkpoint imported into the run directory."""
    from fcs_train.checkpoint import CheckpointError, load_checkpoint
    from fcs_train.reference_import import Hints, import_reference_checkpoint

    try:
        load_checkpoint(path)
        return path
    except CheckpointError:
        pass
    out = cfg.train.run_dir / "checkpoints" / "imported_reference.pt"
    summary = import_reference_checkpoint(path, out, Hints(cfg.model.image_size, cfg.data.num_hist,
                                                            cfg.data.frameskip))
    console.print(f"imported {path} -> {out} (epoch {summary['epoch']}; optimizers: "
                  f"{', '.join(summary['optimizers']) or 'none'})")
    return out


@command
def dynamics(
    store: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="an fcs store")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", exists=True, dir_okay=False,
                                             help="an fcs checkpoint: its encoder embeds the frames")],
    max_frameskip: Annotated[int, typer.Option(min=1, help="frameskips 1..N")] = 10,
    pairs: Annotated[int, typer.Option(min=1, help="frame pairs per frameskip")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
) -> None:
    """How much the embeddings change between frames fs apart, on the validation episodes.

    Each row is the loss of the trivial predictor that repeats the last context frame, at that
    frameskip, in the units of z_visual_loss and z_proprio_loss: a model trained at frameskip fs
    has learned dynamics only where its validation loss is clearly below that row (skill > 0).
    """
    from rich.table import Table

    from fcs_data.store import open_store
    from fcs_train.checkpoint import load_world_model
    from fcs_train.dist import resolve_device
    from fcs_train.dynamics import checkpoint_split, embedding_change

    dev = resolve_device(device)
    model, ckpt = load_world_model(checkpoint, dev)
    s = open_store(store)
    episodes, stats = checkpoint_split(s, ckpt)
    with progress_bar("embed", "frameskips") as update:
        rows = []
        for fs in range(1, max_frameskip + 1):
            rows += embedding_change(model, s, stats, episodes=episodes, frameskips=range(fs, fs + 1), pairs=pairs,
                                     device=dev)
            update(fs, max_frameskip)
    trained = ckpt.get("dims", {}).get("frameskip")
    table = Table(title=f"embedding change between frames fs apart ({len(episodes)} validation episodes of {store})",
                  title_justify="left")
    for col in ("frameskip", "pairs", "visual", "x fs=1", "proprio"):
        table.add_column(col, justify="right")
    base = rows[0].visual or 1.0
    for r in rows:
        mark = " <- this checkpoint's frameskip" if r.frameskip == trained else ""
        table.add_row(f"{r.frameskip}{mark}", str(r.pairs), f"{r.visual:.4g}", f"{r.visual / base:.2f}",
                      f"{r.proprio:.4g}")
    console.print(table)
    console.print("each row is the z_visual_loss / z_proprio_loss of copying the last frame at that frameskip; "
                  "compare a run's validation losses with its row (skill = 1 - loss / copy)")


@command(name="train-decoder")
def train_decoder_cmd(
    run: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="a run directory of fcs train")],
    steps: Annotated[int, typer.Option(min=1, help="decoder steps")] = 1000,
    batch_size: Annotated[int | None, typer.Option(min=1, help="frames per step (default: the run's windows x "
                                                               "frames)")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: optim.decoder_lr of the run)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
) -> None:
    """Train the decoder of a run after the world model (model.decoder.schedule off), on the frozen
    encoder's embeddings of the store's frames, and write it into every checkpoint of the run."""
    from fcs.views import Phases
    from fcs_train.decoder_training import train_decoder

    with Phases() as phases:
        bar = phases.callback("decoder", "steps")
        result = train_decoder(run, steps=steps, batch_size=batch_size, lr=lr, device=device,
                               progress=lambda done, total, loss: bar(done, total))
    console.print(f"decoder: {result.steps} steps in {result.seconds:.0f} s, train loss {result.train_loss:.4g}; "
                  f"validation frames: reconstruction MSE {result.val_recon_loss:.4g}, SSIM {result.val_ssim:.3f}, "
                  f"PSNR {result.val_psnr:.1f}")
    console.print(f"wrote the decoder into {len(result.checkpoints)} checkpoints of {run / 'checkpoints'}; "
                  f"images: {run / 'images' / 'decoder.png'}")


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
        raise typer.BadParameter(_config_error(e), param_hint="--config/--set") from e


@command(name="plan-eval")
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
    cfg = _plan_config(config, set_)
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    if closed_loop:
        report = _closed_loop(store, checkpoint, cfg, device, episodes=episodes, seed=seed, solvers=solvers,
                              baselines=baselines, goal_steps=goal_steps, max_steps=max_steps,
                              success_radius=success_radius, out=out or run_dir / "closed_loop")
        from fcs.views import print_closed_loop as show
    else:
        from fcs_train.planning.evaluate import evaluate_planning
        from fcs_train.planning.mpc import Planner

        planner = Planner.from_checkpoint(checkpoint, cfg, store=store, device=device)
        out = out or run_dir / "plan_eval"
        with progress_bar("plan", "pairs") as update:
            report = evaluate_planning(planner, store, pairs=pairs, seed=seed, success_radius=success_radius,
                                       random_samples=random_samples, out_dir=out, progress=update)
        show = print_plan_eval
    if json_path is not None and str(json_path) == "-":
        sys.stdout.write(report.to_json() + "\n")
        return
    show(report)
    console.print(f"PNGs: {out or run_dir / 'closed_loop'}")
    if json_path is not None:
        json_path.write_text(report.to_json())
        console.print(f"wrote {json_path}")


def _closed_loop(store: Path, checkpoint: Path, cfg, device: str, *, episodes: int, seed: int, solvers: str,
                 baselines: str, goal_steps: int | None, max_steps: int | None, success_radius: float, out: Path):
    """`fcs plan-eval --closed-loop`: the world of STORE, a server per solver preset, the baselines."""
    from pydantic import ValidationError

    from fcs_data.world import world_spec_from_store
    from fcs_train.planning.bundle import load_planning_model
    from fcs_train.planning.closed_loop import BASELINES, evaluate_closed_loop
    from fcs_train.planning.config import solver_configs

    names = [n.strip() for n in solvers.split(",") if n.strip()]
    try:
        planners = solver_configs(cfg, names)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--solvers") from e
    chosen = tuple(b.strip() for b in baselines.split(",") if b.strip())
    if unknown := sorted(set(chosen) - set(BASELINES)):
        raise typer.BadParameter(f"unknown baseline(s) {', '.join(unknown)}; baselines: {', '.join(BASELINES)}",
                                 param_hint="--baselines")
    bundle = load_planning_model(checkpoint, store=store, device=device, amp=cfg.amp)
    steps = goal_steps or cfg.horizon * bundle.frameskip
    try:
        spec = world_spec_from_store(store, goal_steps=steps, success_radius=success_radius)
    except ValidationError as e:
        raise typer.BadParameter(_config_error(e), param_hint="--goal-steps") from e
    with progress_bar("closed loop", "episodes") as update:
        return evaluate_closed_loop(bundle, spec, planners, seeds=list(range(seed, seed + episodes)),
                                    baselines=chosen, max_steps=max_steps, out_dir=out, progress=update)


@command
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
