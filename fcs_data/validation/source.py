"""Validation of a logger dataset: structure first, then each episode's frames and arrays."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fcs_data._pool import WorkerPool
from fcs_data.errors import FcsError, SourceError
from fcs_data.schemas import Finding, Layout, ValidationReport
from fcs_data.sources import LoggerSource, open_source
from fcs_data.sources.conventions import conversion_notes
from fcs_data.sources.evidence import channel_evidence
from fcs_data.validation import checks
from fcs_data.window_index import windows_per_episode

FRAME_BLOCK = 64
PARALLEL_MIN_PER_WORKER = 8  # below this a worker's start-up (importing torch) costs more than it saves
_LOWDIM_FILE_CODES = {"state-dim", "action-dim", "row-count", "missing-file", "unreadable-file", "unsafe-pickle"}


@dataclass
class EpisodeResult:
    index: int
    length: int | None = None  # valid steps usable downstream (None: unusable)
    findings: list[Finding] = field(default_factory=list)


def _obs_shape_findings(layout: Layout, episode: int, rel: str, frames: torch.Tensor) -> list[Finding]:
    obs = layout.observation
    shape = tuple(frames.shape)
    if frames.ndim != 4:
        return [Finding.make("obs-rank", f"{rel} has shape {shape}, expected (T, {obs.height}, {obs.width}, 3)",
                             episode=episode, file=rel, field="obs")]
    out = []
    if shape[3] != obs.channels and shape[1] == obs.channels:
        out.append(Finding.make("obs-channel-position",
                                f"{rel} has shape {shape}: channels first; the layout stores (T, H, W, C)",
                                episode=episode, file=rel, field="obs", hint="permute(0, 2, 3, 1) before saving"))
    elif shape[1:] != obs.shape:
        out.append(Finding.make("obs-resolution", f"{rel} frames are {shape[1:]}, layout {layout.name} says {obs.shape}",
                                episode=episode, file=rel, field="obs"))
    dtype = str(frames.dtype).removeprefix("torch.")
    if dtype != obs.dtype:
        hint = None
        if frames.dtype.is_floating_point and frames.ndim == 4 and len(frames):
            hint = ("frames look normalised to 0..1; store uint8 0..255" if float(frames[0].max()) <= 1.0 else
                    "float 0..255 frames: describe them in a layout with dtype float32 (as franka_cube_stack_min); "
                    "the converter stores them as uint8")
        out.append(Finding.make("obs-dtype", f"{rel} has dtype {dtype}, layout {layout.name} says {obs.dtype}",
                                episode=episode, file=rel, field="obs", hint=hint))
    return out


def check_episode(root: str, layout_json: str, index: int, length: int | None, lowdim_ok: bool) -> EpisodeResult:
    """All findings of one episode. Runs in a worker process; memory is one block of frames."""
    layout = Layout.model_validate_json(layout_json)
    src = open_source(root, layout)
    i = index
    res = EpisodeResult(i)
    if not src.has_episode(i):
        return res  # reported by the scan
    try:
        src.read_params(i)  # the converter opens it with the same safe loader
    except (FcsError, OSError) as e:
        res.findings.append(src.finding(e, i, src.params_path(i)))
    rel = src.frames_label(i)
    try:
        frames = src.open_frames(i)
    except (FcsError, OSError) as e:
        res.findings.append(src.finding(e, i, src.frames_path(i)))
        return res
    shape_problems = _obs_shape_findings(layout, i, rel, frames)
    res.findings += shape_problems
    n_frames = int(frames.shape[0]) if frames.ndim >= 1 else 0
    usable = length if length is not None else n_frames
    if length is not None and length != n_frames:
        res.findings.append(Finding.make(
            "length-mismatch", f"metadata says {length} steps, {rel} holds {n_frames} frames",
            episode=i, file=rel, data={"metadata": length, "frames": n_frames},
        ))
        usable = min(usable, n_frames)
    step_problems, served = src.step_findings(i, n_frames)
    res.findings += step_problems
    usable = min(usable, served)  # 0 when the step files cannot be trusted

    state = action = None
    if lowdim_ok and usable > 0:
        try:
            steps = src.read_steps(i, usable)
            state, action = steps.state, steps.action
            res.findings += _step_field_findings(layout, i, steps.fields, src.episode_label(i))
        except (FcsError, OSError) as e:
            res.findings.append(src.finding(e, i))
        if state is not None and action is not None:
            dims_ok = True
            for arr, dim, code, what in ((state, layout.state_dim, "state-dim", "state"),
                                         (action, layout.action_dim, "action-dim", "action")):
                if arr.shape != (usable, dim):
                    dims_ok = False
                    res.findings.append(Finding.make(
                        code, f"{what} has {arr.shape[1:]} values per step, layout {layout.name} says {dim}",
                        episode=i, field=what, file=src.episode_label(i),
                    ))
            if dims_ok:
                res.findings += checks.lowdim(layout, i, state, action)
            else:
                state = action = None

    if state is not None and not shape_problems:
        res.findings += _channel_findings(src, layout, i, frames, usable)

    if not shape_problems and usable > 0:
        moving = np.zeros(usable, bool)
        if state is not None:
            moving[1:] = (np.abs(np.diff(state, axis=0)) > 1e-7).any(axis=1)
        scan = checks.FrameScan(moving, integral=frames.dtype.is_floating_point)
        for start in range(0, usable, FRAME_BLOCK):
            scan.update(start, frames[start : min(start + FRAME_BLOCK, usable)].numpy())
        res.findings += scan.findings(i, rel)
    del frames
    if not any(f.severity == "error" for f in res.findings):
        res.length = usable
    return res


def _step_field_findings(layout: Layout, episode: int, fields: dict[str, np.ndarray], directory: str) -> list[Finding]:
    out = []
    index = fields.get("frame_index")
    if index is not None and len(index) > 1 and np.any(np.diff(index) <= 0):
        bad = (np.flatnonzero(np.diff(index) <= 0) + 1).tolist()
        out.append(Finding.make(
            "frame-index", f"{layout.sources.frame_index_dataset} does not increase at {checks.plural(len(bad), 'step')} "
            f"(e.g. {int(index[bad[0] - 1])} then {int(index[bad[0]])})", episode=episode, file=directory,
            field="frame_index", steps=bad, hint="keyframes must be in the order they were recorded"))
    return out


def _channel_findings(src: LoggerSource, layout: Layout, episode: int, frames, length: int) -> list[Finding]:
    """The frames' channel order against a colour copy written by an independent code path (only
    layouts that declare one: `Observation.color_independent`)."""
    obs = layout.observation
    if obs.color_dataset is None or obs.fused is not None or not obs.color_independent:
        return []
    steps = sorted({0, length // 2, length - 1})
    try:
        colors = src.color_copy(episode, steps)
    except (FcsError, OSError) as e:
        return [src.finding(e, episode)]
    if colors is None or colors.shape[1:] != obs.shape:
        return []
    logged = frames[torch.as_tensor(steps)].numpy()
    rgb = logged[..., ::-1] if obs.channel_order == "BGR" else logged
    verdict, same, swapped = channel_evidence(rgb, colors)
    if verdict != "swapped":
        return []
    actual = "RGB" if obs.channel_order == "BGR" else "BGR"
    return [Finding.make(
        "channel-order",
        f"{obs.file} read as {obs.channel_order} differs from {obs.color_dataset} (written independently) by "
        f"{same:.1f} (mean absolute, 0..255) and matches it with the channels reversed ({swapped:.1f}): the frames "
        f"are {actual}",
        episode=episode, field="obs", steps=steps,
        hint=f"declare channel_order {actual} in the layout", data={"declared_difference": same,
                                                                  "reversed_difference": swapped})]


def _capacity(lengths: list[int]) -> list[Finding]:
    if not lengths:
        return []
    arr = np.asarray(lengths)
    t_all, t_90 = int(arr.min()), int(np.quantile(arr, 0.1, method="lower"))
    out = []
    for fs in range(1, 6):
        parts, data = [], {"frameskip": fs}
        for label, t in (("every episode", t_all), ("90 % of episodes", t_90)):
            num_hist = t // fs - 1  # num_pred = 1
            key = "all" if label == "every episode" else "p90"
            if num_hist < 1:
                parts.append(f"{label}: none (shortest {t} steps)")
                data[f"num_hist_{key}"] = 0
                data[f"windows_{key}"] = 0
                continue
            windows = int(windows_per_episode(arr, num_hist + 1, fs).sum())
            parts.append(f"{label}: num_hist <= {num_hist} ({windows:,} windows)")
            data[f"num_hist_{key}"] = num_hist
            data[f"windows_{key}"] = windows
        out.append(Finding.make("window-capacity", f"frameskip {fs}: " + "; ".join(parts), data=data))
    return out


def _conversion_notes(layout: Layout) -> list[Finding]:
    notes = conversion_notes(layout)
    return [Finding.make("conversion", "the converter will convert: " + "; ".join(notes))] if notes else []


def validate_source(
    path: str | Path,
    layout: Layout,
    *,
    episodes: list[int] | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    pool: WorkerPool | None = None,
) -> ValidationReport:
    """Check a logger dataset against `layout`; never raises for problems in the data.

    Episodes are checked in `pool` (or a pool of `workers` processes made for the call).
    """
    t0 = time.perf_counter()
    report = ValidationReport(path=str(path), kind="source", layout=layout.name)
    try:
        src = open_source(path, layout)
    except SourceError as e:
        report.add(Finding.make("missing-file", str(e), file=str(path)))
        return report
    scan = src.scan()
    for f in scan.findings:
        report.add(f)
    manifest = scan.manifest
    report.num_episodes = manifest.num_episodes
    lowdim_ok = not any(
        f.code in _LOWDIM_FILE_CODES and f.episode is None and f.file in (layout.sources.states_file,
                                                                            layout.sources.actions_file)
        for f in scan.findings
    ) or layout.sources.kind != "global_pth"
    selected = manifest.episodes
    if episodes is not None:
        wanted = set(episodes)
        unknown = sorted(wanted - {e.index for e in manifest.episodes})
        if unknown:
            raise LookupError(f"episodes {unknown} are not in {path} ({manifest.num_episodes} episodes)")
        selected = [e for e in manifest.episodes if e.index in wanted]
    report.episodes_checked = [e.index for e in selected]
    layout_json = layout.model_dump_json()
    args = [(str(src.root), layout_json, e.index, e.length, lowdim_ok) for e in selected]
    own_pool = pool is None
    pool = pool or WorkerPool(workers)
    results = []
    try:
        parallel = len(args) >= 2 * PARALLEL_MIN_PER_WORKER
        for r in pool.map(check_episode, *zip(*args, strict=True), parallel=parallel) if args else []:
            results.append(r)
            if progress:
                progress(len(results), len(args))
    finally:
        if own_pool:
            pool.close()
    lengths = []
    for r in results:
        for f in r.findings:
            report.add(f)
        if r.length is not None:
            lengths.append(r.length)
            report.episode_lengths[r.index] = r.length
    report.num_frames = int(sum(lengths))
    for f in _capacity(lengths) + _conversion_notes(layout):
        report.add(f)
    report.elapsed_s = time.perf_counter() - t0
    return report
