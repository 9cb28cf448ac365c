"""Checks of one episode's arrays against its layout. Pure functions: arrays in, findings out.

Every check sees only the episode's valid steps (the caller slices off the padding), and the
value checks skip rows that are non-finite or all-zero, which have findings of their own.
"""

from __future__ import annotations

import numpy as np

from fcs_data.schemas import Finding, Layout, VectorField

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
        if f.kind != "quaternion_wxyz":
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
