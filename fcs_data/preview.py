"""Contact sheets (an episode's frames at a glance, each labelled with its step index) and labelled grids.

`contact_sheet` shows a store's frames; `source_contact_sheet` shows a logger dataset's first frames as
fcs will train on them (after the layout's conversions: BGR -> RGB, float 0..255 -> uint8), which is how a
user checks the channel order a layout declares before converting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fcs_data.schemas import Layout
from fcs_data.store import Store


def _sheet(frames: np.ndarray, steps: list[int], columns: int, thumb: int) -> Image.Image:
    """A grid of `frames (n, H, W, 3)` uint8 RGB, each labelled `t=<step>`."""
    rows = -(-len(steps) // columns)
    h, w = frames.shape[1:3]
    tw, th = thumb, max(1, round(thumb * h / w))
    sheet = Image.new("RGB", (columns * tw, rows * th), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for k, (step, frame) in enumerate(zip(steps, frames, strict=True)):
        x, y = (k % columns) * tw, (k // columns) * th
        sheet.paste(Image.fromarray(frame).resize((tw, th), Image.Resampling.BILINEAR), (x, y))
        label = f"t={step}"
        box = draw.textbbox((x + 3, y + 2), label)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((x + 3, y + 2), label, fill=(255, 255, 255))
    return sheet


def contact_sheet(store: Store, episode: int, *, max_frames: int = 48, columns: int = 8, thumb: int = 128
                  ) -> Image.Image:
    """A grid of up to `max_frames` evenly spaced frames of `episode`, step index in each corner."""
    ep = store.episode(episode)
    n = len(ep)
    steps = np.unique(np.linspace(0, n - 1, min(max_frames, n)).round().astype(np.int64))
    frames = store.read_frames(store.episode_starts[ep.index] + steps)
    return _sheet(frames, steps.tolist(), columns, thumb)


def source_contact_sheet(root: str | Path, layout: Layout, episode: int = 0, *, max_frames: int = 16,
                         columns: int = 8, thumb: int = 128) -> tuple[Image.Image, int]:
    """The first `max_frames` frames of `episode` of the logger dataset at `root`, converted as the store
    will hold them under `layout`; returns the sheet and the number of frames shown. Raises `FcsError` when
    the frames cannot be read or converted."""
    from fcs_data.errors import SourceError
    from fcs_data.sources import open_source
    from fcs_data.sources.conventions import frames_to_store

    src = open_source(root, layout)
    if not src.has_episode(episode):
        raise SourceError(f"{root}: there is no episode {episode}")
    frames = src.open_frames(episode)
    obs = layout.observation
    if frames.ndim != 4 or tuple(frames.shape[1:]) != obs.shape or str(frames.dtype) != f"torch.{obs.dtype}":
        raise SourceError(f"{src.frames_label(episode)}: frames are {tuple(frames.shape)} {frames.dtype}, layout "
                          f"{layout.name} says (T, {obs.height}, {obs.width}, 3) {obs.dtype}")
    n = min(max_frames, len(frames))
    block = frames_to_store(frames[:n].numpy(), layout, episode, 0)
    return _sheet(block, list(range(n)), min(columns, max(n, 1)), thumb), n


def labelled_grid(rows: Sequence[Sequence[np.ndarray | None]], row_labels: Sequence[str],
                  col_labels: Sequence[str] | None = None, title: str | None = None, min_cell: int = 96
                  ) -> Image.Image:
    """Frames in a grid with a label for every row (left), every column (top) and a title.

    `rows[r][c]` is an `(H, W, 3)` uint8 frame, or None for a cell with no image (grey). Frames are
    scaled up (nearest) to at least `min_cell` pixels high so that small training images stay legible.
    """
    frames = [f for row in rows for f in row if f is not None]
    if not frames:
        raise ValueError("labelled_grid: no frames")
    h, w = frames[0].shape[:2]
    scale = max(1, -(-min_cell // h))
    ch, cw = h * scale, w * scale
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        box = probe.textbbox((0, 0), text)
        return box[2] - box[0], box[3] - box[1]

    pad = 4
    left = max(size(t)[0] for t in row_labels) + 2 * pad
    line = max(size("Ag")[1], 8) + 2 * pad
    top = (line if title else 0) + (line if col_labels else 0)
    ncols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (left + ncols * (cw + pad), top + len(rows) * (ch + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad), title, fill=(0, 0, 0))
    if col_labels:
        for c, text in enumerate(col_labels):
            draw.text((left + c * (cw + pad) + pad, top - line + pad), text, fill=(0, 0, 0))
    for r, (row, text) in enumerate(zip(rows, row_labels, strict=True)):
        y = top + r * (ch + pad)
        draw.text((pad, y + ch // 2 - line // 2 + pad), text, fill=(0, 0, 0))
        for c, frame in enumerate(row):
            x = left + c * (cw + pad)
            if frame is None:
                draw.rectangle((x, y, x + cw - 1, y + ch - 1), fill=(160, 160, 160))
                continue
            img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
            sheet.paste(img.resize((cw, ch), Image.Resampling.NEAREST) if scale > 1 else img, (x, y))
    return sheet
