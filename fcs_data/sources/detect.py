"""`fcs layouts detect DATASET`: which built-in layout (and which of its variants) a dataset is in.

The dataset is probed once (`probe`), then every combination of a built-in layout and its variants
is judged:

- structurally, by what the layout declares: files, step-file digits, the datasets it reads with their
  shapes and dtypes, required and excluded datasets, frame shape and dtype, further cameras;
- by content, where the data can tell: whether the frames are the logged colour copy or a fusion of
  two cameras, the action alignment (segment actions against the EE positions observed), the
  quaternion order (a stacking gripper points down), and the channel order, but only against a copy
  written by an independent code path (`Observation.color_independent`). The loggers pass the frames
  and their per-step copy through one conversion, so their agreement says nothing about RGB and BGR.

What the data cannot tell is the layout's default, and detection says it assumed it. No match is a
`DetectionError` listing each built-in layout's first mismatch; two matches are one listing both.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcs_data.errors import DetectionError
from fcs_data.schemas import Layout
from fcs_data.schemas.layout import QUATERNION_KINDS, builtin_layouts
from fcs_data.sources.conventions import fuse_cameras
from fcs_data.sources.evidence import SEGMENT_TOL, channel_evidence, quaternion_evidence, same_picture
from fcs_data.sources.h5 import dtype_ok, shape_ok, shape_text
from fcs_data.sources.naming import display_name, episode_dir_name, step_file_name
from fcs_data.sources.probe import Probe, probe


@dataclass
class Detection:
    layout: Layout
    evidence: list[str]
    assumed: list[str]

    @property
    def lines(self) -> list[str]:
        """The evidence and the assumptions, one line each (`assumed: ...` for the latter)."""
        return [*self.evidence, *(f"assumed: {a}" for a in self.assumed)]


# -- judging one layout: structure ---------------------------------------------------------------------
def _dataset_problem(pr: Probe, name: str, shape: tuple[int, ...], dtype: str, where: str) -> str | None:
    found = pr.datasets.get(name) if pr.present.get(name) else None
    if found is None:
        return f"needs {name} in {where} (absent)"
    if isinstance(found, str):
        return f"{name} {found}"
    got_shape, got_dtype = found
    if not shape_ok(got_shape, shape):
        return f"{name} has shape {shape_text(got_shape)}, the layout says {shape_text(shape)}"
    if not dtype_ok(np.dtype(got_dtype), dtype):
        return f"{name} is {got_dtype}, the layout says {dtype}"
    return None


def _frames_problem(layout: Layout, pr: Probe) -> str | None:
    obs = layout.observation
    name = obs.dataset or obs.file
    frames = pr.frames.get(name)
    if frames is None:
        where = f"{episode_dir_name(pr.episodes[0])}/" if pr.kind == "dirs" else "the first demo"
        return f"needs {name} in each episode (none found in {where})"
    if isinstance(frames, str):
        return f"{name} {frames}"
    shape, dtype, vmax = frames
    if dtype != obs.dtype:
        return f"{name} is {dtype}, the layout says {obs.dtype}"
    if shape != obs.shape:
        return f"{name} frames are {shape}, the layout says {obs.shape}"
    if dtype.startswith("float") and vmax <= 1.0:
        return f"{name} floats look normalised to 0..1 (max {vmax:.3g}), the layout says 0..255"
    return None


def _structure(layout: Layout, pr: Probe) -> str | None:
    """None when the layout's files, names and shapes fit the probe, else the first mismatch in words."""
    src = layout.sources
    if src.kind == "robomimic_hdf5":
        if pr.kind != "file":
            return "needs one HDF5 file with data/demo_N groups (Isaac Lab / robomimic)"
        if "__file__" in pr.datasets:
            return f"{pr.file.name if pr.file else pr.root}: {pr.datasets['__file__']}"
        if not pr.episodes:
            return "the HDF5 file holds no demo groups (data/demo_N)"
    elif pr.kind != "dirs" or not pr.episodes:
        return "no episode directories (000000/, ...)"
    if src.kind == "global_pth":
        for name, dim in ((src.states_file, layout.state_dim), (src.actions_file, layout.action_dim)):
            found = pr.datasets.get(name)
            if found is None:
                return f"needs {name} at the root (missing)"
            if isinstance(found, str):
                return f"{name} {found}"
            if len(found[0]) != 3 or found[0][-1] != dim:
                return f"{name} has shape {found[0]}, the layout says (N, T_max, {dim})"
        return _frames_problem(layout, pr)
    problem = _frames_problem(layout, pr)
    if problem:
        return problem
    if src.kind == "per_step_h5":
        if not pr.step_digits:
            return "needs per-step .h5 files in each episode (none found)"
        if src.step_digits and pr.step_digits != {src.step_digits}:
            return (f"step files are named with {'/'.join(map(str, sorted(pr.step_digits)))} digits, the layout says "
                    f"{src.step_digits} ({step_file_name(0, src.step_digits)}, ...)")
        if "__step_file__" in pr.datasets:
            return str(pr.datasets["__step_file__"])
        where, wanted = "each step file", layout.step_datasets
    else:
        where, wanted = "each demo", {name: ((-1, *shape), dtype) for name, (shape, dtype) in layout.demo_datasets.items()}
    for name in src.requires:
        if not pr.present.get(name):
            return f"needs {name} in {where} (absent)"
    for name in src.excludes:
        if pr.present.get(name):
            return f"{where} holds {name}, which this layout's logger does not write"
    for name, (shape, dtype) in wanted.items():
        problem = _dataset_problem(pr, name, shape, dtype, where)
        if problem:
            return problem
    return None


