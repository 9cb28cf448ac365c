"""Every logger the users have, end to end: synth -> detect -> validate (clean) -> convert -> every window
equals a direct computation from the source files (read here with h5py and torch, not through fcs)."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.schemas import get_layout
from fcs_data.sources.detect import detect_layout
from fcs_data.splits import split_episodes
from fcs_data.store import open_store
from fcs_data.synth import synthesize
from fcs_data.validation import validate
from fcs_data.windows import WindowDataset

LAYOUTS = [
    "franka_cube_stack_v1",
    "franka_cube_stack_min",
    "franka_cube_stack_min+rgb",
    "franka_cube_stack_min+forward",
    "franka_cube_stack_min+rgb+forward+xyzw",
    "franka_cube_stack_keyframe",
    "franka_cube_stack_keyframe+rgb+forward",
    "franka_cube_stack_primitive",
    "franka_cube_stack_primitive+6d",
    "franka_cube_stack_primitive+xyzw",
    "franka_cube_stack_primitive+cams2",
    "franka_cube_stack_primitive+6d+sbs",
    "franka_cube_stack_primitive+chstack",
    "franka_cube_stack_primitive+alpha",
]


def _source_episode(root: Path, i: int, name: str) -> dict[str, np.ndarray]:
    """Episode `i` straight from the logger files, brought to the store's conventions by hand."""
    layout = get_layout(name)
    with (root / "metadata.pkl").open("rb") as f:
        length = pickle.load(f)["episode_lengths"][i]
    d = root / f"{i:06d}"
    frames = torch.load(d / "obses.pth", weights_only=True).numpy()[:length]
    out: dict[str, np.ndarray] = {}
    if layout.sources.kind == "global_pth":
        state = torch.load(root / "states.pth", weights_only=True).numpy()[i, :length]
        action = torch.load(root / "actions.pth", weights_only=True).numpy()[i, :length]
    else:
        rows: dict[str, list] = {}
        for t in range(length):
            with h5py.File(d / f"{t:0{layout.sources.step_digits}d}.h5") as f:
                rows.setdefault("state", []).append(f["eef_states"][()].reshape(-1))
                rows.setdefault("action", []).append(f["action"][()])
                if "info/original_frame_idx" in f:
                    rows.setdefault("frame_index", []).append(int(f["info/original_frame_idx"][()]))
                if layout.cameras:
                    rows.setdefault("cam_1", []).append(f["observations/color/cam_1"][()])
        state, action = np.stack(rows["state"]), np.stack(rows["action"])
        out |= {k: np.stack(rows[k]) for k in ("frame_index", "cam_1") if k in rows}
    frames = frames.astype(np.uint8)
    if layout.observation.channel_order == "BGR" and layout.observation.fused is None:
        frames = frames[..., ::-1]
    if layout.action_alignment == "backward":  # store: action[t] = logged action[t + 1], last frame dropped
        frames, state, action = frames[:-1], state[:-1], action[1:]
        out = {k: v[:-1] for k, v in out.items()}
    return {"frames": frames, "state": state.astype(np.float32), "action": action.astype(np.float32), **out}


@pytest.mark.parametrize("name", LAYOUTS)
def test_every_layout_and_variant_round_trips_exactly(name: str, tmp_path: Path) -> None:
    small = "v1" not in name
    src = synthesize(tmp_path / "raw", episodes=3, min_len=14 if small else 40, max_len=20 if small else 50,
                     seed=3, layout=name)
    detection = detect_layout(src)
    assert detection.layout.name == name and detection.assumed == [], detection.lines
    report = validate(src)
    assert report.layout == name and report.detected
    assert [f.message for f in report.findings if f.severity != "info"] == []
    assert report.exit_code(strict=True) == 0

    store = open_store(convert_to_zarr(src, tmp_path / "s.zarr", workers=1, verify=True).store)
    layout = store.layout
    assert layout.name == name and store.cameras == layout.camera_names
    source = [_source_episode(src, i, name) for i in range(3)]
    cameras = store.cameras if len(store.cameras) > 1 else None
    ds = WindowDataset(store, num_hist=2, num_pred=1, frameskip=2, split="all", cameras=cameras)
    train = split_episodes(range(3), "all", 0.9, 42)
    acts = np.concatenate([source[e]["action"] for e in train]).astype(np.float64)
    props = np.concatenate([source[e]["state"][:, layout.proprio_slice] for e in train]).astype(np.float64)
    checked = 0
    for i in range(len(ds)):
        item = ds[i]
        e, s = item["episode"], item["start"]
        want = source[e]
        steps = np.arange(s, s + 3 * 2, 2)
        visual = want["frames"][steps]
        if cameras:
            visual = np.stack([visual, want["cam_1"][steps]], axis=1)
            np.testing.assert_array_equal(item["visual"].numpy(), visual.transpose(0, 1, 4, 2, 3))
        else:
            np.testing.assert_array_equal(item["visual"].numpy(), visual.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(item["state"].numpy(), want["state"][steps])
        proprio = (want["state"][steps][:, layout.proprio_slice] - props.mean(0)) / (props.std(0) + 1e-6)
        np.testing.assert_allclose(item["proprio"].numpy(), proprio, rtol=1e-4, atol=1e-4)
        action = (want["action"][s : s + 6] - acts.mean(0)) / (acts.std(0) + 1e-6)
        np.testing.assert_allclose(item["action"].numpy(), action.reshape(3, -1), rtol=1e-4, atol=1e-4)
        if "frame_index" in want:
            np.testing.assert_array_equal(item["frame_index"].numpy(), want["frame_index"][steps])
        checked += 1
    assert checked == sum(max(len(w["frames"]) - 6 + 1, 0) for w in source) > 0


@pytest.fixture(scope="module")
def primitive14(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("p14")
    src = synthesize(tmp / "raw", episodes=4, min_len=14, max_len=14, seed=8, layout="franka_cube_stack_primitive")
    return convert_to_zarr(src, tmp / "s.zarr", workers=1).store


@pytest.mark.parametrize("frameskip", [1, 2, 3])
def test_fourteen_step_episodes_serve_windows_at_frameskip_1_to_3(primitive14: Path, frameskip: int) -> None:
    for num_hist in (1, 2, 3):
        ds = WindowDataset(primitive14, num_hist=num_hist, frameskip=frameskip, split="all")
        expected = 4 * max(14 - (num_hist + 1) * frameskip + 1, 0)
        assert len(ds) == expected, (num_hist, frameskip)
        if expected:
            item = ds[len(ds) - 1]
            assert item["visual"].shape == (num_hist + 1, 3, 224, 224) and item["action"].shape == (num_hist + 1,
                                                                                                   8 * frameskip)


def test_validate_tells_which_num_hist_and_frameskip_pairs_leave_windows(tmp_path: Path) -> None:
    src = synthesize(tmp_path / "raw", episodes=2, min_len=14, max_len=14, seed=8, layout="franka_cube_stack_primitive")
    capacity = {int(f.data["frameskip"]): f.data for f in validate(src).of("window-capacity")}
    assert capacity[1]["num_hist_all"] == 13 and capacity[3]["num_hist_all"] == 3 and capacity[5]["num_hist_all"] == 1
    assert capacity[2]["windows_all"] == 2 * (14 - (6 + 1) * 2 + 1)
