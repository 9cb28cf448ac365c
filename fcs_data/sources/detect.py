"""`fcs layouts detect DATASET`: which built-in layout (and which of its variants) a dataset is in.

The dataset is probed once (root files, step-file names, the datasets of a step file and their
shapes, the frames' shape, dtype and value range, a few episodes' states, actions and logged colour
frames). Every combination of a built-in layout and its variants is then judged:

- structurally, by what the layout declares: files, step-file digits, required and excluded
  datasets, state and action sizes, frame shape and dtype, further cameras' datasets;
- by content, where the data can tell: the channel order (the frames against the logged colour
  frames), the action alignment (segment actions against the EE positions observed, joint targets
  against the next or the current state), the quaternion order (a stacking gripper points down),
  and how the cameras were fused (the frames against the fused colour frames).

What the data cannot tell is assumed to be the layout's default and said so. No match is an error
that says, per built-in layout, which field matched none; two matching layouts are an error that
lists both.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fcs_data.errors import DetectionError, FcsError
from fcs_data.safe_io import load_tensor
from fcs_data.schemas import Layout
from fcs_data.schemas.layout import QUATERNION_KINDS, builtin_layouts
from fcs_data.sources.conventions import fuse_cameras
from fcs_data.sources.evidence import SEGMENT_TOL, channel_evidence, quaternion_evidence

_EPISODE_DIR = re.compile(r"^\d{6}$")
_STEP_FILE = re.compile(r"^(\d+)\.h5$")
SAMPLE_EPISODES = 3
SAMPLE_FRAMES = 3


@dataclass
class Probe:
    """What is on disk, read once."""

    root: Path
    root_files: set[str]
    episodes: list[int]
    step_digits: set[int] = field(default_factory=set)
    datasets: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)  # of the first step file
    frames: dict[str, Any] = field(default_factory=dict)  # file -> (shape, dtype, max) of the first episode
    samples: list[dict[str, np.ndarray]] = field(default_factory=list)  # per sampled episode


@dataclass
class Detection:
    layout: Layout
    evidence: list[str]
    assumed: list[str]

    @property
    def lines(self) -> list[str]:
        """The evidence and the assumptions, one line each (`assumed: ...` for the latter)."""
        return [*self.evidence, *(f"assumed: {a}" for a in self.assumed)]


def _step_files(ep_dir: Path) -> dict[int, Path]:
    out = {}
    for p in ep_dir.iterdir():
        m = _STEP_FILE.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


def _h5_datasets(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    import h5py

    found: dict[str, tuple[tuple[int, ...], str]] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, (tuple(obj.shape), str(obj.dtype)))
                     if isinstance(obj, h5py.Dataset) else None)
    return found


def probe(root: str | Path) -> Probe:
    """Read what detection needs from the dataset at `root`."""
    import h5py

    root = Path(root)
    if not root.is_dir():
        raise DetectionError(f"{root}: not a directory")
    episodes = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and _EPISODE_DIR.match(p.name))
    pr = Probe(root, {p.name for p in root.iterdir() if p.is_file()}, episodes)
    if not episodes:
        return pr
    picks = sorted({episodes[0], episodes[len(episodes) // 2], episodes[-1]})[:SAMPLE_EPISODES]
    for e in picks:
        ep_dir = root / f"{e:06d}"
        files = _step_files(ep_dir)
        sample: dict[str, np.ndarray] = {}
        if files:
            pr.step_digits |= {len(p.name) - 3 for p in files.values()}
            if not pr.datasets:
                pr.datasets = _h5_datasets(files[min(files)])
            steps = sorted(files)
            with_frames = sorted({steps[0], steps[len(steps) // 2], steps[-1]})[:SAMPLE_FRAMES]
            rows: dict[str, list[np.ndarray]] = {}
            for t in steps:
                with h5py.File(files[t], "r") as f:
                    for name in ("eef_states", "action"):
                        if name in f:
                            rows.setdefault(name, []).append(np.asarray(f[name]).reshape(-1))
                    if t in with_frames:
                        for name in ("observations/color/cam_0", "observations/color/cam_1"):
                            if name in f:
                                rows.setdefault(name, []).append(np.asarray(f[name]))
            sample = {k: np.stack(v) for k, v in rows.items()}
            sample["frame_steps"] = np.asarray(with_frames)
        obses = ep_dir / "obses.pth"
        if obses.is_file():
            try:
                frames = load_tensor(obses, mmap=True)
            except (FcsError, OSError):
                frames = None
            if frames is not None and frames.ndim == 4 and len(frames):
                if not pr.frames:
                    pr.frames["obses.pth"] = (tuple(frames.shape[1:]), str(frames.dtype).removeprefix("torch."),
                                              float(frames[0].max()))
                at = sample.get("frame_steps", np.asarray([0]))
                at = at[at < len(frames)]
                sample["obses"] = frames[at].numpy()
                sample["obs_steps"] = at
        pr.samples.append(sample)
    if "states.pth" in pr.root_files:
        try:
            states = load_tensor(root / "states.pth", mmap=True)
            actions = load_tensor(root / "actions.pth", mmap=True) if "actions.pth" in pr.root_files else None
            pr.datasets["states.pth"] = (tuple(states.shape), str(states.dtype))
            if actions is not None:
                pr.datasets["actions.pth"] = (tuple(actions.shape), str(actions.dtype))
                n = min(len(states), 3)
                for i in range(n):  # v1 evidence: the first steps of a few episodes
                    pr.samples[min(i, len(pr.samples) - 1)]["v1_state"] = states[i, :40].numpy()
                    pr.samples[min(i, len(pr.samples) - 1)]["v1_action"] = actions[i, :40].numpy()
        except (FcsError, OSError):
            pass
    return pr


# -- judging one layout ----------------------------------------------------------------------------
def _structure(layout: Layout, pr: Probe) -> str | None:
    """None when the layout's files, names and shapes fit the probe, else the first mismatch in words."""
    src, obs = layout.sources, layout.observation
    if not pr.episodes:
        return "no episode directories (000000/, ...)"
    if src.kind == "global_pth":
        for name in (src.states_file, src.actions_file):
            if name not in pr.root_files:
                return f"needs {name} at the root (missing)"
    frames = pr.frames.get(obs.file)
    if frames is None:
        return f"needs {obs.file} in each episode (none found in {pr.episodes[0]:06d}/)"
    shape, dtype, vmax = frames
    if dtype != obs.dtype:
        return f"{obs.file} is {dtype}, the layout says {obs.dtype}"
    if shape != obs.shape:
        return f"{obs.file} frames are {shape}, the layout says {obs.shape}"
    if dtype.startswith("float") and vmax <= 1.0:
        return f"{obs.file} floats look normalised to 0..1 (max {vmax:.3g}), the layout says 0..255"
    if src.kind == "global_pth":
        for name, dim in ((src.states_file, layout.state_dim), (src.actions_file, layout.action_dim)):
            if pr.datasets.get(name, ((0, 0, 0), ""))[0][-1:] != (dim,):
                return f"{name} has shape {pr.datasets.get(name, ((),))[0]}, the layout says (N, T_max, {dim})"
        if pr.step_digits:
            return "has per-step .h5 files, which this layout does not read"
        return None
    if not pr.step_digits:
        return "needs per-step .h5 files in each episode (none found)"
    if src.step_digits and pr.step_digits != {src.step_digits}:
        return (f"step files are named with {'/'.join(map(str, sorted(pr.step_digits)))} digits, the layout says "
                f"{src.step_digits}")
    for name in src.requires:
        if name not in pr.datasets:
            return f"needs {name} in each step file (absent)"
    for name in src.excludes:
        if name in pr.datasets:
            return f"step files hold {name}, which this layout's logger does not write"
    for name, dim in ((src.state_dataset, layout.state_dim), (src.action_dataset, layout.action_dim)):
        shape = pr.datasets.get(name, ((),))[0]
        if int(np.prod(shape)) != dim:
            return f"{name} has shape {shape} ({int(np.prod(shape))} values), the layout says {dim}"
    for cam in layout.cameras:
        if cam.step_dataset not in pr.datasets:
            return f"needs {cam.step_dataset} for camera {cam.name} (absent)"
    if obs.fused is not None and "observations/color/cam_1" not in pr.datasets:
        return "fused frames, but the step files hold no second camera to compare them with"
    return None


