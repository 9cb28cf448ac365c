"""Where a sequence of raw actions puts the end effector, read from the actions alone (no model).

The offline evaluation decides success on it: a plan succeeds when the EE position it commands last
is within a radius of the goal's logged EE position. EE-segment actions name that position (the end
of the last segment); the v1 layout's joint targets give it through the Panda's forward kinematics
(`fcs_data.synth.kinematics`, the published DH parameters), which `fk_matches` checks against the
logged data before it is trusted.
"""

from __future__ import annotations

import numpy as np

from fcs_data.schemas import Layout
from fcs_data.synth.kinematics import forward_kinematics


def reach_kind(layout: Layout) -> str | None:
    """"segment" (EE end positions of the proprio field), "joint" (7 Panda joint targets) or None."""
    if any(f.kind == "position_end" and f.of == layout.proprio and f.width == 3 for f in layout.action):
        return "segment"
    if any(f.kind == "target" and f.width == 7 for f in layout.action) and layout.proprio_dim == 3:
        return "joint"
    return None


def commanded_ee(layout: Layout, actions: np.ndarray) -> np.ndarray | None:
    """`(..., T, A)` raw actions -> `(..., 3)`: the EE position the last action commands (None when the
    layout's actions do not say; see `reach_kind`)."""
    kind = reach_kind(layout)
    last = np.asarray(actions, np.float64)[..., -1, :]
    if kind == "segment":
        end = next(f for f in layout.action if f.kind == "position_end" and f.of == layout.proprio)
        return last[..., end.slice]
    if kind == "joint":
        target = next(f for f in layout.action if f.kind == "target" and f.width == 7)
        return forward_kinematics(last[..., target.slice])[..., -1, :3, 3]
    return None


def fk_matches(layout: Layout, actions: np.ndarray, next_proprio: np.ndarray, tolerance: float = 0.01) -> bool:
    """Whether the commanded EE of logged actions `(N, T, A)` lands on the logged EE after them `(N, 3)`
    (median error under `tolerance` m): the kinematics describe this robot, with no base offset."""
    reached = commanded_ee(layout, actions)
    return reached is not None and float(np.median(np.linalg.norm(reached - next_proprio, axis=-1))) < tolerance
