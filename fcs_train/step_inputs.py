"""What one training or validation step feeds the model: inputs on the device, checked, and the decoder's share.

A batch is `collate_windows` output: `visual (B, F, 3, H, W) uint8`, `proprio (B, F, P)`,
`action (B, F, fs * A)` float32 (normalised), `episode (B,)`, `start (B,)`.
"""

from __future__ import annotations

from typing import Any

import torch

from fcs_data.window_spec import WindowSpec
from fcs_train.config import DecoderConfig
from fcs_train.errors import NonFiniteLoss
from fcs_train.models import to_model_input


def window_pairs(batch: dict) -> list[tuple[int, int]]:
    """The batch's windows as `(episode, start)`."""
    return list(zip(batch["episode"].tolist(), batch["start"].tolist(), strict=True))


def listed(items: list, limit: int = 16) -> str:
    """The first `limit` items, and `...` when there are more (for one-line errors)."""
    return f"{items[:limit]}{' ...' if len(items) > limit else ''}"


def model_inputs(batch: dict, device: torch.device, image_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`({"visual": (B, F, 3, S, S) in [-1, 1], "proprio": (B, F, P)}, action (B, F, fs * A))` on `device`."""
    visual = batch["visual"].to(device, non_blocking=True)
    obs = {"visual": to_model_input(visual, image_size), "proprio": batch["proprio"].to(device, non_blocking=True)}
    return obs, batch["action"].to(device, non_blocking=True)


def check_finite_inputs(batch: dict, window: WindowSpec, *, step: int, epoch: int, store: str) -> None:
    """Refuse non-finite inputs before they reach the model (a CPU check: no device sync), naming the
    episode, raw step and field of each bad window (training step `step`, epoch `epoch`)."""
    bad = ~(torch.isfinite(batch["action"]).flatten(1).all(1) & torch.isfinite(batch["proprio"]).flatten(1).all(1))
    if not bad.any():
        return
    where = []
    for i in torch.nonzero(bad).flatten().tolist():
        start = int(batch["start"][i])
        act = torch.nonzero(~torch.isfinite(batch["action"][i]))
        if len(act):
            row, col = act[0].tolist()
            where.append(f"episode {int(batch['episode'][i])} step {start + window.raw_step(row, col)} (action)")
        else:
            row = int(torch.nonzero(~torch.isfinite(batch["proprio"][i]))[0, 0])
            where.append(f"episode {int(batch['episode'][i])} step {start + window.raw_step(row)} (proprio)")
    raise NonFiniteLoss(f"non-finite inputs at step {step} (epoch {epoch}): {listed(where, 8)}; check them with "
                        f"`fcs validate {store}`")


class DecoderWork:
    """What the decoder does in a training step (`model.decoder.schedule`), as `VWorldModel.forward` kwargs.

    `subset` draws its frames from `generator`, apart from dropout and shuffling, so the schedule never
    changes what the rest of the model sees; the generator's state is part of a run's RNG state.
    """

    def __init__(self, schedule: str, cfg: DecoderConfig, generator: torch.Generator):
        self.schedule, self.cfg, self.generator = schedule, cfg, generator

    def __call__(self, batch_size: int, frames: int, global_step: int, device: torch.device) -> dict[str, Any]:
        if self.schedule == "joint":
            return {"decode_pred": True, "reconstruct": True}
        if self.schedule == "subset":
            k = min(self.cfg.subset_frames, frames)
            picks = torch.rand(batch_size, frames, generator=self.generator).argsort(dim=1)[:, :k]
            return {"decode_pred": False, "reconstruct": True, "recon_frames": picks.to(device)}
        if self.schedule == "every_n":
            return {"decode_pred": False, "reconstruct": global_step % self.cfg.every_n == 0}
        return {"decode_pred": False, "reconstruct": False}
