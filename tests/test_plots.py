"""Pictures of a run say what each row and column is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcs_data.preview import labelled_grid
from fcs_train.plots import save_prediction_grid


def _ink(img: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Dark pixels (text) inside `box`."""
    return int((np.asarray(img.crop(box).convert("L")) < 100).sum())


def test_every_row_and_column_of_a_grid_carries_its_label() -> None:
    frame = np.full((16, 16, 3), 250, np.uint8)
    short = labelled_grid([[frame, frame]], ["gt"], ["a", "b"], "t")
    long = labelled_grid([[frame, frame]], ["episode 12, start 40: ground truth"], ["frame 0 (context)", "b"], "t")
    assert long.width > short.width
    cell = 96  # frames are scaled up to at least this height
    left = long.width - 2 * (cell + 4)
    assert _ink(long, (0, long.height - cell, left, long.height)) > 0  # the row label
    assert _ink(long, (left, 0, long.width, long.height - cell - 4)) > 0  # title and column labels
    assert _ink(long, (left, long.height - cell, long.width, long.height)) == 0  # the frames themselves are light


def test_the_prediction_grid_has_a_row_per_kind_and_a_grey_cell_where_nothing_is_predicted(tmp_path: Path) -> None:
    b, f, s = 2, 4, 32
    visual = torch.ones(b, f, 3, s, s)
    path = save_prediction_grid(tmp_path / "g.png", visual, torch.ones(b, f - 1, 3, s, s), torch.ones(b, f, 3, s, s),
                                num_pred=1, title="epoch 3, step 40", samples=["episode 0, start 5", "episode 1, start 0"])
    img = Image.open(path)
    cell = 96 + 4
    assert img.height >= 2 * 3 * cell  # ground truth, prediction, reconstruction per sample
    grey = np.asarray(img.convert("RGB"))
    assert ((grey == 160).all(axis=2)).sum() >= 96 * 96 * 2  # the first frame of each prediction row
