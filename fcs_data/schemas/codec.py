"""`Codec`: how the frames of a store are compressed (one of the `fcs convert --codec` presets)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Codec(BaseModel):
    """The frame compressor; every chunk also carries a crc32c (format 2)."""

    model_config = ConfigDict(extra="forbid")

    preset: str
    blosc_cname: str | None = None
    blosc_clevel: int | None = None
    blosc_shuffle: Literal["noshuffle", "shuffle", "bitshuffle"] | None = None
