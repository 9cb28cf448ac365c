"""Each finding kind of `validate_source`, provoked by breaking a clean dataset (synthetic v1, the min logger's
own files for per-step checks)."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import edit_tensor, load_pkl, save_pkl
from loggers.keyframe import write_keyframe
from loggers.min_logger import write_min
from loggers.primitive import write_primitive

from fcs_data.schemas import Finding, Layout, ValidationReport, get_layout
from fcs_data.validation import validate_source

V1 = get_layout("franka_cube_stack_v1")
MIN = get_layout("franka_cube_stack_min")


def run(path: Path, layout=V1, **kw) -> ValidationReport:
    return validate_source(path, layout, workers=1, **kw)


def only(report: ValidationReport, code: str) -> Finding:
    found = report.of(code)
    assert len(found) == 1, f"expected one {code} finding, got {[f.message for f in found]}"
    return found[0]


def problems(report: ValidationReport) -> list[str]:
    return sorted(f"{f.code}@{f.episode}" for f in report.findings if f.severity != "info")


def test_clean_synthetic_dataset_has_no_findings(pristine_v1: Path) -> None:
    report = run(pristine_v1)
    assert problems(report) == []
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 0
    assert report.num_episodes == 3
    lengths = load_pkl(pristine_v1 / "metadata.pkl")["episode_lengths"]
    assert report.num_frames == sum(lengths)


def test_clean_min_logger_dataset_has_no_findings(pristine_min: Path) -> None:
    report = run(pristine_min, MIN)
    assert problems(report) == []
    assert report.of("conversion"), "BGR/float/backward conversions are announced"


def test_parallel_workers_give_the_same_report(pristine_v1: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcs_data.validation.source as source

    monkeypatch.setattr(source, "PARALLEL_MIN_PER_WORKER", 1)
    a = validate_source(pristine_v1, V1, workers=2)
    b = run(pristine_v1)
    assert [f.model_dump() for f in a.findings] == [f.model_dump() for f in b.findings]


# ---- errors --------------------------------------------------------------------------------------


def test_missing_states_file_is_an_error(v1: Path) -> None:
    (v1 / "states.pth").unlink()
    f = only(run(v1), "missing-file")
    assert f.file == "states.pth" and f.severity == "error"


def test_missing_obses_is_an_error_naming_the_episode(v1: Path) -> None:
    (v1 / "000001" / "obses.pth").unlink()
    f = only(run(v1), "missing-file")
    assert (f.episode, f.file) == (1, "000001/obses.pth")


def test_truncated_obses_is_unreadable(v1: Path) -> None:
    p = v1 / "000002" / "obses.pth"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    f = only(run(v1), "unreadable-file")
    assert (f.episode, f.file) == (2, "000002/obses.pth")


class _Payload:
    """Unpickling this would create `marker`: the tests check it never exists."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_malicious_metadata_pickle_is_refused_and_not_run(v1: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    save_pkl({"episode_lengths": [1, 2, 3], "x": _Payload(marker)}, v1 / "metadata.pkl")
    report = run(v1)
    f = only(report, "unsafe-pickle")
    assert f.file == "metadata.pkl" and "os" in f.message
    assert not marker.exists()
    assert report.exit_code() == 1


