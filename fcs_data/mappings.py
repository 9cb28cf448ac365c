"""Nested mappings merged the way configs and layout variants are: a shared helper with no dependencies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_mappings(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by `over`: nested mappings merge, everything else (lists too) is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_mappings(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out
