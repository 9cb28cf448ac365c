"""`Layout`: what a logger wrote, declared as data.

A layout names every slice of the state and action vectors (with units, kinds and bounds),
describes the observation frames (and further cameras), says where each array lives on disk, and
lists the variants its logger went through (a fix that changed the channel order, the action
alignment, the quaternion order, ...) as named overrides of its own fields. The validator, the
converter, the detector and the window sampler all read shapes from here, so a new logger, or a new
variant of one, is a YAML file, not new code.

A variant is asked for by name after a `+`: `franka_cube_stack_min+rgb+forward` is the min layout
with its `rgb` and `forward` variants applied (one variant per group at most).
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fcs_data.mappings import merge_mappings

FieldKind = Literal[
    "position",  # Cartesian position (m); `reach` enables the workspace check
    "quaternion_wxyz",  # unit quaternion, scalar first
    "quaternion_xyzw",  # unit quaternion, scalar last
    "gripper",  # finger opening (m)
    "joint_position",  # arm joint angles (rad)
    "joint_velocity",  # arm joint velocities (rad/s); `derivative_of` names the position field
    "target",  # an action that targets a state field (`targets`)
    "position_start",  # an action's start position: where the state field `of` is when the step starts
    "position_end",  # an action's end position: where the state field `of` is when the step ends
    "gripper_command",  # 0 open, 1 closed
    "other",
]
QUATERNION_KINDS = ("quaternion_wxyz", "quaternion_xyzw")
SEGMENT_KINDS = ("position_start", "position_end")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VectorField(_Strict):
    """A named slice `[start, stop)` of a state or action vector."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    start: int = Field(ge=0)
    stop: int = Field(gt=0)
    unit: str
    kind: FieldKind = "other"
    bounds: list[tuple[float, float]] | None = Field(
        default=None, description="per-dimension (low, high); values outside are reported"
    )
    reach: float | None = Field(default=None, gt=0, description="max distance (m) from `base` for positions")
    base: tuple[float, float, float] = (0.0, 0.0, 0.0)
    derivative_of: str | None = Field(default=None, description="state field this is the time derivative of")
    targets: str | None = Field(default=None, description="state field this action commands")
    of: str | None = Field(default=None, description="state position a position_start/position_end action is of")

    @property
    def width(self) -> int:
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.stop <= self.start:
            raise ValueError(f"field {self.name!r}: stop ({self.stop}) must be greater than start ({self.start})")
        if self.bounds is not None:
            if len(self.bounds) != self.width:
                raise ValueError(
                    f"field {self.name!r}: {len(self.bounds)} bounds given for {self.width} dimensions"
                )
            for lo, hi in self.bounds:
                if lo > hi:
                    raise ValueError(f"field {self.name!r}: bound low {lo} > high {hi}")
        if self.kind in QUATERNION_KINDS and self.width != 4:
            raise ValueError(f"field {self.name!r}: a quaternion has 4 dimensions, not {self.width}")
        if self.reach is not None and self.width != 3:
            raise ValueError(f"field {self.name!r}: `reach` needs a 3-D position")
        if self.kind in SEGMENT_KINDS and self.of is None:
            raise ValueError(f"field {self.name!r}: a {self.kind} action needs `of`, the state position it is of")
        return self


