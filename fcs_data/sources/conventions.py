"""The store's conventions and how each layout is brought to them.

A store always holds uint8 RGB frames and forward-looking actions (`action[t]` is applied after
`obs[t]`). Sources that differ are converted here, and only here, as their layout declares.
"""

from __future__ import annotations

import numpy as np

from fcs_data.errors import SourceError
from fcs_data.schemas import Layout


def conversion_notes(layout: Layout) -> list[str]:
    """What converting a source in `layout` changes, in words (shown by validate and convert)."""
    notes = []
    if layout.observation.channel_order == "BGR":
        notes.append("frames BGR -> RGB")
    if layout.observation.dtype != "uint8":
        notes.append(f"frames {layout.observation.dtype} 0..255 -> uint8 (exact integers only)")
    if layout.action_alignment == "backward":
        notes.append(
            "actions backward -> forward (action[t] := action[t+1]; the last frame of each episode, whose "
            "forward action is unknown, is dropped)"
        )
    return notes


def store_length(source_length: int, layout: Layout) -> int:
    """Frames an episode of `source_length` valid steps has in the store."""
    return source_length - 1 if layout.action_alignment == "backward" else source_length


def lowdim_to_store(state: np.ndarray, action: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """`(state, action)` of one episode's valid steps with forward actions, float32."""
    if layout.action_alignment == "backward":
        state, action = state[:-1], action[1:]  # forward[t] = backward[t + 1]
    return np.ascontiguousarray(state, np.float32), np.ascontiguousarray(action, np.float32)


def frames_to_store(block: np.ndarray, layout: Layout, episode: int, first_step: int) -> np.ndarray:
    """Frames `(n, H, W, 3)` as logged -> uint8 RGB. Refuses float frames that are not whole 0..255."""
    if block.dtype != np.uint8:
        rounded = np.rint(block)
        bad = ~((rounded == block) & (block >= 0) & (block <= 255)).reshape(len(block), -1).all(axis=1)
        if bad.any():
            steps = (np.flatnonzero(bad) + first_step).tolist()
            raise SourceError(
                f"episode {episode}: frames at steps {steps[:10]} hold values that are not whole numbers in "
                "0..255; they cannot be stored as uint8 without loss"
            )
        block = rounded.astype(np.uint8)
    if layout.observation.channel_order == "BGR":
        block = block[..., ::-1]
    return np.ascontiguousarray(block)
