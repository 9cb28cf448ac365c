"""`fcs env`: what a bug report needs, printed (the same text heads every crash file)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from fcs.cli.core import command
from fcs.cli.views import console
from fcs.environment import environment, environment_text


@command(examples=["fcs env", "fcs env --json -"])
def env(
    json_out: Annotated[bool, typer.Option("--json", help="print it as JSON")] = False,
) -> None:
    """Print what a bug report needs: Python, torch, CUDA and the GPUs, fcs and its extras.

    Example: fcs env --json > env.json
    """
    info = environment()
    if json_out:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return
    console.print(environment_text(info), highlight=False, soft_wrap=True)
