"""Normalisation statistics (per-dimension moments and quantiles, per-channel image moments) and the
`Normalizer` that applies them.

Statistics are always taken over valid steps only (never the zero padding of the logger), over
finite rows only (one NaN must not make every normalised batch NaN), and in float64, so the mean of
a million float32 rows does not drift.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from fcs_data.schemas.store import ArrayStats, ImageStats

NormalizedField = Literal["action", "proprio"]

STD_EPS = 1e-6  # added to std when normalising (DINO-WM convention)


def array_stats(x: np.ndarray) -> ArrayStats:
    """Statistics of the finite rows of `x (n, D)` along the first axis (population std).

    Rows holding a NaN or Inf anywhere are left out (`count` is the number of rows used); they are
    reported by `fcs validate` and refused by the window sampler.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected (n, D) rows, got shape {x.shape}")
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) == 0:
        nan = [float("nan")] * x.shape[1]
        return ArrayStats(mean=nan, std=nan, min=nan, max=nan, q01=nan, q99=nan, count=0)
    q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
    return ArrayStats(
        mean=x.mean(axis=0).tolist(),
        std=x.std(axis=0).tolist(),
        min=x.min(axis=0).tolist(),
        max=x.max(axis=0).tolist(),
        q01=q01.tolist(),
        q99=q99.tolist(),
        count=len(x),
    )


def training_stats(state: np.ndarray, action: np.ndarray, proprio: slice) -> dict[str, ArrayStats]:
    """`{"action", "proprio"}` statistics of `action (n, A)` and `state (n, S)[:, proprio]`: what a
    model is normalised with."""
    return {"action": array_stats(action), "proprio": array_stats(state[:, proprio])}


def channel_histogram(frames: np.ndarray) -> np.ndarray:
    """`(3, 256)` int64 counts of each uint8 value per channel for frames `(n, H, W, 3)`."""
    flat = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, 3)
    return torch.stack([torch.bincount(flat[:, c].contiguous(), minlength=256) for c in range(3)]).numpy()


def image_stats(hist: np.ndarray) -> ImageStats:
    """Exact per-channel mean and std from `(3, 256)` value counts."""
    hist = np.asarray(hist, dtype=np.float64)
    values = np.arange(256, dtype=np.float64)
    count = hist.sum(axis=1)
    safe = np.maximum(count, 1)
    mean = (hist * values).sum(axis=1) / safe
    var = (hist * values**2).sum(axis=1) / safe - mean**2
    return ImageStats(mean=mean.tolist(), std=np.sqrt(np.maximum(var, 0)).tolist(), count=int(count[0]))


def moments(stats: ArrayStats) -> tuple[np.ndarray, np.ndarray]:
    """`(mean, std + 1e-6)` as float32 `(D,)`: the one normalisation, `(x - mean) / (std + 1e-6)`, in the
    precision the training windows feed the model."""
    return np.asarray(stats.mean, np.float32), (np.asarray(stats.std, np.float64) + STD_EPS).astype(np.float32)


def normalize(x: np.ndarray, stats: ArrayStats) -> np.ndarray:
    """`(x - mean) / (std + 1e-6)` of `x (..., D)`, float32."""
    mean, scale = moments(stats)
    return (np.asarray(x, np.float32) - mean) / scale


def unnormalize(x: np.ndarray, stats: ArrayStats) -> np.ndarray:
    """Inverse of `normalize` (computed in float64), float32."""
    return (np.asarray(x, np.float64) * (np.asarray(stats.std) + STD_EPS) + np.asarray(stats.mean)).astype(np.float32)


class Normalizer(BaseModel):
    """The z-normalisation of a model's action and proprio inputs: the training split's statistics.

    A checkpoint keeps the one its model was trained with, so planning and evaluation normalise
    exactly as the training windows did. Actions are normalised per raw dim `(..., A)`; packed
    actions `(..., T, fs * A)` go through `WindowSpec.unpack` / `pack`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: ArrayStats
    proprio: ArrayStats

    def normalize(self, field: NormalizedField, x: np.ndarray) -> np.ndarray:
        """Raw `(..., D)` -> normalised float32."""
        return normalize(x, getattr(self, field))

    def unnormalize(self, field: NormalizedField, x: np.ndarray) -> np.ndarray:
        """Normalised `(..., D)` -> raw float32."""
        return unnormalize(x, getattr(self, field))
