"""Layouts validate themselves and explain what is wrong; reports serialise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from fcs_data.schemas import FINDING_KINDS, Finding, Layout, ValidationReport, builtin_layouts, get_layout


def test_builtin_v1_layout_is_the_context_layout() -> None:
    v1 = get_layout()
    assert v1.name == "franka_cube_stack_v1"
    assert (v1.state_dim, v1.action_dim) == (22, 9)
    assert v1.observation.shape == (256, 256, 3) and v1.observation.dtype == "uint8"
    assert v1.observation.channel_order == "RGB" and v1.action_alignment == "forward"
    assert v1.proprio_slice == slice(0, 3) and v1.proprio_dim == 3
    joints = v1.state_field("joint_pos")
    assert joints.slice == slice(8, 15) and joints.bounds[3] == (-3.0718, -0.0698)
    assert v1.state_field("ee_quat").kind == "quaternion_wxyz"
    assert set(builtin_layouts()) == {"franka_cube_stack_v1", "franka_cube_stack_min", "franka_cube_stack_keyframe",
                                      "franka_cube_stack_primitive", "isaaclab_franka_stack"}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_layouts_load_from_yaml_and_json(tmp_path: Path, suffix: str) -> None:
    data = get_layout().model_dump(mode="json")
    data["name"] = "my_variant"
    data["observation"]["height"] = data["observation"]["width"] = 128
    path = tmp_path / f"variant{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    layout = get_layout(path)
    assert layout.name == "my_variant" and layout.observation.shape == (128, 128, 3)


def _v1_data() -> dict:
    return get_layout().model_dump(mode="json")


def test_overlapping_fields_are_refused_with_a_reason() -> None:
    data = _v1_data()
    data["state"][4]["start"] = 14  # joint_vel [14:22] overlaps joint_pos [8:15]
    with pytest.raises(ValidationError, match="state fields overlap"):
        Layout.model_validate(data)


def test_field_past_the_dimension_is_refused() -> None:
    data = _v1_data()
    data["state_dim"] = 20
    with pytest.raises(ValidationError, match=r"joint_vel.*exceeds state_dim 20"):
        Layout.model_validate(data)


def test_proprio_must_name_a_state_field() -> None:
    data = _v1_data()
    data["proprio"] = "elbow"
    with pytest.raises(ValidationError, match="proprio field 'elbow' is not a state field"):
        Layout.model_validate(data)


def test_bounds_must_match_the_field_width() -> None:
    data = _v1_data()
    data["state"][3]["bounds"] = data["state"][3]["bounds"][:6]
    with pytest.raises(ValidationError, match="6 bounds given for 7 dimensions"):
        Layout.model_validate(data)


def test_unknown_keys_are_refused() -> None:
    data = _v1_data()
    data["obsevation"] = data["observation"]
    with pytest.raises(ValidationError, match="obsevation"):
        Layout.model_validate(data)


def test_unknown_layout_name_lists_the_builtins() -> None:
    with pytest.raises(KeyError, match="franka_cube_stack_v1"):
        get_layout("nope")


def test_findings_take_severity_from_the_registry() -> None:
    f = Finding.make("nonfinite", "NaN", episode=3, field="action.x", steps=list(range(50)))
    assert f.severity == "error" and f.num_steps == 50 and len(f.steps) == 20
    assert all(sev in ("error", "warning", "info") for sev, _ in FINDING_KINDS.values())
    with pytest.raises(KeyError):
        Finding.make("made-up", "x")


def test_report_counts_and_exit_codes() -> None:
    r = ValidationReport(path="p", kind="source", layout="l")
    assert r.exit_code() == 0
    r.add(Finding.make("zero-state", "z", episode=1))
    assert r.counts == {"error": 0, "warning": 1, "info": 0}
    assert (r.exit_code(), r.exit_code(strict=True)) == (0, 1)
    r.add(Finding.make("nonfinite", "n", episode=2))
    assert r.exit_code() == 1 and r.bad_episodes() == {2: ["nonfinite: n"]}
    assert json.loads(r.model_dump_json())["counts"]["error"] == 1
