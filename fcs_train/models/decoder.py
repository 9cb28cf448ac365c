"""The DINO-WM decoder: a VQ-VAE-style upsampler from patch tokens to pixels.

`(B, T, P, D)` tokens on a `sqrt(P) x sqrt(P)` grid -> `(B * T, 3, 16 sqrt(P), 16 sqrt(P))` images
in [-1, 1] (two x4 transposed-convolution stages: 14 -> 56 -> 224 for the full model).
Quantisation is off by default (the reference's setting) and supported when on. Names and shapes
are the reference's (`quantize_b.embed`, `upsample_b.blocks.0.weight`, `dec.blocks.*`).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class Quantize(nn.Module):
    """EMA vector quantiser (VQ-VAE-2); buffers `embed (dim, n_embed)`, `cluster_size`, `embed_avg`."""

    def __init__(self, dim: int, n_embed: int, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.dim, self.n_embed, self.decay, self.eps = dim, n_embed, decay, eps
        embed = torch.randn(dim, n_embed)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(n_embed))
        self.register_buffer("embed_avg", embed.clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1, self.dim)
        dist_ = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed + self.embed.pow(2).sum(0, keepdim=True)
        ind = (-dist_).max(1).indices
        onehot = F.one_hot(ind, self.n_embed).type(flat.dtype)
        ind = ind.view(*x.shape[:-1])
        quant = F.embedding(ind, self.embed.transpose(0, 1))
        if self.training:
            onehot_sum = onehot.sum(0)
            embed_sum = flat.transpose(0, 1) @ onehot
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(onehot_sum)
                dist.all_reduce(embed_sum)
            self.cluster_size.data.mul_(self.decay).add_(onehot_sum, alpha=1 - self.decay)
            self.embed_avg.data.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            size = (self.cluster_size + self.eps) / (n + self.n_embed * self.eps) * n
            self.embed.data.copy_(self.embed_avg / size.unsqueeze(0))
        diff = (quant.detach() - x).pow(2).mean()
        return x + (quant - x).detach(), diff, ind


class ResBlock(nn.Module):
    def __init__(self, in_channel: int, channel: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.ReLU(), nn.Conv2d(in_channel, channel, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channel, in_channel, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


class Decoder(nn.Module):
    """Conv, residual blocks, then x4 upsampling by two stride-2 transposed convolutions."""

    def __init__(self, in_channel: int, out_channel: int, channel: int, n_res_block: int, n_res_channel: int):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channel, channel, 3, padding=1)]
        blocks += [ResBlock(channel, n_res_channel) for _ in range(n_res_block)]
        blocks += [
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channel, channel // 2, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channel // 2, out_channel, 4, stride=2, padding=1),
        ]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class VQVAE(nn.Module):
    """`(B, T, P, emb_dim)` -> `(B * T, 3, 16 sqrt(P), 16 sqrt(P))` and the quantisation loss."""

    def __init__(self, in_channel: int = 3, channel: int = 384, n_res_block: int = 4, n_res_channel: int = 128,
                 emb_dim: int = 384, n_embed: int = 2048, decay: float = 0.99, quantize: bool = False):
        super().__init__()
        self.quantize = quantize
        self.quantize_b = Quantize(emb_dim, n_embed, decay)
        self.upsample_b = Decoder(emb_dim, emb_dim, channel, n_res_block, n_res_channel)
        self.dec = Decoder(emb_dim, in_channel, channel, n_res_block, n_res_channel)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, p, e = z.shape
        side = math.isqrt(p)
        if side * side != p:
            raise ValueError(f"{p} patches are not a square grid")
        z = z.reshape(b * t, side, side, e)
        if self.quantize:
            z, diff, _ = self.quantize_b(z)
        else:
            diff = torch.zeros((), device=z.device, dtype=z.dtype)
        return self.dec(self.upsample_b(z.permute(0, 3, 1, 2))), diff
