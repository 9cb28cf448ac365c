"""fcs_train: the full DINO-WM world model, its config, trainer, checkpoints and metrics."""

from fcs_train.config import TrainConfig, load_config
from fcs_train.models import VWorldModel, build_model

__all__ = ["TrainConfig", "VWorldModel", "build_model", "load_config"]
