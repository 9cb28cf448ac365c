"""fcs_train: the full DINO-WM world model, its config, trainer, checkpoints, metrics and planning.

Names are imported on first use, so a light submodule (the planning client, which needs only
numpy, msgpack and websockets) can be imported without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fcs_data._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "fcs_train.config",
    "load_config": "fcs_train.config",
    "ModelSpec": "fcs_train.models",
    "VWorldModel": "fcs_train.models",
    "build_model": "fcs_train.models",
    "RunCheckpoint": "fcs_train.checkpoint",
    "load_checkpoint": "fcs_train.checkpoint",
    "load_world_model": "fcs_train.checkpoint",
    "RunDir": "fcs_train.run_dir",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fcs_train.checkpoint import RunCheckpoint, load_checkpoint, load_world_model
    from fcs_train.config import TrainConfig, load_config
    from fcs_train.models import ModelSpec, VWorldModel, build_model
    from fcs_train.run_dir import RunDir
