"""A labelled PNG strip per closed-loop episode: the start, the frame after each MPC step, the goal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fcs_data.atomic import write_atomic

TILE = 128  # px: every frame is shown at this size
LABEL = 16  # px of label under each frame
TITLE = 18  # px of title above the strip


def save_strip(path: Path, frames: list[np.ndarray], labels: list[str], title: str, tile: int = TILE) -> Path:
    """Frames `(H, W, 3)` uint8 RGB side by side, each labelled under it (which is the start, which step,
    which the goal), the title above; written atomically to `path` (PNG)."""
    if len(frames) != len(labels):
        raise ValueError(f"{len(frames)} frames but {len(labels)} labels")
    pad = 2
    width = len(frames) * (tile + pad) + pad
    canvas = Image.new("RGB", (width, TITLE + tile + LABEL + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad + 2, 3), title, fill=(0, 0, 0))
    for i, (frame, label) in enumerate(zip(frames, labels, strict=True)):
        x = pad + i * (tile + pad)
        image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).resize((tile, tile), Image.BILINEAR)
        canvas.paste(image, (x, TITLE + pad))
        colour = (0, 110, 0) if "success" in label else (180, 0, 0) if label == "goal" else (0, 0, 0)
        draw.text((x + 2, TITLE + pad + tile + 2), label, fill=colour)
    return write_atomic(path, lambda f: canvas.save(f, format="PNG"))