# -- judging one layout: content ----------------------------------------------------------------------
def _verdict(values: list[str | None]) -> str | None:
    """pass / fail over the sampled episodes (None: the data cannot tell)."""
    told = [v for v in values if v is not None]
    if not told:
        return None
    return "fail" if "fail" in told else "pass"


def _frames_and(s: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    frames, other = s.get("obses"), s.get(name)
    if frames is None or other is None or len(frames) != len(other) or frames.shape[1:] != shape:
        return None
    return (frames, other) if other.shape[1:] == shape else None


def _picture(layout: Layout, pr: Probe) -> dict[str, tuple[str | None, str]]:
    """The frames against the logged colour copy (same picture? channel order if independent) or a fusion."""
    obs, out = layout.observation, {}
    if obs.fused is not None and len(obs.fused_from) == 2:
        votes, words = [], ""
        for s in pr.samples:
            a, b = _frames_and(s, obs.fused_from[0], obs.shape), _frames_and(s, obs.fused_from[1], obs.shape)
            if a is None or b is None:
                continue
            mad = float(np.abs(a[0].astype(np.float32) - fuse_cameras(a[1], b[1], obs.fused)).mean())
            votes.append("pass" if mad < 1.0 else "fail")
            words = (f"frames {'equal' if mad < 1.0 else 'differ from'} the {obs.fused} fusion of "
                     f"{' and '.join(obs.fused_from)} (difference {mad:.2f})")
        out["cameras"] = (_verdict(votes), words)
    elif obs.color_dataset:
        votes, order_votes, words, order_words = [], [], "", ""
        for s in pr.samples:
            pair = _frames_and(s, obs.color_dataset, obs.shape)
            if pair is None:
                continue
            if obs.color_independent:
                rgb = pair[0][..., ::-1] if obs.channel_order == "BGR" else pair[0]
                verdict, same, swapped = channel_evidence(rgb, pair[1])
                order_votes.append({"same": "pass", "swapped": "fail"}.get(verdict or ""))
                votes.append("pass" if verdict is not None else "fail")
                order_words = (f"frames read as {obs.channel_order} {'match' if verdict == 'same' else 'do not match'} "
                               f"{obs.color_dataset}, written independently (difference {same:.1f}, {swapped:.1f} "
                               "with channels reversed)")
            else:
                same, mad = same_picture(pair[0], pair[1])
                votes.append("pass" if same else "fail")
            words = f"frames are the logger's own {obs.color_dataset} copy" + (
                "" if votes[-1] == "pass" else " (they differ: fused by the logger?)")
        out["cameras"] = (_verdict(votes), words)
        if obs.color_independent:
            out["channel_order"] = (_verdict(order_votes), order_words)
    return out


def _alignment(layout: Layout, pr: Probe) -> tuple[str | None, str] | None:
    start = next((f for f in layout.action if f.kind == "position_start"), None)
    src = layout.sources
    if start is None or src.kind != "per_step_h5" or start.of is None:
        return None
    end = next((f for f in layout.action if f.kind == "position_end" and f.of == start.of), None)
    pos_slice = layout.state_field(start.of).slice
    votes = []
    for s in pr.samples:
        state, action = s.get(src.state_dataset or ""), s.get(src.action_dataset or "")
        if (state is None or action is None or end is None or len(state) < 3 or state.shape[1] != layout.state_dim
                or action.shape[1] != layout.action_dim):
            continue
        pos = state[:, pos_slice]
        fwd = float(np.median(np.linalg.norm(action[:, start.slice] - pos, axis=1)))
        bwd = float(np.median(np.linalg.norm(action[:, end.slice] - pos, axis=1)))
        declared, other = (fwd, bwd) if layout.action_alignment == "forward" else (bwd, fwd)
        votes.append("pass" if declared <= SEGMENT_TOL else "fail" if other <= SEGMENT_TOL else None)
    where = "start" if layout.action_alignment == "forward" else "end"
    return _verdict(votes), f"each action's {where} is the EE position observed at its step ({layout.action_alignment})"


def _quaternion(layout: Layout, pr: Probe) -> tuple[str | None, str] | None:
    quats = [f for f in layout.state if f.kind in QUATERNION_KINDS]
    src = layout.sources
    if not quats or src.kind == "global_pth":
        return None
    f = quats[0]
    votes = []
    for s in pr.samples:
        if src.kind == "per_step_h5":
            state = s.get(src.state_dataset or "")
        else:
            parts = [s.get(name) for name in src.state_datasets]
            state = np.concatenate(parts, axis=1) if all(p is not None for p in parts) and parts else None
        if state is None or state.ndim != 2 or state.shape[1] != layout.state_dim or not np.isfinite(state).all():
            continue
        verdict, _, _ = quaternion_evidence(state[:, f.slice], f.kind.removeprefix("quaternion_"))
        votes.append({"same": "pass", "swapped": "fail"}.get(verdict or ""))
    return _verdict(votes), f"quaternions read as {f.unit} point the gripper down"


def _content(layout: Layout, pr: Probe) -> dict[str, tuple[str | None, str]]:
    """Per variant group: (pass / fail / None, evidence in words)."""
    out = _picture(layout, pr)
    for group, judged in (("alignment", _alignment(layout, pr)), ("quaternion", _quaternion(layout, pr))):
        if judged is not None:
            out[group] = judged
    return out


def _channel_assumption(layout: Layout) -> str | None:
    obs = layout.observation
    if obs.fused is not None or obs.color_independent:
        return None
    why = (f"{obs.file} and {obs.color_dataset} pass through one conversion, so they cannot tell"
           if obs.color_dataset else "nothing in the data tells RGB from BGR")
    return (f"channel_order {obs.channel_order}, the layout's declared order ({why}); fcs layouts preview shows "
            "the frames, --layout declares another order")


def _combinations(layout: Layout) -> list[tuple[str, ...]]:
    groups: dict[str, list[str]] = {}
    for name, v in layout.variants.items():
        groups.setdefault(v.group, []).append(name)
    options = [[None, *names] for names in groups.values()]
    return [tuple(n for n in combo if n is not None) for combo in itertools.product(*options)]


def _name_hints(root: Path) -> str | None:
    """The camera variant the users' folder names announce (`..._NCams2_FuseSbS_...`)."""
    fuse = re.search(r"_Fuse(ChStack|SbS|Alpha)", root.name)
    if fuse:
        return {"ChStack": "chstack", "SbS": "sbs", "Alpha": "alpha"}[fuse.group(1)]
    return "cams2" if re.search(r"_NCams2", root.name) else None


def detect_layout(root: str | Path, layouts: dict[str, Layout] | None = None) -> Detection:
    """The built-in layout (with variants) the dataset at `root` is in; `DetectionError` otherwise."""
    layouts = layouts or builtin_layouts()
    pr = probe(root, layouts)
    matches: list[tuple[Layout, dict[str, tuple[str | None, str]]]] = []
    mismatches: dict[str, str] = {}
    hint = _name_hints(pr.root)
    for base in layouts.values():
        fits, reasons = [], []
        for combo in _combinations(base):
            candidate = base.with_variants(list(combo)) if combo else base
            problem = _structure(candidate, pr)
            if problem is not None:
                reasons.append(problem)
                continue
            content = _content(candidate, pr)
            failed = [w for v, w in content.values() if v == "fail"]
            if failed:
                reasons.append(failed[0])
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
    where = display_name(pr.root)
    if pr.kind == "missing":
        raise DetectionError(f"{where}: no such file or directory", where, mismatches)
    if not matches:
        lines = "; ".join(f"{name}: {why}" for name, why in mismatches.items())
        raise DetectionError(f"{where}: no built-in layout matches ({lines}); write a layout file and pass --layout "
                             "(fcs layouts show NAME prints one to start from)", where, mismatches)
    if len(matches) > 1:
        names = [m.name for m, _ in matches]
        raise DetectionError(f"{where}: ambiguous, it matches {', '.join(names)}; pass --layout with the right one",
                             where, mismatches, names)
    layout, content = matches[0]
    evidence = [_summary(layout, pr)] + [words for v, words in content.values() if v == "pass"]
    assumed = [f"{group}: the data cannot tell; assumed the layout's default"
               for group, (v, _) in content.items() if v is None]
    channel = _channel_assumption(layout)
    if channel:
        assumed.append(channel)
    if hint and hint not in layout.name.split("+"):
        assumed.append(f"the folder name announces {hint!r}, the data says otherwise")
    return Detection(layout, evidence, assumed)


def _summary(layout: Layout, pr: Probe) -> str:
    obs = layout.observation
    name = obs.dataset or obs.file
    frames = pr.frames[name]
    assert not isinstance(frames, str)
    shape, dtype, vmax = frames
    what = "demos" if pr.kind == "file" else "episodes"
    parts = [f"{len(pr.episodes)} {what}", f"{name} {dtype} {shape} (max {vmax:.0f})"]
    src = layout.sources
    if src.kind == "global_pth":
        parts.append(f"{src.states_file} {pr.datasets[src.states_file][0]}")
        return ", ".join(parts)
    if src.kind == "per_step_h5":
        digits = next(iter(pr.step_digits))
        parts.append(f"step files {step_file_name(0, digits)}, {step_file_name(1, digits)}, ...")
        names = [src.state_dataset, src.action_dataset, src.frame_index_dataset]
    else:
        names = [src.action_dataset, *src.state_datasets]
    for n in names:
        found = pr.datasets.get(n) if n else None
        if n and found is not None and not isinstance(found, str):
            parts.append(f"{n} {found[0]} {found[1]}")
    return ", ".join(parts)
