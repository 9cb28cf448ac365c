"""fcs_data: Isaac Sim logger datasets -> validated, chunked Zarr stores -> DINO-WM windows.

Public API (everything else is private):

- `Layout`, `get_layout`: logger formats as data (`franka_cube_stack_v1` is the default).
- `synthesize`: synthetic datasets in a logger layout.
- `validate`: a `ValidationReport` for a logger dataset or a store.
- `convert_to_zarr`: a logger dataset -> an fcs store (atomic, resumable, parallel, checksummed).
- `open_store`: a read-only `Store` (episodes, lazy arrays, statistics, layout).
- `WindowDataset`, `make_loader`: DINO-WM training windows and a DataLoader for them.

Names are imported on first use, so `import fcs_data` stays light (no torch, h5py or PIL until a
name that needs them is touched).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fcs_data._lazy import lazy_exports

_EXPORTS = {
    "ArrayStats": "fcs_data.schemas.store",
    "ConversionRefused": "fcs_data.errors",
    "ConversionResult": "fcs_data.converters.to_zarr",
    "Episode": "fcs_data.store",
    "FcsError": "fcs_data.errors",
    "Finding": "fcs_data.schemas",
    "Layout": "fcs_data.schemas",
    "NonFiniteDataError": "fcs_data.errors",
    "ReferenceAdapter": "fcs_data.windows",
    "SeededSampler": "fcs_data.loader",
    "SourceError": "fcs_data.errors",
    "SourceManifest": "fcs_data.schemas",
    "SplitStats": "fcs_data.schemas.store",
    "Store": "fcs_data.store",
    "StoreDataError": "fcs_data.errors",
    "StoreError": "fcs_data.errors",
    "StoreMetadata": "fcs_data.schemas.store",
    "StoreStats": "fcs_data.schemas.store",
    "UnreadableFileError": "fcs_data.errors",
    "UnsafePickleError": "fcs_data.errors",
    "ValidationReport": "fcs_data.schemas",
    "WindowDataset": "fcs_data.windows",
    "collate_windows": "fcs_data.loader",
    "convert_to_zarr": "fcs_data.converters.to_zarr",
    "get_layout": "fcs_data.schemas",
    "make_loader": "fcs_data.loader",
    "open_store": "fcs_data.store",
    "split_episodes": "fcs_data.splits",
    "synthesize": "fcs_data.synth",
    "validate": "fcs_data.validation",
    "validate_source": "fcs_data.validation",
    "validate_store": "fcs_data.validation",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fcs_data.converters.to_zarr import ConversionResult, convert_to_zarr
    from fcs_data.errors import (
        ConversionRefused,
        FcsError,
        NonFiniteDataError,
        SourceError,
        StoreDataError,
        StoreError,
        UnreadableFileError,
        UnsafePickleError,
    )
    from fcs_data.loader import SeededSampler, collate_windows, make_loader
    from fcs_data.schemas import Finding, Layout, SourceManifest, ValidationReport, get_layout
    from fcs_data.schemas.store import ArrayStats, SplitStats, StoreMetadata, StoreStats
    from fcs_data.splits import split_episodes
    from fcs_data.store import Episode, Store, open_store
    from fcs_data.synth import synthesize
    from fcs_data.validation import validate, validate_source, validate_store
    from fcs_data.windows import ReferenceAdapter, WindowDataset
