"""PNGs of a run: ground truth / prediction / reconstruction grids and loss curves (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid, save_image


def save_prediction_grid(path: Path, visual: torch.Tensor, pred: torch.Tensor | None, rec: torch.Tensor | None,
                         num_pred: int) -> Path:
    """Per sample three rows of F frames: ground truth, prediction (shifted to its target), reconstruction.

    visual `(B, F, 3, S, S)`, pred `(B, num_hist, 3, S, S)`, rec `(B, F, 3, S, S)`, all in [-1, 1].
    Frames a row has no image for are left grey.
    """
    f = visual.shape[1]
    grey = torch.zeros_like(visual[:, :1])
    rows = [visual]
    if pred is not None:
        rows.append(torch.cat([grey.expand(-1, num_pred, -1, -1, -1), pred], dim=1)[:, :f])
    if rec is not None:
        rows.append(rec)
    grid = torch.stack(rows, dim=1).reshape(-1, *visual.shape[2:])  # (B * rows * F, 3, S, S)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid((grid.float().clamp(-1, 1) + 1) / 2, nrow=f, padding=2, pad_value=1.0), path)
    return path


def save_image_rows(path: Path, rows: list[torch.Tensor]) -> Path:
    """One grid row per tensor `(k, 3, S, S)` in [-1, 1], all of the same length `k`."""
    grid = torch.cat(rows).float().clamp(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid((grid + 1) / 2, nrow=rows[0].shape[0], padding=2, pad_value=1.0), path)
    return path


def plot_losses(path: Path, train: list[dict], val: list[dict],
                components: tuple[str, ...] = ("z_visual_loss", "z_proprio_loss", "decoder_recon_loss_reconstructed")
                ) -> Path:
    """Loss curves: the total loss (train per step, val per epoch) and its components, with the
    copy-last-frame baseline of the validation z losses as dashed lines."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    ax = axes[0]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    if val:
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation")
    ax.set(xlabel="optimiser step", ylabel="loss", yscale="log", title="loss")
    ax.legend()
    ax = axes[1]
    for name in components:
        steps = [r for r in train if name in r]
        if steps:
            ax.plot([r["step"] for r in steps], [r[name] for r in steps], lw=1, label=f"train {name}")
        if val and name in val[0]:
            ax.plot([r["step"] for r in val], [r[name] for r in val], "o-", label=f"val {name}")
        copy = f"{name}_copy"
        if val and copy in val[0]:  # the trivial predictor that repeats the last context frame
            ax.plot([r["step"] for r in val], [r[copy] for r in val], "--", color="grey", lw=1,
                    label=f"val {name}, copy last frame")
    ax.set(xlabel="optimiser step", yscale="log", title="components")
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
