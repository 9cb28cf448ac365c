"""The synthetic generator writes the logger layouts exactly, with consistent kinematics."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import load_pkl

from fcs_data.schemas import get_layout
from fcs_data.synth import synthesize
from fcs_data.synth.kinematics import JOINT_HIGH, JOINT_LOW, forward_kinematics, rotation_to_quat_wxyz

V1 = get_layout("franka_cube_stack_v1")


def _episode(root: Path, i: int):
    meta = load_pkl(root / "metadata.pkl")
    n = meta["episode_lengths"][i]
    states = torch.load(root / "states.pth", weights_only=True)
    actions = torch.load(root / "actions.pth", weights_only=True)
    frames = torch.load(root / f"{i:06d}" / "obses.pth", weights_only=True)
    return n, states[i].numpy(), actions[i].numpy(), frames.numpy()


def test_v1_files_shapes_and_zero_padding(pristine_v1: Path) -> None:
    meta = load_pkl(pristine_v1 / "metadata.pkl")
    assert set(meta) >= {"episode_lengths", "n_rollouts", "max_timesteps", "state_dim", "action_dim", "image_size",
                         "created"}
    assert load_pkl(pristine_v1 / "seq_lengths.pkl") == meta["episode_lengths"]
    assert (pristine_v1 / "cameras").is_dir()
    t_max = max(meta["episode_lengths"])
    states = torch.load(pristine_v1 / "states.pth", weights_only=True)
    assert states.shape == (3, t_max, 22) and states.dtype == torch.float32
    for i, n in enumerate(meta["episode_lengths"]):
        _, s, a, frames = _episode(pristine_v1, i)
        assert frames.shape == (n, 256, 256, 3) and frames.dtype == np.uint8
        assert (s[n:] == 0).all() and (a[n:] == 0).all()
        params = load_pkl(pristine_v1 / f"{i:06d}" / "property_params.pkl")
        assert {"seed", "env_idx", "cube_positions", "target_position"} <= set(params)


def test_states_are_kinematically_consistent(pristine_v1: Path) -> None:
    n, s, _, _ = _episode(pristine_v1, 0)
    s = s[:n].astype(np.float64)
    q, qd = s[:, 8:15], s[:, 15:22]
    assert (q >= JOINT_LOW).all() and (q <= JOINT_HIGH).all()
    np.testing.assert_allclose(np.linalg.norm(s[:, 3:7], axis=1), 1.0, atol=1e-5)
    frames = forward_kinematics(q)
    np.testing.assert_allclose(s[:, 0:3], frames[:, -1, :3, 3], atol=1e-5)
    np.testing.assert_allclose(s[:, 3:7], rotation_to_quat_wxyz(frames[:, -1, :3, :3]), atol=1e-5)
    fd = np.gradient(q, 1 / 60, axis=0)
    assert np.median(np.abs(fd - qd)[1:-1]) < 0.5 * np.median(np.abs(qd)) + 0.05
    assert ((s[:, 7] >= 0) & (s[:, 7] <= 0.04 + 1e-6)).all()


def test_actions_are_forward_looking(pristine_v1: Path) -> None:
    n, s, a, _ = _episode(pristine_v1, 1)
    np.testing.assert_allclose(a[: n - 1, 0:7], s[1:n, 8:15], atol=1e-6)
    assert set(np.unique(a[:n, 7:9])) <= {0.0, np.float32(0.04)}


def test_frames_look_rendered_not_noise(pristine_v1: Path) -> None:
    n, _, _, frames = _episode(pristine_v1, 0)
    f = frames[n // 2].astype(np.float32)
    assert f.std() > 20, "a scene, not a flat colour"
    # neighbouring pixels are strongly correlated in a rendered image, not in noise
    corr = np.corrcoef(f[:, :-1].ravel(), f[:, 1:].ravel())[0, 1]
    assert corr > 0.9
    assert not np.array_equal(frames[0], frames[1]), "sensor noise and motion change every frame"
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1, "the arm moves"


def test_same_seed_same_data_and_episodes_independent_of_count(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", episodes=2, min_len=10, max_len=12, seed=5)
    b = synthesize(tmp_path / "b", episodes=2, min_len=10, max_len=12, seed=5)
    for name in ("states.pth", "actions.pth", "000001/obses.pth"):
        assert torch.equal(torch.load(a / name, weights_only=True), torch.load(b / name, weights_only=True))


def test_refuses_to_overwrite_and_leaves_nothing_partial(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "d", episodes=1, min_len=5, max_len=5)
    with pytest.raises(FileExistsError):
        synthesize(out, episodes=1, min_len=5, max_len=5)
    synthesize(out, episodes=2, min_len=5, max_len=5, overwrite=True)
    assert len(load_pkl(out / "metadata.pkl")["episode_lengths"]) == 2
    assert not (tmp_path / "d.partial").exists()


def test_min_logger_layout_per_step_h5_bgr_float(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "m", episodes=2, min_len=8, max_len=10, seed=3, layout="franka_cube_stack_min")
    lengths = load_pkl(root / "metadata.pkl")["episode_lengths"]
    assert not (root / "states.pth").exists()
    d = root / "000000"
    frames = torch.load(d / "obses.pth", weights_only=True)
    assert frames.shape == (lengths[0], 224, 224, 3) and frames.dtype == torch.float32
    assert torch.equal(frames, frames.round()) and frames.max() <= 255
    steps = sorted(p.name for p in d.glob("*.h5"))
    assert steps[0] == "000.h5" and len(steps) == lengths[0]
    with h5py.File(d / "004.h5") as f:
        assert f["eef_states"].shape == (1, 1, 14) and f["action"].shape == (6,)
        ee_now = f["eef_states"][0, 0, :3]
        np.testing.assert_allclose(f["action"][3:6], ee_now)  # backward: action[t] produced obs[t]
        with h5py.File(d / "003.h5") as g:
            np.testing.assert_allclose(f["action"][0:3], g["eef_states"][0, 0, :3])
        cam = f["observations/color/cam_0"][()]
        assert f["observations/depth/cam_0"].shape == (1, 224, 224)
    assert cam.shape == (1, 224, 224, 3) and cam.dtype == np.float32  # as the min logger's process_imgs writes it
    np.testing.assert_array_equal(cam[0], frames[4].numpy())  # through the same channel reversal as obses.pth
