"""Proprio and action encoders: a `Conv1d(kernel_size=1)` over time, as in the reference."""

from __future__ import annotations

import torch
from torch import nn


class ProprioceptiveEmbedding(nn.Module):
    """`(B, T, in_chans)` -> `(B, T, emb_dim)`: the same linear map at every step (`patch_embed`)."""

    def __init__(self, in_chans: int, emb_dim: int, num_frames: int = 16, tubelet_size: int = 1):
        super().__init__()
        self.in_chans, self.emb_dim = in_chans, emb_dim
        self.patch_embed = nn.Conv1d(in_chans, emb_dim, kernel_size=tubelet_size, stride=tubelet_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x.transpose(1, 2)).transpose(1, 2)
