"""Runs as the users know them from Hydra: one directory per run, listed and compared.

By default each `fcs train` gets its own directory `runs/<train.run_name>/<YYYY-MM-DD_HH-MM-SS>` with
a `latest` link beside it, as the reference writes `outputs/DATE/TIME/`; a directory that already holds
a run is refused unless the user says `--resume` (continue it) or `--overwrite` (replace it), so a
run is never silently mixed into another. `fcs runs` lists runs with their state and best figures;
`fcs runs compare` shows what differs between their configs and their final figures side by side,
with the skill over copying the last frame, so an experiment that changed three things at once
shows it.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fcs_data.atomic import write_text_atomic
from fcs_train.errors import TrainError
from fcs_train.run_dir import RunDir

RUNS_ROOT = Path("runs")
LATEST = "latest"
FIGURES = ("val_loss", "val_z_visual_loss", "val_z_visual_skill", "val_z_proprio_skill", "val_pred_ssim",
           "val_pred_psnr", "val_z_visual_err_rollout")


def new_run_dir(name: str, root: Path = RUNS_ROOT, now: datetime.datetime | None = None) -> Path:
    """`root/name/<YYYY-MM-DD_HH-MM-SS>` (a suffix when two runs start in the same second)."""
    stamp = (now or datetime.datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    path, k = root / name / stamp, 1
    while path.exists():
        k += 1
        path = root / name / f"{stamp}_{k}"
    return path


def point_latest(run_dir: Path) -> None:
    """`run_dir.parent/latest` -> `run_dir` (a relative symlink, replaced atomically)."""
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, link)
    except OSError:  # a file system without symlinks: the run itself is unaffected
        tmp.unlink(missing_ok=True)


def resolve_run_dir(run_dir: Path | None, name: str, *, resume: bool, overwrite: bool,
                    root: Path = RUNS_ROOT) -> Path:
    """The directory a training run writes to, checked.

    `run_dir` None: a new `root/name/<time>` (or, with `resume`, the run `root/name/latest` points at).
    A directory holding a run is refused unless `resume` (it must hold one) or `overwrite` (it is emptied).
    """
    if resume and overwrite:
        raise TrainError("--resume continues a run and --overwrite replaces it: give one of them")
    if run_dir is None:
        if not resume:
            return new_run_dir(name, root)
        latest = root / name / LATEST
        if not latest.exists():
            raise TrainError(f"nothing to resume: {latest} does not exist; give the run with train.run_dir=RUN")
        return latest.resolve()
    if resume:
        if not RunDir(run_dir).holds_run():
            raise TrainError(f"nothing to resume: {run_dir} holds no run")
        return run_dir
    if RunDir(run_dir).holds_run():
        if not overwrite:
            state = read_status(run_dir)
            what = f" ({state.get('state', 'unknown')} at step {state.get('step', '?')})" if state else ""
            raise TrainError(f"{run_dir} already holds a run{what}; continue it with --resume, replace it with "
                             "--overwrite, or leave train.run_dir unset for a new directory per run")
        for entry in run_dir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return run_dir


def write_status(run_dir: Path, state: str, step: int, message: str = "", data: dict[str, Any] | None = None) -> None:
    """What the run is doing, for `fcs runs`, and what it trains on (`data`: episode and window counts,
    which the config does not show); written atomically, by rank 0 only."""
    data = {"state": state, "pid": os.getpid(), "step": step, "message": message,
            "time": datetime.datetime.now().isoformat(timespec="seconds"), "data": data or {}}
    write_text_atomic(RunDir(run_dir).status, json.dumps(data) + "\n")


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads(RunDir(run_dir).status.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    if data.get("state") == "running" and not _alive(int(data.get("pid", 0))):
        data["state"] = "died"  # killed without a chance to say so (SIGKILL, OOM killer, a lost node)
    return data


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunInfo:
    """One run directory as `fcs runs` shows it."""

    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return str(self.status.get("state", "unknown"))

    @property
    def step(self) -> int:
        last = self.epochs[-1]["step"] if self.epochs else 0
        return int(self.status.get("step", last) or last)

    def best(self, key: str = "val_loss") -> float | None:
        values = [r[key] for r in self.epochs if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        return min(values) if values else None

    def final(self) -> dict[str, float]:
        """The last epoch's figures (FIGURES), with the copy-last-frame baseline's loss beside the model's."""
        last = next((r for r in reversed(self.epochs) if "val_loss" in r), self.epochs[-1] if self.epochs else {})
        keys = (*FIGURES, "val_z_visual_loss_copy", "val_z_proprio_loss", "val_z_proprio_loss_copy")
        return {k: float(last[k]) for k in keys if isinstance(last.get(k), int | float)}

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "state": self.state, "step": self.step, "best_val_loss": self.best(),
                "final": self.final()}


def read_run(path: Path) -> RunInfo:
    """A run directory's config, status and per-epoch figures (epochs.log)."""
    run = RunDir(path)
    try:
        config = yaml.safe_load(run.config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    epochs = []
    try:
        for line in run.epochs_log.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line of a run killed while writing it
            if isinstance(row, dict):
                epochs.append(row)
    except OSError:
        pass
    return RunInfo(path, config if isinstance(config, dict) else {}, read_status(path), epochs)


def find_runs(root: Path = RUNS_ROOT, depth: int = 3) -> list[RunInfo]:
    """Every run under `root` (directories holding a config.yaml, `latest` links skipped), oldest first."""
    found: list[Path] = []

    def walk(d: Path, left: int) -> None:
        if RunDir(d).config.is_file():
            found.append(d)
            return
        if left == 0:
            return
        for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink()):
            walk(sub, left - 1)

    if root.is_dir():
        walk(root, depth)
    return sorted((read_run(p) for p in found), key=lambda r: (r.path.stat().st_mtime, str(r.path)))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


IGNORED_IN_COMPARE = ("train.run_dir", "train.run_name", "log.", "data.num_workers")


def config_differences(runs: list[RunInfo]) -> dict[str, list[Any]]:
    """Settings whose values differ between `runs` (bookkeeping like run_dir and logging left out)."""
    flats = [_flat({**r.config, "trained_on": r.status.get("data", {})}) for r in runs]
    keys = sorted(set().union(*flats)) if flats else []
    out = {}
    for k in keys:
        if k.startswith(IGNORED_IN_COMPARE):
            continue
        values = [f.get(k) for f in flats]
        if any(v != values[0] for v in values[1:]):
            out[k] = values
    return out
