"""Helpers for tests that break datasets on purpose."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_pkl(path: Path):
    with path.open("rb") as f:
        return pickle.load(f)


def save_pkl(obj, path: Path) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f)


def edit_tensor(path: Path, fn) -> None:
    """Load a .pth tensor, apply `fn` (returns the new tensor), save it back."""
    t = torch.load(path, weights_only=True)
    torch.save(fn(t), path)


def run_python(code: str, timeout: float = 120) -> str:
    """Run `code` in a fresh interpreter at the repository root (what it imports is its own); its stdout."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    return set(run_python(f"{code}\nimport sys\nprint(' '.join(sys.modules))").split())


def train_tiny(store: Path, run_dir: Path, **sets) -> Path:
    """Train the tiny preset on `store` (no workers, no rollouts) and return its latest checkpoint."""
    import warnings

    from fcs_train.config import load_config
    from fcs_train.trainer import Trainer

    base = {"data.store": store, "train.run_dir": run_dir, "data.num_workers": 0, "train.num_rollouts": 0,
            "train.epochs": 1000, "log.print_every_steps": 100_000, **sets}
    cfg = load_config(preset="tiny", overrides=[f"{k}={v}" for k, v in base.items()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny encoder is random on purpose
        trainer = Trainer(cfg, show_progress=False)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return run_dir / "checkpoints" / "latest.pt"
