"""What a path the user gave is, so that every command can say "this is X; did you mean `fcs ...`".

Recognition reads names, a few bytes and at most one small JSON file; it never unpickles, never
imports torch and never walks a whole dataset, so a command can check its inputs before any heavy
import. The kinds:

- `store`: an fcs store (a Zarr v3 group whose root attributes hold `fcs`), `partial_store` one
  still being written (`OUT.partial`), `zarr` some other Zarr store;
- `logger_dataset`: a logger's dataset (episode directories `000000/`, ... or `states.pth`, or an
  Isaac Lab / robomimic HDF5 file);
- `fcs_checkpoint`, `reference_checkpoint` (a pickled DINO-WM run), `torch_file` (another torch
  file), `run_dir` (an `fcs train` run directory);
- `empty_dir`, `missing`, `other_dir`, `other_file`.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fcs_data.errors import WrongInputError

Kind = Literal["store", "partial_store", "zarr", "logger_dataset", "fcs_checkpoint", "reference_checkpoint",
               "torch_file", "run_dir", "empty_dir", "missing", "other_dir", "other_file"]

_EPISODE_DIR = re.compile(r"^\d{6}$")
_SCAN_BYTES = 1 << 20  # of a pickle: enough for the class names a reference checkpoint starts with
_REFERENCE_MARKERS = (b"visual_world_model", b"VWorldModel", b"models.vit", b"ViTPredictor")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_WHAT = {
    "store": "an fcs store",
    "partial_store": "an fcs store still being written (or left by a failed conversion)",
    "zarr": "a Zarr store that fcs did not write",
    "logger_dataset": "a logger dataset",
    "fcs_checkpoint": "an fcs checkpoint",
    "reference_checkpoint": "a reference DINO-WM checkpoint (pickled modules)",
    "torch_file": "a torch file that is not a checkpoint fcs knows",
    "run_dir": "an fcs training run directory",
    "empty_dir": "an empty folder",
    "missing": "missing",
    "other_dir": "a folder with no episode folders (000000/, ...), no states.pth and no zarr.json",
    "other_file": "a file fcs does not read here",
}
# what to run on each kind
_NEXT = {
    "store": "fcs info {p} / fcs validate {p} / fcs train --set data.store={p}",
    "partial_store": "fcs convert SOURCE -o {final} --resume to finish it",
    "logger_dataset": "fcs validate {p} / fcs convert {p} --to zarr -o STORE",
    "fcs_checkpoint": "fcs plan-eval STORE --checkpoint {p} / fcs serve --checkpoint {p}",
    "reference_checkpoint": "fcs import-checkpoint {p}",
    "run_dir": "fcs train --resume --set train.run_dir={p} / fcs plan-eval STORE --checkpoint {p}/checkpoints/latest.pt",
}


@dataclass(frozen=True)
class Recognized:
    path: Path
    kind: Kind

    @property
    def what(self) -> str:
        return _WHAT[self.kind]

    @property
    def suggestion(self) -> str | None:
        """The command(s) that read this kind, with this path filled in."""
        hint = _NEXT.get(self.kind)
        if hint is None:
            return None
        final = self.path.name.removesuffix(".partial")
        return hint.format(p=self.path, final=self.path.with_name(final))


def _torch_kind(path: Path) -> Kind | None:
    """`fcs_checkpoint`, `reference_checkpoint` or `torch_file` for a torch.save file, None for anything else."""
    try:
        with path.open("rb") as f:
            head = f.read(_SCAN_BYTES)
    except OSError:
        return None
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                if pkl is None:
                    return None
                with z.open(pkl) as f:
                    head = f.read(_SCAN_BYTES)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError):
            return "torch_file"
    elif not head.startswith(b"\x80"):  # not a pickle (the legacy torch.save format is one)
        return None
    if b"fcs_checkpoint" in head:
        return "fcs_checkpoint"
    if any(m in head for m in _REFERENCE_MARKERS):
        return "reference_checkpoint"
    return "torch_file"


def _store_kind(path: Path) -> Kind | None:
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    partial = path.name.endswith(".partial")
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):  # damaged: the store reader names what is wrong
        return "partial_store" if partial else "store"
    if partial or "fcs_partial" in attrs:
        return "partial_store"
    return "store" if "fcs" in attrs else "zarr"


def recognize(path: str | Path) -> Recognized:
    """What `path` is (see the module docstring); cheap: names, a few bytes, one small JSON file."""
    path = Path(path)
    if not path.exists():
        return Recognized(path, "missing")
    if path.is_file():
        kind = _torch_kind(path)
        if kind is None:
            try:
                with path.open("rb") as f:
                    kind = "logger_dataset" if f.read(8) == _HDF5_MAGIC else "other_file"
            except OSError:
                kind = "other_file"
        return Recognized(path, kind)
    store = _store_kind(path)
    if store is not None:
        return Recognized(path, store)
    try:
        names = [p.name for p in path.iterdir()]
    except OSError:
        return Recognized(path, "other_dir")
    if not names:
        return Recognized(path, "empty_dir")
    if any(_EPISODE_DIR.match(n) for n in names) or "states.pth" in names:
        return Recognized(path, "logger_dataset")
    if "checkpoints" in names and "config.yaml" in names:
        return Recognized(path, "run_dir")
    return Recognized(path, "other_dir")


def expect(path: str | Path, *kinds: Kind, role: str) -> Recognized:
    """`recognize(path)` when it is one of `kinds`; else `WrongInputError` saying what it is and what to run.

    `role` is what the command wanted, in words ("a logger dataset", "an fcs store").
    """
    found = recognize(path)
    if found.kind in kinds:
        return found
    if found.kind == "missing":
        raise WrongInputError(path, found.kind, role, f"{path}: no such file or folder (expected {role})")
    hint = found.suggestion
    message = f"{path}: this is {found.what}, not {role}" + (f"; did you mean `{hint}`?" if hint else "")
    raise WrongInputError(path, found.kind, role, message)
