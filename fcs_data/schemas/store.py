"""`StoreMetadata`: the root attributes of an fcs Zarr store (docs/FORMAT.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fcs_data.format import FORMAT_VERSION, READABLE_FORMATS
from fcs_data.schemas.codec import Codec
from fcs_data.schemas.layout import Layout


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArrayStats(_Model):
    """Per-dimension statistics over valid steps, `(D,)` lists."""

    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    q01: list[float]
    q99: list[float]
    count: int = Field(ge=0)

    @model_validator(mode="after")
    def _same_length(self) -> ArrayStats:
        n = len(self.mean)
        for name in ("std", "min", "max", "q01", "q99"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"stats field {name!r} has {len(getattr(self, name))} values, mean has {n}")
        return self

    @property
    def dim(self) -> int:
        return len(self.mean)


class ImageStats(_Model):
    """Per-channel mean and std of the stored uint8 frames (0..255 scale), RGB order."""

    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    count: int = Field(ge=0, description="pixels per channel")


class StoreStats(_Model):
    state: ArrayStats
    action: ArrayStats
    proprio: ArrayStats
    rgb: ImageStats
    cameras: dict[str, ImageStats] = Field(default_factory=dict, description="further cameras, by name")


class Provenance(_Model):
    source: str
    source_layout: str
    fcs_version: str
    created: str
    command: list[str]
    conversions: list[str] = Field(default_factory=list, description="what was changed to fit the conventions")
    skipped_episodes: dict[int, list[str]] = Field(default_factory=dict, description="source index -> reasons")


class EpisodeMeta(_Model):
    """Per-episode metadata, in store order (`meta` group attribute `episodes`)."""

    source_index: int
    source_dir: str
    source_length: int = Field(description="valid steps in the source (the store may hold one fewer)")
    params: dict = Field(default_factory=dict, description="property_params.pkl as JSON")
    content_hash: str = Field(description="blake2b-256 of the episode's source files and state/action rows")


class SplitStats(_Model):
    """Normalisation statistics of a training split: over the valid, finite steps of its episodes.

    The converter stores those of the default split (`split_ratio` 0.9, `seed` 42), so a reader
    with the default split never computes statistics and never writes into the store.
    """

    split_ratio: float
    seed: int
    train_episodes: list[int]
    action: ArrayStats
    proprio: ArrayStats


class StoreMetadata(_Model):
    """Everything a reader needs besides the arrays: root attribute `fcs` of the store."""

    fcs_format: int
    layout: Layout
    channel_order: Literal["RGB"] = "RGB"
    action_alignment: Literal["forward"] = "forward"
    num_episodes: int = Field(ge=0)
    num_frames: int = Field(ge=0)
    frame_shape: tuple[int, int, int]
    shard_frames: int = Field(gt=0)
    lowdim_chunk: int = Field(gt=0)
    codec: Codec
    provenance: Provenance
    stats: StoreStats | None = None
    norm_stats: SplitStats | None = Field(default=None, description="statistics of the default train split")
    complete: bool = False

    @model_validator(mode="after")
    def _version(self) -> StoreMetadata:
        if self.fcs_format not in READABLE_FORMATS:
            newer = " (written by a newer fcs: upgrade fcs)" if self.fcs_format > FORMAT_VERSION else ""
            raise ValueError(f"fcs_format {self.fcs_format} is not supported by this fcs (reads formats "
                             f"{', '.join(map(str, READABLE_FORMATS))}){newer}")
        return self
