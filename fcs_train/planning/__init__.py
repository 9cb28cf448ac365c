"""Planning with a trained world model: MPC with batched CEM or gradient descent, offline evaluation
(`fcs plan-eval`) and a planning server for Isaac Sim (`fcs serve`, client in `planning.client`).

Names are imported on first use: `fcs_train.planning.client` needs only numpy, msgpack and websockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fcs_data._lazy import lazy_exports

_EXPORTS = {
    "ActionSpace": "fcs_train.planning.space",
    "Objective": "fcs_train.planning.objective",
    "PlanCancelled": "fcs_train.planning.errors",
    "PlanConfig": "fcs_train.planning.config",
    "PlanFailed": "fcs_train.planning.errors",
    "PlanInputError": "fcs_train.planning.errors",
    "PlanResult": "fcs_train.planning.mpc",
    "Planner": "fcs_train.planning.mpc",
    "PlanningError": "fcs_train.planning.errors",
    "PlanningModel": "fcs_train.planning.bundle",
    "load_plan_config": "fcs_train.planning.config",
    "load_planning_model": "fcs_train.planning.bundle",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fcs_train.planning.bundle import PlanningModel, load_planning_model
    from fcs_train.planning.config import PlanConfig, load_plan_config
    from fcs_train.planning.errors import PlanCancelled, PlanFailed, PlanInputError, PlanningError
    from fcs_train.planning.mpc import Planner, PlanResult
    from fcs_train.planning.objective import Objective
    from fcs_train.planning.space import ActionSpace
