"""`ModelSpec`: everything that rebuilds a world model, and nothing else.

A checkpoint stores the model's shape once, here: the architecture (`ModelConfig`), the window it
takes (`WindowSpec`: context frames, frames predicted, frameskip, raw action dims) and the raw
proprio width. `spec.build()` gives the same model `fcs train` built (random weights until the
checkpoint's are loaded).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fcs_data.window_spec import WindowSpec
from fcs_train.config import ModelConfig
from fcs_train.models.build import build_model
from fcs_train.models.world_model import VWorldModel


class ModelSpec(BaseModel):
    """The architecture, window and proprio width of a world model (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelConfig
    window: WindowSpec
    proprio_dim: int = Field(ge=1, description="raw proprio dims (3 for an end-effector position)")

    def build(self) -> VWorldModel:
        """The model this spec describes; encoder weights load from `model.encoder.weights` when set."""
        w = self.window
        return build_model(self.model, proprio_dim=self.proprio_dim, action_dim=w.action_dim, num_hist=w.num_hist,
                           num_pred=w.num_pred, frameskip=w.frameskip)
