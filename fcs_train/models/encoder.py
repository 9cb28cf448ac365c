"""The frozen DINOv2 encoder, built with timm and loaded from a file (never from torch.hub).

`DinoV2Encoder.base_model` is timm's `VisionTransformer` with DINOv2's ViT-S/14 architecture
(plus the official `mask_token`, so an official checkpoint loads strictly); its forward returns
the official `x_norm_patchtokens`: patch tokens after the final norm, `(N, P, D)`. Position
embeddings are interpolated for the input size exactly as the official model does (bicubic,
no antialiasing, scale factor `(n + 0.1) / 37`), so the tokens equal the official model's.
"""

from __future__ import annotations

import math
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from fcs_data.safe_io import load_state_dict
from fcs_train.weights import load_weights_into

INTERPOLATE_OFFSET = 0.1  # DINOv2's `interpolate_offset`

# preset -> timm VisionTransformer arguments; every preset runs the same code
ENCODER_PRESETS: dict[str, dict] = {
    "dinov2_vits14": {"timm_name": "vit_small_patch14_dinov2"},
    "tiny": {"img_size": 518, "patch_size": 14, "embed_dim": 48, "depth": 2, "num_heads": 3, "init_values": 1e-5},
}


def interpolate_pos_encoding(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Official DINOv2 interpolation of `pos_embed (1, 1 + M * M, D)` to a `rows x cols` patch grid."""
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    if m * m != n:
        raise ValueError(f"position embedding of {n} patches is not a square grid")
    if rows == m and cols == m:
        return pos_embed
    dtype = pos_embed.dtype
    pos = pos_embed.float()
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    dim = pos.shape[-1]
    patch_pos = F.interpolate(
        patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2),
        scale_factor=((rows + INTERPOLATE_OFFSET) / m, (cols + INTERPOLATE_OFFSET) / m),
        mode="bicubic",
        antialias=False,
    )
    if patch_pos.shape[-2:] != (rows, cols):
        raise ValueError(f"interpolated to {tuple(patch_pos.shape[-2:])}, expected {(rows, cols)}")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat([cls_pos, patch_pos], dim=1).to(dtype)


def _build_vit(preset: str) -> VisionTransformer:
    if preset not in ENCODER_PRESETS:
        raise KeyError(f"unknown encoder preset {preset!r}; presets: {', '.join(ENCODER_PRESETS)}")
    args = dict(ENCODER_PRESETS[preset])
    name = args.pop("timm_name", None)
    if name is not None:
        vit = timm.create_model(name, pretrained=False, num_classes=0)
    else:
        vit = VisionTransformer(num_classes=0, **args)
    vit.mask_token = nn.Parameter(torch.zeros(1, vit.embed_dim))  # official key; unused for features
    return vit


class DinoV2Encoder(nn.Module):
    """`(N, 3, H, W)` images normalised to [-1, 1] -> `(N, H/14 * W/14, D)` patch tokens."""

    def __init__(self, preset: str = "dinov2_vits14"):
        super().__init__()
        self.name = f"dino_{preset}"
        self.preset = preset
        self.base_model = _build_vit(preset)
        self.emb_dim = self.base_model.embed_dim
        self.patch_size = self.base_model.patch_embed.patch_size[0]
        self.latent_ndim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.base_model
        n, _, h, w = x.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {self.patch_size}")
        tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([vit.cls_token.expand(n, -1, -1), tokens], dim=1)
        tokens = tokens + interpolate_pos_encoding(vit.pos_embed, h // self.patch_size, w // self.patch_size)
        tokens = vit.norm(vit.blocks(tokens))
        return tokens[:, 1:]


def load_encoder_weights(encoder: DinoV2Encoder, path: str | Path) -> list[str]:
    """Load DINOv2 weights from `path` into `encoder.base_model`; returns notes on what was adapted.

    Accepts the official `dinov2_vits14_pretrain.pth` key format (`cls_token`, `pos_embed`,
    `mask_token`, `blocks.i.ls1.gamma`, ...), timm's format (the same keys without `mask_token`),
    and either one under a `base_model.` or `encoder.base_model.` prefix. Loading is strict
    otherwise: a missing or misshapen tensor is an error naming it.
    """
    state = load_state_dict(path)
    if isinstance(state.get("model"), dict):
        state = state["model"]
    for prefix in ("encoder.base_model.", "base_model.", "module."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    notes = []
    if "mask_token" not in state:
        state["mask_token"] = torch.zeros_like(encoder.base_model.mask_token)
        notes.append("no mask_token in the file (timm format): set to zeros, unused for features")
    load_weights_into(encoder.base_model, state, path, f"DINOv2 {encoder.preset}")
    return notes
