"""Every error planning raises on purpose, in one leaf module (solvers, the planner, the server and the
closed-loop evaluation import them from here; nothing here imports torch)."""

from __future__ import annotations

from fcs_data.errors import FcsError


class PlanningError(FcsError):
    """Planning cannot start: the checkpoint, the store or the settings do not fit together."""


class PlanInputError(PlanningError):
    """An observation, goal or executed action the planner refuses; it says which field and why."""


class PlanFailed(PlanningError):
    """A plan was attempted and found nothing usable (e.g. every candidate's predicted cost is NaN)."""


class PlanCancelled(FcsError):
    """The plan was cancelled (a client left, or it ran past its time limit)."""
