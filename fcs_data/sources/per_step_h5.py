"""Per-step HDF5 loggers (min, keyframe, primitive): one `NNN.h5` file per step in each episode."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fcs_data.errors import SourceError, UnreadableFileError
from fcs_data.schemas import Finding, SourceManifest
from fcs_data.schemas.layout import Camera
from fcs_data.sources.base import LoggerSource, StepArrays

_STEP_FILE = re.compile(r"^(\d+)\.h5$")


class PerStepH5Source(LoggerSource):
    """`NNNNNN/000.h5, 001.h5, ...` (or `00.h5, ...`), one file per step, datasets named by the layout."""

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
        declared = self.layout.sources.step_digits
        width = declared or min(len(n) - 3 for names in found.values() for n in names)
        misnamed = sorted(s for s, names in found.items() for n in names if n != f"{s:0{width}d}.h5")
        if misnamed and declared and all(n != f"{s:0{declared}d}.h5" for s in found for n in found[s]):
            example = found[misnamed[0]][0]
            findings.append(Finding.make(
                "step-files",
                f"step files are named like {example}, the layout {self.layout.name} says {declared} digits "
                f"({0:0{declared}d}.h5, ...); a reader expecting those names finds none of these",
                episode=episode, file=d.name, steps=misnamed,
                hint="declare the naming the logger used (sources.step_digits), or rename the files",
            ))
        elif misnamed:
            findings.append(Finding.make(
                "step-files",
                f"step files mix name widths (e.g. {found[misnamed[0]][0]} next to {width}-digit names); "
                "a reader that assumes one width silently skips steps",
                episode=episode, file=d.name, steps=misnamed,
                hint=f"rename to one width, e.g. {0:0{width}d}.h5, {1:0{width}d}.h5, ...",
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

    def _files(self, episode: int, count: int) -> list[Path]:
        files, problems = self.step_files(episode)
        if problems:
            raise SourceError(f"episode {episode}: {problems[0].message}")
        if len(files) < count:
            raise SourceError(f"episode {episode}: {len(files)} step files for {count} steps")
        return files

    def read_datasets(self, episode: int, steps: range | list[int], names: list[str]) -> dict[str, np.ndarray]:
        """Datasets `names` of the step files `steps`, stacked `(len(steps), ...)`; each file opened once."""
        import h5py

        steps = list(steps)
        files = self._files(episode, max(steps, default=-1) + 1)
        values: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for t in steps:
            p = files[t]
            try:
                with h5py.File(p, "r") as f:
                    for name in names:
                        if name not in f:
                            raise UnreadableFileError(p, f"dataset {name!r} is missing")
                        values[name].append(np.asarray(f[name]))
            except OSError as e:
                raise UnreadableFileError(p, str(e)) from e
        return {n: np.stack(v) if v else np.empty((0,)) for n, v in values.items()}

    def read_steps(self, episode: int, length: int) -> StepArrays:
        src = self.layout.sources
        names = [src.state_dataset, src.action_dataset]
        if src.frame_index_dataset:
            names.append(src.frame_index_dataset)
        data = self.read_datasets(episode, range(length), names)
        fields = {"frame_index": data[src.frame_index_dataset].reshape(length).astype(np.int64)} \
            if src.frame_index_dataset else {}
        return StepArrays(data[src.state_dataset].reshape(length, -1).astype(np.float32),
                          data[src.action_dataset].reshape(length, -1).astype(np.float32), fields)

    def read_camera(self, episode: int, camera: Camera, start: int, stop: int) -> np.ndarray:
        """Frames `[start, stop)` of a further camera, `(n, h, w, 3)` as logged."""
        return self.read_datasets(episode, range(start, stop), [camera.step_dataset])[camera.step_dataset]

    def read_color(self, episode: int, steps: list[int], dataset: str) -> np.ndarray | None:
        """A per-step color dataset at `steps` (the channel-order evidence), None when the files lack it."""
        try:
            return self.read_datasets(episode, steps, [dataset])[dataset]
        except (UnreadableFileError, SourceError):
            return None
