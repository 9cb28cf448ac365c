"""Synthetic logger datasets, written exactly as the Isaac Sim loggers write them.

`synthesize(out, ...)` makes a dataset in any built-in layout and variant from kinematically
consistent pick-and-place episodes rendered by a small pinhole renderer:

- `franka_cube_stack_v1`: dense joint-space episodes, global `states.pth`/`actions.pth`, uint8 frames;
- `franka_cube_stack_min`: dense EE-space episodes, one `000.h5` per step, float32 frames;
- `franka_cube_stack_keyframe`: the min logger at keyframes only, with `info/original_frame_idx`;
- `franka_cube_stack_primitive`: one `00.h5` per motion primitive (14..25 per episode), 8-D or 6-D
  segment actions, optionally a second camera or two cameras fused by the logger.

What a variant changes (channel order, action alignment, quaternion order, cameras) is read from
the layout's fields, so every variant is written as that logger version wrote it. The per-step
files also hold what the real loggers write beside state and action (`positions`, `info/*`,
`observations/color|depth/cam_i`). Tests, docs, benchmarks and `make demo` all use it.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from fcs_data.schemas import Layout, get_layout
from fcs_data.sources.conventions import fuse_cameras
from fcs_data.sources.naming import episode_dir_name, step_file_name
from fcs_data.synth.kinematics import Trajectory, pick_and_place
from fcs_data.synth.render import Renderer

__all__ = ["SynthEpisode", "dataset_renderers", "episode_trajectory", "logger_family", "scripted_actions", "synth_episode", "synthesize"]


@dataclass(frozen=True)
class SynthEpisode:
    """One episode in the layout's own conventions (before any conversion)."""

    frames: np.ndarray  # (T, H, W, 3), layout dtype and channel order (fused when the layout says so)
    state: np.ndarray  # (T, state_dim) float32
    action: np.ndarray  # (T, action_dim), layout alignment
    params: dict
    colors: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (T, h, w, 3) uint8 RGB
    cubes: np.ndarray | None = None  # (T, n_cubes, 4) [x, y, z, yaw]
    info: dict[str, np.ndarray] = field(default_factory=dict)  # per-step info/* datasets, (T, ...)


def logger_family(layout: Layout) -> str:
    """Which logger a layout describes: v1, min, keyframe or primitive."""
    if layout.sources.kind == "global_pth":
        return "v1"
    if layout.sources.frame_index_dataset:
        return "keyframe"
    if "info/primitive_name" in layout.sources.requires:
        return "primitive"
    return "min"


