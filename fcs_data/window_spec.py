"""`WindowSpec`: the DINO-WM window contract, written once for the data, the trainer and planning.

A window of `F = num_hist + num_pred` frames at stride `fs = frameskip` starting at raw step `s`:

    frames   s, s + fs, ..., s + (F - 1) * fs                  F frames (visual, proprio, state)
    actions  raw a[s : s + F * fs]  (F * fs, A)  ->  packed (F, fs * A)
             packed row i = a[s + i * fs], ..., a[s + i * fs + fs - 1] concatenated: the fs raw
             actions executed after frame i (the model's action input)

An episode of `T` steps serves the starts `0 <= s <= T - F * fs`. Planning uses the same packing
with other frame counts (a horizon of H steps is `(H, fs * A)`), so `pack`/`unpack` take any count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np
    import torch

Array = TypeVar("Array", "np.ndarray", "torch.Tensor")


class WindowSpec(BaseModel):
    """The shape of a training window and how its raw actions are packed (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_hist: int = Field(ge=1, description="context frames the predictor sees")
    num_pred: int = Field(default=1, ge=1, description="frames predicted ahead")
    frameskip: int = Field(default=1, ge=1, description="raw steps between consecutive frames")
    action_dim: int = Field(ge=1, description="dims of one raw action (the layout's)")

    @property
    def num_frames(self) -> int:
        """`F = num_hist + num_pred`."""
        return self.num_hist + self.num_pred

    @property
    def raw_steps(self) -> int:
        """`F * frameskip`: the raw steps one window covers, the shortest episode that serves one."""
        return self.num_frames * self.frameskip

    @property
    def packed_dim(self) -> int:
        """`frameskip * action_dim`: the width of one packed action row (the action encoder's input)."""
        return self.frameskip * self.action_dim

    def pack(self, raw: Array) -> Array:
        """Raw actions `(..., T * fs, A)` -> packed `(..., T, fs * A)`."""
        fs, a = self.frameskip, self.action_dim
        if raw.shape[-1] != a or raw.shape[-2] % fs:
            raise ValueError(f"raw actions of shape {tuple(raw.shape)}: expected (..., T * {fs}, {a})")
        return raw.reshape(*raw.shape[:-2], raw.shape[-2] // fs, fs * a)

    def unpack(self, packed: Array) -> Array:
        """Packed actions `(..., T, fs * A)` -> raw `(..., T * fs, A)`, in execution order."""
        if packed.shape[-1] != self.packed_dim:
            raise ValueError(f"packed actions of shape {tuple(packed.shape)}: expected (..., T, {self.packed_dim})")
        return packed.reshape(*packed.shape[:-2], packed.shape[-2] * self.frameskip, self.action_dim)

    def raw_step(self, row: int, col: int = 0) -> int:
        """The raw step, counted from the window's start, of packed action element `[row, col]`
        (`col = 0`: of frame `row`)."""
        return row * self.frameskip + col // self.action_dim
