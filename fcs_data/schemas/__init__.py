"""Pydantic models: the single source of truth for shapes, files and findings."""

from fcs_data.schemas.layout import (
    DEFAULT_LAYOUT,
    Layout,
    Observation,
    Sources,
    VectorField,
    builtin_layouts,
    get_layout,
)
from fcs_data.schemas.manifest import EpisodeEntry, SourceManifest
from fcs_data.schemas.report import FINDING_KINDS, Finding, Severity, ValidationReport

__all__ = [
    "DEFAULT_LAYOUT",
    "FINDING_KINDS",
    "EpisodeEntry",
    "Finding",
    "Layout",
    "Observation",
    "Severity",
    "SourceManifest",
    "Sources",
    "ValidationReport",
    "VectorField",
    "builtin_layouts",
    "get_layout",
]
