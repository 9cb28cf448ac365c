"""fcs_data: Isaac Sim logger datasets -> validated, chunked Zarr stores -> DINO-WM windows.

Public API (everything else is private; every error is in `fcs_data.errors`):

- `Layout`, `get_layout`: logger formats as data (`franka_cube_stack_v1` is the default).
- `synthesize`: synthetic datasets in a logger layout.
- `validate`: a `ValidationReport` of `Finding`s for a logger dataset or a store.
- `convert_to_zarr`: a logger dataset -> an fcs store (atomic, resumable, parallel, checksummed); a `ConversionResult`.
- `open_store`: a read-only `Store` of `Episode`s, with its `StoreMetadata` (layout, `ArrayStats`, provenance).
- `WindowDataset`, `ReferenceAdapter`: DINO-WM training windows (and the reference's item layout), shaped
  by a `WindowSpec` (frames, frameskip, action packing) and normalised by a `Normalizer`.
- `make_loader`, `SeededSampler`: a DataLoader for them, in an order set by `(seed, epoch)`.
- `FcsError`: the base of every error fcs raises on purpose.

Names are imported on first use, so `import fcs_data` stays light (no torch, h5py or PIL until a
name that needs them is touched).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fcs_data._lazy import lazy_exports

_EXPORTS = {
    "ArrayStats": "fcs_data.schemas.store",
    "ConversionResult": "fcs_data.converters.to_zarr",
    "Episode": "fcs_data.store",
    "FcsError": "fcs_data.errors",
    "Finding": "fcs_data.schemas",
    "Layout": "fcs_data.schemas",
    "ReferenceAdapter": "fcs_data.windows",
    "SeededSampler": "fcs_data.loader",
    "Store": "fcs_data.store",
    "StoreMetadata": "fcs_data.schemas.store",
    "ValidationReport": "fcs_data.schemas",
    "Normalizer": "fcs_data.stats",
    "WindowDataset": "fcs_data.windows",
    "WindowSpec": "fcs_data.window_spec",
    "convert_to_zarr": "fcs_data.converters.to_zarr",
    "get_layout": "fcs_data.schemas",
    "make_loader": "fcs_data.loader",
    "open_store": "fcs_data.store",
    "synthesize": "fcs_data.synth",
    "validate": "fcs_data.validation",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from fcs_data.converters.to_zarr import ConversionResult, convert_to_zarr
    from fcs_data.errors import FcsError
    from fcs_data.loader import SeededSampler, make_loader
    from fcs_data.schemas import Finding, Layout, ValidationReport, get_layout
    from fcs_data.schemas.store import ArrayStats, StoreMetadata
    from fcs_data.stats import Normalizer
    from fcs_data.store import Episode, Store, open_store
    from fcs_data.synth import synthesize
    from fcs_data.validation import validate
    from fcs_data.window_spec import WindowSpec
    from fcs_data.windows import ReferenceAdapter, WindowDataset
