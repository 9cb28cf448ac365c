"""Errors of training, checkpoints and planning that a user can receive.

`fcs_data.errors` holds the data library's; this module defines the training side's and re-exports
the planning ones (imported on first use, so `import fcs_train.errors` stays light), so
`from fcs_train.errors import TrainError, CheckpointError, DoesNotFit, PlanningError, ...` reaches any of them.
Every one is an `FcsError` except the planning client's (`PlannerError`, `WireError`), which must
not need fcs installed.
"""

from __future__ import annotations

from fcs_data._lazy import lazy_exports
from fcs_data.errors import FcsError

_PLANNING = {
    "PlanningError": "fcs_train.planning.errors",
    "PlanInputError": "fcs_train.planning.errors",
    "PlanFailed": "fcs_train.planning.errors",
    "PlanCancelled": "fcs_train.planning.errors",
    "PlannerError": "fcs_train.planning.client",
    "WireError": "fcs_train.planning.client",
}
__getattr__, __dir__ = lazy_exports(__name__, _PLANNING)


class TrainError(FcsError):
    """The run cannot go on; the message says why and where."""


class NonFiniteLoss(TrainError):
    """A loss or an input of the run is NaN or Inf; the message names the step and the windows."""


class CheckpointError(FcsError):
    """A file is not an fcs checkpoint this version reads (missing, foreign, damaged or of an unknown format)."""


class DecoderTrainingError(FcsError):
    """`fcs train-decoder` cannot train the run's decoder; the message says why."""


class ReferenceImportError(FcsError):
    """The file is not a reference DINO-WM checkpoint this importer can read, or a flag contradicts it."""


class TrackerError(FcsError):
    """A tracker the config asks for cannot be used (not installed, or its run cannot be resumed)."""


class LoaderFailure(TrainError):
    """The data side failed mid-epoch (a DataLoader worker died, stalled or raised; a damaged shard);
    the model is sound, so a resumable checkpoint is written before this reaches the user."""


class StallError(LoaderFailure):
    """No training progress for `train.stall_timeout` seconds; the message names the culprit and the
    file holding every thread's stack."""


class FitError(FcsError):
    """A GPU memory prediction (`fcs fit`) cannot be made; the message says why."""


class TraceMismatch(FitError):
    """Two traces of one configuration at different batch sizes or frameskips ran different programs."""


class CalibrationError(FitError):
    """A GPU calibration cannot be measured, fitted or read (no GPU, no growth, a damaged file)."""


class DoesNotFit(FitError):
    """The run is predicted to need more GPU memory than the device has (or `train.memory_limit` is unreadable)."""
