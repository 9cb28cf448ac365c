"""`SourceManifest`: what a logger dataset holds on disk, before any array is read."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, computed_field


class EpisodeEntry(BaseModel):
    """One episode directory (`f"{index:06d}"`)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    directory: str
    length: int | None = Field(default=None, description="valid steps according to the metadata")
    files: dict[str, int] = Field(default_factory=dict, description="relative path -> bytes")
    step_files: list[str] = Field(default_factory=list, description="per-step files, sorted by step")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def bytes(self) -> int:
        return sum(self.files.values())


class SourceManifest(BaseModel):
    """Episodes, lengths, files and sizes found under a logger dataset root."""

    model_config = ConfigDict(extra="forbid")

    root: str
    layout: str
    episodes: list[EpisodeEntry] = Field(default_factory=list)
    unlisted_dirs: list[str] = Field(default_factory=list, description="episode dirs the metadata omits")
    root_files: dict[str, int] = Field(default_factory=dict)
    metadata: dict = Field(default_factory=dict, description="metadata.pkl, JSON-safe")
    lengths_from: str = Field(default="metadata", description="where the episode lengths came from")

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_bytes(self) -> int:
        return sum(self.root_files.values()) + sum(e.bytes for e in self.episodes)
