"""The store's conventions and how each layout is brought to them.

A store always holds uint8 RGB frames and forward-looking actions (`action[t]` is applied after
`obs[t]`). Sources that differ are converted here, and only here, as their layout declares.
Frames the logger fused from several cameras stay one image, channels as they are.
"""

from __future__ import annotations

import numpy as np

from fcs_data.errors import SourceError
from fcs_data.schemas import Layout
from fcs_data.sources.base import StepArrays


def conversion_notes(layout: Layout) -> list[str]:
    """What converting a source in `layout` changes, in words (shown by validate and convert)."""
    notes = []
    if layout.observation.channel_order == "BGR" and layout.observation.fused is None:
        notes.append("frames BGR -> RGB")
    if layout.observation.dtype != "uint8":
        notes.append(f"frames {layout.observation.dtype} 0..255 -> uint8 (exact integers only)")
    if layout.observation.fused is not None:
        notes.append(f"frames fused by the logger ({layout.observation.fused}) kept as one image")
    if layout.action_alignment == "backward":
        notes.append(
            "actions backward -> forward (action[t] := action[t+1]; the last frame of each episode, whose "
            "forward action is unknown, is dropped)"
        )
    for cam in layout.cameras:
        notes.append(f"camera {cam.name} ({cam.step_dataset}) -> data/rgb_{cam.name}"
                     + (", BGR -> RGB" if cam.channel_order == "BGR" else ""))
    if layout.sources.frame_index_dataset:
        notes.append(f"each step's original frame index ({layout.sources.frame_index_dataset}) -> data/frame_index")
    return notes


def store_length(source_length: int, layout: Layout) -> int:
    """Frames an episode of `source_length` valid steps has in the store."""
    return source_length - 1 if layout.action_alignment == "backward" else source_length


def steps_to_store(steps: StepArrays, layout: Layout) -> StepArrays:
    """One episode's state, action and per-step fields with forward actions; state and action float32."""
    state, action, fields = steps.state, steps.action, steps.fields
    if layout.action_alignment == "backward":  # forward[t] = backward[t + 1]; state and fields stay with obs t
        state, action, fields = state[:-1], action[1:], {k: v[:-1] for k, v in fields.items()}
    return StepArrays(np.ascontiguousarray(state, np.float32), np.ascontiguousarray(action, np.float32),
                      {k: np.ascontiguousarray(v) for k, v in fields.items()})


def frames_to_store(block: np.ndarray, layout: Layout, episode: int, first_step: int,
                    channel_order: str | None = None) -> np.ndarray:
    """Frames `(n, H, W, 3)` as logged -> uint8 RGB. Refuses float frames that are not whole 0..255.

    `channel_order` is the frames' own (a further camera's); the observation's by default.
    """
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
    order = channel_order or (layout.observation.channel_order if layout.observation.fused is None else "RGB")
    if order == "BGR":
        block = block[..., ::-1]
    return np.ascontiguousarray(block)


def fuse_cameras(cam0: np.ndarray, cam1: np.ndarray, how: str) -> np.ndarray:
    """Two cameras' uint8 RGB frames `(T, h, w, 3)` fused as the primitive logger fuses them (its
    `fuse_cameras`, documented in Jacob1we/dino_wm DINO_WM_TRAINING_DOCUMENTATION.md section 12):
    `side_by_side` each camera resized to half width (cv2.INTER_AREA: the mean of column pairs) and
    put side by side, `(T, h, w, 3)`; `channel_stack` `[R0, G0, gray1]` (ITU-R 601 luma, as
    cv2.COLOR_RGB2GRAY); `alpha` `0.5 cam0 + 0.5 cam1`, truncated to uint8."""
    a, b = cam0.astype(np.float32), cam1.astype(np.float32)
    if how == "side_by_side":
        w = a.shape[2] - a.shape[2] % 2
        halves = [np.rint((x[:, :, 0:w:2] + x[:, :, 1:w:2]) / 2) for x in (a, b)]
        return np.concatenate(halves, axis=2).astype(np.uint8)
    if how == "channel_stack":
        gray = np.rint(b @ np.array([0.299, 0.587, 0.114], np.float32))
        return np.stack([a[..., 0], a[..., 1], gray], axis=-1).clip(0, 255).astype(np.uint8)
    if how == "alpha":
        return np.clip(0.5 * a + 0.5 * b, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown fusion {how!r}")
