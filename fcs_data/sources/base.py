"""`LoggerSource`: what every logger-format reader shares (scanning, metadata, frames, params)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fcs_data.errors import FcsError, SourceError, UnreadableFileError, UnsafePickleError
from fcs_data.safe_io import load_pickle, load_tensor
from fcs_data.schemas import EpisodeEntry, Finding, Layout, SourceManifest
from fcs_data.schemas.layout import Camera

_EPISODE_DIR = re.compile(r"^\d{6}$")


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
class StepArrays:
    """One episode's valid steps as logged: `state (T, S)`, `action (T, A)` float32, and per-step fields
    the layout keeps (`frame_index (T,)` int64 for keyframe loggers)."""

    state: np.ndarray
    action: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)


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
    def read_steps(self, episode: int, length: int) -> StepArrays:
        """State, action and per-step fields of the first `length` steps, as logged."""

    def read_camera(self, episode: int, camera: Camera, start: int, stop: int) -> np.ndarray:
        """Frames `[start, stop)` of a further camera of the layout, `(n, h, w, 3)` as logged."""
        raise SourceError(f"{self.root}: {type(self).__name__} has no further cameras")

    def params_path(self, episode: int) -> Path:
        return self.root / f"{episode:06d}" / "property_params.pkl"

    def read_params(self, episode: int) -> dict:
        """`property_params.pkl` as JSON-safe data ({} when absent), through the plain-data unpickler."""
        path = self.params_path(episode)
        if not path.exists():
            return {}
        params = load_pickle(path)
        return _jsonable(params) if isinstance(params, dict) else {"value": _jsonable(params)}
