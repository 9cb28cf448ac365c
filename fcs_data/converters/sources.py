"""Readers of logger datasets, one per `Layout.sources.kind`.

A source reader finds what is on disk (`scan` -> `SourceManifest` plus structural findings) and
reads one episode at a time: low-dimensional arrays for the valid steps only, and the frame tensor
memory-mapped so that a block of frames costs only its own pages. Readers report what they find;
the validator judges it and the converter brings it to the store's conventions.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from fcs_data.errors import FcsError, SourceError, UnreadableFileError, UnsafePickleError
from fcs_data.safe_io import load_pickle, load_tensor
from fcs_data.schemas import EpisodeEntry, Finding, Layout, SourceManifest

_EPISODE_DIR = re.compile(r"^\d{6}$")
_STEP_FILE = re.compile(r"^(\d+)\.h5$")


def _jsonable(obj: object) -> object:
    """Plain JSON data from unpickled metadata (numpy arrays and scalars become lists/numbers)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return repr(obj)


def file_finding(exc: BaseException, path: Path, root: Path, episode: int | None = None) -> Finding:
    """The finding for a file that could not be loaded."""
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    if isinstance(exc, UnsafePickleError):
        return Finding.make("unsafe-pickle", f"{rel}: {exc.what}; refused, nothing executed", episode=episode, file=rel)
    if isinstance(exc, FileNotFoundError):
        return Finding.make("missing-file", f"{rel} is missing", episode=episode, file=rel)
    reason = exc.reason if isinstance(exc, UnreadableFileError) else str(exc)
    return Finding.make("unreadable-file", f"{rel}: {reason}", episode=episode, file=rel)


@dataclass
class ScanResult:
    manifest: SourceManifest
    findings: list[Finding] = field(default_factory=list)


