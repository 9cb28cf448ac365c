"""`fcs layouts detect`: the matching built-in layout and variants, with evidence; none or two is an error."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.schemas import builtin_layouts, get_layout
from fcs_data.sources.detect import DetectionError, detect_layout
from fcs_data.synth import synthesize

runner = CliRunner()


def test_the_evidence_names_what_was_matched(pristine_min: Path) -> None:
    det = detect_layout(pristine_min)
    assert det.layout.name == "franka_cube_stack_min"
    text = "\n".join(det.lines)
    assert "step files 000.h5, 001.h5" in text and "action (6,) float64" in text
    assert "frames read as BGR match observations/color/cam_0" in text
    assert "each action's end is the EE position observed at its step (backward)" in text


def test_nothing_matching_says_per_layout_which_field_fails(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "d", episodes=2, min_len=12, max_len=12, seed=1, layout="franka_cube_stack_primitive+6d")
    for p in root.rglob("*.h5"):
        with h5py.File(p, "r+") as f:
            del f["info/primitive_name"]  # a 2-digit, 6-D per-step logger without primitive info
    with pytest.raises(DetectionError) as info:
        detect_layout(root)
    msg = str(info.value)
    assert "no built-in layout matches" in msg
    assert "franka_cube_stack_v1: needs states.pth at the root" in msg
    assert "franka_cube_stack_min: step files are named with 2 digits, the layout says 3" in msg
    assert "franka_cube_stack_primitive: needs info/primitive_name in each step file (absent)" in msg


def test_two_matching_layouts_are_an_error_listing_both(pristine_v1: Path) -> None:
    v1 = get_layout("franka_cube_stack_v1")
    twin = v1.model_copy(update={"name": "my_v1_copy"})
    with pytest.raises(DetectionError, match="ambiguous, it matches franka_cube_stack_v1, my_v1_copy"):
        detect_layout(pristine_v1, {**builtin_layouts(), "my_v1_copy": twin})


def test_normalised_float_frames_match_no_layout(tmp_path: Path, pristine_min: Path) -> None:
    import torch

    root = Path(shutil.copytree(pristine_min, tmp_path / "d"))
    for p in root.glob("*/obses.pth"):
        torch.save(torch.load(p, weights_only=True) / 255, p)
    with pytest.raises(DetectionError, match=r"floats look normalised to 0\.\.1"):
        detect_layout(root)


def test_the_second_camera_is_used_and_not_mistaken_for_a_fusion(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "d", episodes=2, min_len=12, max_len=12, seed=4,
                      layout="franka_cube_stack_primitive+cams2")
    assert detect_layout(root).layout.name == "franka_cube_stack_primitive+cams2"
    fused = synthesize(tmp_path / "f", episodes=2, min_len=12, max_len=12, seed=4,
                       layout="franka_cube_stack_primitive+chstack")
    assert detect_layout(fused).layout.name == "franka_cube_stack_primitive+chstack"


def test_cli_detect_prints_the_layout_and_evidence_and_validate_says_what_it_picked(pristine_min: Path,
                                                                                   tmp_path: Path) -> None:
    res = runner.invoke(app, ["layouts", "detect", str(pristine_min)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "franka_cube_stack_min" and "evidence:" in res.output
    res = runner.invoke(app, ["validate", str(pristine_min)])
    assert res.exit_code == 0 and "layout franka_cube_stack_min (detected" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["layouts", "detect", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "no built-in layout matches" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["layouts"])
    assert res.exit_code == 0 and "+6d" in res.output and "+rgb" in res.output


def test_a_layout_file_with_variants_applies_them(tmp_path: Path) -> None:
    import yaml

    data = get_layout("franka_cube_stack_min").model_dump(mode="json")
    data["name"] = "lab_min"
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(data))
    layout = get_layout(tmp_path / "lab.yaml")
    both = layout.with_variants(["rgb", "forward"])
    assert both.name == "lab_min+rgb+forward" and both.variants == {}
    assert both.observation.channel_order == "RGB" and both.action_alignment == "forward"
    twice = layout.model_copy(update={"variants": {**layout.variants, "again": layout.variants["forward"]}})
    with pytest.raises(ValueError, match="both 'alignment' variants"):
        twice.with_variants(["forward", "again"])
    with pytest.raises(KeyError, match="no variant 'bgr'"):
        get_layout("franka_cube_stack_min+bgr")
    assert np.isclose(layout.state_field("ee_pos").reach, 0.855)
