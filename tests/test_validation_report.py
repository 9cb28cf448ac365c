"""`fcs validate --json`: a report is always written (detection failures included), to a file or stdout, in
the schema docs/REPORT.md documents."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import pytest
import torch
from loggers.primitive import write_primitive
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.schemas import FINDING_KINDS, ValidationReport, builtin_layouts

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "REPORT.md"


def _wrong_action_dim(root: Path) -> None:
    for p in root.glob("*/*.h5"):
        with h5py.File(p, "r+") as f:
            value = f["action"][()]
            del f["action"]
            f["action"] = value[:5]


def _normalised_frames(root: Path) -> None:
    for p in root.glob("*/obses.pth"):
        torch.save(torch.load(p, weights_only=True) / 255, p)


@pytest.mark.parametrize("damage", [None, _wrong_action_dim, _normalised_frames], ids=["empty", "action-dim",
                                                                                      "float-frames"])
def test_a_report_is_written_when_no_layout_matches(damage, tmp_path: Path) -> None:
    root = tmp_path / "d"
    if damage is None:
        root.mkdir()
    else:
        write_primitive(root, [6, 6])
        damage(root)
    res = runner.invoke(app, ["validate", str(root), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 1, res.output
    report = ValidationReport.model_validate_json((tmp_path / "r.json").read_text())
    assert report.layout is None and report.counts["error"] == 1
    f = report.findings[0]
    assert f.code == "layout-undetected" and f.severity == "error" and "no built-in layout matches" in f.message
    assert f.data is not None and f.data["tried"] == sorted(builtin_layouts())
    assert set(f.data["mismatches"]) == set(builtin_layouts())
    if damage is _wrong_action_dim:
        assert f.data["mismatches"]["franka_cube_stack_primitive"] == (
            "action has shape (5,), the layout says (8,)")


def test_an_ambiguous_layout_is_a_report_too(pristine_v1: Path, tmp_path: Path) -> None:
    from fcs_data.sources.detect import DetectionError, detect_layout
    from fcs_data.validation import detection_report

    twin = builtin_layouts()["franka_cube_stack_v1"].model_copy(update={"name": "twin"})
    with pytest.raises(DetectionError) as info:
        detect_layout(pristine_v1, {**builtin_layouts(), "twin": twin})
    report = detection_report(pristine_v1, info.value)
    f = report.findings[0]
    assert f.code == "layout-ambiguous" and f.data["matches"] == ["franka_cube_stack_v1", "twin"]
    assert report.exit_code() == 1


def test_json_dash_prints_only_json_on_stdout(pristine_min: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", str(pristine_min), "--json", "-"])
    assert res.exit_code == 0, res.stderr
    report = ValidationReport.model_validate(json.loads(res.stdout))
    assert report.layout == "franka_cube_stack_min" and report.detected
    assert "OK" in res.stderr and "OK" not in res.stdout
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["validate", str(tmp_path / "empty"), "--json", "-"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["findings"][0]["code"] == "layout-undetected"


def test_every_finding_code_and_report_field_is_documented() -> None:
    text = DOCS.read_text()
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \| (?:error|warning|info) \|", text, re.M))
    assert documented == set(FINDING_KINDS)
    for field in ValidationReport.model_json_schema()["properties"]:
        assert f"| `{field}` |" in text, field


def test_a_damaged_copy_of_a_dataset_gets_a_report_naming_the_file_and_dataset(pristine_min: Path,
                                                                               tmp_path: Path) -> None:
    root = Path(shutil.copytree(pristine_min, tmp_path / "d"))
    with h5py.File(root / "000001" / "007.h5", "r+") as f:
        value = f["eef_states"][()]
        del f["eef_states"]
        f["eef_states"] = value.reshape(1, 1, 1, 14)  # rank 4 in one step file
    res = runner.invoke(app, ["validate", str(root), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 1 and "internal error" not in res.output
    report = ValidationReport.model_validate_json((tmp_path / "r.json").read_text())
    f = report.of("bad-dataset")[0]
    assert (f.episode, f.file, f.field) == (1, "000001/007.h5", "eef_states")
    assert "has shape (1, 1, 1, 14); expected a real number dtype (1, 1, 14)" in f.message
