"""A small JSON cache outside any store, for things worth computing once (e.g. split statistics).

The read path never writes into a store; what it may remember lives here, keyed by the store's
layout and content hashes: `$FCS_CACHE_DIR`, else `$XDG_CACHE_HOME/fcs`, else `~/.cache/fcs`. A cache that
cannot be written is skipped (with a debug log line); deleting it is always harmless.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from fcs_data.atomic import write_text_atomic

log = logging.getLogger("fcs_data")


def cache_dir() -> Path:
    if os.environ.get("FCS_CACHE_DIR"):
        return Path(os.environ["FCS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fcs"


def load(namespace: str, key: str) -> Any | None:
    path = cache_dir() / namespace / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save(namespace: str, key: str, value: Any) -> None:
    folder = cache_dir() / namespace
    try:
        write_text_atomic(folder / f"{key}.json", json.dumps(value))
    except OSError as e:
        log.debug("not cached in %s: %s", folder, e)
