"""Per-step HDF5 loggers (min, keyframe, primitive): one `NNN.h5` file per step in each episode."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fcs_data.errors import SourceError, UnreadableFileError
from fcs_data.schemas import Finding, SourceManifest
from fcs_data.sources.base import LoggerSource

_STEP_FILE = re.compile(r"^(\d+)\.h5$")


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
        import h5py

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
