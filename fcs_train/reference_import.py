"""`fcs import-checkpoint`: a reference DINO-WM checkpoint -> an fcs checkpoint, without running it.

The reference `train.py` saves `{"epoch": e, "predictor": module, "predictor_optimizer": opt, ...}`
with `torch.save`: whole pickled modules, and the optimizers wrapped by accelerate after they have
stepped (their state is a `collections.defaultdict` keyed by the parameters). Loading that normally
needs the reference code and `weights_only=False`. Here:

1. every global the file's pickle names is listed before anything is unpickled (zip and legacy
   `torch.save` formats, and plain pickles); one outside the reference's modules, torch.nn,
   torch.optim, accelerate and DINOv2 refuses the import (`UnsafePickleError`);
2. torch's weights-only unpickler reads the file with each allowed class mapped to an inert
   container that only records the state it is given, `collections.defaultdict` to a plain dict,
   so nothing in the file runs;
3. the parameters and buffers are collected from the inert module trees, the model's shape
   (image size, `num_hist`, `concat_dim`, dims, depth, heads, ...) is inferred from the tensors
   (the reference's causal mask `Attention.bias` gives the patches per frame exactly), checked
   against `hydra.yaml` of the run when it is there and against the flags, and the weights are
   loaded strictly into fcs's model;
4. the optimizers' moments are mapped onto fcs's optimizers parameter by parameter (by the
   identity of the pickled parameter objects) and kept when every parameter maps, dropped with a
   note otherwise.

Every refusal is an `FcsError` (one line in the CLI).
"""

from __future__ import annotations

import _compat_pickle
import io
import math
import pickle
import pickletools
import re
import types
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from fcs_data.errors import FcsError, UnsafePickleError
from fcs_train.checkpoint import save_checkpoint
from fcs_train.config import DecoderConfig, EncoderConfig, ModelConfig, PredictorConfig
from fcs_train.models import build_model
from fcs_train.models.world_model import DECODER_SCALE, PARTS

ALLOWED_PREFIXES = (
    "models.",  # the reference: visual_world_model, vit, vqvae, proprio, dino, encoder.*
    "dinov2.",  # torch.hub DINOv2 modules (saved when the encoder was trained)
    "torch.nn.modules.",
    "torch.optim.",
    "accelerate.",  # AcceleratedOptimizer, AcceleratorState, GradientState and their enums
)
REFERENCE_DIM_HEAD = 64  # the reference's default; not determined by the tensors
TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy (non-zip) torch.save file
NUM_HIST_RANGE = range(1, 13)
# optimizer name in the reference checkpoint -> (fcs optimizer, the parts it updates, in order)
OPTIMIZERS = {
    "encoder_optimizer": ("encoder", ("encoder",)),
    "predictor_optimizer": ("predictor", ("predictor",)),
    "decoder_optimizer": ("decoder", ("decoder",)),
    "action_encoder_optimizer": ("action_encoder", ("action_encoder", "proprio_encoder")),
}


class ReferenceImportError(FcsError):
    """The file is not a reference DINO-WM checkpoint this importer can read, or a flag contradicts it."""


class Inert:
    """Stands in for any allowed class: keeps constructor arguments and pickled state, runs nothing."""

    qualname = "?"
    dump_patches = False  # asked by torch's legacy loader when it compares saved module sources

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def _inert_class(qualname: str) -> type[Inert]:
    return type(qualname.rsplit(".", 1)[-1], (Inert,), {"qualname": qualname})


def _plain_dict(*args: Any) -> dict:
    """`collections.defaultdict(factory)` read as a plain dict (the factory is never called)."""
    return {}


# -- listing the globals of a pickle without unpickling it ---------------------------------------
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}


