"""The `fcs` application and what every command shares: one-line failures, exit codes, option parsing.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.exceptions import TyperException

from fcs import __version__
from fcs.cli.views import console, err_console
from fcs_data.atomic import write_text_atomic
from fcs_data.errors import FcsError

TRAIN_EXTRAS = {"timm", "torchmetrics", "matplotlib", "torchvision", "websockets", "msgpack"}

def _plain_metavars(params: list) -> None:
    """Plain metavars in help: `SRC`, `--out OUT`, `--to zarr`, `--set KEY=VALUE`, none for a flag
    (typer's own are `{src}`, `<path>`, `<bool>`)."""
    for p in params:
        if p.metavar is not None or p.name is None:
            continue
        if isinstance(p, TyperArgument):
            p.metavar = p.name.upper()
        elif isinstance(p, TyperOption):
            if p.is_flag or p.count:
                p.metavar = ""
            elif p.type_descriptor.is_choice:
                p.metavar = "|".join(map(str, p.type_descriptor.choices or ()))
            else:
                long = max(p.opts, key=len).lstrip("-")
                p.metavar = "KEY=VALUE" if long == "set" else long.upper().replace("-", "_")


class PlainHelpCommand(TyperCommand):
    """A command whose help shows plain metavars (`_plain_metavars`) and a usage line without typer's
    braces around required arguments (`fcs convert [OPTIONS] SRC`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [re.sub(r"^\{(.+)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        _plain_metavars([option] if option is not None else [])
        return option


class PlainHelpGroup(TyperGroup):
    """A command group whose help shows plain metavars (`_plain_metavars`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        _plain_metavars([option] if option is not None else [])
        return option


app = typer.Typer(
    name="fcs",
    help="Isaac Sim Franka cube-stacking episodes -> validated Zarr stores -> DINO-WM world models.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=PlainHelpGroup,
)

LayoutOpt = Annotated[
    str | None,
    typer.Option("--layout", "-l", help="built-in layout (see `fcs layouts`, variants as NAME+variant) or a layout "
                                        "YAML/JSON file; detected from the data when not given"),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit."""
    from fcs_data.schemas.report import printable

    err_console.print(f"[bold red]error:[/] {escape(printable(message) or '')}", highlight=False)
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
            path.write_text(f"{' '.join(sys.argv)}\n\n{crash_environment()}\n\n{text}")
            break
        except OSError:
            path = None
    first = (str(e).strip().splitlines() or [""])[0]
    where = f"the traceback is in {path}" if path else "the traceback could not be written"
    fail(f"internal error ({type(e).__name__}: {first}); {where}; set FCS_DEBUG=1 to print it, and please "
         "report it")


def crash_environment() -> str:
    """`fcs env`'s text for a crash file; CUDA is asked about only when torch is already imported."""
    from fcs.environment import environment, environment_text

    try:
        return environment_text(environment(devices="torch" in sys.modules))
    except Exception as e:  # the traceback matters more than the environment
        return f"fcs {__version__} (environment unavailable: {type(e).__name__}: {e})"


def _reflow(doc: str) -> str:
    """Docstring paragraphs as single lines (the terminal wraps them); indented or listed lines stay."""
    out = []
    for para in doc.split("\n\n"):
        lines = para.splitlines()
        keep = any(line.startswith(("  ", "- ")) for line in lines)
        out.append(para if keep else " ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def command(fn: Callable | None = None, *, name: str | None = None, group: typer.Typer | None = None,
            examples: Sequence[str] = ()) -> Callable:
    """Register a command whose failures print one line: exit 1 (2 for the command line, 130 for Ctrl-C).

    `examples`: command lines shown at the end of its `--help`, each as it is typed.
    """

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

        text = _reflow(inspect.getdoc(fn) or "")
        epilog = "[bold]Examples[/]\n\n" + "\n".join(f"  {escape(e)}" for e in examples) if examples else None
        return (group or app).command(name=name, help=text, epilog=epilog, cls=PlainHelpCommand)(wrapper)

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


def layout_option(name: str | None):
    """The layout `--layout NAME` names; a bad name is a command-line error (exit 2)."""
    from fcs_data.schemas import get_layout

    try:
        return get_layout(name)
    except (KeyError, FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e).strip("'\""), param_hint="--layout") from e


def expect_input(path: Path, *kinds: str, role: str) -> None:
    """Refuse (exit 2) a path of another kind than the command reads, saying what it is and what reads it."""
    from fcs_data.recognize import WrongInputError, expect

    try:
        expect(path, *kinds, role=role)  # type: ignore[arg-type]
    except WrongInputError as e:
        fail(str(e), 2)


def write_json(target: Path, text: str) -> None:
    """`--json TARGET`: the file, or standard output for `-` (then nothing else goes to stdout)."""
    if str(target) == "-":
        sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.flush()
    else:
        write_text_atomic(target, text.rstrip("\n") + "\n")


def config_error(e: Exception) -> str:
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print errors only (and what --json asks for)")]
    = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v: log what fcs does; -vv: also print "
                                                                            "the traceback of an internal error")]
    = 0,
) -> None:
    """Isaac Sim Franka cube-stacking episodes -> validated Zarr stores -> DINO-WM world models."""
    import logging

    console.quiet = quiet
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, format="%(name)s: %(message)s")
    if verbose > 1:
        os.environ["FCS_DEBUG"] = "1"


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
