"""The loggers' file-naming rules, in one place.

Every Isaac Sim logger writes episode `i` into the directory `f"{i:06d}"` (six digits, zero
padded) and, for per-step loggers, step `t` into `f"{t:0{digits}d}.h5"` (`000.h5` for the min and
keyframe loggers, `00.h5` for the primitive logger). Sources, detection, validation, synth and the
converter all use these functions; nothing else spells the patterns.

File names read from disk may not be UTF-8 (Python keeps the undecodable bytes as surrogates);
`display_name` makes such a name printable and `name_bytes` hashable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

EPISODE_DIGITS = 6
STEP_SUFFIX = ".h5"
_EPISODE_DIR = re.compile(rf"^\d{{{EPISODE_DIGITS}}}$")
_STEP_FILE = re.compile(rf"^(\d+){re.escape(STEP_SUFFIX)}$")


def episode_dir_name(index: int) -> str:
    """`000042` for episode 42."""
    return f"{index:0{EPISODE_DIGITS}d}"


def parse_episode_dir(name: str) -> int | None:
    """The episode index a directory name stands for, None when it is not an episode directory."""
    return int(name) if _EPISODE_DIR.match(name) else None


def episode_dirs(root: Path) -> dict[int, Path]:
    """Episode index -> directory, for every `NNNNNN/` directly under `root` (unsorted)."""
    out: dict[int, Path] = {}
    for p in root.iterdir() if root.is_dir() else []:
        index = parse_episode_dir(p.name)
        if index is not None and p.is_dir():
            out[index] = p
    return out


def step_file_name(step: int, digits: int) -> str:
    """`007.h5` for step 7 with 3 digits."""
    return f"{step:0{digits}d}{STEP_SUFFIX}"


def parse_step_file(name: str) -> tuple[int, int] | None:
    """`(step, digits)` of a per-step file name (`"07.h5"` -> `(7, 2)`), None for other names."""
    m = _STEP_FILE.match(name)
    return (int(m.group(1)), len(m.group(1))) if m else None


def step_files(ep_dir: Path) -> dict[int, list[Path]]:
    """Step number -> the files naming it (several when zero padding differs: `07.h5`, `007.h5`)."""
    found: dict[int, list[Path]] = {}
    for p in ep_dir.iterdir() if ep_dir.is_dir() else []:
        parsed = parse_step_file(p.name)
        if parsed is not None:
            found.setdefault(parsed[0], []).append(p)
    for paths in found.values():
        paths.sort(key=lambda p: p.name)
    return found


def display_name(name: str | os.PathLike[str]) -> str:
    """A file name as text that prints and serialises: undecodable bytes become U+FFFD."""
    raw = os.fsencode(name)
    return raw.decode("utf-8", errors="replace")


def name_bytes(name: str | os.PathLike[str]) -> bytes:
    """A file name's bytes as the file system holds them (for hashing and fingerprints)."""
    return os.fsencode(name)
