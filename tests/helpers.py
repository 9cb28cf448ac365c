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
