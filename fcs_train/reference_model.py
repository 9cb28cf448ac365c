"""What a reference checkpoint's tensors say about the model: image size, `num_hist`, `concat_dim`, dims, sizes.

The reference's causal mask `Attention.bias` gives the patches per frame exactly; `pos_embedding`,
the token widths and the weights give the rest, checked against the run's `hydra.yaml` and the
user's flags (`Hints`). What the tensors leave open (frameskip, or an ambiguous shape) asks for a flag.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from fcs_train.config import DecoderConfig, EncoderConfig, ModelConfig, PredictorConfig
from fcs_train.errors import ReferenceImportError
from fcs_train.models.world_model import DECODER_SCALE
from fcs_train.reference_pickle import Inert, ReferenceCheckpoint, state_of, submodule

REFERENCE_DIM_HEAD = 64  # the reference's default; not determined by the tensors
NUM_HIST_RANGE = range(1, 13)


def _count(sd: dict, pattern: str) -> int:
    return len({m.group(1) for k in sd if (m := re.fullmatch(pattern, k))})


def _need(sd: dict, part: str, *keys: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ReferenceImportError(f"{part} has no {missing[0]}: not a DINO-WM {part} (its tensors: "
                                   f"{', '.join(list(sd)[:6])}{', ...' if len(sd) > 6 else ''})")


def _mask_grid(module: Inert | None) -> tuple[int, int] | None:
    """`(patches per frame, frames)` from the reference's causal mask `Attention.bias (1, 1, N, N)`."""
    attn = submodule(module, "transformer.layers.0.0") if module is not None else None
    mask = (state_of(attn) or {}).get("bias")
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[-1] != mask.shape[-2]:
        return None
    row = mask[0, 0, 0]
    patches = int((row != 0).sum())
    if patches == 0 or mask.shape[-1] % patches:
        return None
    return patches, mask.shape[-1] // patches


def hydra_config(path: Path) -> dict[str, Any]:
    """The reference run's `hydra.yaml` (beside `checkpoints/`), read as plain YAML, if it is there."""
    for candidate in (path.parent.parent / "hydra.yaml", path.parent / "hydra.yaml"):
        if candidate.is_file():
            try:
                data = yaml.safe_load(candidate.read_text())
            except yaml.YAMLError:
                return {}
            return data if isinstance(data, dict) else {}
    return {}


@dataclass
class Hints:
    """What the user (flags) or the run's hydra.yaml says; checked against the tensors."""

    image_size: int | None = None
    num_hist: int | None = None
    frameskip: int | None = None
    action_dim: int | None = None


