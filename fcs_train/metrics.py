"""Metrics of a DINO-WM step: embedding errors by slice, and image quality (torchmetrics).

Embedding errors follow the reference's names, `z_{visual,proprio}_err_{full,pred,next1}`, with
the slices computed from positive indices: the reference's `next1` slice `[-num_pred : -num_pred + 1]`
is empty for num_pred = 1 (`[-1:0]`), which made that metric constant garbage.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fcs_data.safe_io import load_state_dict
from fcs_train.weights import load_weights_into


def z_error_slices(num_hist: int, num_pred: int) -> dict[str, slice]:
    """Frames of `z_pred (B, num_hist, ...)`: all, the last num_pred (new frames), the first new one."""
    first_new = num_hist - min(num_pred, num_hist)
    return {"full": slice(0, num_hist), "pred": slice(first_new, num_hist), "next1": slice(first_new, first_new + 1)}


def z_errors(model, z_pred: torch.Tensor, z_tgt: torch.Tensor) -> dict[str, torch.Tensor]:
    """MSE of predicted vs target embeddings per part (visual, proprio) and slice."""
    pred_obs, _ = model.separate_emb(z_pred)
    tgt_obs, _ = model.separate_emb(z_tgt)
    out = {}
    for part in ("visual", "proprio"):
        for name, sl in z_error_slices(model.num_hist, model.num_pred).items():
            out[f"z_{part}_err_{name}"] = F.mse_loss(pred_obs[part][:, sl], tgt_obs[part][:, sl].detach())
    return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images `(..., 3, H, W)` -> [0, 1], flattened to `(N, 3, H, W)`, float32."""
    return ((x.float().reshape(-1, *x.shape[-3:]) + 1) / 2).clamp(0, 1)


def image_metrics(pred: torch.Tensor, target: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """SSIM and PSNR (data range 1) of `pred` vs `target`, both in [-1, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    p, t = _unit(pred), _unit(target)
    return {
        f"{prefix}_ssim": structural_similarity_index_measure(p, t, data_range=1.0),
        f"{prefix}_psnr": peak_signal_noise_ratio(p, t, data_range=1.0),
    }


class LPIPS(torch.nn.Module):
    """LPIPS (VGG) from a VGG16 weights file the user supplies; nothing is downloaded.

    The backbone weights are torchvision's `vgg16` state dict (`features.i.weight` keys, e.g.
    `vgg16-397923af.pth`); the calibrated linear layers ship inside torchmetrics.
    """

    def __init__(self, vgg_weights: str | Path):
        super().__init__()
        from torchmetrics.functional.image.lpips import _LPIPS

        self.net = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)  # random backbone: no download
        state = load_state_dict(vgg_weights)
        slices = {i: f"slice{k}" for k, rng in enumerate((range(4), range(4, 9), range(9, 16), range(16, 23),
                                                           range(23, 30)), 1) for i in rng}
        mapped = {}
        for key, value in state.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "features" and parts[1].isdigit() and int(parts[1]) in slices:
                mapped[f"{slices[int(parts[1])]}.{parts[1]}.{parts[2]}"] = value
        load_weights_into(self.net.net, mapped, vgg_weights, "torchvision vgg16")
        self.net.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS of images in [-1, 1]."""
        p = pred.float().reshape(-1, *pred.shape[-3:]).clamp(-1, 1)
        t = target.float().reshape(-1, *target.shape[-3:]).clamp(-1, 1)
        return self.net(p, t).mean()