def test_malicious_pth_is_refused_and_not_run(v1: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned_pth"
    torch.save({"frames": _Payload(marker)}, v1 / "000000" / "obses.pth")
    f = only(run(v1), "unsafe-pickle")
    assert (f.episode, f.file) == (0, "000000/obses.pth")
    assert not marker.exists()


def test_malicious_property_params_is_refused_by_validate_before_convert_opens_it(v1: Path, tmp_path: Path) -> None:
    from fcs_data.converters.to_zarr import convert_to_zarr
    from fcs_data.errors import ConversionRefused

    marker = tmp_path / "pwned_params"
    save_pkl({"seed": 1, "x": _Payload(marker)}, v1 / "000002" / "property_params.pkl")
    f = only(run(v1), "unsafe-pickle")
    assert (f.episode, f.file) == (2, "000002/property_params.pkl") and f.severity == "error"
    with pytest.raises(ConversionRefused, match="skip-bad"):
        convert_to_zarr(v1, tmp_path / "s.zarr", workers=1)
    assert not marker.exists()


def test_float_frames_are_a_dtype_error(v1: Path) -> None:
    edit_tensor(v1 / "000001" / "obses.pth", lambda t: t.float() / 255)
    f = only(run(v1), "obs-dtype")
    assert f.episode == 1 and "float32" in f.message and "normalised" in (f.hint or "")


def test_float_frames_in_0_255_get_a_layout_hint(v1: Path) -> None:
    edit_tensor(v1 / "000001" / "obses.pth", lambda t: t.float())
    assert "dtype float32" in (only(run(v1), "obs-dtype").hint or "")


def test_frames_without_channel_axis_are_a_rank_error(v1: Path) -> None:
    edit_tensor(v1 / "000000" / "obses.pth", lambda t: t[..., 0].contiguous())
    assert only(run(v1), "obs-rank").episode == 0


def test_channels_first_frames_are_reported(v1: Path) -> None:
    edit_tensor(v1 / "000002" / "obses.pth", lambda t: t.permute(0, 3, 1, 2).contiguous())
    assert only(run(v1), "obs-channel-position").episode == 2


def test_wrong_resolution_is_reported(v1: Path) -> None:
    edit_tensor(v1 / "000001" / "obses.pth", lambda t: t[:, ::2, ::2].contiguous())
    f = only(run(v1), "obs-resolution")
    assert f.episode == 1 and "(128, 128, 3)" in f.message


def test_state_dim_not_the_layouts_is_an_error(v1: Path) -> None:
    edit_tensor(v1 / "states.pth", lambda t: t[..., :21].contiguous())
    f = only(run(v1), "state-dim")
    assert f.file == "states.pth" and "21" in f.message


def test_action_dim_not_the_layouts_is_an_error(v1: Path) -> None:
    edit_tensor(v1 / "actions.pth", lambda t: torch.cat([t, t[..., :1]], -1))
    assert "10" in only(run(v1), "action-dim").message


def test_rows_not_matching_episode_count_is_an_error(v1: Path) -> None:
    edit_tensor(v1 / "actions.pth", lambda t: t[:2].contiguous())
    f = only(run(v1), "row-count")
    assert f.file == "actions.pth" and "2 rows for 3 episodes" in f.message


def test_metadata_length_differs_from_frames(v1: Path) -> None:
    meta = load_pkl(v1 / "metadata.pkl")
    meta["episode_lengths"][2] -= 3
    save_pkl(meta, v1 / "metadata.pkl")
    f = only(run(v1), "length-mismatch")
    assert f.episode == 2 and f.data == {"metadata": meta["episode_lengths"][2], "frames": meta["episode_lengths"][2] + 3}


def test_metadata_length_beyond_t_max(v1: Path) -> None:
    meta = load_pkl(v1 / "metadata.pkl")
    meta["episode_lengths"][0] = 500
    save_pkl(meta, v1 / "metadata.pkl")
    report = run(v1)
    found = report.of("length-exceeds-tmax")
    assert {(f.episode, f.file) for f in found} == {(0, "states.pth"), (0, "actions.pth")}
    assert report.of("length-mismatch")[0].episode == 0


def test_missing_episode_directory(v1: Path) -> None:
    shutil.rmtree(v1 / "000001")
    f = only(run(v1), "missing-episode-dir")
    assert f.episode == 1 and f.file == "000001"


def test_nan_inside_valid_steps_is_located(v1: Path) -> None:
    def poke(t: torch.Tensor) -> torch.Tensor:
        t[1, 5, 3] = float("nan")
        t[1, 9, 8] = float("inf")
        return t

    edit_tensor(v1 / "actions.pth", poke)
    found = {f.field: f for f in run(v1).of("nonfinite")}
    assert set(found) == {"action.joint_target", "action.finger_target"}
    assert found["action.joint_target"].steps == [5] and found["action.joint_target"].episode == 1
    assert found["action.finger_target"].steps == [9] and "Inf" in found["action.finger_target"].message


def test_values_in_the_padding_are_never_judged(v1: Path) -> None:
    lengths = load_pkl(v1 / "metadata.pkl")["episode_lengths"]
    short = int(np.argmin(lengths))

    def pad_garbage(t: torch.Tensor) -> torch.Tensor:
        t[short, lengths[short]:] = float("nan")
        return t

    edit_tensor(v1 / "states.pth", pad_garbage)
    edit_tensor(v1 / "actions.pth", pad_garbage)
    assert problems(run(v1)) == []


def test_empty_dataset(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    save_pkl({"episode_lengths": []}, root / "metadata.pkl")
    torch.save(torch.zeros(0, 0, 22), root / "states.pth")
    torch.save(torch.zeros(0, 0, 9), root / "actions.pth")
    report = run(root)
    assert only(report, "empty-dataset").severity == "error"
    assert report.exit_code() == 1


# ---- per-step HDF5 files ---------------------------------------------------------------------


def test_gap_in_step_files_is_an_error(min_logger: Path) -> None:
    (min_logger / "000001" / "005.h5").unlink()
    found = [f for f in run(min_logger, MIN).of("step-files") if f.episode == 1]
    assert any(f.steps == [5] and "missing" in f.message for f in found)


def test_two_digit_names_next_to_three_digit_names_are_caught(min_logger: Path) -> None:
    d = min_logger / "000000"
    shutil.copy(d / "003.h5", d / "03.h5")
    found = run(min_logger, MIN).of("step-files")
    assert any(f.episode == 0 and 3 in f.steps and "twice" in f.message for f in found)


def test_step_file_names_are_checked_against_the_layouts_digits(tmp_path: Path) -> None:
    from fcs_data.synth import synthesize

    root = synthesize(tmp_path / "old", episodes=1, min_len=12, max_len=12, layout="franka_cube_stack_min",
                      step_digits=2)
    assert (root / "000000" / "00.h5").exists()
    f = only(run(root, MIN), "step-files")
    assert "named like 00.h5, the layout franka_cube_stack_min says 3 digits (000.h5" in f.message
    two_digits = MIN.model_copy(update={"sources": MIN.sources.model_copy(update={"step_digits": 2})})
    assert problems(run(root, two_digits)) == [], "declared as written: clean"


# ---- warnings ---------------------------------------------------------------------------------


def test_episode_dir_missing_from_metadata_is_a_warning(v1: Path) -> None:
    shutil.copytree(v1 / "000000", v1 / "000003")
    report = run(v1)
    f = only(report, "unlisted-episode-dir")
    assert f.episode == 3 and f.severity == "warning"
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1


def test_joint_positions_in_degrees_are_flagged_with_a_hint(v1: Path) -> None:
    def to_degrees(t: torch.Tensor) -> torch.Tensor:
        t[0, :, 8:15] = torch.rad2deg(t[0, :, 8:15])
        return t

    edit_tensor(v1 / "states.pth", to_degrees)
    f = next(f for f in run(v1).of("out-of-bounds") if f.field == "state.joint_pos")
    assert f.episode == 0 and "degrees" in (f.hint or "")


def test_quaternion_norm_off_one(v1: Path) -> None:
    def scale(t: torch.Tensor) -> torch.Tensor:
        t[2, 3:6, 3:7] *= 1.1
        return t

    edit_tensor(v1 / "states.pth", scale)
    f = only(run(v1), "quaternion-norm")
    assert (f.episode, f.field, f.steps) == (2, "state.ee_quat", [3, 4, 5])


def test_all_zero_state_rows(v1: Path) -> None:
    def zero(t: torch.Tensor) -> torch.Tensor:
        t[1, 4] = 0
        return t

    edit_tensor(v1 / "states.pth", zero)
    report = run(v1)
    f = only(report, "zero-state")
    assert (f.episode, f.steps) == (1, [4])
    assert not report.of("quaternion-norm"), "zero rows are not judged twice"


def test_parallel_env_offset_is_out_of_reach_with_a_hint(v1: Path) -> None:
    def offset(t: torch.Tensor) -> torch.Tensor:
        n = load_pkl(v1 / "metadata.pkl")["episode_lengths"][1]
        t[1, :n, 0] += 2.5
        return t

    edit_tensor(v1 / "states.pth", offset)
    f = only(run(v1), "out-of-reach")
    assert f.episode == 1 and f.field == "state.ee_pos" and "+2.5" in (f.hint or "")


def test_frozen_frames_while_the_robot_moves(v1: Path) -> None:
    def freeze(t: torch.Tensor) -> torch.Tensor:
        t[10] = t[9]
        t[11] = t[9]
        return t

    edit_tensor(v1 / "000002" / "obses.pth", freeze)
    f = only(run(v1), "frozen-frames")
    assert (f.episode, f.steps) == (2, [10, 11])


def test_black_frames(v1: Path) -> None:
    def black(t: torch.Tensor) -> torch.Tensor:
        t[7] = 0
        return t

    edit_tensor(v1 / "000000" / "obses.pth", black)
    f = only(run(v1), "constant-frame")
    assert (f.episode, f.steps) == (0, [7]) and "black" in f.message


def test_velocities_that_disagree_with_positions(v1: Path) -> None:
    def wrong_units(t: torch.Tensor) -> torch.Tensor:
        t[0, :, 15:22] = torch.rad2deg(t[0, :, 15:22])
        return t

    edit_tensor(v1 / "states.pth", wrong_units)
    f = only(run(v1), "velocity-mismatch")
    assert (f.episode, f.field) == (0, "state.joint_vel")


def test_backward_actions_declared_forward(v1: Path) -> None:
    states = torch.load(v1 / "states.pth", weights_only=True)

    def backward(t: torch.Tensor) -> torch.Tensor:
        t[1, :, 0:7] = states[1, :, 8:15]  # a[t] = q[t]: the action that produced obs[t]
        return t

    edit_tensor(v1 / "actions.pth", backward)
    f = only(run(v1), "action-alignment")
    assert (f.episode, f.field) == (1, "action.joint_target") and "backward" in (f.hint or "")


def test_missing_metadata_falls_back_to_frame_counts(v1: Path) -> None:
    (v1 / "metadata.pkl").unlink()
    (v1 / "seq_lengths.pkl").unlink()
    report = run(v1)
    assert only(report, "metadata-missing").severity == "warning"
    assert report.num_frames == sum(torch.load(v1 / f"{i:06d}" / "obses.pth", mmap=True).shape[0] for i in range(3))


def test_seq_lengths_stand_in_for_missing_metadata_keys(v1: Path) -> None:
    meta = load_pkl(v1 / "metadata.pkl")
    del meta["episode_lengths"]
    save_pkl(meta, v1 / "metadata.pkl")
    assert problems(run(v1)) == []


# ---- info ----------------------------------------------------------------------------------


def test_window_capacity_counts_frameskip_times_frames(pristine_v1: Path) -> None:
    lengths = np.array(load_pkl(pristine_v1 / "metadata.pkl")["episode_lengths"])
    cap = {f.data["frameskip"]: f.data for f in run(pristine_v1).of("window-capacity")}
    assert sorted(cap) == [1, 2, 3, 4, 5]
    fs = 5
    num_hist = lengths.min() // fs - 1
    assert cap[fs]["num_hist_all"] == num_hist
    assert cap[fs]["windows_all"] == int(np.maximum(lengths - (num_hist + 1) * fs + 1, 0).sum())


def test_episode_selection_checks_only_those(v1: Path) -> None:
    (v1 / "000001" / "obses.pth").unlink()
    report = run(v1, episodes=[0, 2])
    assert report.episodes_checked == [0, 2]
    assert problems(report) == []
    with pytest.raises(LookupError, match="not in"):
        run(v1, episodes=[7])


def test_report_round_trips_through_json(v1: Path) -> None:
    (v1 / "000001" / "obses.pth").unlink()
    report = run(v1)
    again = ValidationReport.model_validate_json(report.model_dump_json())  # counts included, and ignored
    assert again.findings == report.findings
    assert pickle.loads(pickle.dumps(report)).counts == report.counts


# ---- the per-step loggers' semantics (issue 11) -------------------------------------------------------

PRIMITIVE = get_layout("franka_cube_stack_primitive")
KEYFRAME = get_layout("franka_cube_stack_keyframe")


@pytest.fixture(scope="module")
def pristine_primitive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 episodes of 14 and 16 primitives written by the primitive logger's code (tests/loggers/primitive.py)."""
    return write_primitive(tmp_path_factory.mktemp("prim") / "p", [14, 16], seed=3)


@pytest.fixture
def primitive(pristine_primitive: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine_primitive, tmp_path / "p"))


def _edit_h5(path: Path, dataset: str, fn) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        value = fn(f[dataset][()])
        del f[dataset]
        f.create_dataset(dataset, data=value)


def test_clean_primitive_dataset_has_no_findings(pristine_primitive: Path) -> None:
    assert problems(run(pristine_primitive, PRIMITIVE)) == []


def test_a_gap_in_primitive_step_files_is_an_error(primitive: Path) -> None:
    (primitive / "000001" / "05.h5").unlink()
    f = only(run(primitive, PRIMITIVE), "step-files")
    assert f.episode == 1 and f.steps == [5] and f.severity == "error"


def test_mixed_two_and_three_digit_step_names_are_an_error(primitive: Path) -> None:
    (primitive / "000000" / "07.h5").rename(primitive / "000000" / "007.h5")
    f = run(primitive, PRIMITIVE).of("step-files")[0]
    assert f.episode == 0 and 7 in f.steps and f.severity == "error"


def test_a_step_that_does_not_start_where_the_last_ended_is_reported(primitive: Path) -> None:
    _edit_h5(primitive / "000000" / "06.h5", "action", lambda a: a + np.array([0.02, 0, 0, 0, 0, 0, 0, 0], a.dtype))
    report = run(primitive, PRIMITIVE)
    f = only(report, "segment-continuity")
    assert (f.episode, f.steps, f.field) == (0, [6], "action.start_pos") and "20.0 mm" in f.message
    assert only(report, "action-anchor-outliers").steps == [6], "and step 6 does not start at obs[6]"


def test_observations_logged_after_their_actions_are_an_error_with_the_hint(primitive: Path) -> None:
    import h5py

    d = primitive / "000001"
    steps = sorted(d.glob("*.h5"))
    actions = [h5py.File(p)["action"][()] for p in steps]
    for t, p in enumerate(steps[1:], 1):  # action[t] holds what action[t-1] held: the obs came after its action
        _edit_h5(p, "action", lambda a, t=t: actions[t - 1])
    f = only(run(primitive, PRIMITIVE), "action-anchor")
    assert f.episode == 1 and f.severity == "error" and f.field == "action.start_pos"
    assert "observation was logged after its action (a one-step shift)" in f.hint


def test_gripper_values_other_than_0_and_1_are_reported(primitive: Path) -> None:
    _edit_h5(primitive / "000000" / "03.h5", "action", lambda a: np.where(np.arange(8) == 3, 0.5, a).astype(a.dtype))
    f = only(run(primitive, PRIMITIVE), "gripper-values")
    assert (f.episode, f.steps, f.field) == (0, [3], "action.start_gripper") and "0.5" in f.message


def test_nan_in_a_primitive_action_is_an_error(primitive: Path) -> None:
    _edit_h5(primitive / "000001" / "04.h5", "action", lambda a: np.where(np.arange(8) == 5, np.nan, a).astype(a.dtype))
    f = only(run(primitive, PRIMITIVE), "nonfinite")
    assert (f.episode, f.steps, f.field) == (1, [4], "action.end_pos")


def test_an_unremoved_environment_offset_is_named(primitive: Path) -> None:
    offset = np.array([2.5, 5.0, 0.0])
    for p in (primitive / "000000").glob("*.h5"):
        _edit_h5(p, "eef_states", lambda s: s + np.tile(np.concatenate([offset, offset, np.zeros(8)]), 1).reshape(
            s.shape).astype(s.dtype))
        _edit_h5(p, "action", lambda a: a + np.concatenate([offset, [0], offset, [0]]).astype(a.dtype))
    f = only(run(primitive, PRIMITIVE), "out-of-reach")
    assert f.episode == 0 and "(+2.5, +5.0, 0)" in f.hint


def test_frames_whose_channel_order_looks_swapped_against_an_independent_copy_are_a_warning(
        pristine_min: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(pristine_min, tmp_path / "d"))
    for p in root.glob("*/*.h5"):  # the copy now comes from another path: the camera's own RGB
        with h5py.File(p, "r+") as f:
            f["observations/color/cam_0"][...] = f["observations/color/cam_0"][()][..., ::-1]
    data = get_layout("franka_cube_stack_min+rgb").model_dump(mode="json")
    data["observation"]["color_independent"] = True
    report = run(root, Layout.model_validate(data))  # declared RGB; the frames are BGR
    found = report.of("channel-order")
    assert len(found) == 3 and found[0].severity == "warning"
    assert "matches it with the channels reversed" in found[0].message and "the frames are BGR" in found[0].message
    assert problems(run(pristine_min, get_layout("franka_cube_stack_min+rgb"))) == [], \
        "a copy that shares the frames' conversion is no evidence: no warning either way"


def test_quaternions_in_the_other_order_are_a_warning(tmp_path: Path) -> None:
    root = write_min(tmp_path / "q", [14, 15, 16], seed=3)
    found = run(root, get_layout("franka_cube_stack_min+xyzw")).of("quaternion-order")
    assert found and all(f.field == "state.ee_quat" and "read as wxyz" in f.message for f in found)


def test_keyframe_indices_that_do_not_increase_are_an_error(tmp_path: Path) -> None:
    root = write_keyframe(tmp_path / "k", [40, 44], seed=3)
    assert problems(run(root, KEYFRAME)) == []
    _edit_h5(root / "000001" / "004.h5", "info/original_frame_idx", lambda v: np.asarray(0, v.dtype))
    f = only(run(root, KEYFRAME), "frame-index")
    assert f.episode == 1 and f.steps == [4]