def _verdict(values: list[str | None]) -> str | None:
    """pass / fail over the sampled episodes (None: the data cannot tell)."""
    told = [v for v in values if v is not None]
    if not told:
        return None
    return "fail" if "fail" in told else "pass"


def _content(layout: Layout, pr: Probe) -> dict[str, tuple[str | None, str]]:
    """Per variant group: (pass / fail / None, evidence in words)."""
    out: dict[str, tuple[str | None, str]] = {}
    obs = layout.observation
    # channel order, or the fusion of two cameras, against the logged colour frames
    is_cam0: list[bool] = []
    if obs.fused is not None or obs.color_dataset:
        votes, words = [], ""
        for s in pr.samples:
            frames = s.get("obses")
            cam0, cam1 = s.get("observations/color/cam_0"), s.get("observations/color/cam_1")
            if frames is None or cam0 is None or len(frames) != len(cam0):
                continue
            if obs.fused is not None:
                if cam1 is None:
                    continue
                mad = float(np.abs(frames.astype(np.float32) - fuse_cameras(cam0, cam1, obs.fused)).mean())
                votes.append("pass" if mad < 1.0 else "fail")
                words = (f"frames {'equal' if mad < 1.0 else 'differ from'} the {obs.fused} fusion of cam_0 and "
                         f"cam_1 (difference {mad:.2f})")
            else:
                rgb = frames[..., ::-1] if obs.channel_order == "BGR" else frames
                verdict, same, swapped = channel_evidence(rgb, cam0)
                is_cam0.append(verdict is not None)
                votes.append({"same": "pass", "swapped": "fail"}.get(verdict or ""))
                words = (f"frames read as {obs.channel_order} {'match' if verdict == 'same' else 'do not match'} "
                         f"{obs.color_dataset} (difference {same:.1f}, {swapped:.1f} with channels reversed)")
        group = "cameras" if obs.fused is not None else "channel_order"
        out[group] = (_verdict(votes), words)
    if not layout.cameras and obs.fused is None and "observations/color/cam_1" in pr.datasets:
        out["cameras"] = ("fail", "the step files hold a second camera (cam_1) this layout leaves unused")
    elif layout.cameras:
        plain = bool(is_cam0) and all(is_cam0)
        out["cameras"] = ("pass" if plain else "fail",
                          f"frames are cam_0's own and {', '.join(c.name for c in layout.cameras)} a further camera"
                          if plain else "frames are not cam_0's own frames (fused by the logger?)")
    # action alignment
    segs = [f for f in layout.action if f.kind == "position_start"]
    if segs and layout.sources.kind == "per_step_h5":
        start = segs[0]
        end = next((f for f in layout.action if f.kind == "position_end" and f.of == start.of), None)
        votes = []
        for s in pr.samples:
            state, action = s.get(layout.sources.state_dataset or ""), s.get(layout.sources.action_dataset or "")
            if state is None or action is None or end is None or len(state) < 3:
                continue
            pos = state[:, layout.state_field(start.of).slice]
            fwd = float(np.median(np.linalg.norm(action[:, start.slice] - pos, axis=1)))
            bwd = float(np.median(np.linalg.norm(action[:, end.slice] - pos, axis=1)))
            declared, other = (fwd, bwd) if layout.action_alignment == "forward" else (bwd, fwd)
            votes.append("pass" if declared <= SEGMENT_TOL else "fail" if other <= SEGMENT_TOL else None)
        where = "start" if layout.action_alignment == "forward" else "end"
        out["alignment"] = (_verdict(votes), f"each action's {where} is the EE position observed at its step "
                                             f"({layout.action_alignment})")
    # quaternion order: a stacking gripper points down
    quats = [f for f in layout.state if f.kind in QUATERNION_KINDS]
    if quats and layout.sources.kind == "per_step_h5":
        f = quats[0]
        votes = []
        for s in pr.samples:
            state = s.get(layout.sources.state_dataset or "")
            if state is None:
                continue
            verdict, _, _ = quaternion_evidence(state[:, f.slice], f.kind.removeprefix("quaternion_"))
            votes.append({"same": "pass", "swapped": "fail"}.get(verdict or ""))
        out["quaternion"] = (_verdict(votes), f"quaternions read as {f.unit} point the gripper down")
    return out


