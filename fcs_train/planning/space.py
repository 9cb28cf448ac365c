"""`ActionSpace`: the set of action sequences a planner may choose from, in the model's units.

A plan is `(H, fs * A)` normalised actions, the model's input: H planning steps of `fs` raw actions
of `A` dims each. Bounds are given in raw units per dim (the training actions' q01..q99 by default,
a workspace box for the position dims, or explicit ranges) and applied in normalised space, by
sampling from a normal truncated to the bounds and by projecting (clamping) every sequence a solver
proposes. Dims the controller drives can be fixed to a value or masked (held at the training mean).

Segment actions (`[start, end]` of the EE, kinds position_start / position_end) are chained as the
logger wrote them: each raw action's start is the previous action's end, and the first start is the
current proprio. Only the ends are searched; a planner that searched the starts too would feed the
model sequences it never saw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from fcs_data.schemas import Layout
from fcs_data.schemas.layout import VectorField
from fcs_data.schemas.store import ArrayStats
from fcs_data.stats import STD_EPS
from fcs_train.planning.config import BoundsConfig
from fcs_train.planning.errors import PlanningError

POSITION_KINDS = ("position", "position_start", "position_end")
_DIM = re.compile(r"^([a-z][a-z0-9_]*)(?:\[(\d+)\])?$")


@dataclass(frozen=True)
class _Chain:
    starts: list[int]  # action dims of the segment's start position
    ends: list[int]  # action dims of its end position


def _dims(layout: Layout, name: str) -> list[int]:
    """`field` or `field[i]` -> action dims."""
    m = _DIM.match(name)
    fields = {f.name: f for f in layout.action}
    if not m or m.group(1) not in fields:
        known = ", ".join(f"{f.name} ({f.width} dims)" for f in layout.action)
        raise PlanningError(f"action dim {name!r}: name a field of {layout.name}'s actions, or field[i]: {known}")
    f = fields[m.group(1)]
    if m.group(2) is None:
        return list(range(f.start, f.stop))
    i = int(m.group(2))
    if i >= f.width:
        raise PlanningError(f"action dim {name!r}: {f.name} has {f.width} dims (0..{f.width - 1})")
    return [f.start + i]


def _chains(layout: Layout) -> list[_Chain]:
    """Start/end pairs of segment fields whose position is the model's proprio."""
    starts = [f for f in layout.action if f.kind == "position_start" and f.of == layout.proprio]
    ends = {f.of: f for f in layout.action if f.kind == "position_end"}
    out = []
    for s in starts:
        e: VectorField | None = ends.get(s.of)
        if e is not None and e.width == s.width == layout.proprio_dim:
            out.append(_Chain(list(range(s.start, s.stop)), list(range(e.start, e.stop))))
    return out


