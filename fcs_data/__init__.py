"""fcs_data: Isaac Sim logger datasets -> validated, chunked Zarr stores -> DINO-WM windows.

Public API (everything else is private):

- `Layout`, `get_layout`: logger formats as data (`franka_cube_stack_v1` is the default).
- `synthesize`: synthetic datasets in a logger layout.
- `validate_source`: a `ValidationReport` for a logger dataset.
"""

from fcs_data.errors import FcsError, SourceError, StoreError, UnreadableFileError, UnsafePickleError
from fcs_data.schemas import Finding, Layout, SourceManifest, ValidationReport, get_layout
from fcs_data.synth import synthesize
from fcs_data.validation import validate_source

__all__ = [
    "FcsError",
    "Finding",
    "Layout",
    "SourceError",
    "SourceManifest",
    "StoreError",
    "UnreadableFileError",
    "UnsafePickleError",
    "ValidationReport",
    "get_layout",
    "synthesize",
    "validate_source",
]