class LoggerSource(ABC):
    """One logger dataset read through its layout."""

    def __init__(self, root: str | Path, layout: Layout):
        self.root = Path(root)
        self.layout = layout
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: not a directory")

    @staticmethod
    def open(root: str | Path, layout: Layout) -> LoggerSource:
        kind = layout.sources.kind
        if kind == "global_pth":
            return GlobalPthSource(root, layout)
        if kind == "per_step_h5":
            return PerStepH5Source(root, layout)
        raise SourceError(f"no reader for source kind {kind!r}")

    # -- shared scanning ---------------------------------------------------------------------
    def _read_metadata(self, findings: list[Finding]) -> dict:
        path = self.root / "metadata.pkl"
        if not path.exists():
            return {}
        try:
            meta = load_pickle(path)
        except (FcsError, OSError) as e:
            findings.append(file_finding(e, path, self.root))
            return {}
        if not isinstance(meta, dict):
            findings.append(Finding.make("unreadable-file", f"metadata.pkl holds a {type(meta).__name__}, not a dict",
                                         file="metadata.pkl"))
            return {}
        return meta

    def _metadata_lengths(self, meta: dict, findings: list[Finding]) -> tuple[list[int] | None, str]:
        lengths = meta.get("episode_lengths")
        source = "metadata.pkl"
        if lengths is None and (self.root / "seq_lengths.pkl").exists():
            try:
                lengths = load_pickle(self.root / "seq_lengths.pkl")
                source = "seq_lengths.pkl"
            except (FcsError, OSError) as e:
                findings.append(file_finding(e, self.root / "seq_lengths.pkl", self.root))
                lengths = None
        if lengths is None:
            return None, "frames"
        try:
            return [int(x) for x in lengths], source
        except (TypeError, ValueError):
            findings.append(Finding.make("unreadable-file", f"{source}: episode lengths are not integers", file=source))
            return None, "frames"

    def _episode_dirs(self) -> dict[int, Path]:
        return {int(p.name): p for p in self.root.iterdir() if p.is_dir() and _EPISODE_DIR.match(p.name)}

    def scan(self) -> ScanResult:
        """Find episodes, lengths and files; report structural problems as findings."""
        findings: list[Finding] = []
        meta = self._read_metadata(findings)
        lengths, lengths_from = self._metadata_lengths(meta, findings)
        dirs = self._episode_dirs()
        if lengths is None:
            if (self.root / "metadata.pkl").exists() or dirs:
                findings.append(Finding.make(
                    "metadata-missing",
                    "no episode_lengths in metadata.pkl or seq_lengths.pkl; lengths are taken from the frames",
                    file="metadata.pkl",
                ))
            n = (max(dirs) + 1) if dirs else 0
        else:
            n = len(lengths)
        episodes = []
        for i in range(n):
            d = self.root / f"{i:06d}"
            length = lengths[i] if lengths is not None else None
            if i not in dirs:
                findings.append(Finding.make(
                    "missing-episode-dir", f"episode directory {d.name}/ is missing", episode=i, file=d.name
                ))
            entry = EpisodeEntry(index=i, directory=d.name, length=length)
            if d.is_dir():
                entry.files = {
                    str(p.relative_to(self.root)): p.stat().st_size for p in sorted(d.rglob("*")) if p.is_file()
                }
            episodes.append(entry)
        unlisted = sorted(p.name for i, p in dirs.items() if i >= n)
        for name in unlisted:
            findings.append(Finding.make(
                "unlisted-episode-dir",
                f"{name}/ exists but the metadata lists only {n} episodes; it will be ignored",
                episode=int(name), file=name,
            ))
        root_files = {p.name: p.stat().st_size for p in sorted(self.root.iterdir()) if p.is_file()}
        manifest = SourceManifest(
            root=str(self.root), layout=self.layout.name, episodes=episodes, unlisted_dirs=unlisted,
            root_files=root_files, metadata=_jsonable(meta), lengths_from=lengths_from,
        )
        self._scan_kind(manifest, findings)
        if not manifest.episodes:
            findings.append(Finding.make("empty-dataset", f"{self.root} holds no episodes"))
        return ScanResult(manifest, findings)

    @abstractmethod
    def _scan_kind(self, manifest: SourceManifest, findings: list[Finding]) -> None:
        """Checks specific to how this kind stores states and actions."""

    # -- per-episode reading -----------------------------------------------------------------
    def frames_path(self, episode: int) -> Path:
        return self.root / f"{episode:06d}" / self.layout.observation.file

    def open_frames(self, episode: int) -> torch.Tensor:
        """The episode's frame tensor as stored, memory-mapped when possible."""
        return load_tensor(self.frames_path(episode), mmap=True)

    @abstractmethod
    def read_lowdim(self, episode: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """`(state (T, S), action (T, A))` float32 for the first `length` steps, as logged."""

    def read_params(self, episode: int) -> dict:
        path = self.root / f"{episode:06d}" / "property_params.pkl"
        if not path.exists():
            return {}
        params = load_pickle(path)
        return _jsonable(params) if isinstance(params, dict) else {"value": _jsonable(params)}


class GlobalPthSource(LoggerSource):
    """v1 logger: `states.pth (N, T_max, S)` and `actions.pth (N, T_max, A)` at the root."""

    _states: torch.Tensor | None = None
    _actions: torch.Tensor | None = None

    def _tensor(self, name: str) -> torch.Tensor:
        return load_tensor(self.root / name, mmap=True)

    def _scan_kind(self, manifest: SourceManifest, findings: list[Finding]) -> None:
        n = manifest.num_episodes
        for name, dim, code, what in (
            (self.layout.sources.states_file, self.layout.state_dim, "state-dim", "state"),
            (self.layout.sources.actions_file, self.layout.action_dim, "action-dim", "action"),
        ):
            try:
                t = self._tensor(name)
            except (FcsError, OSError) as e:
                findings.append(file_finding(e, self.root / name, self.root))
                continue
            if t.ndim != 3:
                findings.append(Finding.make(code, f"{name} has shape {tuple(t.shape)}, expected (N, T_max, {dim})",
                                             file=name, field=what))
                continue
            if t.shape[2] != dim:
                findings.append(Finding.make(
                    code, f"{name}: {what} dimension is {t.shape[2]}, layout {self.layout.name} says {dim}",
                    file=name, field=what,
                ))
            if t.shape[0] != n:
                findings.append(Finding.make(
                    "row-count", f"{name} has {t.shape[0]} rows for {n} episodes", file=name, field=what,
                ))
            for e in manifest.episodes:
                if e.length is not None and e.length > t.shape[1]:
                    findings.append(Finding.make(
                        "length-exceeds-tmax",
                        f"metadata length {e.length} exceeds T_max {t.shape[1]} of {name}",
                        episode=e.index, file=name,
                    ))
            if not t.dtype.is_floating_point:
                findings.append(Finding.make(code, f"{name} has dtype {t.dtype}, expected float32", file=name))

    def read_lowdim(self, episode: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        if self._states is None:
            self._states = self._tensor(self.layout.sources.states_file)
            self._actions = self._tensor(self.layout.sources.actions_file)
        assert self._actions is not None
        state = self._states[episode, :length].to(torch.float32).numpy().copy()
        action = self._actions[episode, :length].to(torch.float32).numpy().copy()
        return state, action


class PerStepH5Source(LoggerSource):
    """Min logger: `NNNNNN/000.h5, 001.h5, ...`, one file per step, flattened datasets."""

    def step_files(self, episode: int) -> tuple[list[Path], list[Finding]]:
        """Step files sorted by step number, and findings about gaps, duplicates and naming."""
        d = self.root / f"{episode:06d}"
        found: dict[int, list[str]] = {}
        for p in d.iterdir() if d.is_dir() else []:
            m = _STEP_FILE.match(p.name)
            if m:
                found.setdefault(int(m.group(1)), []).append(p.name)
        findings: list[Finding] = []
        if not found:
            findings.append(Finding.make("step-files", f"{d.name}/ has no per-step .h5 files", episode=episode,
                                         file=d.name))
            return [], findings
        dupes = sorted(s for s, names in found.items() if len(names) > 1)
        if dupes:
            examples = ", ".join("/".join(sorted(found[s])) for s in dupes[:3])
            findings.append(Finding.make(
                "step-files", f"steps named twice with different zero padding ({examples})",
                episode=episode, file=d.name, steps=dupes,
            ))
        width = min(len(n) - 3 for names in found.values() for n in names)
        misnamed = sorted(s for s, names in found.items() for n in names if n != f"{s:0{width}d}.h5")
        if misnamed:
            findings.append(Finding.make(
                "step-files",
                f"step files mix name widths (e.g. {found[misnamed[0]][0]} next to {width}-digit names); "
                "a reader that assumes one width silently skips steps",
                episode=episode, file=d.name, steps=misnamed,
                hint="rename to one width, e.g. 000.h5, 001.h5, ...",
            ))
        last = max(found)
        missing = sorted(set(range(last + 1)) - set(found))
        if missing:
            findings.append(Finding.make(
                "step-files", f"{len(missing)} step files missing between 0 and {last}",
                episode=episode, file=d.name, steps=missing,
            ))
        return [d / sorted(found[s])[0] for s in sorted(found)], findings

    def _scan_kind(self, manifest: SourceManifest, findings: list[Finding]) -> None:
        for e in manifest.episodes:
            files, _ = self.step_files(e.index) if (self.root / e.directory).is_dir() else ([], [])
            e.step_files = [p.name for p in files]

    def read_lowdim(self, episode: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        files, problems = self.step_files(episode)
        if problems:
            raise SourceError(f"episode {episode}: {problems[0].message}")
        if len(files) < length:
            raise SourceError(f"episode {episode}: {len(files)} step files for {length} steps")
        src = self.layout.sources
        states, actions = [], []
        for p in files[:length]:
            try:
                with h5py.File(p, "r") as f:
                    for name in (src.state_dataset, src.action_dataset):
                        if name not in f:
                            raise UnreadableFileError(p, f"dataset {name!r} is missing")
                    states.append(np.asarray(f[src.state_dataset], dtype=np.float32).reshape(-1))
                    actions.append(np.asarray(f[src.action_dataset], dtype=np.float32).reshape(-1))
            except OSError as e:
                raise UnreadableFileError(p, str(e)) from e
        return np.stack(states), np.stack(actions)