def _python3_name(module: str, name: str) -> str:
    """`module.name` as Python 3 resolves it (protocol 2 pickles say `__builtin__.dict`)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _globals_of_one_pickle(f: io.BufferedIOBase) -> tuple[set[str], Any]:
    """The globals named by the pickle at `f`'s position (which ends after its STOP), and its value
    when it is a plain int (the legacy torch.save magic number)."""
    found: set[str] = set()
    memo: dict[int, Any] = {}
    pushed: list[Any] = []
    only_int = None
    for op, arg, _ in pickletools.genops(f):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.add(_python3_name(*str(arg).split(" ", 1)))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            mod, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            found.add(_python3_name(mod, attr) if isinstance(mod, str) and isinstance(attr, str)
                      else "<unresolvable global>")
            pushed.append(None)
        elif name in _STRING_OPS:
            pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"):
            only_int = arg if not pushed else None
            pushed.append(None)
        elif name in ("PROTO", "FRAME", "STOP"):
            continue
        else:
            pushed.append(None)
    return found, only_int


def pickle_globals(path: Path) -> set[str]:
    """Every global the pickled object of `path` names: `torch.save` zip or legacy format, or a plain pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if not names:
                    raise ReferenceImportError(f"{path}: a zip file without data.pkl: not a torch.save checkpoint")
                return _globals_of_one_pickle(io.BytesIO(z.read(names[0])))[0]
        with path.open("rb") as f:
            found, magic = _globals_of_one_pickle(f)
            if magic != TORCH_MAGIC:
                return found  # a plain pickle: its one object is what would be loaded
            for _ in range(3):  # protocol version, sys info, then the object (storages follow)
                more, _ = _globals_of_one_pickle(f)
                found |= more
            return found
    except (ValueError, EOFError) as e:  # pickletools: an unknown opcode, or the data ends before STOP
        raise ReferenceImportError(f"{path}: not a readable pickle or torch.save file ({type(e).__name__}: {e})") from None


def _refused(name: str) -> bool:
    if name.startswith(ALLOWED_PREFIXES) or name in ("collections.defaultdict", "builtins.dict"):
        return False
    return not (name.startswith("torch.") or name in ("collections.OrderedDict", "builtins.set", "builtins.frozenset",
                                                       "builtins.bytearray", "_codecs.encode"))


# -- reading ---------------------------------------------------------------------------------------
def _state(obj: Any) -> dict | None:
    if not isinstance(obj, Inert):
        return None
    state = obj.state[0] if isinstance(obj.state, tuple) else obj.state
    return state if isinstance(state, dict) else None


def _module_state(obj: Any) -> dict | None:
    state = _state(obj)
    return state if state is not None and "_modules" in state else None


def _collect(obj: Inert, prefix: str, out: OrderedDict, params: dict[int, str]) -> None:
    state = _module_state(obj)
    if state is None:
        return
    skip = state.get("_non_persistent_buffers_set") or set()
    for name, p in (state.get("_parameters") or {}).items():
        if p is not None:
            params[id(p)] = prefix + name
            out[prefix + name] = p.detach().clone()
    for name, b in (state.get("_buffers") or {}).items():
        if b is not None and name not in skip:
            out[prefix + name] = b.detach().clone()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, Inert):
            _collect(child, f"{prefix}{name}.", out, params)


