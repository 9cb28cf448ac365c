"""Progress of a conversion: callbacks for the long phases, and `OUT.partial/fcs-progress.jsonl`.

Each unit (the low-dimensional rows of every episode, then each frame shard) is appended to the
progress file after its data is flushed to disk, so `--resume` continues from the last one done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ConvertProgress:
    """Callbacks for long phases; each gets `(done, total)` and frames also the source bytes read."""

    validate: Callable[[int, int], None] | None = None
    episodes: Callable[[int, int], None] | None = None
    frames: Callable[[int, int, int], None] | None = None
    verify: Callable[[int, int], None] | None = None


def read_progress(path: Path) -> tuple[dict | None, dict[int, dict]]:
    """`(lowdim record or None, shard -> record)`; a torn last line (crash mid-write) is ignored."""
    lowdim, shards = None, {}
    if not path.exists():
        return lowdim, shards
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "lowdim" in rec:
            lowdim = rec
        elif "shard" in rec:
            shards[int(rec["shard"])] = rec
    return lowdim, shards


class ProgressLog:
    """Appends one JSON record per finished unit, flushed and fsynced."""

    def __init__(self, path: Path):
        self.f = path.open("a")

    def append(self, rec: dict) -> None:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()
