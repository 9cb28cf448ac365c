"""Single-file HDF5 sources in the robomimic convention: Isaac Lab's recorder and Mimic.

`dataset.hdf5` holds a group `data` with one group `demo_N` per episode (attribute `num_samples`, the
number of steps), each with `actions (T, A)`, `obs/<term> (T, ...)` and more (Isaac Lab:
utils/datasets/hdf5_dataset_file_handler.py). Episode `k` is the k-th demo in numeric order of N.
The state is the concatenation of `Sources.state_datasets`; frames come from `Observation.dataset`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcs_data.errors import DatasetError, FcsError, SourceError, UnreadableFileError
from fcs_data.schemas import EpisodeEntry, Finding, Layout, SourceManifest
from fcs_data.schemas.layout import Camera
from fcs_data.sources import h5
from fcs_data.sources.base import LoggerSource, ScanResult, StepArrays, file_finding, jsonable

DATA_GROUP = "data"
DEMO_NAME = re.compile(r"^demo_(\d+)$")
SUFFIXES = (".hdf5", ".h5")


def hdf5_file(root: Path) -> Path | None:
    """The one HDF5 file a single-file dataset is: `root` itself, or the only `*.hdf5` in directory `root`
    (which then holds no episode directories)."""
    if root.is_file():
        return root
    if root.is_dir():
        found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in SUFFIXES)
        return found[0] if len(found) == 1 else None
    return None


def demo_names(data: Any) -> list[str]:
    """`demo_N` members of the `data` group, in numeric order of N."""
    names = [k for k in data if DEMO_NAME.match(k)]
    return sorted(names, key=lambda k: int(DEMO_NAME.match(k).group(1)))  # type: ignore[union-attr]


class RobomimicSource(LoggerSource):
    """One HDF5 file with `data/demo_N` groups, datasets named by the layout."""

    def __init__(self, root: str | Path, layout: Layout):
        super().__init__(root, layout)
        file = hdf5_file(self.root)
        if file is None:
            raise SourceError(f"{self.root}: not an HDF5 file, nor a directory holding exactly one")
        self.file = file
        self._demos: list[str] | None = None

    @contextmanager
    def _data(self) -> Iterator[Any]:
        import h5py

        with h5.open_file(self.file) as f:
            data = f.get(DATA_GROUP)
            if not isinstance(data, h5py.Group):
                raise DatasetError(self.file, DATA_GROUP, "is missing or not a group",
                                      "a group data/ with one group demo_N per episode")
            yield data

    @contextmanager
    def _demo(self, episode: int) -> Iterator[Any]:
        import h5py

        name = self.demos[episode]
        with self._data() as data:
            group = data.get(name)
            if not isinstance(group, h5py.Group):
                raise DatasetError(self.file, f"{DATA_GROUP}/{name}", "is not a group", "a demo group")
            yield group

    @property
    def demos(self) -> list[str]:
        if self._demos is None:
            with self._data() as data:
                self._demos = demo_names(data)
        return self._demos

    # -- what is on disk -------------------------------------------------------------------------
    def scan(self) -> ScanResult:
        import h5py

        findings: list[Finding] = []
        episodes: list[EpisodeEntry] = []
        meta: dict = {}
        try:
            with self._data() as data:
                self._demos = demo_names(data)
                meta = {"total": jsonable(data.attrs.get("total")), "env_args": self._env_args(data)}
                for k, name in enumerate(self._demos):
                    group = data.get(name)
                    length = None
                    if isinstance(group, h5py.Group):
                        try:
                            length = int(np.asarray(group.attrs.get("num_samples")).item())
                        except (TypeError, ValueError, OverflowError):
                            length = None
                    episodes.append(EpisodeEntry(index=k, directory=f"{DATA_GROUP}/{name}", length=length))
        except (FcsError, OSError) as e:
            findings.append(file_finding(e, self.file, self.root))
        manifest = SourceManifest(root=str(self.file), layout=self.layout.name, episodes=episodes,
                                  root_files={self.file.name: self.file.stat().st_size}, metadata=meta,
                                  lengths_from="num_samples")
        if not episodes and not findings:
            findings.append(Finding.make("empty-dataset", f"{self.file} holds no demos (data/demo_N)"))
        return ScanResult(manifest, findings)

    @staticmethod
    def _env_args(data: Any) -> object:
        raw = data.attrs.get("env_args")
        try:
            return jsonable(json.loads(raw)) if isinstance(raw, str | bytes) else jsonable(raw)
        except (ValueError, TypeError):
            return None

    def has_episode(self, episode: int) -> bool:
        return 0 <= episode < len(self.demos)

    def episode_label(self, episode: int) -> str:
        return f"{DATA_GROUP}/{self.demos[episode]}"

    def frames_label(self, episode: int) -> str:
        return f"{self.episode_label(episode)}/{self.layout.observation.dataset}"

    def frames_path(self, episode: int) -> Path:
        return self.file

    def root_files(self) -> dict[str, int]:
        st = self.file.stat()
        return {self.file.name: st.st_mtime_ns ^ st.st_size}

    def episode_files(self, episode: int) -> dict[str, int]:
        return {self.episode_label(episode): self.root_files()[self.file.name]}

    def _datasets(self, group: Any) -> list[tuple[str, Any]]:
        import h5py

        found: list[tuple[str, Any]] = []
        group.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
        return sorted(found, key=lambda item: item[0])

    def episode_bytes(self, episode: int) -> int:
        with self._demo(episode) as group:
            return sum(int(ds.id.get_storage_size()) for _, ds in self._datasets(group))

    def episode_digest(self, episode: int, h: hashlib._Hash) -> None:
        with self._demo(episode) as group:
            for name, ds in self._datasets(group):
                h.update(name.encode())
                h.update(f"{ds.shape} {ds.dtype}".encode())
                if ds.shape is not None and ds.dtype.kind in "fiub":
                    h.update(np.ascontiguousarray(ds[()]).tobytes())

    # -- reading ----------------------------------------------------------------------------------
    def open_frames(self, episode: int) -> torch.Tensor:
        name = self.layout.observation.dataset
        assert name
        with self._demo(episode) as group:
            frames = h5.read(group, name, self.file, dtype="real")
        if frames.dtype.kind == "u" and frames.dtype != np.uint8:
            frames = frames.astype(np.int64)  # torch has no general unsigned types; the dtype check reports it
        return torch.from_numpy(np.ascontiguousarray(frames))

    def _rows(self, group: Any, name: str, width_shape: tuple[int, ...], dtype: str, length: int,
              rows: slice | None = None) -> np.ndarray:
        ds = h5.inspect(group, name, self.file, (h5.ANY, *width_shape), dtype)
        if ds.shape[0] < length:
            raise DatasetError(self.file, f"{group.name.lstrip('/')}/{name}", f"has {ds.shape[0]} rows",
                                  f"{length} (num_samples)")
        return h5.read(group, name, self.file, (h5.ANY, *width_shape), dtype, rows or slice(0, length))

    def read_steps(self, episode: int, length: int) -> StepArrays:
        src = self.layout.sources
        assert src.action_dataset
        with self._demo(episode) as group:
            parts = [self._rows(group, name, (width,), "real", length) for name, width in src.state_datasets.items()]
            action = self._rows(group, src.action_dataset, (self.layout.action_dim,), "real", length)
            for cam in self.layout.cameras:  # checked now, read at conversion
                self._rows(group, cam.step_dataset, cam.shape, cam.dtype, length, slice(0, 0))
        state = np.concatenate(parts, axis=1) if parts else np.zeros((length, 0))
        return StepArrays(state.astype(np.float32), action.astype(np.float32))

    def read_camera(self, episode: int, camera: Camera, start: int, stop: int) -> np.ndarray:
        with self._demo(episode) as group:
            return self._rows(group, camera.step_dataset, camera.shape, camera.dtype, stop, slice(start, stop))

    def params_path(self, episode: int) -> Path:
        return self.file

    def read_params(self, episode: int) -> dict:
        """The demo's attributes (`num_samples`, `success`, `seed`) as JSON-safe data."""
        try:
            with self._demo(episode) as group:
                attrs = {str(k): jsonable(np.asarray(v).tolist()) for k, v in group.attrs.items()}
        except (TypeError, ValueError, OSError) as e:
            raise UnreadableFileError(self.file, f"{self.episode_label(episode)}: attributes cannot be read ({e})"
                                      ) from e
        return {"demo": self.demos[episode], **attrs}