def _combinations(layout: Layout) -> list[tuple[str, ...]]:
    groups: dict[str, list[str]] = {}
    for name, v in layout.variants.items():
        groups.setdefault(v.group, []).append(name)
    options = [[None, *names] for names in groups.values()]
    return [tuple(n for n in combo if n is not None) for combo in itertools.product(*options)]


def _name_hints(root: Path) -> str | None:
    """The camera variant the users' folder names announce (`..._NCams2_FuseSbS_...`)."""
    name = root.name
    fuse = re.search(r"_Fuse(ChStack|SbS|Alpha)", name)
    if fuse:
        return {"ChStack": "chstack", "SbS": "sbs", "Alpha": "alpha"}[fuse.group(1)]
    if re.search(r"_NCams2", name):
        return "cams2"
    return None


def detect_layout(root: str | Path, layouts: dict[str, Layout] | None = None) -> Detection:
    """The built-in layout (with variants) the dataset at `root` is in; `DetectionError` otherwise."""
    pr = probe(root)
    layouts = layouts or builtin_layouts()
    matches: list[tuple[Layout, dict[str, tuple[str | None, str]]]] = []
    mismatches: dict[str, str] = {}
    hint = _name_hints(pr.root)
    for base in layouts.values():
        fits = []
        reasons = []
        for combo in _combinations(base):
            candidate = base.with_variants(list(combo)) if combo else base
            problem = _structure(candidate, pr)
            if problem is not None:
                reasons.append(problem)
                continue
            content = _content(candidate, pr)
            if any(v == "fail" for v, _ in content.values()):
                reasons.append(next(w for v, w in content.values() if v == "fail"))
                continue
            fits.append((candidate, content, combo))
        if not fits:
            mismatches[base.name] = reasons[0] if reasons else "no variant fits"
            continue
        # where the data cannot tell, the default; among the rest, what the data confirmed most, then fewest variants
        fits.sort(key=lambda f: (-sum(v == "pass" for v, _ in f[1].values()),
                                 sum(f[1].get(base.variants[n].group, (None, ""))[0] is None for n in f[2]),
                                 hint not in f[2] if hint else 0, len(f[2])))
        matches.append((fits[0][0], fits[0][1]))
    if not matches:
        lines = "; ".join(f"{name}: {why}" for name, why in mismatches.items())
        raise DetectionError(f"{pr.root}: no built-in layout matches ({lines}); write a layout file and pass "
                             "--layout (fcs layouts show NAME prints one to start from)")
    if len(matches) > 1:
        names = ", ".join(m.name for m, _ in matches)
        raise DetectionError(f"{pr.root}: ambiguous, it matches {names}; pass --layout with the right one")
    layout, content = matches[0]
    evidence = [_summary(layout, pr)] + [words for v, words in content.values() if v == "pass"]
    assumed = [f"{group}: the data cannot tell; assumed the layout's default"
               for group, (v, _) in content.items() if v is None]
    if hint and hint not in layout.name.split("+"):
        assumed.append(f"the folder name announces {hint!r}, the data says otherwise")
    return Detection(layout, evidence, assumed)


def _summary(layout: Layout, pr: Probe) -> str:
    shape, dtype, vmax = pr.frames[layout.observation.file]
    parts = [f"{len(pr.episodes)} episodes", f"{layout.observation.file} {dtype} {shape} (max {vmax:.0f})"]
    if layout.sources.kind == "global_pth":
        parts.append(f"{layout.sources.states_file} {pr.datasets[layout.sources.states_file][0]}")
    else:
        digits = next(iter(pr.step_digits))
        parts.append(f"step files {0:0{digits}d}.h5, {1:0{digits}d}.h5, ...")
        for name in (layout.sources.state_dataset, layout.sources.action_dataset, layout.sources.frame_index_dataset):
            if name:
                parts.append(f"{name} {pr.datasets[name][0]} {pr.datasets[name][1]}")
    return ", ".join(parts)