class Camera(_Strict):
    """A further camera: frames `(height, width, 3)` in a per-step dataset of each step file (stored in
    the format `Sources.image_dtype` / `Sources.image_leading_singleton` declare), or, for single-file
    sources, a `(T, height, width, 3)` dataset of each demo."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    dtype: Literal["uint8"] = Field(default="uint8", description="the store's dtype for this camera")
    channel_order: Literal["RGB", "BGR"] = "RGB"
    step_dataset: str = Field(description="e.g. observations/color/cam_1")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


class Observation(_Strict):
    """Frames as the logger stores them: `(T, height, width, channels)` in `file` per episode."""

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[3] = 3
    dtype: Literal["uint8", "float32"] = "uint8"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    file: str = "obses.pth"
    camera: str = Field(default="cam_0", pattern=r"^[a-z][a-z0-9_]*$", description="the camera these frames are of")
    fused: Literal["side_by_side", "channel_stack", "alpha"] | None = Field(
        default=None, description="the logger fused several cameras into this one image (kept as one image)")
    color_dataset: str | None = Field(
        default=None, description="per-step dataset holding a copy of the same camera's frames")
    color_independent: bool = Field(
        default=False,
        description="the copy in `color_dataset` comes from a code path independent of the frames' own, so its "
                    "agreement tells the channel order; False (the loggers: both pass through one conversion): "
                    "the declared `channel_order` holds and detection says it assumed it")
    fused_from: list[str] = Field(
        default_factory=list, description="per-step datasets of the cameras the logger fused into these frames")
    dataset: str | None = Field(
        default=None, description="single-file sources: the frames' dataset inside each demo (e.g. obs/table_cam)")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


SourceKind = Literal["global_pth", "per_step_h5", "robomimic_hdf5"]


class Sources(_Strict):
    """Where states and actions live.

    `global_pth`: one `(N, T_max, dim)` tensor per quantity at the dataset root (the v1 logger).
    `per_step_h5`: one HDF5 file per step in each episode directory (`000.h5`, ...), with the state
    and action read from the named datasets, of the declared shapes, flattened.
    `robomimic_hdf5`: one HDF5 file with a group `data/demo_N` per episode (Isaac Lab's recorder and
    Mimic): the state concatenated from `state_datasets` (each `(T, width)`), actions `(T, action_dim)`.
    """

    kind: SourceKind = "global_pth"
    states_file: str = "states.pth"
    actions_file: str = "actions.pth"
    metadata: Literal["written", "optional"] = Field(
        default="written", description="written: the logger writes metadata.pkl (a missing one is a warning); "
                                       "optional: it writes none (lengths come from the frames, silently)")
    state_dataset: str | None = None
    action_dataset: str | None = None
    state_shape: list[int] | None = Field(
        default=None, description="per-step state dataset shape as the logger writes it, e.g. [1, 1, 14]")
    action_shape: list[int] | None = Field(default=None, description="per-step action dataset shape, e.g. [6]")
    state_datasets: dict[str, int] = Field(
        default_factory=dict, description="robomimic_hdf5: datasets (inside each demo) concatenated into the state, "
                                          "with their widths, in order")
    image_dtype: Literal["uint8", "float32"] = Field(
        default="float32", description="per-step image datasets' dtype (the loggers' process_imgs: float32 0..255)")
    image_leading_singleton: bool = Field(
        default=True, description="per-step image datasets are (1, H, W, 3) (True, as the loggers write them) or "
                                  "(H, W, 3)")
    step_digits: int | None = Field(default=None, ge=1, description="step files are named with this many digits "
                                                                     "(2: 00.h5, 3: 000.h5); None: any one width")
    frame_index_dataset: str | None = Field(
        default=None, description="keyframe loggers: each step's original frame index (kept in the store)")
    requires: list[str] = Field(default_factory=list, description="datasets every step file holds (detection)")
    excludes: list[str] = Field(default_factory=list, description="datasets no step file holds (detection)")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind == "per_step_h5" and not (self.state_dataset and self.action_dataset):
            raise ValueError("per_step_h5 sources need `state_dataset` and `action_dataset`")
        if self.kind == "robomimic_hdf5" and not (self.state_datasets and self.action_dataset):
            raise ValueError("robomimic_hdf5 sources need `state_datasets` and `action_dataset`")
        return self

    def image_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The shape of one step's image dataset for a camera of `height` x `width`."""
        return (1, height, width, 3) if self.image_leading_singleton else (height, width, 3)


class Variant(_Strict):
    """A named override of a layout's fields, for one change its logger went through."""

    group: str = Field(description="variants of one group exclude each other (e.g. channel_order)")
    description: str
    set: dict[str, Any] = Field(description="fields of the layout to replace (nested mappings merge, lists replace)")