class ActionSpace:
    """Bounds, fixed dims and segment chaining for `(..., H, fs * A)` normalised sequences.

    `lo`, `hi` `(A,)` raw bounds per dim; `searched` `(A,)` bool: the dims a solver chooses (not
    fixed, masked or chained). All tensors live on `device`.
    """

    def __init__(self, layout: Layout, action_stats: ArrayStats, *, frameskip: int, horizon: int,
                 bounds: BoundsConfig, device: torch.device | str = "cpu"):
        a = layout.action_dim
        self.layout, self.frameskip, self.horizon, self.action_dim = layout, frameskip, horizon, a
        mean = np.asarray(action_stats.mean, np.float64)
        scale = np.asarray(action_stats.std, np.float64) + STD_EPS
        if mean.shape != (a,):
            raise PlanningError(f"action statistics have {mean.shape[0]} dims, the layout {layout.name} {a}")
        if bounds.default == "quantiles":
            lo, hi = np.asarray(action_stats.q01, np.float64), np.asarray(action_stats.q99, np.float64)
        else:
            lo, hi = np.asarray(action_stats.min, np.float64), np.asarray(action_stats.max, np.float64)
        lo, hi = lo.copy(), hi.copy()
        self.sources = ["training q01..q99" if bounds.default == "quantiles" else "training min..max"] * a
        if bounds.workspace is not None:
            for f in layout.action:
                if f.kind in POSITION_KINDS and f.width == 3:
                    for j, (wlo, whi) in enumerate(bounds.workspace):
                        lo[f.start + j], hi[f.start + j] = wlo, whi
                        self.sources[f.start + j] = "workspace"
        for name, (dlo, dhi) in bounds.dims.items():
            for d in _dims(layout, name):
                lo[d], hi[d] = dlo, dhi
                self.sources[d] = "given"
        fixed = np.full(a, np.nan)
        for name, value in bounds.fixed.items():
            for d in _dims(layout, name):
                fixed[d] = value
                self.sources[d] = f"fixed at {value:g}"
        for name in bounds.masked:
            for d in _dims(layout, name):
                fixed[d] = mean[d]
                self.sources[d] = "masked (training mean)"
        for d in np.flatnonzero(np.isnan(fixed) & (hi - lo <= 1e-9 * scale)):
            fixed[d] = lo[d]  # a dim that never varied in training
            self.sources[d] = f"constant in training ({lo[d]:g})"
        self.chains = _chains(layout) if bounds.chain_segments else []
        chained = [d for c in self.chains for d in c.starts]
        for d in chained:
            self.sources[d] = "chained (previous end / current proprio)"
        if not np.isfinite(np.concatenate([lo, hi])).all():
            raise PlanningError("the action bounds are not finite (are the checkpoint's statistics empty?)")

        self.lo_raw, self.hi_raw, self.fixed_raw = lo, hi, fixed
        self.searched = np.isnan(fixed)
        self.searched[chained] = False
        dev = torch.device(device)
        t = lambda v: torch.tensor(np.tile(v, frameskip), dtype=torch.float32, device=dev)  # noqa: E731
        self._mean, self._scale = mean, scale
        self.mean_t = torch.tensor(mean, dtype=torch.float32, device=dev)
        self.scale_t = torch.tensor(scale, dtype=torch.float32, device=dev)
        self.lo, self.hi = t((lo - mean) / scale), t((hi - mean) / scale)  # (fs * A,) normalised
        fixed_n = (fixed - mean) / scale
        self.fixed_mask = torch.tensor(np.tile(~np.isnan(fixed), frameskip), device=dev)
        self.fixed_value = t(np.nan_to_num(fixed_n))
        self.device = dev

    @property
    def width(self) -> int:
        return self.frameskip * self.action_dim

    # -- conversions -----------------------------------------------------------------------------
    def to_raw(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., H, fs * A)` normalised -> `(..., H * fs, A)` raw, in execution order."""
        steps = x.reshape(*x.shape[:-2], x.shape[-2] * self.frameskip, self.action_dim)
        return steps * self.scale_t + self.mean_t

    def from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """`(..., H * fs, A)` raw -> `(..., H, fs * A)` normalised (the inverse of `to_raw`)."""
        x = (raw - self.mean_t) / self.scale_t
        return x.reshape(*x.shape[:-2], x.shape[-2] // self.frameskip, self.width)

    # -- the constraints ---------------------------------------------------------------------------
    def project(self, x: torch.Tensor, proprio_raw: torch.Tensor) -> torch.Tensor:
        """Clamp `(..., H, fs * A)` into the bounds, set fixed dims, chain segments (differentiable
        in the searched dims). `proprio_raw (P,)`: the current proprio, the first segment's start."""
        x = torch.where(self.fixed_mask, self.fixed_value, torch.clamp(x, self.lo, self.hi))
        if not self.chains:
            return x
        steps = x.reshape(*x.shape[:-2], x.shape[-2] * self.frameskip, self.action_dim)
        out = steps.clone()
        for c in self.chains:
            ends = steps[..., c.ends] * self.scale_t[c.ends] + self.mean_t[c.ends]
            first = proprio_raw.to(ends.dtype).expand(*ends.shape[:-2], 1, ends.shape[-1])
            previous = torch.cat([first, ends[..., :-1, :]], dim=-2)
            out[..., c.starts] = (previous - self.mean_t[c.starts]) / self.scale_t[c.starts]
        return out.reshape(x.shape)

    def sample(self, mu: torch.Tensor, sigma: torch.Tensor, n: int, generator: torch.Generator,
               proprio_raw: torch.Tensor, normals: torch.Tensor | None = None) -> torch.Tensor:
        """`n` sequences `(n, H, fs * A)` from the normal `(mu, sigma)` truncated to the bounds, projected.

        Inverse-CDF sampling: u ~ U(Phi(a), Phi(b)), x = mu + sigma * Phi^-1(u), in float64 so a
        tail bound does not round to 0 or 1; `mu` is clamped into the bounds first. `normals (n, H, fs * A)`:
        standard normal draws to use instead of independent ones (e.g. coloured noise, correlated in
        time): u = Phi(normals) keeps their correlation and gives each sample the truncated marginal.
        """
        lo, hi = self.lo.double(), self.hi.double()
        mu = torch.clamp(mu.double(), lo, hi)
        sigma = sigma.double().clamp_min(1e-6)
        cdf_lo, cdf_hi = torch.special.ndtr((lo - mu) / sigma), torch.special.ndtr((hi - mu) / sigma)
        if normals is not None:
            u = torch.special.ndtr(normals.to(device=mu.device, dtype=torch.float64))
        else:
            u = torch.rand((n, *mu.shape), generator=generator, dtype=torch.float64, device=mu.device)
        p = (cdf_lo + u * (cdf_hi - cdf_lo)).clamp(1e-15, 1 - 1e-15)
        x = torch.clamp(mu + sigma * torch.special.ndtri(p), lo, hi)
        return self.project(x.float(), proprio_raw)

    def uniform(self, n: int, generator: torch.Generator, proprio_raw: torch.Tensor) -> torch.Tensor:
        """`n` sequences drawn uniformly inside the bounds (a baseline), projected."""
        u = torch.rand((n, self.horizon, self.width), generator=generator, device=self.device)
        return self.project(self.lo + u * (self.hi - self.lo), proprio_raw)

    def mean_sequence(self, proprio_raw: torch.Tensor) -> torch.Tensor:
        """`(H, fs * A)`: the training mean action at every step (normalised 0), projected."""
        return self.project(torch.zeros(self.horizon, self.width, device=self.device), proprio_raw)

    def describe(self) -> list[dict[str, object]]:
        """Per action dim: field, unit, raw bounds and where they come from."""
        out = []
        for f in self.layout.action:
            for j, d in enumerate(range(f.start, f.stop)):
                out.append({"dim": d, "name": f"{f.name}[{j}]" if f.width > 1 else f.name, "unit": f.unit,
                            "lo": float(self.lo_raw[d]), "hi": float(self.hi_raw[d]), "source": self.sources[d]})
        return out
