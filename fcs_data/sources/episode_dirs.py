"""`EpisodeDirSource`: the Isaac Sim loggers' shared layout, one directory `NNNNNN/` per episode.

Episode lengths come from `metadata.pkl` (`episode_lengths`) or `seq_lengths.pkl` when the logger
writes them (`Sources.metadata: written`, the v1 logger), otherwise from the frames; a missing
metadata file is a warning only for a logger that writes one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from fcs_data.errors import FcsError, SourceError
from fcs_data.safe_io import load_pickle, load_tensor
from fcs_data.schemas import EpisodeEntry, Finding, SourceManifest
from fcs_data.sources.base import LoggerSource, ScanResult, file_finding, jsonable
from fcs_data.sources.naming import display_name, episode_dir_name, episode_dirs, name_bytes

METADATA_FILE = "metadata.pkl"
SEQ_LENGTHS_FILE = "seq_lengths.pkl"
PARAMS_FILE = "property_params.pkl"


class EpisodeDirSource(LoggerSource):
    """A dataset directory with `metadata.pkl` (optional) and one `NNNNNN/` directory per episode."""

    def __init__(self, root: str | Path, layout) -> None:
        super().__init__(root, layout)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: not a directory")

    # -- metadata ---------------------------------------------------------------------------------
    def _read_metadata(self, findings: list[Finding]) -> dict:
        path = self.root / METADATA_FILE
        if not path.exists():
            return {}
        try:
            meta = load_pickle(path)
        except (FcsError, OSError) as e:
            findings.append(file_finding(e, path, self.root))
            return {}
        if not isinstance(meta, dict):
            findings.append(Finding.make("unreadable-file", f"{METADATA_FILE} holds a {type(meta).__name__}, not a dict",
                                         file=METADATA_FILE))
            return {}
        return meta

    def _metadata_lengths(self, meta: dict, findings: list[Finding]) -> tuple[list[int] | None, str]:
        lengths = meta.get("episode_lengths")
        source = METADATA_FILE
        if lengths is None and (self.root / SEQ_LENGTHS_FILE).exists():
            try:
                lengths = load_pickle(self.root / SEQ_LENGTHS_FILE)
                source = SEQ_LENGTHS_FILE
            except (FcsError, OSError) as e:
                findings.append(file_finding(e, self.root / SEQ_LENGTHS_FILE, self.root))
                lengths = None
        if lengths is None:
            return None, "frames"
        try:
            if isinstance(lengths, str | bytes | dict):
                raise TypeError
            out = [int(x) for x in lengths]
            if any(x < 0 for x in out):
                raise ValueError
            return out, source
        except (TypeError, ValueError, OverflowError):
            findings.append(Finding.make("unreadable-file", f"{source}: episode lengths are not non-negative integers",
                                         file=source))
            return None, "frames"

    # -- scanning ---------------------------------------------------------------------------------
    def scan(self) -> ScanResult:
        findings: list[Finding] = []
        meta = self._read_metadata(findings)
        lengths, lengths_from = self._metadata_lengths(meta, findings)
        dirs = episode_dirs(self.root)
        if lengths is None:
            if self.layout.sources.metadata == "written" and ((self.root / METADATA_FILE).exists() or dirs):
                findings.append(Finding.make(
                    "metadata-missing",
                    f"no episode_lengths in {METADATA_FILE} or {SEQ_LENGTHS_FILE}; lengths are taken from the frames",
                    file=METADATA_FILE,
                    hint=f"layout {self.layout.name} describes a logger that writes {METADATA_FILE}",
                ))
            n = (max(dirs) + 1) if dirs else 0
        else:
            n = len(lengths)
        episodes = []
        for i in range(n):
            d = self.root / episode_dir_name(i)
            if i not in dirs:
                findings.append(Finding.make(
                    "missing-episode-dir", f"episode directory {d.name}/ is missing", episode=i, file=d.name
                ))
            entry = EpisodeEntry(index=i, directory=d.name, length=lengths[i] if lengths is not None else None)
            if d.is_dir():
                entry.files = {display_name(p.relative_to(self.root)): p.stat().st_size
                               for p in sorted(d.rglob("*")) if p.is_file()}
            episodes.append(entry)
        unlisted = sorted(p.name for i, p in dirs.items() if i >= n)
        for name in unlisted:
            findings.append(Finding.make(
                "unlisted-episode-dir",
                f"{name}/ exists but the metadata lists only {n} episodes; it will be ignored",
                episode=int(name), file=name,
            ))
        root_files = {display_name(p.name): p.stat().st_size for p in sorted(self.root.iterdir()) if p.is_file()}
        manifest = SourceManifest(
            root=str(self.root), layout=self.layout.name, episodes=episodes, unlisted_dirs=unlisted,
            root_files=root_files, metadata=jsonable(meta), lengths_from=lengths_from,
        )
        self._scan_kind(manifest, findings)
        if not manifest.episodes:
            findings.append(Finding.make("empty-dataset", f"{self.root} holds no episodes"))
        return ScanResult(manifest, findings)

    def _scan_kind(self, manifest: SourceManifest, findings: list[Finding]) -> None:
        """Checks specific to how this kind stores states and actions."""

    # -- where things are -------------------------------------------------------------------------
    def episode_dir(self, episode: int) -> Path:
        return self.root / episode_dir_name(episode)

    def has_episode(self, episode: int) -> bool:
        return self.episode_dir(episode).is_dir()

    def episode_label(self, episode: int) -> str:
        return episode_dir_name(episode)

    def frames_path(self, episode: int) -> Path:
        return self.episode_dir(episode) / self.layout.observation.file

    def frames_label(self, episode: int) -> str:
        return f"{episode_dir_name(episode)}/{self.layout.observation.file}"

    def _files(self, episode: int) -> list[Path]:
        d = self.episode_dir(episode)
        return sorted((p for p in d.iterdir() if p.is_file()), key=lambda p: name_bytes(p.name)) if d.is_dir() else []

    def episode_files(self, episode: int) -> dict[str, int]:
        return {f"{episode_dir_name(episode)}/{display_name(p.name)}": p.stat().st_mtime_ns ^ p.stat().st_size
                for p in self._files(episode)}

    def episode_bytes(self, episode: int) -> int:
        d = self.episode_dir(episode)
        return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.is_dir() else 0

    def episode_digest(self, episode: int, h: hashlib._Hash) -> None:
        for p in self._files(episode):
            h.update(name_bytes(p.name))
            with p.open("rb") as f:
                h.update(hashlib.file_digest(f, "blake2b").digest())

    # -- reading ----------------------------------------------------------------------------------
    def open_frames(self, episode: int) -> torch.Tensor:
        return load_tensor(self.frames_path(episode), mmap=True)

    def params_path(self, episode: int) -> Path:
        return self.episode_dir(episode) / PARAMS_FILE

    def read_params(self, episode: int) -> dict:
        """`property_params.pkl` as JSON-safe data ({} when absent), through the plain-data unpickler."""
        path = self.params_path(episode)
        if not path.exists():
            return {}
        params = load_pickle(path)
        out = jsonable(params) if isinstance(params, dict) else {"value": jsonable(params)}
        assert isinstance(out, dict)
        return out