def _episode_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _v1_arrays(traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    state = np.concatenate(
        [traj.ee_pos, traj.ee_quat, traj.gripper[:, None], traj.q, traj.qd], axis=1
    ).astype(np.float32)
    q_next = np.concatenate([traj.q[1:], traj.q[-1:] + traj.qd[-1:] / 60.0])  # forward: target of the next step
    action = np.concatenate([q_next, traj.finger_cmd[:, None], traj.finger_cmd[:, None]], axis=1)
    return state, action.astype(np.float32)


def _eef_states(traj: Trajectory, idx: np.ndarray, layout: Layout) -> np.ndarray:
    """`(T, 14)` [position, position, quaternion, quaternion] in the layout's quaternion order."""
    quat = traj.ee_quat[idx]  # wxyz
    if layout.state_field("ee_quat").kind == "quaternion_xyzw":
        quat = quat[:, [1, 2, 3, 0]]
    ee = traj.ee_pos[idx]
    return np.concatenate([ee, ee, quat, quat], axis=1).astype(np.float32)


def _segment_actions(ee: np.ndarray, closed: np.ndarray, layout: Layout) -> np.ndarray:
    """Actions of segments between consecutive observations, in the layout's alignment and fields.

    ee `(T, 3)` positions and closed `(T,)` gripper commands at the observations. Forward: step t
    moves from obs t to obs t+1 (the last step stays); backward: step t moved from obs t-1 to obs t.
    """
    if layout.action_alignment == "forward":
        start, end = np.arange(len(ee)), np.minimum(np.arange(len(ee)) + 1, len(ee) - 1)
    else:
        start, end = np.maximum(np.arange(len(ee)) - 1, 0), np.arange(len(ee))
    action = np.zeros((len(ee), layout.action_dim))
    source = start
    for f in layout.action:  # a gripper command belongs to the position before it (x_s, y_s, z_s, g_s, ...)
        if f.kind in ("position_start", "position_end"):
            source = start if f.kind == "position_start" else end
            action[:, f.slice] = ee[source]
        elif f.kind == "gripper_command":
            action[:, f.slice] = closed[source, None]
    return action


def _phases(ee: np.ndarray, closed: np.ndarray) -> list[str]:
    """A primitive name per step from how the EE and the gripper move: what the logger records."""
    names = []
    for t in range(len(ee)):
        nxt = min(t + 1, len(ee) - 1)
        dz = ee[nxt, 2] - ee[t, 2]
        if closed[nxt] != closed[t]:
            names.append("grasp" if closed[nxt] else "release")
        elif dz < -0.01:
            names.append("descend")
        elif dz > 0.01:
            names.append("lift")
        else:
            names.append("move_to")
    return names


def episode_trajectory(layout: Layout, length: int, seed: int, index: int
                       ) -> tuple[Trajectory, np.ndarray, np.random.Generator]:
    """The scripted motion behind episode `index` of a dataset seeded with `seed`: the dense trajectory,
    the dense steps the logger observed `(length,)` (every step for v1/min, one per primitive, the
    keyframes), and the episode's generator, positioned where the renderer's noise draws begin."""
    rng = _episode_rng(seed, index)
    family = logger_family(layout)
    dense_len = length if family in ("v1", "min") else length * int(rng.integers(4, 7))
    traj = pick_and_place(dense_len, rng, dt=1.0 / layout.control_hz)
    if family == "keyframe":  # keyframes: the first, the last, and the rest spread with jitter
        inner = rng.choice(np.arange(1, dense_len - 1), size=length - 2, replace=False)
        idx = np.sort(np.concatenate([[0], inner, [dense_len - 1]]))
    elif family == "primitive":  # one observation at the start of each primitive
        idx = np.rint(np.linspace(0, dense_len - 1, length + 1)).astype(np.int64)[:-1]
    else:
        idx = np.arange(dense_len)
    return traj, idx, rng


def dataset_renderers(seed: int, size: int, cameras: list[str]) -> dict[str, Renderer]:
    """The renderers of a dataset seeded with `seed`: one per camera, each with the dataset's own table
    texture (so a scene rendered later, e.g. by the closed-loop world, looks like the dataset's frames)."""
    return {name: Renderer(size, np.random.default_rng([seed, 2**32, i]), camera=name) for i, name in enumerate(cameras)}


def scripted_actions(layout: Layout, traj: Trajectory, idx: np.ndarray) -> np.ndarray:
    """`(len(idx), action_dim)` float64: the actions the logger of `layout` records for the observed steps
    `idx` of `traj`, in the layout's alignment (v1: joint and finger targets of the next step; segment
    layouts: EE start/end positions and gripper commands between consecutive observations)."""
    if logger_family(layout) == "v1":
        return _v1_arrays(traj)[1][idx].astype(np.float64)
    closed = (traj.finger_cmd[idx] == 0).astype(np.float64)
    return _segment_actions(traj.ee_pos[idx], closed, layout)


def synth_episode(layout: Layout, length: int, seed: int, index: int, renderers: dict[str, Renderer]) -> SynthEpisode:
    """Episode `index` of a dataset seeded with `seed` (independent of how many episodes are made)."""
    family = logger_family(layout)
    traj, idx, rng = episode_trajectory(layout, length, seed, index)
    colors = {}
    for name, renderer in renderers.items():
        renderer.rng = rng
        colors[name] = renderer.frames(traj, idx)
    frames = colors["cam_0"]
    if layout.observation.fused is not None:
        frames = fuse_cameras(colors["cam_0"], colors["cam_1"], layout.observation.fused)
    elif layout.observation.channel_order == "BGR":
        frames = frames[..., ::-1]
    frames = np.ascontiguousarray(frames, dtype=layout.observation.dtype)
    closed = (traj.finger_cmd[idx] == 0).astype(np.float64)
    info: dict[str, np.ndarray] = {}
    if family == "v1":
        state, action = _v1_arrays(traj)
    else:
        state = _eef_states(traj, idx, layout)
        action = scripted_actions(layout, traj, idx)
        action = action.astype(np.float64 if family in ("min", "keyframe") else np.float32)
        info["step"] = np.arange(length)
    if family == "keyframe":
        info["original_frame_idx"] = idx.astype(np.int64)
    if family == "primitive":
        ee = traj.ee_pos[idx]
        nxt = np.minimum(np.arange(length) + 1, length - 1)
        info |= {"phase": np.array(["pick" if t < length // 2 else "place" for t in range(length)]),
                 "primitive_name": np.array(_phases(ee, closed)),
                 "primitive_type": np.array(["cartesian"] * length),
                 "n_steps": np.diff(np.append(idx, len(traj.q))).astype(np.int64),
                 "movement_distance": np.linalg.norm(ee[nxt] - ee, axis=1)}
    yaw = np.zeros((len(idx), traj.cubes.shape[1], 1))
    cubes = np.concatenate([traj.cubes[idx], yaw], axis=2)
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
    if family == "keyframe":
        params["keyframes"] = idx.tolist()
    if family == "primitive":
        params["n_primitives"] = int(length)
    if family == "v1":
        colors = {}
    return SynthEpisode(frames=frames, state=state, action=action, params=params, colors=colors, cubes=cubes,
                        info=info)


def _dump_pickle(obj: object, path: Path) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=4)


def _write_steps_h5(ep_dir: Path, ep: SynthEpisode, layout: Layout, step_digits: int) -> None:
    """One file per step with the datasets the layout declares, in the shapes and dtypes the loggers write:
    images `(1, H, W, 3)` float32 through the frames' own channel conversion, depth `(1, H, W)` uint16."""
    import h5py

    src = layout.sources
    state_ds, action_ds = src.state_dataset, src.action_dataset
    assert state_ds and action_ds
    bgr = {layout.observation.camera: layout.observation.channel_order == "BGR" and layout.observation.fused is None,
           **{c.name: c.channel_order == "BGR" for c in layout.cameras}}
    for t in range(len(ep.state)):
        with h5py.File(ep_dir / step_file_name(t, step_digits), "w") as f:
            f.create_dataset(action_ds, data=ep.action[t].reshape(src.action_shape or [layout.action_dim]))
            f.create_dataset(state_ds, data=ep.state[t].reshape(src.state_shape or [layout.state_dim]))
            if ep.cubes is not None:
                f.create_dataset("positions", data=ep.cubes[t][None].astype(np.float32))
            for key, values in ep.info.items():
                value = values[t]
                f.create_dataset(f"info/{key}", data=value.encode() if isinstance(value, str | np.str_) else value)
            for name, frames in ep.colors.items():
                h, w = frames.shape[1:3]
                image = frames[t][..., ::-1] if bgr.get(name) else frames[t]
                f.create_dataset(f"observations/color/{name}",
                                 data=image.astype(src.image_dtype).reshape(src.image_shape(h, w)))
                depth_shape = (1, h, w) if src.image_leading_singleton else (h, w)
                f.create_dataset(f"observations/depth/{name}", data=np.zeros(depth_shape, np.uint16))


def synthesize(
    out: str | Path,
    *,
    episodes: int = 8,
    min_len: int = 40,
    max_len: int = 80,
    seed: int = 0,
    layout: str | Layout = "franka_cube_stack_v1",
    step_digits: int | None = None,
    previews: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic logger dataset to `out` and return its path.

    The dataset is assembled in `out.partial` and renamed when complete, so a failure leaves no
    `out`. Episode `i` depends only on `(seed, i)`. `previews` writes that many PNGs per episode to
    `NNNNNN/images/`. For per-step HDF5 layouts, `step_digits` overrides the layout's file-name width
    (to make datasets that break it). Episode lengths count the logged steps (primitives for the
    primitive logger, keyframes for the keyframe logger).
    """
    layout = get_layout(layout)
    if layout.sources.kind not in ("global_pth", "per_step_h5"):
        raise ValueError(f"synth writes the Isaac Sim loggers' layouts, not {layout.sources.kind} ({layout.name})")
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
    digits = step_digits or layout.sources.step_digits or 3
    lengths = [int(x) for x in np.random.default_rng([seed, 2**31]).integers(min_len, max_len + 1, episodes)]
    t_max = max(lengths, default=0)
    cameras = ["cam_0"]
    if obs.fused is not None or layout.cameras:
        cameras.append("cam_1")
    if layout.sources.kind == "per_step_h5" and obs.color_dataset is None and obs.fused is None:
        raise ValueError(f"synth writes per-step loggers with a color dataset; layout {layout.name} has none")
    size = obs.height
    renderers = dataset_renderers(seed, size, cameras)
    states = np.zeros((episodes, t_max, layout.state_dim), np.float32)
    actions = np.zeros((episodes, t_max, layout.action_dim), np.float32)
    for i, length in enumerate(lengths):
        ep = synth_episode(layout, length, seed, i, renderers)
        if ep.state.shape[1] != layout.state_dim or ep.action.shape[1] != layout.action_dim:
            raise ValueError(f"synth does not know how to fill layout {layout.name!r}")
        ep_dir = tmp / episode_dir_name(i)
        ep_dir.mkdir()
        torch.save(torch.from_numpy(ep.frames), ep_dir / obs.file)
        _dump_pickle(ep.params, ep_dir / "property_params.pkl")
        if layout.sources.kind == "per_step_h5":
            _write_steps_h5(ep_dir, ep, layout, digits)
        states[i, :length] = ep.state
        actions[i, :length] = ep.action
        if previews:
            from PIL import Image

            (ep_dir / "images").mkdir()
            rgb = ep.frames[..., ::-1] if obs.channel_order == "BGR" and obs.fused is None else ep.frames
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
