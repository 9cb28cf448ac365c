"""Where a training step's time goes: encoder, predictor and decoder, each timed apart, forward and backward.

`fcs train` prints the split at the end of the first epoch (with the optimizer step and the data
wait measured in the epoch itself), so users see the bottleneck of their own run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fcs_train.models import VWorldModel

PROFILE_STEPS = 3  # steps timed phase by phase (after one warm-up)


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA work is asynchronous; a timer around it measures nothing otherwise)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_phases(model: VWorldModel, obs: dict[str, torch.Tensor], act: torch.Tensor, *,
                autocast: Callable[[], contextlib.AbstractContextManager],
                decoder_work: Callable[[], dict[str, Any]], decoder_share: float = 1.0,
                steps: int = PROFILE_STEPS) -> dict[str, float]:
    """Median seconds of the encoder, predictor and decoder phases of one training step on `obs`, `act`
    (`(B, F, 3, S, S)`, `(B, F, fs * A)`), forward and backward; the first of `steps + 1` is a warm-up.

    `decoder_work()` gives the decoder's share of the step (`DecoderWork`); `decoder_share` scales the
    decoder's time (1 / n for `every_n`, which decodes in one step of n). Gradients are left in the
    parameters: the caller zeroes them and restores its RNG state.
    """
    phases: dict[str, list[float]] = {"encoder": [], "predictor": [], "decoder": []}
    device = act.device
    model.train()
    for _ in range(steps + 1):
        work = decoder_work()
        sync(device)
        t0 = time.perf_counter()
        with autocast():
            z = model.encode(obs, act)
        sync(device)
        t1 = time.perf_counter()
        with autocast():
            z_pred = model.predict(z[:, : model.num_hist])
            z_loss = model.z_losses(z_pred, z[:, model.num_pred :])["z_loss"]
        z_loss.backward()
        sync(device)
        t2 = time.perf_counter()
        with autocast():
            decoded, _, _ = model.decoder_losses(z, z_pred, obs["visual"], **work)
        if "decoder_loss_reconstructed" in decoded:
            decoded["decoder_loss_reconstructed"].backward()
        sync(device)
        t3 = time.perf_counter()
        for name, seconds in (("encoder", t1 - t0), ("predictor", t2 - t1), ("decoder", (t3 - t2) * decoder_share)):
            phases[name].append(seconds)
    return {name: float(np.median(v[1:])) for name, v in phases.items()}
