"""A closed-loop reference world for planning (`CubeWorld`, a Gymnasium environment), built from the
synthetic datasets' kinematics, renderer and pick-and-place script. Needs `gymnasium` (fcs[train]).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fcs_data._lazy import lazy_exports

_EXPORTS = {
    "CubeWorld": "fcs_data.world.env",
    "Physics": "fcs_data.world.scene",
    "SceneState": "fcs_data.world.scene",
    "Task": "fcs_data.world.env",
    "WorldError": "fcs_data.errors",
    "WorldSpec": "fcs_data.world.spec",
    "world_spec_from_store": "fcs_data.world.spec",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fcs_data.errors import WorldError
    from fcs_data.world.env import CubeWorld, Task
    from fcs_data.world.scene import Physics, SceneState
    from fcs_data.world.spec import WorldSpec, world_spec_from_store
