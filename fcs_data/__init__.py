"""fcs_data: Isaac Sim logger datasets -> validated, chunked Zarr stores -> DINO-WM windows.

Public API (everything else is private):

- `Layout`, `get_layout`: logger formats as data (`franka_cube_stack_v1` is the default).
- `synthesize`: synthetic datasets in a logger layout.
- `validate`: a `ValidationReport` for a logger dataset or a store.
- `convert_to_zarr`: a logger dataset -> an fcs store (atomic, resumable, parallel).
- `open_store`: a read-only `Store` (episodes, lazy arrays, statistics, layout).
- `WindowDataset`, `make_loader`: DINO-WM training windows and a DataLoader for them.
"""

from fcs_data.converters.to_zarr import ConversionRefused, ConversionResult, convert_to_zarr
from fcs_data.errors import FcsError, SourceError, StoreError, UnreadableFileError, UnsafePickleError
from fcs_data.loader import SeededSampler, collate_windows, make_loader
from fcs_data.schemas import Finding, Layout, SourceManifest, ValidationReport, get_layout
from fcs_data.schemas.store import ArrayStats, StoreMetadata, StoreStats
from fcs_data.store import Episode, Store, open_store
from fcs_data.synth import synthesize
from fcs_data.validation import validate, validate_source, validate_store
from fcs_data.windows import ReferenceAdapter, WindowDataset

__all__ = [
    "ArrayStats",
    "ConversionRefused",
    "ConversionResult",
    "Episode",
    "FcsError",
    "Finding",
    "Layout",
    "ReferenceAdapter",
    "SeededSampler",
    "SourceError",
    "SourceManifest",
    "Store",
    "StoreError",
    "StoreMetadata",
    "StoreStats",
    "UnreadableFileError",
    "UnsafePickleError",
    "ValidationReport",
    "WindowDataset",
    "collate_windows",
    "convert_to_zarr",
    "get_layout",
    "make_loader",
    "open_store",
    "synthesize",
    "validate",
    "validate_source",
    "validate_store",
]