class Layout(_Strict):
    """A logger format: state/action fields, observation frames, proprio slice, action alignment."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.+-]+$")
    description: str = ""
    state_dim: int = Field(gt=0)
    action_dim: int = Field(gt=0)
    state: list[VectorField]
    action: list[VectorField]
    observation: Observation
    cameras: list[Camera] = Field(default_factory=list, description="further cameras, stored as data/rgb_<name>")
    proprio: str = Field(description="name of the state field fed to the model as proprioception")
    action_alignment: Literal["forward", "backward"] = Field(
        default="forward",
        description="forward: action[t] is applied after obs[t]; backward: action[t] produced obs[t]",
    )
    control_hz: float = Field(default=60.0, gt=0)
    sources: Sources = Sources()
    variants: dict[str, Variant] = Field(default_factory=dict)

    @field_validator("state", "action")
    @classmethod
    def _unique_names(cls, fields: list[VectorField]) -> list[VectorField]:
        names = [f.name for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate field names: {dupes}")
        return fields

    @model_validator(mode="after")
    def _check(self) -> Self:
        for group, fields, dim in (("state", self.state, self.state_dim), ("action", self.action, self.action_dim)):
            covered = [0] * dim
            for f in fields:
                if f.stop > dim:
                    raise ValueError(f"{group} field {f.name!r} [{f.start}:{f.stop}] exceeds {group}_dim {dim}")
                for i in range(f.start, f.stop):
                    covered[i] += 1
            if any(c > 1 for c in covered):
                raise ValueError(f"{group} fields overlap")
        names = {f.name for f in self.state}
        if self.proprio not in names:
            raise ValueError(f"proprio field {self.proprio!r} is not a state field ({sorted(names)})")
        for f in self.state:
            if f.derivative_of is not None and f.derivative_of not in names:
                raise ValueError(f"state field {f.name!r}: derivative_of {f.derivative_of!r} is not a state field")
        for f in self.action:
            for ref in (f.targets, f.of):
                if ref is None:
                    continue
                target = self.state_field(ref) if ref in names else None
                if target is None:
                    raise ValueError(f"action field {f.name!r}: {ref!r} is not a state field")
                if target.width != f.width:
                    raise ValueError(f"action field {f.name!r} has width {f.width}, its state field {target.width}")
        cams = [self.observation.camera, *(c.name for c in self.cameras)]
        if len(set(cams)) != len(cams):
            raise ValueError(f"camera names repeat: {cams}")
        src = self.sources
        for what, shape, dim in (("state_shape", src.state_shape, self.state_dim),
                                 ("action_shape", src.action_shape, self.action_dim)):
            if shape is not None and math.prod(shape) != dim:
                raise ValueError(f"sources.{what} {shape} holds {math.prod(shape)} values, not {dim}")
        if src.state_datasets and sum(src.state_datasets.values()) != self.state_dim:
            raise ValueError(f"sources.state_datasets widths sum to {sum(src.state_datasets.values())}, "
                             f"not state_dim {self.state_dim}")
        if src.kind == "robomimic_hdf5" and not self.observation.dataset:
            raise ValueError("robomimic_hdf5 sources need observation.dataset (the frames inside each demo)")
        return self

    @property
    def step_datasets(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """per_step_h5: every dataset the layout reads from each step file -> `(shape, dtype)`, the dtype
        `real` (any real number type), `integer`, or an exact numpy dtype name."""
        src, obs = self.sources, self.observation
        if src.kind != "per_step_h5" or not (src.state_dataset and src.action_dataset):
            return {}
        out = {src.state_dataset: (tuple(src.state_shape or [self.state_dim]), "real"),
               src.action_dataset: (tuple(src.action_shape or [self.action_dim]), "real")}
        if src.frame_index_dataset:
            out[src.frame_index_dataset] = ((), "integer")
        for name in [*([obs.color_dataset] if obs.color_dataset else []), *obs.fused_from]:
            out[name] = (src.image_shape(obs.height, obs.width), src.image_dtype)
        for cam in self.cameras:
            out[cam.step_dataset] = (src.image_shape(cam.height, cam.width), src.image_dtype)
        return out

    @property
    def demo_datasets(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """robomimic_hdf5: every dataset the layout reads from each demo -> `(shape, dtype)` with the
        leading time dimension left out (every one has `num_samples` rows)."""
        src, obs = self.sources, self.observation
        if src.kind != "robomimic_hdf5" or not src.action_dataset or not obs.dataset:
            return {}
        out: dict[str, tuple[tuple[int, ...], str]] = {name: ((width,), "real")
                                                        for name, width in src.state_datasets.items()}
        out[src.action_dataset] = ((self.action_dim,), "real")
        out[obs.dataset] = (obs.shape, obs.dtype)
        for cam in self.cameras:
            out[cam.step_dataset] = (cam.shape, cam.dtype)
        return out

    def state_field(self, name: str) -> VectorField:
        for f in self.state:
            if f.name == name:
                return f
        raise KeyError(f"layout {self.name!r} has no state field {name!r}")

    @property
    def proprio_slice(self) -> slice:
        return self.state_field(self.proprio).slice

    @property
    def proprio_dim(self) -> int:
        return self.state_field(self.proprio).width

    @property
    def camera_names(self) -> list[str]:
        """Every camera, the observation's first (stored as data/rgb), then the further ones."""
        return [self.observation.camera, *(c.name for c in self.cameras)]

    @property
    def step_fields(self) -> list[str]:
        """Per-step metadata kept in the store beside state and action."""
        return ["frame_index"] if self.sources.frame_index_dataset else []

    @property
    def base_name(self) -> str:
        return self.name.split("+", 1)[0]

    def with_variants(self, names: list[str]) -> Layout:
        """This layout with the named variants applied (the result lists none of its own)."""
        unknown = [n for n in names if n not in self.variants]
        if unknown:
            raise KeyError(f"layout {self.base_name!r} has no variant {unknown[0]!r}; variants: "
                           f"{', '.join(self.variants) or 'none'}")
        groups: dict[str, str] = {}
        data = self.model_dump(mode="json")
        for n in names:
            v = self.variants[n]
            if v.group in groups:
                raise ValueError(f"variants {groups[v.group]!r} and {n!r} are both {v.group!r} variants")
            groups[v.group] = n
            data = merge_mappings(data, v.set)
        data["name"] = "+".join([self.base_name, *names])
        data["variants"] = {}
        try:
            return Layout.model_validate(data)
        except ValidationError as e:
            raise ValueError(f"layout {data['name']!r}: {e.errors()[0]['msg']}") from None

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_file(cls, path: str | Path) -> Layout:
        """Load a layout from a `.yaml`/`.yml` or `.json` file."""
        path = Path(path)
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a layout file holds one mapping, got {type(data).__name__}")
        return cls.model_validate(data)


DEFAULT_LAYOUT = "franka_cube_stack_v1"


@cache
def builtin_layouts() -> dict[str, Layout]:
    """The layouts shipped with fcs, by name (`fcs layouts` lists them)."""
    out: dict[str, Layout] = {}
    for entry in sorted(resources.files("fcs_data").joinpath("layouts").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            layout = Layout.model_validate(yaml.safe_load(entry.read_text()))
            out[layout.name] = layout
    return out


def get_layout(name_or_path: str | Path | Layout | None = None) -> Layout:
    """A built-in layout by name (with `+variant`s), or a layout file (YAML/JSON) by path; None gives the default."""
    if isinstance(name_or_path, Layout):
        return name_or_path
    if name_or_path is None:
        name_or_path = DEFAULT_LAYOUT
    builtins = builtin_layouts()
    base, *variants = str(name_or_path).split("+")
    if base in builtins:
        return builtins[base].with_variants(variants) if variants else builtins[base]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"layout file {path} does not exist")
        return Layout.from_file(path)
    raise KeyError(f"unknown layout {str(name_or_path)!r}; built-in layouts: {', '.join(builtins)}")