def infer_model(ckpt: ReferenceCheckpoint, hints: Hints | None = None) -> tuple[ModelConfig, dict[str, int], list[str]]:
    """The `ModelConfig`, window dims and notes the reference tensors (and hints) imply."""
    hints = hints or Hints()
    parts, notes = ckpt.parts, []
    cfg = ModelConfig()
    dims: dict[str, int] = {"num_pred": 1}
    for part, key in (("proprio_encoder", "proprio_dim"), ("action_encoder", "action_in_dim")):
        if part not in parts:
            raise ReferenceImportError(f"{ckpt.path}: no {part} in the checkpoint; the reference always saves it")
        _need(parts[part], part, "patch_embed.weight")
        w = parts[part]["patch_embed.weight"]
        dims[key] = int(w.shape[1])
        setattr(cfg, f"{part.split('_')[0]}_emb_dim", int(w.shape[0]))
    if "predictor" not in parts:
        raise ReferenceImportError(f"{ckpt.path}: no predictor in the checkpoint (a decoder-only run); nothing to "
                                   "import as a world model")
    sd = parts["predictor"]
    _need(sd, "predictor", "pos_embedding", "transformer.layers.0.0.to_qkv.weight", "transformer.layers.0.1.net.1.weight")
    pos = sd["pos_embedding"]
    tokens, dim = int(pos.shape[1]), int(pos.shape[-1])
    p_emb, a_emb = cfg.proprio_emb_dim, cfg.action_emb_dim
    if p_emb == a_emb == dim:  # proprio and action appended as tokens of the encoder's width
        cfg.concat_dim, enc_dim = 0, dim
    elif dim > p_emb + a_emb:  # tiled onto every patch token
        cfg.concat_dim, enc_dim = 1, dim - p_emb - a_emb
    else:
        raise ReferenceImportError(f"predictor width {dim} fits neither concat_dim 0 nor 1 with proprio and action "
                                   f"embeddings of {p_emb} and {a_emb}")
    if "decoder" in parts and "upsample_b.blocks.0.weight" in parts["decoder"]:
        dec_in = int(parts["decoder"]["upsample_b.blocks.0.weight"].shape[1])
        if dec_in != enc_dim:
            raise ReferenceImportError(f"the decoder takes {dec_in}-wide tokens but the predictor implies an encoder "
                                       f"of width {enc_dim}")
    presets = {384: "dinov2_vits14", 48: "tiny"}
    if enc_dim not in presets:
        raise ReferenceImportError(f"an encoder of width {enc_dim}: fcs has DINOv2 ViT-S/14 (384) and its tiny test "
                                   "encoder (48)")
    cfg.encoder = EncoderConfig(preset=presets[enc_dim], train="encoder" in parts)
    if "encoder" in parts:
        _need(parts["encoder"], "encoder", "base_model.cls_token")
        if int(parts["encoder"]["base_model.cls_token"].shape[-1]) != enc_dim:
            raise ReferenceImportError("the saved encoder's width differs from the predictor's tokens")
    elif enc_dim == 384:
        notes.append("the encoder was not saved (it was frozen): set model.encoder.weights to the DINOv2 file")
    inner = int(sd["transformer.layers.0.0.to_qkv.weight"].shape[0]) // 3
    cfg.predictor = PredictorConfig(depth=_count(sd, r"transformer\.layers\.(\d+)\.0\.to_qkv\.weight"),
                                    heads=inner // REFERENCE_DIM_HEAD, dim_head=REFERENCE_DIM_HEAD,
                                    mlp_dim=int(sd["transformer.layers.0.1.net.1.weight"].shape[0]))
    extra = 2 if cfg.concat_dim == 0 else 0
    grid = _mask_grid(ckpt.modules.get("predictor"))
    if grid is not None:
        patches, frames = grid
        if patches * frames != tokens:
            raise ReferenceImportError(f"the causal mask covers {frames} frames of {patches} patches but "
                                       f"pos_embedding has {tokens} positions")
        candidates = [(frames, patches - extra)]
    else:
        candidates = [(h, tokens // h - extra) for h in NUM_HIST_RANGE if tokens % h == 0]
        notes.append("no causal mask in the predictor: num_hist and the image size come from pos_embedding alone")
    sizes = []
    for h, p in candidates:
        side = math.isqrt(max(p, 0))
        if side * side == p and side > 0:
            sizes.append((h, side * DECODER_SCALE))
    if hints.num_hist is not None:
        sizes = [(h, s) for h, s in sizes if h == hints.num_hist]
    if hints.image_size is not None:
        sizes = [(h, s) for h, s in sizes if s == hints.image_size]
    if not sizes:
        given = {k: v for k, v in (("num_hist", hints.num_hist), ("image_size", hints.image_size)) if v is not None}
        raise ReferenceImportError(f"pos_embedding has {tokens} positions, which fits no num_hist and image size"
                                   + (f" with {given}" if given else "") + " (frames x (image/16)^2 patches"
                                   + (" + 2" if extra else "") + ")")
    if len(sizes) > 1:
        options = ", ".join(f"num_hist {h} at {s} px" for h, s in sizes)
        raise ReferenceImportError(f"pos_embedding has {tokens} positions, which fits {options}; say which with "
                                   "--num-hist or --image-size")
    dims["num_hist"], cfg.image_size = sizes[0]
    if "decoder" in parts:
        dec = parts["decoder"]
        _need(dec, "decoder", "upsample_b.blocks.0.weight", "quantize_b.embed")
        n_res = _count(dec, r"upsample_b\.blocks\.(\d+)\.conv\.1\.weight")
        cfg.decoder = DecoderConfig(
            channel=int(dec["upsample_b.blocks.0.weight"].shape[0]), n_res_block=n_res,
            n_res_channel=int(dec["upsample_b.blocks.1.conv.1.weight"].shape[0]) if n_res else 128,
            n_embed=int(dec["quantize_b.embed"].shape[1]))
    else:
        cfg.decoder = DecoderConfig(enabled=False)
        notes.append("no decoder in the checkpoint: the model is imported without one")
    action_in = dims["action_in_dim"]
    fs, a = hints.frameskip, hints.action_dim
    if fs is not None and a is not None and fs * a != action_in:
        raise ReferenceImportError(f"frameskip {fs} x action dim {a} = {fs * a}, but the action encoder takes "
                                   f"{action_in} inputs")
    if fs is None and a is not None:
        fs = action_in // a if action_in % a == 0 else None
        if fs is None:
            raise ReferenceImportError(f"the action encoder takes {action_in} inputs, not a multiple of action dim {a}")
    if fs is not None and action_in % fs:
        raise ReferenceImportError(f"the action encoder takes {action_in} inputs, not a multiple of frameskip {fs}")
    if fs is None:
        raise ReferenceImportError(
            f"frameskip cannot be inferred: the action encoder takes {action_in} inputs = frameskip x action dim; "
            "pass --frameskip (e.g. 5 for 9-D actions) or --action-dim")
    dims["frameskip"], dims["action_dim"] = fs, action_in // fs
    return cfg, dims, notes
