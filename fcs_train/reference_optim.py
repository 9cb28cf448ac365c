"""The reference's optimizer states (accelerate-wrapped Adam/AdamW) mapped onto fcs's optimizers.

Moments are matched to parameters by the identity of the pickled parameter objects, so each one
lands on the fcs parameter of the same name, and the state is saved with those names
(`param_names`), so loading it maps them by name too; a state is kept only when every parameter maps.
"""

from __future__ import annotations

import torch

from fcs_train.config import OptimConfig
from fcs_train.models import VWorldModel
from fcs_train.reference_pickle import OPTIMIZERS, Inert, ReferenceCheckpoint, state_of


def _torch_optimizer(wrapper: Inert) -> Inert | None:
    """The torch optimizer inside an accelerate `AcceleratedOptimizer` (or the optimizer itself)."""
    state = state_of(wrapper)
    if state is None:
        return None
    if "param_groups" in state and "state" in state:
        return wrapper
    inner = state.get("optimizer")
    return _torch_optimizer(inner) if isinstance(inner, Inert) else None


def map_optimizers(ckpt: ReferenceCheckpoint, model: VWorldModel) -> tuple[dict[str, dict], list[str]]:
    """fcs optimizer state dicts `{name: state_dict}` (their parameters named, as `fcs train` saves them)
    from the reference optimizers, and notes."""
    out, notes = {}, []
    fcs_groups = model.optimizer_groups(OptimConfig())  # the optimizers and their parameters, not their settings
    for ref_name, fcs_name in OPTIMIZERS.items():
        if ref_name not in ckpt.optimizers:
            continue
        opt = _torch_optimizer(ckpt.optimizers[ref_name])
        kind = (opt.qualname.rsplit(".", 1)[-1] if opt is not None else "?")
        if opt is None or kind not in ("Adam", "AdamW"):
            notes.append(f"{ref_name} ({kind}) dropped: only Adam and AdamW states are imported")
            continue
        if fcs_name not in fcs_groups:
            notes.append(f"{ref_name} dropped: the {fcs_name.replace('_', ' ')} does not train in fcs")
            continue
        group = fcs_groups[fcs_name]
        names: dict[int, str] = {}
        for part in group.parts:
            names.update({i: f"{part}.{n}" for i, n in ckpt.param_names.get(part, {}).items()})
        order = [n for n, _ in group.named_parameters(model)]
        index = {n: i for i, n in enumerate(order)}
        st = state_of(opt)
        ref_groups = st["param_groups"]
        moments: dict[int, dict] = {}
        unmapped = 0
        for ref_group in ref_groups:
            for p in ref_group.get("params", []):
                name = names.get(id(p))
                if name not in index:
                    unmapped += 1
                    continue
                pstate = st["state"].get(p)
                if pstate:
                    moments[index[name]] = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                                            for k, v in pstate.items()}
        if unmapped or len({id(p) for g in ref_groups for p in g.get("params", [])}) != len(order):
            notes.append(f"{ref_name} dropped: its parameters do not map one to one onto fcs's {fcs_name} "
                         f"optimizer ({unmapped} unknown)")
            continue
        hyper = {k: v for k, v in ref_groups[0].items() if k != "params"}
        out[fcs_name] = {"state": moments,
                         "param_groups": [{**hyper, "params": list(range(len(order))), "param_names": order}]}
        steps = {int(float(s["step"])) for s in moments.values() if "step" in s}
        notes.append(f"{ref_name} ({kind}) imported: moments of {len(moments)} of {len(order)} parameters"
                     + (f", {max(steps)} steps taken" if steps else ""))
    for name in ckpt.optimizers:
        if name not in OPTIMIZERS:
            notes.append(f"{name} dropped: no fcs optimizer of that name")
    return out, notes
