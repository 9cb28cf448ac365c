"""PNGs of a run: ground truth / prediction / reconstruction grids and loss curves (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from fcs_data.preview import labelled_grid


def _frames(t: torch.Tensor) -> list[np.ndarray]:
    """`(k, 3, S, S)` in [-1, 1] -> k frames `(S, S, 3)` uint8."""
    x = ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(x.permute(0, 2, 3, 1).cpu().numpy())


def save_prediction_grid(path: Path, visual: torch.Tensor, pred: torch.Tensor | None, rec: torch.Tensor | None,
                         num_pred: int, *, title: str, samples: list[str] | None = None,
                         num_hist: int | None = None, columns: list[str] | None = None) -> Path:
    """Per sample up to three labelled rows of F frames: ground truth, prediction (shifted to the frame it
    predicts), reconstruction; columns name each frame as context or target; `title` says what and when.

    visual `(B, F, 3, S, S)`, pred `(B, num_hist, 3, S, S)`, rec `(B, F, 3, S, S)`, all in [-1, 1];
    `samples` names each window (e.g. `episode 3, start 40`), `columns` replaces the frame labels.
    Cells with no image are grey.
    """
    b, f = visual.shape[:2]
    hist = num_hist if num_hist is not None else f - num_pred
    rows, labels = [], []
    for i in range(b):
        name = samples[i] if samples else f"sample {i}"
        rows.append(_frames(visual[i]))
        labels.append(f"{name}: ground truth")
        if pred is not None:
            rows.append([None] * num_pred + _frames(pred[i])[: f - num_pred])
            labels.append(f"{name}: prediction")
        if rec is not None:
            rows.append(_frames(rec[i]))
            labels.append(f"{name}: reconstruction")
    cols = columns or [f"frame {j} ({'context' if j < hist else 'target'})" for j in range(f)]
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, labels, cols, title).save(path)
    return path


def save_image_rows(path: Path, rows: list[torch.Tensor], row_labels: list[str], col_labels: list[str] | None = None,
                    title: str | None = None) -> Path:
    """One labelled grid row per tensor `(k, 3, S, S)` in [-1, 1]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid([_frames(r) for r in rows], row_labels, col_labels, title).save(path)
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
