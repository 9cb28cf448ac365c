"""Contact sheets: an episode's frames at a glance, each labelled with its step index."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from fcs_data.store import Store


def contact_sheet(store: Store, episode: int, *, max_frames: int = 48, columns: int = 8, thumb: int = 128
                  ) -> Image.Image:
    """A grid of up to `max_frames` evenly spaced frames of `episode`, step index in each corner."""
    ep = store.episode(episode)
    n = len(ep)
    steps = np.unique(np.linspace(0, n - 1, min(max_frames, n)).round().astype(np.int64))
    frames = store.read_frames(store.episode_starts[ep.index] + steps)
    rows = -(-len(steps) // columns)
    h, w = frames.shape[1:3]
    tw, th = thumb, max(1, round(thumb * h / w))
    sheet = Image.new("RGB", (columns * tw, rows * th), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for k, (step, frame) in enumerate(zip(steps.tolist(), frames, strict=True)):
        x, y = (k % columns) * tw, (k // columns) * th
        sheet.paste(Image.fromarray(frame).resize((tw, th), Image.Resampling.BILINEAR), (x, y))
        label = f"t={step}"
        box = draw.textbbox((x + 3, y + 2), label)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((x + 3, y + 2), label, fill=(255, 255, 255))
    return sheet
