"""What layout detection reads from a dataset, once: a `Probe`.

The dataset names to look for come from the layouts being judged (state and action datasets, the
frames' colour copy, further and fused cameras, required and excluded datasets), never from a list of
its own. Every read is checked and nothing in the data can make probing fail: a file or dataset that
cannot be read is described in words, and judging reports it as that layout's mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fcs_data.errors import FcsError
from fcs_data.safe_io import load_tensor
from fcs_data.schemas import Layout
from fcs_data.sources import h5
from fcs_data.sources.naming import display_name, episode_dir_name, episode_dirs, parse_step_file
from fcs_data.sources.robomimic import DATA_GROUP, demo_names, hdf5_file

SAMPLE_EPISODES = 3
SAMPLE_FRAMES = 3
_SAMPLED_DTYPES = (torch.uint8, torch.float32)

Described = tuple[tuple[int, ...], str] | str  # (shape, dtype), or what is wrong in words


@dataclass
class Probe:
    """What is on disk, read once. `kind` is `dirs` (episode directories) or `file` (one HDF5 file)."""

    root: Path
    kind: str
    root_files: set[str]
    episodes: list[int]
    file: Path | None = None
    step_digits: set[int] = field(default_factory=set)
    present: dict[str, bool] = field(default_factory=dict)  # name -> in the first step file / first demo
    datasets: dict[str, Described] = field(default_factory=dict)  # of the first step file / demo, and root tensors
    frames: dict[str, tuple[tuple[int, ...], str, float] | str] = field(default_factory=dict)
    samples: list[dict[str, np.ndarray]] = field(default_factory=list)  # per sampled episode


def _names(layouts: dict[str, Layout]) -> tuple[set[str], set[str], set[str]]:
    """(datasets to describe, row datasets to sample at every step, image datasets to sample at a few)."""
    described, rows, images = set(), set(), set()
    for base in layouts.values():
        for layout in [base, *(base.with_variants([v]) for v in base.variants)]:
            src, obs = layout.sources, layout.observation
            described |= set(layout.step_datasets) | set(layout.demo_datasets) | set(src.requires) | set(src.excludes)
            rows |= {n for n in (src.state_dataset, src.action_dataset, *src.state_datasets) if n}
            images |= {n for n in (obs.color_dataset, *obs.fused_from, *(c.step_dataset for c in layout.cameras)) if n}
    return described, rows, images


def _describe_all(group, path: Path, names: set[str], pr: Probe) -> None:
    for name in names:
        pr.present[name] = h5.has_link(group, name)
        if pr.present[name]:
            pr.datasets[name] = h5.describe(group, name, path)


def _sample_steps(files: dict[int, Path], rows: set[str], images: set[str]) -> dict[str, np.ndarray]:
    """Row datasets at every step (flattened) and image datasets at a few steps, where they read cleanly."""
    steps = sorted(files)
    with_frames = sorted({steps[0], steps[len(steps) // 2], steps[-1]})[:SAMPLE_FRAMES]
    got: dict[str, list[np.ndarray]] = {}
    broken: set[str] = set()
    for t in steps:
        try:
            with h5.open_file(files[t]) as f:
                for name in rows | (images if t in with_frames else set()):
                    if name in broken or not h5.has_link(f, name):
                        continue
                    try:
                        value = h5.read(f, name, files[t], dtype="real")
                    except FcsError:
                        broken.add(name)
                        continue
                    got.setdefault(name, []).append(value.reshape(-1) if name in rows else value)
        except FcsError:
            broken |= rows | images
    sample: dict[str, np.ndarray] = {}
    for name, values in got.items():
        if name in broken or len({v.shape for v in values}) != 1:
            continue
        if name in images:
            squeezed = [v.reshape(v.shape[-3:]) if v.ndim >= 3 and int(np.prod(v.shape[:-3])) == 1 else v
                        for v in values]
            if all(v.ndim == 3 for v in squeezed) and len(values) == len(with_frames):
                sample[name] = np.stack(squeezed)
        elif len(values) == len(steps):
            sample[name] = np.stack(values)
    sample["frame_steps"] = np.asarray(with_frames)
    return sample


def _frames(pr: Probe, name: str, frames: torch.Tensor, sample: dict[str, np.ndarray]) -> None:
    """Record the first episode's frame shape, dtype and range; sample a few frames for content checks."""
    if frames.ndim != 4 or not len(frames):
        pr.frames.setdefault(name, f"holds {tuple(frames.shape)} {str(frames.dtype).removeprefix('torch.')}, "
                                   "not (T, H, W, C) frames")
        return
    dtype = str(frames.dtype).removeprefix("torch.")
    real = frames.dtype.is_floating_point or frames.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64)
    if name not in pr.frames:
        pr.frames[name] = (tuple(frames.shape[1:]), dtype, float(frames[0].max()) if real else float("nan"))
    if frames.dtype in _SAMPLED_DTYPES:
        at = sample.get("frame_steps", np.asarray([0]))
        at = at[at < len(frames)]
        sample["obses"] = frames[torch.from_numpy(at)].numpy()
        sample["obs_steps"] = at


