"""`fcs import-checkpoint`: a reference DINO-WM checkpoint -> an fcs checkpoint, without running it.

The reference saves whole pickled modules (`torch.save({"epoch": e, "predictor": module, ...})`),
which normally needs the reference code and `weights_only=False`. Here torch's weights-only
unpickler reads it, with every class of the reference, of torch.nn, of the optimisers and of
accelerate mapped to an inert container (`torch.serialization.safe_globals` with names). Inert
containers only record the state they are given; the parameters and buffers are collected from
it. Any other global in the file (a function, a class from anywhere else) refuses the import
before anything is unpickled.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from fcs_data.errors import UnsafePickleError
from fcs_train.checkpoint import save_checkpoint
from fcs_train.config import DecoderConfig, EncoderConfig, ModelConfig, PredictorConfig
from fcs_train.models.world_model import PARTS

# classes that may appear in a reference checkpoint; all become inert containers
ALLOWED_PREFIXES = (
    "models.",  # the reference: visual_world_model, vit, vqvae, proprio, dino, encoder.*
    "dinov2.",  # torch.hub DINOv2 modules (only when the encoder was trained and saved)
    "torch.nn.modules.",
    "torch.optim.",
    "accelerate.",
)
# containers of pickled optimizer state (dropped on import); also made inert
ALLOWED_EXACT = ("collections.defaultdict", "builtins.dict")
REFERENCE_DIM_HEAD = 64
REFERENCE_IMAGE_SIZE = 224


class Inert:
    """Stands in for any allowed class: keeps constructor arguments and pickled state, runs nothing."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def _inert_class(qualname: str) -> type[Inert]:
    return type(qualname.rsplit(".", 1)[-1], (Inert,), {"qualname": qualname})


def _module_state(obj: Inert) -> dict | None:
    state = obj.state[0] if isinstance(obj.state, tuple) else obj.state
    return state if isinstance(state, dict) and "_modules" in state else None


def _collect(obj: Inert, prefix: str, out: OrderedDict) -> None:
    state = _module_state(obj)
    if state is None:
        return
    skip = state.get("_non_persistent_buffers_set") or set()
    for name, p in (state.get("_parameters") or {}).items():
        if p is not None:
            out[prefix + name] = p.detach().clone()
    for name, b in (state.get("_buffers") or {}).items():
        if b is not None and name not in skip:
            out[prefix + name] = b.detach().clone()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, Inert):
            _collect(child, f"{prefix}{name}.", out)


def module_state_dict(obj: Any) -> OrderedDict:
    """Parameters and buffers of an inert module tree, as `module.state_dict()` would name them."""
    out: OrderedDict = OrderedDict()
    if isinstance(obj, Inert):
        _collect(obj, "", out)
        if list(out) and all(k.startswith("module.") for k in out):  # DDP / accelerate wrapper
            out = OrderedDict((k[len("module.") :], v) for k, v in out.items())
    return out


def read_reference_checkpoint(path: str | Path) -> tuple[dict[str, OrderedDict], dict[str, Any], list[str]]:
    """`(parts -> state dicts, plain values such as epoch, names of dropped entries)`."""
    path = Path(path)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    refused = [g for g in unsafe if not g.startswith(ALLOWED_PREFIXES) and g not in ALLOWED_EXACT]
    if refused:
        raise UnsafePickleError(path, f"global {refused[0]}" + (f" (and {len(refused) - 1} more)" if len(refused) > 1
                                                                else ""))
    mapping = [(_inert_class(name), name) for name in unsafe]
    with torch.serialization.safe_globals(mapping):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected the reference's dict of parts, found {type(obj).__name__}")
    parts, values, dropped = {}, {}, []
    for key, value in obj.items():
        if key in PARTS and isinstance(value, Inert):
            sd = module_state_dict(value)
            if sd:
                parts[key] = sd
                continue
        if isinstance(value, int | float | str | bool):
            values[key] = value
        else:
            dropped.append(key)
    if not parts:
        raise ValueError(f"{path}: no model parts ({', '.join(PARTS)}) found")
    return parts, values, dropped


def _count(sd: dict, pattern: str) -> int:
    return len({m.group(1) for k in sd if (m := re.fullmatch(pattern, k))})


def infer_model(parts: dict[str, OrderedDict]) -> tuple[ModelConfig, dict[str, int]]:
    """The `ModelConfig` and window dims the reference tensors imply (reference defaults elsewhere)."""
    cfg = ModelConfig()
    dims: dict[str, int] = {}
    enc_dim = 384
    if "encoder" in parts:
        enc_dim = int(parts["encoder"]["base_model.cls_token"].shape[-1])
        cfg.encoder = EncoderConfig(preset="dinov2_vits14" if enc_dim == 384 else "tiny")
    if "proprio_encoder" in parts:
        w = parts["proprio_encoder"]["patch_embed.weight"]
        cfg.proprio_emb_dim, dims["proprio_dim"] = int(w.shape[0]), int(w.shape[1])
    if "action_encoder" in parts:
        w = parts["action_encoder"]["patch_embed.weight"]
        cfg.action_emb_dim, dims["action_in_dim"] = int(w.shape[0]), int(w.shape[1])
    if "predictor" in parts:
        sd = parts["predictor"]
        pos = sd["pos_embedding"]
        dim = int(pos.shape[-1])
        inner = int(sd["transformer.layers.0.0.to_qkv.weight"].shape[0]) // 3
        cfg.predictor = PredictorConfig(
            depth=_count(sd, r"transformer\.layers\.(\d+)\.0\.to_qkv\.weight"),
            heads=inner // REFERENCE_DIM_HEAD, dim_head=REFERENCE_DIM_HEAD,
            mlp_dim=int(sd["transformer.layers.0.1.net.1.weight"].shape[0]),
        )
        cfg.concat_dim = 1 if dim > enc_dim else 0
        patches = (REFERENCE_IMAGE_SIZE // 16) ** 2 + (2 if cfg.concat_dim == 0 else 0)
        dims["num_hist"] = int(pos.shape[1]) // patches
    if "decoder" in parts:
        sd = parts["decoder"]
        cfg.decoder = DecoderConfig(
            channel=int(sd["upsample_b.blocks.0.weight"].shape[0]),
            n_res_block=_count(sd, r"upsample_b\.blocks\.(\d+)\.conv\.1\.weight"),
            n_res_channel=int(sd["upsample_b.blocks.1.conv.1.weight"].shape[0]) if "upsample_b.blocks.1.conv.1.weight"
            in sd else 128,
            n_embed=int(sd["quantize_b.embed"].shape[1]),
        )
    return cfg, dims


def import_reference_checkpoint(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Convert `src` (reference pickle) to the fcs checkpoint `dst`; returns a summary."""
    parts, values, dropped = read_reference_checkpoint(src)
    cfg, dims = infer_model(parts)
    payload = {
        "model": parts,
        "model_config": cfg.model_dump(mode="json"),
        "dims": dims,
        "epoch": int(values.get("epoch", 0)),
        "global_step": 0,
        "imported_from": {"path": str(Path(src).resolve()), "format": "dino_wm reference pickle",
                          "dropped": dropped},
    }
    save_checkpoint(payload, dst)
    return {"parts": {k: sum(v.numel() for v in sd.values()) for k, sd in parts.items()}, "epoch": payload["epoch"],
            "dropped": dropped, "model_config": cfg, "dims": dims}
