"""`WorldSpec`: which synthetic dataset a closed-loop world reproduces, and how its episodes are posed.

A world made from a spec renders with the dataset's own renderer (its camera and table texture,
which depend on the dataset seed), draws its scenes from the dataset's generator and speaks the
dataset layout's actions, so a model trained on the dataset sees the world as it saw its data.
`world_spec_from_store` recognises a store converted from `fcs synth` output and proves it by
regenerating its first episode.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fcs_data.errors import WorldError
from fcs_data.schemas import Layout, get_layout

if TYPE_CHECKING:
    from fcs_data.store import Store

EPISODE_BASE = 1_000_000  # world episodes are synthetic episodes from this index on: held out of any dataset
SYNTH_PARAMS = ("seed", "episode", "cube_colors", "grasped_cube", "target_position")


class WorldSpec(BaseModel):
    """The dataset a world reproduces, and its task settings.

    goal_steps: logged steps between the start and the goal (raw actions for dense layouts, one per
    primitive for the primitive logger); min_goal_distance: the start EE is at least this far from the
    goal EE (so doing nothing fails); success_radius: the EE (and, in a place task, each cube that
    moves) within this distance of the goal ends the episode as a success; max_steps: raw actions
    before the episode is truncated (None: 4 x goal_steps).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: str = "franka_cube_stack_v1"
    dataset_seed: int = 0
    image_size: int | None = Field(default=None, ge=16, description="None: the layout's frame height")
    min_len: int = Field(default=40, ge=2)
    max_len: int = Field(default=80, ge=2)
    goal_steps: int = Field(default=25, ge=1)
    min_goal_distance: float = Field(default=0.08, ge=0)
    success_radius: float = Field(default=0.05, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    noise: int = Field(default=2, ge=0, description="sensor noise amplitude, as the datasets' renderer")

    @model_validator(mode="after")
    def _check(self) -> WorldSpec:
        if self.max_len < self.min_len:
            raise ValueError(f"max_len {self.max_len} is below min_len {self.min_len}")
        if self.goal_steps > self.min_len - 1:
            raise ValueError(f"goal_steps {self.goal_steps} does not fit episodes of {self.min_len} steps")
        return self

    def resolved_layout(self) -> Layout:
        return get_layout(self.layout)

    @property
    def size(self) -> int:
        return self.image_size or self.resolved_layout().observation.height

    @property
    def step_limit(self) -> int:
        return self.max_steps or 4 * self.goal_steps


def _synthetic_params(store: Store) -> dict:
    params = store.episode_meta[0].params if store.num_episodes else {}
    missing = [k for k in SYNTH_PARAMS if k not in params]
    if missing:
        raise WorldError(f"{store.path}: its episodes were not made by fcs synth (property_params lack "
                         f"{', '.join(missing)}); the closed-loop world reproduces synthetic datasets only")
    return params


def world_spec_from_store(store: str | Path | Store, **settings: object) -> WorldSpec:
    """The world of the synthetic dataset `store` was converted from, with task `settings` (WorldSpec
    fields) on top. Refuses (`WorldError`) a store whose first episode is not what `fcs synth` makes
    from the seed its metadata names."""
    from fcs_data.store import Store, open_store
    from fcs_data.synth import episode_trajectory

    opened = store if isinstance(store, Store) else open_store(store)
    params = _synthetic_params(opened)
    layout = opened.layout
    meta = opened.episode_meta[0]
    traj, idx, _ = episode_trajectory(layout, int(meta.source_length), int(params["seed"]), int(params["episode"]))
    logged = np.asarray(opened.read_rows("state", 0, 1))[0, layout.proprio_slice]
    if not np.allclose(traj.ee_pos[idx[0]], logged, atol=1e-4):
        raise WorldError(f"{opened.path}: episode 0 is not fcs synth's episode {params['episode']} of seed "
                         f"{params['seed']} (its first EE position differs); the world would not look like the data")
    lengths = [int(m.source_length) for m in opened.episode_meta]
    h, w, _ = opened.metadata.frame_shape
    if h != w:
        raise WorldError(f"{opened.path}: frames {h} x {w}; the world renders square frames of one camera")
    base: dict[str, object] = {"layout": layout.name, "dataset_seed": int(params["seed"]), "image_size": int(h),
                               "min_len": min(lengths), "max_len": max(lengths)}
    return WorldSpec.model_validate(base | settings)
