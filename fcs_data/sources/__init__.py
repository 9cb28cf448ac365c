"""Readers of logger datasets, one per `Layout.sources.kind`, shared by validation and conversion.

A source reader finds what is on disk (`scan` -> `SourceManifest` plus structural findings) and
reads one episode at a time: low-dimensional arrays for the valid steps only, and the frame tensor
memory-mapped when possible. Readers check what they read and report what they find; the validator
judges it and the converter brings it to the store's conventions (`conventions`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fcs_data._lazy import lazy_exports

_EXPORTS = {
    "GlobalPthSource": "fcs_data.sources.global_pth",
    "LoggerSource": "fcs_data.sources.base",
    "PerStepH5Source": "fcs_data.sources.per_step_h5",
    "RobomimicSource": "fcs_data.sources.robomimic",
    "ScanResult": "fcs_data.sources.base",
    "StepArrays": "fcs_data.sources.base",
    "file_finding": "fcs_data.sources.base",
}
__all__ = ["GlobalPthSource", "LoggerSource", "PerStepH5Source", "RobomimicSource", "ScanResult", "StepArrays",
           "file_finding", "open_source"]
# the readers (torch, h5py) load on first use: `fcs --help` and `fcs_data.sources.naming` stay light
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fcs_data.schemas import Layout
    from fcs_data.sources.base import LoggerSource, ScanResult, StepArrays, file_finding
    from fcs_data.sources.global_pth import GlobalPthSource
    from fcs_data.sources.per_step_h5 import PerStepH5Source
    from fcs_data.sources.robomimic import RobomimicSource


def open_source(root: str | Path, layout: Layout) -> LoggerSource:
    """The reader for `layout.sources.kind` over the dataset at `root`."""
    from fcs_data.errors import SourceError

    kind = layout.sources.kind
    if kind == "global_pth":
        from fcs_data.sources.global_pth import GlobalPthSource

        return GlobalPthSource(root, layout)
    if kind == "per_step_h5":
        from fcs_data.sources.per_step_h5 import PerStepH5Source

        return PerStepH5Source(root, layout)
    if kind == "robomimic_hdf5":
        from fcs_data.sources.robomimic import RobomimicSource

        return RobomimicSource(root, layout)
    raise SourceError(f"no reader for source kind {kind!r}")
