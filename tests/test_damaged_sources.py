"""Damaged logger files never crash fcs: detect, validate (with and without --layout) and convert end in exit 0
or a named finding (exit 1), always with a JSON report, and a failed conversion leaves no OUT and no half store.

The damages are the ones seen on copies of real logger datasets (issue 17), each reproduced here on files
written by the loggers' own code, and then a property-based test (hypothesis) that writes step files and
obses.pth with random shapes, dtypes, kinds, missing datasets, truncated or empty files."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loggers.min_logger import write_min
from loggers.primitive import write_primitive
from loggers.v1 import write_v1
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.schemas import ValidationReport

runner = CliRunner()
MIN = "franka_cube_stack_min"
PRIM = "franka_cube_stack_primitive"


@dataclass
class Outcome:
    detect: int
    report: ValidationReport  # validate --layout
    detected_report: ValidationReport  # validate without --layout
    converted: bool


def _invoke(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    out = res.output
    assert res.exit_code in (0, 1), f"{args}: exit {res.exit_code}\n{out}"
    assert "internal error" not in out and "Traceback" not in out, f"{args}:\n{out}"
    return res.exit_code, out


def run_everything(root: Path, layout: str, work: Path) -> Outcome:
    """detect, validate --json (with and without --layout) and convert; the invariants every run keeps."""
    code_detect, _ = _invoke("layouts", "detect", str(root))
    reports = []
    for extra in (["--layout", layout], []):
        json_path = work / f"report{len(reports)}.json"
        code, _ = _invoke("validate", str(root), "--json", str(json_path), "--workers", "1", *extra)
        assert json_path.is_file(), "validate wrote no report"
        report = ValidationReport.model_validate_json(json_path.read_text())
        assert code == report.exit_code()
        reports.append(report)
    out = work / "out.zarr"
    code, output = _invoke("convert", str(root), "-o", str(out), "--layout", layout, "--workers", "1")
    if code == 1:
        assert not out.exists() and not out.with_name(out.name + ".partial").exists(), output
    else:
        assert not reports[0].has_errors, "a store was published from data validation calls an error"
        assert out.is_dir() and not out.with_name(out.name + ".partial").exists()
    return Outcome(code_detect, reports[0], reports[1], code == 0)


@pytest.fixture(scope="module")
def pristine_small_min(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_min(tmp_path_factory.mktemp("dmg") / "min", [8, 9], seed=11)


@pytest.fixture(scope="module")
def pristine_small_primitive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_primitive(tmp_path_factory.mktemp("dmg") / "prim", [7, 7], seed=12, cameras=2)


def _replace(path: Path, name: str, make) -> None:
    with h5py.File(path, "r+") as f:
        old = f[name][()] if name in f and isinstance(f[name], h5py.Dataset) else None
        if name in f:
            del f[name]
        make(f, name, old)


def _dataset(value):
    return lambda f, name, old: f.create_dataset(name, data=value(old) if callable(value) else value)


DAMAGES = {
    "eef_states rank 4": ("007.h5", "eef_states", _dataset(lambda v: v.reshape(1, 1, 1, 14)), "has shape (1, 1, 1, 14)"),
    "action as a group": ("003.h5", "action", lambda f, n, v: f.create_group(n).create_dataset("x", data=v),
                          "is a group, not a dataset"),
    "null action": ("002.h5", "action", lambda f, n, v: f.create_dataset(n, data=h5py.Empty("f8")),
                    "holds no data (a null dataspace)"),
    "empty action": ("002.h5", "action", _dataset(np.zeros((0,))), "has shape (0,)"),
    "external link": ("004.h5", "action", lambda f, n, v: f.__setitem__(n, h5py.ExternalLink("gone.h5", "/a")),
                      "is an external link to gone.h5:/a"),
    "dangling soft link": ("004.h5", "eef_states", lambda f, n, v: f.__setitem__(n, h5py.SoftLink("/nowhere")),
                           "dangling soft link"),
    "complex action": ("005.h5", "action", _dataset(lambda v: v.astype(np.complex64)), "has dtype complex64"),
    "string action": ("005.h5", "action", _dataset(np.bytes_("abc")), "has dtype |S3"),
    "cam_0 flattened": ("001.h5", "observations/color/cam_0", _dataset(lambda v: v.reshape(-1)),
                        "has shape (150528,)"),
    "cam_0 extra singleton": ("001.h5", "observations/color/cam_0", _dataset(lambda v: v[None]),
                              "has shape (1, 1, 224, 224, 3)"),
}


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_a_damaged_step_file_is_a_finding_naming_file_and_dataset(kind: str, pristine_small_min: Path,
                                                                   tmp_path: Path) -> None:
    root = Path(shutil.copytree(pristine_small_min, tmp_path / "d"))
    file, name, make, words = DAMAGES[kind]
    _replace(root / "000001" / file, name, make)
    outcome = run_everything(root, MIN, tmp_path)
    assert not outcome.converted
    found = [f for f in outcome.report.findings if f.code == "bad-dataset"]
    assert found, [f.message for f in outcome.report.findings]
    assert (found[0].episode, found[0].file, found[0].field) == (1, f"000001/{file}", name)
    assert words in found[0].message


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage"])
def test_an_unreadable_step_file_is_named(kind: str, pristine_small_min: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(pristine_small_min, tmp_path / "d"))
    p = root / "000000" / "004.h5"
    data = p.read_bytes()
    p.write_bytes({"truncated": data[: len(data) // 3], "empty": b"", "garbage": b"\x89HDF junk" * 50}[kind])
    outcome = run_everything(root, MIN, tmp_path)
    f = outcome.report.of("unreadable-file")[0]
    assert (f.episode, f.file) == (0, "000000/004.h5") and "not a readable HDF5 file" in f.message


@pytest.mark.parametrize("frames", [
    torch.zeros((8, 224, 224, 3), dtype=torch.complex64),
    torch.zeros((8, 224, 224, 3), dtype=torch.bfloat16),
    torch.zeros((8, 224 * 224 * 3)),
    torch.zeros(()),
    torch.zeros((0, 224, 224, 3)),
], ids=["complex", "bfloat16", "flat", "scalar", "empty"])
def test_frames_of_another_dtype_or_shape_are_an_obs_finding(frames: torch.Tensor, pristine_small_min: Path,
                                                             tmp_path: Path) -> None:
    root = Path(shutil.copytree(pristine_small_min, tmp_path / "d"))
    torch.save(frames, root / "000000" / "obses.pth")
    outcome = run_everything(root, MIN, tmp_path)
    assert not outcome.converted
    codes = {f.code for f in outcome.report.findings if f.episode == 0 and f.severity == "error"}
    assert codes & {"obs-dtype", "obs-rank", "obs-resolution", "step-files", "length-mismatch"}, codes


def test_a_frames_file_holding_no_tensor_is_unreadable(pristine_small_min: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(pristine_small_min, tmp_path / "d"))
    torch.save({"frames": torch.zeros(3)}, root / "000001" / "obses.pth")
    outcome = run_everything(root, MIN, tmp_path)
    f = outcome.report.of("unreadable-file")[0]
    assert (f.episode, f.file) == (1, "000001/obses.pth") and "expected one tensor, found dict" in f.message


def test_a_damaged_second_camera_in_one_step_refuses_the_conversion(pristine_small_primitive: Path,
                                                                    tmp_path: Path) -> None:
    root = Path(shutil.copytree(pristine_small_primitive, tmp_path / "d"))
    _replace(root / "000001" / "05.h5", "observations/color/cam_1", _dataset(lambda v: v[0, :100]))
    outcome = run_everything(root, f"{PRIM}+cams2", tmp_path)
    f = outcome.report.of("bad-dataset")[0]
    assert (f.episode, f.file, f.field) == (1, "000001/05.h5", "observations/color/cam_1")


def test_file_names_that_are_not_utf8_convert_and_report(pristine_small_min: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(pristine_small_min, tmp_path / "d"))
    for where in (root, root / "000000"):
        fd = os.open(os.path.join(os.fsencode(where), b"notes-\xff\xfe.txt"), os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"x")
        os.close(fd)
    outcome = run_everything(root, MIN, tmp_path)
    assert outcome.converted and outcome.report.exit_code() == 0


def test_v1_with_an_episode_past_the_tensors_is_a_finding(tmp_path: Path) -> None:
    root = write_v1(tmp_path / "v1", [10, 12], seed=3)
    shutil.copytree(root / "000001", root / "000002")
    import pickle

    with (root / "metadata.pkl").open("rb") as f:
        meta = pickle.load(f)
    meta["episode_lengths"].append(12)
    with (root / "metadata.pkl").open("wb") as f:
        pickle.dump(meta, f)
    outcome = run_everything(root, "franka_cube_stack_v1", tmp_path)
    assert outcome.report.of("row-count") and not outcome.converted


# -- property-based: random damage to step files and obses.pth ------------------------------------------------
DTYPES = ["uint8", "int16", "int64", "float16", "float32", "float64", "complex64", "bool", "S3"]
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple)


@st.composite
def h5_damage(draw):
    name = draw(st.sampled_from(["eef_states", "action", "observations/color/cam_0", "observations/color/cam_1",
                                 "info/primitive_name", "observations"]))
    op = draw(st.sampled_from(["array", "group", "null", "delete", "external", "soft"]))
    return {"name": name, "op": op, "shape": draw(shapes), "dtype": draw(st.sampled_from(DTYPES))}


@st.composite
def damage_plan(draw):
    target = draw(st.sampled_from(["step", "step", "obses", "file"]))
    plan = {"episode": draw(st.integers(0, 1)), "step": draw(st.integers(0, 6)), "target": target}
    if target == "step":
        plan["h5"] = draw(h5_damage())
    elif target == "obses":
        plan["tensor"] = {"shape": draw(st.sampled_from([(7, 224, 224, 3), (7, 224, 224), (7, 3, 224, 224), (0,),
                                                         (7, 224, 224, 3, 1), ()])),
                          "dtype": draw(st.sampled_from(["uint8", "float32", "float64", "complex64", "bool",
                                                         "int32"]))}
    else:
        plan["file"] = {"which": draw(st.sampled_from(["obses.pth", "05.h5", "property_params.pkl"])),
                        "cut": draw(st.floats(0.0, 0.9))}
    return plan


def _array(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype == "S3":
        return np.full(shape, b"abc", dtype="S3")
    return np.ones(shape, dtype=dtype)


def _apply(root: Path, plan: dict) -> None:
    ep = root / f"{plan['episode']:06d}"
    if plan["target"] == "step":
        d = plan["h5"]
        with h5py.File(ep / f"{plan['step']:02d}.h5", "r+") as f:
            if d["name"] in f:
                del f[d["name"]]
            if d["op"] == "array":
                f.create_dataset(d["name"], data=_array(d["shape"], d["dtype"]))
            elif d["op"] == "group":
                f.create_group(d["name"])
            elif d["op"] == "null":
                f.create_dataset(d["name"], data=h5py.Empty("f4"))
            elif d["op"] == "external":
                f[d["name"]] = h5py.ExternalLink("missing.h5", "/x")
            elif d["op"] == "soft":
                f[d["name"]] = h5py.SoftLink("/not/here")
    elif plan["target"] == "obses":
        t = plan["tensor"]
        torch.save(torch.from_numpy(_array(t["shape"], t["dtype"])), ep / "obses.pth")
    else:
        p = ep / plan["file"]["which"]
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * plan["file"]["cut"])])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(plan=damage_plan())
def test_random_damage_ends_in_a_named_finding_never_an_internal_error(plan: dict, pristine_small_primitive: Path,
                                                                       tmp_path_factory: pytest.TempPathFactory
                                                                       ) -> None:
    work = tmp_path_factory.mktemp("h")
    root = Path(shutil.copytree(pristine_small_primitive, work / "d"))
    _apply(root, plan)
    outcome = run_everything(root, f"{PRIM}+cams2", work)
    if not outcome.converted:
        assert outcome.report.has_errors, "convert refused data that validation accepts"
        assert all(f.message for f in outcome.report.findings)


@st.composite
def v1_damage(draw):
    which = draw(st.sampled_from(["states.pth", "actions.pth", "metadata.pkl", "seq_lengths.pkl",
                                  "000001/obses.pth", "000000/property_params.pkl"]))
    how = draw(st.sampled_from(["tensor", "cut", "object"]))
    return {"which": which, "how": how, "shape": draw(shapes), "cut": draw(st.floats(0.0, 0.9)),
            "dtype": draw(st.sampled_from(["float32", "float64", "int64", "uint8", "bool", "complex64"])),
            "object": draw(st.sampled_from([None, "text", [1, 2, 3], {"episode_lengths": "x"},
                                            {"episode_lengths": [-1, 5]}, {"episode_lengths": [10 ** 9, 3]}]))}


@pytest.fixture(scope="module")
def pristine_small_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_v1(tmp_path_factory.mktemp("dmg") / "v1", [10, 12], seed=13)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(plan=v1_damage())
def test_random_damage_to_a_v1_dataset_ends_in_a_named_finding(plan: dict, pristine_small_v1: Path,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    import pickle

    work = tmp_path_factory.mktemp("h1")
    root = Path(shutil.copytree(pristine_small_v1, work / "d"))
    p = root / plan["which"]
    if plan["how"] == "tensor":
        torch.save(torch.from_numpy(_array(plan["shape"], plan["dtype"])), p)
    elif plan["how"] == "cut":
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * plan["cut"])])
    else:
        with p.open("wb") as f:
            pickle.dump(plan["object"], f)
    outcome = run_everything(root, "franka_cube_stack_v1", work)
    if not outcome.converted:
        assert outcome.report.has_errors, "convert refused data that validation accepts"
