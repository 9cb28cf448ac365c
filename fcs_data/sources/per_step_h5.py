"""Per-step HDF5 loggers (min, keyframe, primitive): one `NNN.h5` file per step in each episode.

Every dataset the layout names (`Layout.step_datasets`: state, action, frame index, the colour copy,
further and fused cameras) is checked in every step file it is read from: kind, dtype and the shape
the logger writes (`(1, 1, 14)` eef_states, `(1, 224, 224, 3)` float32 images, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcs_data.errors import SourceError
from fcs_data.schemas import Finding, SourceManifest
from fcs_data.schemas.layout import Camera
from fcs_data.sources import h5
from fcs_data.sources.base import StepArrays
from fcs_data.sources.episode_dirs import EpisodeDirSource
from fcs_data.sources.naming import step_file_name, step_files


class PerStepH5Source(EpisodeDirSource):
    """`NNNNNN/000.h5, 001.h5, ...` (or `00.h5, ...`), one file per step, datasets named by the layout."""

    def step_files(self, episode: int) -> tuple[list[Path], list[Finding]]:
        """Step files sorted by step number, and findings about gaps, duplicates and naming."""
        d = self.episode_dir(episode)
        found = {s: [p.name for p in paths] for s, paths in step_files(d).items()}
        findings: list[Finding] = []
        if not found:
            findings.append(Finding.make("step-files", f"{d.name}/ has no per-step .h5 files", episode=episode,
                                         file=d.name))
            return [], findings
        dupes = sorted(s for s, names in found.items() if len(names) > 1)
        if dupes:
            examples = ", ".join("/".join(found[s]) for s in dupes[:3])
            findings.append(Finding.make(
                "step-files", f"steps named twice with different zero padding ({examples})",
                episode=episode, file=d.name, steps=dupes,
            ))
        declared = self.layout.sources.step_digits
        width = declared or min(len(n) - 3 for names in found.values() for n in names)
        misnamed = sorted(s for s, names in found.items() for n in names if n != step_file_name(s, width))
        if misnamed and declared and all(n != step_file_name(s, declared) for s in found for n in found[s]):
            example = found[misnamed[0]][0]
            findings.append(Finding.make(
                "step-files",
                f"step files are named like {example}, the layout {self.layout.name} says {declared} digits "
                f"({step_file_name(0, declared)}, ...); a reader expecting those names finds none of these",
                episode=episode, file=d.name, steps=misnamed,
                hint="declare the naming the logger used (sources.step_digits), or rename the files",
            ))
        elif misnamed:
            findings.append(Finding.make(
                "step-files",
                f"step files mix name widths (e.g. {found[misnamed[0]][0]} next to {width}-digit names); "
                "a reader that assumes one width silently skips steps",
                episode=episode, file=d.name, steps=misnamed,
                hint=f"rename to one width, e.g. {step_file_name(0, width)}, {step_file_name(1, width)}, ...",
            ))
        last = max(found)
        missing = sorted(set(range(last + 1)) - set(found))
        if missing:
            findings.append(Finding.make(
                "step-files", f"{len(missing)} step files missing between 0 and {last}",
                episode=episode, file=d.name, steps=missing,
            ))
        return [d / found[s][0] for s in sorted(found)], findings

    def step_findings(self, episode: int, n_frames: int) -> tuple[list[Finding], int]:
        files, problems = self.step_files(episode)
        if problems:
            return problems, 0
        if len(files) != n_frames:
            problems.append(Finding.make(
                "step-files", f"{len(files)} step files for {n_frames} frames in {self.frames_label(episode)}",
                episode=episode, file=self.episode_label(episode),
            ))
        return problems, len(files)

    def _scan_kind(self, manifest: SourceManifest, findings: list[Finding]) -> None:
        for e in manifest.episodes:
            files, _ = self.step_files(e.index) if self.has_episode(e.index) else ([], [])
            e.step_files = [p.name for p in files]

    def _step_paths(self, episode: int, count: int) -> list[Path]:
        files, problems = self.step_files(episode)
        if problems:
            raise SourceError(f"episode {episode}: {problems[0].message}")
        if len(files) < count:
            raise SourceError(f"episode {episode}: {len(files)} step files for {count} steps")
        return files

    def read_steps(self, episode: int, length: int) -> StepArrays:
        """State, action and frame index of the first `length` steps; every other dataset the layout reads
        (images) is checked for kind, dtype and shape in the same pass."""
        src = self.layout.sources
        wanted = self.layout.step_datasets
        keep = [n for n in (src.state_dataset, src.action_dataset, src.frame_index_dataset) if n]
        rows: dict[str, list[np.ndarray]] = {n: [] for n in keep}
        for p in self._step_paths(episode, length)[:length]:
            with h5.open_file(p) as f:
                for name, (shape, dtype) in wanted.items():
                    if name in rows:
                        rows[name].append(h5.read(f, name, p, shape, dtype))
                    else:
                        h5.inspect(f, name, p, shape, dtype)
        assert src.state_dataset and src.action_dataset
        state = np.stack(rows[src.state_dataset]).reshape(length, -1) if length else np.zeros((0, self.layout.state_dim))
        action = (np.stack(rows[src.action_dataset]).reshape(length, -1) if length
                  else np.zeros((0, self.layout.action_dim)))
        fields = {}
        if src.frame_index_dataset:
            fields["frame_index"] = np.asarray(rows[src.frame_index_dataset], np.int64).reshape(length)
        return StepArrays(state.astype(np.float32), action.astype(np.float32), fields)

    def _images(self, episode: int, steps: list[int], name: str, height: int, width: int) -> np.ndarray:
        """Per-step image dataset `name` at `steps`, `(n, height, width, 3)` as logged (leading singleton gone)."""
        src = self.layout.sources
        shape = src.image_shape(height, width)
        paths = self._step_paths(episode, max(steps, default=-1) + 1)
        out = []
        for t in steps:
            with h5.open_file(paths[t]) as f:
                out.append(h5.read(f, name, paths[t], shape, src.image_dtype).reshape(height, width, 3))
        return np.stack(out) if out else np.zeros((0, height, width, 3), np.dtype(src.image_dtype))

    def read_camera(self, episode: int, camera: Camera, start: int, stop: int) -> np.ndarray:
        return self._images(episode, list(range(start, stop)), camera.step_dataset, camera.height, camera.width)

    def color_copy(self, episode: int, steps: list[int]) -> np.ndarray | None:
        obs = self.layout.observation
        if obs.color_dataset is None:
            return None
        return self._images(episode, steps, obs.color_dataset, obs.height, obs.width)

    def fused_sources(self, episode: int, steps: list[int]) -> list[np.ndarray]:
        obs = self.layout.observation
        return [self._images(episode, steps, name, obs.height, obs.width) for name in obs.fused_from]
