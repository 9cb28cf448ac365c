"""Warnings mean something: each warning code fires on a dataset that has the problem and not on the clean
dataset its logger writes (tests/loggers/), and every warning code registered has such a pair here."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from loggers.min_logger import write_min
from loggers.primitive import write_primitive
from loggers.v1 import write_v1

from fcs_data.schemas import FINDING_KINDS, Layout, get_layout
from fcs_data.validation import validate_source


def _edit_tensor(path: Path, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    torch.save(fn(torch.load(path, weights_only=True).clone()), path)


def _edit_h5(path: Path, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    with h5py.File(path, "r+") as f:
        value = fn(f[name][()])
        del f[name]
        f.create_dataset(name, data=value)


def _states(root: Path, fn: Callable[[torch.Tensor], None]) -> None:
    t = torch.load(root / "states.pth", weights_only=True).clone()
    fn(t)
    torch.save(t, root / "states.pth")


def _unlisted(root: Path) -> None:
    shutil.copytree(root / "000001", root / "000002")


def _degrees(root: Path) -> None:
    _states(root, lambda t: t[0, :, 8:15].mul_(57.3))


def _quaternion_norm(root: Path) -> None:
    _states(root, lambda t: t[1, :5, 3:7].mul_(1.2))


def _zero_row(root: Path) -> None:
    _states(root, lambda t: t[0, 4].zero_())


def _frozen(root: Path) -> None:
    _edit_tensor(root / "000000" / "obses.pth", lambda t: torch.cat([t[:6], t[5:6], t[7:]]))


def _black(root: Path) -> None:
    _edit_tensor(root / "000001" / "obses.pth", lambda t: torch.cat([t[:3], torch.zeros_like(t[3:4]), t[4:]]))


def _velocities(root: Path) -> None:
    _states(root, lambda t: t[1, :, 15:22].mul_(20.0))


def _backward_actions(root: Path) -> None:
    def shift(t: torch.Tensor) -> torch.Tensor:
        t[0, 1:20] = t[0, 0:19].clone()  # action[t] is now the target of step t-1: it matches the current state
        return t

    _edit_tensor(root / "actions.pth", shift)


def _no_metadata(root: Path) -> None:
    (root / "metadata.pkl").unlink()
    (root / "seq_lengths.pkl").unlink()


def _offset(root: Path) -> None:
    offset = np.array([2.5, 5.0, 0.0])
    for p in (root / "000000").glob("*.h5"):
        _edit_h5(p, "eef_states", lambda s: s + np.concatenate([offset, offset, np.zeros(8)]).reshape(s.shape))
        _edit_h5(p, "action", lambda a: a + np.concatenate([offset, [0], offset, [0]]))


def _moved_step(root: Path) -> None:
    _edit_h5(root / "000001" / "04.h5", "action", lambda a: a + np.array([0.02, 0, 0, 0, 0, 0, 0, 0]))


def _half_gripper(root: Path) -> None:
    _edit_h5(root / "000000" / "03.h5", "action", lambda a: np.where(np.arange(8) == 3, 0.5, a))


def _xyzw_quaternions(root: Path) -> None:
    for p in root.glob("*/*.h5"):
        _edit_h5(p, "eef_states", lambda s: s.reshape(14)[[0, 1, 2, 3, 4, 5, 7, 8, 9, 6, 11, 12, 13, 10]]
                 .reshape(1, 1, 14))


def _independent_rgb_copy(root: Path) -> None:
    for p in root.glob("*/*.h5"):
        with h5py.File(p, "r+") as f:  # a copy written apart from obses.pth: the camera's RGB
            f["observations/color/cam_0"][...] = f["observations/color/cam_0"][()][..., ::-1]


def _independent(name: str) -> Layout:
    data = get_layout(name).model_dump(mode="json")
    data["observation"]["color_independent"] = True
    return Layout.model_validate(data)


V1, MINL, PRIMITIVE = "franka_cube_stack_v1", "franka_cube_stack_min", "franka_cube_stack_primitive"
def _nothing(root: Path) -> None:
    """The data stays as it is; the layout the test declares is what is wrong."""


# code -> (logger, layout the clean data is validated against, damage, layout the damaged data is validated against)
WARNINGS: dict[str, tuple[str, str | Layout, Callable[[Path], None], str | Layout | None]] = {
    "unlisted-episode-dir": ("v1", V1, _unlisted, None),
    "out-of-bounds": ("v1", V1, _degrees, None),
    "quaternion-norm": ("v1", V1, _quaternion_norm, None),
    "zero-state": ("v1", V1, _zero_row, None),
    "frozen-frames": ("v1", V1, _frozen, None),
    "constant-frame": ("v1", V1, _black, None),
    "velocity-mismatch": ("v1", V1, _velocities, None),
    "action-alignment": ("v1", V1, _backward_actions, None),
    "metadata-missing": ("v1", V1, _no_metadata, None),
    "out-of-reach": ("primitive", PRIMITIVE, _offset, None),
    "segment-continuity": ("primitive", PRIMITIVE, _moved_step, None),
    "action-anchor-outliers": ("primitive", PRIMITIVE, _moved_step, None),
    "gripper-values": ("primitive", PRIMITIVE, _half_gripper, None),
    "quaternion-order": ("min", MINL, _xyzw_quaternions, None),
    "channel-order": ("min-independent", _independent(MINL), _nothing, _independent(f"{MINL}+rgb")),
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clean")
    out = {"v1": write_v1(root / "v1", [24, 26], seed=21), "min": write_min(root / "min", [10, 12], seed=22),
           "primitive": write_primitive(root / "p", [8, 9], seed=23)}
    # a min-logger variant whose per-step copy is written by a path independent of obses.pth (the camera's RGB)
    out["min-independent"] = Path(shutil.copytree(out["min"], root / "min-independent"))
    _independent_rgb_copy(out["min-independent"])
    return out


def test_every_warning_code_has_a_trigger_and_a_clean_dataset() -> None:
    assert set(WARNINGS) == {code for code, (severity, _) in FINDING_KINDS.items() if severity == "warning"}


@pytest.mark.parametrize("code", list(WARNINGS))
def test_a_warning_fires_on_its_problem_and_not_on_the_loggers_clean_files(code: str, clean: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    logger, layout, damage, damaged_layout = WARNINGS[code]
    layout = get_layout(layout)
    assert validate_source(clean[logger], layout, workers=1).of(code) == []
    root = Path(shutil.copytree(clean[logger], tmp_path / "d"))
    damage(root)
    found = validate_source(root, get_layout(damaged_layout or layout), workers=1).of(code)
    assert found and all(f.severity == "warning" for f in found), code


def test_loggers_that_write_no_metadata_are_not_warned_about_it(clean: dict[str, Path]) -> None:
    for logger, layout in (("min", MINL), ("primitive", PRIMITIVE)):
        assert not (clean[logger] / "metadata.pkl").exists()
        assert get_layout(layout).sources.metadata == "optional"
        assert validate_source(clean[logger], get_layout(layout), workers=1).of("metadata-missing") == []


def test_metadata_a_per_step_logger_did_not_write_is_still_read_and_checked(clean: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    root = Path(shutil.copytree(clean["min"], tmp_path / "d"))
    with (root / "metadata.pkl").open("wb") as f:
        pickle.dump({"episode_lengths": [10, 11]}, f)
    report = validate_source(root, get_layout(MINL), workers=1)
    assert [(f.code, f.episode) for f in report.of("length-mismatch")] == [("length-mismatch", 1)]
