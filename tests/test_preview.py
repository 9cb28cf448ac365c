"""Contact sheets of a logger dataset's first frames as fcs will train on them (`fcs layouts preview`): the
way a user checks the channel order a layout declares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from loggers.min_logger import write_min
from PIL import Image
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.preview import source_contact_sheet
from fcs_data.schemas import get_layout


def _first_thumb(sheet: Image.Image) -> np.ndarray:
    return np.asarray(sheet.crop((0, 0, 128, 128)))[24:]  # below the step label


def _expected(frame: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((128, 128), Image.Resampling.BILINEAR))[24:]


def test_the_sheet_shows_the_frames_converted_as_the_layout_declares(tmp_path: Path) -> None:
    root = write_min(tmp_path / "m", [6], seed=5)  # obses.pth BGR float32
    logged = torch.load(root / "000000" / "obses.pth", weights_only=True).numpy().astype(np.uint8)
    sheet, n = source_contact_sheet(root, get_layout("franka_cube_stack_min"), 0, max_frames=4)
    assert n == 4 and sheet.size == (4 * 128, 128)
    np.testing.assert_array_equal(_first_thumb(sheet), _expected(np.ascontiguousarray(logged[0][..., ::-1])))
    wrong, _ = source_contact_sheet(root, get_layout("franka_cube_stack_min+rgb"), 0, max_frames=4)
    np.testing.assert_array_equal(_first_thumb(wrong), _expected(logged[0]))  # declared RGB: shown as stored


def test_cli_preview_writes_the_png_and_says_what_it_converted(tmp_path: Path) -> None:
    root = write_min(tmp_path / "m", [6, 6], seed=6)
    res = CliRunner().invoke(app, ["layouts", "preview", str(root), "--out", str(tmp_path / "s.png"), "--episode",
                                   "1"])
    assert res.exit_code == 0, res.output
    assert "layout franka_cube_stack_min (detected" in res.output and "frames BGR -> RGB" in res.output
    assert Image.open(tmp_path / "s.png").size == (6 * 128, 128)
    res = CliRunner().invoke(app, ["layouts", "preview", str(root), "--out", str(tmp_path / "x.png"), "--episode",
                                   "7", "--layout", "franka_cube_stack_min"])
    assert res.exit_code == 1 and "there is no episode 7" in res.output
