"""`LoggerSource`: what every logger-format reader offers validation, detection and conversion.

A reader knows where an episode lives (a directory `NNNNNN/`, or a demo group of one HDF5 file),
reads its frames, its states and actions for the valid steps, its further cameras and its
parameters, and says what it holds on disk (for fingerprints and hashes). Every read checks what it
reads; a surprise is an `FcsError` naming the file (and dataset), which `finding` turns into a
validation finding.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fcs_data.errors import DatasetError, FcsError, UnreadableFileError, UnsafePickleError
from fcs_data.schemas import Finding, Layout, SourceManifest
from fcs_data.schemas.layout import Camera
from fcs_data.sources.naming import display_name


def jsonable(obj: object) -> object:
    """Plain JSON data from unpickled metadata (numpy arrays and scalars become lists/numbers)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, str):
        return display_name(obj) if any(0xDC80 <= ord(c) <= 0xDCFF for c in obj) else obj
    if isinstance(obj, float | int | bool) or obj is None:
        return obj
    return repr(obj)


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root` (a dataset directory, or the one file of a single-file source), printable."""
    base = root if root.is_dir() else root.parent
    rel = path.relative_to(base) if path.is_relative_to(base) else path
    return display_name(rel)


def file_finding(exc: BaseException, path: Path, root: Path, episode: int | None = None) -> Finding:
    """The finding for a file (or a dataset in it) that could not be loaded."""
    rel = relative(path, root)
    if isinstance(exc, UnsafePickleError):
        return Finding.make("unsafe-pickle", f"{rel}: {exc.what}; refused, nothing executed", episode=episode, file=rel)
    if isinstance(exc, FileNotFoundError):
        return Finding.make("missing-file", f"{rel} is missing", episode=episode, file=rel)
    if isinstance(exc, DatasetError):
        return Finding.make("bad-dataset", f"{rel}: {exc.reason}", episode=episode, file=rel, field=exc.dataset)
    reason = exc.reason if isinstance(exc, UnreadableFileError) else str(exc)
    return Finding.make("unreadable-file", f"{rel}: {display_name(reason)}", episode=episode, file=rel)


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

    # -- what is on disk -------------------------------------------------------------------------
    @abstractmethod
    def scan(self) -> ScanResult:
        """Find episodes, lengths and files; report structural problems as findings."""

    @abstractmethod
    def has_episode(self, episode: int) -> bool:
        """Whether the episode's directory (or demo group) exists."""

    @abstractmethod
    def episode_label(self, episode: int) -> str:
        """Where the episode lives, as a user reads it: `000003` or `data/demo_3`."""

    @abstractmethod
    def frames_label(self, episode: int) -> str:
        """The episode's frames, as a user reads it: `000003/obses.pth`."""

    def frames_path(self, episode: int) -> Path:
        """The file the episode's frames are in."""
        return self.root

    def root_files(self) -> dict[str, int]:
        """Files at the dataset root -> `mtime_ns ^ size` (what a resume fingerprint depends on)."""
        return {display_name(p.name): p.stat().st_mtime_ns ^ p.stat().st_size
                for p in sorted(self.root.iterdir()) if p.is_file()} if self.root.is_dir() else {}

    @abstractmethod
    def episode_files(self, episode: int) -> dict[str, int]:
        """The episode's files (or datasets) -> a stamp that changes when they change."""

    @abstractmethod
    def episode_bytes(self, episode: int) -> int:
        """Bytes the episode takes on disk."""

    @abstractmethod
    def episode_digest(self, episode: int, h: hashlib._Hash) -> None:
        """Feed everything the episode holds on disk into `h` (the store's per-episode content hash)."""

    def step_findings(self, episode: int, n_frames: int) -> tuple[list[Finding], int]:
        """Findings about the episode's per-step files (naming, gaps, counts) and how many steps they
        can serve; sources without per-step files have none."""
        return [], n_frames

    # -- per-episode reading ---------------------------------------------------------------------
    @abstractmethod
    def open_frames(self, episode: int) -> torch.Tensor:
        """The episode's frame tensor as stored `(T, H, W, C)`, memory-mapped when possible."""

    @abstractmethod
    def read_steps(self, episode: int, length: int) -> StepArrays:
        """State, action and per-step fields of the first `length` steps, as logged."""

    def read_camera(self, episode: int, camera: Camera, start: int, stop: int) -> np.ndarray:
        """Frames `[start, stop)` of a further camera of the layout, `(n, h, w, 3)` as logged."""
        raise FcsError(f"{self.root}: {type(self).__name__} has no further cameras")

    def color_copy(self, episode: int, steps: list[int]) -> np.ndarray | None:
        """The logged copy of the observation camera's frames at `steps`, `(n, H, W, 3)`, None when the
        layout names none."""
        return None

    def fused_sources(self, episode: int, steps: list[int]) -> list[np.ndarray]:
        """The frames of the cameras the logger fused, each `(n, H, W, 3)` at `steps` (empty when none)."""
        return []

    @abstractmethod
    def read_params(self, episode: int) -> dict:
        """The episode's parameters as JSON-safe data ({} when there are none)."""

    @abstractmethod
    def params_path(self, episode: int) -> Path:
        """The file the parameters come from (for findings)."""

    def finding(self, exc: BaseException, episode: int | None, fallback: Path | None = None) -> Finding:
        """The finding for an error raised while reading `episode`: the file it names, or `fallback`."""
        path = getattr(exc, "path", None) or getattr(exc, "filename", None)
        if path:
            return file_finding(exc, Path(path), self.root, episode=episode)
        if fallback is not None:
            return file_finding(exc, fallback, self.root, episode=episode)
        label = self.episode_label(episode) if episode is not None else None
        return Finding.make("unreadable-file", display_name(str(exc)), episode=episode, file=label)
