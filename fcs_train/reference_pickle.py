"""Reading a reference DINO-WM checkpoint without running it.

Every global the file's pickle names is listed first (`fcs_data.pickle_scan`); one outside the
reference's modules, torch.nn, torch.optim, accelerate and DINOv2 refuses the file
(`UnsafePickleError`). Then torch's weights-only unpickler (or, for the legacy format, a restricted
one) reads it with each allowed class mapped to an `Inert` container that only records the state it
is given, and `collections.defaultdict` to a plain dict, so nothing in the file runs.
"""

from __future__ import annotations

import pickle
import types
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fcs_data.errors import UnsafePickleError
from fcs_data.pickle_scan import AllowlistUnpickler, pickle_globals
from fcs_train.errors import ReferenceImportError
from fcs_train.models.world_model import PARTS

ALLOWED_PREFIXES = (
    "models.",  # the reference: visual_world_model, vit, vqvae, proprio, dino, encoder.*
    "dinov2.",  # torch.hub DINOv2 modules (saved when the encoder was trained)
    "torch.nn.modules.",
    "torch.optim.",
    "accelerate.",  # AcceleratedOptimizer, AcceleratorState, GradientState and their enums
)
# optimizer name in the reference checkpoint -> the fcs optimizer (`VWorldModel.optimizer_groups`) it becomes
OPTIMIZERS = {
    "encoder_optimizer": "encoder",
    "predictor_optimizer": "predictor",
    "decoder_optimizer": "decoder",
    "action_encoder_optimizer": "action_encoder",
}


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


def _refused(name: str) -> bool:
    if name.startswith(ALLOWED_PREFIXES) or name in ("collections.defaultdict", "builtins.dict"):
        return False
    return not (name.startswith("torch.") or name in ("collections.OrderedDict", "builtins.set", "builtins.frozenset",
                                                       "builtins.bytearray", "_codecs.encode"))


def state_of(obj: Any) -> dict | None:
    if not isinstance(obj, Inert):
        return None
    state = obj.state[0] if isinstance(obj.state, tuple) else obj.state
    return state if isinstance(state, dict) else None


def module_state(obj: Any) -> dict | None:
    state = state_of(obj)
    return state if state is not None and "_modules" in state else None


def _collect(obj: Inert, prefix: str, out: OrderedDict, params: dict[int, str]) -> None:
    state = module_state(obj)
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


def submodule(obj: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        state = module_state(obj)
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
        if key in PARTS and module_state(value) is not None:
            sd: OrderedDict = OrderedDict()
            ids: dict[int, str] = {}
            _collect(value, "", sd, ids)
            if sd and all(k.startswith("module.") for k in sd):  # a DDP wrapper that was not unwrapped
                sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
                ids = {i: n[len("module."):] for i, n in ids.items()}
                value = submodule(value, "module")
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


def _load_legacy(path: Path, mapping: dict[str, Any]) -> Any:
    """A legacy (non-zip) `torch.save` file: torch's own reader with a restricted unpickler.

    torch's weights-only loader refuses these files outright when they hold whole modules (their
    classes are saved as persistent ids), so the restriction is applied here instead: the
    unpickler resolves torch's weights-only allowlist and the inert stand-ins, nothing else.
    """
    from torch import _weights_only_unpickler

    allowed = {**_weights_only_unpickler._get_allowed_globals(), **mapping}

    class Unpickler(AllowlistUnpickler):
        def __init__(self, file: Any, **kwargs: Any):  # torch builds it with (file, **kwargs)
            super().__init__(file, path, **kwargs)

        def resolve(self, module: str, name: str) -> Any:
            return allowed.get(f"{module}.{name}")

    def load(f: Any, **kwargs: Any) -> Any:
        return Unpickler(f, **kwargs).load()

    module = types.SimpleNamespace(Unpickler=Unpickler, load=load, __name__="fcs_restricted_pickle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on module sources it cannot compare
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)


def pickle_errors() -> tuple[type[BaseException], ...]:
    return (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, KeyError, TypeError, AttributeError,
            zipfile.BadZipFile, OSError)