def _submodule(obj: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        state = _module_state(obj)
        if state is None:
            return None
        obj = (state.get("_modules") or {}).get(name)
    return obj


@dataclass
class ReferenceCheckpoint:
    """What a reference checkpoint holds, read without running it."""

    path: Path
    parts: dict[str, OrderedDict] = field(default_factory=dict)  # part -> state dict
    param_names: dict[str, dict[int, str]] = field(default_factory=dict)  # part -> id(parameter) -> name
    modules: dict[str, Inert] = field(default_factory=dict)
    optimizers: dict[str, Inert] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def read_reference_checkpoint(path: str | Path) -> ReferenceCheckpoint:
    """Unpickle a reference checkpoint with every class inert; `UnsafePickleError` for any other global."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceImportError(f"{path}: no such file")
    names = sorted(pickle_globals(path))
    refused = [g for g in names if _refused(g)]
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise UnsafePickleError(path, f"global {refused[0]}{more}")
    mapping: list[tuple[Any, str]] = [(_plain_dict, "collections.defaultdict"), (dict, "builtins.dict")]
    mapping += [(_inert_class(n), n) for n in names if n.startswith(ALLOWED_PREFIXES)]
    try:
        if zipfile.is_zipfile(path):
            with torch.serialization.safe_globals(mapping):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            obj = _load_legacy(path, {name: value for value, name in mapping})
    except UnsafePickleError:
        raise
    except pickle_errors() as e:
        first = (str(e).strip().splitlines() or [""])[0]
        if "global" in first.lower():
            raise UnsafePickleError(path, first) from None
        raise ReferenceImportError(f"{path}: cannot be read as a torch.save checkpoint ({type(e).__name__}: "
                                   f"{first})") from None
    if not isinstance(obj, dict):
        raise ReferenceImportError(f"{path}: holds a {type(obj).__name__}, not the reference's dict of parts "
                                   f"({', '.join(PARTS)})")
    ckpt = ReferenceCheckpoint(path)
    for key, value in obj.items():
        if key in PARTS and _module_state(value) is not None:
            sd: OrderedDict = OrderedDict()
            ids: dict[int, str] = {}
            _collect(value, "", sd, ids)
            if sd and all(k.startswith("module.") for k in sd):  # a DDP wrapper that was not unwrapped
                sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
                ids = {i: n[len("module."):] for i, n in ids.items()}
                value = _submodule(value, "module")
            if sd:
                ckpt.parts[key], ckpt.param_names[key], ckpt.modules[key] = sd, ids, value
                continue
        if key in OPTIMIZERS and isinstance(value, Inert):
            ckpt.optimizers[key] = value
        elif isinstance(value, int | float | str | bool):
            ckpt.values[key] = value
        else:
            ckpt.dropped.append(key)
    if not ckpt.parts:
        raise ReferenceImportError(f"{path}: no model parts ({', '.join(PARTS)}) found; keys: {sorted(obj)[:10]}")
    return ckpt


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `allowed` (inert stand-ins, dict, and torch's weights-only allowlist)."""

    allowed: ClassVar[dict[str, Any]] = {}
    path: ClassVar[Path] = Path()

    def find_class(self, module: str, name: str) -> Any:
        full = _python3_name(module, name)
        if full not in self.allowed:
            raise UnsafePickleError(self.path, f"global {full}")
        return self.allowed[full]


def _load_legacy(path: Path, mapping: dict[str, Any]) -> Any:
    """A legacy (non-zip) `torch.save` file: torch's own reader with a restricted unpickler.

    torch's weights-only loader refuses these files outright when they hold whole modules (their
    classes are saved as persistent ids), so the restriction is applied here instead: the
    unpickler resolves torch's weights-only allowlist and the inert stand-ins, nothing else.
    """
    from torch import _weights_only_unpickler

    allowed = {**_weights_only_unpickler._get_allowed_globals(), **mapping}
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"allowed": allowed, "path": path})

    def load(f: Any, **kwargs: Any) -> Any:
        return unpickler(f, **kwargs).load()

    module = types.SimpleNamespace(Unpickler=unpickler, load=load, __name__="fcs_restricted_pickle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on module sources it cannot compare
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)


def pickle_errors() -> tuple[type[BaseException], ...]:
    return (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, KeyError, TypeError, AttributeError,
            zipfile.BadZipFile, OSError)


# -- what the tensors say about the model ------------------------------------------------------------
def _count(sd: dict, pattern: str) -> int:
    return len({m.group(1) for k in sd if (m := re.fullmatch(pattern, k))})


