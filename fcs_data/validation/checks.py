"""Checks of one episode's arrays against its layout. Pure functions: arrays in, findings out.

Every check sees only the episode's valid steps (the caller slices off the padding), and the
value checks skip rows that are non-finite or all-zero, which have findings of their own.
"""

from __future__ import annotations

import numpy as np

from fcs_data.schemas import Finding, Layout, VectorField
from fcs_data.schemas.layout import QUATERNION_KINDS
from fcs_data.sources.evidence import SEGMENT_TOL, quaternion_evidence

_BOUND_TOL = 1e-3
_QUAT_TOL = 1e-3
_REACH_MARGIN = 1.10
_ENV_SPACING = 2.5


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _steps(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def nonfinite(layout: Layout, episode: int, state: np.ndarray, action: np.ndarray) -> list[Finding]:
    out = []
    for group, arr, fields in (("state", state, layout.state), ("action", action, layout.action)):
        for f in fields:
            bad = ~np.isfinite(arr[:, f.slice]).all(axis=1)
            if bad.any():
                kinds = sorted({"NaN" if np.isnan(v) else "Inf" for v in arr[:, f.slice][~np.isfinite(arr[:, f.slice])]})
                out.append(Finding.make(
                    "nonfinite", f"{'/'.join(kinds)} in {group}.{f.name} at {int(bad.sum())} of {plural(len(arr), 'step')}",
                    episode=episode, field=f"{group}.{f.name}", steps=_steps(bad),
                    hint="the controller returned no value; fill or drop these steps before training",
                ))
    return out


def usable_rows(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Rows that are finite everywhere and not an all-zero (failed) state."""
    finite = np.isfinite(state).all(axis=1) & np.isfinite(action).all(axis=1)
    return finite & ~(state == 0).all(axis=1)


def zero_state(layout: Layout, episode: int, state: np.ndarray) -> list[Finding]:
    zero = (state == 0).all(axis=1)
    if not zero.any():
        return []
    return [Finding.make(
        "zero-state", f"{plural(int(zero.sum()), 'all-zero state row')} (the logger writes zeros when extraction fails)",
        episode=episode, field="state", steps=_steps(zero),
    )]


def bounds(layout: Layout, episode: int, arr: np.ndarray, fields: list[VectorField], group: str,
           rows: np.ndarray) -> list[Finding]:
    out = []
    for f in fields:
        if f.bounds is None:
            continue
        lo, hi = np.array(f.bounds).T
        tol = _BOUND_TOL * np.maximum(hi - lo, 1.0)
        vals = arr[:, f.slice]
        outside = ((vals < lo - tol) | (vals > hi + tol)) & rows[:, None]
        if not outside.any():
            continue
        dims = sorted(set(np.flatnonzero(outside.any(axis=0)).tolist()))
        worst = float(np.abs(vals[outside]).max())
        hint = None
        if f.unit == "rad" and worst > 2 * np.pi and worst <= 400:
            hint = f"values up to {worst:.1f} look like degrees, not radians"
        out.append(Finding.make(
            "out-of-bounds",
            f"{group}.{f.name} dims {dims} outside the layout bounds at {plural(int(outside.any(axis=1).sum()), 'step')} "
            f"(largest |value| {worst:.4g} {f.unit})",
            episode=episode, field=f"{group}.{f.name}", steps=_steps(outside.any(axis=1)), hint=hint,
        ))
    return out


def quaternions(layout: Layout, episode: int, state: np.ndarray, rows: np.ndarray) -> list[Finding]:
    out = []
    for f in layout.state:
        if f.kind not in QUATERNION_KINDS:
            continue
        norm = np.linalg.norm(state[:, f.slice], axis=1)
        off = (np.abs(norm - 1) > _QUAT_TOL) & rows
        if off.any():
            out.append(Finding.make(
                "quaternion-norm",
                f"state.{f.name} norm differs from 1 at {plural(int(off.sum()), 'step')} (range {norm[off].min():.4f}"
                f"..{norm[off].max():.4f})",
                episode=episode, field=f"state.{f.name}", steps=_steps(off),
            ))
    return out


def reach(layout: Layout, episode: int, state: np.ndarray, rows: np.ndarray) -> list[Finding]:
    out = []
    for f in layout.state:
        if f.reach is None:
            continue
        rel = state[:, f.slice] - np.array(f.base)
        far = (np.linalg.norm(rel, axis=1) > f.reach * _REACH_MARGIN) & rows
        if not far.any():
            continue
        offset = np.round(np.median(rel[far, :2], axis=0) / _ENV_SPACING) * _ENV_SPACING
        hint = None
        if np.any(offset != 0):
            hint = (f"positions sit near an environment grid offset ({offset[0]:+.1f}, {offset[1]:+.1f}, 0) m; "
                    "subtract the parallel-environment offset [col*2.5, row*2.5, 0]")
        out.append(Finding.make(
            "out-of-reach",
            f"state.{f.name} is farther than {f.reach} m from the robot base at {plural(int(far.sum()), 'step')} "
            f"(up to {np.linalg.norm(rel[far], axis=1).max():.2f} m)",
            episode=episode, field=f"state.{f.name}", steps=_steps(far), hint=hint,
        ))
    return out


def velocities(layout: Layout, episode: int, state: np.ndarray, rows: np.ndarray) -> list[Finding]:
    """Joint velocities against central differences of joint positions (episode-level verdict)."""
    out = []
    dt = 1.0 / layout.control_hz
    for f in layout.state:
        if f.derivative_of is None or len(state) < 3:
            continue
        pos = state[:, layout.state_field(f.derivative_of).slice].astype(np.float64)
        vel = state[:, f.slice].astype(np.float64)
        inner = rows[2:] & rows[1:-1] & rows[:-2]
        if inner.sum() < 2:
            continue
        fd = (pos[2:] - pos[:-2]) / (2 * dt)
        err = np.abs(vel[1:-1] - fd)[inner]
        typical = float(np.median(np.abs(fd[inner])))
        median_err = float(np.median(err))
        if median_err > 0.05 + 0.5 * typical:
            out.append(Finding.make(
                "velocity-mismatch",
                f"state.{f.name} differs from d/dt state.{f.derivative_of} by {median_err:.3g} {f.unit} "
                f"(median; typical speed {typical:.3g})",
                episode=episode, field=f"state.{f.name}",
                hint=f"check the velocity units and control_hz ({layout.control_hz:g} Hz)",
                data={"median_error": median_err, "typical_speed": typical},
            ))
    return out


def alignment(layout: Layout, episode: int, state: np.ndarray, action: np.ndarray, rows: np.ndarray) -> list[Finding]:
    """Do targets match the next state (forward) or the current one (backward)?"""
    out = []
    if len(state) < 3:
        return out
    pair = rows[:-1] & rows[1:]
    if pair.sum() < 2:
        return out
    for f in layout.action:
        if f.targets is None:
            continue
        target = state[:, layout.state_field(f.targets).slice]
        a = action[:-1, f.slice][pair]
        err_next = float(np.abs(a - target[1:][pair]).mean())
        err_cur = float(np.abs(a - target[:-1][pair]).mean())
        declared, opposite = (err_next, err_cur) if layout.action_alignment == "forward" else (err_cur, err_next)
        if opposite < 0.8 * declared:
            other = "backward" if layout.action_alignment == "forward" else "forward"
            out.append(Finding.make(
                "action-alignment",
                f"action.{f.name} matches state.{f.targets} of the {'current' if other == 'backward' else 'next'} "
                f"step better (mean error {opposite:.4g}) than the declared {layout.action_alignment} alignment "
                f"({declared:.4g})",
                episode=episode, field=f"action.{f.name}",
                hint=f"if the logger is {other}-looking, declare action_alignment: {other} in the layout",
                data={"declared_error": declared, "opposite_error": opposite},
            ))
    return out


def quaternion_order(layout: Layout, episode: int, state: np.ndarray, rows: np.ndarray) -> list[Finding]:
    """A cube-stacking gripper points down: the quaternion order that says so is the right one."""
    out = []
    for f in layout.state:
        if f.kind not in QUATERNION_KINDS or rows.sum() < 2 or f.name.endswith("_copy"):
            continue
        verdict, declared, opposite = quaternion_evidence(state[rows][:, f.slice], f.kind.removeprefix("quaternion_"))
        if verdict == "swapped":
            order = "xyzw" if f.kind == "quaternion_wxyz" else "wxyz"
            out.append(Finding.make(
                "quaternion-order",
                f"state.{f.name} read as {f.unit} points the gripper down at median {declared:+.2f} "
                f"(1 = straight down); read as {order} it points down at {opposite:+.2f}",
                episode=episode, field=f"state.{f.name}",
                hint=f"the quaternions look {order}: declare it (the layout's xyzw variant, or kind quaternion_{order})",
                data={"declared_down": declared, "opposite_down": opposite},
            ))
    return out


def segments(layout: Layout, episode: int, state: np.ndarray, action: np.ndarray, rows: np.ndarray) -> list[Finding]:
    """Segment actions `[start, end]`: step t+1 starts where step t ended, and each step is anchored
    at the EE position observed (the start at obs[t] for forward actions, the end for backward)."""
    out = []
    for start in (f for f in layout.action if f.kind == "position_start"):
        end = next((f for f in layout.action if f.kind == "position_end" and f.of == start.of), None)
        pos = state[:, layout.state_field(start.of).slice].astype(np.float64)
        s = action[:, start.slice].astype(np.float64)
        e = action[:, end.slice].astype(np.float64) if end is not None else None
        pair = rows[1:] & rows[:-1]
        if e is not None and pair.any():
            gap = np.linalg.norm(s[1:] - e[:-1], axis=1)
            broken = (gap > SEGMENT_TOL) & pair
            if broken.any():
                out.append(Finding.make(
                    "segment-continuity",
                    f"action.{start.name} of a step differs from action.{end.name} of the step before at "
                    f"{plural(int(broken.sum()), 'step')} (up to {1000 * gap[broken].max():.1f} mm)",
                    episode=episode, field=f"action.{start.name}", steps=_steps(np.concatenate([[False], broken])),
                    hint="each primitive starts where the previous one ended; a step may be missing or reordered",
                ))
        anchor, name = (s, start.name) if layout.action_alignment == "forward" or e is None else (e, end.name)
        if rows.sum() < 2:
            continue
        err = np.linalg.norm(anchor - pos, axis=1)
        off = (err > SEGMENT_TOL) & rows
        if not off.any():
            continue
        where = "start" if anchor is s else "end"
        shifts = {k: float(np.median(np.linalg.norm(anchor[max(k, 0) : len(pos) + min(k, 0)]
                                                     - pos[max(-k, 0) : len(pos) - max(k, 0)], axis=1)))
                  for k in (1, -1)}
        systematic = off.sum() > 0.5 * rows.sum()
        hint = None
        if systematic and shifts[1] <= SEGMENT_TOL:
            hint = (f"the {where} of step t equals the EE position at obs[t-1]: the observation was logged after "
                    "its action (a one-step shift); this data trains on misaligned pairs and must be regenerated")
        elif systematic and shifts[-1] <= SEGMENT_TOL:
            hint = (f"the {where} of step t equals the EE position at obs[t+1]: the actions run one step ahead "
                    "of the observations; check the layout's action_alignment")
        out.append(Finding.make(
            "action-anchor" if systematic else "action-anchor-outliers",
            f"action.{name} ({where} of each step) differs from state.{start.of} observed at the same step at "
            f"{plural(int(off.sum()), 'step')} of {rows.sum()} (median {1000 * float(np.median(err[rows])):.1f} mm, "
            f"up to {1000 * float(err[off].max()):.1f} mm)",
            episode=episode, field=f"action.{name}", steps=_steps(off), hint=hint,
            data={"median_error_m": float(np.median(err[rows])), "shift_plus_one_m": shifts[1],
                  "shift_minus_one_m": shifts[-1]},
        ))
    return out


def gripper_commands(layout: Layout, episode: int, action: np.ndarray, rows: np.ndarray) -> list[Finding]:
    out = []
    for f in layout.action:
        if f.kind != "gripper_command":
            continue
        vals = action[:, f.slice]
        bad = (~np.isclose(vals, 0.0) & ~np.isclose(vals, 1.0)).any(axis=1) & rows
        if bad.any():
            seen = sorted({round(float(v), 4) for v in vals[bad].ravel()})[:5]
            out.append(Finding.make(
                "gripper-values", f"action.{f.name} is neither 0 (open) nor 1 (closed) at "
                f"{plural(int(bad.sum()), 'step')} (values {seen})",
                episode=episode, field=f"action.{f.name}", steps=_steps(bad),
                hint="the gripper command is binary; a float here is a finger width or an interpolated value",
            ))
    return out


def lowdim(layout: Layout, episode: int, state: np.ndarray, action: np.ndarray) -> list[Finding]:
    """All low-dimensional checks of one episode."""
    rows = usable_rows(state, action)
    return [
        *nonfinite(layout, episode, state, action),
        *zero_state(layout, episode, state),
        *bounds(layout, episode, state, layout.state, "state", rows),
        *bounds(layout, episode, action, layout.action, "action", rows),
        *quaternions(layout, episode, state, rows),
        *reach(layout, episode, state, rows),
        *velocities(layout, episode, state, rows),
        *alignment(layout, episode, state, action, rows),
        *quaternion_order(layout, episode, state, rows),
        *segments(layout, episode, state, action, rows),
        *gripper_commands(layout, episode, action, rows),
    ]


class FrameScan:
    """Streaming per-frame checks over blocks of `(n, H, W, C)` frames of one episode.

    Finds constant (and black) frames, and frozen frames: a frame identical to the previous one
    while the state moved, which is what a logger stall looks like.
    """

    def __init__(self, moving: np.ndarray, integral: bool):
        self.moving = moving  # (T,) bool: state at t differs from t-1
        self.integral = integral
        self.constant: list[int] = []
        self.black: list[int] = []
        self.frozen: list[int] = []
        self.bad_values: list[int] = []
        self._prev: np.ndarray | None = None
        self._next = 0

    def follows(self, start: int) -> bool:
        """Whether a block starting at `start` continues the last one (no frames skipped)."""
        return start == self._next

    def gap(self) -> None:
        """Frames were skipped (unreadable): the next block is not compared with the last frame seen."""
        self._prev = None

    def update(self, start: int, block: np.ndarray) -> None:
        flat = block.reshape(len(block), -1)
        lo, hi = flat.min(axis=1), flat.max(axis=1)
        const = np.flatnonzero(lo == hi)
        self.constant += (const + start).tolist()
        self.black += (np.flatnonzero(hi == 0) + start).tolist()
        if self.integral:
            bad = (lo < 0) | (hi > 255) | ~(flat == np.rint(flat)).all(axis=1)
            self.bad_values += (np.flatnonzero(bad) + start).tolist()
        for i in range(len(block)):
            t = start + i
            prev = self._prev if i == 0 else block[i - 1]
            if (prev is not None and t < len(self.moving) and self.moving[t]
                    and memoryview(np.ascontiguousarray(block[i])).cast("B")
                    == memoryview(np.ascontiguousarray(prev)).cast("B")):
                self.frozen.append(t)
        self._prev = block[-1].copy()
        self._next = start + len(block)

    def findings(self, episode: int, file: str) -> list[Finding]:
        out = []
        if self.constant:
            n_black = len(self.black)
            n = len(self.constant)
            what = plural(n, "black frame") if n_black == n else (
                f"{plural(n, 'constant frame')} ({n_black} black)" if n_black else plural(n, "constant frame"))
            out.append(Finding.make("constant-frame", what, episode=episode, file=file,
                                    field="obs", steps=self.constant,
                                    hint="the camera rendered nothing; check the renderer/camera setup"))
        if self.frozen:
            out.append(Finding.make(
                "frozen-frames", f"{plural(len(self.frozen), 'frame')} identical to the previous one while the robot moves",
                episode=episode, file=file, field="obs", steps=self.frozen,
                hint="the logger stalled; frames and states are out of step",
            ))
        if self.bad_values:
            out.append(Finding.make(
                "obs-values", f"{plural(len(self.bad_values), 'float frame')} with values that are not whole numbers in 0..255",
                episode=episode, file=file, field="obs", steps=self.bad_values,
                hint="cannot be stored losslessly as uint8",
            ))
        return out
