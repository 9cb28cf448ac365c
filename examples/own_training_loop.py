"""Use fcs_data from another repository: your model, your loop, fcs's windows.

    python examples/own_training_loop.py STORE.zarr [--steps 50] [--workers 2]

Trains a small action-conditioned model that predicts the next proprio (end-effector position)
from the current frame, proprio and action chunk, just to show the moving parts: `WindowDataset`
(train and val splits with train-only normalisation), `make_loader` (seeded, worker-safe), and
device-side conversion of the uint8 frames.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import fcs_data


class NextProprio(nn.Module):
    def __init__(self, proprio_dim: int, action_dim: int):
        super().__init__()
        self.vision = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32 + proprio_dim + action_dim, 64), nn.ReLU(), nn.Linear(64, proprio_dim))

    def forward(self, frame: torch.Tensor, proprio: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.vision(frame), proprio, action], dim=-1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train = fcs_data.WindowDataset(args.store, num_hist=1, num_pred=1, frameskip=5, split="train")
    val = fcs_data.WindowDataset(args.store, num_hist=1, num_pred=1, frameskip=5, split="val")
    print(train.describe())
    loader = fcs_data.make_loader(train, batch_size=16, seed=0, num_workers=args.workers)

    item = train[0]
    model = NextProprio(item["proprio"].shape[-1], item["action"].shape[-1]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = 0
    while step < args.steps:
        for batch in loader:  # visual (B, F, 3, H, W) uint8, proprio (B, F, P), action (B, F, fs * A)
            frame = batch["visual"][:, 0].to(device, non_blocking=True).float().div_(127.5).sub_(1)
            proprio = batch["proprio"].to(device)
            action = batch["action"].to(device)
            loss = F.mse_loss(model(frame, proprio[:, 0], action[:, 0]), proprio[:, 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0 or step == args.steps:
                print(f"step {step}: train loss {loss.item():.4f}")
            if step == args.steps:
                break
    model.eval()
    with torch.no_grad():
        losses = []
        for batch in fcs_data.make_loader(val, batch_size=16, shuffle=False, num_workers=0, drop_last=False):
            frame = batch["visual"][:, 0].to(device).float().div_(127.5).sub_(1)
            pred = model(frame, batch["proprio"][:, 0].to(device), batch["action"][:, 0].to(device))
            losses.append(F.mse_loss(pred, batch["proprio"][:, 1].to(device)).item())
    print(f"val loss {sum(losses) / max(len(losses), 1):.4f} over {len(val)} windows")


if __name__ == "__main__":
    main()
