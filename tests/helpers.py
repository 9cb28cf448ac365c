"""Helpers for tests that break datasets on purpose."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


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
