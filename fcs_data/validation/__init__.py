"""`fcs validate`: what is wrong with a logger dataset or a store, where, and how to fix it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fcs_data.schemas import Finding, Layout, ValidationReport, get_layout
from fcs_data.validation.source import validate_source
from fcs_data.validation.store import validate_store

if TYPE_CHECKING:
    from fcs_data.errors import DetectionError

__all__ = ["detection_report", "validate", "validate_source", "validate_store"]


def detection_report(path: str | Path, error: DetectionError) -> ValidationReport:
    """The report of a dataset whose layout could not be detected: one error finding, `layout-undetected`
    (data: `tried`, the built-in layouts judged, and `mismatches`, each one's first mismatch) or
    `layout-ambiguous` (data: `matches` as well)."""
    report = ValidationReport(path=str(path), kind="source", layout=None)
    data: dict = {"tried": sorted(error.mismatches) if not error.matches else sorted({*error.mismatches,
                                                                                       *error.matches}),
                  "mismatches": dict(error.mismatches)}
    if error.matches:
        report.add(Finding.make("layout-ambiguous", str(error), data={**data, "matches": error.matches},
                                hint="pass --layout with the right one"))
    else:
        report.add(Finding.make("layout-undetected", str(error), data=data,
                                hint="write a layout file and pass --layout (fcs layouts show NAME prints one)"))
    return report


def _looks_like_store(path: Path) -> bool:
    return (path / "zarr.json").is_file()


def validate(
    path: str | Path,
    layout: str | Layout | None = None,
    *,
    episodes: list[int] | None = None,
    workers: int | None = None,
    quick: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Validate a logger dataset (against `layout`, detected when None) or an fcs store (which carries
    its layout). `quick` (stores only) checks metadata and shapes but skips decoding and checksumming
    every chunk. Raises `DetectionError` when no layout is given and none matches.
    """
    path = Path(path)
    if _looks_like_store(path):
        return validate_store(path, quick=quick, progress=progress)
    detected: list[str] = []
    if layout is None:
        from fcs_data.sources.detect import detect_layout

        detection = detect_layout(path)
        layout, detected = detection.layout, detection.lines
    report = validate_source(path, get_layout(layout), episodes=episodes, workers=workers, progress=progress)
    report.detected = detected
    return report
