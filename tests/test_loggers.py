"""Every logger the users have, from files written by the loggers' own code (tests/loggers/): detect ->
validate (exit 0, no warning) -> convert -> every window equals a direct computation from the files (read here
with h5py, torch and pickle, not through fcs).

Where the data cannot tell a variant from its base (the channel order: the loggers' per-step colour copy
passes through the same conversion as obses.pth), detection returns the base and says it assumed its order;
the variant is then declared with `--layout`, as a user would."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from loggers.isaaclab import write_isaaclab
from loggers.keyframe import write_keyframe
from loggers.min_logger import write_min
from loggers.primitive import write_primitive
from loggers.v1 import write_v1

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.schemas import get_layout
from fcs_data.sources.detect import detect_layout
from fcs_data.splits import split_episodes
from fcs_data.store import open_store
from fcs_data.validation import validate
from fcs_data.windows import WindowDataset

P = "franka_cube_stack_primitive"


@dataclass(frozen=True)
class Case:
    layout: str
    write: Callable[[Path], Path]
    detected: str = ""  # what detection finds when the data cannot tell the variant ("" = the layout itself)
    kwargs: dict = field(default_factory=dict)

    @property
    def expect(self) -> str:
        return self.detected or self.layout


CASES = [
    Case("franka_cube_stack_v1", lambda p: write_v1(p, [20, 26], seed=1)),
    Case("franka_cube_stack_v1", lambda p: write_v1(p, [22, 24], seed=2, seq_lengths=False, extras=False)),
    Case("franka_cube_stack_min", lambda p: write_min(p, [10, 12], seed=1)),
    Case("franka_cube_stack_min+rgb", lambda p: write_min(p, [10, 12], seed=2, rgb=True), "franka_cube_stack_min"),
    Case("franka_cube_stack_min+forward", lambda p: write_min(p, [10, 12], seed=3, forward=True)),
    Case("franka_cube_stack_min+gripper", lambda p: write_min(p, [10, 12], seed=4, gripper=True)),
    Case("franka_cube_stack_min+rgb+forward+xyzw+gripper",
         lambda p: write_min(p, [10, 12], seed=5, rgb=True, forward=True, gripper=True, quaternion="xyzw"),
         "franka_cube_stack_min+forward+xyzw+gripper"),
    Case("franka_cube_stack_keyframe", lambda p: write_keyframe(p, [40, 46], seed=1)),
    Case("franka_cube_stack_keyframe+rgb+forward", lambda p: write_keyframe(p, [40, 46], seed=2, rgb=True,
                                                                            forward=True),
         "franka_cube_stack_keyframe+forward"),
    Case("franka_cube_stack_keyframe+xyzw", lambda p: write_keyframe(p, [40, 46], seed=3, quaternion="xyzw")),
    Case(P, lambda p: write_primitive(p, [10, 11], seed=1)),
    Case(f"{P}+6d", lambda p: write_primitive(p, [10, 11], seed=2, gripper=False)),
    Case(f"{P}+xyzw", lambda p: write_primitive(p, [10, 11], seed=3, quaternion="xyzw")),
    Case(f"{P}+bgr", lambda p: write_primitive(p, [10, 11], seed=4, rgb=False), P),
    Case(f"{P}+6d+bgr+backward", lambda p: write_primitive(p, [10, 11], seed=5, rgb=False, forward=False,
                                                           gripper=False), f"{P}+6d+backward"),
    Case(f"{P}+cams2", lambda p: write_primitive(p, [10, 11], seed=6, cameras=2)),
    Case(f"{P}+6d+sbs", lambda p: write_primitive(p, [10, 11], seed=7, cameras=2, fusion="side_by_side",
                                                  gripper=False)),
    Case(f"{P}+chstack", lambda p: write_primitive(p, [10, 11], seed=8, cameras=2, fusion="channel_stack")),
    Case(f"{P}+alpha", lambda p: write_primitive(p, [10, 11], seed=9, cameras=2, fusion="alpha")),
    Case("isaaclab_franka_stack", lambda p: write_isaaclab(p.with_suffix(".hdf5"), [12, 14], seed=1, wrist=False)),
    Case("isaaclab_franka_stack+wrist", lambda p: write_isaaclab(p.with_suffix(".hdf5"), [12, 14], seed=2)),
]


def _per_step_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.h5"), key=lambda p: int(p.stem))


def _read_isaaclab(src: Path, i: int) -> dict[str, np.ndarray]:
    with h5py.File(src) as f:
        names = sorted(f["data"], key=lambda k: int(k.split("_")[1]))
        g = f["data"][names[i]]
        obs = g["obs"]
        out = {"state": np.concatenate([obs[k][()] for k in ("eef_pos", "eef_quat", "gripper_pos", "joint_pos",
                                                            "joint_vel")], axis=1),
               "action": g["actions"][()], "frames": obs["table_cam"][()]}
        if "wrist_cam" in obs:
            out["cam"] = obs["wrist_cam"][()]
    return out


def _read_dirs(src: Path, i: int, name: str) -> dict[str, np.ndarray]:
    layout = get_layout(name)
    d = src / f"{i:06d}"
    out: dict[str, np.ndarray] = {"frames": torch.load(d / "obses.pth", weights_only=True).numpy()}
    if layout.sources.kind == "global_pth":
        with (src / "metadata.pkl").open("rb") as f:
            length = pickle.load(f)["episode_lengths"][i]
        out["frames"] = out["frames"][:length]
        out["state"] = torch.load(src / "states.pth", weights_only=True).numpy()[i, :length]
        out["action"] = torch.load(src / "actions.pth", weights_only=True).numpy()[i, :length]
        return out
    rows: dict[str, list] = {}
    for p in _per_step_files(d):
        with h5py.File(p) as f:
            rows.setdefault("state", []).append(f["eef_states"][()].reshape(-1))
            rows.setdefault("action", []).append(f["action"][()])
            if "info/original_frame_idx" in f:
                rows.setdefault("frame_index", []).append(int(f["info/original_frame_idx"][()]))
            if layout.cameras:
                rows.setdefault("cam", []).append(f["observations/color/cam_1"][0])
    out |= {k: np.stack(v) for k, v in rows.items()}
    if "cam" in out:
        out["cam"] = out["cam"].astype(np.uint8)
    return out


def _from_files(src: Path, i: int, name: str) -> dict[str, np.ndarray]:
    """Episode `i` straight from the logger's files, brought to the store's conventions as the layout declares."""
    layout = get_layout(name)
    out = _read_isaaclab(src, i) if src.is_file() else _read_dirs(src, i, name)
    frames = out["frames"].astype(np.uint8)
    if layout.observation.channel_order == "BGR" and layout.observation.fused is None:
        frames = frames[..., ::-1]
    out["frames"] = frames
    if layout.action_alignment == "backward":  # store: action[t] = logged action[t + 1], last frame dropped
        out = {k: (v[1:] if k == "action" else v[:-1]) for k, v in out.items()}
    out["state"], out["action"] = out["state"].astype(np.float32), out["action"].astype(np.float32)
    return out


def _check_windows(store_path: Path, src: Path, name: str, n: int) -> int:
    store = open_store(store_path)
    layout = store.layout
    source = [_from_files(src, i, name) for i in range(n)]
    cameras = store.cameras if len(store.cameras) > 1 else None
    ds = WindowDataset(store, num_hist=2, num_pred=1, frameskip=2, split="all", cameras=cameras)
    train = split_episodes(range(n), "all", 0.9, 42)
    acts = np.concatenate([source[e]["action"] for e in train]).astype(np.float64)
    props = np.concatenate([source[e]["state"][:, layout.proprio_slice] for e in train]).astype(np.float64)
    for k in range(len(ds)):
        item = ds[k]
        e, s = item["episode"], item["start"]
        want = source[e]
        steps = np.arange(s, s + 3 * 2, 2)
        visual = want["frames"][steps]
        if cameras:
            visual = np.stack([visual, want["cam"][steps]], axis=1)
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
    assert len(ds) == sum(max(len(w["frames"]) - 6 + 1, 0) for w in source) > 0
    return len(ds)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.layout}-{k}" for k, c in enumerate(CASES)])
def test_every_layout_and_variant_round_trips_from_the_loggers_own_files(case: Case, tmp_path: Path) -> None:
    src = case.write(tmp_path / "raw")
    detection = detect_layout(src)
    assert detection.layout.name == case.expect, detection.lines
    if case.detected:
        assert any("channel_order" in a for a in detection.assumed), detection.assumed
    assert not [a for a in detection.assumed if "the data cannot tell" in a], detection.assumed
    report = validate(src) if not case.detected else validate(src, case.layout)
    assert report.layout == case.layout
    assert [f.message for f in report.findings if f.severity != "info"] == []
    assert report.exit_code(strict=True) == 0

    result = convert_to_zarr(src, tmp_path / "s.zarr", layout=None if not case.detected else case.layout, workers=1,
                             verify=True)
    store = open_store(result.store)
    assert store.layout.name == case.layout and store.cameras == store.layout.camera_names
    _check_windows(result.store, src, case.layout, report.num_episodes)


def test_a_clean_primitive_dataset_warns_about_nothing_it_never_wrote(tmp_path: Path) -> None:
    src = write_primitive(tmp_path / "p", [10, 10])
    assert not (src / "metadata.pkl").exists() and not (src / "seq_lengths.pkl").exists()
    assert validate(src).of("metadata-missing") == []


def test_isaaclab_demos_train_with_the_tiny_preset(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fcs.cli import app

    src = write_isaaclab(tmp_path / "dataset.hdf5", [14, 16, 18, 20], seed=4)
    store = convert_to_zarr(src, tmp_path / "il.zarr", workers=1).store
    sets = {"data.store": store, "train.run_dir": tmp_path / "run", "data.num_workers": 0, "train.num_rollouts": 0,
            "data.frameskip": 1, "data.num_hist": 2, "data.split_ratio": 0.75, "train.max_steps": 3,
            "train.batch_size": 4, "log.print_every_steps": 100}
    res = CliRunner().invoke(app, ["train", "--preset", "tiny", "--no-progress",
                                   *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]])
    assert res.exit_code == 0, res.output
    assert "done (max_steps): 3 steps" in res.output and (tmp_path / "run" / "checkpoints" / "latest.pt").is_file()