def _need(sd: dict, part: str, *keys: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ReferenceImportError(f"{part} has no {missing[0]}: not a DINO-WM {part} (its tensors: "
                                   f"{', '.join(list(sd)[:6])}{', ...' if len(sd) > 6 else ''})")


def _mask_grid(module: Inert | None) -> tuple[int, int] | None:
    """`(patches per frame, frames)` from the reference's causal mask `Attention.bias (1, 1, N, N)`."""
    attn = _submodule(module, "transformer.layers.0.0") if module is not None else None
    mask = (_state(attn) or {}).get("bias")
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[-1] != mask.shape[-2]:
        return None
    row = mask[0, 0, 0]
    patches = int((row != 0).sum())
    if patches == 0 or mask.shape[-1] % patches:
        return None
    return patches, mask.shape[-1] // patches


def _hydra_config(path: Path) -> dict[str, Any]:
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


# -- optimizers -------------------------------------------------------------------------------------
def _torch_optimizer(wrapper: Inert) -> Inert | None:
    """The torch optimizer inside an accelerate `AcceleratedOptimizer` (or the optimizer itself)."""
    state = _state(wrapper)
    if state is None:
        return None
    if "param_groups" in state and "state" in state:
        return wrapper
    inner = state.get("optimizer")
    return _torch_optimizer(inner) if isinstance(inner, Inert) else None


def map_optimizers(ckpt: ReferenceCheckpoint, model: torch.nn.Module, trainable_encoder: bool
                   ) -> tuple[dict[str, dict], list[str]]:
    """fcs optimizer state dicts `{name: state_dict}` from the reference optimizers, and notes."""
    out, notes = {}, []
    for ref_name, (fcs_name, parts) in OPTIMIZERS.items():
        if ref_name not in ckpt.optimizers:
            continue
        opt = _torch_optimizer(ckpt.optimizers[ref_name])
        kind = (opt.qualname.rsplit(".", 1)[-1] if opt is not None else "?")
        if opt is None or kind not in ("Adam", "AdamW"):
            notes.append(f"{ref_name} ({kind}) dropped: only Adam and AdamW states are imported")
            continue
        if fcs_name == "encoder" and not trainable_encoder:
            notes.append(f"{ref_name} dropped: the encoder is frozen in fcs")
            continue
        names: dict[int, str] = {}
        for part in parts:
            names.update({i: f"{part}.{n}" for i, n in ckpt.param_names.get(part, {}).items()})
        order = [f"{part}.{n}" for part in parts for n, _ in getattr(model, part).named_parameters()]
        index = {n: i for i, n in enumerate(order)}
        st = _state(opt)
        groups = st["param_groups"]
        moments: dict[int, dict] = {}
        unmapped = 0
        for group in groups:
            for p in group.get("params", []):
                name = names.get(id(p))
                if name not in index:
                    unmapped += 1
                    continue
                pstate = st["state"].get(p)
                if pstate:
                    moments[index[name]] = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                                            for k, v in pstate.items()}
        if unmapped or len({id(p) for g in groups for p in g.get("params", [])}) != len(order):
            notes.append(f"{ref_name} dropped: its parameters do not map one to one onto fcs's {fcs_name} "
                         f"optimizer ({unmapped} unknown)")
            continue
        hyper = {k: v for k, v in groups[0].items() if k != "params"}
        out[fcs_name] = {"state": moments, "param_groups": [{**hyper, "params": list(range(len(order)))}]}
        steps = {int(float(s["step"])) for s in moments.values() if "step" in s}
        notes.append(f"{ref_name} ({kind}) imported: moments of {len(moments)} of {len(order)} parameters"
                     + (f", {max(steps)} steps taken" if steps else ""))
    for name in ckpt.optimizers:
        if name not in OPTIMIZERS:
            notes.append(f"{name} dropped: no fcs optimizer of that name")
    return out, notes


def import_reference_checkpoint(src: str | Path, dst: str | Path, hints: Hints | None = None) -> dict[str, Any]:
    """Convert `src` (reference pickle) to the fcs checkpoint `dst`; returns a summary."""
    src = Path(src)
    ckpt = read_reference_checkpoint(src)
    hydra = _hydra_config(src)
    given = hints or Hints()
    merged = Hints(
        image_size=given.image_size or hydra.get("img_size"), num_hist=given.num_hist or hydra.get("num_hist"),
        frameskip=given.frameskip or hydra.get("frameskip"), action_dim=given.action_dim)
    cfg, dims, notes = infer_model(ckpt, merged)
    if hydra:
        notes.insert(0, f"read {src.parent.parent / 'hydra.yaml'} for what the tensors do not say")
        if hydra.get("concat_dim") not in (None, cfg.concat_dim):
            raise ReferenceImportError(f"hydra.yaml says concat_dim {hydra['concat_dim']}, the predictor's width "
                                       f"says {cfg.concat_dim}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-encoder warning: only the parts' shapes matter here
        model = build_model(cfg, proprio_dim=dims["proprio_dim"], action_dim=dims["action_dim"],
                            num_hist=dims["num_hist"], num_pred=dims["num_pred"], frameskip=dims["frameskip"])
    for name, sd in ckpt.parts.items():
        try:
            getattr(model, name).load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ReferenceImportError(f"{src}: {name} does not load into fcs's model inferred from it: "
                                       f"{str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}") from None
    optimizers, opt_notes = map_optimizers(ckpt, model, cfg.encoder.train)
    notes += opt_notes
    epoch = int(ckpt.values.get("epoch", 0))
    payload = {
        "model": ckpt.parts,
        "model_config": cfg.model_dump(mode="json"),
        "dims": {k: dims[k] for k in ("proprio_dim", "action_dim", "num_hist", "num_pred", "frameskip")},
        "epoch": epoch,
        "global_step": 0,
        "optimizers": optimizers,
        "imported_from": {"path": str(src.resolve()), "format": "dino_wm reference pickle",
                          "dropped": ckpt.dropped, "notes": notes},
    }
    save_checkpoint(payload, dst)
    return {"parts": {k: sum(v.numel() for v in sd.values()) for k, sd in ckpt.parts.items()}, "epoch": epoch,
            "dropped": ckpt.dropped, "model_config": cfg, "dims": payload["dims"], "optimizers": sorted(optimizers),
            "notes": notes}
