"""Synthetic logger datasets, written exactly as the Isaac Sim loggers write them.

`synthesize(out, ...)` makes a dataset in a built-in layout (`franka_cube_stack_v1` by default,
or `franka_cube_stack_min`) from kinematically consistent pick-and-place episodes rendered by a
small pinhole renderer. Tests, docs, benchmarks and `make demo` all use it.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import torch

from fcs_data.schemas import Layout, get_layout
from fcs_data.synth.kinematics import Trajectory, pick_and_place
from fcs_data.synth.render import Renderer

__all__ = ["SynthEpisode", "synth_episode", "synthesize"]


@dataclass(frozen=True)
class SynthEpisode:
    """One episode in the layout's own conventions (before any conversion)."""

    frames: np.ndarray  # (T, H, W, 3), layout dtype and channel order
    state: np.ndarray  # (T, state_dim) float32
    action: np.ndarray  # (T, action_dim) float32, layout alignment
    params: dict


def _episode_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _v1_arrays(traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    state = np.concatenate(
        [traj.ee_pos, traj.ee_quat, traj.gripper[:, None], traj.q, traj.qd], axis=1
    ).astype(np.float32)
    q_next = np.concatenate([traj.q[1:], traj.q[-1:] + traj.qd[-1:] / 60.0])  # forward: target of the next step
    action = np.concatenate([q_next, traj.finger_cmd[:, None], traj.finger_cmd[:, None]], axis=1)
    return state, action.astype(np.float32)


def _min_arrays(traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    ee, quat = traj.ee_pos, traj.ee_quat
    state = np.concatenate([ee, ee, quat, quat], axis=1).astype(np.float32)
    prev = np.concatenate([ee[:1], ee[:-1]])  # backward: action[t] moved the EE from t-1 to t
    action = np.concatenate([prev, ee], axis=1).astype(np.float32)
    return state, action


def synth_episode(layout: Layout, length: int, seed: int, index: int, renderer: Renderer) -> SynthEpisode:
    """Episode `index` of a dataset seeded with `seed` (independent of how many episodes are made)."""
    rng = _episode_rng(seed, index)
    traj = pick_and_place(length, rng, dt=1.0 / layout.control_hz)
    renderer.rng = rng
    frames = renderer.episode(traj)
    if layout.sources.kind == "global_pth":
        state, action = _v1_arrays(traj)
    else:
        state, action = _min_arrays(traj)
    if state.shape[1] != layout.state_dim or action.shape[1] != layout.action_dim:
        raise ValueError(f"synth does not know how to fill layout {layout.name!r}")
    if layout.observation.channel_order == "BGR":
        frames = frames[..., ::-1]
    frames = np.ascontiguousarray(frames, dtype=layout.observation.dtype)
    params = {
        "seed": int(seed),
        "episode": int(index),
        "env_idx": int(index % 4),
        "cube_positions": traj.cubes[0].astype(np.float64),
        "cube_colors": traj.cube_colors.astype(np.int64),
        "target_position": traj.target.astype(np.float64),
        "grasped_cube": int(traj.grasped),
        "cube_size": 0.05,
    }
    return SynthEpisode(frames=frames, state=state, action=action, params=params)


def _dump_pickle(obj: object, path: Path) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=4)


def _write_steps_h5(ep_dir: Path, ep: SynthEpisode, layout: Layout, step_digits: int) -> None:
    state_ds, action_ds = layout.sources.state_dataset, layout.sources.action_dataset
    assert state_ds and action_ds
    cubes = np.asarray(ep.params["cube_positions"], dtype=np.float32)
    frames_u8 = np.clip(np.rint(ep.frames), 0, 255).astype(np.uint8)
    for t in range(len(ep.state)):
        with h5py.File(ep_dir / f"{t:0{step_digits}d}.h5", "w") as f:
            f.create_dataset(action_ds, data=ep.action[t])
            f.create_dataset(state_ds, data=ep.state[t].reshape(1, 1, -1))
            f.create_dataset("positions", data=cubes)
            f.create_dataset("observations/color/cam_0", data=frames_u8[t])


def synthesize(
    out: str | Path,
    *,
    episodes: int = 8,
    min_len: int = 40,
    max_len: int = 80,
    seed: int = 0,
    layout: str | Layout = "franka_cube_stack_v1",
    step_digits: int = 3,
    previews: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic logger dataset to `out` and return its path.

    The dataset is assembled in `out.partial` and renamed when complete, so a failure leaves no
    `out`. Episode `i` depends only on `(seed, i)`. `previews` writes that many PNGs per episode to
    `NNNNNN/images/`. For per-step HDF5 layouts, `step_digits` sets the file-name width (`000.h5`;
    older loggers wrote 2 digits).
    """
    layout = get_layout(layout)
    out = Path(out)
    if episodes < 0 or min_len < 2 or max_len < min_len:
        raise ValueError(f"need episodes >= 0 and 2 <= min_len <= max_len (got {episodes}, {min_len}, {max_len})")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "cameras").mkdir()

    obs = layout.observation
    lengths = [int(x) for x in np.random.default_rng([seed, 2**31]).integers(min_len, max_len + 1, episodes)]
    t_max = max(lengths, default=0)
    renderer = Renderer(obs.height, np.random.default_rng([seed, 2**32]))
    if obs.height != obs.width:
        raise ValueError("synth renders square frames only")
    states = np.zeros((episodes, t_max, layout.state_dim), np.float32)
    actions = np.zeros((episodes, t_max, layout.action_dim), np.float32)
    for i, length in enumerate(lengths):
        ep = synth_episode(layout, length, seed, i, renderer)
        ep_dir = tmp / f"{i:06d}"
        ep_dir.mkdir()
        torch.save(torch.from_numpy(ep.frames), ep_dir / obs.file)
        _dump_pickle(ep.params, ep_dir / "property_params.pkl")
        if layout.sources.kind == "per_step_h5":
            _write_steps_h5(ep_dir, ep, layout, step_digits)
        states[i, :length] = ep.state
        actions[i, :length] = ep.action
        if previews:
            from PIL import Image

            (ep_dir / "images").mkdir()
            rgb = ep.frames[..., ::-1] if obs.channel_order == "BGR" else ep.frames
            for t in np.linspace(0, length - 1, previews).astype(int):
                Image.fromarray(np.clip(rgb[t], 0, 255).astype(np.uint8)).save(ep_dir / "images" / f"{t:04d}.png")
        if progress:
            progress(i + 1, episodes)
    if layout.sources.kind == "global_pth":
        torch.save(torch.from_numpy(states), tmp / layout.sources.states_file)
        torch.save(torch.from_numpy(actions), tmp / layout.sources.actions_file)
    metadata = {
        "episode_lengths": lengths,
        "n_rollouts": episodes,
        "max_timesteps": t_max,
        "state_dim": layout.state_dim,
        "action_dim": layout.action_dim,
        "image_size": obs.height,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator": f"fcs synth (layout {layout.name}, seed {seed})",
    }
    _dump_pickle(metadata, tmp / "metadata.pkl")
    _dump_pickle(lengths, tmp / "seq_lengths.pkl")
    tmp.rename(out)
    return out