def _probe_dirs(root: Path, layouts: dict[str, Layout]) -> Probe:
    dirs = episode_dirs(root)
    pr = Probe(root, "dirs", {display_name(p.name) for p in root.iterdir() if p.is_file()}, sorted(dirs))
    described, rows, images = _names(layouts)
    frame_files = {layout.observation.file for layout in layouts.values()}
    if pr.episodes:
        picks = sorted({pr.episodes[0], pr.episodes[len(pr.episodes) // 2], pr.episodes[-1]})[:SAMPLE_EPISODES]
        for e in picks:
            ep_dir = root / episode_dir_name(e)
            files: dict[int, Path] = {}
            for p in ep_dir.iterdir():
                parsed = parse_step_file(p.name)
                if parsed is not None:
                    files.setdefault(parsed[0], p)
                    pr.step_digits.add(parsed[1])
            sample: dict[str, np.ndarray] = {}
            if files:
                if not pr.present:
                    first = files[min(files)]
                    try:
                        with h5.open_file(first) as f:
                            _describe_all(f, first, described, pr)
                    except FcsError as err:
                        pr.datasets["__step_file__"] = f"{episode_dir_name(e)}/{first.name}: {err}"
                sample = _sample_steps(files, rows, images)
            for name in frame_files:
                if (ep_dir / name).is_file():
                    try:
                        _frames(pr, name, load_tensor(ep_dir / name, mmap=True), sample)
                    except (FcsError, OSError) as err:
                        pr.frames.setdefault(name, f"cannot be read ({err})")
            pr.samples.append(sample)
    _probe_root_tensors(pr, layouts)
    return pr


def _probe_root_tensors(pr: Probe, layouts: dict[str, Layout]) -> None:
    """v1: the shapes and dtypes of states.pth / actions.pth."""
    names = {name for lay in layouts.values() if lay.sources.kind == "global_pth"
             for name in (lay.sources.states_file, lay.sources.actions_file)}
    for name in names & pr.root_files:
        try:
            t = load_tensor(pr.root / name, mmap=True)
            pr.datasets[name] = (tuple(t.shape), str(t.dtype).removeprefix("torch."))
        except (FcsError, OSError) as err:
            pr.datasets[name] = f"cannot be read ({err})"


def _group(parent, name: str):
    """`parent[name]` when it is a group stored in the file, else None (links that fail included)."""
    import h5py

    try:
        link = parent.get(name, getlink=True)
        if link is None or isinstance(link, h5py.ExternalLink):
            return None
        obj = parent[name]
    except (KeyError, OSError, RuntimeError, ValueError):
        return None
    return obj if isinstance(obj, h5py.Group) else None


def _probe_file(root: Path, file: Path, layouts: dict[str, Layout]) -> Probe:
    """A robomimic-style HDF5 file: demos, the first demo's datasets, a few demos' rows and frames."""
    pr = Probe(root, "file", {display_name(file.name)}, [], file=file)
    described, rows, _ = _names(layouts)
    frame_sets = {lay.observation.dataset for lay in layouts.values() if lay.observation.dataset}
    try:
        with h5.open_file(file) as f:
            data = _group(f, DATA_GROUP)
            if data is None:
                pr.datasets["__file__"] = "has no group data/ with demo_N groups"
                return pr
            demos = [n for n in demo_names(data) if _group(data, n) is not None]
            pr.episodes = list(range(len(demos)))
            if not demos:
                return pr
            _describe_all(data[demos[0]], file, described | frame_sets, pr)
            for k in sorted({0, len(demos) // 2, len(demos) - 1})[:SAMPLE_EPISODES]:
                group = data[demos[k]]
                sample: dict[str, np.ndarray] = {}
                for name in rows:
                    if h5.has_link(group, name):
                        try:
                            value = h5.read(group, name, file, dtype="real")
                        except FcsError:
                            continue
                        if value.ndim == 2:
                            sample[name] = value
                for name in frame_sets:
                    if h5.has_link(group, name):
                        try:
                            frames = h5.read(group, name, file, dtype="real", rows=slice(0, SAMPLE_FRAMES))
                            if frames.dtype.kind == "u" and frames.dtype != np.uint8:
                                frames = frames.astype(np.int64)
                            _frames(pr, name, torch.from_numpy(np.ascontiguousarray(frames)), {})
                        except FcsError as err:
                            pr.frames.setdefault(name, err.reason if hasattr(err, "reason") else str(err))
                pr.samples.append(sample)
    except FcsError as err:
        pr.datasets["__file__"] = str(err)
    return pr


def probe(root: str | Path, layouts: dict[str, Layout]) -> Probe:
    """Read what judging `layouts` needs from the dataset at `root` (a directory, or one HDF5 file)."""
    root = Path(root)
    if root.is_dir() and episode_dirs(root):
        return _probe_dirs(root, layouts)
    file = hdf5_file(root)
    if file is not None:
        return _probe_file(root, file, layouts)
    if root.is_dir():
        return _probe_dirs(root, layouts)
    return Probe(root, "missing", set(), [])
