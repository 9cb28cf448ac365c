"""The DINO-WM predictor: a ViT over `num_hist * P` tokens with a frame-level causal mask.

Parameter names and shapes are the reference's (`pos_embedding`, `transformer.layers.i.0.to_qkv`,
`transformer.layers.i.1.net.1`, ...), so a reference state dict loads strictly. Differences that do
not change the function: attention runs through `scaled_dot_product_attention`, and the causal
mask is built on the input's device at the input's length (the reference built it on CUDA at
import time, so nothing ran on CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def frame_causal_mask(num_tokens: int, patches_per_frame: int, device: torch.device) -> torch.Tensor:
    """`(n, n)` bool, True where token i may attend to token j: j's frame is not after i's."""
    frame = torch.arange(num_tokens, device=device) // patches_per_frame
    return frame[:, None] >= frame[None, :]


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.dropout_p = dropout
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        project_out = not (heads == 1 and dim_head == dim)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project_out else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(self.norm(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout_p if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head, dropout), FeedForward(dim, mlp_dim, dropout)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x, mask) + x
            x = ff(x) + x
        return self.norm(x)


class ViTPredictor(nn.Module):
    """`(B, T * P, dim)` tokens of T <= num_frames frames -> the same shape, causal over frames."""

    def __init__(self, *, num_patches: int, num_frames: int, dim: int, depth: int = 6, heads: int = 16,
                 mlp_dim: int = 2048, dim_head: int = 64, dropout: float = 0.1, emb_dropout: float = 0.0):
        super().__init__()
        self.num_patches = num_patches
        self.num_frames = num_frames
        self.pos_embedding = nn.Parameter(torch.randn(1, num_frames * num_patches, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n > self.pos_embedding.shape[1] or n % self.num_patches:
            raise ValueError(f"{n} tokens: expected up to {self.num_frames} frames of {self.num_patches} patches")
        x = self.dropout(x + self.pos_embedding[:, :n])
        return self.transformer(x, frame_causal_mask(n, self.num_patches, x.device))
