"""`fcs layouts detect`: the matching built-in layout and variants, with evidence; none or two is an error.

Datasets are written by the loggers' own code (tests/loggers/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from loggers.min_logger import write_min
from loggers.primitive import write_primitive
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.schemas import builtin_layouts, get_layout
from fcs_data.sources.detect import DetectionError, detect_layout

runner = CliRunner()


def test_the_evidence_names_what_was_matched_and_the_channel_order_is_assumed(pristine_min: Path) -> None:
    det = detect_layout(pristine_min)
    assert det.layout.name == "franka_cube_stack_min"
    text = "\n".join(det.lines)
    assert "step files 000.h5, 001.h5" in text and "action (6,) float64" in text and "eef_states (1, 1, 14)" in text
    assert "frames are the logger's own observations/color/cam_0 copy" in text
    assert "each action's end is the EE position observed at its step (backward)" in text
    assert "quaternions read as wxyz point the gripper down" in text
    assert [a for a in det.assumed if a.startswith("channel_order BGR")], det.assumed


def test_rgb_frames_of_the_fixed_logger_are_not_guessed_from_the_copy_that_shares_their_conversion(
        tmp_path: Path) -> None:
    root = write_min(tmp_path / "rgb", [12, 12], rgb=True)  # process_imgs without the reversal: RGB everywhere
    det = detect_layout(root)
    assert det.layout.name == "franka_cube_stack_min", "the data cannot tell RGB from BGR: the default holds"
    assert any("channel_order BGR, the layout's declared order" in a and "one conversion" in a for a in det.assumed)


def test_an_independent_copy_decides_the_channel_order(tmp_path: Path) -> None:
    """A logger whose per-step copy is the camera's RGB, written apart from obses.pth (declared independent)."""
    root = write_min(tmp_path / "d", [12, 12])  # obses.pth BGR
    for p in root.glob("*/*.h5"):
        with h5py.File(p, "r+") as f:
            f["observations/color/cam_0"][...] = f["observations/color/cam_0"][()][..., ::-1]  # now RGB
    data = get_layout("franka_cube_stack_min").model_dump(mode="json")
    data["name"] = "lab_min"
    data["observation"]["color_independent"] = True
    layouts = {"lab_min": get_layout(_write(tmp_path / "lab.yaml", data))}
    det = detect_layout(root, layouts)
    assert det.layout.name == "lab_min" and not any("channel_order" in a for a in det.assumed)
    assert any("frames read as BGR match observations/color/cam_0, written independently" in e for e in det.evidence)
    with pytest.raises(DetectionError, match="frames read as RGB do not match"):
        detect_layout(root, {"lab_min": layouts["lab_min"].with_variants(["rgb"])})


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_nothing_matching_says_per_layout_which_field_fails(tmp_path: Path) -> None:
    root = write_primitive(tmp_path / "d", [10, 10], gripper=False)
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
    assert "isaaclab_franka_stack: needs one HDF5 file" in msg
    assert set(info.value.mismatches) == set(builtin_layouts()) and info.value.matches == []


def test_a_shape_the_logger_never_writes_is_named_with_the_declared_one(tmp_path: Path) -> None:
    root = write_min(tmp_path / "d", [10, 10])
    for p in root.glob("000000/000.h5"):
        with h5py.File(p, "r+") as f:
            value = f["eef_states"][()]
            del f["eef_states"]
            f["eef_states"] = value.reshape(14)
    with pytest.raises(DetectionError) as info:
        detect_layout(root)
    assert info.value.mismatches["franka_cube_stack_min"] == "eef_states has shape (14,), the layout says (1, 1, 14)"


def test_two_matching_layouts_are_an_error_listing_both(pristine_v1: Path) -> None:
    v1 = get_layout("franka_cube_stack_v1")
    twin = v1.model_copy(update={"name": "my_v1_copy"})
    with pytest.raises(DetectionError, match="ambiguous, it matches franka_cube_stack_v1, my_v1_copy") as info:
        detect_layout(pristine_v1, {**builtin_layouts(), "my_v1_copy": twin})
    assert info.value.matches == ["franka_cube_stack_v1", "my_v1_copy"]


def test_normalised_float_frames_match_no_layout(tmp_path: Path, pristine_min: Path) -> None:
    import torch

    root = Path(shutil.copytree(pristine_min, tmp_path / "d"))
    for p in root.glob("*/obses.pth"):
        torch.save(torch.load(p, weights_only=True) / 255, p)
    with pytest.raises(DetectionError, match=r"floats look normalised to 0\.\.1"):
        detect_layout(root)


def test_the_second_camera_is_used_and_not_mistaken_for_a_fusion(tmp_path: Path) -> None:
    root = write_primitive(tmp_path / "d", [10, 10], cameras=2)
    assert detect_layout(root).layout.name == "franka_cube_stack_primitive+cams2"
    fused = write_primitive(tmp_path / "f", [10, 10], cameras=2, fusion="channel_stack")
    det = detect_layout(fused)
    assert det.layout.name == "franka_cube_stack_primitive+chstack"
    assert any("equal the channel_stack fusion" in e for e in det.evidence)
    assert not any("channel_order" in a for a in det.assumed), "fused frames keep their channels as they are"


def test_cli_detect_prints_the_layout_and_evidence_and_validate_says_what_it_picked(pristine_min: Path,
                                                                                   tmp_path: Path) -> None:
    res = runner.invoke(app, ["layouts", "detect", str(pristine_min)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "franka_cube_stack_min" and "evidence:" in res.output
    assert "assumed:" in res.output and "channel_order BGR" in res.output
    res = runner.invoke(app, ["validate", str(pristine_min)])
    assert res.exit_code == 0 and "layout franka_cube_stack_min (detected" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["layouts", "detect", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "no built-in layout matches" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["layouts"])
    assert res.exit_code == 0 and "+6d" in res.output and "+rgb" in res.output and "isaaclab_franka_stack" in res.output


def test_a_layout_file_with_variants_applies_them(tmp_path: Path) -> None:
    data = get_layout("franka_cube_stack_min").model_dump(mode="json")
    data["name"] = "lab_min"
    layout = get_layout(_write(tmp_path / "lab.yaml", data))
    both = layout.with_variants(["rgb", "forward"])
    assert both.name == "lab_min+rgb+forward" and both.variants == {}
    assert both.observation.channel_order == "RGB" and both.action_alignment == "forward"
    twice = layout.model_copy(update={"variants": {**layout.variants, "again": layout.variants["forward"]}})
    with pytest.raises(ValueError, match="both 'alignment' variants"):
        twice.with_variants(["forward", "again"])
    with pytest.raises(KeyError, match="no variant 'bgr'"):
        get_layout("franka_cube_stack_min+bgr")
    assert np.isclose(layout.state_field("ee_pos").reach, 0.855)
